#!/usr/bin/env node
// Entry point of the `weft` binary.
import { processIo, runCli } from './program.js';

const code = await runCli(process.argv.slice(2), {
  ...processIo,
  async runAgent(opts) {
    const { runAgentProcess } = await import('../agent/main.js');
    return runAgentProcess(opts);
  },
});
process.exitCode = code;
