// RaftLogStorage kept in memory: for tests and the simulator (where it plays
// the role of the disk: whatever was written here survives a simulated crash).
// The LevelDB storage implements the same methods with the same semantics.
import { invariant } from './errors.js';
import { limitSize } from './log.js';
import {
  CompactedError,
  type ConfState,
  type Entry,
  EntryType,
  emptyConfState,
  type HardState,
  NONE,
  type RaftLogStorage,
  type Snapshot,
  UnavailableError,
} from './types.js';

/** A snapshot older than (or equal to) the one held was offered. */
export class SnapshotOutOfDateError extends Error {
  constructor(offered: number, held: number) {
    super(`snapshot at index ${offered} is not newer than the held snapshot at ${held}`);
    this.name = 'SnapshotOutOfDateError';
  }
}

/**
 * The state every member of a brand-new cluster starts from: a snapshot at
 * index 1, term 1 whose ConfState lists the initial voters, and a HardState at
 * term 1 with that index committed. Writing this to storage (on every initial
 * member, identically) is how a cluster is bootstrapped; members added later
 * start from empty storage and receive a snapshot from the leader. The
 * snapshot's `data` is empty: the application's empty initial state.
 */
export function bootstrapState(voters: readonly string[]): { snapshot: Snapshot; hardState: HardState } {
  invariant(voters.length > 0, 'a cluster needs at least one initial voter');
  invariant(new Set(voters).size === voters.length, 'initial voters must be distinct');
  const confState: ConfState = { ...emptyConfState(), voters: [...voters].sort() };
  return {
    snapshot: { metadata: { index: 1, term: 1, confState }, data: new Uint8Array(0) },
    hardState: { term: 1, vote: NONE, commit: 1 },
  };
}

export class MemoryStorage implements RaftLogStorage {
  private hardState: HardState = { term: 0, vote: NONE, commit: 0 };
  private snap: Snapshot = {
    metadata: { index: 0, term: 0, confState: emptyConfState() },
    data: new Uint8Array(0),
  };
  /** ents[0] is a dummy standing for the snapshot's last entry (index, term). */
  private ents: Entry[] = [{ index: 0, term: 0, type: EntryType.Normal, data: new Uint8Array(0) }];

  /** Writes the bootstrap state of a new cluster (see bootstrapState). Only on empty storage. */
  bootstrap(voters: readonly string[]): void {
    invariant(this.lastIndex() === 0 && this.hardState.term === 0, 'bootstrap needs empty storage');
    const { snapshot, hardState } = bootstrapState(voters);
    this.applySnapshot(snapshot);
    this.setHardState(hardState);
  }

  initialState(): { hardState: HardState; confState: ConfState } {
    return { hardState: { ...this.hardState }, confState: this.snap.metadata.confState };
  }

  setHardState(hs: HardState): void {
    this.hardState = { ...hs };
  }

  getHardState(): HardState {
    return { ...this.hardState };
  }

  private offset(): number {
    return this.ents[0]!.index;
  }

  entries(lo: number, hi: number, maxBytes: number): Entry[] {
    const offset = this.offset();
    if (lo <= offset) throw new CompactedError(lo, offset + 1);
    if (hi > this.lastIndex() + 1) throw new UnavailableError(hi - 1, this.lastIndex());
    return limitSize(this.ents.slice(lo - offset, hi - offset), maxBytes);
  }

  term(i: number): number {
    const offset = this.offset();
    if (i < offset) throw new CompactedError(i, offset + 1);
    if (i - offset >= this.ents.length) throw new UnavailableError(i, this.lastIndex());
    return this.ents[i - offset]!.term;
  }

  lastIndex(): number {
    return this.offset() + this.ents.length - 1;
  }

  firstIndex(): number {
    return this.offset() + 1;
  }

  snapshot(): Snapshot {
    return this.snap;
  }

  /** Replaces the whole log with a snapshot (received from a leader). */
  applySnapshot(s: Snapshot): void {
    if (s.metadata.index <= this.snap.metadata.index) {
      throw new SnapshotOutOfDateError(s.metadata.index, this.snap.metadata.index);
    }
    this.snap = s;
    this.ents = [
      { index: s.metadata.index, term: s.metadata.term, type: EntryType.Normal, data: new Uint8Array(0) },
    ];
  }

  /**
   * Records the application's state at `index` (which it has applied) as the
   * snapshot a lagging follower will be sent. Does not compact; call compact().
   */
  createSnapshot(index: number, confState: ConfState, data: Uint8Array): Snapshot {
    if (index <= this.snap.metadata.index) throw new SnapshotOutOfDateError(index, this.snap.metadata.index);
    invariant(index <= this.lastIndex(), `snapshot index ${index} beyond the last index ${this.lastIndex()}`);
    this.snap = { metadata: { index, term: this.term(index), confState }, data };
    // What is applied is committed; the stored commit index may lag it (entries
    // applied while the Ready that commits them is saved). Raise it, as
    // LevelRaftStorage does: a restart must not find a snapshot above it.
    if (this.hardState.commit < index) this.hardState = { ...this.hardState, commit: index };
    return this.snap;
  }

  /** Discards entries up to and including `compactIndex` (which must be covered by the snapshot). */
  compact(compactIndex: number): void {
    const offset = this.offset();
    if (compactIndex <= offset) return; // already compacted
    invariant(
      compactIndex <= this.lastIndex(),
      `compact ${compactIndex} beyond the last index ${this.lastIndex()}`,
    );
    invariant(
      compactIndex <= this.snap.metadata.index,
      `compact ${compactIndex} beyond the snapshot ${this.snap.metadata.index}`,
    );
    const dummy = this.ents[compactIndex - offset]!;
    const head: Entry = {
      index: dummy.index,
      term: dummy.term,
      type: EntryType.Normal,
      data: new Uint8Array(0),
    };
    this.ents = [head].concat(this.ents.slice(compactIndex - offset + 1));
  }

  /** Persists entries from a Ready: a conflicting suffix is replaced. */
  append(entries: Entry[]): void {
    if (entries.length === 0) return;
    const first = this.firstIndex();
    const lastNew = entries[entries.length - 1]!.index;
    if (lastNew < first) return; // all already compacted
    let ents = entries;
    if (first > ents[0]!.index) ents = ents.slice(first - ents[0]!.index);
    const start = ents[0]!.index;
    invariant(
      start <= this.lastIndex() + 1,
      `append at ${start} leaves a gap after the last index ${this.lastIndex()}`,
    );
    this.ents = this.ents.slice(0, start - this.offset()).concat(ents);
  }
}
