#!/usr/bin/env node
// One build for `npm run build`, `npm test`, `npm start` and the benches: the
// native addon (incrementally, so a checkout whose C++ changed never runs a
// stale binary: the agent would silently fall back to slower paths), then
// `tsc -b`, then the `weft` CLI bundle (packages/agent/scripts/bundle-cli.mjs).
// Throws an Error naming the failed step.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { run } from './setup.mjs';

const root = new URL('..', import.meta.url).pathname;
const nativeDir = join(root, 'packages/agent/native');

// Everything goes to stderr: the benches print their JSON figures on stdout.
const step = (cmd, args) => run(cmd, args, { label: 'build', toStderr: true });

export function build() {
  if (existsSync(join(nativeDir, 'binding.gyp'))) {
    const nodeGyp = join(root, 'node_modules/.bin/node-gyp');
    // The first build (no Makefile yet) goes through build.mjs, which finds Node's headers offline.
    if (existsSync(join(nativeDir, 'build', 'Makefile')) && existsSync(nodeGyp))
      step(nodeGyp, ['build', '--directory', nativeDir]);
    else step('node', [join(nativeDir, 'build.mjs')]);
  }
  step(join(root, 'node_modules/.bin/tsc'), ['-b']);
  step('node', [join(root, 'packages/agent/scripts/bundle-cli.mjs')]);
}

if (import.meta.url === `file://${process.argv[1]}`) {
  try {
    build();
  } catch (err) {
    console.error(err.message);
    process.exit(1);
  }
}
