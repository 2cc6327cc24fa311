#!/usr/bin/env node
// Bundles the `weft` command line — dist/src/cli/main.js as `tsc -b` emitted
// it, and everything it imports (commander, the API client) — into one
// CommonJS file, dist/src/cli/weft.cjs, with esbuild.
//
// Why: every `weft` command is a new Node process, and its start-up is most
// of a quick command's time. Node 20 sets up its ES module loader only for an
// ES module entry (~25 ms), then resolves and loads each module file; one
// CommonJS file skips both (`weft --help`: ~90 -> ~60 ms on an idle machine).
// Node 20 has no compile cache (module.enableCompileCache came in 22), and a
// startup snapshot would need a separate `--snapshot-blob` argument on every
// call, so bundling is the simple option that works with a plain `node file`.
//
// `weft agent` is not bundled: the CLI imports ../agent/main.js only for that
// subcommand, at run time, from the same directory as main.js.
//
// The bundle never runs stale code: at start it compares its own mtime with
// the files it was made from (listed at build time); if any is newer (a
// `tsc -b` without this step), it runs main.js instead.
import { statSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { build } from 'esbuild';

const root = new URL('..', import.meta.url).pathname;
const cliDir = join(root, 'dist', 'src', 'cli');
const entry = join(cliDir, 'main.js');
const outfile = join(cliDir, 'weft.cjs');

try {
  statSync(entry);
} catch {
  console.error(`bundle-cli: ${entry} is missing; run \`npx tsc -b\` first`);
  process.exit(1);
}

const options = {
  entryPoints: [entry],
  outfile,
  bundle: true,
  platform: 'node',
  format: 'cjs',
  target: 'node20',
  external: ['../agent/main.js'],
  logLevel: 'warning',
};
// First pass only to learn the inputs; the second writes the file with them in its guard.
const probe = await build({ ...options, write: false, metafile: true });
const inputs = Object.keys(probe.metafile.inputs).map((p) => relative(cliDir, join(process.cwd(), p)));

const guard = `'use strict';
{
  // Made from these files by scripts/bundle-cli.mjs; if one was rebuilt since, run main.js instead.
  const { statSync } = require('node:fs');
  const { join } = require('node:path');
  const builtMs = statSync(__filename).mtimeMs;
  const newer = ${JSON.stringify(inputs)}.some((f) => {
    try {
      return statSync(join(__dirname, f)).mtimeMs > builtMs;
    } catch {
      return false; // laid out differently (installed elsewhere): not evidence of a rebuild
    }
  });
  if (newer) {
    import('./main.js');
    return;
  }
}`;
await build({ ...options, banner: { js: guard } });
console.log(
  `bundle-cli: ${relative(process.cwd(), outfile)} from ${inputs.length} files in ${dirname(relative(root, entry))}`,
);
