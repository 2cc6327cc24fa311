// KV components of agents on loopback, as `weft agent` builds them (real
// KvNodes: LevelDB under `root`, libp2p on 127.0.0.1), for the role tests.
import { join } from 'node:path';
import { freePort } from '@weft/kv/testing/free-port';
import { parseAgentConfig } from '../../src/agent/config.js';
import { openKvClientStore } from '../../src/agent/kv-client-store.js';
import type { KvNodeComponent } from '../../src/agent/kv-component.js';
import { createKvComponent } from '../../src/agent/main.js';
import { silentLogger } from '../../src/log/logger.js';

export interface LoopbackKvAgents {
  /** Raft addresses in sorted order: agent i is the i-th of the sorted set, so agents 0..voters-1 bootstrap. */
  addresses: string[];
  /** Agent i's component (each call a new one over the same data directory); `clientMode` gives it the real client store. */
  component(i: number, opts?: { clientMode?: boolean; keepRaftMembership?: boolean }): KvNodeComponent;
}

export async function loopbackKvAgents(
  root: string,
  count: number,
  limits: { voters: number; learners: number; reversePeers?: boolean },
): Promise<LoopbackKvAgents> {
  const ports = (await Promise.all(Array.from({ length: count }, freePort))).sort((a, b) => a - b);
  const addresses = ports.map((p) => `127.0.0.1:${p}`);
  const component = (i: number, opts: { clientMode?: boolean; keepRaftMembership?: boolean } = {}) => {
    const peers = addresses.filter((_, j) => j !== i);
    if (limits.reversePeers) peers.reverse();
    return createKvComponent(
      parseAgentConfig({
        name: `h${i}`,
        advertise: '127.0.0.1',
        raftPort: String(ports[i]),
        peers: peers.join(','),
        dataDir: join(root, `h${i}`),
        voters: String(limits.voters),
        learners: String(limits.learners),
        keepRaftMembership: opts.keepRaftMembership === true,
      }),
      { logger: silentLogger(), hooks: opts.clientMode ? { openKvClient: openKvClientStore } : {} },
    );
  };
  return { addresses, component };
}
