#!/usr/bin/env node
// Bundles the `weft` command line — dist/src/cli/main.js as `tsc -b` emitted
// it, and everything it imports (commander, the API client) — into one
// CommonJS file with esbuild, plus V8's code cache for it:
//
//   dist/src/cli/weft-bundle.cjs          the bundle
//   dist/src/cli/weft-bundle.cjs.v8cache  V8 code cache of the bundle (see below)
//   dist/src/cli/weft.cjs                 the entry (bin/weft runs it): a small
//                                         loader that compiles the bundle with
//                                         that cache
//
// Why: every `weft` command is a new Node process, and its start-up is most
// of a quick command's time. Node 20 sets up its ES module loader only for an
// ES module entry (~25 ms), then resolves and loads each module file; one
// CommonJS file skips both (`weft --help`: ~90 -> ~60 ms on an idle machine).
// Compiling that file, and then each function as it first runs, is most of
// what is left (~8 ms): V8's code cache (vm.Script cachedData), made here by
// running the bundle once (`--help`) and saving what V8 compiled, skips it.
// Node 20 has no compile cache of its own (module.enableCompileCache came in
// 22), and its startup snapshots cannot hold node:http.
//
// The cache is only used for the bundle it was made from: its header holds
// the bundle's size and mtime, which the loader compares (V8 itself checks
// only the source's length, its own version and flags; it rejects a cache on
// those and then compiles as usual, so a cache from another Node costs time,
// never correctness).
//
// `weft agent` is not bundled: the CLI imports ../agent/main.js only for that
// subcommand, at run time, from the same directory as main.js.
//
// The bundle never runs stale code: at start the loader compares the
// bundle's mtime with the files it was made from (listed at build time); if
// any is newer (a `tsc -b` without this step), it runs main.js instead.
import { spawn } from 'node:child_process';
import { statSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { dirname, join, relative } from 'node:path';
import { build } from 'esbuild';

const root = new URL('..', import.meta.url).pathname;
const cliDir = join(root, 'dist', 'src', 'cli');
const entry = join(cliDir, 'main.js');
const bundleName = 'weft-bundle.cjs';
const bundleFile = join(cliDir, bundleName);
const cacheFile = `${bundleFile}.v8cache`;
const loaderFile = join(cliDir, 'weft.cjs');
const dynamicImportParameter = '__weftDynamicImport';

try {
  statSync(entry);
} catch {
  console.error(`bundle-cli: ${entry} is missing; run \`npx tsc -b\` first`);
  process.exit(1);
}

const options = {
  entryPoints: [entry],
  outfile: bundleFile,
  bundle: true,
  platform: 'node',
  format: 'cjs',
  target: 'node20',
  external: ['../agent/main.js'],
  logLevel: 'warning',
  metafile: true,
};
const result = await build({ ...options, write: false });
const inputs = Object.keys(result.metafile.inputs).map((p) => relative(cliDir, join(process.cwd(), p)));

// Node 20 loses a vm.Script's dynamic-import callback when the script comes
// from a code cache ("A dynamic import callback was not specified"), so the
// bundle's dynamic imports (\`weft agent\` loading the agent, node:https) go
// through a function the loader passes in: its own import(), which resolves
// exactly as the bundle's would (same directory). Every dynamic import
// esbuild reports must be rewritten, or the build fails.
const dynamicImports = Object.values(result.metafile.outputs).flatMap((o) =>
  o.imports.filter((i) => i.kind === 'dynamic-import'),
).length;
let rewritten = 0;
const bundleText = result.outputFiles[0].text.replace(/\bimport\((?=["'])/g, () => {
  rewritten++;
  return `${dynamicImportParameter}(`;
});
if (rewritten !== dynamicImports) {
  console.error(
    `bundle-cli: found ${rewritten} dynamic imports to rewrite in the bundle, esbuild reports ${dynamicImports}; ` +
      'update the rewrite in scripts/bundle-cli.mjs',
  );
  process.exit(1);
}
writeFileSync(bundleFile, bundleText);

// The loader. Compiled by Node as usual (it is small); it compiles the
// bundle itself, exactly as Node's CommonJS loader would (same wrapper), but
// with the code cache.
const loader = `'use strict';
// Made by scripts/bundle-cli.mjs: runs ${bundleName} with V8's code cache.
const { readFileSync, statSync } = require('node:fs');
const { join } = require('node:path');
const vm = require('node:vm');
const bundle = join(__dirname, ${JSON.stringify(bundleName)});

/** The bundle's mtime, or undefined if it is missing or older than a file it was made from. */
function freshBundleMs() {
  let builtMs;
  try {
    builtMs = statSync(bundle).mtimeMs;
  } catch {
    return undefined;
  }
  const newer = ${JSON.stringify(inputs)}.some((f) => {
    try {
      return statSync(join(__dirname, f)).mtimeMs > builtMs;
    } catch {
      return false; // laid out differently (installed elsewhere): not evidence of a rebuild
    }
  });
  return newer ? undefined : builtMs;
}

/** The cache's data if its header names this bundle (size and mtime), else undefined. */
function cacheFor(source, builtMs) {
  let file;
  try {
    file = readFileSync(bundle + '.v8cache');
  } catch {
    return undefined;
  }
  const eol = file.indexOf(10);
  if (eol < 0) return undefined;
  const header = file.subarray(0, eol).toString('latin1');
  return header === ${JSON.stringify('weft-v8cache 1 ')} + source.length + ' ' + builtMs ? file.subarray(eol + 1) : undefined;
}

/** Compiles the bundle with Node's CommonJS wrapper (plus the import function); the cache is used if it is ours and V8 takes it. */
function compileBundle(source, cachedData) {
  return new vm.Script(
    '(function (exports, require, module, __filename, __dirname, ${dynamicImportParameter}) { ' +
      source.replace(/^#!.*/, '') +
      '\\n});',
    { filename: bundle, cachedData },
  );
}

const builtMs = freshBundleMs();
if (builtMs === undefined) {
  import('./main.js');
} else {
  const source = readFileSync(bundle, 'utf8');
  const script = compileBundle(source, cacheFor(source, builtMs));
  const bundleModule = { exports: {} };
  // The bundle's dynamic imports, resolved from this directory (the bundle's too).
  const dynamicImport = (specifier) => import(specifier);
  script.runInThisContext()(bundleModule.exports, require, bundleModule, bundle, __dirname, dynamicImport);
  if (process.env.WEFT_CLI_WRITE_V8CACHE === bundle + '.v8cache') {
    // Build time (scripts/bundle-cli.mjs): save what V8 compiled once the command has run.
    process.once('exit', () => {
      const header = Buffer.from(${JSON.stringify('weft-v8cache 1 ')} + source.length + ' ' + builtMs + '\\n', 'latin1');
      require('node:fs').writeFileSync(bundle + '.v8cache', Buffer.concat([header, script.createCachedData()]));
    });
  }
}
`;
writeFileSync(loaderFile, loader);

// The cache: run one `weft run` through the loader against a stand-in API
// (it answers every call with an error), and let the loader save what V8
// compiled: command-line parsing, the API client and error output.
const standIn = createServer((req, res) => {
  req.resume();
  req.on('end', () => {
    res.writeHead(409, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ error: 'stand-in API of scripts/bundle-cli.mjs' }));
  });
});
await new Promise((resolve) => standIn.listen(0, '127.0.0.1', resolve));
const training = spawn(
  process.execPath,
  [loaderFile, '--format', 'json', 'run', '-d', '--net', 'n', '--name', 'c', '--', 'true'],
  {
    env: {
      ...process.env,
      WEFT_API: `127.0.0.1:${standIn.address().port}`,
      WEFT_CLI_WRITE_V8CACHE: cacheFile,
      NODE_OPTIONS: '',
    },
    stdio: ['ignore', 'ignore', 'pipe'],
  },
);
let trainingStderr = '';
training.stderr.on('data', (b) => {
  trainingStderr += b;
});
const trained = await new Promise((resolve) => training.once('close', (code) => resolve(code)));
standIn.close();
let cached = true;
try {
  // The stand-in's error is the expected outcome (exit 1 with its message).
  if (!trainingStderr.includes('stand-in API') || statSync(cacheFile).mtimeMs < statSync(bundleFile).mtimeMs)
    cached = false;
} catch {
  cached = false;
}
if (!cached) {
  console.error(
    `bundle-cli: could not make the V8 code cache (exit ${trained}: ${trainingStderr.trim()}); the CLI works without it, only slower`,
  );
}
console.log(
  `bundle-cli: ${relative(process.cwd(), loaderFile)} (+ ${bundleName}${cached ? ', V8 code cache' : ''}) from ${inputs.length} files in ${dirname(relative(root, entry))}`,
);
