import assert from 'node:assert/strict';
import {
  applyConfChangeTo,
  ConfChangeError,
  decodeConfChange,
  encodeConfChange,
  restoreMembership,
} from '../../src/raft/confchange.js';
import { RaftInvariantError } from '../../src/raft/errors.js';
import { MemoryStorage, SnapshotOutOfDateError } from '../../src/raft/memory-storage.js';
import { Inflights, Progress, ProgressState, ProgressTracker } from '../../src/raft/progress.js';
import {
  jointCommittedIndex,
  jointVoteResult,
  majorityCommittedIndex,
  VoteResult,
} from '../../src/raft/quorum.js';
import { SeededRandom } from '../../src/raft/rand.js';
import {
  CompactedError,
  ConfChangeTransition,
  ConfChangeType,
  EntryType,
  emptyConfState,
  UnavailableError,
} from '../../src/raft/types.js';

describe('raft: quorum', () => {
  it('computes the index a majority has', () => {
    const m = new Map([
      ['a', 5],
      ['b', 3],
      ['c', 9],
    ]);
    assert.equal(
      majorityCommittedIndex(new Set(['a', 'b', 'c']), (id) => m.get(id) ?? 0),
      5,
    );
    assert.equal(
      majorityCommittedIndex(new Set(['a', 'b', 'c', 'd']), (id) => m.get(id) ?? 0),
      3,
    );
    // joint: the smaller of the two halves' indexes
    assert.equal(
      jointCommittedIndex(new Set(['a', 'c']), new Set(['b', 'c']), (id) => m.get(id) ?? 0),
      3,
    );
  });

  it('needs a majority of both halves of a joint config to win a vote', () => {
    const votes = new Map([
      ['a', true],
      ['b', true],
    ]);
    assert.equal(jointVoteResult(new Set(['a', 'b', 'c']), new Set(), votes), VoteResult.Won);
    assert.equal(
      jointVoteResult(new Set(['a', 'b', 'c']), new Set(['c', 'd', 'e']), votes),
      VoteResult.Pending,
    );
    votes.set('d', false).set('e', false);
    assert.equal(jointVoteResult(new Set(['a', 'b', 'c']), new Set(['c', 'd', 'e']), votes), VoteResult.Lost);
  });
});

describe('raft: progress and flow control', () => {
  it('bounds appends in flight by count and by bytes', () => {
    const byCount = new Inflights(2, 0);
    byCount.add(5, 10);
    byCount.add(7, 10);
    assert.ok(byCount.full());
    byCount.freeLE(5);
    assert.ok(!byCount.full());
    const byBytes = new Inflights(100, 25);
    byBytes.add(1, 20);
    assert.ok(!byBytes.full());
    byBytes.add(2, 10);
    assert.ok(byBytes.full());
    assert.throws(() => byBytes.add(3, 1), RaftInvariantError);
  });

  it('probes one append at a time and walks back using the hint', () => {
    const pr = new Progress(11, false, 4, 0);
    pr.sentEntries(10, 0);
    assert.ok(pr.isPaused());
    assert.equal(pr.maybeDecrTo(9, 3), false, 'stale rejection ignored');
    assert.ok(pr.maybeDecrTo(10, 3));
    assert.equal(pr.next, 4);
    assert.ok(!pr.isPaused());
    assert.ok(pr.maybeUpdate(6));
    pr.becomeReplicate();
    assert.equal(pr.next, 7);
    pr.sentEntries(9, 100);
    assert.equal(pr.next, 10);
    assert.equal(pr.state, ProgressState.Replicate);
  });

  it('snapshot state pauses until the snapshot is acknowledged', () => {
    const pr = new Progress(3, false, 4, 0);
    pr.becomeSnapshot(50);
    assert.ok(pr.isPaused());
    pr.becomeProbe();
    assert.equal(pr.next, 51);
  });
});

describe('raft: conf change', () => {
  const tracker = new ProgressTracker(4, 0);
  const newPr = (next: number, learner: boolean) => tracker.newProgress(next, learner);
  const base = () => restoreMembership({ ...emptyConfState(), voters: ['a', 'b', 'c'] }, 10, newPr);

  it('encodes and decodes, and names what is wrong with bad data', () => {
    const cc = {
      transition: ConfChangeTransition.JointExplicit,
      changes: [{ type: ConfChangeType.AddLearner, nodeId: 'x' }],
      context: new Uint8Array([1, 2]),
    };
    assert.deepEqual(decodeConfChange(encodeConfChange(cc)), cc);
    assert.throws(() => decodeConfChange(new TextEncoder().encode('{"v":2}')), /version/);
    assert.throws(() => decodeConfChange(new Uint8Array([0xff])), ConfChangeError);
  });

  it('demotes a voter of the outgoing config only when the joint config is left', () => {
    const joint = applyConfChangeTo(
      base(),
      {
        transition: ConfChangeTransition.JointImplicit,
        changes: [{ type: ConfChangeType.AddLearner, nodeId: 'c' }],
        context: new Uint8Array(0),
      },
      10,
      newPr,
    );
    assert.deepEqual([...joint.config.learnersNext], ['c']);
    assert.ok(joint.config.outgoing.has('c'));
    const left = applyConfChangeTo(
      joint,
      { transition: ConfChangeTransition.Auto, changes: [], context: new Uint8Array(0) },
      10,
      newPr,
    );
    assert.deepEqual([...left.config.learners], ['c']);
    assert.ok(left.progress.get('c')!.isLearner);
    // the input configuration was not touched
    assert.ok(!joint.progress.get('c')!.isLearner);
  });

  it('refuses to change a joint config before leaving it', () => {
    const joint = applyConfChangeTo(
      base(),
      {
        transition: ConfChangeTransition.JointImplicit,
        changes: [{ type: ConfChangeType.AddVoter, nodeId: 'd' }],
        context: new Uint8Array(0),
      },
      10,
      newPr,
    );
    assert.throws(
      () =>
        applyConfChangeTo(
          joint,
          {
            transition: ConfChangeTransition.Auto,
            changes: [{ type: ConfChangeType.RemoveNode, nodeId: 'a' }],
            context: new Uint8Array(0),
          },
          10,
          newPr,
        ),
      /joint/,
    );
  });
});

describe('raft: MemoryStorage', () => {
  it('appends, replaces a conflicting suffix, snapshots and compacts', () => {
    const s = new MemoryStorage();
    const e = (index: number, term: number) => ({
      index,
      term,
      type: EntryType.Normal,
      data: new Uint8Array(0),
    });
    s.append([e(1, 1), e(2, 1), e(3, 1)]);
    s.append([e(2, 2)]);
    assert.equal(s.lastIndex(), 2);
    assert.equal(s.term(2), 2);
    s.append([e(3, 2), e(4, 2)]);
    s.createSnapshot(3, { ...emptyConfState(), voters: ['a'] }, new Uint8Array([7]));
    s.compact(3);
    assert.equal(s.firstIndex(), 4);
    assert.equal(s.term(3), 2);
    assert.throws(() => s.entries(3, 5, 1000), CompactedError);
    assert.throws(() => s.term(9), UnavailableError);
    assert.throws(() => s.applySnapshot(s.snapshot()), SnapshotOutOfDateError);
    assert.throws(() => s.append([e(9, 2)]), RaftInvariantError);
  });
});

describe('raft: seeded random', () => {
  it('is reproducible and covers the range', () => {
    const a = new SeededRandom(7);
    const b = new SeededRandom(7);
    const seen = new Set<number>();
    for (let i = 0; i < 200; i++) {
      const x = a.intn(10);
      assert.equal(x, b.intn(10));
      seen.add(x);
    }
    assert.equal(seen.size, 10);
    assert.notEqual(new SeededRandom(8).nextUint32(), new SeededRandom(7).nextUint32());
  });
});
