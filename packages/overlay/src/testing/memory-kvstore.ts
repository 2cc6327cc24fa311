// In-memory KvStore with Consul KV semantics, for unit tests of the overlay.
// It passes the same compliance suite as the replicated @weft/kv node, so
// tests written against it hold for the real store. It can also simulate a
// store that lost quorum (writes hang or fail), which the overlay must survive.

import { randomUUID } from 'node:crypto';
import { type Clock, systemClock, type TimerHandle } from '../clock.js';
import {
  type DeleteOptions,
  type KvEntry,
  type KvStore,
  KvUnavailableError,
  type PutOptions,
  type ReadOptions,
  type SessionOptions,
  type TxnError,
  type TxnOp,
  type TxnResult,
  type WatchEvent,
} from '../kvstore.js';

const maxTxnOps = 64;
/** Consul's default lock delay after a session is invalidated. */
const defaultLockDelayMs = 15_000;

interface Session {
  id: string;
  ttlMs: number;
  behavior: 'release' | 'delete';
  lockDelayMs: number;
  timer?: TimerHandle;
}

/** How the store behaves while "without quorum". */
export type UnavailableMode = 'hang' | 'reject';

interface State {
  entries: Map<string, KvEntry>;
  /** Index at which each deleted key was deleted, so prefix indexes never go back. */
  tombstones: Map<string, number>;
  /** Keys released by session invalidation may not be re-acquired before this time. */
  lockDelayUntilMs: Map<string, number>;
}

export interface MemoryKvStoreOptions {
  clock?: Clock;
}

export class MemoryKvStore implements KvStore {
  private readonly clock: Clock;
  private state: State = { entries: new Map(), tombstones: new Map(), lockDelayUntilMs: new Map() };
  private index = 0;
  private readonly sessions = new Map<string, Session>();
  private waiters = new Set<() => void>();
  private unavailable: UnavailableMode | null = null;
  private healWaiters: (() => void)[] = [];
  /** Counts of operations served, for tests that assert "no store round trip". */
  readonly opCounts = { get: 0, list: 0, put: 0, delete: 0, txn: 0, watchWakeups: 0 };

  constructor(opts: MemoryKvStoreOptions = {}) {
    this.clock = opts.clock ?? systemClock;
  }

  /** Simulate loss of quorum: writes (and consistent reads) hang or reject until `heal()`. */
  partition(mode: UnavailableMode = 'hang'): void {
    this.unavailable = mode;
  }

  heal(): void {
    this.unavailable = null;
    const waiters = this.healWaiters;
    this.healWaiters = [];
    for (const w of waiters) w();
  }

  /** Current store index (Raft index in the real store). */
  currentIndex(): number {
    return this.index;
  }

  /** A deep copy of all entries, to assert that a failed operation changed nothing. */
  snapshot(): KvEntry[] {
    return [...this.state.entries.values()].map(copyEntry).sort((a, b) => cmp(a.key, b.key));
  }

  async get(key: string, opts?: ReadOptions): Promise<KvEntry | null> {
    await this.gate(opts?.consistent === true);
    this.opCounts.get++;
    const e = this.state.entries.get(key);
    return e ? copyEntry(e) : null;
  }

  async list(prefix: string, opts?: ReadOptions): Promise<KvEntry[]> {
    await this.gate(opts?.consistent === true);
    this.opCounts.list++;
    return this.listNow(prefix);
  }

  async put(key: string, value: Uint8Array, opts: PutOptions = {}): Promise<boolean> {
    await this.gate(true);
    this.opCounts.put++;
    let op: TxnOp;
    if (opts.acquire !== undefined) {
      if (!this.sessions.has(opts.acquire)) throw new Error(`invalid session "${opts.acquire}"`);
      op = { verb: 'lock', key, value, session: opts.acquire, flags: opts.flags };
    } else if (opts.release !== undefined) {
      op = { verb: 'unlock', key, value, session: opts.release, flags: opts.flags };
    } else if (opts.cas !== undefined) {
      op = { verb: 'cas', key, value, index: opts.cas, flags: opts.flags };
    } else {
      op = { verb: 'set', key, value, flags: opts.flags };
    }
    // Consul applies cas together with acquire/release: check it first.
    if (opts.cas !== undefined && (opts.acquire !== undefined || opts.release !== undefined)) {
      const e = this.state.entries.get(key);
      if (opts.cas === 0 ? e !== undefined : e?.modifyIndex !== opts.cas) return false;
    }
    return this.apply([op]).ok;
  }

  async delete(key: string, opts: DeleteOptions = {}): Promise<boolean> {
    await this.gate(true);
    this.opCounts.delete++;
    let op: TxnOp;
    if (opts.recurse) op = { verb: 'delete-tree', key };
    else if (opts.cas !== undefined) op = { verb: 'delete-cas', key, index: opts.cas };
    else op = { verb: 'delete', key };
    return this.apply([op]).ok;
  }

  async txn(ops: TxnOp[]): Promise<TxnResult> {
    if (ops.length > maxTxnOps) {
      throw new Error(`transaction has ${ops.length} operations; at most ${maxTxnOps} are allowed`);
    }
    await this.gate(true);
    this.opCounts.txn++;
    return this.apply(ops);
  }

  async createSession(opts: SessionOptions): Promise<string> {
    await this.gate(true);
    if (!(opts.ttlMs > 0)) throw new Error(`session ttlMs must be positive, got ${opts.ttlMs}`);
    const s: Session = {
      id: randomUUID(),
      ttlMs: opts.ttlMs,
      behavior: opts.behavior ?? 'release',
      lockDelayMs: opts.lockDelayMs ?? defaultLockDelayMs,
    };
    this.sessions.set(s.id, s);
    this.armSessionTimer(s);
    return s.id;
  }

  async renewSession(id: string): Promise<boolean> {
    await this.gate(true);
    const s = this.sessions.get(id);
    if (!s) return false;
    this.armSessionTimer(s);
    return true;
  }

  async destroySession(id: string): Promise<void> {
    await this.gate(true);
    this.invalidateSession(id);
  }

  async *watch(
    prefix: string,
    opts: { index?: number; signal?: AbortSignal } = {},
  ): AsyncIterable<WatchEvent> {
    const signal = opts.signal;
    let lastIndex = opts.index;
    while (!signal?.aborted) {
      const prefixIndex = this.prefixIndex(prefix);
      // An index that went backwards means the client must start over (Consul semantics).
      if (lastIndex === undefined || prefixIndex > lastIndex || prefixIndex < lastIndex) {
        lastIndex = prefixIndex;
        this.opCounts.watchWakeups++;
        yield { index: prefixIndex, entries: this.listNow(prefix) };
        continue;
      }
      await new Promise<void>((resolve) => {
        const wake = () => {
          this.waiters.delete(wake);
          signal?.removeEventListener('abort', wake);
          resolve();
        };
        this.waiters.add(wake);
        signal?.addEventListener('abort', wake, { once: true });
      });
    }
  }

  /** Stops session timers; the store stays readable. */
  close(): void {
    for (const s of this.sessions.values()) if (s.timer) this.clock.clearTimeout(s.timer);
  }

  // --- internals ---

  private async gate(isWrite: boolean): Promise<void> {
    if (!isWrite || this.unavailable === null) return;
    if (this.unavailable === 'reject')
      throw new KvUnavailableError('memory store: no quorum (simulated partition)');
    await new Promise<void>((resolve) => this.healWaiters.push(resolve));
  }

  private listNow(prefix: string): KvEntry[] {
    const out: KvEntry[] = [];
    for (const e of this.state.entries.values()) if (e.key.startsWith(prefix)) out.push(copyEntry(e));
    return out.sort((a, b) => cmp(a.key, b.key));
  }

  private prefixIndex(prefix: string): number {
    let max = 0;
    for (const e of this.state.entries.values())
      if (e.key.startsWith(prefix) && e.modifyIndex > max) max = e.modifyIndex;
    for (const [k, idx] of this.state.tombstones) if (k.startsWith(prefix) && idx > max) max = idx;
    return max;
  }

  private armSessionTimer(s: Session): void {
    if (s.timer) this.clock.clearTimeout(s.timer);
    s.timer = this.clock.setTimeout(() => this.invalidateSession(s.id), s.ttlMs);
  }

  private invalidateSession(id: string): void {
    const s = this.sessions.get(id);
    if (!s) return;
    if (s.timer) this.clock.clearTimeout(s.timer);
    this.sessions.delete(id);
    const held = [...this.state.entries.values()].filter((e) => e.session === id);
    if (held.length === 0) return;
    const idx = ++this.index;
    for (const e of held) {
      if (s.lockDelayMs > 0) this.state.lockDelayUntilMs.set(e.key, this.clock.now() + s.lockDelayMs);
      if (s.behavior === 'delete') {
        this.state.entries.delete(e.key);
        this.state.tombstones.set(e.key, idx);
      } else {
        this.state.entries.set(e.key, { ...e, session: undefined, modifyIndex: idx });
      }
    }
    this.notify();
  }

  /** Runs the ops against a staged copy; commits only if every op succeeded. */
  private apply(ops: TxnOp[]): TxnResult {
    const staged: State = {
      entries: new Map(this.state.entries),
      tombstones: new Map(this.state.tombstones),
      lockDelayUntilMs: this.state.lockDelayUntilMs,
    };
    const idx = this.index + 1;
    let wrote = false;
    const results: KvEntry[] = [];
    const errors: TxnError[] = [];
    const write = (
      key: string,
      value: Uint8Array,
      flags: bigint | undefined,
      session: string | undefined,
      lockInc: boolean,
    ) => {
      const prev = staged.entries.get(key);
      const entry: KvEntry = {
        key,
        value: value.slice(),
        flags: flags ?? 0n,
        createIndex: prev?.createIndex ?? idx,
        modifyIndex: idx,
        lockIndex: (prev?.lockIndex ?? 0) + (lockInc ? 1 : 0),
        session,
      };
      staged.entries.set(key, entry);
      staged.tombstones.delete(key);
      wrote = true;
      results.push(copyEntry(entry));
    };
    const remove = (key: string) => {
      if (staged.entries.delete(key)) {
        staged.tombstones.set(key, idx);
        wrote = true;
      }
    };
    ops.forEach((op, opIndex) => {
      const fail = (what: string) => errors.push({ opIndex, what });
      const cur = staged.entries.get(op.key);
      switch (op.verb) {
        case 'set':
          write(op.key, op.value, op.flags, cur?.session, false);
          break;
        case 'cas':
          if (op.index === 0 ? cur !== undefined : cur?.modifyIndex !== op.index) {
            fail(
              `failed to set key "${op.key}": index ${op.index} is stale (current ${cur?.modifyIndex ?? 'none'})`,
            );
          } else write(op.key, op.value, op.flags, cur?.session, false);
          break;
        case 'lock': {
          if (!this.sessions.has(op.session)) {
            fail(`failed to lock key "${op.key}": invalid session "${op.session}"`);
          } else if (cur?.session !== undefined && cur.session !== op.session) {
            fail(`failed to lock key "${op.key}": already held by session "${cur.session}"`);
          } else if (
            (staged.lockDelayUntilMs.get(op.key) ?? 0) > this.clock.now() &&
            cur?.session !== op.session
          ) {
            fail(`failed to lock key "${op.key}": lock delay in effect`);
          } else write(op.key, op.value, op.flags, op.session, cur?.session !== op.session);
          break;
        }
        case 'unlock':
          if (cur?.session !== op.session)
            fail(`failed to unlock key "${op.key}": not held by session "${op.session}"`);
          else write(op.key, op.value, op.flags, undefined, false);
          break;
        case 'get':
          if (!cur) fail(`key "${op.key}" doesn't exist`);
          else results.push(copyEntry(cur));
          break;
        case 'get-tree':
          for (const e of [...staged.entries.values()]
            .filter((x) => x.key.startsWith(op.key))
            .sort((a, b) => cmp(a.key, b.key))) {
            results.push(copyEntry(e));
          }
          break;
        case 'check-index':
          if (cur?.modifyIndex !== op.index)
            fail(`key "${op.key}" index ${cur?.modifyIndex ?? 'none'} is not ${op.index}`);
          break;
        case 'check-session':
          if (!cur || cur.session !== op.session)
            fail(`key "${op.key}" is not held by session "${op.session}"`);
          break;
        case 'check-not-exists':
          if (cur) fail(`key "${op.key}" exists`);
          break;
        case 'delete':
          remove(op.key);
          break;
        case 'delete-tree':
          for (const k of [...staged.entries.keys()]) if (k.startsWith(op.key)) remove(k);
          break;
        case 'delete-cas':
          // Consul (kvsDeleteCASTxn): deleting a key that does not exist succeeds.
          if (!cur) break;
          if (cur.modifyIndex !== op.index) {
            fail(
              `failed to delete key "${op.key}": index ${op.index} is stale (current ${cur?.modifyIndex ?? 'none'})`,
            );
          } else remove(op.key);
          break;
        default: {
          const never: never = op;
          fail(`unknown verb ${JSON.stringify(never)}`);
        }
      }
    });
    if (errors.length > 0) return { ok: false, errors };
    if (wrote) {
      this.index = idx;
      this.state = staged;
      this.notify();
    }
    return { ok: true, index: this.index, results };
  }

  private notify(): void {
    const waiters = this.waiters;
    this.waiters = new Set();
    for (const w of waiters) w();
  }
}

function copyEntry(e: KvEntry): KvEntry {
  return { ...e, value: e.value.slice() };
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
