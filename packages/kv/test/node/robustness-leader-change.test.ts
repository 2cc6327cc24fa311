// Writes and reads a follower forwarded to a leader that then hands over
// leadership or dies: callers hear promptly, not at the proposal timeout.
import assert from 'node:assert/strict';
import type { KvNode } from '../../src/api/node.js';
import { KvNodeUnavailableError } from '../../src/api/node-errors.js';
import { waitUntil } from '../../src/testing/wait-until.js';
import { dec, enc, RobustCluster } from './robustness-cluster.js';

/** Settles every promise; the rejections' messages, and how many resolved. */
async function outcomes(promises: Array<Promise<unknown>>): Promise<{ ok: number; errors: Error[] }> {
  const settled = await Promise.allSettled(promises);
  return {
    ok: settled.filter((s) => s.status === 'fulfilled').length,
    errors: settled.flatMap((s) => (s.status === 'rejected' ? [s.reason as Error] : [])),
  };
}

function assertPromptFailures(errors: Error[]): void {
  for (const err of errors) {
    assert.ok(err instanceof KvNodeUnavailableError, String(err));
    assert.doesNotMatch(
      err.message,
      /not completed within/,
      'failed at the timeout, not at the leader change',
    );
    assert.match(err.message, /leadership moved/);
    assert.match(err.message, /may or may not have been applied/);
  }
}

describe('KvNode requests in flight across a leader change', function () {
  this.timeout(60_000);
  let cluster: RobustCluster | undefined;
  afterEach(async () => {
    await cluster?.destroy();
    cluster = undefined;
  });

  for (const to of ['the other follower', 'the issuing follower'] as const) {
    it(`30 writes and 30 reads a follower forwarded settle at once when the leader transfers leadership to ${to}`, async () => {
      // A 30 s timeout: anything waiting for it fails the mocha timeout instead.
      cluster = await RobustCluster.create(['127.0.0.1:17121', '127.0.0.1:17122', '127.0.0.1:17123'], {
        proposalTimeoutMs: 30_000,
      });
      await cluster.startAll();
      const leader = await cluster.leader();
      const follower = await cluster.followerOf(leader);
      const other = [...cluster.nodes.values()].find((n) => n !== leader && n !== follower)!;
      const target: KvNode = to === 'the issuing follower' ? follower : other;
      assert.equal(await leader.put('t/seed', enc('s')), true);
      const writes = Array.from({ length: 30 }, (_, i) => follower.put(`t/${i}`, enc(String(i))));
      const reads = Array.from({ length: 30 }, () => follower.get('t/seed'));
      const settled = Promise.all([outcomes(writes), outcomes(reads)]);
      await leader.transferLeadership(target.raftId);
      const [w, r] = await settled;
      if (process.env.WEFT_TEST_LOG) console.error(`writes: ${w.ok} ok, ${w.errors.length} to retry`);
      assertPromptFailures(w.errors);
      assert.deepEqual(
        r.errors.map((e) => e.message),
        [],
        'reads are sent again to the new leader',
      );
      await waitUntil(
        'the follower to know the new leader',
        () => follower.status().leader === target.raftId,
      );
      // Every write either succeeded or can be retried now; after the retries all 30 are there.
      for (let i = 0; i < 30; i++) assert.equal(await follower.put(`t/${i}`, enc(String(i))), true);
      const listed = await follower.list('t/');
      assert.equal(listed.length, 31);
      assert.equal(dec((await target.get('t/29'))?.value), '29');
    });
  }

  it('HTTP writes through a follower answer 503 (retry) at once when leadership moves, not after the timeout', async () => {
    cluster = await RobustCluster.create(['127.0.0.1:17141', '127.0.0.1:17142', '127.0.0.1:17143'], {
      proposalTimeoutMs: 30_000,
      http: '127.0.0.1:0',
    });
    await cluster.startAll();
    const leader = await cluster.leader();
    const follower = await cluster.followerOf(leader);
    const other = [...cluster.nodes.values()].find((n) => n !== leader && n !== follower)!;
    const url = (i: number) => `http://${follower.httpAddress()}/v1/kv/h/${i}`;
    // The follower's forwarded proposals are lost on the way to the leader.
    cluster.network.cut(follower.raftId, leader.raftId, { oneWay: true });
    const responses = Promise.all(
      Array.from({ length: 10 }, async (_, i) => {
        const res = await fetch(url(i), { method: 'PUT', body: String(i) });
        return { status: res.status, body: await res.text() };
      }),
    );
    await new Promise((r) => setTimeout(r, 200));
    await leader.transferLeadership(other.raftId);
    cluster.network.heal();
    for (const { status, body } of await responses) {
      assert.equal(status, 503, body);
      assert.match(body, /leadership moved.*retry/);
    }
    const retried = await fetch(url(0), { method: 'PUT', body: '0' });
    assert.equal(retried.status, 200);
  });

  it('a write forwarded to a leader that dies fails once another node leads, and the retry commits', async () => {
    cluster = await RobustCluster.create(['127.0.0.1:17131', '127.0.0.1:17132', '127.0.0.1:17133'], {
      proposalTimeoutMs: 30_000,
    });
    await cluster.startAll();
    const leader = await cluster.leader();
    const follower = await cluster.followerOf(leader);
    // The leader stops receiving: the forwarded proposal is lost with it.
    const others = cluster.addresses.filter((a) => a !== leader.raftId);
    cluster.network.partition([leader.raftId], others);
    const pending = follower.put('d/1', enc('1'));
    const { errors } = await outcomes([pending]);
    assert.equal(errors.length, 1);
    assertPromptFailures(errors);
    assert.equal(await follower.put('d/1', enc('2')), true);
    assert.equal(dec((await follower.get('d/1'))?.value), '2');
  });

  it('a write a leader appended but a newer leader overwrote fails at once as certainly not applied', async () => {
    cluster = await RobustCluster.create(['127.0.0.1:17181', '127.0.0.1:17182', '127.0.0.1:17183'], {
      proposalTimeoutMs: 30_000,
    });
    await cluster.startAll();
    const oldLeader = await cluster.leader();
    const others = cluster.addresses.filter((a) => a !== oldLeader.raftId);
    cluster.network.partition([oldLeader.raftId], others);
    // Appended to the old leader's log, never committed: the majority is on the other side.
    const stranded = Promise.allSettled([oldLeader.put('o/1', enc('lost'))]);
    const newLeader = await waitUntil('a leader among the majority', () =>
      others.map((a) => cluster!.nodes.get(a)!).find((n) => n.status().role === 'leader'),
    );
    assert.equal(await newLeader.put('o/2', enc('kept')), true);
    cluster.network.heal();
    const [outcome] = await stranded;
    assert.equal(outcome!.status, 'rejected');
    const err = (outcome as PromiseRejectedResult).reason as Error;
    assert.ok(err instanceof KvNodeUnavailableError, String(err));
    assert.match(err.message, /certainly not applied, retry it/);
    assert.equal(await oldLeader.get('o/1'), null, 'it was indeed not applied');
    assert.equal(await oldLeader.put('o/1', enc('retried')), true);
    assert.equal(dec((await newLeader.get('o/1'))?.value), 'retried');
  });
});
