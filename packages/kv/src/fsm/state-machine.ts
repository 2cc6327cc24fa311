// The replicated state machine: Consul's KV store semantics over Raft.
//
// apply(index, bytes) is deterministic: it depends only on the current state,
// the Raft index and the command (which carries the proposer's clock stamp).
// Every replica applying the same log reaches byte-identical snapshots.
//
// Semantics follow Consul's state store (agent/consul/state/kvs.go, txn.go,
// session.go), including its quirks, so that clients written for Consul work:
//  - a plain set keeps the lock holder (Session) but resets LockIndex to 0;
//  - writing an identical entry does not bump ModifyIndex (no spurious wakeups);
//  - delete-cas of a missing key succeeds;
//  - deletions leave tombstones so a prefix's index never goes backwards.
import { CommandDecodeError, decodeCommand, packr } from './codec.js';
import { SortedMap } from './sorted-map.js';
import {
  type ApplyResult,
  type Command,
  type DirEntry,
  type KvOp,
  MAX_FLAGS,
  MAX_LOCK_DELAY_MS,
  type SessionRecord,
  type SessionSpec,
  type TxnOpError,
  type TxnResultEntry,
  type Watch,
  type WatchTarget,
  WRITE_VERBS,
} from './types.js';

export const SNAPSHOT_FORMAT_VERSION = 1;

/** Result of a read: the entries and the index a blocking query compares (X-Consul-Index). */
export interface Indexed<T> {
  index: number;
  value: T;
}

/**
 * Read-only view used by the HTTP API and by the KvStore adapter. Entries
 * returned are the stored objects themselves (no copy per read): never mutate
 * them or their value bytes. A write replaces the object, so a reference held
 * across writes keeps showing the state it was read at.
 */
export interface KvStateReader {
  /** Raft index of the last applied command (0 before any). */
  readonly appliedIndex: number;
  /** Highest index at which any key was written or deleted. */
  readonly kvIndex: number;
  /** Highest index at which a session was created or destroyed. */
  readonly sessionsIndex: number;
  /** One key; index = its ModifyIndex, or the table index when missing (Consul KVS.Get). */
  get(key: string): Indexed<DirEntry | null>;
  /** Every key under `prefix` in key order, with values. */
  list(prefix: string): Indexed<DirEntry[]>;
  /** Key names under `prefix`; with a separator, deeper keys fold into "prefix…separator". */
  keys(prefix: string, separator: string): Indexed<string[]>;
  session(id: string): Indexed<SessionRecord | null>;
  /** All sessions, ordered by id. */
  sessions(): Indexed<SessionRecord[]>;
  /** Evaluate a read-only transaction (get, get-tree, check-*) without going through Raft. */
  readTxn(ops: KvOp[]): Extract<ApplyResult, { type: 'txn' }>;
  /** Register a waiter for the next change touching `target` (see Watch). */
  watch(target: WatchTarget): Watch;
}

type OpOutcome =
  | { status: 'ok'; results: TxnResultEntry[] }
  /** A condition was not met: /v1/kv answers false, /v1/txn reports `what`. */
  | { status: 'failed'; what: string }
  /** Consul reports this as an error on both endpoints. */
  | { status: 'error'; what: string };

interface Waiter {
  target: WatchTarget;
  resolve: () => void;
}

/** Pending changes of the command being applied; undone if a transaction fails. */
class Mutation {
  readonly undo: Array<() => void> = [];
  readonly touchedKeys: string[] = [];
  sessionsTouched = false;
}

const ok = (results: TxnResultEntry[] = []): OpOutcome => ({ status: 'ok', results });
const q = (s: string): string => JSON.stringify(s); // Go's %q, near enough for messages

function withoutValue(e: DirEntry): DirEntry {
  return { ...e, value: new Uint8Array(0) };
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function sameContent(a: DirEntry, b: DirEntry): boolean {
  return (
    a.key === b.key &&
    a.flags === b.flags &&
    a.session === b.session &&
    a.lockIndex === b.lockIndex &&
    sameBytes(a.value, b.value)
  );
}

export class KvStateMachine implements KvStateReader {
  private entries = new SortedMap<DirEntry>();
  private sessionTable = new Map<string, SessionRecord>();
  /** session id → keys it holds the lock of (derived from `entries`; not in snapshots). */
  private heldKeys = new Map<string, Set<string>>();
  /** key → index of its deletion; keeps prefix indexes monotonic (Consul's graveyard). */
  private tombstones = new SortedMap<number>();
  /** key → proposer time (ms) before which it may not be locked again. */
  private lockDelays = new Map<string, number>();
  private waiters = new Set<Waiter>();
  private applied = 0;
  private kvTableIndex = 0;
  private sessionTableIndex = 0;

  get appliedIndex(): number {
    return this.applied;
  }
  get kvIndex(): number {
    return this.kvTableIndex;
  }
  get sessionsIndex(): number {
    return this.sessionTableIndex;
  }

  // ---------------------------------------------------------------- apply

  /**
   * Apply the command in a committed Raft entry. Never throws for bad bytes:
   * a malformed command is `rejected` and changes nothing (but the index is
   * still consumed, as on every replica). Throws only if `index` does not
   * advance, which is a bug in the caller.
   */
  apply(index: number, data: Uint8Array): ApplyResult {
    let cmd: Command;
    try {
      cmd = decodeCommand(data);
    } catch (err) {
      this.advanceTo(index);
      if (err instanceof CommandDecodeError) return { type: 'rejected', error: err.message };
      return { type: 'rejected', error: `malformed command: ${(err as Error).message}` };
    }
    return this.applyCommand(index, cmd);
  }

  /** Apply an already decoded command (same contract as apply). */
  applyCommand(index: number, cmd: Command): ApplyResult {
    this.advanceTo(index);
    const m = new Mutation();
    const kvIndexBefore = this.kvTableIndex;
    const sessionsIndexBefore = this.sessionTableIndex;
    let result: ApplyResult;
    try {
      result = this.dispatch(m, index, cmd);
    } catch (err) {
      // An invariant broke while applying: undo so the state stays what it was.
      this.rollback(m, kvIndexBefore, sessionsIndexBefore);
      throw err;
    }
    const failed = result.type === 'rejected' || (result.type === 'txn' && !result.ok);
    if (failed) {
      this.rollback(m, kvIndexBefore, sessionsIndexBefore);
      return result;
    }
    if (m.touchedKeys.length > 0) this.kvTableIndex = index;
    if (m.sessionsTouched) this.sessionTableIndex = index;
    this.wake(m);
    return result;
  }

  private advanceTo(index: number): void {
    if (!Number.isSafeInteger(index) || index <= this.applied) {
      throw new Error(
        `apply index ${index} does not advance past applied index ${this.applied}: log replayed twice?`,
      );
    }
    this.applied = index;
  }

  private rollback(m: Mutation, kvIndexBefore: number, sessionsIndexBefore: number): void {
    for (let i = m.undo.length - 1; i >= 0; i--) (m.undo[i] as () => void)();
    this.kvTableIndex = kvIndexBefore;
    this.sessionTableIndex = sessionsIndexBefore;
  }

  private dispatch(m: Mutation, idx: number, cmd: Command): ApplyResult {
    switch (cmd.type) {
      case 'kv': {
        if (!WRITE_VERBS.has(cmd.op.verb)) {
          return {
            type: 'rejected',
            error: `verb ${q(cmd.op.verb)} does not write; read it instead of proposing it`,
          };
        }
        const out = this.execOp(m, cmd.op, idx, cmd.nowMs);
        if (out.status === 'error') return { type: 'rejected', error: out.what };
        return { type: 'kv', ok: out.status === 'ok' };
      }
      case 'txn':
        return this.execTxn(m, cmd.ops, idx, cmd.nowMs);
      case 'session-create':
        return this.createSession(m, cmd.session, idx, cmd.nowMs);
      case 'session-destroy':
        return { type: 'session-destroy', existed: this.destroySession(m, cmd.id, idx, cmd.nowMs) };
      case 'session-renew': {
        const s = this.sessionTable.get(cmd.id);
        if (!s) return { type: 'session-renew', session: null };
        const before = { renewIndex: s.renewIndex, renewedAtMs: s.renewedAtMs };
        s.renewIndex = idx;
        s.renewedAtMs = cmd.nowMs;
        m.undo.push(() => {
          s.renewIndex = before.renewIndex;
          s.renewedAtMs = before.renewedAtMs;
        });
        return { type: 'session-renew', session: { ...s } };
      }
      case 'tombstone-reap': {
        const reap: string[] = [];
        for (const [key, deletedAt] of this.tombstones.entries())
          if (deletedAt <= cmd.upToIndex) reap.push(key);
        for (const key of reap) this.tombstones.delete(key);
        return { type: 'tombstone-reap', reaped: reap.length };
      }
    }
  }

  private execTxn(m: Mutation, ops: KvOp[], idx: number, nowMs: number): ApplyResult {
    const results: TxnResultEntry[] = [];
    const errors: TxnOpError[] = [];
    // Like Consul: run every op (later ops see earlier writes), collect all errors, commit only if none.
    ops.forEach((op, opIndex) => {
      const out = this.execOp(m, op, idx, nowMs);
      if (out.status === 'ok') results.push(...out.results);
      else errors.push({ opIndex, what: out.what });
    });
    if (errors.length > 0) return { type: 'txn', ok: false, errors };
    return { type: 'txn', ok: true, results };
  }

  /** One KV verb against the current (possibly mid-transaction) state. Read verbs never mutate. */
  private execOp(m: Mutation | null, op: KvOp, idx: number, nowMs: number): OpOutcome {
    const { key } = op;
    if (key === '' && op.verb !== 'delete-tree') return { status: 'error', what: 'Must provide key' };
    const existing = this.entries.get(key);
    switch (op.verb) {
      case 'get':
        return existing ? ok([existing]) : { status: 'error', what: `key ${q(key)} doesn't exist` };
      case 'get-tree':
        return ok(Array.from(this.entries.prefix(key), ([, e]) => e));
      case 'check-index':
        if (!existing) return { status: 'error', what: `failed to check index, key ${q(key)} doesn't exist` };
        if (existing.modifyIndex !== op.index) {
          return {
            status: 'error',
            what: `failed index check for key ${q(key)}, current modify index ${existing.modifyIndex} != ${op.index}`,
          };
        }
        return ok([withoutValue(existing)]);
      case 'check-session':
        if (!existing)
          return { status: 'error', what: `failed to check session, key ${q(key)} doesn't exist` };
        if (existing.session !== op.session) {
          return {
            status: 'error',
            what: `failed session check for key ${q(key)}, current session ${q(existing.session)} != ${q(op.session)}`,
          };
        }
        return ok([withoutValue(existing)]);
      case 'check-not-exists':
        return existing ? { status: 'error', what: `key ${q(key)} exists` } : ok();
      default:
        break;
    }
    if (m === null) throw new Error(`write verb ${op.verb} evaluated without a mutation`);
    switch (op.verb) {
      case 'set':
        return ok([withoutValue(this.writeEntry(m, idx, op, existing?.session ?? '', 0))]);
      case 'cas':
        if (op.index === 0 ? existing !== undefined : existing?.modifyIndex !== op.index) {
          return { status: 'failed', what: `failed to set key ${q(key)}, index is stale` };
        }
        return ok([withoutValue(this.writeEntry(m, idx, op, existing?.session ?? '', 0))]);
      case 'lock': {
        if (op.session === '') return { status: 'error', what: 'missing session' };
        if (!this.sessionTable.has(op.session))
          return { status: 'error', what: `invalid session ${q(op.session)}` };
        const delayedUntilMs = this.lockDelays.get(key);
        if (delayedUntilMs !== undefined && nowMs < delayedUntilMs) {
          return { status: 'failed', what: `failed to lock key ${q(key)} due to lock delay` };
        }
        let lockIndex = 1;
        if (existing) {
          if (existing.session === op.session) lockIndex = existing.lockIndex;
          else if (existing.session !== '') {
            return { status: 'failed', what: `failed to lock key ${q(key)}, lock is already held` };
          } else lockIndex = existing.lockIndex + 1;
        }
        return ok([withoutValue(this.writeEntry(m, idx, op, op.session, lockIndex))]);
      }
      case 'unlock':
        if (op.session === '') return { status: 'error', what: 'missing session' };
        if (!existing || existing.session !== op.session) {
          return {
            status: 'failed',
            what: `failed to unlock key ${q(key)}, lock isn't held, or is held by another session`,
          };
        }
        return ok([withoutValue(this.writeEntry(m, idx, op, '', existing.lockIndex))]);
      case 'delete':
        if (existing) this.removeEntry(m, key, idx);
        return ok();
      case 'delete-cas':
        if (existing && existing.modifyIndex !== op.index) {
          return { status: 'failed', what: `failed to delete key ${q(key)}, index is stale` };
        }
        if (existing) this.removeEntry(m, key, idx);
        return ok();
      case 'delete-tree':
        for (const k of Array.from(this.entries.prefix(key), ([k]) => k)) this.removeEntry(m, k, idx);
        return ok();
    }
    throw new Error(`unhandled verb ${String(op.verb)}`);
  }

  /** Store op's value and flags with the given lock state (Consul kvsSetTxn). Returns the stored entry. */
  private writeEntry(m: Mutation, idx: number, op: KvOp, session: string, lockIndex: number): DirEntry {
    const existing = this.entries.get(op.key);
    const next: DirEntry = {
      key: op.key,
      value: op.value,
      flags: op.flags,
      createIndex: existing ? existing.createIndex : idx,
      modifyIndex: idx,
      lockIndex,
      session,
    };
    if (existing && sameContent(existing, next)) return existing;
    this.store(op.key, next);
    const tombstone = this.tombstones.get(op.key);
    if (tombstone !== undefined) this.tombstones.delete(op.key);
    m.undo.push(() => {
      this.store(op.key, existing);
      if (tombstone !== undefined) this.tombstones.set(op.key, tombstone);
    });
    m.touchedKeys.push(op.key);
    return next;
  }

  /** The only place `entries` changes, so the session → held keys index stays in step. */
  private store(key: string, entry: DirEntry | undefined): void {
    const previousHolder = this.entries.get(key)?.session;
    if (previousHolder) {
      const keys = this.heldKeys.get(previousHolder);
      keys?.delete(key);
      if (keys?.size === 0) this.heldKeys.delete(previousHolder);
    }
    if (!entry) {
      this.entries.delete(key);
      return;
    }
    this.entries.set(key, entry);
    if (entry.session) this.addHeld(entry.session, key);
  }

  private addHeld(session: string, key: string): void {
    const keys = this.heldKeys.get(session);
    if (keys) keys.add(key);
    else this.heldKeys.set(session, new Set([key]));
  }

  private removeEntry(m: Mutation, key: string, idx: number): void {
    const existing = this.entries.get(key);
    if (!existing) return;
    const tombstone = this.tombstones.get(key);
    this.store(key, undefined);
    this.tombstones.set(key, idx);
    m.undo.push(() => {
      this.store(key, existing);
      if (tombstone === undefined) this.tombstones.delete(key);
      else this.tombstones.set(key, tombstone);
    });
    m.touchedKeys.push(key);
  }

  private createSession(m: Mutation, spec: SessionSpec, idx: number, nowMs: number): ApplyResult {
    if (this.sessionTable.has(spec.id)) {
      return { type: 'rejected', error: `session ${q(spec.id)} already exists; propose a fresh id` };
    }
    const record: SessionRecord = {
      ...spec,
      nodeChecks: spec.nodeChecks ? [...spec.nodeChecks] : null,
      createIndex: idx,
      modifyIndex: idx,
      renewIndex: idx,
      renewedAtMs: nowMs,
    };
    this.sessionTable.set(spec.id, record);
    m.undo.push(() => this.sessionTable.delete(spec.id));
    m.sessionsTouched = true;
    return { type: 'session-create', id: spec.id };
  }

  /** Invalidate a session: release or delete the keys it holds, start their lock-delay. */
  private destroySession(m: Mutation, id: string, idx: number, nowMs: number): boolean {
    const session = this.sessionTable.get(id);
    if (!session) return false;
    // Forget lock-delays that have run out, so the table stays small (deterministic: uses the stamp).
    for (const [key, untilMs] of Array.from(this.lockDelays)) {
      if (untilMs <= nowMs) this.setLockDelay(m, key, undefined);
    }
    const delayMs = Math.min(session.lockDelayMs, MAX_LOCK_DELAY_MS);
    // Sorted, so every replica (restored from a snapshot or not) walks the keys in one order.
    const heldKeys = Array.from(this.heldKeys.get(id) ?? []).sort();
    for (const key of heldKeys) {
      const e = this.entries.get(key);
      if (e?.session !== id)
        throw new Error(`held-keys index out of step: ${q(key)} is not held by ${q(id)}`);
      if (session.behavior === 'delete') this.removeEntry(m, key, idx);
      else {
        this.writeEntry(
          m,
          idx,
          { verb: 'set', key, value: e.value, flags: e.flags, index: 0, session: '' },
          '',
          e.lockIndex,
        );
      }
      if (delayMs > 0) this.setLockDelay(m, key, nowMs + delayMs);
    }
    this.sessionTable.delete(id);
    m.undo.push(() => this.sessionTable.set(id, session));
    m.sessionsTouched = true;
    return true;
  }

  private setLockDelay(m: Mutation, key: string, untilMs: number | undefined): void {
    const before = this.lockDelays.get(key);
    if (untilMs === undefined) this.lockDelays.delete(key);
    else this.lockDelays.set(key, untilMs);
    m.undo.push(() => {
      if (before === undefined) this.lockDelays.delete(key);
      else this.lockDelays.set(key, before);
    });
  }

  // ---------------------------------------------------------------- reads

  get(key: string): Indexed<DirEntry | null> {
    const e = this.entries.get(key);
    if (e) return { index: e.modifyIndex, value: e };
    return { index: Math.max(1, this.kvTableIndex), value: null };
  }

  list(prefix: string): Indexed<DirEntry[]> {
    const value: DirEntry[] = [];
    this.entries.forEachPrefix(prefix, (_, e) => {
      value.push(e);
    });
    return { index: this.prefixIndex(prefix, value), value };
  }

  keys(prefix: string, separator: string): Indexed<string[]> {
    const entries = this.list(prefix).value;
    const keys: string[] = [];
    let previous: string | undefined;
    for (const e of entries) {
      const sepAt = separator === '' ? -1 : e.key.indexOf(separator, prefix.length);
      const name = sepAt === -1 ? e.key : e.key.slice(0, sepAt + separator.length);
      if (name !== previous) keys.push(name);
      previous = name;
    }
    return { index: this.prefixIndex(prefix, entries), value: keys };
  }

  /** Consul's kvsListTxn index: newest entry or tombstone under the prefix, else the table index. */
  private prefixIndex(prefix: string, entries: DirEntry[]): number {
    let index = 0;
    if (prefix === '') index = this.kvTableIndex;
    else {
      for (const e of entries) index = Math.max(index, e.modifyIndex);
      this.tombstones.forEachPrefix(prefix, (_, deletedAt) => {
        index = Math.max(index, deletedAt);
      });
    }
    if (index === 0) index = this.kvTableIndex;
    return Math.max(1, index);
  }

  session(id: string): Indexed<SessionRecord | null> {
    const s = this.sessionTable.get(id);
    return { index: Math.max(1, this.sessionTableIndex), value: s ? { ...s } : null };
  }

  sessions(): Indexed<SessionRecord[]> {
    const ids = Array.from(this.sessionTable.keys()).sort();
    return {
      index: Math.max(1, this.sessionTableIndex),
      value: ids.map((id) => ({ ...(this.sessionTable.get(id) as SessionRecord) })),
    };
  }

  readTxn(ops: KvOp[]): Extract<ApplyResult, { type: 'txn' }> {
    const results: TxnResultEntry[] = [];
    const errors: TxnOpError[] = [];
    ops.forEach((op, opIndex) => {
      if (WRITE_VERBS.has(op.verb)) {
        errors.push({ opIndex, what: `verb ${q(op.verb)} writes; it must go through apply` });
        return;
      }
      const out = this.execOp(null, op, this.applied, 0);
      if (out.status === 'ok') results.push(...out.results);
      else errors.push({ opIndex, what: out.what });
    });
    return errors.length > 0 ? { type: 'txn', ok: false, errors } : { type: 'txn', ok: true, results };
  }

  /** Proposer time before which `key` may not be locked (for diagnostics and tests). */
  lockDelayUntilMs(key: string): number | undefined {
    return this.lockDelays.get(key);
  }

  tombstoneCount(): number {
    return this.tombstones.size;
  }

  // ---------------------------------------------------------------- watches

  watch(target: WatchTarget): Watch {
    let waiter: Waiter | undefined;
    const changed = new Promise<void>((resolve) => {
      waiter = { target, resolve };
    });
    const w = waiter as Waiter;
    this.waiters.add(w);
    return {
      changed,
      cancel: () => {
        this.waiters.delete(w);
      },
    };
  }

  /** Number of registered waiters (tests check that timeouts clean up). */
  get waiterCount(): number {
    return this.waiters.size;
  }

  private wake(m: Mutation | 'all'): void {
    if (this.waiters.size === 0) return;
    for (const w of Array.from(this.waiters)) {
      if (m === 'all' || this.touches(m, w.target)) {
        this.waiters.delete(w);
        w.resolve();
      }
    }
  }

  private touches(m: Mutation, t: WatchTarget): boolean {
    switch (t.kind) {
      case 'sessions':
        return m.sessionsTouched;
      case 'key':
        return m.touchedKeys.includes(t.key);
      case 'prefix':
        return m.touchedKeys.some((k) => k.startsWith(t.prefix));
    }
  }

  // ---------------------------------------------------------------- snapshots

  /** The whole state as bytes; equal states give equal bytes (everything is written in sorted order). */
  snapshot(): Uint8Array {
    const packed = packr.pack({
      v: SNAPSHOT_FORMAT_VERSION,
      appliedIndex: this.applied,
      kvIndex: this.kvTableIndex,
      sessionsIndex: this.sessionTableIndex,
      entries: Array.from(this.entries.entries(), ([, e]) => [
        e.key,
        e.value,
        e.flags,
        e.createIndex,
        e.modifyIndex,
        e.lockIndex,
        e.session,
      ]),
      sessions: this.sessions().value.map((s) => [
        s.id,
        s.name,
        s.node,
        s.lockDelayMs,
        s.behavior,
        s.ttlMs,
        s.ttl,
        s.nodeChecks,
        s.createIndex,
        s.modifyIndex,
        s.renewIndex,
        s.renewedAtMs,
      ]),
      tombstones: Array.from(this.tombstones.entries()),
      lockDelays: Array.from(this.lockDelays).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)),
    });
    // A plain Uint8Array that owns its bytes (packr returns a Buffer view of its pool).
    return new Uint8Array(packed);
  }

  /**
   * Replace the whole state with a snapshot. The snapshot is fully validated
   * before anything is replaced: a corrupt one throws and leaves the state as
   * it was. Every waiter is woken, since anything may have changed.
   */
  restore(data: Uint8Array): void {
    const parsed = parseSnapshot(data);
    this.entries = parsed.entries;
    this.heldKeys = new Map();
    for (const [key, e] of this.entries.entries()) if (e.session !== '') this.addHeld(e.session, key);
    this.sessionTable = parsed.sessions;
    this.tombstones = parsed.tombstones;
    this.lockDelays = parsed.lockDelays;
    this.applied = parsed.appliedIndex;
    this.kvTableIndex = parsed.kvIndex;
    this.sessionTableIndex = parsed.sessionsIndex;
    this.wake('all');
  }
}

export class SnapshotDecodeError extends Error {
  constructor(message: string) {
    super(`corrupt KV snapshot: ${message}; the current state was kept`);
    this.name = 'SnapshotDecodeError';
  }
}

function parseSnapshot(data: Uint8Array) {
  let raw: unknown;
  try {
    raw = packr.unpack(data);
  } catch (err) {
    throw new SnapshotDecodeError(`not msgpack (${(err as Error).message})`);
  }
  const fail = (what: string): never => {
    throw new SnapshotDecodeError(what);
  };
  if (raw === null || typeof raw !== 'object') fail('not a map');
  const m = raw as Record<string, unknown>;
  if (m.v !== SNAPSHOT_FORMAT_VERSION)
    fail(`format version ${String(m.v)} is not ${SNAPSHOT_FORMAT_VERSION}`);
  const uint = (v: unknown, where: string): number =>
    typeof v === 'number' && Number.isSafeInteger(v) && v >= 0
      ? v
      : fail(`${where} is not a non-negative integer`);
  const str = (v: unknown, where: string): string =>
    typeof v === 'string' ? v : fail(`${where} is not a string`);
  const arr = (v: unknown, where: string): unknown[] =>
    Array.isArray(v) ? v : fail(`${where} is not an array`);

  const entries = new SortedMap<DirEntry>();
  arr(m.entries, 'entries').forEach((row, i) => {
    const r = arr(row, `entries[${i}]`);
    const value = r[1];
    if (!(value instanceof Uint8Array)) fail(`entries[${i}] value is not binary`);
    const flags =
      typeof r[2] === 'bigint' ? r[2] : typeof r[2] === 'number' ? BigInt(r[2]) : fail(`entries[${i}] flags`);
    if (flags < 0n || flags > MAX_FLAGS) fail(`entries[${i}] flags outside uint64`);
    const key = str(r[0], `entries[${i}] key`);
    entries.set(key, {
      key,
      value: new Uint8Array(value as Uint8Array),
      flags,
      createIndex: uint(r[3], `entries[${i}] createIndex`),
      modifyIndex: uint(r[4], `entries[${i}] modifyIndex`),
      lockIndex: uint(r[5], `entries[${i}] lockIndex`),
      session: str(r[6], `entries[${i}] session`),
    });
  });
  const sessions = new Map<string, SessionRecord>();
  arr(m.sessions, 'sessions').forEach((row, i) => {
    const r = arr(row, `sessions[${i}]`);
    const behavior = r[4] === 'release' || r[4] === 'delete' ? r[4] : fail(`sessions[${i}] behavior`);
    const checks = r[7] === null || r[7] === undefined ? null : arr(r[7], `sessions[${i}] nodeChecks`);
    const id = str(r[0], `sessions[${i}] id`);
    sessions.set(id, {
      id,
      name: str(r[1], `sessions[${i}] name`),
      node: str(r[2], `sessions[${i}] node`),
      lockDelayMs: uint(r[3], `sessions[${i}] lockDelayMs`),
      behavior,
      ttlMs: uint(r[5], `sessions[${i}] ttlMs`),
      ttl: str(r[6], `sessions[${i}] ttl`),
      nodeChecks: checks ? checks.map((c, j) => str(c, `sessions[${i}] nodeChecks[${j}]`)) : null,
      createIndex: uint(r[8], `sessions[${i}] createIndex`),
      modifyIndex: uint(r[9], `sessions[${i}] modifyIndex`),
      renewIndex: uint(r[10], `sessions[${i}] renewIndex`),
      renewedAtMs: uint(r[11], `sessions[${i}] renewedAtMs`),
    });
  });
  for (const e of entries.entries()) {
    const holder = e[1].session;
    if (holder !== '' && !sessions.has(holder))
      fail(`key ${q(e[0])} is locked by unknown session ${q(holder)}`);
  }
  const tombstones = new SortedMap<number>();
  arr(m.tombstones, 'tombstones').forEach((row, i) => {
    const r = arr(row, `tombstones[${i}]`);
    tombstones.set(str(r[0], `tombstones[${i}] key`), uint(r[1], `tombstones[${i}] index`));
  });
  const lockDelays = new Map<string, number>();
  arr(m.lockDelays, 'lockDelays').forEach((row, i) => {
    const r = arr(row, `lockDelays[${i}]`);
    lockDelays.set(str(r[0], `lockDelays[${i}] key`), uint(r[1], `lockDelays[${i}] untilMs`));
  });
  return {
    entries,
    sessions,
    tombstones,
    lockDelays,
    appliedIndex: uint(m.appliedIndex, 'appliedIndex'),
    kvIndex: uint(m.kvIndex, 'kvIndex'),
    sessionsIndex: uint(m.sessionsIndex, 'sessionsIndex'),
  };
}
