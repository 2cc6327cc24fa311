// ReadIndexRounds (api/node-reads.ts) on its own: which reads an answer
// settles, when rounds are issued again, and that nothing is kept forever.
import assert from 'node:assert/strict';
import { ReadIndexRounds, type ReadWaiter } from '../../src/api/node-reads.js';

function waiter(deadline: number): ReadWaiter & { outcome: string[] } {
  const outcome: string[] = [];
  return {
    deadline,
    outcome,
    resolve: () => outcome.push('resolved'),
    reject: (err) => outcome.push(`rejected: ${err.message}`),
  };
}

describe('ReadIndexRounds', () => {
  it('batches waiting reads into one round; new reads wait for the next', () => {
    const rounds = new ReadIndexRounds(500);
    const a = waiter(5_000);
    rounds.add(a);
    const first = rounds.takeNextRound()!;
    rounds.started('r1', first, 0);
    const b = waiter(5_000);
    rounds.add(b);
    assert.equal(rounds.takeNextRound(), undefined, 'one round in flight at a time');
    assert.deepEqual(rounds.answered('r1'), [a]);
    assert.deepEqual(rounds.takeNextRound(), [b]);
  });

  it('with several rounds allowed out, new reads start a round at once, up to the limit', () => {
    const rounds = new ReadIndexRounds(500, 2);
    const [a, b, c, d] = [waiter(5_000), waiter(5_000), waiter(5_000), waiter(5_000)];
    rounds.add(a);
    rounds.started('r1', rounds.takeNextRound()!, 0);
    rounds.add(b);
    const second = rounds.takeNextRound()!;
    assert.deepEqual(second, [b], 'a second round starts while the first is out');
    rounds.started('r2', second, 1);
    rounds.add(c);
    assert.equal(rounds.takeNextRound(), undefined, 'two rounds out: the third waits');
    // Answers may come in any order; each settles only its own reads.
    assert.deepEqual(rounds.answered('r2'), [b]);
    rounds.add(d);
    const third = rounds.takeNextRound()!;
    assert.deepEqual(third, [c, d], 'one answer frees a slot; everything waiting goes together');
    rounds.started('r3', third, 2);
    assert.deepEqual(rounds.answered('r1'), [a]);
    // A leader change re-issues every round out.
    rounds.supersedeCurrent();
    const again = rounds.takeNextRound()!;
    assert.deepEqual(again, [c, d]);
    rounds.started('r4', again, 3);
    assert.deepEqual(rounds.answered('r3'), [c, d], 'the superseded round is still listened to');
    assert.deepEqual(rounds.answered('r4'), []);
    assert.equal(rounds.roundCount, 0);
  });

  it('an answer to a round already issued again still settles its reads, once', () => {
    const rounds = new ReadIndexRounds(500);
    const a = waiter(5_000);
    rounds.add(a);
    rounds.started('r1', rounds.takeNextRound()!, 0);
    rounds.retryIfOverdue(400);
    assert.equal(rounds.takeNextRound(), undefined, 'not overdue yet');
    rounds.retryIfOverdue(501);
    const again = rounds.takeNextRound()!;
    assert.deepEqual(again, [a], 'issued again');
    rounds.started('r2', again, 501);
    // The first round's late answer arrives: it covers the read.
    assert.deepEqual(rounds.answered('r1'), [a]);
    assert.deepEqual(rounds.answered('r2'), [], 'the second answer finds it already settled');
    assert.equal(rounds.answered('r3'), undefined, 'unknown context');
    rounds.expire(10_000, () => new Error('timeout'));
    assert.deepEqual(a.outcome, [], 'settled reads are not expired');
    assert.equal(rounds.roundCount, 0);
  });

  it('a leader change re-issues the round in flight and keeps listening to the old one', () => {
    const rounds = new ReadIndexRounds(500);
    const a = waiter(5_000);
    rounds.add(a);
    rounds.started('r1', rounds.takeNextRound()!, 0);
    rounds.supersedeCurrent();
    rounds.started('r2', rounds.takeNextRound()!, 10);
    assert.equal(rounds.roundCount, 2);
    assert.deepEqual(rounds.answered('r2'), [a]);
    assert.deepEqual(rounds.answered('r1'), []);
  });

  it('fails reads at their deadline, and forgets rounds with nothing left to serve', () => {
    const rounds = new ReadIndexRounds(500);
    const early = waiter(1_000);
    const late = waiter(3_000);
    rounds.add(early);
    rounds.add(late);
    let now = 0;
    rounds.started('r0', rounds.takeNextRound()!, now);
    for (let i = 1; now < 2_000; i++) {
      now += 520;
      rounds.retryIfOverdue(now);
      const next = rounds.takeNextRound();
      if (next) rounds.started(`r${i}`, next, now);
      rounds.expire(now, () => new Error('read timed out'));
    }
    assert.deepEqual(early.outcome, ['rejected: read timed out']);
    assert.deepEqual(late.outcome, [], 'still within its deadline');
    now = 3_500;
    rounds.expire(now, () => new Error('read timed out'));
    assert.deepEqual(late.outcome, ['rejected: read timed out']);
    assert.equal(rounds.roundCount, 0, 'no round kept once no read waits');
    assert.equal(rounds.takeNextRound(), undefined);
    const fresh = waiter(10_000);
    rounds.add(fresh);
    assert.deepEqual(rounds.takeNextRound(), [fresh], 'a new read starts a round at once');
  });

  it('rejectAll fails every unsettled read once', () => {
    const rounds = new ReadIndexRounds(500);
    const a = waiter(5_000);
    const b = waiter(5_000);
    rounds.add(a);
    rounds.started('r1', rounds.takeNextRound()!, 0);
    rounds.add(b);
    rounds.answered('r1');
    rounds.rejectAll(new Error('closed'));
    assert.deepEqual(a.outcome, [], 'a was answered (resolved by the node once applied)');
    assert.deepEqual(b.outcome, ['rejected: closed']);
  });
});
