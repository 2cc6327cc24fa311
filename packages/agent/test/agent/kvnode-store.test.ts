// The KvNode → KvStore adapter passes the overlay's KvStore compliance suite
// against real replicated nodes: LevelDB on disk, libp2p over loopback.
// Once against a single node, once through a follower of a 3-node cluster
// (writes forwarded to the leader, watches served from the follower).
import type { KvNode } from '@weft/kv/api/node';
import { type LoopbackCluster, openLoopbackCluster } from '@weft/kv/testing/loopback-cluster';
import { kvStoreComplianceSuite } from '@weft/overlay/testing/kvstore-compliance';
import { KvNodeStore } from '../../src/kv-adapter/kvnode-store.js';

for (const size of [1, 3]) {
  describe(`KvNodeStore on a real ${size}-node KvNode cluster`, function () {
    this.timeout(120_000);
    let cluster: LoopbackCluster | undefined;
    before(async () => {
      cluster = await openLoopbackCluster(size);
    });
    after(async () => {
      await cluster?.close();
    });
    // One cluster for the whole suite: each test works under its own key prefix.
    kvStoreComplianceSuite(
      `KvNodeStore (${size} node${size > 1 ? 's, through a follower' : ''})`,
      async () => {
        const nodes = cluster?.nodes ?? [];
        const follower = nodes.find((n) => n.status().role !== 'leader') ?? nodes[0];
        return { store: new KvNodeStore(follower as KvNode), close: async () => {} };
      },
      { sessionTtlMs: 1_000, expirySlackMs: 2_000 },
    );
  });
}
