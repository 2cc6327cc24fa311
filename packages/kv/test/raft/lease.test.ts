import assert from 'node:assert/strict';
import { RaftConfigError } from '../../src/raft/errors.js';
import { leaseDurationMs, suspendAwareClock } from '../../src/raft/lease.js';
import type { TestingBugs } from '../../src/raft/raft.js';
import { emptyMessage, MessageType, Role } from '../../src/raft/types.js';
import { Harness } from './harness.js';

const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array) => new TextDecoder().decode(b);

const electionTimeoutTicks = 10;
const tickIntervalMs = 10;
const maxClockDriftRatio = 0.1;
const durationMs = leaseDurationMs(electionTimeoutTicks, tickIntervalMs, maxClockDriftRatio);

/** A 3-node cluster with leader leases on one shared, hand-driven clock; n1 leads and holds a lease. */
function leaseCluster(
  testingBugs: TestingBugs = {},
  clock = { nowMs: 0 },
  leaseClockMs = () => clock.nowMs,
): { h: Harness; clock: { nowMs: number } } {
  const h = new Harness(['n1', 'n2', 'n3'], {
    electionTimeoutTicks,
    leaseReads: true,
    leaseClockMs,
    tickIntervalMs,
    maxClockDriftRatio,
    testingBugs,
  });
  // Freshly started nodes keep their promise for an election timeout; pretend that passed.
  for (const n of h.nodes.values()) n.raw.core.ticksSinceLeaderContact = electionTimeoutTicks;
  h.elect('n1');
  h.tick('n1'); // a heartbeat round, acknowledged by both followers
  h.stabilize();
  return { h, clock };
}

/** A vote request whose log is far ahead of anyone's: granted on the log check alone. */
function voteWithLongerLog(from: string, to: string, term: number) {
  const vote = emptyMessage(MessageType.Vote, from, to, term);
  vote.index = 100;
  vote.logTerm = 100;
  return vote;
}

function readsAt(h: Harness, id: string): string[] {
  return h.node(id).readStates.map((r) => dec(r.requestCtx));
}

describe('raft: leader lease reads', () => {
  it('lasts (E-1) ticks shortened by the drift bound', () => {
    assert.equal(durationMs, (9 * 10) / 1.1);
  });

  it('answers at once from the lease, with no heartbeat round, at the commit index', () => {
    const { h, clock } = leaseCluster();
    h.propose('n1', 'x');
    h.stabilize();
    clock.nowMs = durationMs - 1;
    h.node('n1').raw.readIndex(enc('r1'));
    h.process('n1');
    assert.deepEqual(readsAt(h, 'n1'), ['r1']);
    assert.equal(h.node('n1').readStates[0]!.index, h.node('n1').raw.status().commit);
    assert.equal(h.queue.filter((m) => m.type === MessageType.Heartbeat).length, 0);
    assert.deepEqual(h.node('n1').raw.core.readsServed, { lease: 1, quorumRound: 0 });
  });

  it('serves a follower forwarding its read from the lease too', () => {
    const { h } = leaseCluster();
    h.node('n3').raw.readIndex(enc('r2'));
    h.stabilize();
    assert.deepEqual(readsAt(h, 'n3'), ['r2']);
    assert.equal(h.node('n1').raw.core.readsServed.lease, 1);
  });

  it('falls back to a ReadIndex round once the lease ran out, and the round renews it', () => {
    const { h, clock } = leaseCluster();
    clock.nowMs = durationMs;
    h.node('n1').raw.readIndex(enc('r3'));
    h.process('n1');
    assert.deepEqual(readsAt(h, 'n1'), [], 'no answer before a quorum confirmed leadership');
    h.stabilize();
    assert.deepEqual(readsAt(h, 'n1'), ['r3']);
    assert.deepEqual(h.node('n1').raw.core.readsServed, { lease: 0, quorumRound: 1 });
    // That round's heartbeat was made at durationMs: a new lease from there.
    clock.nowMs = 2 * durationMs - 1;
    h.node('n1').raw.readIndex(enc('r4'));
    h.process('n1');
    assert.deepEqual(readsAt(h, 'n1'), ['r3', 'r4']);
  });

  it('is not held by a leader cut off from its quorum once the lease runs out', () => {
    const { h, clock } = leaseCluster();
    h.isolate('n1');
    for (let i = 0; i < 3; i++) {
      h.tick('n1');
      h.stabilize();
    }
    clock.nowMs = durationMs;
    h.node('n1').raw.readIndex(enc('r5'));
    h.stabilize();
    assert.deepEqual(readsAt(h, 'n1'), []);
  });

  it('is not used before the leader committed an entry of its term', () => {
    const clock = { nowMs: 0 };
    const h = new Harness(['n1', 'n2', 'n3'], {
      electionTimeoutTicks,
      leaseReads: true,
      leaseClockMs: () => clock.nowMs,
      tickIntervalMs,
    });
    for (const n of h.nodes.values()) n.raw.core.ticksSinceLeaderContact = electionTimeoutTicks;
    h.node('n1').raw.campaign();
    // Votes go through; the new leader's appends (its empty entry) are lost.
    for (let i = 0; i < 10; i++) {
      h.processAll();
      h.deliver((m) => m.type !== MessageType.App);
    }
    assert.equal(h.node('n1').raw.status().role, Role.Leader);
    h.tick('n1'); // a heartbeat round, acknowledged
    for (let i = 0; i < 5; i++) {
      h.processAll();
      h.deliver((m) => m.type !== MessageType.App);
    }
    h.node('n1').raw.readIndex(enc('r6'));
    h.processAll();
    assert.deepEqual(readsAt(h, 'n1'), [], 'answered before its empty entry committed');
    h.stabilize(); // the entry commits: the read goes on
    assert.deepEqual(readsAt(h, 'n1'), ['r6']);
  });

  it('is dropped when the leader sends TimeoutNow, for the rest of its term', () => {
    const { h } = leaseCluster();
    h.node('n1').raw.transferLeadership('n2');
    h.process('n1');
    assert.ok(h.queue.some((m) => m.type === MessageType.TimeoutNow));
    h.queue = []; // the transfer goes nowhere: n1 stays leader of its term
    h.node('n1').raw.readIndex(enc('r7'));
    h.process('n1');
    assert.deepEqual(readsAt(h, 'n1'), [], 'answered from a lease after TimeoutNow');
    h.tick('n1');
    h.stabilize(); // heartbeats are acknowledged: ReadIndex works, the lease stays gone
    assert.deepEqual(readsAt(h, 'n1'), ['r7']);
    assert.equal(h.node('n1').raw.core.readsServed.lease, 0);
  });

  // The broken variant (testingBugs.leaseFromAckArrival): acknowledgements that
  // took 70 ms to come back would stretch the lease 70 ms past the followers'
  // promise, long enough for them to elect another leader that commits a write.
  for (const broken of [false, true]) {
    it(`${broken ? 'counted from the acks arriving (broken): a stale read' : 'counts from the round being sent: no stale read'} after slow acks`, () => {
      const { h, clock } = leaseCluster({ leaseFromAckArrival: broken });
      h.tick('n1');
      h.process('n1');
      h.deliver((m) => m.type === MessageType.Heartbeat); // followers hear n1 at t=0 ...
      h.processAll();
      clock.nowMs = 70;
      h.deliver(); // ... and their answers arrive at t=70
      h.isolate('n1');
      // n2 and n3 count an election timeout (10 ms per tick) and elect n2, which commits a write.
      for (let t = 1; t <= electionTimeoutTicks; t++) {
        clock.nowMs = t * tickIntervalMs;
        for (const id of ['n2', 'n3']) h.node(id).raw.core.tick();
        h.processAll();
        h.queue = h.queue.filter((m) => m.type !== MessageType.PreVote && m.type !== MessageType.Vote);
      }
      h.node('n2').raw.campaign();
      h.stabilize();
      assert.equal(h.node('n2').raw.status().role, Role.Leader);
      h.propose('n2', 'written-after-n1-was-cut-off');
      h.stabilize();
      assert.ok(h.node('n3').applied.includes('written-after-n1-was-cut-off'));
      clock.nowMs = 120;
      h.node('n1').raw.readIndex(enc('late'));
      h.process('n1');
      if (broken) {
        assert.deepEqual(readsAt(h, 'n1'), ['late'], 'the broken variant served the read');
        assert.ok(!h.node('n1').applied.includes('written-after-n1-was-cut-off'), 'and it is stale');
      } else {
        assert.deepEqual(readsAt(h, 'n1'), [], 'served a read past the followers promise');
      }
    });
  }
});

describe('raft: the lease clock counts time the machine spent suspended', () => {
  it('follows the monotonic clock, adds what only the wall clock saw, ignores jitter and a wall clock set back', () => {
    const t = { mono: 1000, wall: 5_000_000 };
    const clock = suspendAwareClock(
      () => t.mono,
      () => t.wall,
    );
    t.mono += 100;
    t.wall += 105; // jitter between the two clocks, under the tolerance
    assert.equal(clock(), 1100);
    t.wall += 10_000; // suspended for 10 s: the monotonic clock stood still
    assert.equal(clock(), 1100 + 10_000);
    t.mono += 50;
    t.wall -= 3_600_000; // the wall clock set back an hour: never makes the clock slower
    assert.equal(clock(), 1150 + 10_000);
    t.mono += 50;
    t.wall += 50;
    assert.equal(clock(), 1200 + 10_000);
  });

  it('a leader that wakes from a suspend mid-lease does not answer from its lease', () => {
    const t = { mono: 0, wall: 1_700_000_000_000 };
    const clock = { nowMs: 0 };
    const { h } = leaseCluster(
      {},
      clock,
      suspendAwareClock(
        () => t.mono,
        () => t.wall,
      ),
    );
    h.propose('n1', 'x');
    h.stabilize();
    t.mono += 1;
    t.wall += 1;
    h.node('n1').raw.readIndex(enc('before'));
    h.process('n1');
    assert.deepEqual(readsAt(h, 'n1'), ['before'], 'served from the lease');
    t.wall += 60_000; // a minute asleep; performance.now() would not show it
    h.node('n1').raw.readIndex(enc('after'));
    h.process('n1');
    assert.deepEqual(readsAt(h, 'n1'), ['before'], 'no lease read after the suspend');
    h.stabilize();
    assert.deepEqual(readsAt(h, 'n1'), ['before', 'after'], 'answered after a quorum round instead');
  });
});

describe('raft: the followers promise behind leader leases', () => {
  it('a follower that heard from its leader ignores vote requests, even after its term moved on', () => {
    const { h } = leaseCluster();
    const n3 = h.node('n3').raw.core;
    const term = n3.term;
    // A higher-term message that is not a vote request (a stale response) moves n3 on with no leader...
    const resp = emptyMessage(MessageType.AppResp, 'n2', 'n3', term + 1);
    n3.step(resp);
    assert.equal(n3.term, term + 1);
    assert.equal(n3.lead, '');
    // ... but it still refuses to vote in that term until an election timeout has passed.
    const vote = voteWithLongerLog('n2', 'n3', term + 1);
    h.queue = [];
    n3.step(vote);
    h.process('n3');
    assert.equal(h.queue.filter((m) => m.type === MessageType.VoteResp).length, 0);
    assert.equal(n3.vote, '');
    for (let i = 0; i < electionTimeoutTicks; i++) n3.tick();
    n3.step(vote);
    assert.equal(n3.vote, 'n2');
  });

  it('a restarted node neither votes nor campaigns for an election timeout', () => {
    const { h } = leaseCluster();
    h.crash('n3');
    const n3 = h.restart('n3').raw.core;
    const term = n3.term;
    const vote = voteWithLongerLog('n2', 'n3', term + 1);
    h.queue = [];
    n3.step(vote);
    h.process('n3');
    assert.equal(n3.term, term);
    assert.equal(h.queue.filter((m) => m.type === MessageType.VoteResp).length, 0);
    h.node('n3').raw.campaign();
    assert.equal(n3.role, Role.Follower);
    for (let i = 0; i < electionTimeoutTicks; i++) n3.tick();
    n3.step(vote);
    assert.equal(n3.term, term + 1);
    assert.equal(n3.vote, 'n2');
  });

  it('refuses a configuration without a clock or tick interval', () => {
    const h = () => new Harness(['n1'], { leaseReads: true, tickIntervalMs: 10 });
    assert.throws(h, RaftConfigError);
    assert.throws(
      () => new Harness(['n1'], { leaseReads: true, leaseClockMs: () => 0 }),
      (err: Error) => err instanceof RaftConfigError && /tickIntervalMs/.test(err.message),
    );
  });
});
