// The KvNode → KvStore adapter passes the overlay's KvStore compliance suite
// against real replicated nodes: LevelDB on disk, libp2p over loopback.
// Once against a single node, once through a follower of a 3-node cluster
// (writes forwarded to the leader, watches served from the follower).
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KvNode } from '@weft/kv/api/node';
import { freePort } from '@weft/kv/testing/free-port';
import { kvStoreComplianceSuite } from '@weft/overlay/testing/kvstore-compliance';
import { KvNodeStore } from '../../src/kv-adapter/kvnode-store.js';

async function openCluster(size: number): Promise<{ nodes: KvNode[]; close(): Promise<void> }> {
  const root = await mkdtemp(join(tmpdir(), 'weft-kvstore-'));
  const addresses: string[] = [];
  for (let i = 0; i < size; i++) addresses.push(`127.0.0.1:${await freePort()}`);
  const nodes = await Promise.all(
    addresses.map((listen, i) =>
      KvNode.open({
        dataDir: join(root, `n${i}`),
        id: `n${i}`,
        listen,
        peers: addresses.filter((a) => a !== listen),
        tickMs: 50,
      }),
    ),
  );
  await Promise.all(nodes.map((n) => n.waitForLeader(30_000)));
  return {
    nodes,
    async close() {
      await Promise.all(nodes.map((n) => n.close()));
      await rm(root, { recursive: true, force: true });
    },
  };
}

for (const size of [1, 3]) {
  describe(`KvNodeStore on a real ${size}-node KvNode cluster`, function () {
    this.timeout(120_000);
    let cluster: Awaited<ReturnType<typeof openCluster>> | undefined;
    before(async () => {
      cluster = await openCluster(size);
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
