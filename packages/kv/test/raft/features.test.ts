import assert from 'node:assert/strict';
import { RaftConfigError, RequestDroppedError } from '../../src/raft/errors.js';
import { MemoryStorage } from '../../src/raft/memory-storage.js';
import { SeededRandom } from '../../src/raft/rand.js';
import { RawNode } from '../../src/raft/rawnode.js';
import {
  ConfChangeTransition,
  ConfChangeType,
  emptyMessage,
  MessageType,
  Role,
} from '../../src/raft/types.js';
import { Harness } from './harness.js';

const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
const dec = (b: Uint8Array): string => new TextDecoder().decode(b);

function conf(changes: [ConfChangeType, string][], transition = ConfChangeTransition.Auto) {
  return {
    transition,
    changes: changes.map(([type, nodeId]) => ({ type, nodeId })),
    context: new Uint8Array(0),
  };
}

describe('raft: proposeBatch', () => {
  it('appends a batch from a follower as one forwarded message, in order, applied everywhere', () => {
    const h = new Harness(['n1', 'n2', 'n3']);
    h.elect('n1');
    h.node('n2').raw.proposeBatch(['a', 'b', 'c'].map(enc));
    const forwarded = h
      .node('n2')
      .raw.ready()
      .messages.filter((m) => m.type === MessageType.Prop);
    h.node('n2').raw.advance();
    assert.equal(forwarded.length, 1, 'one proposal message for the whole batch');
    assert.deepEqual(
      forwarded[0]!.entries.map((e) => dec(e.data)),
      ['a', 'b', 'c'],
    );
    h.node('n1').raw.step(forwarded[0]!);
    h.stabilize();
    for (const id of ['n1', 'n2', 'n3']) assert.deepEqual(h.node(id).applied, ['a', 'b', 'c'], id);
  });

  it('refuses a whole batch without a leader, and an empty one', () => {
    const h = new Harness(['n1', 'n2', 'n3']);
    assert.throws(() => h.node('n1').raw.proposeBatch([enc('x')]), RequestDroppedError);
    h.elect('n1');
    assert.throws(() => h.node('n1').raw.proposeBatch([]), /at least one entry/);
    h.stabilize();
    assert.deepEqual(h.node('n1').applied, []);
  });
});

describe('raft: ReadIndex', () => {
  it('answers at the leader after a quorum confirms leadership, with the commit index', () => {
    const h = new Harness(['n1', 'n2', 'n3']);
    h.elect('n1');
    h.propose('n1', 'x');
    h.stabilize();
    h.node('n1').raw.readIndex(enc('r1'));
    h.processAll();
    assert.deepEqual(h.node('n1').readStates, [], 'no answer before the heartbeat round');
    h.stabilize();
    const rs = h.node('n1').readStates;
    assert.equal(rs.length, 1);
    assert.equal(dec(rs[0]!.requestCtx), 'r1');
    assert.equal(rs[0]!.index, h.node('n1').raw.status().commit);
  });

  it('answers a follower through the leader', () => {
    const h = new Harness(['n1', 'n2', 'n3']);
    h.elect('n1');
    h.node('n3').raw.readIndex(enc('r2'));
    h.stabilize();
    assert.deepEqual(
      h.node('n3').readStates.map((r) => dec(r.requestCtx)),
      ['r2'],
    );
  });

  it('does not answer at a leader cut off from its quorum', () => {
    const h = new Harness(['n1', 'n2', 'n3']);
    h.elect('n1');
    h.isolate('n1');
    h.node('n1').raw.readIndex(enc('r3'));
    h.stabilize();
    assert.deepEqual(h.node('n1').readStates, []);
  });

  it('drops a read when no leader is known', () => {
    const h = new Harness(['n1', 'n2', 'n3']);
    assert.throws(() => h.node('n2').raw.readIndex(enc('r4')), RequestDroppedError);
  });
});

describe('raft: leadership transfer', () => {
  it('hands leadership to an up-to-date voter with TimeoutNow', () => {
    const h = new Harness(['n1', 'n2', 'n3']);
    h.elect('n1');
    h.node('n1').raw.transferLeadership('n3');
    h.stabilize();
    assert.deepEqual(h.leaders(), ['n3']);
    assert.ok(h.trace.some((l) => l.startsWith('n1->n3 TimeoutNow')));
  });

  it('catches the transferee up first, and refuses proposals meanwhile', () => {
    const h = new Harness(['n1', 'n2', 'n3']);
    h.elect('n1');
    h.isolate('n3');
    h.propose('n1', 'x');
    h.stabilize();
    h.heal();
    h.node('n1').raw.transferLeadership('n3');
    h.processAll();
    assert.throws(() => h.propose('n1', 'y'), RequestDroppedError);
    h.stabilize();
    h.tick('n1');
    h.stabilize();
    assert.deepEqual(h.leaders(), ['n3']);
    assert.deepEqual(h.node('n3').applied, ['x']);
  });

  it('abandons a transfer that does not finish within an election timeout', () => {
    const h = new Harness(['n1', 'n2', 'n3']);
    h.elect('n1');
    h.isolate('n3');
    h.node('n1').raw.transferLeadership('n3');
    h.stabilize();
    assert.equal(h.node('n1').raw.status().leadTransferee, 'n3');
    for (let i = 0; i < 10; i++) {
      h.tick('n1');
      h.stabilize();
    }
    assert.equal(h.node('n1').raw.status().leadTransferee, '');
    h.propose('n1', 'after');
    h.stabilize();
    assert.deepEqual(h.node('n1').applied, ['after']);
  });
});

describe('raft: membership', () => {
  it('adds a learner that replicates but does not vote, then promotes it', () => {
    const h = new Harness(['n1', 'n2', 'n3']);
    h.elect('n1');
    h.addNode('n4');
    h.node('n1').raw.proposeConfChange(conf([[ConfChangeType.AddLearner, 'n4']]));
    h.propose('n1', 'x');
    h.stabilize();
    h.tick('n1'); // the new member is probed with the next heartbeat
    h.stabilize();
    assert.deepEqual(h.node('n4').applied.slice(-1), ['x']);
    assert.deepEqual(h.node('n1').confState.learners, ['n4']);
    // A learner never campaigns.
    h.tick('n4', 50);
    h.stabilize();
    assert.equal(h.node('n4').raw.status().role, Role.Follower);
    h.node('n1').raw.proposeConfChange(conf([[ConfChangeType.AddVoter, 'n4']]));
    h.stabilize();
    for (const id of ['n1', 'n2', 'n3', 'n4'])
      assert.deepEqual(h.node(id).confState.voters, ['n1', 'n2', 'n3', 'n4']);
  });

  it('refuses a second conf change until the first is applied', () => {
    const h = new Harness(['n1', 'n2', 'n3']);
    h.elect('n1');
    h.node('n1').raw.proposeConfChange(conf([[ConfChangeType.AddLearner, 'n4']]));
    assert.throws(
      () => h.node('n1').raw.proposeConfChange(conf([[ConfChangeType.AddLearner, 'n5']])),
      (err: unknown) => err instanceof RequestDroppedError && /not applied yet/.test(err.message),
    );
  });

  it('refuses a change that would remove every voter, naming why', () => {
    const h = new Harness(['n1', 'n2', 'n3']);
    h.elect('n1');
    assert.throws(
      () =>
        h.node('n1').raw.proposeConfChange(
          conf([
            [ConfChangeType.RemoveNode, 'n1'],
            [ConfChangeType.RemoveNode, 'n2'],
            [ConfChangeType.RemoveNode, 'n3'],
          ]),
        ),
      (err: unknown) => err instanceof RequestDroppedError && /remove every voter/.test(err.message),
    );
  });

  it('leaves an explicit joint config only when asked', () => {
    const h = new Harness(['n1', 'n2', 'n3']);
    h.elect('n1');
    h.addNode('n4');
    h.node('n1').raw.proposeConfChange(
      conf(
        [
          [ConfChangeType.AddVoter, 'n4'],
          [ConfChangeType.RemoveNode, 'n3'],
        ],
        ConfChangeTransition.JointExplicit,
      ),
    );
    h.stabilize();
    assert.deepEqual(h.node('n1').confState.votersOutgoing, ['n1', 'n2', 'n3']);
    h.node('n1').raw.proposeConfChange({
      transition: ConfChangeTransition.Auto,
      changes: [],
      context: new Uint8Array(0),
    });
    h.stabilize();
    assert.deepEqual(h.node('n1').confState.voters, ['n1', 'n2', 'n4']);
    assert.deepEqual(h.node('n1').confState.votersOutgoing, []);
  });

  it('a removed leader steps down and the rest elect a new one', () => {
    const h = new Harness(['n1', 'n2', 'n3']);
    h.elect('n1');
    h.node('n1').raw.proposeConfChange(conf([[ConfChangeType.RemoveNode, 'n1']]));
    h.stabilize();
    assert.notEqual(h.node('n1').raw.status().role, Role.Leader);
    for (let i = 0; i < 30 && h.leaders().length === 0; i++) {
      for (const id of ['n2', 'n3']) h.tick(id);
      h.stabilize();
    }
    const leaders = h.leaders();
    assert.equal(leaders.length, 1);
    assert.ok(['n2', 'n3'].includes(leaders[0]!));
    h.propose(leaders[0]!, 'z');
    h.stabilize();
    assert.deepEqual(h.node('n2').applied.slice(-1), ['z']);
  });
});

describe('raft: persistence contract', () => {
  it('a restarted node remembers its vote and log (from storage only)', () => {
    const h = new Harness(['n1', 'n2', 'n3']);
    h.elect('n1');
    h.propose('n1', 'x');
    h.stabilize();
    const hs = h.node('n2').storage.getHardState();
    assert.equal(hs.vote, 'n1');
    h.crash('n2');
    const n2 = h.restart('n2');
    const st = n2.raw.status();
    assert.equal(st.term, hs.term);
    assert.equal(st.vote, 'n1');
    assert.equal(st.lastIndex, 3);
  });

  it('a vote is in the Ready that carries the vote response, marked mustSync', () => {
    const h = new Harness(['n1', 'n2', 'n3'], { preVote: false });
    h.node('n1').raw.campaign();
    h.process('n1');
    h.deliver((m) => m.to === 'n2');
    const rd = h.node('n2').raw.ready();
    assert.equal(rd.hardState?.vote, 'n1');
    assert.ok(rd.mustSync);
    assert.ok(rd.messages.some((m) => m.type === MessageType.VoteResp && !m.reject));
  });

  it('refuses local-only message types from the network', () => {
    const storage = new MemoryStorage();
    storage.bootstrap(['n1']);
    const n = new RawNode({ id: 'n1', storage, random: new SeededRandom(1) });
    assert.throws(() => n.step(emptyMessage(MessageType.Hup, 'n2', 'n1', 1)), /local-only/);
  });

  it('rejects bad config values naming the option', () => {
    const storage = new MemoryStorage();
    assert.throws(
      () =>
        new RawNode({
          id: 'n1',
          storage,
          random: new SeededRandom(1),
          heartbeatTicks: 10,
          electionTimeoutTicks: 10,
        }),
      (err: unknown) => err instanceof RaftConfigError && /heartbeatTicks/.test(err.message),
    );
  });
});
