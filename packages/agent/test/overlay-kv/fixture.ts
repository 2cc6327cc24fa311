// A real 3-host control plane for the overlay-on-KV tests: one KvNode per host
// (LevelDB in a temp dir, libp2p on 127.0.0.1), each with its own
// OverlayManager talking to its own node through the KvNodeStore adapter.
// Data planes are RecordingDataplanes: these tests are about the control
// plane on the replicated store; devices are covered in test/dataplane.
import type { KvNode } from '@weft/kv/api/node';
import type { LoopbackCluster } from '@weft/kv/testing/loopback-cluster';
import { OverlayManager, type OverlayManagerOptions } from '@weft/overlay';
import { RecordingDataplane } from '@weft/overlay/testing/recording-dataplane';
import { KvNodeStore } from '../../src/kv-adapter/kvnode-store.js';

/** Overlay subnets in tests come from 198.18.0.0/15, never from private ranges. */
export const testPools = [{ base: '198.18.0.0/15', size: 24 }];

export interface OverlayHost {
  name: string;
  node: KvNode;
  store: KvNodeStore;
  manager: OverlayManager;
  dataplane: RecordingDataplane;
  warnings: Error[];
}

/** Starts one OverlayManager per node, host i on node i, hostnames `host<i>`. */
export async function startHosts(
  cluster: LoopbackCluster,
  opts: Partial<OverlayManagerOptions> = {},
): Promise<OverlayHost[]> {
  return Promise.all(
    cluster.nodes.map(async (node, i) => {
      const store = new KvNodeStore(node);
      const dataplane = new RecordingDataplane();
      const manager = new OverlayManager({
        store,
        dataplane,
        hostname: `host${i}`,
        advertise: `192.0.2.${i + 1}`,
        peerId: `peer-host${i}`,
        defaultAddressPools: testPools,
        sessionTtlMs: 10_000,
        writeTimeoutMs: 10_000,
        ...opts,
      });
      const warnings: Error[] = [];
      manager.on('warning', (e) => warnings.push(e));
      await manager.start();
      return { name: `host${i}`, node, store, manager, dataplane, warnings };
    }),
  );
}

/** Stops every manager without leaving (as a crash would); safe to call twice. */
export async function stopHosts(hosts: OverlayHost[] | undefined): Promise<void> {
  await Promise.allSettled((hosts ?? []).map((h) => h.manager.stop()));
}
