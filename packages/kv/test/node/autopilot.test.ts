// The leader's membership policy, rule by rule (src/api/autopilot.ts), and KvNode's checks of its options.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  type AutopilotInput,
  type AutopilotLimits,
  joinRefusal,
  type MemberHealth,
  nextMembershipAction,
} from '../../src/api/autopilot.js';
import { KvNode } from '../../src/api/node.js';

const limits: AutopilotLimits = {
  maxVoters: 3,
  deadVoterThresholdMs: 10_000,
  healthyContactMs: 1_000,
  promoteMaxLagEntries: 16,
};

const alive = (matchIndex = 100): MemberHealth => ({ lastHeardAgoMs: 50, matchIndex });
const silentFor = (ms: number, matchIndex = 90): MemberHealth => ({ lastHeardAgoMs: ms, matchIndex });

function input(
  voters: string[],
  learners: string[],
  health: Record<string, MemberHealth>,
  overrides: Partial<AutopilotLimits> = {},
): AutopilotInput {
  return {
    self: 'a',
    voters,
    learners,
    health: new Map(Object.entries(health)),
    commitIndex: 100,
    limits: { ...limits, ...overrides },
  };
}

describe('autopilot policy', () => {
  it('promotes a caught-up learner while there are fewer voters than maxVoters', () => {
    const action = nextMembershipAction(input(['a', 'b'], ['c'], { b: alive(), c: alive(95) }));
    assert.equal(action.type, 'promote');
    assert.equal(action.type === 'promote' && action.id, 'c');
  });

  it('does not promote beyond maxVoters', () => {
    const action = nextMembershipAction(
      input(['a', 'b', 'c'], ['d'], { b: alive(), c: alive(), d: alive() }),
    );
    assert.deepEqual(action, { type: 'none' });
  });

  it('promotes every caught-up learner when maxVoters is unlimited', () => {
    const action = nextMembershipAction(
      input(['a', 'b', 'c'], ['d'], { b: alive(), c: alive(), d: alive() }, { maxVoters: Infinity }),
    );
    assert.equal(action.type, 'promote');
  });

  it('does not promote a learner that lags or that the leader has not heard from recently', () => {
    assert.deepEqual(nextMembershipAction(input(['a', 'b'], ['c'], { b: alive(), c: alive(50) })), {
      type: 'none',
    });
    assert.deepEqual(
      nextMembershipAction(input(['a', 'b'], ['c'], { b: alive(), c: silentFor(3_000, 100) })),
      {
        type: 'none',
      },
    );
  });

  it('picks the most caught-up learner, then the most recently heard, then the lowest id', () => {
    const byMatch = nextMembershipAction(
      input(['a', 'b'], ['c', 'd'], { b: alive(), c: alive(96), d: alive(99) }),
    );
    assert.equal(byMatch.type === 'promote' && byMatch.id, 'd');
    const byContact = nextMembershipAction(
      input(['a', 'b'], ['c', 'd'], { b: alive(), c: silentFor(500, 99), d: silentFor(100, 99) }),
    );
    assert.equal(byContact.type === 'promote' && byContact.id, 'd');
    const byId = nextMembershipAction(input(['a', 'b'], ['d', 'c'], { b: alive(), c: alive(), d: alive() }));
    assert.equal(byId.type === 'promote' && byId.id, 'c');
  });

  it('replaces a dead voter: first promotes a learner, then removes the dead voter', () => {
    const health = { b: alive(), c: silentFor(12_000), d: alive() };
    const first = nextMembershipAction(input(['a', 'b', 'c'], ['d'], health));
    assert.equal(first.type, 'promote');
    assert.equal(first.type === 'promote' && first.id, 'd');
    assert.match(first.type === 'promote' ? first.reason : '', /replacing dead voter c/);
    const second = nextMembershipAction(input(['a', 'b', 'c', 'd'], [], health));
    assert.equal(second.type, 'remove');
    assert.equal(second.type === 'remove' && second.id, 'c');
  });

  it('keeps a voter that is silent but not yet past the threshold', () => {
    const action = nextMembershipAction(
      input(['a', 'b', 'c'], ['d'], { b: alive(), c: silentFor(9_000), d: alive() }),
    );
    assert.deepEqual(action, { type: 'none' });
  });

  it('keeps a dead voter when there is no learner to replace it (never fewer voters than the limit)', () => {
    const action = nextMembershipAction(input(['a', 'b', 'c'], [], { b: alive(), c: silentFor(60_000) }));
    assert.deepEqual(action, { type: 'none' });
  });

  it('never removes a voter when the voters left would lack a quorum of healthy members', () => {
    // 5 voters over a limit of 4: b and c dead, d only briefly silent (not healthy, not dead).
    const health = { b: silentFor(20_000), c: silentFor(15_000), d: silentFor(5_000), e: alive() };
    const action = nextMembershipAction(input(['a', 'b', 'c', 'd', 'e'], [], health, { maxVoters: 4 }));
    // Removing b leaves a, c, d, e: healthy a, e = 2 < quorum 3. Same for c. Nothing is safe.
    assert.deepEqual(action, { type: 'none' });
    const safe = nextMembershipAction(
      input(['a', 'b', 'c', 'd', 'e'], [], { ...health, d: alive() }, { maxVoters: 4 }),
    );
    // Removing b (silent longest) leaves a, c, d, e with a, d, e healthy: a quorum of 3.
    assert.equal(safe.type === 'remove' && safe.id, 'b');
  });

  it('never removes or demotes itself, even with a stale health entry of its own', () => {
    // 4 voters over a limit of 3: only the leader itself looks dead; one of the others steps back.
    const action = nextMembershipAction(
      input(['a', 'b', 'c', 'd'], [], { a: silentFor(60_000), b: alive(), c: alive(), d: alive() }),
    );
    assert.equal(action.type, 'demote');
    assert.notEqual(action.type === 'demote' && action.id, 'a');
  });

  it('with two dead voters of five, replaces them one at a time', () => {
    const health = {
      b: alive(),
      c: alive(),
      d: silentFor(30_000),
      e: silentFor(20_000),
      f: alive(),
      g: alive(),
    };
    const steps: string[] = [];
    let voters = ['a', 'b', 'c', 'd', 'e'];
    let learners = ['f', 'g'];
    for (let i = 0; i < 6; i++) {
      const action = nextMembershipAction(input(voters, learners, health, { maxVoters: 5 }));
      if (action.type === 'none') break;
      steps.push(`${action.type} ${action.id}`);
      if (action.type === 'promote') {
        learners = learners.filter((l) => l !== action.id);
        voters = [...voters, action.id];
      } else {
        voters = voters.filter((v) => v !== action.id);
        learners = learners.filter((l) => l !== action.id);
      }
    }
    assert.deepEqual(steps, ['promote f', 'remove d', 'promote g', 'remove e']);
    assert.deepEqual(voters.sort(), ['a', 'b', 'c', 'f', 'g']);
  });

  it('demotes the voter with the least of the log when a replaced voter came back (over the limit, none dead)', () => {
    const action = nextMembershipAction(
      input(['a', 'b', 'c', 'd'], [], { b: alive(100), c: alive(40), d: alive(100) }),
    );
    assert.equal(action.type, 'demote');
    assert.equal(action.type === 'demote' && action.id, 'c');
  });

  it('does not demote when the voters left would lack a healthy quorum', () => {
    const health = { b: silentFor(5_000), c: silentFor(5_000), d: silentFor(5_000) };
    assert.deepEqual(nextMembershipAction(input(['a', 'b', 'c', 'd'], [], health)), { type: 'none' });
  });

  it('removes a learner past the threshold to free its slot', () => {
    const action = nextMembershipAction(
      input(['a', 'b', 'c'], ['d', 'e'], { b: alive(), c: alive(), d: alive(), e: silentFor(11_000) }),
    );
    assert.equal(action.type === 'remove' && action.id, 'e');
  });

  it('counts a member with no health entry as dead', () => {
    const action = nextMembershipAction(input(['a', 'b', 'c'], ['d'], { b: alive(), d: alive() }));
    assert.equal(action.type === 'promote' && action.id, 'd');
  });
});

describe('autopilot policy: members that asked to leave', () => {
  const leaving = (ids: string[], base: AutopilotInput): AutopilotInput => ({
    ...base,
    leaving: new Set(ids),
  });

  it('replaces a leaving voter by the healthiest caught-up learner first, then removes it', () => {
    const health = { b: alive(), c: alive(), d: alive(90), e: alive(100) };
    const first = nextMembershipAction(leaving(['b'], input(['a', 'b', 'c'], ['d', 'e'], health)));
    assert.deepEqual(first, { type: 'promote', id: 'e', reason: 'replacing leaving voter b' });
    const second = nextMembershipAction(leaving(['b'], input(['a', 'b', 'c', 'e'], ['d'], health)));
    assert.deepEqual(second, { type: 'remove', id: 'b', reason: 'voter is leaving' });
  });

  it('removes a leaving voter without replacement when no learner is healthy and caught up', () => {
    const health = { b: alive(), c: alive(), d: alive(10) };
    const action = nextMembershipAction(leaving(['b'], input(['a', 'b', 'c'], ['d'], health)));
    assert.deepEqual(action, { type: 'remove', id: 'b', reason: 'voter is leaving' });
  });

  it('never promotes a learner that is leaving itself; removes it instead', () => {
    const health = { b: alive(), c: alive(), d: alive() };
    const action = nextMembershipAction(leaving(['b', 'd'], input(['a', 'b', 'c'], ['d'], health)));
    assert.deepEqual(action, { type: 'remove', id: 'd', reason: 'learner is leaving' });
  });

  it('two of three voters leaving at once: one at a time, down to the leader alone (never wedged)', () => {
    const health = { b: alive(), c: alive() };
    const first = nextMembershipAction(leaving(['b', 'c'], input(['a', 'b', 'c'], [], health)));
    assert.deepEqual(first, { type: 'remove', id: 'b', reason: 'voter is leaving' });
    // Removing c from {a, c} needs c's vote: c keeps serving until its removal is committed.
    const second = nextMembershipAction(leaving(['c'], input(['a', 'c'], [], health)));
    assert.deepEqual(second, { type: 'remove', id: 'c', reason: 'voter is leaving' });
  });

  it('with a dead voter, removes the dead one first so the leaving one can go with the quorum kept', () => {
    // {a, b, c}: c dead, b leaving. Removing b first would leave {a, c} with one healthy voter of two.
    const health = { b: alive(), c: silentFor(20_000) };
    const first = nextMembershipAction(leaving(['b'], input(['a', 'b', 'c'], [], health)));
    assert.equal(first.type, 'remove');
    assert.equal(first.type === 'remove' && first.id, 'c');
    const second = nextMembershipAction(leaving(['b'], input(['a', 'b'], [], { b: alive() })));
    assert.deepEqual(second, { type: 'remove', id: 'b', reason: 'voter is leaving' });
  });

  it('keeps a leaving voter whose removal would cost the quorum when no dead voter can go instead', () => {
    // c silent but not past the threshold: not dead, not healthy. Without b, {a, c} has one healthy voter.
    const health = { b: alive(), c: silentFor(5_000) };
    const action = nextMembershipAction(leaving(['b'], input(['a', 'b', 'c'], [], health)));
    assert.deepEqual(action, { type: 'none' });
  });

  it('the leader never removes itself when it is marked leaving (it hands over first)', () => {
    const action = nextMembershipAction(
      leaving(['a'], input(['a', 'b', 'c'], [], { b: alive(), c: alive() })),
    );
    assert.deepEqual(action, { type: 'none' });
  });
});

describe('join limits', () => {
  it('accepts joins while learner slots are free', () => {
    assert.equal(
      joinRefusal({ voters: ['a', 'b', 'c'], learners: [] }, { maxVoters: 3, maxLearners: 1 }),
      undefined,
    );
  });

  it('refuses a join when voters and learners are at their limits, naming both', () => {
    const refusal = joinRefusal(
      { voters: ['a', 'b', 'c'], learners: ['d'] },
      { maxVoters: 3, maxLearners: 1 },
    );
    assert.match(refusal ?? '', /3 voters \(maxVoters 3\) and 1 learners \(maxLearners 1\)/);
  });

  it('accepts a join into an open voter slot even with no learner slots', () => {
    assert.equal(
      joinRefusal({ voters: ['a', 'b'], learners: [] }, { maxVoters: 3, maxLearners: 0 }),
      undefined,
    );
    assert.notEqual(
      joinRefusal({ voters: ['a', 'b'], learners: ['c'] }, { maxVoters: 3, maxLearners: 0 }),
      undefined,
    );
  });

  it('never refuses without limits', () => {
    assert.equal(
      joinRefusal(
        { voters: ['a', 'b', 'c'], learners: ['d', 'e'] },
        { maxVoters: Infinity, maxLearners: Infinity },
      ),
      undefined,
    );
  });
});

describe('KvNode membership options', () => {
  it('refuses limits that make no sense before touching the data directory', async () => {
    const dataDir = join(tmpdir(), `weft-never-created-${process.pid}`);
    const base = { dataDir, id: 'x', listen: '127.0.0.1:1' };
    await assert.rejects(KvNode.open({ ...base, maxVoters: 0 }), /maxVoters must be an integer >= 1/);
    await assert.rejects(KvNode.open({ ...base, maxLearners: -1 }), /maxLearners must be an integer >= 0/);
    await assert.rejects(
      KvNode.open({ ...base, deadVoterThresholdMs: 1.5 }),
      /deadVoterThresholdMs must be an integer/,
    );
    assert.equal(existsSync(dataDir), false);
  });
});
