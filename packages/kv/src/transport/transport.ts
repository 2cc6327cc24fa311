// The seam between a KvNode's run loop and the network. Two implementations:
// MemoryTransport (one process, tests and simulation) and Libp2pTransport.
//
// Raft tolerates loss, so sending never blocks and never throws for network
// reasons: a message that cannot be queued is dropped and the peer reported
// unreachable (the leader then probes it instead of streaming), and every
// snapshot send ends with exactly one snapshot status report.
import type { Message, NodeId } from '../raft/types.js';

/** A component that owns resources. start() and stop() are idempotent. */
export interface Startable {
  start(): Promise<void>;
  stop(): Promise<void>;
}

/** Where a cluster member can be reached. Libp2p members are keyed by peer id; multiaddrs are hints. */
export interface MemberAddress {
  nodeId: NodeId;
  /** libp2p peer id (base58/CID string). Unused by MemoryTransport. */
  peerId?: string;
  /** libp2p multiaddrs (e.g. /ip4/127.0.0.1/tcp/7001). May be empty: the DHT finds the peer by id. */
  multiaddrs: string[];
}

export type SnapshotStatus = 'finished' | 'failed';

export type MessageHandler = (message: Message) => void;
export type UnreachableHandler = (nodeId: NodeId) => void;
export type SnapshotStatusHandler = (nodeId: NodeId, status: SnapshotStatus) => void;
export type MemberHandler = (member: MemberAddress) => void;
/** Answers one request; a thrown error reaches the caller as a TransportError('remote-error') with its message. */
export type RequestHandler = (payload: Uint8Array, from: NodeId) => Promise<Uint8Array> | Uint8Array;

export interface RequestOptions {
  /** Give up after this long (default 10 000 ms). */
  timeoutMs?: number;
  signal?: AbortSignal;
}

export type TransportErrorCode =
  | 'not-started'
  | 'unknown-member'
  | 'unreachable'
  | 'no-handler'
  | 'remote-error'
  | 'timeout'
  | 'aborted'
  | 'protocol';

export class TransportError extends Error {
  constructor(
    readonly code: TransportErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'TransportError';
  }
}

export interface Transport extends Startable {
  /** This node's Raft id. */
  readonly nodeId: NodeId;

  /**
   * Queues messages for their `to` peers and returns at once. Messages to the
   * same peer are sent in order. Snap messages go on a separate channel and end
   * in one snapshot status report. Local-only or invalid messages are dropped
   * and logged (they are bugs in the caller, not network events).
   */
  send(messages: readonly Message[]): void;
  /** Receives every valid message addressed to this node (one handler; replaces the previous one). */
  onMessage(handler: MessageHandler): void;
  /** A peer could not be reached or its queue overflowed: tell Raft (RawNode.reportUnreachable). */
  onUnreachable(handler: UnreachableHandler): void;
  /** Outcome of each Snap message sent (RawNode.reportSnapshot). */
  onSnapshotStatus(handler: SnapshotStatusHandler): void;
  /** A member's identity or addresses were learned or changed (hello handshake, identify). */
  onMemberUpdate(handler: MemberHandler): void;

  /**
   * Adds or updates a member in the address book (at any time). Libp2p: a
   * given peerId replaces the known one, an omitted one keeps the peer id
   * learned by handshake; non-empty multiaddrs replace the address hints.
   */
  setMember(member: MemberAddress): void;
  removeMember(nodeId: NodeId): void;
  /** The address book as currently known (including what handshakes learned). */
  members(): MemberAddress[];

  /** One request/response exchange with member `to` on a node-level protocol (e.g. "kv/forward-proposal"). */
  request(to: NodeId, protocol: string, payload: Uint8Array, options?: RequestOptions): Promise<Uint8Array>;
  /** Serves `protocol` (one handler per protocol; replaces the previous one). */
  handle(protocol: string, handler: RequestHandler): void;
  unhandle(protocol: string): void;
}

/** pino-compatible subset, so a KvNode can pass its pino child logger. */
export interface TransportLog {
  debug(fields: object, message: string): void;
  info(fields: object, message: string): void;
  warn(fields: object, message: string): void;
  error(fields: object, message: string): void;
}

/** Default log: warnings and errors to stderr, the rest dropped. */
export const stderrLog: TransportLog = {
  debug() {},
  info() {},
  warn(fields, message) {
    process.stderr.write(`weft-kv transport WARN ${message} ${JSON.stringify(fields)}\n`);
  },
  error(fields, message) {
    process.stderr.write(`weft-kv transport ERROR ${message} ${JSON.stringify(fields)}\n`);
  },
};

export const silentLog: TransportLog = { debug() {}, info() {}, warn() {}, error() {} };

export const DEFAULT_REQUEST_TIMEOUT_MS = 10_000;
export const DEFAULT_MAX_QUEUED_MESSAGES_PER_PEER = 1024;
