// A follower whose disk is slow learns of a new leader (its Raft core has
// stepped the new leader's message) while its run loop still waits for an
// fsync. Writes it forwards in that window go to the new leader and must not
// be failed as "forwarded to the old leader" when the loop catches up.
import assert from 'node:assert/strict';
import { waitUntil } from '../../src/testing/wait-until.js';
import { dec, enc, RobustCluster } from './robustness-cluster.js';

interface Internals {
  storage: { save: (...args: unknown[]) => Promise<void> };
  raft: { status(): { leader: string } };
}

describe('KvNode on a slow disk across a leader change', function () {
  this.timeout(60_000);
  let cluster: RobustCluster | undefined;
  afterEach(async () => {
    await cluster?.destroy();
    cluster = undefined;
  });

  it('a write forwarded to the new leader while the loop waits for an fsync is not failed as sent to the old one', async () => {
    cluster = await RobustCluster.create(['127.0.0.1:17191', '127.0.0.1:17192', '127.0.0.1:17193'], {
      proposalTimeoutMs: 30_000,
    });
    await cluster.startAll();
    const leader = await cluster.leader();
    const follower = await cluster.followerOf(leader);
    const other = [...cluster.nodes.values()].find((n) => n !== leader && n !== follower)!;
    const internals = follower as unknown as Internals;
    // Every fsync of the follower takes 400 ms more (the data is durable; only the loop waits).
    let slowMs = 0;
    const save = internals.storage.save.bind(internals.storage);
    internals.storage.save = (...args: unknown[]) =>
      save(...args).then(() => new Promise<void>((r) => setTimeout(r, slowMs)));
    slowMs = 400;
    const results: Array<Promise<boolean>> = [];
    const coreLeader = () => internals.raft.status().leader;
    // Keep the follower's loop busy with saves while leadership moves to `other`.
    const writer = (async () => {
      for (let i = 0; i < 6; i++) await leader.put(`s/bg${i}`, enc('x')).catch(() => false);
    })();
    const transfer = leader.transferLeadership(other.raftId);
    await waitUntil(
      'the follower core to follow the new leader',
      () => coreLeader() === other.raftId,
      20_000,
    );
    // The window under test: the core follows `other`, the loop has not yet seen it.
    assert.notEqual(follower.status().leader, other.raftId, 'precondition: the loop lags behind the core');
    for (let i = 0; i < 5; i++) results.push(follower.put(`s/${i}`, enc(String(i))));
    await transfer;
    await writer;
    const settled = await Promise.allSettled(results);
    slowMs = 0;
    const failures = settled.flatMap((s) => (s.status === 'rejected' ? [(s.reason as Error).message] : []));
    assert.deepEqual(failures, [], 'writes sent to the new leader failed');
    for (let i = 0; i < 5; i++) assert.equal(dec((await other.get(`s/${i}`))?.value), String(i));
  });
});
