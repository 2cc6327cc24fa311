// The overlay's KvStore on top of a replicated @weft/kv KvNode (or a KvClient
// of the servers, for an agent that is not a Raft member). Mostly a
// change of vocabulary (DirEntry → KvEntry, '' session → undefined); what is
// more: the node's "unavailable" errors become the overlay's
// KvUnavailableError, so the overlay retries them, and every call is timed
// and counted for /metrics.
import type { KvNode } from '@weft/kv/api/node';
import type { SessionInfo } from '@weft/kv/client/consul-json';
import type { DirEntry } from '@weft/kv/fsm/types';
import {
  type DeleteOptions,
  type KvEntry,
  type KvStore,
  KvUnavailableError,
  type PutOptions,
  type ReadOptions,
  type SessionOptions,
  type TxnOp,
  type TxnResult,
  type WatchEvent,
} from '@weft/overlay';
import type { AgentMetrics, KvOp } from '../metrics/metrics.js';

/**
 * The part of KvNode the adapter uses; a KvNode and a KvClient (a process
 * that is not a Raft member, see client-store.ts) both satisfy it as is.
 */
export type KvNodeLike = Pick<
  KvNode,
  'get' | 'list' | 'put' | 'delete' | 'txn' | 'createSession' | 'destroySession' | 'watchPrefix'
> & {
  /** Null when the session no longer exists (the record's fields differ: the client's comes over HTTP). */
  renewSession(id: string): Promise<SessionInfo | null>;
};

export function toKvEntry(e: DirEntry): KvEntry {
  return {
    key: e.key,
    // KvNode hands out its applied state's own bytes (shared, meant to be read
    // only); KvStore callers own what they get, as with the in-memory store.
    // Without the copy, a caller writing into a value would change this
    // replica's state (and its next snapshot) but no other replica's.
    value: new Uint8Array(e.value), // always a copy (a Buffer's slice() would not be)
    flags: e.flags,
    createIndex: e.createIndex,
    modifyIndex: e.modifyIndex,
    lockIndex: e.lockIndex,
    ...(e.session ? { session: e.session } : {}),
  };
}

function translateError(err: unknown): unknown {
  const code = (err as { code?: unknown } | null)?.code;
  if (code === 'unavailable' || code === 'closed') {
    return new KvUnavailableError((err as Error).message, { cause: err });
  }
  return err;
}

export class KvNodeStore implements KvStore {
  constructor(
    private readonly node: KvNodeLike,
    private readonly metrics?: AgentMetrics,
  ) {}

  private async call<T>(op: KvOp, run: () => Promise<T>): Promise<T> {
    const guarded = async () => {
      try {
        return await run();
      } catch (err) {
        throw translateError(err);
      }
    };
    return this.metrics ? this.metrics.observeKv(op, guarded) : guarded();
  }

  get(key: string, opts: ReadOptions = {}): Promise<KvEntry | null> {
    return this.call('get', async () => {
      const e = await this.node.get(key, opts);
      return e ? toKvEntry(e) : null;
    });
  }

  list(prefix: string, opts: ReadOptions = {}): Promise<KvEntry[]> {
    return this.call('list', async () => (await this.node.list(prefix, opts)).map(toKvEntry));
  }

  put(key: string, value: Uint8Array, opts: PutOptions = {}): Promise<boolean> {
    return this.call('put', () => this.node.put(key, value, opts));
  }

  delete(key: string, opts: DeleteOptions = {}): Promise<boolean> {
    return this.call('delete', () => this.node.delete(key, opts));
  }

  txn(ops: TxnOp[]): Promise<TxnResult> {
    return this.call('txn', async () => {
      const r = await this.node.txn(
        ops.map((op) => ({
          verb: op.verb,
          key: op.key,
          ...('value' in op ? { value: op.value } : {}),
          ...('flags' in op && op.flags !== undefined ? { flags: op.flags } : {}),
          ...('index' in op ? { index: op.index } : {}),
          ...('session' in op ? { session: op.session } : {}),
        })),
      );
      return r.ok
        ? { ok: true, index: r.index, results: r.results.map(toKvEntry) }
        : { ok: false, errors: r.errors.map((e) => ({ opIndex: e.opIndex, what: e.what })) };
    });
  }

  createSession(opts: SessionOptions): Promise<string> {
    return this.call('session', () =>
      this.node.createSession({
        name: opts.name,
        ttlMs: opts.ttlMs,
        behavior: opts.behavior ?? 'release',
        lockDelayMs: opts.lockDelayMs,
      }),
    );
  }

  renewSession(id: string): Promise<boolean> {
    return this.call('session', async () => (await this.node.renewSession(id)) !== null);
  }

  destroySession(id: string): Promise<void> {
    return this.call('session', async () => {
      await this.node.destroySession(id);
    });
  }

  async *watch(
    prefix: string,
    opts: { index?: number; signal?: AbortSignal } = {},
  ): AsyncIterable<WatchEvent> {
    this.metrics?.kvOps.inc({ op: 'watch', outcome: 'ok' });
    try {
      // KvNode serves watches from this node's applied state, which may trail
      // writes another node already acknowledged; without a barrier the first
      // listing could miss them (or be older than `opts.index`). A default
      // (linearizable) read first brings this node up to date, as a Consul
      // blocking query in the default mode would.
      await this.node.get(prefix);
      for await (const ev of this.node.watchPrefix(prefix, opts)) {
        yield { index: ev.index, entries: ev.entries.map(toKvEntry) };
      }
    } catch (err) {
      throw translateError(err);
    }
  }
}
