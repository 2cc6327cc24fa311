// Durable Raft storage on LevelDB (classic-level).
//
// One database, two sublevels, every change one atomic batch:
//   meta!format     {magic, version}           refuses foreign / future data
//   meta!identity   {nodeId, clusterId}        refuses another node's data
//   meta!hardstate  {term, vote, commit}
//   meta!snapshot   {metadata, data}           latest snapshot (index 0 = none)
//   meta!logstart   {index, term}              entries <= index are compacted
//   log!<u64 BE i>  run of entries i, i+1, ... one record per save (codec.ts)
// A run replaces whatever earlier runs held from its first index on: a save
// that overwrites a conflicting suffix writes its run at the first index it
// changes and deletes the runs that start later, and the run it cuts short
// stays as it is. Reading the runs in key order rebuilds the log.
// Reads are synchronous (the Raft core calls them inline): the live log tail
// is loaded at open and kept in memory; LevelDB is the write-ahead copy.
import { mkdir, readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { ClassicLevel } from 'classic-level';
import { limitSize } from '../raft/log.js';
import { bootstrapState } from '../raft/memory-storage.js';
import {
  CompactedError,
  type ConfState,
  type Entry,
  EntryType,
  emptyConfState,
  type HardState,
  NONE,
  type NodeId,
  type RaftLogStorage,
  type Snapshot,
  UnavailableError,
} from '../raft/types.js';
import {
  decodeIndexKey,
  decodeRecord,
  decodeRun,
  encodeIndexKey,
  encodeRecord,
  encodeRun,
  RUN_ENTRY_OVERHEAD,
} from './codec.js';

export const STORAGE_MAGIC = 'weft-kv/raft-storage';
/** 2: log records are runs of entries. */
export const STORAGE_FORMAT_VERSION = 2;
/** One record per log entry; rewritten as runs when opened (migrateLegacyLog). */
const LEGACY_FORMAT_VERSION = 1;
/**
 * A save's entries go into runs of at most this many bytes: a run stays on
 * disk (and, after a restart, in memory: entries are views into it) until its
 * last entry is compacted away, so a catch-up burst must not make one huge run.
 */
const RUN_MAX_BYTES = 1 << 20;

/** A data directory that must not be used: the message names the directory and the problem. */
export class StorageOpenError extends Error {
  constructor(
    readonly dir: string,
    readonly problem: string,
    options?: { cause?: unknown },
  ) {
    super(`refusing to open raft storage at ${dir}: ${problem}`, options);
    this.name = 'StorageOpenError';
  }
}

export interface StorageIdentity {
  nodeId: NodeId;
  clusterId: string;
  /** The member's Raft id when it differs from nodeId (KvNode: its raft address); '' when unused. */
  raftId: string;
}

export interface OpenStorageOptions {
  /** The LevelDB directory (created when missing or empty). */
  dir: string;
  nodeId: NodeId;
  /** When set, an existing directory of another cluster is refused; a new one records it. */
  clusterId?: string;
  /** When set, an existing directory recorded with another Raft id is refused; a new one records it. */
  raftId?: string;
}

/** What one Ready asks to persist. */
export interface StorageUpdate {
  hardState?: HardState;
  entries?: Entry[];
  snapshot?: Snapshot;
}

export interface StorageStats {
  /** Batches written (each is one LevelDB write, synced when asked). */
  batches: number;
  syncedBatches: number;
  entriesWritten: number;
}

interface LogStart {
  index: number;
  term: number;
}

type Db = ClassicLevel<string, Uint8Array>;
// Sublevels are kept untyped here: abstract-level's generics cannot express a
// sublevel with other key types than its parent.
// biome-ignore lint/suspicious/noExplicitAny: see above
type Sub = any;
/**
 * One write of a batch, by its full key in the root database (the sublevel's
 * prefix included, see metaKeys/logKey), already encoded: the batch goes
 * straight to classic-level's own batch (see rawBatchWriter).
 */
type BatchOp = { type: 'put'; key: Uint8Array; value: Uint8Array } | { type: 'del'; key: Uint8Array };

/**
 * The batch entry point that classic-level implements for abstract-level
 * (`_batch(operations, options)`: encoded keys and values, one LevelDB
 * WriteBatch). abstract-level's public batches wrap every operation in
 * validation, option cloning, encoding and prefixing objects: measured on an
 * 11-operation batch (10 log entries, one delete), 120-135 µs of main-thread
 * time and ~300 µs of process CPU through a chained batch, 55 µs and ~145 µs
 * here. Our operations need none of that: keys are built with their prefix,
 * values are bytes, and no hooks or events are used.
 */
type RawBatchWriter = (ops: BatchOp[], options: { sync: boolean }) => Promise<void>;

function rawBatchWriter(db: Db, dir: string): RawBatchWriter {
  const impl = (db as unknown as { _batch?: (ops: BatchOp[], o: { sync: boolean }) => Promise<void> })._batch;
  if (typeof impl !== 'function') {
    throw new StorageOpenError(
      dir,
      'the installed classic-level has no _batch(operations, options) (abstract-level private API); install the version in package-lock.json',
    );
  }
  return (ops, options) => impl.call(db, ops, options);
}

const META = {
  format: 'format',
  identity: 'identity',
  hardState: 'hardstate',
  snapshot: 'snapshot',
  logStart: 'logstart',
};

function emptySnapshot(): Snapshot {
  return { metadata: { index: 0, term: 0, confState: emptyConfState() }, data: new Uint8Array(0) };
}

export class LevelRaftStorage implements RaftLogStorage {
  private hard: HardState = { term: 0, vote: NONE, commit: 0 };
  private snap: Snapshot = emptySnapshot();
  private logStart: LogStart = { index: 0, term: 0 };
  /** Entries logStart.index+1 .. lastIndex, in order, contiguous. */
  private log: Entry[] = [];
  /**
   * The first index of every run record on disk, ascending. Run k holds the
   * live entries runs[k] .. runs[k+1]-1 (the last one up to lastIndex); the
   * first may start at or below logStart.index (partly compacted).
   */
  private runs: number[] = [];
  /** Serializes writes: each plans against the state the previous one left. */
  private writeChain: Promise<void> = Promise.resolve();
  private closed = false;
  readonly stats: StorageStats = { batches: 0, syncedBatches: 0, entriesWritten: 0 };
  /** The sublevels' key prefixes in the root database ("!log!", "!meta!"), for BatchOp keys. */
  private readonly logPrefix: Uint8Array;
  /** Each META record's full key in the root database, encoded once. */
  private readonly metaKeys: Record<keyof typeof META, Uint8Array>;
  private readonly writeRaw: RawBatchWriter;

  private constructor(
    readonly dir: string,
    private readonly db: Db,
    meta: Sub,
    logDb: Sub,
    readonly identity: StorageIdentity,
    /** True when this open created the store (no earlier state existed). */
    readonly created: boolean,
  ) {
    this.logPrefix = new TextEncoder().encode(logDb.prefix as string);
    const encoder = new TextEncoder();
    this.metaKeys = Object.fromEntries(
      Object.entries(META).map(([record, name]) => [record, encoder.encode((meta.prefix as string) + name)]),
    ) as Record<keyof typeof META, Uint8Array>;
    this.writeRaw = rawBatchWriter(db, dir);
  }

  private logKey(index: number): Uint8Array {
    return encodeIndexKey(index, this.logPrefix);
  }

  static async open(options: OpenStorageOptions): Promise<LevelRaftStorage> {
    const { dir, nodeId } = options;
    if (!nodeId) throw new StorageOpenError(dir, 'no node id given');
    const fresh = await inspectDirectory(dir);
    const db: Db = new ClassicLevel<string, Uint8Array>(dir, {
      keyEncoding: 'utf8',
      valueEncoding: 'view',
      createIfMissing: fresh,
    });
    try {
      await db.open();
    } catch (err) {
      const cause = (err as { cause?: Error }).cause ?? err;
      const text = String((cause as Error).message ?? cause);
      const hint = /lock/i.test(text)
        ? 'the directory is locked: is another weft-kv process using this data directory?'
        : `LevelDB cannot open it (${text}); the directory is damaged or is not a LevelDB database`;
      throw new StorageOpenError(dir, hint, { cause: err });
    }
    const meta: Sub = db.sublevel<string, Uint8Array>('meta', { keyEncoding: 'utf8', valueEncoding: 'view' });
    const logDb: Sub = db.sublevel<Uint8Array, Uint8Array>('log', {
      keyEncoding: 'view',
      valueEncoding: 'view',
    });
    try {
      const storage = await LevelRaftStorage.load(dir, db, meta, logDb, options);
      return storage;
    } catch (err) {
      await db.close().catch(() => {});
      if (err instanceof StorageOpenError) throw err;
      throw new StorageOpenError(dir, (err as Error).message, { cause: err });
    }
  }

  private static async load(
    dir: string,
    db: Db,
    meta: Sub,
    logDb: Sub,
    options: OpenStorageOptions,
  ): Promise<LevelRaftStorage> {
    const formatBytes = (await meta.get(META.format)) as Uint8Array | undefined;
    if (formatBytes === undefined) {
      // No format record: either LevelDB was created but our first batch never
      // landed (crash during creation: the database is empty), or this is
      // somebody else's LevelDB. Only the former may be initialised.
      for await (const _key of db.keys({ limit: 1 })) {
        throw new StorageOpenError(
          dir,
          'the LevelDB database has data but no weft-kv format record: it belongs to another program or is damaged',
        );
      }
      const identity: StorageIdentity = {
        nodeId: options.nodeId,
        clusterId: options.clusterId ?? '',
        raftId: options.raftId ?? '',
      };
      const s = new LevelRaftStorage(dir, db, meta, logDb, identity, true);
      await db.batch(
        [
          {
            type: 'put',
            sublevel: meta,
            key: META.format,
            value: encodeRecord({ magic: STORAGE_MAGIC, version: STORAGE_FORMAT_VERSION }),
          },
          { type: 'put', sublevel: meta, key: META.identity, value: encodeRecord(identity) },
          { type: 'put', sublevel: meta, key: META.hardState, value: encodeRecord(s.hard) },
          { type: 'put', sublevel: meta, key: META.snapshot, value: encodeRecord(s.snap) },
          { type: 'put', sublevel: meta, key: META.logStart, value: encodeRecord(s.logStart) },
        ] as never,
        { sync: true },
      );
      return s;
    }

    const format = decodeRecord(formatBytes, 'format record') as { magic?: unknown; version?: unknown };
    if (format?.magic !== STORAGE_MAGIC) {
      throw new StorageOpenError(
        dir,
        `wrong magic ${JSON.stringify(format?.magic)} (expected "${STORAGE_MAGIC}"): not a weft-kv data directory`,
      );
    }
    if (format.version !== STORAGE_FORMAT_VERSION && format.version !== LEGACY_FORMAT_VERSION) {
      throw new StorageOpenError(
        dir,
        `storage format version ${String(format.version)} is not supported by this build (it reads versions ${LEGACY_FORMAT_VERSION} and ${STORAGE_FORMAT_VERSION}); use a matching weft-kv release`,
      );
    }
    const identity = await readRequired(meta, META.identity, 'identity record', dir, validIdentity);
    if (identity.nodeId !== options.nodeId) {
      throw new StorageOpenError(
        dir,
        `it belongs to node "${identity.nodeId}", not "${options.nodeId}"; use that node id or a different data directory`,
      );
    }
    if (
      options.clusterId !== undefined &&
      identity.clusterId !== '' &&
      identity.clusterId !== options.clusterId
    ) {
      throw new StorageOpenError(
        dir,
        `it belongs to cluster "${identity.clusterId}", not "${options.clusterId}"; use a different data directory for a new cluster`,
      );
    }
    if (options.raftId !== undefined && identity.raftId !== '' && identity.raftId !== options.raftId) {
      throw new StorageOpenError(
        dir,
        `it holds the state of Raft member ${identity.raftId}, not ${options.raftId}: a member's raft address is its identity in the cluster; start it with that address`,
      );
    }
    const s = new LevelRaftStorage(dir, db, meta, logDb, identity, false);
    s.hard = await readRequired(meta, META.hardState, 'hard state record', dir, validHardState);
    s.snap = await readRequired(meta, META.snapshot, 'snapshot record', dir, validSnapshot);
    s.logStart = await readRequired(meta, META.logStart, 'log start record', dir, validLogStart);

    const legacy = format.version === LEGACY_FORMAT_VERSION;
    if (legacy) {
      s.log = await readLegacyLog(dir, logDb, s.logStart);
    } else {
      await s.readRuns(logDb);
    }
    let prevTerm = s.logStart.term;
    for (const entry of s.log) {
      if (entry.term < prevTerm) {
        throw new StorageOpenError(
          dir,
          `log entry ${entry.index} has term ${entry.term}, lower than the previous term ${prevTerm}`,
        );
      }
      prevTerm = entry.term;
    }
    const last = s.lastIndex();
    if (s.snap.metadata.index < s.logStart.index) {
      throw new StorageOpenError(
        dir,
        `log is compacted to ${s.logStart.index} but the snapshot is only at ${s.snap.metadata.index}`,
      );
    }
    if (s.snap.metadata.index > last) {
      throw new StorageOpenError(
        dir,
        `snapshot at ${s.snap.metadata.index} is beyond the last log index ${last}`,
      );
    }
    if (s.hard.commit > last) {
      throw new StorageOpenError(
        dir,
        `committed index ${s.hard.commit} is beyond the last log entry ${last}: committed entries are missing`,
      );
    }
    // Only a store that passed every check above is rewritten.
    if (legacy) await s.migrateLegacyLog();
    return s;
  }

  /** Rebuilds the log from the run records, in key order (each run replaces the tail from its first index). */
  private async readRuns(logDb: Sub): Promise<void> {
    const { dir, logStart } = this;
    const log: Entry[] = [];
    for await (const [key, value] of logDb.iterator() as AsyncIterable<[Uint8Array, Uint8Array]>) {
      const start = decodeIndexKey(key);
      const run = decodeRun(value, `log record ${start}`);
      const end = start + run.length - 1;
      const next = logStart.index + log.length + 1;
      if (end <= logStart.index) {
        // Compaction deletes the runs it covers whole in the batch that moves
        // logstart, so one left below it means the database was altered.
        throw new StorageOpenError(
          dir,
          `log record ${start} (entries ${start}..${end}) lies below the compaction point ${logStart.index}`,
        );
      }
      if (start > next) {
        throw new StorageOpenError(dir, `log entries ${next}..${start - 1} are missing (the log has a gap)`);
      }
      let skip = 0;
      if (start <= logStart.index) {
        // Partly compacted: only the first run can reach below the compaction point.
        if (log.length > 0) {
          throw new StorageOpenError(
            dir,
            `log record ${start} overlaps an earlier one below the compaction point`,
          );
        }
        skip = logStart.index - start + 1;
        const term = run[skip - 1]!.term;
        if (term !== logStart.term) {
          throw new StorageOpenError(
            dir,
            `log record ${start} gives entry ${logStart.index} term ${term}, but the compaction point records term ${logStart.term}`,
          );
        }
      } else {
        log.length = start - logStart.index - 1;
      }
      for (let k = skip; k < run.length; k++) {
        const { term, type, data } = run[k]!;
        if (type !== EntryType.Normal && type !== EntryType.ConfChange) {
          throw new StorageOpenError(dir, `log entry ${start + k} has unknown type ${type}`);
        }
        log.push({ term, index: start + k, type, data });
      }
      this.runs.push(start);
    }
    this.log = log;
  }

  /**
   * Rewrites a version-1 log (one record per entry, already loaded into
   * this.log) as runs, with the new format record, in one synced batch: a
   * crash leaves the old layout, which the next open migrates again.
   */
  private async migrateLegacyLog(): Promise<void> {
    const ops: BatchOp[] = [];
    const runs = this.putRuns(ops, this.log);
    const starts = new Set(runs);
    for (const e of this.log) {
      if (!starts.has(e.index)) ops.push({ type: 'del', key: this.logKey(e.index) });
    }
    ops.push({
      type: 'put',
      key: this.metaKeys.format,
      value: encodeRecord({ magic: STORAGE_MAGIC, version: STORAGE_FORMAT_VERSION }),
    });
    await this.writeRaw(ops, { sync: true });
    this.runs = runs;
  }

  /** Adds the writes of `entries` as runs of at most RUN_MAX_BYTES (one unless they are large); returns the runs' first indexes. */
  private putRuns(ops: BatchOp[], entries: readonly Entry[]): number[] {
    const starts: number[] = [];
    const put = (from: number, to: number) => {
      const run = from === 0 && to === entries.length ? entries : entries.slice(from, to);
      ops.push({ type: 'put', key: this.logKey(entries[from]!.index), value: encodeRun(run) });
      starts.push(entries[from]!.index);
    };
    let from = 0;
    let bytes = 0;
    for (let to = 0; to < entries.length; to++) {
      const size = RUN_ENTRY_OVERHEAD + entries[to]!.data.length;
      if (to > from && bytes + size > RUN_MAX_BYTES) {
        put(from, to);
        from = to;
        bytes = 0;
      }
      bytes += size;
    }
    if (from < entries.length) put(from, entries.length);
    return starts;
  }

  // ---- RaftLogStorage (synchronous reads) ----

  initialState(): { hardState: HardState; confState: ConfState } {
    return { hardState: { ...this.hard }, confState: structuredClone(this.snap.metadata.confState) };
  }

  hardState(): HardState {
    return { ...this.hard };
  }

  entries(lo: number, hi: number, maxBytes: number): Entry[] {
    if (lo <= this.logStart.index) throw new CompactedError(lo, this.firstIndex());
    if (hi > this.lastIndex() + 1) throw new UnavailableError(hi - 1, this.lastIndex());
    if (lo > hi) throw new RangeError(`entries(${lo}, ${hi}): lo is above hi`);
    const offset = this.logStart.index + 1;
    return limitSize(this.log.slice(lo - offset, hi - offset), maxBytes);
  }

  term(i: number): number {
    if (i === this.logStart.index) return this.logStart.term;
    if (i < this.logStart.index) throw new CompactedError(i, this.firstIndex());
    if (i > this.lastIndex()) throw new UnavailableError(i, this.lastIndex());
    return this.log[i - this.logStart.index - 1]!.term;
  }

  firstIndex(): number {
    return this.logStart.index + 1;
  }

  lastIndex(): number {
    return this.logStart.index + this.log.length;
  }

  snapshot(): Snapshot {
    return this.snap;
  }

  // ---- writes (serialized; each one atomic batch) ----

  /**
   * Persists one Ready: the snapshot (replacing the whole log), then the
   * entries (a conflicting suffix is dropped), then the hard state, in one
   * LevelDB batch written with `sync` (default true). Resolves once durable;
   * the in-memory view changes only then.
   */
  save(update: StorageUpdate, options: { sync?: boolean } = {}): Promise<void> {
    return this.enqueue(() => {
      const ops: BatchOp[] = [];
      let logStart = this.logStart;
      let log = this.log;
      let snap = this.snap;
      let hard = this.hard;
      let runs = this.runs;
      /** With new entries: how many of `log`'s entries stay in front of them. */
      let keepEntries: number | undefined;
      /** With new entries: how many of `runs` stay, and the first indexes of the new runs. */
      let keepRuns = 0;
      let newRuns: number[] = [];
      if (update.snapshot) {
        const incoming = update.snapshot;
        if (incoming.metadata.index <= snap.metadata.index) {
          throw new Error(
            `snapshot at ${incoming.metadata.index} is not newer than the stored snapshot at ${snap.metadata.index}`,
          );
        }
        for (const start of runs) ops.push({ type: 'del', key: this.logKey(start) });
        runs = [];
        snap = incoming;
        logStart = { index: incoming.metadata.index, term: incoming.metadata.term };
        log = [];
        ops.push({ type: 'put', key: this.metaKeys.snapshot, value: encodeRecord(snap) });
        ops.push({ type: 'put', key: this.metaKeys.logStart, value: encodeRecord(logStart) });
      }
      let entries = update.entries ?? [];
      if (entries.length > 0) {
        // Entries at or below the compaction point are already in the snapshot.
        if (entries[0]!.index <= logStart.index) entries = entries.filter((e) => e.index > logStart.index);
      }
      if (entries.length > 0) {
        const first = entries[0]!.index;
        const last = logStart.index + log.length;
        if (first > last + 1) {
          throw new Error(`cannot append entries from ${first}: the log ends at ${last} (a gap would form)`);
        }
        for (let k = 1; k < entries.length; k++) {
          if (entries[k]!.index !== first + k)
            throw new Error(`entries to append are not contiguous at ${entries[k]!.index}`);
        }
        // Runs that start at or after `first` hold only entries this save
        // replaces or drops (a conflicting suffix); a run that starts before it
        // stays, its tail superseded by the new run (see the header).
        keepRuns = runs.length;
        while (keepRuns > 0 && runs[keepRuns - 1]! >= first) keepRuns--;
        for (let k = keepRuns; k < runs.length; k++) {
          if (runs[k] !== first) ops.push({ type: 'del', key: this.logKey(runs[k]!) });
        }
        newRuns = this.putRuns(ops, entries);
        keepEntries = first - logStart.index - 1;
      }
      if (update.hardState) {
        hard = { ...update.hardState };
        ops.push({ type: 'put', key: this.metaKeys.hardState, value: encodeRecord(hard) });
      }
      return {
        ops,
        sync: options.sync ?? true,
        entries: entries.length,
        commit: () => {
          // In place (entries() hands out copies): re-copying the whole live tail
          // on every Ready cost time proportional to the log's length.
          if (keepEntries !== undefined) {
            log.length = keepEntries;
            for (const e of entries) log.push(copyEntry(e));
            runs.length = keepRuns;
            for (const start of newRuns) runs.push(start);
          }
          this.runs = runs;
          this.logStart = logStart;
          this.log = log;
          this.snap = snap;
          this.hard = hard;
        },
      };
    });
  }

  /**
   * Records a snapshot of the application state at `index` (already applied
   * locally); the log is kept until compact(). `confState` is the
   * configuration in force at `index`.
   */
  createSnapshot(index: number, confState: ConfState, data: Uint8Array): Promise<Snapshot> {
    let created: Snapshot | undefined;
    return this.enqueue(() => {
      if (index <= this.snap.metadata.index) {
        throw new Error(
          `snapshot at ${index} is not newer than the stored snapshot at ${this.snap.metadata.index}`,
        );
      }
      if (index > this.lastIndex()) throw new UnavailableError(index, this.lastIndex());
      const snap: Snapshot = {
        metadata: { index, term: this.term(index), confState: structuredClone(confState) },
        data,
      };
      created = snap;
      const ops: BatchOp[] = [{ type: 'put', key: this.metaKeys.snapshot, value: encodeRecord(snap) }];
      // What is applied is committed. The node writes commit-index-only
      // changes lazily, so the stored commit index may lag: a restart must
      // never find a snapshot beyond it (the core would start with its
      // applied index above its commit index).
      let hard = this.hard;
      if (hard.commit < index) {
        hard = { ...hard, commit: index };
        ops.push({ type: 'put', key: this.metaKeys.hardState, value: encodeRecord(hard) });
      }
      return {
        ops,
        sync: true,
        entries: 0,
        commit: () => {
          this.snap = snap;
          this.hard = hard;
        },
      };
    }).then(() => created!);
  }

  /**
   * Removes log entries <= index. Only what a snapshot covers may go: index
   * must not pass the stored snapshot. Compacting to an older point is a no-op.
   */
  compact(index: number): Promise<void> {
    return this.enqueue(() => {
      if (index > this.snap.metadata.index) {
        throw new Error(`cannot compact to ${index}: the latest snapshot is at ${this.snap.metadata.index}`);
      }
      if (index <= this.logStart.index) return { ops: [], sync: false, entries: 0, commit: () => {} };
      const ops: BatchOp[] = [];
      // Runs whose live entries all lie at or below index go; the next may start below it.
      const runs = this.runs;
      const last = this.lastIndex();
      let drop = 0;
      while (drop < runs.length && (drop + 1 < runs.length ? runs[drop + 1]! - 1 : last) <= index) {
        ops.push({ type: 'del', key: this.logKey(runs[drop]!) });
        drop++;
      }
      const logStart = { index, term: this.term(index) };
      ops.push({ type: 'put', key: this.metaKeys.logStart, value: encodeRecord(logStart) });
      return {
        ops,
        sync: true,
        entries: 0,
        commit: () => {
          this.log = this.log.slice(index - this.logStart.index);
          this.runs = runs.slice(drop);
          this.logStart = logStart;
        },
      };
    });
  }

  /**
   * Writes the bootstrap state of a brand-new cluster member (the core's
   * bootstrapState: a snapshot at index 1 listing the initial voters).
   * Refused once the store holds any Raft state.
   */
  async bootstrap(voters: readonly NodeId[]): Promise<void> {
    if (this.lastIndex() !== 0 || this.snap.metadata.index !== 0 || this.hard.term !== 0) {
      throw new Error(
        `raft storage at ${this.dir} already holds state; bootstrap only applies to a new store`,
      );
    }
    const { snapshot, hardState } = bootstrapState(voters);
    await this.save({ snapshot, hardState });
  }

  /** Closes the database after pending writes finish. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.writeChain.catch(() => {});
    await this.db.close();
  }

  private enqueue(
    plan: () => { ops: BatchOp[]; sync: boolean; entries: number; commit: () => void },
  ): Promise<void> {
    const run = async () => {
      if (this.closed) throw new Error(`raft storage at ${this.dir} is closed`);
      const p = plan();
      if (p.ops.length > 0) {
        await this.writeRaw(p.ops, { sync: p.sync });
        this.stats.batches++;
        if (p.sync) this.stats.syncedBatches++;
        this.stats.entriesWritten += p.entries;
      }
      p.commit();
    };
    const result = this.writeChain.then(run);
    // A failed write must not wedge later ones; the caller sees the failure.
    this.writeChain = result.catch(() => {});
    return result;
  }
}

function copyEntry(e: Entry): Entry {
  return { term: e.term, index: e.index, type: e.type, data: e.data };
}

/** Reads a version-1 log: one record per entry at its index, contiguous from logStart.index + 1. */
async function readLegacyLog(dir: string, logDb: Sub, logStart: LogStart): Promise<Entry[]> {
  const log: Entry[] = [];
  let expected = logStart.index + 1;
  for await (const [key, value] of logDb.iterator() as AsyncIterable<[Uint8Array, Uint8Array]>) {
    const index = decodeIndexKey(key);
    if (index < expected) {
      throw new StorageOpenError(dir, `log entry ${index} is below the compaction point ${logStart.index}`);
    }
    if (index !== expected) {
      throw new StorageOpenError(
        dir,
        `log entries ${expected}..${index - 1} are missing (the log has a gap)`,
      );
    }
    const entry = validEntry(decodeRecord(value, `log entry ${index}`), index);
    if (!entry) throw new StorageOpenError(dir, `log entry ${index} is malformed`);
    log.push(entry);
    expected++;
  }
  return log;
}

/**
 * Decides whether `dir` is a new store (missing or empty) or must already be
 * a LevelDB database; anything else is refused before LevelDB gets to create
 * files in it.
 */
async function inspectDirectory(dir: string): Promise<boolean> {
  let info: Awaited<ReturnType<typeof stat>>;
  try {
    info = await stat(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      await mkdir(dir, { recursive: true });
      return true;
    }
    throw new StorageOpenError(dir, `cannot inspect it: ${(err as Error).message}`, { cause: err });
  }
  if (!info.isDirectory()) throw new StorageOpenError(dir, 'it is a file, not a directory');
  const names = await readdir(dir);
  if (names.length === 0) return true;
  if (!names.includes('CURRENT')) {
    throw new StorageOpenError(
      dir,
      `it is not empty (${names.slice(0, 3).join(', ')}${names.length > 3 ? ', ...' : ''}) and is not a LevelDB database (no CURRENT file); refusing to create a store over existing files`,
    );
  }
  try {
    await stat(join(dir, 'CURRENT'));
  } catch (err) {
    throw new StorageOpenError(dir, `cannot read its CURRENT file: ${(err as Error).message}`, {
      cause: err,
    });
  }
  return false;
}

async function readRequired<T>(
  meta: Sub,
  key: string,
  what: string,
  dir: string,
  validate: (value: unknown) => T | undefined,
): Promise<T> {
  const bytes = (await meta.get(key)) as Uint8Array | undefined;
  if (bytes === undefined) throw new StorageOpenError(dir, `the ${what} is missing`);
  const value = validate(decodeRecord(bytes, what));
  if (value === undefined) throw new StorageOpenError(dir, `the ${what} is malformed`);
  return value;
}

const isCount = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
const isIdList = (v: unknown): v is string[] => Array.isArray(v) && v.every((x) => typeof x === 'string');

function validIdentity(v: unknown): StorageIdentity | undefined {
  const r = v as StorageIdentity;
  return r && typeof r.nodeId === 'string' && r.nodeId !== '' && typeof r.clusterId === 'string'
    ? r
    : undefined;
}

function validHardState(v: unknown): HardState | undefined {
  const r = v as HardState;
  return r && isCount(r.term) && typeof r.vote === 'string' && isCount(r.commit)
    ? { term: r.term, vote: r.vote, commit: r.commit }
    : undefined;
}

function validLogStart(v: unknown): LogStart | undefined {
  const r = v as LogStart;
  return r && isCount(r.index) && isCount(r.term) ? { index: r.index, term: r.term } : undefined;
}

function validConfState(v: unknown): ConfState | undefined {
  const r = v as ConfState;
  return r &&
    isIdList(r.voters) &&
    isIdList(r.learners) &&
    isIdList(r.votersOutgoing) &&
    isIdList(r.learnersNext) &&
    typeof r.autoLeave === 'boolean'
    ? r
    : undefined;
}

function validSnapshot(v: unknown): Snapshot | undefined {
  const r = v as Snapshot;
  if (!r?.metadata || !(r.data instanceof Uint8Array)) return undefined;
  const confState = validConfState(r.metadata.confState);
  if (!confState || !isCount(r.metadata.index) || !isCount(r.metadata.term)) return undefined;
  return { metadata: { index: r.metadata.index, term: r.metadata.term, confState }, data: r.data };
}

function validEntry(v: unknown, index: number): Entry | undefined {
  const r = v as { term: unknown; type: unknown; data: unknown };
  if (!r || !isCount(r.term) || !(r.data instanceof Uint8Array)) return undefined;
  if (r.type !== EntryType.Normal && r.type !== EntryType.ConfChange) return undefined;
  return { term: r.term, index, type: r.type, data: r.data };
}
