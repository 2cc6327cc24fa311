// Raft over libp2p: TCP + noise + yamux, optional private network (pnet
// pre-shared key), kad-dht for peer routing, identify.
//
// Protocols, each on its own yamux streams:
//   /weft/hello/1.0.0          first exchange on every connection we dial: cluster,
//                              NodeId, peer id, addresses, address book
//   /weft/raft/msg/1.0.0       one long-lived stream per peer and direction,
//                              length-prefixed protobuf frames
//   /weft/raft/snapshot/1.0.0  one stream per snapshot: header, 256 KiB chunks,
//                              one ack after reassembly and delivery
//   /weft/rpc/1.0.0            one stream per request/response
//   /weft/kad/1.0.0            the cluster's own DHT (peer routing only)
//
// Members are identified by peer id (noise authenticates it); addresses are
// only hints. When a member's known addresses fail, the DHT is asked where that
// peer id is now. The NodeId of a connection comes from its hello, so a
// received Raft message whose `from` differs from the connection's NodeId is
// dropped.
import './polyfill.js';
import { setTimeout as sleep } from 'node:timers/promises';
import { noise } from '@chainsafe/libp2p-noise';
import { yamux } from '@chainsafe/libp2p-yamux';
import { type Identify, identify } from '@libp2p/identify';
import type { ComponentLogger, Connection, Logger, Stream } from '@libp2p/interface';
import { type KadDHT, kadDHT, passthroughMapper } from '@libp2p/kad-dht';
import { peerIdFromString } from '@libp2p/peer-id';
import { type Ping, ping } from '@libp2p/ping';
import { preSharedKey } from '@libp2p/pnet';
import { tcp } from '@libp2p/tcp';
import { multiaddr } from '@multiformats/multiaddr';
import * as lp from 'it-length-prefixed';
import { createLibp2p, type Libp2p, type Libp2pOptions } from 'libp2p';
import { type Message, MessageType, type NodeId } from '../raft/types.js';
import { TransportBase, withDeadline } from './base.js';
import {
  checksum,
  decodeHello,
  decodeHelloReply,
  decodeMessage,
  decodeRpcRequest,
  decodeRpcResponse,
  decodeSnapshotAck,
  decodeSnapshotHeader,
  encodeHello,
  encodeHelloReply,
  encodeRpcRequest,
  encodeRpcResponse,
  encodeSnapshotAck,
  encodeSnapshotHeader,
  type Hello,
} from './codec.js';
import { readFrames, readOneFrame, waitForBuffered, writeFrame, writeFrames } from './frames.js';
import { loadOrCreatePrivateKey, parseClusterKey, toMultiaddrString } from './identity.js';
import {
  DEFAULT_MAX_QUEUED_MESSAGES_PER_PEER,
  type MemberAddress,
  type RequestOptions,
  stderrLog,
  type Transport,
  TransportError,
  type TransportLog,
} from './transport.js';
import { coalescingTcp, decodeWithoutThrowing, limitWindowUpdates } from './wire-batching.js';

export const PROTOCOLS = {
  hello: '/weft/hello/1.0.0',
  raft: '/weft/raft/msg/1.0.0',
  snapshot: '/weft/raft/snapshot/1.0.0',
  rpc: '/weft/rpc/1.0.0',
  dht: '/weft/kad/1.0.0',
} as const;

export interface Libp2pTransportOptions {
  nodeId: NodeId;
  /** Holds the node's identity key (libp2p-identity.key, mode 0600). */
  dataDir: string;
  /** Where to listen: multiaddrs or host:port (port 0 = any free port). */
  listen: string[];
  /** Addresses to tell peers instead of the listen addresses (e.g. behind NAT). */
  announce?: string[];
  /** Bootstrap peers as plain host:port (or multiaddrs); their NodeIds and peer ids are learned by hello. */
  peers?: string[];
  /** Nodes refuse peers of another cluster name (default "weft"). */
  clusterName?: string;
  /** Pre-shared key (pnet v1 text or 64 hex digits): without it nobody can even connect. */
  clusterKey?: string | Uint8Array;
  maxQueuedMessagesPerPeer?: number;
  /** Largest Raft message / RPC frame accepted (default 64 MiB). */
  maxMessageBytes?: number;
  /** Largest snapshot accepted (default 2 GiB). */
  maxSnapshotBytes?: number;
  /** Snapshot chunk size on the wire (default 256 KiB). */
  snapshotChunkBytes?: number;
  /** A snapshot transfer that takes longer is abandoned and reported failed (default 10 min). */
  snapshotTimeoutMs?: number;
  /** Per connection attempt, DHT lookup included (default 5 s). */
  dialTimeoutMs?: number;
  /** First retry delay for bootstrap peers that did not answer; doubles up to 10 s (default 500 ms). */
  bootstrapRetryMs?: number;
  log?: TransportLog;
}

/** Counters for tests, metrics and debugging. */
export interface Libp2pTransportStats {
  messagesSent: number;
  messagesReceived: number;
  messagesDropped: number;
  malformedFrames: number;
  hellosRejected: number;
  peerLookups: number;
  snapshotsSent: number;
  snapshotsReceived: number;
  snapshotChunksSent: number;
  /** Times the snapshot sender waited for the stream to drain (back-pressure). */
  snapshotDrainWaits: number;
  /** Largest yamux write buffer seen while sending a snapshot. */
  snapshotMaxBufferedBytes: number;
}

const MAX_HELLO_BYTES = 1024 * 1024;
const MAX_ACK_BYTES = 64 * 1024;
const MAX_BACKOFF_MS = 2000;
const MAX_BATCH_BYTES = 1024 * 1024;
const MAX_CONCURRENT_RPC_STREAMS = 256;
/** Connections a server accepts before libp2p prunes: every client agent holds one (Consul servers serve thousands of clients). */
const MAX_SERVER_CONNECTIONS = 10_000;

/**
 * The wire stack every cluster process speaks, members and KvClients alike:
 * TCP with writes coalesced per tick, noise, yamux, and the cluster key's
 * private network when there is one.
 */
export function clusterWireStack(
  psk: Uint8Array | undefined,
): Pick<Libp2pOptions, 'transports' | 'connectionEncrypters' | 'streamMuxers' | 'connectionProtector'> {
  limitWindowUpdates();
  decodeWithoutThrowing();
  return {
    transports: [coalescingTcp(tcp())],
    connectionEncrypters: [noise()],
    // A small stream window bounds what a paused reader must buffer (read buffers reset above 16 MiB).
    streamMuxers: [
      yamux({
        streamOptions: { maxStreamWindowSize: 4 * 1024 * 1024, maxReadBufferLength: 16 * 1024 * 1024 },
      }),
    ],
    ...(psk ? { connectionProtector: preSharedKey({ psk }) } : {}),
  };
}

/** Registers a raw stream protocol (handleStream's) on `node`: as many streams out as in. */
function serveStream(
  node: Libp2p,
  protocol: string,
  { handler, maxInboundStreams }: { handler: RawStreamHandler; maxInboundStreams: number },
): Promise<void> {
  return node.handle(protocol, handler, { maxInboundStreams, maxOutboundStreams: maxInboundStreams });
}

interface PeerLink {
  /** Encoded Raft messages waiting for the stream. */
  queue: Uint8Array[];
  stream?: Stream;
  pumping: boolean;
  /** After a failed connection, messages are dropped (and reported) until then. */
  retryAtMs: number;
  backoffMs: number;
  snapshotInFlight: boolean;
}

/** Serves one inbound stream of a raw protocol (see Libp2pTransport.handleStream). */
export type RawStreamHandler = (stream: Stream, connection: Connection) => void | Promise<void>;

/** libp2p wants a logger; Weft logs through its own. Also used by KvClient's libp2p node. */
export function quietLogger(): ComponentLogger {
  const make = (): Logger =>
    Object.assign(() => {}, { error() {}, trace() {}, enabled: false, newScope: make });
  return { forComponent: make };
}

/**
 * Calls `onAbort` when `signal` aborts; returns what stops listening (call it
 * in `finally`). Used to abort a stream whose reads and writes do not take the
 * signal themselves, so a stalled peer cannot hold a call past its deadline.
 */
function whenAborted(signal: AbortSignal, onAbort: () => void): () => void {
  signal.addEventListener('abort', onAbort, { once: true });
  return () => signal.removeEventListener('abort', onAbort);
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

export class Libp2pTransport extends TransportBase implements Transport {
  readonly stats: Libp2pTransportStats = {
    messagesSent: 0,
    messagesReceived: 0,
    messagesDropped: 0,
    malformedFrames: 0,
    hellosRejected: 0,
    peerLookups: 0,
    snapshotsSent: 0,
    snapshotsReceived: 0,
    snapshotChunksSent: 0,
    snapshotDrainWaits: 0,
    snapshotMaxBufferedBytes: 0,
  };
  private node: Libp2p<{ identify: Identify; ping: Ping; dht: KadDHT }> | undefined;
  private starting: Promise<void> | undefined;
  private stopController = new AbortController();
  private readonly book = new Map<NodeId, MemberAddress>();
  private readonly nodeByPeer = new Map<string, NodeId>();
  /** Remote hello per connection id: set when we dialed (our hello's reply) or they did (their hello). */
  private readonly helloByConnection = new Map<string, Promise<Hello>>();
  private readonly links = new Map<NodeId, PeerLink>();
  private readonly rpcSlots = new Map<NodeId, { active: number; waiters: Array<() => void> }>();
  /** Raw stream protocols served beside Raft's (the HTTP tunnel): registered on every start. */
  private readonly streamHandlers = new Map<
    string,
    { handler: RawStreamHandler; maxInboundStreams: number }
  >();
  private readonly clusterName: string;
  private readonly psk: Uint8Array | undefined;
  private readonly bootstrapAddresses: string[];
  private readonly maxQueuedMessagesPerPeer: number;
  private readonly maxMessageBytes: number;
  private readonly maxSnapshotBytes: number;
  private readonly snapshotChunkBytes: number;
  private readonly snapshotTimeoutMs: number;
  private readonly dialTimeoutMs: number;
  private readonly bootstrapRetryMs: number;

  constructor(private readonly options: Libp2pTransportOptions) {
    super(options.nodeId, options.log ?? stderrLog);
    this.clusterName = options.clusterName ?? 'weft';
    // Parse eagerly so a bad key or address is reported at construction, naming the culprit.
    this.psk = options.clusterKey === undefined ? undefined : parseClusterKey(options.clusterKey);
    this.bootstrapAddresses = (options.peers ?? []).map(toMultiaddrString);
    options.listen.forEach(toMultiaddrString);
    this.maxQueuedMessagesPerPeer = options.maxQueuedMessagesPerPeer ?? DEFAULT_MAX_QUEUED_MESSAGES_PER_PEER;
    this.maxMessageBytes = options.maxMessageBytes ?? 64 * 1024 * 1024;
    this.maxSnapshotBytes = options.maxSnapshotBytes ?? 2 * 1024 * 1024 * 1024;
    this.snapshotChunkBytes = options.snapshotChunkBytes ?? 256 * 1024;
    this.snapshotTimeoutMs = options.snapshotTimeoutMs ?? 10 * 60 * 1000;
    this.dialTimeoutMs = options.dialTimeoutMs ?? 5000;
    this.bootstrapRetryMs = options.bootstrapRetryMs ?? 500;
  }

  /** This node's libp2p peer id (stable across restarts with the same data dir). */
  get peerId(): string {
    return this.requireNode().peerId.toString();
  }

  /** The addresses this node listens on / announces, with /p2p/<peer id>. */
  get multiaddrs(): string[] {
    return this.requireNode()
      .getMultiaddrs()
      .map((a) => a.toString());
  }

  /** The underlying libp2p node (for diagnostics and tests; do not register Weft's protocols on it). */
  get libp2p(): Libp2p {
    return this.requireNode();
  }

  get running(): boolean {
    return this.node !== undefined;
  }

  private requireNode(): NonNullable<Libp2pTransport['node']> {
    if (!this.node)
      throw new TransportError('not-started', `transport of node ${this.nodeId} is not started`);
    return this.node;
  }

  /**
   * Serves a raw stream protocol on this node's libp2p (the cluster key
   * guards it like Raft's). Unlike request/response protocols, the peer need
   * not be a member nor say hello: KvClient processes use this for the HTTP
   * tunnel. Takes effect at the next start if the transport is running.
   */
  handleStream(protocol: string, handler: RawStreamHandler, options: { maxInboundStreams: number }): void {
    this.streamHandlers.set(protocol, { handler, maxInboundStreams: options.maxInboundStreams });
    const node = this.node;
    if (node) {
      void serveStream(node, protocol, this.streamHandlers.get(protocol)!).catch((err) =>
        this.log.warn({ protocol, err: errorText(err) }, 'cannot serve stream protocol'),
      );
    }
  }

  // ------------------------------------------------------------ lifecycle

  async start(): Promise<void> {
    if (this.node) return;
    this.starting ??= this.doStart().finally(() => {
      this.starting = undefined;
    });
    return this.starting;
  }

  private async doStart(): Promise<void> {
    const privateKey = await loadOrCreatePrivateKey(this.options.dataDir);
    const psk = this.psk;
    const node = await createLibp2p({
      privateKey,
      start: false,
      logger: quietLogger(),
      addresses: {
        listen: this.options.listen.map(toMultiaddrString),
        announce: (this.options.announce ?? []).map(toMultiaddrString),
      },
      // libp2p's default cap (300 connections) would make the pruner close
      // connections, Raft peers' included, once a few hundred client agents
      // (each holding one to a server) are connected: servers take them all.
      connectionManager: { maxConnections: MAX_SERVER_CONNECTIONS },
      ...clusterWireStack(psk),
      services: {
        identify: identify(),
        ping: ping(), // kad-dht pings contacts before evicting them from its routing table
        dht: kadDHT({
          protocol: PROTOCOLS.dht,
          clientMode: false,
          // Cluster members are usually on private or loopback addresses: keep them.
          peerInfoMapper: passthroughMapper,
        }),
      },
    });
    await node.handle(PROTOCOLS.hello, (stream, connection) => this.onHelloStream(stream, connection));
    await node.handle(PROTOCOLS.raft, (stream, connection) => this.onRaftStream(stream, connection));
    // Each inbound snapshot is reassembled in memory: few at a time per peer (Raft sends one).
    await node.handle(PROTOCOLS.snapshot, (stream, connection) => this.onSnapshotStream(stream, connection), {
      maxInboundStreams: 2,
      maxOutboundStreams: 2,
    });
    // A node forwards many proposals and reads to the leader at once: one stream each (libp2p's default is 32).
    await node.handle(PROTOCOLS.rpc, (stream, connection) => this.onRpcStream(stream, connection), {
      maxInboundStreams: MAX_CONCURRENT_RPC_STREAMS,
      maxOutboundStreams: MAX_CONCURRENT_RPC_STREAMS,
    });
    for (const [protocol, entry] of this.streamHandlers) await serveStream(node, protocol, entry);
    node.addEventListener('connection:close', (event) => this.helloByConnection.delete(event.detail.id));
    try {
      await node.start();
    } catch (err) {
      await Promise.resolve(node.stop()).catch(() => {});
      throw new TransportError(
        'not-started',
        `node ${this.nodeId} cannot listen on ${this.options.listen.join(', ')}: ${errorText(err)} ` +
          '(is another process using the port?)',
        { cause: err },
      );
    }
    this.stopController = new AbortController();
    this.node = node;
    for (const member of this.book.values()) this.rememberAddresses(member);
    for (const address of this.bootstrapAddresses) void this.bootstrap(address);
  }

  async stop(): Promise<void> {
    await this.starting?.catch(() => {});
    const node = this.node;
    if (!node) return;
    this.node = undefined;
    this.stopController.abort(
      new TransportError('not-started', `transport of node ${this.nodeId} is stopping`),
    );
    for (const link of this.links.values()) {
      link.queue = [];
      link.stream?.abort(new Error('transport stopping'));
      link.stream = undefined;
    }
    this.helloByConnection.clear();
    await node.stop();
  }

  /** Keeps dialing one bootstrap address (with backoff) until its node has said hello. */
  private async bootstrap(address: string): Promise<void> {
    let delayMs = this.bootstrapRetryMs;
    const signal = this.stopController.signal;
    while (!signal.aborted) {
      try {
        const { hello } = await this.connectAddress(address, undefined, this.dialSignal());
        this.log.info({ address, nodeId: hello.nodeId, peerId: hello.peerId }, 'bootstrap peer answered');
        return;
      } catch (err) {
        this.log.debug({ address, err: errorText(err) }, 'bootstrap peer did not answer yet');
      }
      // Abortable, so a stopped transport leaves no timer behind.
      await sleep(delayMs, undefined, { signal }).catch(() => {});
      delayMs = Math.min(delayMs * 2, 10_000);
    }
  }

  private dialSignal(extra?: AbortSignal): AbortSignal {
    const signals = [this.stopController.signal, AbortSignal.timeout(this.dialTimeoutMs)];
    if (extra) signals.push(extra);
    return AbortSignal.any(signals);
  }

  // ------------------------------------------------------------ address book

  /**
   * Adds or updates a member. A peer id, if given, replaces the known one; if
   * omitted, a peer id learned by handshake is kept (addresses are only hints).
   * Non-empty multiaddrs replace the known hints.
   */
  setMember(member: MemberAddress): void {
    if (member.nodeId === this.nodeId) return; // our own entry (from a shared member list) is not a peer
    if (member.peerId !== undefined) {
      try {
        peerIdFromString(member.peerId);
      } catch (err) {
        throw new TypeError(
          `member ${member.nodeId}: "${member.peerId}" is not a libp2p peer id (${errorText(err)})`,
        );
      }
    }
    const previous = this.book.get(member.nodeId);
    const multiaddrs = member.multiaddrs.map(toMultiaddrString);
    const copy: MemberAddress = {
      nodeId: member.nodeId,
      multiaddrs: multiaddrs.length > 0 ? multiaddrs : [...(previous?.multiaddrs ?? [])],
    };
    const peerId = member.peerId ?? previous?.peerId;
    if (peerId !== undefined) copy.peerId = peerId;
    if (previous?.peerId !== undefined && previous.peerId !== copy.peerId) {
      this.nodeByPeer.delete(previous.peerId);
      this.resetLink(member.nodeId);
    }
    this.book.set(member.nodeId, copy);
    if (copy.peerId !== undefined) this.nodeByPeer.set(copy.peerId, copy.nodeId);
    this.rememberAddresses(copy);
  }

  removeMember(nodeId: NodeId): void {
    const member = this.book.get(nodeId);
    if (!member) return;
    this.book.delete(nodeId);
    if (member.peerId !== undefined && this.nodeByPeer.get(member.peerId) === nodeId) {
      this.nodeByPeer.delete(member.peerId);
      // Its connections said hello as the member now forgotten, and their other
      // end never says it again on them ("say hello first" for good): closed,
      // a peer that is still up dials anew and is admitted by a fresh hello (a
      // removed member restarted within FORGET_REMOVED_MEMBER_AFTER_MS did not
      // learn it was removed, because its requests were refused).
      void this.node?.hangUp(peerIdFromString(member.peerId)).catch(() => {});
    }
    this.resetLink(nodeId);
    this.links.delete(nodeId);
  }

  members(): MemberAddress[] {
    return [...this.book.values()].map((m) => ({ ...m, multiaddrs: [...m.multiaddrs] }));
  }

  private resetLink(nodeId: NodeId): void {
    const link = this.links.get(nodeId);
    if (!link) return;
    this.stats.messagesDropped += link.queue.length;
    link.queue = [];
    link.stream?.abort(new Error('member changed'));
    link.stream = undefined;
  }

  /** Tells libp2p's peer store where a member may be (hints; the DHT corrects stale ones). */
  private rememberAddresses(member: MemberAddress): void {
    const node = this.node;
    if (!node || member.peerId === undefined || member.multiaddrs.length === 0) return;
    const peerId = peerIdFromString(member.peerId);
    node.peerStore
      .merge(peerId, { multiaddrs: member.multiaddrs.map((a) => multiaddr(a)) })
      .catch((err) => this.log.debug({ err: errorText(err) }, 'peer store merge failed'));
  }

  // ------------------------------------------------------------ hello

  private localHello(): Hello {
    const node = this.requireNode();
    const members = [...this.book.values()]
      .filter((m): m is MemberAddress & { peerId: string } => m.peerId !== undefined)
      .map((m) => ({ nodeId: m.nodeId, peerId: m.peerId, multiaddrs: [...m.multiaddrs] }));
    return {
      cluster: this.clusterName,
      nodeId: this.nodeId,
      peerId: node.peerId.toString(),
      multiaddrs: node.getMultiaddrs().map((a) => a.toString()),
      members,
    };
  }

  /**
   * Checks a peer's hello against the connection and the address book; records
   * it if acceptable. Returns the reason for refusal, or undefined.
   */
  private admit(hello: Hello, connection: Connection): string | undefined {
    const peer = connection.remotePeer.toString();
    const at = connection.remoteAddr.toString();
    let problem: string | undefined;
    const holder = this.book.get(hello.nodeId)?.peerId;
    const previousNodeId = this.nodeByPeer.get(hello.peerId);
    if (hello.cluster !== this.clusterName) {
      problem = `peer ${peer} at ${at} belongs to cluster "${hello.cluster}", this node to "${this.clusterName}" (check the cluster name)`;
    } else if (hello.peerId !== peer) {
      problem = `peer ${peer} at ${at} said hello as peer ${hello.peerId}`;
    } else if (hello.nodeId === this.nodeId) {
      problem = `peer ${peer} at ${at} claims this node's own id "${this.nodeId}" (two nodes started with the same node id?)`;
    } else if (holder !== undefined && holder !== hello.peerId) {
      problem =
        `node id "${hello.nodeId}" belongs to peer ${holder}, but peer ${peer} at ${at} claims it; ` +
        `if node "${hello.nodeId}" was reinstalled with a new identity, remove it from the cluster and add it again`;
    } else if (previousNodeId !== undefined && previousNodeId !== hello.nodeId) {
      problem = `peer ${peer} at ${at} is node "${previousNodeId}" but now claims to be node "${hello.nodeId}"`;
    }
    if (problem) {
      this.stats.hellosRejected++;
      this.log.error({ peerId: peer, address: at, claimedNodeId: hello.nodeId }, `refusing peer: ${problem}`);
      return problem;
    }
    const member: MemberAddress = {
      nodeId: hello.nodeId,
      peerId: hello.peerId,
      multiaddrs: [...hello.multiaddrs],
    };
    const before = this.book.get(hello.nodeId);
    // The peer is evidently up: stop dropping messages for it because an earlier dial failed.
    const link = this.links.get(hello.nodeId);
    if (link) {
      link.retryAtMs = 0;
      link.backoffMs = 0;
    }
    this.book.set(hello.nodeId, member);
    this.nodeByPeer.set(hello.peerId, hello.nodeId);
    this.rememberAddresses(member);
    if (before?.peerId !== member.peerId || before?.multiaddrs.join() !== member.multiaddrs.join()) {
      this.reportMember(member);
    }
    // Learn members we have never heard of from the peer's book; our own entries win.
    for (const other of hello.members) {
      if (other.nodeId === this.nodeId || this.book.get(other.nodeId)?.peerId !== undefined) continue;
      if (this.nodeByPeer.has(other.peerId)) continue;
      const learned: MemberAddress = {
        nodeId: other.nodeId,
        peerId: other.peerId,
        multiaddrs: [...other.multiaddrs],
      };
      this.book.set(other.nodeId, learned);
      this.nodeByPeer.set(other.peerId, other.nodeId);
      this.rememberAddresses(learned);
      this.reportMember(learned);
    }
    return undefined;
  }

  private async onHelloStream(stream: Stream, connection: Connection): Promise<void> {
    try {
      const hello = decodeHello(await readOneFrame(stream, MAX_HELLO_BYTES, 'hello'));
      const problem = this.admit(hello, connection);
      if (problem) {
        await writeFrame(stream, encodeHelloReply({ ok: false, error: problem }));
      } else {
        this.helloByConnection.set(connection.id, Promise.resolve(hello));
        await writeFrame(stream, encodeHelloReply({ ok: true, hello: this.localHello() }));
      }
      await stream.close();
    } catch (err) {
      this.log.warn(
        { peerId: connection.remotePeer.toString(), err: errorText(err) },
        'hello from peer failed',
      );
      stream.abort(err instanceof Error ? err : new Error(String(err)));
    }
  }

  /** Says hello on a connection we use (once per connection); resolves to the peer's hello. */
  private ensureHello(connection: Connection, signal: AbortSignal): Promise<Hello> {
    let hello = this.helloByConnection.get(connection.id);
    if (!hello) {
      hello = this.sayHello(connection, signal);
      this.helloByConnection.set(connection.id, hello);
      hello.catch(() => this.helloByConnection.delete(connection.id));
    }
    return hello;
  }

  private async sayHello(connection: Connection, signal: AbortSignal): Promise<Hello> {
    const stream = await connection.newStream(PROTOCOLS.hello, { signal });
    const stopAborting = whenAborted(signal, () => stream.abort(new Error('hello timed out')));
    try {
      await writeFrame(stream, encodeHello(this.localHello()), signal);
      await stream.close({ signal });
      const reply = decodeHelloReply(await readOneFrame(stream, MAX_HELLO_BYTES, 'hello reply'));
      if (!reply.ok) {
        this.log.error(
          { peerId: connection.remotePeer.toString(), address: connection.remoteAddr.toString() },
          `peer refused our hello: ${reply.error}`,
        );
        throw new TransportError(
          'protocol',
          `peer ${connection.remotePeer} refused our hello: ${reply.error}`,
        );
      }
      const problem = this.admit(reply.hello, connection);
      if (problem) throw new TransportError('protocol', problem);
      return reply.hello;
    } finally {
      stopAborting();
    }
  }

  // ------------------------------------------------------------ connecting

  /** Dials an address with no known peer id; the hello says who answered. */
  private async connectAddress(
    address: string,
    expectedNodeId: NodeId | undefined,
    signal: AbortSignal,
  ): Promise<{ connection: Connection; hello: Hello }> {
    const node = this.requireNode();
    const connection = await node.dial(multiaddr(address), { signal });
    const hello = await this.ensureHello(connection, signal);
    if (expectedNodeId !== undefined && hello.nodeId !== expectedNodeId) {
      throw new TransportError(
        'protocol',
        `address ${address} is node "${hello.nodeId}", not "${expectedNodeId}"`,
      );
    }
    return { connection, hello };
  }

  /** An open, hello'd connection to member `nodeId`, found by peer id (DHT if its addresses are stale). */
  private async connect(nodeId: NodeId, signal: AbortSignal): Promise<Connection> {
    const node = this.requireNode();
    const member = this.book.get(nodeId);
    if (!member) {
      throw new TransportError(
        'unknown-member',
        `node ${nodeId} is not in the address book of node ${this.nodeId}`,
      );
    }
    if (member.peerId === undefined) {
      let lastError: unknown;
      for (const address of member.multiaddrs) {
        try {
          // The hello records the peer id, so later connections go by peer id (and the DHT).
          return (await this.connectAddress(address, nodeId, signal)).connection;
        } catch (err) {
          lastError = err;
        }
      }
      throw new TransportError(
        'unreachable',
        `node ${nodeId}: peer id unknown and none of its addresses (${member.multiaddrs.join(', ') || 'none'}) answered`,
        { cause: lastError },
      );
    }
    const peerId = peerIdFromString(member.peerId);
    let connection = node.getConnections(peerId).find((c) => c.status === 'open');
    if (!connection) {
      try {
        connection = await node.dial(peerId, { signal });
      } catch (dialError) {
        if (signal.aborted) throw dialError;
        // Known addresses failed: ask the cluster's DHT where this peer id is now.
        this.stats.peerLookups++;
        try {
          await node.peerRouting.findPeer(peerId, { signal, useCache: false } as { signal: AbortSignal });
        } catch (lookupError) {
          throw new TransportError(
            'unreachable',
            `node ${nodeId} (peer ${member.peerId}) is unreachable: ${errorText(dialError)}; DHT lookup: ${errorText(lookupError)}`,
            { cause: dialError },
          );
        }
        connection = await node.dial(peerId, { signal });
      }
    }
    const hello = await this.ensureHello(connection, signal);
    if (hello.nodeId !== nodeId) {
      throw new TransportError(
        'protocol',
        `peer ${member.peerId} is node "${hello.nodeId}", not "${nodeId}"`,
      );
    }
    return connection;
  }

  // ------------------------------------------------------------ Raft messages

  send(messages: readonly Message[]): void {
    if (!this.node) return;
    const idle = new Map<NodeId, PeerLink>();
    for (const message of messages) {
      if (message.type === MessageType.Snap) {
        if (this.acceptOutgoing(message)) void this.sendSnapshot(message);
        continue;
      }
      const link = this.link(message.to);
      if (Date.now() < link.retryAtMs || link.queue.length >= this.maxQueuedMessagesPerPeer) {
        this.stats.messagesDropped++;
        this.reportUnreachable(message.to);
        continue;
      }
      const frame = this.encodeOutgoing(message);
      if (!frame) continue;
      link.queue.push(frame);
      if (!link.pumping) idle.set(message.to, link);
    }
    // Pumps start once everything is queued: a pump writes what its queue holds
    // at once, so all of this call's messages to a peer share one yamux frame
    // (one encryption) instead of the first going alone.
    for (const [to, link] of idle) if (!link.pumping) void this.pump(to, link);
  }

  private link(nodeId: NodeId): PeerLink {
    let link = this.links.get(nodeId);
    if (!link) {
      link = { queue: [], pumping: false, retryAtMs: 0, backoffMs: 0, snapshotInFlight: false };
      this.links.set(nodeId, link);
    }
    return link;
  }

  /** Writes a peer's queue to its long-lived stream, waiting for drain when yamux pushes back. */
  private async pump(nodeId: NodeId, link: PeerLink): Promise<void> {
    link.pumping = true;
    let inFlight = 0;
    try {
      while (link.queue.length > 0 && this.node) {
        let stream = link.stream;
        if (stream?.status !== 'open' || stream.writeStatus !== 'writable') {
          stream = await this.openRaftStream(nodeId, link);
        }
        // Everything queued so far goes out in one write (one yamux frame, one syscall), up to a bound.
        let batchBytes = 0;
        let batchLength = 0;
        while (batchLength < link.queue.length && batchBytes < MAX_BATCH_BYTES) {
          batchBytes += link.queue[batchLength].byteLength;
          batchLength++;
        }
        const batch = link.queue.splice(0, batchLength);
        inFlight = batch.length;
        await writeFrames(stream, batch, this.stopController.signal);
        inFlight = 0;
        this.stats.messagesSent += batch.length;
      }
      link.backoffMs = 0;
    } catch (err) {
      if (this.node) {
        // Everything queued is lost; Raft resends after it hears the peer is unreachable.
        this.log.debug({ to: nodeId, err: errorText(err) }, 'cannot send to peer');
        this.stats.messagesDropped += link.queue.length + inFlight;
        link.queue = [];
        link.stream?.abort(err instanceof Error ? err : new Error(String(err)));
        link.stream = undefined;
        link.backoffMs = Math.min(Math.max(link.backoffMs * 2, 100), MAX_BACKOFF_MS);
        link.retryAtMs = Date.now() + link.backoffMs;
        this.reportUnreachable(nodeId);
      }
    } finally {
      link.pumping = false;
    }
  }

  private async openRaftStream(nodeId: NodeId, link: PeerLink): Promise<Stream> {
    const signal = this.dialSignal();
    const connection = await this.connect(nodeId, signal);
    const stream = await connection.newStream(PROTOCOLS.raft, { signal });
    stream.addEventListener('close', () => {
      if (link.stream === stream) link.stream = undefined;
    });
    link.stream = stream;
    return stream;
  }

  /** The NodeId a connection said hello as, or undefined (then the peer must say hello first). */
  private connectionNodeId(connection: Connection): NodeId | undefined {
    return this.nodeByPeer.get(connection.remotePeer.toString());
  }

  private async onRaftStream(stream: Stream, connection: Connection): Promise<void> {
    const nodeId = this.connectionNodeId(connection);
    if (nodeId === undefined) {
      this.log.warn(
        { peerId: connection.remotePeer.toString() },
        'Raft stream from a peer that has not said hello',
      );
      stream.abort(new Error('say hello first'));
      return;
    }
    try {
      for await (const frame of readFrames(stream, this.maxMessageBytes)) {
        let message: Message;
        try {
          message = decodeMessage(frame);
        } catch (err) {
          this.stats.malformedFrames++;
          this.log.warn({ from: nodeId, err: errorText(err) }, 'dropping malformed Raft frame');
          continue;
        }
        if (message.from !== nodeId) {
          this.stats.malformedFrames++;
          this.log.warn(
            { connectionNodeId: nodeId, claimedFrom: message.from },
            'dropping Raft message with a forged from',
          );
          continue;
        }
        this.stats.messagesReceived++;
        this.deliver(message);
      }
    } catch (err) {
      this.log.debug({ from: nodeId, err: errorText(err) }, 'Raft stream ended with an error');
      stream.abort(err instanceof Error ? err : new Error(String(err)));
    }
  }

  // ------------------------------------------------------------ snapshots

  private async sendSnapshot(message: Message): Promise<void> {
    const to = message.to;
    const link = this.link(to);
    if (link.snapshotInFlight) {
      this.log.warn({ to }, 'a snapshot is already being sent to this peer; reporting the new one failed');
      this.reportSnapshot(to, 'failed');
      return;
    }
    link.snapshotInFlight = true;
    const snapshot = message.snapshot!;
    let stream: Stream | undefined;
    const signal = AbortSignal.any([this.stopController.signal, AbortSignal.timeout(this.snapshotTimeoutMs)]);
    // The wait for the ack takes no signal: the timeout ends it by aborting the stream (a stalled receiver).
    const stopAborting = whenAborted(signal, () =>
      stream?.abort(new Error('snapshot send timed out or transport stopping')),
    );
    try {
      const connection = await this.connect(to, this.dialSignal(signal));
      stream = await connection.newStream(PROTOCOLS.snapshot, { signal });
      const header = {
        message: { ...message, snapshot: { metadata: snapshot.metadata, data: new Uint8Array(0) } },
        totalBytes: snapshot.data.byteLength,
        dataCrc32: checksum(snapshot.data),
      };
      await writeFrame(stream, encodeSnapshotHeader(header), signal);
      for (let offset = 0; offset < snapshot.data.byteLength; offset += this.snapshotChunkBytes) {
        const chunk = snapshot.data.subarray(offset, offset + this.snapshotChunkBytes);
        stream.send(lp.encode.single(chunk));
        this.stats.snapshotChunksSent++;
        this.stats.snapshotMaxBufferedBytes = Math.max(
          this.stats.snapshotMaxBufferedBytes,
          stream.writeBufferLength,
        );
        // At most one chunk may wait in the send buffer: the rest stays put until yamux's window opens.
        if (stream.writeBufferLength > this.snapshotChunkBytes) {
          this.stats.snapshotDrainWaits++;
          await waitForBuffered(stream, this.snapshotChunkBytes, signal);
        }
      }
      await stream.close({ signal });
      const ack = decodeSnapshotAck(await readOneFrame(stream, MAX_ACK_BYTES, 'snapshot ack'));
      if (!ack.ok) throw new Error(`node ${to} refused the snapshot: ${ack.error}`);
      this.stats.snapshotsSent++;
      this.reportSnapshot(to, 'finished');
    } catch (err) {
      stream?.abort(err instanceof Error ? err : new Error(String(err)));
      if (this.node) {
        this.log.warn(
          { to, index: snapshot.metadata.index, bytes: snapshot.data.byteLength, err: errorText(err) },
          'snapshot send failed',
        );
        this.reportSnapshot(to, 'failed');
      }
    } finally {
      stopAborting();
      link.snapshotInFlight = false;
    }
  }

  private async onSnapshotStream(stream: Stream, connection: Connection): Promise<void> {
    const nodeId = this.connectionNodeId(connection);
    const refuse = async (reason: string) => {
      this.log.warn({ from: nodeId ?? connection.remotePeer.toString() }, `refusing snapshot: ${reason}`);
      await writeFrame(stream, encodeSnapshotAck({ ok: false, error: reason }));
      await stream.close();
    };
    try {
      if (nodeId === undefined) return await refuse('say hello first');
      const frames = readFrames(stream, Math.max(this.maxMessageBytes, this.snapshotChunkBytes));
      const first = await frames.next();
      if (first.done) return await refuse('stream ended before the snapshot header');
      const header = decodeSnapshotHeader(first.value);
      if (header.message.from !== nodeId) return await refuse(`header claims from "${header.message.from}"`);
      if (header.totalBytes > this.maxSnapshotBytes) {
        return await refuse(
          `snapshot of ${header.totalBytes} bytes exceeds this node's limit of ${this.maxSnapshotBytes}`,
        );
      }
      const data = new Uint8Array(header.totalBytes);
      let receivedBytes = 0;
      for await (const chunk of { [Symbol.asyncIterator]: () => frames }) {
        if (receivedBytes + chunk.byteLength > header.totalBytes) {
          return await refuse(`more data than the announced ${header.totalBytes} bytes`);
        }
        data.set(chunk, receivedBytes);
        receivedBytes += chunk.byteLength;
      }
      if (receivedBytes !== header.totalBytes) {
        return await refuse(`truncated: got ${receivedBytes} of ${header.totalBytes} bytes`);
      }
      if (checksum(data) !== header.dataCrc32) return await refuse('data checksum mismatch');
      const message: Message = {
        ...header.message,
        snapshot: { metadata: header.message.snapshot!.metadata, data },
      };
      this.stats.snapshotsReceived++;
      this.deliver(message);
      await writeFrame(stream, encodeSnapshotAck({ ok: true }));
      await stream.close();
    } catch (err) {
      this.log.warn({ from: nodeId, err: errorText(err) }, 'snapshot receive failed');
      stream.abort(err instanceof Error ? err : new Error(String(err)));
    }
  }

  // ------------------------------------------------------------ request / response

  async request(
    to: NodeId,
    protocol: string,
    payload: Uint8Array,
    options?: RequestOptions,
  ): Promise<Uint8Array> {
    this.requireNode();
    const what = `request "${protocol}" to node ${to}`;
    return withDeadline(what, options, async (deadline) => {
      const signal = AbortSignal.any([deadline, this.stopController.signal]);
      let connection: Connection;
      try {
        connection = await this.connect(to, this.dialSignal(signal));
      } catch (err) {
        if (err instanceof TransportError) throw err;
        throw new TransportError(
          'unreachable',
          `${what} failed: node ${to} is unreachable (${errorText(err)})`,
          {
            cause: err,
          },
        );
      }
      // Beyond the per-connection stream limit, requests wait for a slot instead of failing.
      const release = await this.rpcSlot(to, signal);
      const stream = await connection.newStream(PROTOCOLS.rpc, { signal }).catch((err) => {
        release();
        throw err;
      });
      stream.addEventListener('close', release, { once: true });
      const stopAborting = whenAborted(signal, () => stream.abort(new Error('request abandoned')));
      try {
        await writeFrame(stream, encodeRpcRequest({ protocol, payload }), signal);
        await stream.close({ signal });
        const response = decodeRpcResponse(await readOneFrame(stream, this.maxMessageBytes, 'response'));
        if (!response.ok) throw new TransportError(response.code, `${what} failed: ${response.error}`);
        return response.payload;
      } catch (err) {
        if (err instanceof TransportError || signal.aborted) throw err;
        throw new TransportError('unreachable', `${what} failed: ${errorText(err)}`, { cause: err });
      } finally {
        stopAborting();
      }
    });
  }

  /** Waits for one of the MAX_CONCURRENT_RPC_STREAMS request slots towards `to`; returns its release function. */
  private async rpcSlot(to: NodeId, signal: AbortSignal): Promise<() => void> {
    let slots = this.rpcSlots.get(to);
    if (!slots) {
      slots = { active: 0, waiters: [] };
      this.rpcSlots.set(to, slots);
    }
    const peerSlots = slots;
    while (peerSlots.active >= MAX_CONCURRENT_RPC_STREAMS) {
      signal.throwIfAborted();
      await new Promise<void>((resolve) => {
        const wake = () => {
          signal.removeEventListener('abort', onAbort);
          resolve();
        };
        const onAbort = () => {
          peerSlots.waiters.splice(peerSlots.waiters.indexOf(wake), 1);
          resolve();
        };
        peerSlots.waiters.push(wake);
        signal.addEventListener('abort', onAbort, { once: true });
      });
    }
    signal.throwIfAborted();
    peerSlots.active++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      peerSlots.active--;
      peerSlots.waiters.shift()?.();
    };
  }

  private async onRpcStream(stream: Stream, connection: Connection): Promise<void> {
    try {
      const request = decodeRpcRequest(await readOneFrame(stream, this.maxMessageBytes, 'request'));
      const from = this.connectionNodeId(connection);
      const result =
        from === undefined
          ? ({ ok: false, code: 'remote-error', error: 'say hello first' } as const)
          : await this.serveRequest(request.protocol, request.payload, from);
      await writeFrame(stream, encodeRpcResponse(result));
      await stream.close();
    } catch (err) {
      this.log.warn(
        { peerId: connection.remotePeer.toString(), err: errorText(err) },
        'request from peer failed',
      );
      stream.abort(err instanceof Error ? err : new Error(String(err)));
    }
  }
}
