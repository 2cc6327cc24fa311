#!/usr/bin/env node
// Entry point of the `weft` binary. No top-level await: the build also
// bundles this file into one CommonJS file (see scripts/bundle-cli.mjs).
import { processIo, runCli } from './program.js';

void runCli(process.argv.slice(2), {
  ...processIo,
  async runAgent(opts) {
    const { runAgentProcess } = await import('../agent/main.js');
    return runAgentProcess(opts);
  },
}).then((code) => {
  process.exitCode = code;
});
