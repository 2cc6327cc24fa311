// In-process transport: every node of a test cluster gets a MemoryTransport
// from one MemoryNetwork hub, which can drop messages and cut links to model
// partitions. Delivery is asynchronous (setImmediate), like a real network, so a
// node's handler never runs inside its peer's send().
import { type Message, MessageType, type NodeId } from '../raft/types.js';
import { TransportBase, withDeadline } from './base.js';
import { decodeMessage } from './codec.js';
import {
  DEFAULT_MAX_QUEUED_MESSAGES_PER_PEER,
  type MemberAddress,
  type RequestOptions,
  stderrLog,
  type Transport,
  TransportError,
  type TransportLog,
} from './transport.js';

export interface MemoryNetworkOptions {
  /**
   * Pass every message through the protobuf codec (default true), so tests
   * exercise exactly what crosses a real wire and messages never share memory.
   */
  encode?: boolean;
  /** Source of randomness for dropRate (default Math.random); pass a seeded PRNG for replayable runs. */
  random?: () => number;
}

export interface MemoryTransportOptions {
  maxQueuedMessagesPerPeer?: number;
  log?: TransportLog;
}

export class MemoryNetwork {
  private readonly transports = new Map<NodeId, MemoryTransport>();
  /** Directed links that are cut, as "from\u0000to". */
  private readonly cutLinks = new Set<string>();
  private readonly encode: boolean;
  private readonly random: () => number;
  /** Probability in [0, 1] that any one message is lost. */
  dropRate = 0;
  /** Messages handed to a receiver / lost to dropRate or cut links; for test assertions. */
  readonly stats = { delivered: 0, dropped: 0 };

  constructor(options: MemoryNetworkOptions = {}) {
    this.encode = options.encode ?? true;
    this.random = options.random ?? Math.random;
  }

  /** Creates the transport of node `nodeId` on this network (one per node id). */
  transport(nodeId: NodeId, options: MemoryTransportOptions = {}): MemoryTransport {
    if (this.transports.has(nodeId))
      throw new Error(`memory network already has a transport for node "${nodeId}"`);
    const transport = new MemoryTransport(this, nodeId, options);
    this.transports.set(nodeId, transport);
    return transport;
  }

  /** Cuts every link between nodes of different groups (nodes in no group keep all their links). */
  partition(...groups: NodeId[][]): void {
    for (const [i, a] of groups.entries()) {
      for (const [j, b] of groups.entries()) {
        if (i === j) continue;
        for (const from of a) for (const to of b) this.cutLinks.add(`${from}\u0000${to}`);
      }
    }
  }

  /** Cuts the link from → to (and to → from unless oneWay). */
  cut(from: NodeId, to: NodeId, options: { oneWay?: boolean } = {}): void {
    this.cutLinks.add(`${from}\u0000${to}`);
    if (!options.oneWay) this.cutLinks.add(`${to}\u0000${from}`);
  }

  /** Restores every link and stops random loss. */
  heal(): void {
    this.cutLinks.clear();
    this.dropRate = 0;
  }

  /** The running transport `to`, if `from` can reach it now. */
  route(from: NodeId, to: NodeId): MemoryTransport | undefined {
    if (this.cutLinks.has(`${from}\u0000${to}`)) return undefined;
    const target = this.transports.get(to);
    return target?.running ? target : undefined;
  }

  /** Decides loss for one message. */
  lose(): boolean {
    return this.dropRate > 0 && this.random() < this.dropRate;
  }

  /** Whether messages pass through the codec on their way. */
  get encodes(): boolean {
    return this.encode;
  }
}

export class MemoryTransport extends TransportBase implements Transport {
  running = false;
  private readonly queues = new Map<NodeId, Message[]>();
  private readonly book = new Map<NodeId, MemberAddress>();
  private readonly maxQueuedMessagesPerPeer: number;
  private flushScheduled = false;

  constructor(
    private readonly network: MemoryNetwork,
    nodeId: NodeId,
    options: MemoryTransportOptions = {},
  ) {
    super(nodeId, options.log ?? stderrLog);
    this.maxQueuedMessagesPerPeer = options.maxQueuedMessagesPerPeer ?? DEFAULT_MAX_QUEUED_MESSAGES_PER_PEER;
  }

  async start(): Promise<void> {
    this.running = true;
  }

  async stop(): Promise<void> {
    if (!this.running) return;
    this.running = false;
    this.queues.clear(); // queued messages are lost, as with a crashed process
  }

  /** Same rules as Libp2pTransport: an omitted peerId keeps the known one, empty multiaddrs keep the known hints. */
  setMember(member: MemberAddress): void {
    const previous = this.book.get(member.nodeId);
    const copy: MemberAddress = {
      nodeId: member.nodeId,
      multiaddrs: member.multiaddrs.length > 0 ? [...member.multiaddrs] : [...(previous?.multiaddrs ?? [])],
    };
    const peerId = member.peerId ?? previous?.peerId;
    if (peerId !== undefined) copy.peerId = peerId;
    this.book.set(member.nodeId, copy);
  }
  removeMember(nodeId: NodeId): void {
    this.book.delete(nodeId);
  }
  members(): MemberAddress[] {
    return [...this.book.values()].map((m) => ({ ...m, multiaddrs: [...m.multiaddrs] }));
  }

  /** Any node on the hub can be reached; the address book is informational here. */
  send(messages: readonly Message[]): void {
    if (!this.running) return;
    for (const message of messages) {
      // Carried as a decoded copy of the frame (encode) so later mutation by the sender cannot leak through.
      let carried: Message = message;
      if (this.network.encodes) {
        const frame = this.encodeOutgoing(message);
        if (!frame) continue;
        carried = decodeMessage(frame);
      } else if (!this.acceptOutgoing(message)) {
        continue;
      }
      let queue = this.queues.get(message.to);
      if (!queue) {
        queue = [];
        this.queues.set(message.to, queue);
      }
      if (queue.length >= this.maxQueuedMessagesPerPeer) {
        this.failed(message);
        continue;
      }
      queue.push(carried);
    }
    if (!this.flushScheduled && this.queues.size > 0) {
      this.flushScheduled = true;
      setImmediate(() => this.flush());
    }
  }

  private flush(): void {
    this.flushScheduled = false;
    if (!this.running) return;
    const queues = [...this.queues];
    this.queues.clear();
    for (const [to, messages] of queues) {
      for (const message of messages) {
        const target = this.network.route(this.nodeId, to);
        if (!target) {
          this.failed(message);
          continue;
        }
        if (this.network.lose()) {
          this.network.stats.dropped++;
          if (message.type === MessageType.Snap) this.reportSnapshot(to, 'failed');
          continue;
        }
        this.network.stats.delivered++;
        target.deliver(message);
        if (message.type === MessageType.Snap) this.reportSnapshot(to, 'finished');
      }
    }
  }

  /** A message that could not be queued or routed: Raft hears unreachable (and snapshot failed). */
  private failed(message: Message): void {
    this.network.stats.dropped++;
    this.reportUnreachable(message.to);
    if (message.type === MessageType.Snap) this.reportSnapshot(message.to, 'failed');
  }

  async request(
    to: NodeId,
    protocol: string,
    payload: Uint8Array,
    options?: RequestOptions,
  ): Promise<Uint8Array> {
    if (!this.running)
      throw new TransportError('not-started', `transport of node ${this.nodeId} is not started`);
    const what = `request "${protocol}" to node ${to}`;
    return withDeadline(what, options, async () => {
      await new Promise((resolve) => setImmediate(resolve));
      const target = this.network.route(this.nodeId, to);
      if (!target) throw new TransportError('unreachable', `${what} failed: node ${to} is unreachable`);
      const result = await target.serveRequest(protocol, payload.slice(), this.nodeId);
      if (!this.network.route(to, this.nodeId)) {
        throw new TransportError('unreachable', `${what} failed: the response from node ${to} was lost`);
      }
      if (!result.ok) throw new TransportError(result.code, `${what} failed: ${result.error}`);
      return result.payload.slice();
    });
  }
}
