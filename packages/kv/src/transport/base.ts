// What every Transport implementation shares: the callback slots, outgoing
// message checks, and request deadlines.
import { type Message, MessageType, type NodeId } from '../raft/types.js';
import { encodeMessage, validateMessage } from './codec.js';
import {
  DEFAULT_REQUEST_TIMEOUT_MS,
  type MemberAddress,
  type MemberHandler,
  type MessageHandler,
  type RequestHandler,
  type RequestOptions,
  type SnapshotStatus,
  type SnapshotStatusHandler,
  TransportError,
  type TransportLog,
  type UnreachableHandler,
} from './transport.js';

export abstract class TransportBase {
  protected messageHandler: MessageHandler | undefined;
  protected unreachableHandler: UnreachableHandler | undefined;
  protected snapshotStatusHandler: SnapshotStatusHandler | undefined;
  protected memberHandler: MemberHandler | undefined;
  protected readonly requestHandlers = new Map<string, RequestHandler>();

  constructor(
    readonly nodeId: NodeId,
    protected readonly log: TransportLog,
  ) {
    if (nodeId.length === 0) throw new TypeError('transport nodeId must not be empty');
  }

  onMessage(handler: MessageHandler): void {
    this.messageHandler = handler;
  }
  onUnreachable(handler: UnreachableHandler): void {
    this.unreachableHandler = handler;
  }
  onSnapshotStatus(handler: SnapshotStatusHandler): void {
    this.snapshotStatusHandler = handler;
  }
  onMemberUpdate(handler: MemberHandler): void {
    this.memberHandler = handler;
  }
  handle(protocol: string, handler: RequestHandler): void {
    if (protocol.length === 0) throw new TypeError('request protocol name must not be empty');
    this.requestHandlers.set(protocol, handler);
  }
  unhandle(protocol: string): void {
    this.requestHandlers.delete(protocol);
  }

  /**
   * Checks an outgoing message; returns false (and logs) for messages that are
   * bugs in the caller: local-only types, a wrong `from`, unencodable fields.
   */
  protected acceptOutgoing(message: Message): boolean {
    return this.checkOutgoing(message, () => validateMessage(message)) !== undefined;
  }

  /** Like acceptOutgoing, and returns the encoded frame (validation is part of encoding). */
  protected encodeOutgoing(message: Message): Uint8Array | undefined {
    return this.checkOutgoing(message, () => encodeMessage(message));
  }

  private checkOutgoing<T>(message: Message, check: () => T): T | undefined {
    if (message.from !== this.nodeId) {
      this.log.error(
        { from: message.from, nodeId: this.nodeId },
        'dropping outgoing Raft message with a foreign from',
      );
      return undefined;
    }
    try {
      return check();
    } catch (err) {
      this.log.error(
        { err: String(err), to: message.to, type: MessageType[message.type] },
        'dropping invalid outgoing Raft message',
      );
      return undefined;
    }
  }

  /** Hands a received message to the node; a throwing handler is logged, never fatal to the transport. */
  protected deliver(message: Message): void {
    if (message.to !== this.nodeId) {
      this.log.warn(
        { to: message.to, from: message.from },
        'dropping Raft message addressed to another node',
      );
      return;
    }
    const handler = this.messageHandler;
    if (!handler) return; // not wired yet: Raft retransmits
    try {
      handler(message);
    } catch (err) {
      this.log.error({ err: String(err), from: message.from }, 'Raft message handler threw');
    }
  }

  protected reportUnreachable(nodeId: NodeId): void {
    try {
      this.unreachableHandler?.(nodeId);
    } catch (err) {
      this.log.error({ err: String(err) }, 'unreachable handler threw');
    }
  }

  protected reportSnapshot(nodeId: NodeId, status: SnapshotStatus): void {
    try {
      this.snapshotStatusHandler?.(nodeId, status);
    } catch (err) {
      this.log.error({ err: String(err) }, 'snapshot status handler threw');
    }
  }

  protected reportMember(member: MemberAddress): void {
    try {
      this.memberHandler?.({ ...member, multiaddrs: [...member.multiaddrs] });
    } catch (err) {
      this.log.error({ err: String(err) }, 'member update handler threw');
    }
  }

  /** Runs the local handler for an incoming request; errors become the text sent back. */
  protected async serveRequest(
    protocol: string,
    payload: Uint8Array,
    from: NodeId,
  ): Promise<
    { ok: true; payload: Uint8Array } | { ok: false; error: string; code: 'no-handler' | 'remote-error' }
  > {
    const handler = this.requestHandlers.get(protocol);
    if (!handler) {
      return { ok: false, code: 'no-handler', error: `node ${this.nodeId} has no handler for "${protocol}"` };
    }
    try {
      return { ok: true, payload: await handler(payload, from) };
    } catch (err) {
      return { ok: false, code: 'remote-error', error: err instanceof Error ? err.message : String(err) };
    }
  }
}

/** Races `work` against the request's deadline and abort signal. */
export async function withDeadline<T>(
  what: string,
  options: RequestOptions | undefined,
  work: (signal: AbortSignal) => Promise<T>,
): Promise<T> {
  const timeoutMs = options?.timeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS;
  const controller = new AbortController();
  const onAbort = () => controller.abort(new TransportError('aborted', `${what} aborted by the caller`));
  if (options?.signal?.aborted) onAbort();
  options?.signal?.addEventListener('abort', onAbort, { once: true });
  const timer = setTimeout(
    () => controller.abort(new TransportError('timeout', `${what} timed out after ${timeoutMs} ms`)),
    timeoutMs,
  );
  try {
    return await new Promise<T>((resolve, reject) => {
      if (controller.signal.aborted) return reject(controller.signal.reason);
      controller.signal.addEventListener('abort', () => reject(controller.signal.reason), { once: true });
      work(controller.signal).then(resolve, reject);
    });
  } finally {
    clearTimeout(timer);
    options?.signal?.removeEventListener('abort', onAbort);
  }
}
