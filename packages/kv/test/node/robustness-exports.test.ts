// What an embedder imports from the package root: the records the API
// returns, the limits it checks, the errors it throws, and the examples in
// the published tarball.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import type {
  DirEntry,
  HostPort,
  KvOp,
  KvVerb,
  SessionBehavior,
  SessionRecord,
  TxnOpError,
  TxnResultEntry,
} from '../../src/index.js';
import * as kv from '../../src/index.js';

/** The package directory, from src/test (tsx) or dist/test (compiled). */
function packageDir(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!dir.endsWith(join('packages', 'kv'))) dir = dirname(dir);
  return dir;
}

describe('@weft/kv package root exports', () => {
  it('exports the limits, the decode error and the record types an embedder handles', () => {
    assert.equal(kv.MAX_VALUE_BYTES, 512 * 1024);
    assert.equal(kv.MAX_TXN_OPS, 64);
    assert.equal(new kv.CommandDecodeError('x').name, 'CommandDecodeError');
    // Type-only exports: this compiles only if the root exports them.
    const verb: KvVerb = 'set';
    const op: KvOp = { verb, key: 'k', value: new Uint8Array(0), flags: 0n, index: 0, session: '' };
    const behavior: SessionBehavior = 'release';
    const hp: HostPort = kv.parseHostPort('127.0.0.1:8500');
    const entries: Array<DirEntry | TxnResultEntry | SessionRecord | TxnOpError> = [];
    assert.equal(op.key, 'k');
    assert.equal(behavior, 'release');
    assert.equal(hp.port, 8500);
    assert.equal(entries.length, 0);
  });

  it('publishes the examples with the package (npm pack)', async function () {
    this.timeout(60_000);
    const { stdout } = await promisify(execFile)('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], {
      cwd: packageDir(),
    });
    const [pack] = JSON.parse(stdout) as Array<{ files: Array<{ path: string }> }>;
    const paths = pack!.files.map((f) => f.path);
    assert.ok(
      paths.includes('examples/minimal.ts'),
      `examples/minimal.ts missing from ${paths.length} packed files`,
    );
    assert.ok(paths.includes('examples/embed.mjs'));
  });
});
