import type { Entry, RaftLogStorage } from '../../src/raft/types.js';
import type { LevelRaftStorage } from '../../src/storage/level-storage.js';

export interface WriterState {
  seq: number;
  first: number;
  last: number;
  term: number;
  commit: number;
  snapshotIndex: number;
  /** FNV-1a over "index:term:data" of every entry in the log. */
  digest: number;
}

/** Digest of the stored log from `first`, optionally with `appended` applied on top (conflicts replace). */
export function logDigest(
  storage: RaftLogStorage,
  appended: Entry[] = [],
  first = storage.firstIndex(),
): number {
  const cut = appended.length > 0 ? appended[0]!.index : storage.lastIndex() + 1;
  const entries = [...storage.entries(first, cut, Number.POSITIVE_INFINITY), ...appended];
  let hash = 0x811c9dc5;
  const mix = (text: string) => {
    for (let i = 0; i < text.length; i++) hash = Math.imul(hash ^ text.charCodeAt(i), 0x01000193) >>> 0;
  };
  for (const e of entries) {
    mix(`${e.index}:${e.term}:`);
    mix(new TextDecoder().decode(e.data));
  }
  return hash;
}

/** What the storage holds now, as the writer reports it and the parent compares it after reopening. */
export function writerState(storage: LevelRaftStorage, seq: number): WriterState {
  const hs = storage.hardState();
  return {
    seq,
    first: storage.firstIndex(),
    last: storage.lastIndex(),
    term: hs.term,
    commit: hs.commit,
    snapshotIndex: storage.snapshot().metadata.index,
    digest: logDigest(storage),
  };
}
