// A real KvNode cluster for tests and benches: one node per member, each with
// LevelDB in its own directory under one temp root and libp2p on 127.0.0.1,
// all voters from the start. Callers get the nodes once a leader is known,
// can kill members (a host dying), and close everything, root included.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KvNode } from '../api/node.js';
import { freePort } from './free-port.js';

export interface LoopbackClusterOptions {
  /** Raft tick of every node (election and heartbeat timeouts are counted in ticks). */
  tickMs?: number;
}

export interface LoopbackCluster {
  /** Node i listens on 127.0.0.1 and keeps its data in `<root>/n<i>`; its id is `n<i>`. */
  nodes: KvNode[];
  /** Closes node i (the host dies); idempotent. */
  kill(i: number): Promise<void>;
  /** Closes every node still open and removes the data directories; safe to call twice. */
  close(): Promise<void>;
}

/** Opens `size` nodes that know each other as peers and waits (30 s at most) until each knows a leader. */
export async function openLoopbackCluster(
  size: number,
  { tickMs = 50 }: LoopbackClusterOptions = {},
): Promise<LoopbackCluster> {
  const root = await mkdtemp(join(tmpdir(), 'weft-kv-cluster-'));
  const addresses: string[] = [];
  for (let i = 0; i < size; i++) addresses.push(`127.0.0.1:${await freePort()}`);
  const closed = new Set<number>();
  let nodes: KvNode[] = [];
  const kill = async (i: number) => {
    if (closed.has(i) || !nodes[i]) return;
    closed.add(i);
    await nodes[i].close();
  };
  try {
    const opened = await Promise.allSettled(
      addresses.map((listen, i) =>
        KvNode.open({
          dataDir: join(root, `n${i}`),
          id: `n${i}`,
          listen,
          peers: addresses.filter((a) => a !== listen),
          tickMs,
        }),
      ),
    );
    nodes = opened.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
    const failed = opened.find((r) => r.status === 'rejected');
    if (failed) throw (failed as PromiseRejectedResult).reason;
    await Promise.all(nodes.map((n) => n.waitForLeader(30_000)));
  } catch (err) {
    await Promise.allSettled(nodes.map((n) => n.close()));
    await rm(root, { recursive: true, force: true });
    throw err;
  }
  return {
    nodes,
    kill,
    async close() {
      await Promise.allSettled(nodes.map((_, i) => kill(i)));
      await rm(root, { recursive: true, force: true });
    },
  };
}
