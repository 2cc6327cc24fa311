// A client agent's store (the agent's own factory, openKvClientStore: a
// KvClient of the servers, no replica, under the KvNodeStore adapter) on a real 3-node KvNode cluster: LevelDB, libp2p on loopback, the
// HTTP tunnel. It passes the overlay's KvStore compliance suite, and an
// overlay manager on it keeps working when the server it talks to dies.
import assert from 'node:assert/strict';
import type { KvClient } from '@weft/kv/client/kv-client';
import { type LoopbackCluster, openLoopbackCluster } from '@weft/kv/testing/loopback-cluster';
import { waitUntil } from '@weft/kv/testing/wait-until';
import { OverlayManager } from '@weft/overlay';
import { kvStoreComplianceSuite } from '@weft/overlay/testing/kvstore-compliance';
import { RecordingDataplane } from '@weft/overlay/testing/recording-dataplane';
import { openKvClientStore } from '../../src/agent/kv-client-store.js';
import { KvNodeStore } from '../../src/kv-adapter/kvnode-store.js';
import { testPools } from './fixture.js';

describe('client mode: a client agent store on a 3-node KvNode cluster', function () {
  this.timeout(120_000);
  let cluster: LoopbackCluster | undefined;
  let client: { store: KvNodeStore; client: KvClient } | undefined;
  before(async () => {
    cluster = await openLoopbackCluster(3);
    const kvClient = (await openKvClientStore(
      cluster.nodes.map((n) => n.raftId),
      { id: 'client-host' },
    )) as KvClient;
    client = { store: new KvNodeStore(kvClient), client: kvClient };
  });
  after(async () => {
    await client?.client.close();
    await cluster?.close();
  });

  // One client for the whole suite: each test works under its own key prefix.
  kvStoreComplianceSuite(
    'KvNodeStore over KvClient',
    async () => ({ store: client!.store, close: async () => {} }),
    {
      sessionTtlMs: 1_000,
      expirySlackMs: 2_000,
    },
  );

  describe('when the server in use dies', () => {
    let manager: OverlayManager | undefined;
    after(async () => {
      await manager?.stop();
    });

    it('the host stays registered, watches go on through another server, and writes work', async () => {
      const c = client!;
      const nodes = cluster!.nodes;
      const dataplane = new RecordingDataplane();
      manager = new OverlayManager({
        store: c.store,
        dataplane,
        hostname: 'client-host',
        advertise: '192.0.2.50',
        peerId: 'peer-client-host',
        defaultAddressPools: testPools,
        sessionTtlMs: 2_000,
        writeTimeoutMs: 10_000,
      });
      await manager.start();
      const victim = c.client.currentServer();
      const victimIndex = nodes.findIndex((n) => n.raftId === victim);
      const survivor = nodes.find((n) => n.raftId !== victim)!;
      assert.ok(victimIndex >= 0, `client uses ${victim}, one of the servers`);

      await cluster!.kill(victimIndex);

      // A network created on a surviving member reaches the client's view: its watch moved to another server.
      const { KvNodeStore } = await import('../../src/kv-adapter/kvnode-store.js');
      const member = new OverlayManager({
        store: new KvNodeStore(survivor),
        dataplane: new RecordingDataplane(),
        hostname: 'member-host',
        advertise: '192.0.2.51',
        peerId: 'peer-member-host',
        defaultAddressPools: testPools,
        sessionTtlMs: 10_000,
        writeTimeoutMs: 10_000,
      });
      await member.start();
      try {
        await member.createNetwork({ name: 'after-kill', subnets: [{ subnet: '198.18.77.0/24' }] });
        await waitUntil(
          'the client host to see the network created after its server died',
          () => manager!.listNetworks().some((n) => n.name === 'after-kill'),
          20_000,
        );
        // The client writes through another server.
        const mine = await manager.createNetwork({
          name: 'from-client',
          subnets: [{ subnet: '198.18.78.0/24' }],
        });
        await waitUntil('the member to see from-client', () =>
          member.listNetworks().some((n) => n.id === mine.id),
        );
        assert.notEqual(c.client.currentServer(), victim);
        // Several TTLs later the client host is still registered: its session renewals went elsewhere.
        await new Promise((r) => setTimeout(r, 3 * 2_000));
        assert.ok(
          member.hosts().some((h) => h.name === 'client-host'),
          `client-host still registered (hosts: ${member
            .hosts()
            .map((h) => h.name)
            .join(', ')})`,
        );
      } finally {
        await member.stop();
      }
    });
  });
});
