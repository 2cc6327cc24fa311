#!/usr/bin/env node
// Builds the userspace data plane addon (`npm install` runs this as the
// package's install script). Offline by design: node-gyp must find Node's
// headers locally. npm passes a configured nodedir through npm_config_nodedir;
// without one we point node-gyp at the headers installed next to this node
// binary (Debian/NodeSource put them in <prefix>/include/node), so it never
// tries to download them.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const nativeDir = dirname(fileURLToPath(import.meta.url));
const args = ['rebuild', '--directory', nativeDir];
if (!process.env.npm_config_nodedir) {
  const prefix = dirname(dirname(process.execPath));
  if (existsSync(join(prefix, 'include', 'node', 'node.h'))) args.push(`--nodedir=${prefix}`);
}
if (process.platform !== 'linux') {
  console.log('weft: the userspace data plane is Linux-only; skipping the native addon build');
  process.exit(0);
}
const r = spawnSync('node-gyp', args, { stdio: 'inherit', shell: false });
if (r.error || r.status !== 0) {
  console.error(
    `weft: building the native addon failed (${r.error?.message ?? `node-gyp exit ${r.status}`}). ` +
      'It needs g++, make, python3, libmnl and Node headers (Debian: build-essential python3 libmnl-dev nodejs-dev or libnode-dev). ' +
      'Retry with `npm rebuild -w @weft/agent` or `node packages/agent/native/build.mjs`.',
  );
  process.exit(1);
}
