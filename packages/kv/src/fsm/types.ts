// Vocabulary of the replicated state machine: stored entries, sessions, the
// commands that change them and what applying a command returns.
// Field meanings follow Consul's KV store (agent/structs DirEntry, Session).

/** Consul's kv_max_value_size default: values above this are refused. */
export const MAX_VALUE_BYTES = 512 * 1024;
/** Consul's limit on operations in one transaction. */
export const MAX_TXN_OPS = 64;
/** Consul caps the lock-delay applied on invalidation at 60 s (structs.MaxLockDelay). */
export const MAX_LOCK_DELAY_MS = 60_000;
/** Largest value Flags may hold (uint64). */
export const MAX_FLAGS = (1n << 64n) - 1n;

/** One stored key, as Consul's DirEntry. Indexes are Raft log indexes. */
export interface DirEntry {
  key: string;
  value: Uint8Array;
  /** Opaque uint64, round-tripped exactly. */
  flags: bigint;
  createIndex: number;
  modifyIndex: number;
  /** How many times a session acquired this key's lock. */
  lockIndex: number;
  /** Session holding the lock, '' when unlocked. */
  session: string;
}

export type SessionBehavior = 'release' | 'delete';

export interface SessionRecord {
  id: string;
  name: string;
  node: string;
  lockDelayMs: number;
  behavior: SessionBehavior;
  /** 0 = no TTL: the session lives until destroyed. */
  ttlMs: number;
  /** TTL as the client wrote it ("30s"), echoed back like Consul; '' without TTL. */
  ttl: string;
  /** Echoed back for Consul compatibility; Weft does not evaluate health checks. */
  nodeChecks: string[] | null;
  createIndex: number;
  modifyIndex: number;
  /** Raft index of the last create or renew: lets the leader's reaper notice renewals. */
  renewIndex: number;
  /** Proposer's clock stamp (ms) on the last create or renew; the reaper bounds it by its own clock. */
  renewedAtMs: number;
}

/** Every KV verb of Consul's /v1/txn (api.KVOp). */
export const KV_VERBS = [
  'set',
  'cas',
  'lock',
  'unlock',
  'get',
  'get-tree',
  'check-index',
  'check-session',
  'check-not-exists',
  'delete',
  'delete-tree',
  'delete-cas',
] as const;
export type KvVerb = (typeof KV_VERBS)[number];

/** Verbs that change state (Consul's isWrite). */
export const WRITE_VERBS: ReadonlySet<KvVerb> = new Set<KvVerb>([
  'set',
  'cas',
  'lock',
  'unlock',
  'delete',
  'delete-tree',
  'delete-cas',
]);

/**
 * One KV operation. Which fields matter depends on the verb, exactly as in
 * Consul's TxnKVOp: `index` is the check-and-set / check index, `session` the
 * lock holder. Absent fields are encoded as their zero value.
 */
export interface KvOp {
  verb: KvVerb;
  key: string;
  value: Uint8Array;
  flags: bigint;
  index: number;
  session: string;
}

/**
 * Commands carried in Raft entries. `nowMs` is the proposer's wall clock at
 * proposal time: the state machine never reads a clock, so lock-delay is
 * decided from these stamps and every replica decides the same way.
 */
export type Command =
  /** One operation of the /v1/kv endpoint; answers true/false like Consul. */
  | { type: 'kv'; op: KvOp; nowMs: number }
  /** All-or-nothing transaction (/v1/txn). */
  | { type: 'txn'; ops: KvOp[]; nowMs: number }
  | { type: 'session-create'; session: SessionSpec; nowMs: number }
  | { type: 'session-destroy'; id: string; nowMs: number }
  | { type: 'session-renew'; id: string; nowMs: number }
  /** Forget tombstones of deletions at or below this index (leader-driven GC). */
  | { type: 'tombstone-reap'; upToIndex: number };

export type CommandType = Command['type'];

/** What the proposer chooses for a new session (the id included, so apply stays deterministic). */
export interface SessionSpec {
  id: string;
  name: string;
  node: string;
  lockDelayMs: number;
  behavior: SessionBehavior;
  ttlMs: number;
  ttl: string;
  nodeChecks: string[] | null;
}

export interface TxnOpError {
  opIndex: number;
  what: string;
}

/** A result row of a transaction: write verbs return the entry without its value (as Consul). */
export type TxnResultEntry = DirEntry;

export type ApplyResult =
  /** kv command: false when a cas / lock / unlock / delete-cas condition failed. */
  | { type: 'kv'; ok: boolean }
  | { type: 'txn'; ok: true; results: TxnResultEntry[] }
  | { type: 'txn'; ok: false; errors: TxnOpError[] }
  | { type: 'session-create'; id: string }
  | { type: 'session-destroy'; existed: boolean }
  /** null when the session does not exist (any more). */
  | { type: 'session-renew'; session: SessionRecord | null }
  | { type: 'tombstone-reap'; reaped: number }
  /**
   * The command could not be applied: malformed bytes, or a condition Consul
   * reports as an error rather than `false` (lock with an unknown session,
   * duplicate session id). Nothing changed.
   */
  | { type: 'rejected'; error: string };

/** What a blocking query waits on. */
export type WatchTarget =
  | { kind: 'key'; key: string }
  | { kind: 'prefix'; prefix: string }
  | { kind: 'sessions' };

/** A registered waiter. `changed` resolves at the first apply that touches the target. */
export interface Watch {
  readonly changed: Promise<void>;
  /** Unregister (idempotent); `changed` then never resolves. */
  cancel(): void;
}
