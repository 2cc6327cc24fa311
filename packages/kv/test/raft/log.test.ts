import assert from 'node:assert/strict';
import { RaftInvariantError } from '../../src/raft/errors.js';
import { RaftLog } from '../../src/raft/log.js';
import { MemoryStorage } from '../../src/raft/memory-storage.js';
import { type Entry, EntryType } from '../../src/raft/types.js';

const ent = (index: number, term: number): Entry => ({
  index,
  term,
  type: EntryType.Normal,
  data: new Uint8Array(0),
});

function logWithTerms(terms: number[]): RaftLog {
  const s = new MemoryStorage();
  s.append(terms.map((t, i) => ent(i + 1, t)));
  return new RaftLog(s, 1 << 20);
}

describe('raft: log', () => {
  it('findConflictByTerm skips every entry of a newer term', () => {
    // index: 1 2 3 4 5 6 7
    // term:  1 1 2 2 4 4 4
    const log = logWithTerms([1, 1, 2, 2, 4, 4, 4]);
    assert.deepEqual(log.findConflictByTerm(7, 3), { index: 4, term: 2 });
    assert.deepEqual(log.findConflictByTerm(7, 4), { index: 7, term: 4 });
    assert.deepEqual(log.findConflictByTerm(7, 1), { index: 2, term: 1 });
    assert.deepEqual(log.findConflictByTerm(7, 0), { index: 0, term: 0 });
  });

  it('maybeAppend truncates a conflicting uncommitted suffix but never a committed entry', () => {
    const log = logWithTerms([1, 1, 1]);
    assert.equal(log.maybeAppend(1, 1, 1, [ent(2, 2), ent(3, 2)]), 3);
    assert.equal(log.term(3), 2);
    assert.equal(log.committed, 1);
    log.commitTo(3);
    assert.throws(() => log.maybeAppend(1, 1, 3, [ent(2, 3)]), RaftInvariantError);
  });

  it('rejects an append whose previous entry does not match', () => {
    const log = logWithTerms([1, 2]);
    assert.equal(log.maybeAppend(2, 1, 0, [ent(3, 3)]), undefined);
    assert.equal(log.lastIndex(), 2);
  });

  it('commits only entries of the given term through maybeCommit', () => {
    const log = logWithTerms([1, 2, 3]);
    assert.equal(log.maybeCommit(2, 3), false);
    assert.equal(log.maybeCommit(3, 3), true);
    assert.equal(log.committed, 3);
  });

  it('slices across storage and the unstable tail, honouring the size limit', () => {
    const log = logWithTerms([1, 1]);
    log.append([ent(3, 2), ent(4, 2)]);
    assert.deepEqual(
      log.slice(1, 5, 1 << 20).map((e) => e.index),
      [1, 2, 3, 4],
    );
    assert.deepEqual(
      log.slice(1, 5, 1).map((e) => e.index),
      [1],
    );
  });
});
