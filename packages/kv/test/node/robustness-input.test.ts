// The embedding API refuses the input the Consul HTTP API refuses, with a
// typed error naming the problem, and writes nothing.
import assert from 'node:assert/strict';
import type { KvNode } from '../../src/api/node.js';
import { KvInputError } from '../../src/api/node-errors.js';
import { MAX_TXN_OPS, MAX_VALUE_BYTES } from '../../src/fsm/types.js';
import { enc, RobustCluster } from './robustness-cluster.js';

function refused(pattern: RegExp): (err: unknown) => true {
  return (err) => {
    assert.ok(err instanceof KvInputError, `expected KvInputError, got ${String(err)}`);
    assert.equal(err.code, 'invalid');
    assert.match(err.message, pattern);
    return true;
  };
}

describe('KvNode API input checks (same rules as the HTTP API)', function () {
  this.timeout(30_000);
  let cluster: RobustCluster;
  let node: KvNode;
  before(async () => {
    cluster = await RobustCluster.create(['127.0.0.1:17151'], { http: '127.0.0.1:0' });
    [node] = (await cluster.startAll()) as [KvNode];
    await cluster.leader();
  });
  after(async () => {
    await cluster?.destroy();
  });

  it('refuses keys and prefixes beginning with "/", empty keys and keys that are not valid Unicode', async () => {
    await assert.rejects(
      node.put('/a', enc('1')),
      refused(/put: invalid key "\/a": it must not begin with a '\/'/),
    );
    await assert.rejects(node.get('/a'), refused(/must not begin with a '\/'/));
    await assert.rejects(node.list('/'), refused(/list: invalid prefix/));
    await assert.rejects(node.delete('/a', { recurse: true }), refused(/delete: invalid prefix/));
    await assert.rejects(node.put('', enc('1')), refused(/missing key name/));
    await assert.rejects(node.delete(''), refused(/missing key name/));
    assert.equal(
      await node.get(''),
      null,
      'reading the empty key is allowed (a read barrier); it is never stored',
    );
    await assert.rejects(node.put('bad\uD800key', enc('1')), refused(/not valid Unicode/));
    const watch = node.watchPrefix('/w')[Symbol.asyncIterator]();
    await assert.rejects(watch.next(), refused(/watch: invalid prefix/));
    // The HTTP API says the same about the same key.
    const res = await fetch(`http://${node.httpAddress()}/v1/kv//a`, { method: 'PUT', body: '1' });
    assert.equal(res.status, 400);
    assert.match(await res.text(), /must not begin with a '\/'/);
  });

  it('refuses session TTLs outside 0..24 h, fractional milliseconds and unknown behaviors', async () => {
    await assert.rejects(node.createSession({ ttlMs: -1 }), refused(/invalid ttlMs -1/));
    await assert.rejects(node.createSession({ ttlMs: 25 * 3600 * 1000 }), refused(/24 h at most/));
    await assert.rejects(node.createSession({ ttlMs: 1.5 }), refused(/whole number of milliseconds/));
    await assert.rejects(node.createSession({ ttlMs: Number.NaN }), refused(/invalid ttlMs NaN/));
    await assert.rejects(node.createSession({ lockDelayMs: -5 }), refused(/invalid lockDelayMs/));
    await assert.rejects(
      node.createSession({ behavior: 'drop' as 'delete' }),
      refused(/invalid behavior "drop"/),
    );
    assert.deepEqual(await node.sessions(), [], 'no session was created');
    const id = await node.createSession({ ttlMs: 24 * 3600 * 1000 });
    assert.equal((await node.session(id))?.ttl, '86400s');
  });

  it('refuses oversized values, out-of-range flags and oversized transactions before proposing them', async () => {
    const before = node.status().lastIndex;
    await assert.rejects(
      node.put('big', new Uint8Array(MAX_VALUE_BYTES + 1)),
      refused(new RegExp(`write refused: .*${MAX_VALUE_BYTES + 1} bytes, more than ${MAX_VALUE_BYTES}`)),
    );
    await assert.rejects(node.put('f', enc('1'), { flags: -1n }), refused(/outside uint64/));
    await assert.rejects(node.put('c', enc('1'), { cas: -1 }), refused(/index is not a non-negative/));
    const ops = Array.from({ length: MAX_TXN_OPS + 1 }, (_, i) => ({ verb: 'set' as const, key: `t/${i}` }));
    await assert.rejects(node.txn(ops), refused(/1\.\.64 operations, got 65/));
    assert.equal(node.status().lastIndex, before, 'nothing reached the log');
    assert.equal(await node.get('big'), null);
  });
});
