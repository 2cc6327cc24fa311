import type { Entry, RaftLogStorage } from '../../src/raft/types.js';

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
