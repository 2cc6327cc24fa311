#!/usr/bin/env node
// `npm test`: build everything, run every package's tests and the cross-package
// end-to-end tests in one mocha run, then the Raft simulator over many seeds.
// Ends with one plain "N passed, N failed, N skipped" line for CI.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { build } from './build.mjs';
import { setup } from './setup.mjs';

const root = new URL('..', import.meta.url).pathname;
const simSeeds = process.env.WEFT_SIM_SEEDS ?? '300';

function run(cmd, args, opts = {}) {
  console.log(`\n$ ${cmd} ${args.join(' ')}`);
  const r = spawnSync(cmd, args, {
    cwd: root,
    stdio: opts.capture ? ['inherit', 'pipe', 'inherit'] : 'inherit',
    encoding: 'utf8',
  });
  if (opts.capture) process.stdout.write(r.stdout ?? '');
  return r;
}

let passed = 0;
let failed = 0;
let skipped = 0;

try {
  setup();
} catch (err) {
  console.log(err.message);
  console.log('test: 0 passed, 1 failed, 0 skipped');
  process.exit(1);
}

// The native addon (incrementally), tsc, then the `weft` CLI as one CommonJS file, as the tests run it.
try {
  build();
} catch (err) {
  console.log(`\n${err.message}`);
  console.log('test: 0 passed, 1 failed, 0 skipped');
  process.exit(1);
}

// Lint and format check (biome) counts as one test: a tree that fails it does not land.
const lint = run('npx', ['biome', 'check', 'packages', 'bench', 'test', 'scripts']);
if (lint.status === 0) passed += 1;
else failed += 1;

const specs = [];
for (const pkg of readdirSync(join(root, 'packages'))) {
  const dir = join('packages', pkg, 'dist', 'test');
  if (existsSync(join(root, dir))) specs.push(`${dir}/**/*.test.js`);
}
if (existsSync(join(root, 'test', 'dist'))) specs.push('test/dist/**/*.test.js');

const mocha = run('npx', ['mocha', '--config', 'scripts/mocharc.json', ...specs], { capture: true });
const m = /mocha: (\d+) passed, (\d+) failed, (\d+) skipped/.exec(mocha.stdout ?? '');
if (m) {
  passed += Number(m[1]);
  failed += Number(m[2]);
  skipped += Number(m[3]);
}
if (mocha.status !== 0 && (!m || Number(m[2]) === 0)) failed += 1; // crashed before reporting

if (existsSync(join(root, 'packages/kv/dist/src/sim/cli.js'))) {
  const sim = run('node', ['packages/kv/dist/src/sim/cli.js', '--seeds', simSeeds]);
  if (sim.status === 0) passed += 1;
  else failed += 1;
}

console.log(`\ntest: ${passed} passed, ${failed} failed, ${skipped} skipped`);
process.exit(failed === 0 ? 0 : 1);
