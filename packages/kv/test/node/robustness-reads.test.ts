// Linearizable reads on a follower must complete while the cluster is
// healthy, even when ReadIndex requests or answers are lost or slow.
import assert from 'node:assert/strict';
import { MessageType } from '../../src/raft/types.js';
import { dec, enc, RobustCluster } from './robustness-cluster.js';

describe('KvNode linearizable reads under loss and delay', function () {
  this.timeout(60_000);
  let cluster: RobustCluster | undefined;
  afterEach(async () => {
    await cluster?.destroy();
    cluster = undefined;
  });

  it('serves reads whose ReadIndex answers arrive later than the retry interval (they are not thrown away)', async () => {
    cluster = await RobustCluster.create(['127.0.0.1:17101', '127.0.0.1:17102', '127.0.0.1:17103']);
    await cluster.startAll();
    const leader = await cluster.leader();
    const follower = await cluster.followerOf(leader);
    assert.equal(await leader.put('r/k', enc('v1')), true);
    // Every ReadIndex answer reaches the follower 700 ms late (a loaded host):
    // longer than the 500 ms after which the follower asks again.
    cluster.inboundDelay = (to, m) =>
      to === follower.raftId && m.type === MessageType.ReadIndexResp ? 700 : 0;
    const reads = await Promise.all(Array.from({ length: 20 }, () => follower.get('r/k')));
    for (const r of reads) assert.equal(dec(r?.value), 'v1');
    // Reads issued one after another, each after a write the leader acknowledged.
    for (let i = 2; i <= 4; i++) {
      assert.equal(await leader.put('r/k', enc(`v${i}`)), true);
      assert.equal(dec((await follower.get('r/k'))?.value), `v${i}`, 'the read sees the acknowledged write');
    }
  });

  it('completes every follower read while 20% of all messages are lost, each seeing the writes acknowledged before it', async () => {
    cluster = await RobustCluster.create(['127.0.0.1:17111', '127.0.0.1:17112', '127.0.0.1:17113'], {
      proposalTimeoutMs: 8_000,
    });
    await cluster.startAll();
    const leader = await cluster.leader();
    const follower = await cluster.followerOf(leader);
    assert.equal(await leader.put('loss/n', enc('0')), true);
    cluster.network.dropRate = 0.2;
    let acknowledged = 0;
    const failures: string[] = [];
    let reads = 0;
    const writer = (async () => {
      for (let i = 1; i <= 15; i++) {
        await leader.put('loss/n', enc(String(i)));
        acknowledged = i;
      }
    })();
    const readers = Array.from({ length: 5 }, async () => {
      for (let j = 0; j < 12; j++) {
        const floor = acknowledged;
        try {
          const v = Number(dec((await follower.get('loss/n'))?.value));
          reads++;
          if (v < floor) failures.push(`read ${v} after write ${floor} was acknowledged`);
        } catch (err) {
          failures.push((err as Error).message);
        }
        await new Promise((r) => setTimeout(r, 30));
      }
    });
    await Promise.all([writer, ...readers]);
    const dropped = cluster.network.stats.dropped;
    cluster.network.dropRate = 0;
    assert.deepEqual(failures, [], `${failures.length} of ${reads + failures.length} reads failed`);
    assert.equal(reads, 60);
    assert.ok(dropped > 0, 'the network lost messages');
  });
});
