import assert from 'node:assert/strict';
import { chmod, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  generateClusterKey,
  IDENTITY_KEY_FILE,
  loadOrCreatePrivateKey,
  parseClusterKey,
  toMultiaddrString,
} from '../../src/transport/identity.js';

describe('transport identity and addresses', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'weft-identity-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('creates the key once (0600) and loads the same key afterwards', async () => {
    const dataDir = join(dir, 'nested', 'data');
    const first = await loadOrCreatePrivateKey(dataDir);
    const second = await loadOrCreatePrivateKey(dataDir);
    assert.ok(first.equals(second));
    assert.equal((await stat(join(dataDir, IDENTITY_KEY_FILE))).mode & 0o777, 0o600);
  });

  it('tightens a key file readable by others back to 0600', async () => {
    await loadOrCreatePrivateKey(dir);
    await chmod(join(dir, IDENTITY_KEY_FILE), 0o644);
    await loadOrCreatePrivateKey(dir);
    assert.equal((await stat(join(dir, IDENTITY_KEY_FILE))).mode & 0o777, 0o600);
  });

  it('refuses a corrupt key file with advice, and leaves it untouched', async () => {
    const path = join(dir, IDENTITY_KEY_FILE);
    await writeFile(path, new Uint8Array([1, 2, 3, 4]), { mode: 0o600 });
    await assert.rejects(
      loadOrCreatePrivateKey(dir),
      /identity key .* is corrupt .*restore it from a backup/,
    );
    assert.deepStrictEqual(new Uint8Array(await readFile(path)), new Uint8Array([1, 2, 3, 4]));
  });

  it('parses cluster keys in pnet v1 text or bare hex, and names what is wrong', () => {
    const key = generateClusterKey();
    assert.match(key, /^\/key\/swarm\/psk\/1\.0\.0\/\n\/base16\/\n[0-9a-f]{64}$/);
    const hex = key.split('\n')[2];
    assert.deepStrictEqual(parseClusterKey(key), parseClusterKey(hex.toUpperCase()));
    assert.deepStrictEqual(parseClusterKey(new TextEncoder().encode(`${key}\n`)), parseClusterKey(hex));
    assert.throws(() => parseClusterKey('1234'), /64 hexadecimal digits/);
    assert.throws(() => parseClusterKey(`/key/swarm/psk/1.0.0/\n/base64/\n${hex}`), /header lines/);
  });

  it('turns host:port peer addresses into multiaddrs', () => {
    assert.equal(toMultiaddrString('127.0.0.1:7001'), '/ip4/127.0.0.1/tcp/7001');
    assert.equal(toMultiaddrString('[::1]:7001'), '/ip6/::1/tcp/7001');
    assert.equal(toMultiaddrString('node-2.example:7001'), '/dns/node-2.example/tcp/7001');
    assert.equal(toMultiaddrString(' /ip4/192.0.2.1/tcp/1 '), '/ip4/192.0.2.1/tcp/1');
    for (const bad of ['127.0.0.1', '127.0.0.1:99999', ':7001', 'a:b']) {
      assert.throws(() => toMultiaddrString(bad), /is not host:port/, bad);
    }
  });
});
