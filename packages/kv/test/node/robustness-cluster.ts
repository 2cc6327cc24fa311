// In-process KvNode clusters for the node and robustness tests: real LevelDB
// directories, the in-memory transport (MemoryNetwork: loss, partitions),
// optionally with a hook that delays chosen messages on their way in. A node
// restarted at its address gets its old transport back (the network has one
// per node), as a restarted process gets its old address.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KvNode, type KvNodeOptions } from '../../src/api/node.js';
import type { Message, NodeId } from '../../src/raft/types.js';
import { waitUntil } from '../../src/testing/wait-until.js';
import { MemoryNetwork, type MemoryTransport } from '../../src/transport/memory.js';

export const enc = (s: string) => new TextEncoder().encode(s);
export const dec = (b: Uint8Array | undefined) => (b ? new TextDecoder().decode(b) : undefined);

/** How long to hold a message arriving at `to` before handing it to the node (0 = at once). */
export type InboundDelay = (to: NodeId, message: Message) => number;

export class RobustCluster {
  readonly network = new MemoryNetwork();
  readonly nodes = new Map<string, KvNode>();
  inboundDelay: InboundDelay = () => 0;
  private readonly timers = new Set<NodeJS.Timeout>();
  private readonly transports = new Map<NodeId, MemoryTransport>();

  private constructor(
    readonly root: string,
    readonly addresses: string[],
    private readonly extra: Partial<KvNodeOptions>,
  ) {}

  static async create(addresses: string[], extra: Partial<KvNodeOptions> = {}): Promise<RobustCluster> {
    return new RobustCluster(await mkdtemp(join(tmpdir(), 'weft-kv-robust-')), addresses, extra);
  }

  options(address: string, overrides: Partial<KvNodeOptions> = {}): KvNodeOptions {
    return {
      dataDir: join(this.root, address.replace(/[:.]/g, '_')),
      id: `n${address.split(':')[1]}`,
      listen: address,
      peers: this.addresses.filter((a) => a !== address),
      tickMs: 20,
      proposalTimeoutMs: 5_000,
      transport: (raftId) => {
        let t = this.transports.get(raftId);
        if (!t) {
          t = this.delayedInbound(this.network.transport(raftId));
          this.transports.set(raftId, t);
        }
        return t;
      },
      ...this.extra,
      ...overrides,
    };
  }

  /** Holds each message arriving at `raftId` for inboundDelay(raftId, message) ms. */
  private delayedInbound(t: MemoryTransport): MemoryTransport {
    const raftId = t.nodeId;
    const register = t.onMessage.bind(t);
    t.onMessage = (handler) =>
      register((m) => {
        const delayMs = this.inboundDelay(raftId, m);
        if (delayMs <= 0) return handler(m);
        const timer = setTimeout(() => {
          this.timers.delete(timer);
          handler(m);
        }, delayMs);
        this.timers.add(timer);
      });
    return t;
  }

  async startAll(): Promise<KvNode[]> {
    return Promise.all(this.addresses.map((a) => this.start(a)));
  }

  async start(address: string, overrides: Partial<KvNodeOptions> = {}): Promise<KvNode> {
    const node = await KvNode.open(this.options(address, overrides));
    this.nodes.set(address, node);
    return node;
  }

  /** Closes the node at `address` (its process stops); it can be started again. */
  async stop(address: string): Promise<void> {
    const node = this.nodes.get(address);
    this.nodes.delete(address);
    await node?.close();
  }

  async leader(): Promise<KvNode> {
    return waitUntil('a leader', () => [...this.nodes.values()].find((n) => n.status().role === 'leader'));
  }

  async followerOf(leader: KvNode): Promise<KvNode> {
    const f = [...this.nodes.values()].find((n) => n !== leader)!;
    await waitUntil(`${f.name} to know the leader`, () => f.status().leader === leader.raftId);
    return f;
  }

  async destroy(): Promise<void> {
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    await Promise.all([...this.nodes.values()].map((n) => n.close()));
    this.nodes.clear();
    await rm(this.root, { recursive: true, force: true });
  }
}
