// The Raft log as the core sees it: the durable part in RaftLogStorage plus
// the `unstable` tail (entries and possibly a snapshot) that has been decided
// but not yet handed to the caller to persist.
//
//   storage:  [firstIndex ........ storage.lastIndex]
//   unstable:                  [offset ............... lastIndex]
//   (unstable entries win where they overlap: they replace a conflicting suffix)
import { invariant } from './errors.js';
import { CompactedError, type Entry, type RaftLogStorage, type Snapshot, UnavailableError } from './types.js';

/** Bytes an entry counts for in size limits (payload plus a fixed header estimate). */
export function entrySizeBytes(e: Entry): number {
  return e.data.byteLength + 16;
}

/** entrySizeBytes summed over `ents`. */
export function entriesSizeBytes(ents: Entry[]): number {
  let n = 0;
  for (const e of ents) n += entrySizeBytes(e);
  return n;
}

/** Leading entries of `ents` within `maxBytes`, always at least one. */
export function limitSize(ents: Entry[], maxBytes: number): Entry[] {
  if (ents.length === 0) return ents;
  let size = entrySizeBytes(ents[0]!);
  let n = 1;
  for (; n < ents.length; n++) {
    size += entrySizeBytes(ents[n]!);
    if (size > maxBytes) break;
  }
  return n === ents.length ? ents : ents.slice(0, n);
}

class Unstable {
  snapshot: Snapshot | undefined;
  entries: Entry[] = [];
  /** Index of entries[0]. */
  offset: number;

  constructor(offset: number) {
    this.offset = offset;
  }

  maybeFirstIndex(): number | undefined {
    return this.snapshot ? this.snapshot.metadata.index + 1 : undefined;
  }

  maybeLastIndex(): number | undefined {
    if (this.entries.length > 0) return this.offset + this.entries.length - 1;
    return this.snapshot?.metadata.index;
  }

  maybeTerm(i: number): number | undefined {
    if (i < this.offset) {
      if (this.snapshot && this.snapshot.metadata.index === i) return this.snapshot.metadata.term;
      return undefined;
    }
    const last = this.maybeLastIndex();
    if (last === undefined || i > last) return undefined;
    return this.entries[i - this.offset]!.term;
  }

  stableTo(index: number, term: number): void {
    const t = this.maybeTerm(index);
    // Only if the persisted entry is still ours: a newer leader may have replaced it meanwhile.
    if (t === term && index >= this.offset) {
      this.entries = this.entries.slice(index + 1 - this.offset);
      this.offset = index + 1;
    }
  }

  stableSnapTo(index: number): void {
    if (this.snapshot && this.snapshot.metadata.index === index) this.snapshot = undefined;
  }

  restore(s: Snapshot): void {
    this.offset = s.metadata.index + 1;
    this.entries = [];
    this.snapshot = s;
  }

  truncateAndAppend(ents: Entry[]): void {
    const first = ents[0]!.index;
    if (first === this.offset + this.entries.length) {
      this.entries = this.entries.concat(ents);
    } else if (first <= this.offset) {
      // Replaces everything unstable (and some persisted entries: storage
      // truncates them when these are persisted).
      this.offset = first;
      this.entries = ents.slice();
    } else {
      this.entries = this.entries.slice(0, first - this.offset).concat(ents);
    }
  }

  slice(lo: number, hi: number): Entry[] {
    invariant(lo >= this.offset && hi <= this.offset + this.entries.length && lo <= hi, () => {
      return `unstable.slice[${lo},${hi}) out of bounds [${this.offset},${this.offset + this.entries.length})`;
    });
    return this.entries.slice(lo - this.offset, hi - this.offset);
  }
}

export class RaftLog {
  readonly unstable: Unstable;
  /** Highest index known to be committed. */
  committed: number;
  /** Highest index handed to the application to apply (and acknowledged by advance()). */
  applied: number;

  constructor(
    readonly storage: RaftLogStorage,
    /** Most bytes of committed entries handed out in one Ready. */
    readonly maxCommittedSizePerReadyBytes: number,
  ) {
    const first = storage.firstIndex();
    const last = storage.lastIndex();
    this.unstable = new Unstable(last + 1);
    this.committed = first - 1;
    this.applied = first - 1;
  }

  firstIndex(): number {
    return this.unstable.maybeFirstIndex() ?? this.storage.firstIndex();
  }

  lastIndex(): number {
    return this.unstable.maybeLastIndex() ?? this.storage.lastIndex();
  }

  /** Term of entry i, or undefined if i is compacted or beyond the log. */
  term(i: number): number | undefined {
    const dummy = this.firstIndex() - 1;
    if (i < dummy || i > this.lastIndex()) return undefined;
    const t = this.unstable.maybeTerm(i);
    if (t !== undefined) return t;
    try {
      return this.storage.term(i);
    } catch (err) {
      if (err instanceof CompactedError || err instanceof UnavailableError) return undefined;
      throw err;
    }
  }

  lastTerm(): number {
    const t = this.term(this.lastIndex());
    invariant(t !== undefined, `term of the last entry ${this.lastIndex()} is unavailable`);
    return t;
  }

  matchTerm(i: number, term: number): boolean {
    return this.term(i) === term;
  }

  /** A candidate whose last entry is (lastIndex, lastTerm) is at least as up to date as us. */
  isUpToDate(lastIndex: number, lastTerm: number): boolean {
    const ourTerm = this.lastTerm();
    return lastTerm > ourTerm || (lastTerm === ourTerm && lastIndex >= this.lastIndex());
  }

  /**
   * Follower side of AppendEntries. Returns the index of the last new entry if
   * the log matched at (index, logTerm), else undefined.
   */
  maybeAppend(
    index: number,
    logTerm: number,
    leaderCommit: number,
    ents: Entry[],
    allowTruncateCommitted = false,
  ): number | undefined {
    if (!this.matchTerm(index, logTerm)) return undefined;
    const lastNew = index + ents.length;
    const conflict = this.findConflict(ents);
    if (conflict !== 0) {
      if (!allowTruncateCommitted) {
        invariant(conflict > this.committed, () => {
          return `entry ${conflict} conflicts with a committed entry (committed=${this.committed})`;
        });
      }
      this.append(ents.slice(conflict - (index + 1)), allowTruncateCommitted);
    }
    this.commitTo(Math.min(leaderCommit, lastNew));
    return lastNew;
  }

  append(ents: Entry[], allowTruncateCommitted = false): number {
    if (ents.length === 0) return this.lastIndex();
    const after = ents[0]!.index - 1;
    if (!allowTruncateCommitted) {
      invariant(
        after >= this.committed,
        `append after ${after} would truncate committed entries (committed=${this.committed})`,
      );
    } else if (after < this.committed) {
      this.committed = after; // the deliberate bug: forget that they were committed
    }
    this.unstable.truncateAndAppend(ents);
    return this.lastIndex();
  }

  /** Index of the first entry of `ents` that is not in our log with the same term; 0 if none. */
  findConflict(ents: Entry[]): number {
    for (const e of ents) if (!this.matchTerm(e.index, e.term)) return e.index;
    return 0;
  }

  /**
   * The largest index <= `index` whose term is <= `term`, with that term: the
   * last place our log could match a leader whose entry at `index` has `term`.
   * Lets a rejection skip a whole term of mismatching entries at once.
   */
  findConflictByTerm(index: number, term: number): { index: number; term: number } {
    for (let i = index; i > 0; i--) {
      const t = this.term(i);
      if (t === undefined) return { index: i, term: 0 }; // compacted: cannot look further
      if (t <= term) return { index: i, term: t };
    }
    return { index: 0, term: 0 };
  }

  commitTo(toCommit: number): void {
    if (toCommit <= this.committed) return; // never decreases
    invariant(
      toCommit <= this.lastIndex(),
      () => `commit ${toCommit} beyond the last index ${this.lastIndex()}`,
    );
    this.committed = toCommit;
  }

  /** Commits maxIndex only if its entry is from `term` (never count replicas of older terms). */
  maybeCommit(maxIndex: number, term: number, commitAnyTerm = false): boolean {
    if (maxIndex > this.committed && (commitAnyTerm || this.term(maxIndex) === term)) {
      this.commitTo(maxIndex);
      return true;
    }
    return false;
  }

  appliedTo(i: number): void {
    if (i === 0) return;
    invariant(i <= this.committed && i >= this.applied, () => {
      return `applied ${i} out of range [applied=${this.applied}, committed=${this.committed}]`;
    });
    this.applied = i;
  }

  stableTo(index: number, term: number): void {
    this.unstable.stableTo(index, term);
  }

  stableSnapTo(index: number): void {
    this.unstable.stableSnapTo(index);
  }

  unstableEntries(): Entry[] {
    return this.unstable.entries;
  }

  hasPendingSnapshot(): boolean {
    return this.unstable.snapshot !== undefined;
  }

  /**
   * Highest index both committed and persisted here (handed out in a Ready
   * that was advanced); 0 while a snapshot is pending. The application may
   * apply up to it while a later Ready is still being persisted: such
   * entries are final, and the storage already holds them exactly (below the
   * unstable offset nothing differs), so a snapshot taken at them is valid.
   */
  committedStableIndex(): number {
    if (this.hasPendingSnapshot()) return 0;
    return Math.min(this.committed, this.unstable.offset - 1);
  }

  /** Committed entries not yet handed out, within maxCommittedSizePerReadyBytes. */
  nextCommittedEntries(): Entry[] {
    if (this.hasPendingSnapshot()) return []; // the snapshot is applied first
    const lo = Math.max(this.applied + 1, this.firstIndex());
    if (this.committed + 1 <= lo) return [];
    return this.slice(lo, this.committed + 1, this.maxCommittedSizePerReadyBytes);
  }

  hasNextCommittedEntries(): boolean {
    if (this.hasPendingSnapshot()) return false;
    return this.committed + 1 > Math.max(this.applied + 1, this.firstIndex());
  }

  snapshot(): Snapshot {
    return this.unstable.snapshot ?? this.storage.snapshot();
  }

  /** Entries from i to the end, at most maxBytes (at least one). */
  entriesFrom(i: number, maxBytes: number): Entry[] {
    if (i > this.lastIndex()) return [];
    return this.slice(i, this.lastIndex() + 1, maxBytes);
  }

  /** Entries [lo, hi); throws CompactedError if lo was compacted. */
  slice(lo: number, hi: number, maxBytes: number): Entry[] {
    invariant(lo <= hi, `slice lo ${lo} > hi ${hi}`);
    const first = this.firstIndex();
    if (lo < first) throw new CompactedError(lo, first);
    invariant(hi <= this.lastIndex() + 1, `slice [${lo},${hi}) beyond last index ${this.lastIndex()}`);
    if (lo === hi) return [];
    let ents: Entry[] = [];
    if (lo < this.unstable.offset) {
      const stored = this.storage.entries(lo, Math.min(hi, this.unstable.offset), maxBytes);
      const wanted = Math.min(hi, this.unstable.offset) - lo;
      if (stored.length < wanted) return stored; // the size limit cut it short
      ents = stored;
    }
    if (hi > this.unstable.offset) {
      const u = this.unstable.slice(Math.max(lo, this.unstable.offset), hi);
      ents = ents.length > 0 ? ents.concat(u) : u;
    }
    return limitSize(ents, maxBytes);
  }

  restore(s: Snapshot): void {
    this.committed = s.metadata.index;
    this.unstable.restore(s);
  }
}
