import assert from 'node:assert/strict';
import { RequestDroppedError } from '../../src/raft/errors.js';
import { ProgressState } from '../../src/raft/progress.js';
import { Role } from '../../src/raft/types.js';
import { Harness } from './harness.js';

describe('raft: election', () => {
  it('elects exactly one leader and every node learns it', () => {
    const h = new Harness(['n1', 'n2', 'n3']);
    h.elect('n1');
    assert.deepEqual(h.leaders(), ['n1']);
    for (const id of ['n2', 'n3']) {
      const st = h.node(id).raw.status();
      assert.equal(st.leader, 'n1');
      assert.equal(st.term, 2);
      assert.equal(st.role, Role.Follower);
    }
  });

  it('times out into an election on its own when no leader is heard', () => {
    const h = new Harness(['n1', 'n2', 'n3']);
    for (let t = 0; t < 25 && h.leaders().length === 0; t++) {
      for (const id of ['n1', 'n2', 'n3']) h.tick(id);
      h.stabilize();
    }
    assert.equal(h.leaders().length, 1);
  });

  it('a candidate with a shorter log loses the election', () => {
    const h = new Harness(['n1', 'n2', 'n3']);
    h.elect('n1');
    h.isolate('n3');
    h.propose('n1', 'x');
    h.stabilize();
    h.heal();
    h.node('n3').raw.campaign();
    h.stabilize();
    assert.notEqual(h.node('n3').raw.status().role, Role.Leader);
    assert.equal(h.leaders().length, 1);
  });
});

describe('raft: replication', () => {
  it('replicates and applies proposals on every node in order', () => {
    const h = new Harness(['n1', 'n2', 'n3']);
    h.elect('n1');
    for (const v of ['a', 'b', 'c']) h.propose('n1', v);
    h.propose('n2', 'd'); // forwarded to the leader
    h.stabilize();
    for (const id of ['n1', 'n2', 'n3']) assert.deepEqual(h.node(id).applied, ['a', 'b', 'c', 'd']);
    const st = h.node('n1').raw.status();
    assert.equal(st.progress!.n2!.state, ProgressState.Replicate);
    assert.equal(st.progress!.n2!.match, st.lastIndex);
  });

  it('does not commit without a quorum and commits once one returns', () => {
    const h = new Harness(['n1', 'n2', 'n3']);
    h.elect('n1');
    h.isolate('n2');
    h.isolate('n3');
    h.propose('n1', 'x');
    h.stabilize();
    assert.deepEqual(h.node('n1').applied, []);
    h.heal();
    h.tick('n1'); // heartbeat -> followers answer -> leader probes and sends the entry
    h.stabilize();
    for (const id of ['n1', 'n2', 'n3']) assert.deepEqual(h.node(id).applied, ['x']);
  });

  it('repairs a follower whose log diverged (fast backtracking)', () => {
    const h = new Harness(['n1', 'n2', 'n3'], { preVote: false, checkQuorum: false });
    h.elect('n1');
    h.propose('n1', 'base');
    h.stabilize();
    // n1 appends entries only it has, then loses leadership.
    h.isolate('n1');
    for (let i = 0; i < 5; i++) h.propose('n1', `lost${i}`);
    h.stabilize();
    h.elect('n2');
    h.propose('n2', 'kept');
    h.stabilize();
    h.heal();
    h.tick('n2');
    h.stabilize();
    for (const id of ['n1', 'n2', 'n3']) assert.deepEqual(h.node(id).applied, ['base', 'kept']);
    // At most one rejection: the hint skips all of term 2's extra entries at once.
    const rejections = h.trace.filter((l) => l.startsWith('n1->n2 AppResp') && l.includes('Rejected'));
    assert.ok(rejections.length <= 1, rejections.join('\n'));
  });

  it('drops proposals when no leader is known', () => {
    const h = new Harness(['n1', 'n2', 'n3']);
    assert.throws(() => h.propose('n1', 'x'), RequestDroppedError);
  });
});
