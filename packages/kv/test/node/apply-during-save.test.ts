// A node whose run loop waits for an fsync still applies entries that become
// committed meanwhile, if an earlier Ready persisted them
// (KvNode.applyCommittedDuringSave): a write is answered without waiting for
// the leader's next, unrelated disk write to finish.
import assert from 'node:assert/strict';
import { MessageType } from '../../src/raft/types.js';
import { waitUntil } from '../../src/testing/wait-until.js';
import { dec, enc, RobustCluster } from './robustness-cluster.js';

interface Internals {
  storage: { save: (...args: unknown[]) => Promise<void> };
}

describe('KvNode applies commits that arrive while it waits for an fsync', function () {
  this.timeout(60_000);
  let cluster: RobustCluster | undefined;
  let release: () => void = () => {};
  afterEach(async () => {
    release();
    await cluster?.destroy();
    cluster = undefined;
  });

  it('the leader answers a write acked while its loop is held in the save of a later one', async () => {
    cluster = await RobustCluster.create(['127.0.0.1:17291', '127.0.0.1:17292', '127.0.0.1:17293'], {
      proposalTimeoutMs: 30_000,
      // A held leader sends nothing (not even heartbeats): followers must not time out meanwhile.
      electionTicks: 150,
    });
    await cluster.startAll();
    const leader = await cluster.leader();
    // Nothing of the election (the leader's empty entry) is still being saved.
    assert.equal(await leader.put('warm', enc('1')), true);
    const internals = leader as unknown as Internals;
    // Acks reach the leader 300 ms late, so that they arrive during the next save.
    cluster.inboundDelay = (to, m) => (to === leader.raftId && m.type === MessageType.AppResp ? 300 : 0);
    let holding = false;
    let saves = 0;
    const held = new Promise<void>((r) => {
      release = r;
    });
    const save = internals.storage.save.bind(internals.storage);
    internals.storage.save = (...args: unknown[]) =>
      save(...args).then(() => {
        saves++;
        return holding ? held : undefined; // durable at once; only the loop is held
      });
    let firstDone = false;
    saves = 0;
    const first = leader.put('k1', enc('v1')).then((ok) => {
      firstDone = true;
      return ok;
    });
    // k1's Ready is saved (not held); then the loop is held in the save of k2's Ready.
    await waitUntil('the leader to save k1', () => saves > 0 || undefined);
    holding = true;
    const second = leader.put('k2', enc('v2'));
    await waitUntil(
      'k1 to be answered while the loop is held in the save of k2',
      () => firstDone || undefined,
    );
    assert.equal(await first, true);
    assert.equal(dec((await leader.get('k1', { stale: true }))?.value), 'v1');
    release();
    assert.equal(await second, true);
    await waitUntil('k2 everywhere', async () => {
      for (const n of cluster!.nodes.values())
        if (dec((await n.get('k2', { stale: true }))?.value) !== 'v2') return undefined;
      return true;
    });
  });
});
