// The only way the overlay touches state: a Consul-KV-shaped store.
// Implemented by an in-memory fake (src/testing/memory-kvstore.ts, unit tests
// only) and by the replicated @weft/kv node (adapter lives in @weft/agent).
// Both must pass the shared compliance suite exported from
// src/testing/kvstore-compliance.ts (`kvStoreComplianceSuite`).
//
// Semantics follow Consul KV: every write gets the store index (monotonic);
// CreateIndex is kept across updates; LockIndex counts successful acquires by
// a new session; a session invalidated (TTL expiry or destroy) releases or
// deletes the keys it holds (`behavior`), which bumps their ModifyIndex.

export interface KvEntry {
  key: string;
  value: Uint8Array;
  /** Opaque 64-bit flags, round-tripped exactly. */
  flags: bigint;
  createIndex: number;
  modifyIndex: number;
  lockIndex: number;
  /** Session holding the lock on this key, if any. */
  session?: string;
}

export interface PutOptions {
  /** Check-and-set: 0 = create only; otherwise the key's ModifyIndex must equal this. */
  cas?: number;
  flags?: bigint;
  /** Acquire the key's lock for this session (fails if held by another). */
  acquire?: string;
  /** Release the key's lock held by this session. */
  release?: string;
}

export interface DeleteOptions {
  cas?: number;
  recurse?: boolean;
}

export type TxnOp =
  | { verb: 'set'; key: string; value: Uint8Array; flags?: bigint }
  | { verb: 'cas'; key: string; value: Uint8Array; index: number; flags?: bigint }
  | { verb: 'lock'; key: string; value: Uint8Array; session: string; flags?: bigint }
  | { verb: 'unlock'; key: string; value: Uint8Array; session: string; flags?: bigint }
  | { verb: 'get'; key: string }
  | { verb: 'get-tree'; key: string }
  | { verb: 'check-index'; key: string; index: number }
  | { verb: 'check-session'; key: string; session: string }
  | { verb: 'check-not-exists'; key: string }
  | { verb: 'delete'; key: string }
  | { verb: 'delete-tree'; key: string }
  | { verb: 'delete-cas'; key: string; index: number };

export interface TxnError {
  opIndex: number;
  what: string;
}

export type TxnResult = { ok: true; index: number; results: KvEntry[] } | { ok: false; errors: TxnError[] };

export interface SessionOptions {
  name?: string;
  ttlMs: number;
  /** What happens to keys locked by the session when it is invalidated. */
  behavior?: 'release' | 'delete';
  lockDelayMs?: number;
}

export interface WatchEvent {
  /** Store index at which this listing is valid (X-Consul-Index). */
  index: number;
  /** Full listing of the watched prefix at `index`. */
  entries: KvEntry[];
}

export interface ReadOptions {
  /** Linearizable read (ReadIndex); default reads may be served by the leader without a round. */
  consistent?: boolean;
  /** Any node may answer from its local state, possibly stale. */
  stale?: boolean;
}

export interface KvStore {
  get(key: string, opts?: ReadOptions): Promise<KvEntry | null>;
  /** All keys with this prefix, sorted by key. */
  list(prefix: string, opts?: ReadOptions): Promise<KvEntry[]>;
  /**
   * Returns false when a cas / acquire / release condition failed.
   * Rejects when `acquire` names a session that does not exist (Consul: "invalid session").
   */
  put(key: string, value: Uint8Array, opts?: PutOptions): Promise<boolean>;
  delete(key: string, opts?: DeleteOptions): Promise<boolean>;
  /**
   * All-or-nothing; at most 64 operations like Consul (more rejects).
   * On failure nothing is written and `errors` names each failed op.
   * `results` holds one entry per set/cas/lock/unlock/get (and each entry of a get-tree).
   */
  txn(ops: TxnOp[]): Promise<TxnResult>;
  createSession(opts: SessionOptions): Promise<string>;
  /** False when the session no longer exists (expired or destroyed). */
  renewSession(id: string): Promise<boolean>;
  destroySession(id: string): Promise<void>;
  /**
   * Blocking-query watch of a prefix: yields the listing now, then every time
   * the prefix's index moves past the last one yielded. Ends when `signal` aborts.
   * Must survive leader changes (re-issues its query) — a watcher never has to poll.
   */
  watch(prefix: string, opts?: { index?: number; signal?: AbortSignal }): AsyncIterable<WatchEvent>;
}

/** Thrown by stores when a write could not be committed in time (no quorum, leader lost). */
export class KvUnavailableError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'KvUnavailableError';
  }
}
