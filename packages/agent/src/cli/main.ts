#!/usr/bin/env node
// Entry point of the `weft` binary. No top-level await: the build also
// bundles this file into one CommonJS file (see scripts/bundle-cli.mjs).
import { processIo, runCli } from './program.js';

// bin/weft starts Node without NODE_EXTRA_CA_CERTS (weft makes no TLS
// connections and Node parses that bundle at every start); commands the CLI
// starts get it back.
if (process.env.WEFT_NODE_EXTRA_CA_CERTS !== undefined) {
  process.env.NODE_EXTRA_CA_CERTS = process.env.WEFT_NODE_EXTRA_CA_CERTS;
  delete process.env.WEFT_NODE_EXTRA_CA_CERTS;
}

void runCli(process.argv.slice(2), {
  ...processIo,
  async runAgent(opts) {
    const { runAgentProcess } = await import('../agent/main.js');
    return runAgentProcess(opts);
  },
}).then((code) => {
  process.exitCode = code;
});
