// The npm consul client against a real 3-node KvNode cluster (LevelDB on disk, in-memory
// Raft transport): every request goes to a follower's HTTP API, which must forward writes,
// serve consistent reads and wake blocking queries from its own replica.
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Consul from 'consul';
import { KvNode } from '../../src/api/node.js';
import { waitUntil } from '../../src/testing/wait-until.js';
import { MemoryNetwork, type MemoryTransport } from '../../src/transport/memory.js';

function clientOf(node: KvNode): Consul {
  const [host, port] = (node.httpAddress() as string).split(':');
  return new Consul({ host, port: Number(port) });
}

describe('http: the npm consul client against a 3-node cluster, through followers', function () {
  this.timeout(60_000);
  let root: string;
  let nodes: KvNode[] = [];
  const clients: Consul[] = [];

  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), 'weft-http-cluster-'));
    const network = new MemoryNetwork();
    const transports = new Map<string, MemoryTransport>();
    const addrs = ['127.0.0.1:27101', '127.0.0.1:27102', '127.0.0.1:27103'];
    nodes = await Promise.all(
      addrs.map((listen, i) =>
        KvNode.open({
          dataDir: join(root, `n${i}`),
          id: `n${i}`,
          listen,
          peers: addrs.filter((a) => a !== listen),
          http: '127.0.0.1:0',
          tickMs: 20,
          proposalTimeoutMs: 5_000,
          transport: (raftId) => {
            const t = transports.get(raftId) ?? network.transport(raftId);
            transports.set(raftId, t);
            return t;
          },
        }),
      ),
    );
    await waitUntil('a leader', () => nodes.some((n) => n.status().role === 'leader'), 15_000);
  });

  afterEach(async () => {
    for (const c of clients.splice(0)) c.destroy();
    await Promise.all(nodes.map((n) => n.close()));
    nodes = [];
    await rm(root, { recursive: true, force: true });
  });

  function followers(): [Consul, Consul] {
    const fs = nodes.filter((n) => n.status().role !== 'leader');
    assert.equal(fs.length, 2);
    const cs = fs.map(clientOf) as [Consul, Consul];
    clients.push(...cs);
    return cs;
  }

  it('set / cas / get / keys / txn through followers; consistent reads see every write', async () => {
    const [f1, f2] = followers();
    assert.equal(await f1.kv.set({ key: 'app/db', value: 'postgres', flags: 9 }), true);
    const got = await f2.kv.get({ key: 'app/db', consistent: true } as never);
    assert.equal((got as { Value: string }).Value, 'postgres');
    assert.equal((got as { Flags: number }).Flags, 9);
    const modifyIndex = (got as { ModifyIndex: number }).ModifyIndex;
    assert.equal(await f2.kv.set({ key: 'app/db', value: 'x', cas: modifyIndex + 100 }), undefined);
    assert.equal(await f2.kv.set({ key: 'app/db', value: 'mysql', cas: modifyIndex }), true);
    const txn = (await f1.transaction.create([
      { KV: { Verb: 'set', Key: 'app/web', Value: Buffer.from('nginx').toString('base64') } },
      { KV: { Verb: 'get', Key: 'app/db' } },
    ] as never)) as { Results: Array<{ KV: { Key: string; Value: string | null } }> };
    assert.equal(Buffer.from(txn.Results[1]?.KV.Value ?? '', 'base64').toString(), 'mysql');
    assert.deepEqual(await f2.kv.keys({ key: 'app/', consistent: true } as never), ['app/db', 'app/web']);
  });

  it('a lock taken through one follower is refused through the other, and freed by destroying its session', async () => {
    const [f1, f2] = followers();
    const s1 = ((await f1.session.create({ name: 'one', lockdelay: '1ms' })) as { ID: string }).ID;
    const s2 = ((await f2.session.create({ name: 'two' })) as { ID: string }).ID;
    assert.equal(await f1.kv.set({ key: 'lock', value: 'one', acquire: s1 }), true);
    assert.equal(await f2.kv.set({ key: 'lock', value: 'two', acquire: s2 }), undefined);
    await f2.session.destroy(s1);
    await new Promise((r) => setTimeout(r, 5)); // past the 1 ms lock-delay
    assert.equal(await f2.kv.set({ key: 'lock', value: 'two', acquire: s2 }), true);
    const held = (await f1.kv.get({ key: 'lock', consistent: true } as never)) as unknown as {
      Session: string;
      LockIndex: number;
    };
    assert.deepEqual([held.Session, held.LockIndex], [s2, 2]);
  });

  it('a blocking watch on one follower wakes for a write made through the other', async () => {
    const [f1, f2] = followers();
    await f1.kv.set('cfg/a', '1');
    const watch = f2.watch({ method: f2.kv.get, options: { key: 'cfg/', recurse: 'true', wait: '10s' } });
    const seen: string[][] = [];
    watch.on('change', (data: Array<{ Key: string; Value: string }> | undefined) => {
      seen.push((data ?? []).map((e) => `${e.Key}=${e.Value}`));
    });
    const errors: unknown[] = [];
    watch.on('error', (e: unknown) => errors.push(e));
    try {
      await waitUntil('the first listing', () => seen.some((l) => l.includes('cfg/a=1')), 15_000);
      await f1.kv.set('cfg/b', '2');
      await waitUntil('the change', () => seen.some((l) => l.length === 2), 15_000);
      assert.deepEqual(seen.at(-1), ['cfg/a=1', 'cfg/b=2']);
      assert.deepEqual(errors, []);
    } finally {
      watch.end();
    }
  });
});
