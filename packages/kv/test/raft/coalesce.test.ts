import assert from 'node:assert/strict';
import { coalesceMessages } from '../../src/raft/coalesce.js';
import { type Entry, EntryType, emptyMessage, type Message, MessageType } from '../../src/raft/types.js';
import { Harness } from './harness.js';

const enc = new TextEncoder();
const entry = (index: number, term: number, data = `v${index}`): Entry => ({
  index,
  term,
  type: EntryType.Normal,
  data: enc.encode(data),
});

function app(to: string, term: number, index: number, logTerm: number, entries: Entry[], commit: number) {
  const m = emptyMessage(MessageType.App, 'l', to, term);
  Object.assign(m, { index, logTerm, entries, commit });
  return m;
}

function ack(to: string, term: number, index: number, reject = false): Message {
  const m = emptyMessage(MessageType.AppResp, 'f', to, term);
  Object.assign(m, { index, reject, rejectHint: reject ? index - 1 : 0 });
  return m;
}

describe('raft: coalesceMessages', () => {
  it('merges contiguous appends to one peer into one with every entry and the latest commit', () => {
    const msgs = [
      app('a', 2, 4, 1, [entry(5, 2), entry(6, 2)], 4),
      app('b', 2, 4, 1, [entry(5, 2), entry(6, 2)], 4),
      app('a', 2, 6, 2, [entry(7, 2)], 5),
      app('a', 2, 7, 2, [], 7), // commit-only
    ];
    const out = coalesceMessages(msgs, 1 << 20);
    assert.equal(out.length, 2);
    assert.deepEqual(
      out.map((m) => [m.to, m.index, m.logTerm, m.entries.map((e) => e.index), m.commit]),
      [
        ['a', 4, 1, [5, 6, 7], 7],
        ['b', 4, 1, [5, 6], 4],
      ],
    );
    // The input messages are left as they were (the merge works on a copy).
    assert.deepEqual(
      msgs[0]!.entries.map((e) => e.index),
      [5, 6],
    );
    assert.equal(msgs[0]!.commit, 4);
  });

  it('keeps appends apart when they do not continue each other, change term, or exceed the size limit', () => {
    // A resend from further back (after a rejection) is not a continuation.
    assert.equal(
      coalesceMessages([app('a', 2, 6, 2, [entry(7, 2)], 5), app('a', 2, 4, 1, [entry(5, 2)], 5)], 1 << 20)
        .length,
      2,
    );
    // Same index but another predecessor term: a different log.
    assert.equal(
      coalesceMessages([app('a', 2, 4, 1, [entry(5, 2)], 4), app('a', 2, 5, 1, [entry(6, 2)], 4)], 1 << 20)
        .length,
      2,
    );
    assert.equal(
      coalesceMessages([app('a', 2, 4, 1, [entry(5, 2)], 4), app('a', 3, 5, 2, [entry(6, 3)], 4)], 1 << 20)
        .length,
      2,
    );
    const big = (i: number) => entry(i, 2, 'x'.repeat(100));
    const sized = coalesceMessages(
      [app('a', 2, 4, 1, [big(5)], 4), app('a', 2, 5, 2, [big(6)], 4), app('a', 2, 6, 2, [], 6)],
      150,
    );
    assert.deepEqual(
      sized.map((m) => [m.entries.map((e) => e.index), m.commit]),
      [
        [[5], 4],
        [[6], 6],
      ],
    );
  });

  it('never merges across another message to the same peer', () => {
    const hb = emptyMessage(MessageType.Heartbeat, 'l', 'a', 2);
    const out = coalesceMessages(
      [app('a', 2, 4, 1, [entry(5, 2)], 4), hb, app('a', 2, 5, 2, [entry(6, 2)], 5)],
      1 << 20,
    );
    assert.deepEqual(
      out.map((m) => m.type),
      [MessageType.App, MessageType.Heartbeat, MessageType.App],
    );
  });

  it('keeps only the highest of consecutive successful acks, and every rejection', () => {
    assert.deepEqual(
      coalesceMessages([ack('l', 2, 5), ack('l', 2, 9), ack('l', 2, 7)], 1 << 20).map((m) => m.index),
      [9],
    );
    const withReject = coalesceMessages([ack('l', 2, 5), ack('l', 2, 9, true), ack('l', 2, 10)], 1 << 20);
    assert.deepEqual(
      withReject.map((m) => [m.index, m.reject]),
      [
        [5, false],
        [9, true],
        [10, false],
      ],
    );
    assert.equal(coalesceMessages([ack('l', 2, 5), ack('l', 3, 9)], 1 << 20).length, 2);
  });

  it('a loaded leader sends one append per follower per Ready, and the cluster applies the same', () => {
    const run = (coalesce: boolean) => {
      const h = new Harness(['n1', 'n2', 'n3'], { coalesceMessages: coalesce });
      h.elect('n1');
      h.hideHeartbeats = true;
      let appsInOneReady = 0;
      // Each round the leader's Ready follows three proposals and the acks of the previous round.
      for (let round = 0; round < 5; round++) {
        for (const p of ['a', 'b', 'c']) h.propose('n1', `${p}${round}`);
        const queued = h.queue.length;
        h.process('n1');
        const apps = h.queue.slice(queued).filter((m) => m.type === MessageType.App && m.to === 'n2');
        appsInOneReady = Math.max(appsInOneReady, apps.length);
        h.deliver();
        h.process('n2');
        h.process('n3');
        h.deliver();
      }
      h.stabilize();
      return { appsInOneReady, applied: [...h.nodes.values()].map((n) => n.applied) };
    };
    const plain = run(false);
    const merged = run(true);
    assert.ok(
      plain.appsInOneReady >= 4,
      `without coalescing: one append per proposal and per commit step, got ${plain.appsInOneReady}`,
    );
    assert.equal(merged.appsInOneReady, 1);
    assert.deepEqual(merged.applied, plain.applied);
    assert.equal(merged.applied[0]!.length, 15);
    for (const a of merged.applied) assert.deepEqual(a, merged.applied[0]);
  });
});
