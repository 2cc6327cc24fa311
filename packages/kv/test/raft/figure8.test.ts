// Raft paper, figure 8: a leader must not commit an entry of an earlier term
// by counting replicas. Reproduced step by step on five nodes; with the
// deliberate bug `commitPreviousTermByCount` the entry is applied and later
// overwritten (a committed entry is lost), without it the entry is never
// reported committed and the cluster stays consistent.
import assert from 'node:assert/strict';
import type { TestingBugs } from '../../src/raft/raft.js';
import { Harness } from './harness.js';

function figure8(testingBugs: TestingBugs): { h: Harness; leaderAppliedA: boolean } {
  // One entry per append message, so an old entry can be acknowledged before the new leader's empty entry.
  const h = new Harness(['n1', 'n2', 'n3', 'n4', 'n5'], {
    preVote: false,
    checkQuorum: false,
    maxSizePerMsgBytes: 1,
    testingBugs,
  });
  // (a) n1 leads term 2 and replicates "A" at index 3 to n2 only.
  h.elect('n1');
  for (const to of ['n3', 'n4', 'n5']) h.cut.add(`n1->${to}`);
  h.propose('n1', 'A');
  h.stabilize();
  h.crash('n1');
  h.heal();
  // (b) n5 leads term 3 with votes from n3 and n4, appends its empty entry at
  // index 3 but nobody receives it; n5 goes down.
  h.node('n5').raw.campaign();
  h.process('n5');
  h.deliver((m) => m.from === 'n5' && (m.to === 'n3' || m.to === 'n4'));
  h.process('n3');
  h.process('n4');
  h.deliver((m) => m.to === 'n5');
  h.process('n5'); // leader of term 3; its empty entry 3/3 is sent nowhere
  assert.deepEqual(h.leaders(), ['n5']);
  h.crash('n5');
  h.queue = [];
  // (c) n1 comes back and leads term 4 (votes of n2, n3, n4). It sends "A"
  // (term 2, index 3) to n3; n3's acknowledgement makes three copies.
  h.restart('n1');
  h.node('n1').raw.campaign(); // term 3 was n5's: n3 and n4 already voted, n1 loses
  h.stabilize();
  h.node('n1').raw.campaign(); // term 4
  h.process('n1');
  h.deliver((m) => m.type !== undefined && ['n2', 'n3', 'n4'].includes(m.to)); // vote requests
  for (const id of ['n2', 'n3', 'n4']) h.process(id);
  h.deliver((m) => m.to === 'n1'); // votes
  h.process('n1'); // leader of term 4; probes with its empty entry (4/4)
  h.cut.add('n1->n4');
  h.deliver((m) => m.from === 'n1');
  h.process('n2'); // accepts 4/4 after A
  h.process('n3'); // rejects: it has no index 3
  h.deliver((m) => m.to === 'n1');
  h.process('n1'); // sends "A" alone (one entry per message)
  h.deliver((m) => m.from === 'n1' && m.to === 'n3');
  h.process('n3'); // acknowledges index 3
  h.deliver((m) => m.to === 'n1');
  h.process('n1'); // n1, n2, n3 have index 3 (term 2): committed only with the bug
  const leaderAppliedA = h.node('n1').applied.includes('A');
  h.crash('n1'); // before its empty entry reaches anyone
  h.heal();
  // (d) n5 returns; its last entry (term 3) beats n3's and n4's (term 2): it
  // wins term 5 and replicates its own entry at index 3.
  h.restart('n5');
  h.node('n5').raw.campaign();
  h.stabilize();
  if (h.leaders().length === 0) {
    h.node('n5').raw.campaign();
    h.stabilize();
  }
  return { h, leaderAppliedA };
}

describe('raft: figure 8 (commit only by counting current-term entries)', () => {
  it('does not report an earlier-term entry committed by counting replicas', () => {
    const { h, leaderAppliedA } = figure8({});
    assert.equal(leaderAppliedA, false);
    assert.deepEqual(h.leaders(), ['n5']);
    h.restart('n1');
    h.propose('n5', 'B');
    h.tick('n5');
    h.stabilize();
    // "A" was never committed, so replacing it is allowed; everyone agrees.
    for (const id of ['n1', 'n2', 'n3', 'n4', 'n5']) {
      assert.deepEqual(
        h.node(id).applied.filter((d) => !d.startsWith('<')),
        ['B'],
        id,
      );
    }
  });

  it('with the deliberate bug, a committed and applied entry is overwritten', () => {
    const { h, leaderAppliedA } = figure8({ commitPreviousTermByCount: true });
    assert.equal(leaderAppliedA, true, 'the buggy leader applied A (index 3, term 2)');
    assert.equal(h.crashed.get('n1')!.getHardState().commit, 3);
    assert.deepEqual(h.leaders(), ['n5']);
    h.propose('n5', 'B');
    h.stabilize();
    // The majority now holds n5's entry at index 3: the committed A is lost.
    assert.equal(h.node('n3').raw.core.log.term(3), 3);
    assert.ok(h.node('n5').raw.status().commit >= 3);
    assert.ok(!h.node('n5').applied.includes('A'));
    // Two different entries at index 3 are both committed: state machine safety is broken.
    const n1 = h.restart('n1').raw;
    assert.equal(n1.status().commit, 3);
    assert.equal(n1.core.log.term(3), 2);
    assert.equal(h.node('n5').raw.core.log.term(3), 3);
  });
});
