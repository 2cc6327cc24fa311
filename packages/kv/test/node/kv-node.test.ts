// KvNode clusters in one process: real LevelDB directories, the in-memory
// transport (the layer under test is the run loop, not the network). The
// multi-process tests over libp2p live in cluster-process.test.ts.
import assert from 'node:assert/strict';
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { KvNode, type KvNodeOptions } from '../../src/api/node.js';
import { KvNodeClosedError, KvNodeUnavailableError } from '../../src/api/node-errors.js';
import type { KvStateMachine } from '../../src/fsm/state-machine.js';
import { MessageType } from '../../src/raft/types.js';
import { checkLinearizability, type HistoryOp } from '../../src/sim/linearizability.js';
import { waitUntil } from '../../src/testing/wait-until.js';
import { dec, enc, RobustCluster } from './robustness-cluster.js';

/** WEFT_TEST_LOG=1 prints the nodes' logs (debugging). */
const testLog = process.env.WEFT_TEST_LOG
  ? {
      debug() {},
      info: (f: object, m: string) => console.error('INFO', m, JSON.stringify(f)),
      warn: (f: object, m: string) => console.error('WARN', m, JSON.stringify(f)),
      error: (f: object, m: string) => console.error('ERROR', m, JSON.stringify(f)),
    }
  : undefined;

/** The in-process cluster these tests run on: short proposal timeouts, logs on request. */
const openCluster = (addresses: string[], extra: Partial<KvNodeOptions> = {}) =>
  RobustCluster.create(addresses, {
    proposalTimeoutMs: 2_000,
    ...(testLog ? { log: testLog } : {}),
    ...extra,
  });

describe('KvNode (in-process cluster, LevelDB on disk)', function () {
  this.timeout(30_000);
  let cluster: RobustCluster;
  const addrs = ['127.0.0.1:17001', '127.0.0.1:17002', '127.0.0.1:17003'];

  afterEach(async () => {
    await cluster?.destroy();
  });

  for (const leaseReads of [true, false]) {
    it(`serves linearizable reads ${leaseReads ? 'from the leader lease' : 'by ReadIndex rounds (leaseReads: false)'}, each seeing the write acknowledged before it`, async () => {
      cluster = await openCluster(addrs, { leaseReads });
      await Promise.all(addrs.map((x) => cluster.start(x)));
      const leader = await cluster.leader();
      const follower = [...cluster.nodes.values()].find((n) => n !== leader)!;
      for (let i = 0; i < 20; i++) {
        assert.equal(await follower.put(`l/${i}`, enc(String(i))), true);
        for (const n of [leader, follower])
          assert.equal(dec((await n.get(`l/${i}`, { consistent: true }))?.value), String(i), n.name);
      }
      const served = leader.status().readsServed;
      if (leaseReads) {
        // The first reads after the election may need a round (no acknowledged heartbeat yet).
        assert.ok(
          served.lease >= 20,
          `only ${served.lease} of 40 reads from the lease (${served.quorumRound} rounds)`,
        );
      } else {
        assert.equal(served.lease, 0);
        assert.ok(served.quorumRound >= 20, `${served.quorumRound} ReadIndex rounds for 40 reads`);
      }
    });
  }

  it('forms a 3-node cluster, replicates writes from any node, serves linearizable reads everywhere', async () => {
    cluster = await openCluster(addrs);
    const [a, b, c] = await Promise.all(addrs.map((x) => cluster.start(x)));
    const leader = await cluster.leader();
    const follower = [a!, b!, c!].find((n) => n !== leader)!;
    assert.equal(await leader.put('k/leader', enc('1')), true);
    assert.equal(await follower.put('k/follower', enc('2')), true, 'a follower forwards its proposal');
    for (const n of [a!, b!, c!]) {
      assert.equal(dec((await n.get('k/leader'))?.value), '1', `${n.name} reads the leader's write`);
      assert.equal(dec((await n.get('k/follower'))?.value), '2', `${n.name} reads the follower's write`);
    }
    const entry = (await follower.get('k/follower'))!;
    assert.equal(
      await follower.cas('k/follower', enc('3'), entry.modifyIndex + 1000),
      false,
      'cas with a wrong index fails',
    );
    assert.equal(await follower.cas('k/follower', enc('3'), entry.modifyIndex), true);
    assert.deepEqual(
      (await leader.list('k/')).map((e) => [e.key, dec(e.value)]),
      [
        ['k/follower', '3'],
        ['k/leader', '1'],
      ],
    );
    const txn = await b!.txn([
      { verb: 'set', key: 't/1', value: enc('x') },
      { verb: 'check-not-exists', key: 't/2' },
    ]);
    assert.equal(txn.ok, true);
    assert.equal(await c!.delete('k/', { recurse: true }), true);
    assert.deepEqual(await a!.list('k/'), []);
    assert.deepEqual(
      a!.members().map((m) => [m.id, m.role]),
      addrs.map((x) => [x, 'voter']),
    );
  });

  it('shares fsyncs among concurrent proposals (group commit)', async () => {
    cluster = await openCluster([addrs[0]!]);
    const node = await cluster.start(addrs[0]!, { peers: [] });
    await cluster.leader();
    const before = (node as unknown as { storage: { stats: { syncedBatches: number } } }).storage.stats
      .syncedBatches;
    const writes = 200;
    await Promise.all(Array.from({ length: writes }, (_, i) => node.put(`g/${i}`, enc(String(i)))));
    const syncs =
      (node as unknown as { storage: { stats: { syncedBatches: number } } }).storage.stats.syncedBatches -
      before;
    assert.equal((await node.list('g/')).length, writes);
    assert.ok(syncs < writes / 4, `${writes} concurrent writes took ${syncs} synced batches`);
  });

  it('fails a write with a clear error within the proposal timeout when there is no quorum', async () => {
    cluster = await openCluster(addrs);
    await Promise.all(addrs.map((x) => cluster.start(x)));
    const leader = await cluster.leader();
    const others = addrs.filter((x) => cluster.nodes.get(x) !== leader);
    for (const x of others) await cluster.stop(x);
    const started = Date.now();
    await assert.rejects(leader.put('q', enc('1')), (err: Error) => {
      assert.ok(err instanceof KvNodeUnavailableError, String(err));
      assert.match(err.message, /not completed within 2000 ms/);
      assert.match(err.message, /quorum of the 3 voters/);
      return true;
    });
    assert.ok(Date.now() - started < 4_000, 'bounded by the proposal timeout');
    await assert.rejects(leader.get('q'), KvNodeUnavailableError, 'a linearizable read fails the same way');
    assert.equal(
      await leader.get('q', { stale: true }),
      null,
      'a stale read answers locally: the write never committed',
    );
  });

  it('survives the loss of the leader; a restarted node catches up from its data directory', async () => {
    cluster = await openCluster(addrs);
    await Promise.all(addrs.map((x) => cluster.start(x)));
    const first = await cluster.leader();
    const acked: string[] = [];
    for (let i = 0; i < 20; i++) {
      await first.put(`w/${i}`, enc(String(i)));
      acked.push(`w/${i}`);
    }
    const firstAddr = first.raftId;
    await cluster.stop(firstAddr);
    const second = await cluster.leader();
    assert.notEqual(second.raftId, firstAddr);
    for (let i = 20; i < 40; i++) {
      await second.put(`w/${i}`, enc(String(i)));
      acked.push(`w/${i}`);
    }
    const restarted = await cluster.start(firstAddr);
    await waitUntil(
      'restarted node to catch up',
      async () => (await restarted.list('w/', { stale: true })).length === 40 || undefined,
    );
    for (const node of cluster.nodes.values()) {
      const keys = (await node.list('w/')).map((e) => e.key);
      assert.deepEqual(keys.sort(), [...acked].sort(), `${node.name} has every acknowledged write`);
    }
  });

  it('fails a write forwarded to a leader that is cut off once another leads, instead of at the timeout', async () => {
    cluster = await openCluster(addrs, { proposalTimeoutMs: 20_000 });
    await Promise.all(addrs.map((x) => cluster.start(x)));
    const oldLeader = await cluster.leader();
    const follower = [...cluster.nodes.values()].find((n) => n !== oldLeader)!;
    const others = addrs.filter((x) => x !== oldLeader.raftId);
    // The follower must know the old leader before the cut, or it has nobody to forward to.
    await waitUntil('the follower to know the leader', () =>
      follower.status().leader === oldLeader.raftId ? true : undefined,
    );
    cluster.network.partition([oldLeader.raftId], others);
    // Forwarded to the old leader, which never receives it (Raft does not retransmit proposals).
    await assert.rejects(follower.put('f/1', enc('1')), (err: Error) => {
      assert.ok(err instanceof KvNodeUnavailableError, String(err));
      assert.match(err.message, /leadership moved/);
      assert.match(err.message, /may or may not have been applied/);
      return true;
    });
    const newLeader = await waitUntil('a leader among the majority', () =>
      others.map((x) => cluster.nodes.get(x)!).find((n) => n.status().role === 'leader'),
    );
    assert.notEqual(newLeader.raftId, oldLeader.raftId);
    assert.equal(await follower.put('f/1', enc('2')), true, 'the retried write commits under the new leader');
    assert.equal(dec((await newLeader.get('f/1'))?.value), '2');
  });

  it('a follower restarted after compaction catches up by snapshot', async () => {
    // Compaction in steps of 4 entries (each its own batch, with writes going on in between).
    cluster = await openCluster(addrs, { snapshotEveryEntries: 25, compactionStepEntries: 4 });
    await Promise.all(addrs.map((x) => cluster.start(x)));
    const leader = await cluster.leader();
    const lagging = addrs.find((x) => x !== leader.raftId)!;
    await cluster.stop(lagging);
    for (let i = 0; i < 80; i++) await leader.put(`s/${i}`, enc(String(i)));
    const ls = await waitUntil('the leader to compact its log up to its snapshot', () => {
      const st = leader.status();
      return st.snapshotIndex > 25 && st.firstIndex === st.snapshotIndex + 1 ? st : undefined;
    });
    assert.ok(ls.firstIndex > 25, `leader compacted its log (first index ${ls.firstIndex})`);
    const node = await cluster.start(lagging);
    await waitUntil(
      'lagging follower to catch up',
      async () => (await node.list('s/', { stale: true })).length === 80 || undefined,
    );
    const st = node.status();
    assert.ok(
      st.snapshotIndex > 1,
      `caught up by installing a snapshot (snapshot index ${st.snapshotIndex})`,
    );
    assert.equal(dec((await node.get('s/79', { stale: true }))?.value), '79');
    // And it survives a restart of its own after installing the snapshot.
    await cluster.stop(lagging);
    const again = await cluster.start(lagging);
    assert.equal((await again.list('s/', { stale: true })).length, 80);
  });

  it('joins a new node as a learner and promotes it once caught up', async () => {
    cluster = await openCluster(addrs);
    await Promise.all(addrs.map((x) => cluster.start(x)));
    const leader = await cluster.leader();
    for (let i = 0; i < 10; i++) await leader.put(`j/${i}`, enc(String(i)));
    const newcomer = '127.0.0.1:17004';
    const node = await cluster.start(newcomer, { peers: [], join: addrs[0]!, id: 'n4' });
    await waitUntil('the new node to be promoted', () =>
      leader.members().find((m) => m.id === newcomer && m.role === 'voter'),
    );
    assert.equal((await node.list('j/')).length, 10);
    assert.equal(leader.status().voters.length, 4);
    await leader.put('j/after', enc('x'));
    assert.equal(dec((await node.get('j/after'))?.value), 'x');
    const members = await leader.membersWithNames();
    assert.equal(members.find((m) => m.id === newcomer)?.name, 'n4');
  });

  it("a follower's transferLeadership() has the leader hand over, to another follower or to itself", async () => {
    cluster = await openCluster(addrs);
    const nodes = await Promise.all(addrs.map((x) => cluster.start(x)));
    const leader = await cluster.leader();
    const [a, b] = nodes.filter((n) => n !== leader) as [KvNode, KvNode];
    await a.transferLeadership(b.raftId);
    for (const n of nodes)
      await waitUntil(`${n.raftId} to see b lead`, () => n.status().leader === b.raftId || undefined);
    await a.transferLeadership(a.raftId);
    for (const n of nodes)
      await waitUntil(`${n.raftId} to see a lead`, () => n.status().leader === a.raftId || undefined);
    assert.equal(await b.put('after-transfers', enc('ok')), true);
  });

  it('transfers leadership and removes a member; the rest keeps serving', async () => {
    cluster = await openCluster(addrs);
    const nodes = await Promise.all(addrs.map((x) => cluster.start(x)));
    const leader = await cluster.leader();
    const target = nodes.find((n) => n !== leader)!;
    await leader.transferLeadership(target.raftId);
    await waitUntil('the target to lead', () => (target.status().role === 'leader' ? true : undefined));
    const removed = nodes.find((n) => n !== target && n.raftId !== target.raftId && n !== leader)!;
    await target.removeMember(removed.raftId);
    await waitUntil('everyone to see two voters', () =>
      [leader, target].every((n) => n.status().voters.length === 2) ? true : undefined,
    );
    assert.deepEqual(target.status().voters.sort(), [leader.raftId, target.raftId].sort());
    await cluster.stop(removed.raftId);
    assert.equal(await leader.put('after-removal', enc('ok')), true, 'two voters form the quorum now');
    assert.equal(dec((await target.get('after-removal'))?.value), 'ok');
    await assert.rejects(target.removeMember('127.0.0.1:1'), /not a member of this cluster/);
    await assert.rejects(
      target.promote(leader.raftId).then(() => target.promote('127.0.0.1:1')),
      /not a learner/,
    );
  });

  it('gives linearizable reads and writes across a leader crash and restart (checked history)', async () => {
    cluster = await openCluster(addrs);
    await Promise.all(addrs.map((x) => cluster.start(x)));
    const firstLeader = await cluster.leader();
    const history: HistoryOp[] = [];
    const t0 = performance.now();
    const runForMs = 2_500;
    let unique = 0;
    const clients = Array.from({ length: 5 }, async (_, clientId) => {
      while (performance.now() - t0 < runForMs) {
        const live = [...cluster.nodes.values()];
        const node = live[Math.floor(Math.random() * live.length)]!;
        const key = `lin/${Math.floor(Math.random() * 2)}`;
        const call = performance.now();
        if (Math.random() < 0.5) {
          try {
            const e = await node.get(key);
            history.push({
              clientId,
              key,
              kind: 'read',
              call,
              ret: performance.now(),
              output: e ? dec(e.value)! : null,
            });
          } catch {
            // A failed read observed nothing: it is left out of the history.
          }
        } else {
          const value = `c${clientId}-${unique++}`;
          let ret: number | null = null;
          try {
            await node.put(key, enc(value));
            ret = performance.now();
          } catch {
            // Not acknowledged: may or may not have happened (indeterminate).
          }
          history.push({ clientId, key, kind: 'write', value, call, ret });
        }
      }
    });
    await new Promise((r) => setTimeout(r, 800));
    await cluster.stop(firstLeader.raftId);
    await new Promise((r) => setTimeout(r, 600));
    await cluster.start(firstLeader.raftId);
    await Promise.all(clients);
    const completed = history.filter((h) => h.ret !== null);
    assert.ok(completed.length > 50, `only ${completed.length} operations completed`);
    const result = checkLinearizability(history, { timeBudgetMs: 20_000 });
    assert.equal(
      result.verdict,
      'ok',
      `history of ${history.length} ops: ${result.verdict} on ${result.key}: ${result.detail}`,
    );
  });

  it('fails a read waiting for the state machine when its node closes, instead of leaving it pending', async () => {
    // A lease read at the leader takes the commit index, which can run ahead
    // of the applied index while the leader's own fsync is out. A node closed
    // then never applies it: CI once hung a client here for good.
    cluster = await openCluster(addrs);
    await Promise.all(addrs.map((x) => cluster.start(x)));
    const leader = await cluster.leader();
    assert.equal(await leader.put('slow', enc('0')), true);
    await leader.get('slow'); // the lease holds from here on (acknowledged heartbeats)
    const inner = leader as unknown as {
      storage: { save: (...args: unknown[]) => Promise<void> };
      raft: { core: { log: { committed: number } } };
      appliedIndex: number;
    };
    // The leader's next save stays out until the node is closing.
    let releaseSave!: () => void;
    const saveHeld = new Promise<void>((r) => {
      releaseSave = r;
    });
    const save = inner.storage.save.bind(inner.storage);
    inner.storage.save = async (...args: unknown[]) => {
      await saveHeld;
      return save(...args);
    };
    const write = leader.put('slow', enc('1')).catch((err: Error) => err);
    await waitUntil('the write to commit ahead of the apply', () =>
      inner.raft.core.log.committed > inner.appliedIndex ? true : undefined,
    );
    const read = leader.get('slow').then(
      (e) => `resolved with ${dec(e?.value)}`,
      (err: Error) => err,
    );
    await new Promise((r) => setTimeout(r, 50));
    const closed = cluster.stop(leader.raftId);
    releaseSave();
    await closed;
    const outcome = await Promise.race([
      read,
      new Promise((r) => setTimeout(() => r('still pending 2 s after close()'), 2_000)),
    ]);
    assert.ok(outcome instanceof KvNodeClosedError, `the read ${String(outcome)}`);
    await write;
  });

  it('closes while an HTTP read waits for a ReadIndex answer, failing the read instead of deadlocking', async () => {
    // close() used to wait for the HTTP server's busy connections before it
    // failed the calls they wait on: a read with no leader to answer it (its
    // deadline is enforced by the tick, stopped first) held both forever.
    cluster = await openCluster(addrs);
    const node = await cluster.start(addrs[0]!, { http: '127.0.0.1:0' }); // alone: no leader, ever
    const inner = node as unknown as { reads: { pending: unknown[] } };
    const abort = new AbortController();
    const read = fetch(`http://${node.httpAddress()}/v1/kv/k`, { signal: abort.signal }).then(
      (res) => res.status,
      (err: Error) => err,
    );
    try {
      await waitUntil('the read to wait for a ReadIndex round', () =>
        inner.reads.pending.length > 0 ? true : undefined,
      );
      const outcome = await Promise.race([
        cluster.stop(addrs[0]!).then(() => 'closed'),
        new Promise((r) => setTimeout(() => r('close() still pending after 2 s'), 2_000)),
      ]);
      assert.equal(outcome, 'closed');
      assert.equal(await read, 503, 'the read fails (node closed) rather than hanging');
    } finally {
      abort.abort();
    }
  });

  it('fails a follower read within the proposal timeout when the entries its ReadIndex answer names never arrive', async () => {
    // The answer (the leader's commit index) claims the read from its round,
    // whose deadline then no longer applied: cut off from the leader's
    // appends, the follower never reached that index and the read waited for good.
    cluster = await openCluster(addrs);
    await Promise.all(addrs.map((x) => cluster.start(x)));
    const leader = await cluster.leader();
    const follower = await cluster.followerOf(leader);
    assert.equal(await follower.put('cut', enc('0')), true);
    // From here on the follower gets heartbeats and ReadIndex answers, but no appends.
    cluster.inboundDelay = (to, m) => (to === follower.raftId && m.type === MessageType.App ? 600_000 : 0);
    assert.equal(await leader.put('cut', enc('1')), true);
    const read = follower.get('cut').then(
      (e) => `resolved with ${dec(e?.value)}`,
      (err: Error) => err,
    );
    const inner = follower as unknown as { appliedWaiters: unknown[] };
    await waitUntil('the answered read to wait for the state machine', () =>
      inner.appliedWaiters.length > 0 ? true : undefined,
    );
    const outcome = await Promise.race([
      read,
      new Promise((r) => setTimeout(() => r('still pending 3 s after its 2 s timeout'), 5_000)),
    ]);
    assert.ok(outcome instanceof KvNodeUnavailableError, `the read ${String(outcome)}`);
  });

  it('watches a prefix and wakes on changes; expires TTL sessions on the leader', async () => {
    cluster = await openCluster(addrs);
    const nodes = await Promise.all(addrs.map((x) => cluster.start(x)));
    const leader = await cluster.leader();
    const follower = nodes.find((n) => n !== leader)!;
    const abort = new AbortController();
    const seen: string[][] = [];
    const watching = (async () => {
      for await (const ev of follower.watchPrefix('w/', { signal: abort.signal })) {
        seen.push(ev.entries.map((e) => e.key));
        if (seen.length === 3) abort.abort();
      }
    })();
    await waitUntil('first listing', () => seen.length >= 1 || undefined);
    await leader.put('w/a', enc('1'));
    await leader.put('w/b', enc('2'));
    await watching;
    assert.deepEqual(seen, [[], ['w/a'], ['w/a', 'w/b']]);

    const session = await follower.createSession({ ttlMs: 300, behavior: 'delete' });
    assert.equal(await follower.put('lock/x', enc('held'), { acquire: session }), true);
    await waitUntil(
      'session to expire',
      async () => ((await leader.session(session)) === null ? true : undefined),
      5_000,
    );
    assert.equal(await follower.get('lock/x'), null, 'behavior delete removed the locked key');
  });

  it('reaps tombstones of deleted keys on every replica once their TTL passed', async () => {
    cluster = await openCluster(addrs, { tombstoneTtlMs: 300 });
    const nodes = await Promise.all(addrs.map((x) => cluster.start(x)));
    const leader = await cluster.leader();
    await leader.put('gone', enc('1'));
    await leader.delete('gone');
    for (const n of nodes)
      await waitUntil(
        `${n.name} to apply the delete`,
        async () => (await n.get('gone', { stale: true })) === null || undefined,
      );
    assert.ok(
      nodes.every((n) => (n.state as KvStateMachine).tombstoneCount() === 1),
      'the delete left a tombstone everywhere',
    );
    for (const n of nodes)
      await waitUntil(
        `${n.name} to reap the tombstone`,
        () => (n.state as KvStateMachine).tombstoneCount() === 0 || undefined,
        5_000,
      );
  });

  it('a second close() resolves with the first, once the data directory can be opened again', async () => {
    // A fatal error starts a close; the user's own close() then used to return
    // at once, while LevelDB (and its lock on the directory) was still open.
    cluster = await openCluster([addrs[0]!]);
    const node = await cluster.start(addrs[0]!, { peers: [] });
    assert.equal(await node.put('kept', enc('1')), true);
    const storage = (node as unknown as { storage: { close: () => Promise<void> } }).storage;
    let releaseClose!: () => void;
    const closeHeld = new Promise<void>((r) => {
      releaseClose = r;
    });
    const closeStorage = storage.close.bind(storage);
    storage.close = async () => {
      await closeHeld;
      await closeStorage();
    };
    const first = node.close();
    const second = node.close().then(() => 'resolved');
    const early = await Promise.race([second, new Promise((r) => setTimeout(() => r('pending'), 200))]);
    assert.equal(early, 'pending', 'the second close() resolved while storage was still open');
    releaseClose();
    await Promise.all([first, second]);
    const reopened = await cluster.start(addrs[0]!, { peers: [] });
    assert.equal(dec((await reopened.get('kept', { stale: true }))?.value), '1');
  });

  it('refuses a data directory of another node, another raft address, or of other files', async () => {
    cluster = await openCluster([addrs[0]!]);
    await cluster.start(addrs[0]!, { peers: [] });
    await cluster.stop(addrs[0]!);
    await assert.rejects(
      cluster.start(addrs[0]!, { peers: [], id: 'someone-else' }),
      /belongs to node "n17001", not "someone-else"/,
    );
    const moved = cluster.options(addrs[0]!, { peers: [], listen: '127.0.0.1:17999' });
    await assert.rejects(
      KvNode.open({ ...moved, id: 'n17001' }),
      /holds the state of Raft member 127\.0\.0\.1:17001, not 127\.0\.0\.1:17999/,
    );
    const foreign = join(cluster.root, 'foreign');
    await mkdir(foreign);
    await writeFile(join(foreign, 'important.txt'), 'keep me');
    await assert.rejects(
      KvNode.open({ ...cluster.options(addrs[1]!, { peers: [] }), dataDir: foreign }),
      (err: Error) => err.message.includes(foreign) && /not a weft-kv data directory/.test(err.message),
    );
    assert.deepEqual(await readdir(foreign), ['important.txt']);
    // The refusals left the real directory usable.
    const node = await cluster.start(addrs[0]!, { peers: [] });
    await cluster.leader();
    assert.equal(node.status().voters.length, 1);
  });
});
