import assert from 'node:assert/strict';
import { packr } from '../../src/fsm/codec.js';
import { type DirEntry, KvStateMachine } from '../../src/fsm/index.js';
import { dec, enc, Harness, op } from './helpers.js';

// msgpackr caches a DataView on buffers it decodes, so compare bytes, not objects.
function assertSameBytes(a: Uint8Array, b: Uint8Array): void {
  assert.ok(Buffer.from(a).equals(Buffer.from(b)), 'byte sequences differ');
}

function entry(h: Harness, key: string): DirEntry {
  const e = h.fsm.get(key).value;
  assert.ok(e, `expected key ${key} to exist`);
  return e;
}

describe('fsm: KV verbs', () => {
  it('set creates, then updates keeping CreateIndex; flags round-trip as uint64', () => {
    const h = new Harness();
    assert.deepEqual(h.set('a', 'one', { flags: 42n }), { type: 'kv', ok: true });
    let e = entry(h, 'a');
    assert.equal(dec(e.value), 'one');
    assert.equal(e.flags, 42n);
    assert.equal(e.createIndex, 1);
    assert.equal(e.modifyIndex, 1);
    h.set('a', 'two', { flags: 18446744073709551615n });
    e = entry(h, 'a');
    assert.equal(dec(e.value), 'two');
    assert.equal(e.flags, 18446744073709551615n);
    assert.deepEqual([e.createIndex, e.modifyIndex], [1, 2]);
    assert.equal(h.fsm.get('a').index, 2);
  });

  it('writing an identical entry does not bump ModifyIndex (no spurious watch wakeups)', () => {
    const h = new Harness();
    h.set('a', 'same');
    h.set('a', 'same');
    assert.equal(entry(h, 'a').modifyIndex, 1);
    assert.equal(h.fsm.kvIndex, 1);
  });

  it('cas: 0 means create-only; otherwise ModifyIndex must match', () => {
    const h = new Harness();
    assert.deepEqual(h.kv('cas', 'k', { value: enc('v1'), index: 0 }), { type: 'kv', ok: true });
    assert.deepEqual(h.kv('cas', 'k', { value: enc('v2'), index: 0 }), { type: 'kv', ok: false });
    assert.deepEqual(h.kv('cas', 'k', { value: enc('v2'), index: 99 }), { type: 'kv', ok: false });
    assert.equal(dec(entry(h, 'k').value), 'v1');
    assert.deepEqual(h.kv('cas', 'k', { value: enc('v3'), index: 1 }), { type: 'kv', ok: true });
    assert.equal(dec(entry(h, 'k').value), 'v3');
    assert.deepEqual(h.kv('cas', 'missing', { value: enc('x'), index: 5 }), { type: 'kv', ok: false });
    assert.equal(h.fsm.get('missing').value, null);
  });

  it('delete, delete-cas (missing key succeeds like Consul), delete-tree', () => {
    const h = new Harness();
    h.set('a/1', '1');
    h.set('a/2', '2');
    h.set('b', '3');
    assert.deepEqual(h.kv('delete-cas', 'a/1', { index: 7 }), { type: 'kv', ok: false });
    assert.ok(h.fsm.get('a/1').value);
    assert.deepEqual(h.kv('delete-cas', 'a/1', { index: 1 }), { type: 'kv', ok: true });
    assert.equal(h.fsm.get('a/1').value, null);
    assert.deepEqual(h.kv('delete-cas', 'never', { index: 3 }), { type: 'kv', ok: true });
    assert.deepEqual(h.kv('delete', 'b'), { type: 'kv', ok: true });
    assert.deepEqual(h.kv('delete', 'b'), { type: 'kv', ok: true });
    assert.deepEqual(
      h.fsm.list('').value.map((e) => e.key),
      ['a/2'],
    );
    h.set('a/3', '3');
    assert.deepEqual(h.kv('delete-tree', 'a/'), { type: 'kv', ok: true });
    assert.deepEqual(h.fsm.list('').value, []);
  });

  it('a kv command with a read verb or an empty key is rejected and changes nothing', () => {
    const h = new Harness();
    const r = h.kv('get', 'a');
    assert.equal(r.type, 'rejected');
    const r2 = h.kv('set', '');
    assert.deepEqual(r2, { type: 'rejected', error: 'Must provide key' });
    assert.equal(h.fsm.kvIndex, 0);
    assert.equal(h.fsm.appliedIndex, 2);
  });

  it('lists by prefix in key order and folds keys at a separator', () => {
    const h = new Harness();
    for (const k of ['web/b', 'web/a/x', 'web/a/y', 'web/c/', 'db/1', 'webz']) h.set(k, k);
    assert.deepEqual(
      h.fsm.list('web/').value.map((e) => e.key),
      ['web/a/x', 'web/a/y', 'web/b', 'web/c/'],
    );
    assert.deepEqual(h.fsm.keys('web/', '/').value, ['web/a/', 'web/b', 'web/c/']);
    assert.deepEqual(h.fsm.keys('', '/').value, ['db/', 'web/', 'webz']);
    assert.deepEqual(h.fsm.keys('web', '').value, ['web/a/x', 'web/a/y', 'web/b', 'web/c/', 'webz']);
    assert.deepEqual(h.fsm.keys('nope/', '/').value, []);
  });

  it('indexes follow Consul: key → ModifyIndex, missing → table index, prefix → newest entry or tombstone', () => {
    const h = new Harness();
    assert.equal(h.fsm.get('x').index, 1, 'index is never 0 so clients can block on it');
    h.set('p/a', '1'); // 1
    h.set('p/b', '2'); // 2
    h.set('other', '3'); // 3
    assert.equal(h.fsm.get('p/a').index, 1);
    assert.equal(h.fsm.get('missing').index, 3);
    assert.equal(h.fsm.list('p/').index, 2);
    assert.equal(h.fsm.list('').index, 3);
    h.kv('delete', 'p/b'); // 4
    assert.equal(h.fsm.list('p/').index, 4, 'deleting the newest key must not move the prefix index back');
    assert.equal(h.fsm.keys('p/', '/').index, 4);
    assert.equal(h.fsm.list('zzz/').index, 4, 'an empty prefix answers the table index');
    assert.equal(h.fsm.tombstoneCount(), 1);
    h.set('p/b', 'again'); // 5: recreating clears the tombstone
    assert.equal(h.fsm.tombstoneCount(), 0);
    assert.deepEqual(h.run({ type: 'tombstone-reap', upToIndex: 100 }), {
      type: 'tombstone-reap',
      reaped: 0,
    });
    h.kv('delete', 'other'); // 7
    assert.deepEqual(h.run({ type: 'tombstone-reap', upToIndex: 7 }), { type: 'tombstone-reap', reaped: 1 });
    assert.equal(h.fsm.tombstoneCount(), 0);
  });

  it('a malformed entry is rejected without touching state, and the index is consumed', () => {
    const h = new Harness();
    h.set('a', '1');
    const before = h.fsm.snapshot();
    const garbage = [
      new Uint8Array([0xc1]),
      new Uint8Array([]),
      packr.pack({
        v: 1,
        type: 'kv',
        op: { verb: 'set', key: 'a', value: 'not-bytes', flags: 0, index: 0, session: '' },
        nowMs: 1,
      }),
      packr.pack({ v: 1, type: 'txn', ops: [], nowMs: 1 }),
      packr.pack({ v: 1, type: 'explode' }),
      packr.pack({ v: 9, type: 'kv' }),
      packr.pack([1, 2, 3]),
    ];
    for (const [i, bytes] of garbage.entries()) {
      const r = h.fsm.apply(10 + i, bytes);
      assert.equal(r.type, 'rejected', `garbage #${i}`);
      assert.match((r as { error: string }).error, /malformed command/);
    }
    assert.equal(h.fsm.appliedIndex, 10 + garbage.length - 1);
    assert.deepEqual(h.fsm.get('a').value?.value, enc('1'));
    const after = new KvStateMachine();
    after.restore(before);
    assert.deepEqual(h.fsm.list('').value, after.list('').value);
  });

  it('refuses to apply an index that does not advance', () => {
    const h = new Harness();
    h.set('a', '1');
    assert.throws(() => h.fsm.apply(1, new Uint8Array([0xc0])), /does not advance/);
  });
});

describe('fsm: transactions', () => {
  it('applies all ops atomically and returns results like Consul (write results carry no value)', () => {
    const h = new Harness();
    h.set('t/seed', 's');
    const r = h.txn([
      op('set', 't/a', { value: enc('A'), flags: 7n }),
      op('cas', 't/b', { value: enc('B'), index: 0 }),
      op('get', 't/seed'),
      op('check-not-exists', 't/zzz'),
      op('get-tree', 't/'),
    ]);
    assert.equal(r.type, 'txn');
    assert.ok(r.type === 'txn' && r.ok);
    const rows = r.results.map((e) => [e.key, dec(e.value), e.modifyIndex]);
    assert.deepEqual(rows, [
      ['t/a', '', 2],
      ['t/b', '', 2],
      ['t/seed', 's', 1],
      ['t/a', 'A', 2],
      ['t/b', 'B', 2],
      ['t/seed', 's', 1],
    ]);
    assert.equal(r.results[0]?.flags, 7n);
    assert.equal(h.fsm.kvIndex, 2);
    // Like Consul's kvsPreApply, only delete-tree may name the empty key.
    const empty = h.txn([op('get-tree', '')]);
    assert.ok(empty.type === 'txn' && !empty.ok);
    assert.deepEqual(empty.errors, [{ opIndex: 0, what: 'Must provide key' }]);
  });

  it('one failing op rolls back every write, and every failure is reported with its index', () => {
    const h = new Harness();
    h.set('x', 'orig'); // 1
    h.set('gone', 'g'); // 2
    const before = h.fsm.snapshot();
    const r = h.txn([
      op('set', 'x', { value: enc('changed') }),
      op('delete', 'gone'),
      op('set', 'new', { value: enc('n') }),
      op('cas', 'x', { value: enc('c'), index: 1 }), // stale: x was rewritten by op 0
      op('check-index', 'gone', { index: 2 }), // gone was deleted by op 1
      op('get', 'nope'),
      op('check-session', 'x', { session: 'abc' }),
      op('check-not-exists', 'new'),
      op('lock', 'x', { session: '' }),
      op('unlock', 'x', { session: 's' }),
      op('delete-cas', 'x', { index: 1 }),
    ]);
    assert.ok(r.type === 'txn' && !r.ok);
    assert.deepEqual(r.errors, [
      { opIndex: 3, what: 'failed to set key "x", index is stale' },
      { opIndex: 4, what: 'failed to check index, key "gone" doesn\'t exist' },
      { opIndex: 5, what: 'key "nope" doesn\'t exist' },
      { opIndex: 6, what: 'failed session check for key "x", current session "" != "abc"' },
      { opIndex: 7, what: 'key "new" exists' },
      { opIndex: 8, what: 'missing session' },
      { opIndex: 9, what: 'failed to unlock key "x", lock isn\'t held, or is held by another session' },
      { opIndex: 10, what: 'failed to delete key "x", index is stale' },
    ]);
    assertSameBytes(h.fsm.snapshot(), patchApplied(before, h.fsm.appliedIndex));
    assert.equal(dec(entry(h, 'x').value), 'orig');
    assert.ok(h.fsm.get('gone').value);
    assert.equal(h.fsm.get('new').value, null);
    assert.equal(h.fsm.kvIndex, 2);
  });

  it('check-index and check-session pass when they match', () => {
    const h = new Harness();
    h.createSession('s1'); // 1
    h.kv('lock', 'l', { session: 's1', value: enc('held') }); // 2
    const r = h.txn([op('check-index', 'l', { index: 2 }), op('check-session', 'l', { session: 's1' })]);
    assert.ok(r.type === 'txn' && r.ok);
    assert.deepEqual(
      r.results.map((e) => [e.key, e.session, e.value.length]),
      [
        ['l', 's1', 0],
        ['l', 's1', 0],
      ],
    );
  });

  it('readTxn answers read verbs without a Raft index and refuses writes', () => {
    const h = new Harness();
    h.set('a', '1');
    const r = h.fsm.readTxn([op('get', 'a'), op('get-tree', 'a')]);
    assert.ok(r.ok);
    assert.equal(r.results.length, 2);
    const w = h.fsm.readTxn([op('set', 'a')]);
    assert.ok(!w.ok);
    assert.equal(h.fsm.appliedIndex, 1);
  });
});

/** A failed command still consumes its index; compare snapshots modulo appliedIndex. */
function patchApplied(snapshot: Uint8Array, appliedIndex: number): Uint8Array {
  const m = packr.unpack(snapshot) as Record<string, unknown>;
  m.appliedIndex = appliedIndex;
  return new Uint8Array(packr.pack(m));
}

describe('fsm: sessions and locks', () => {
  it('acquire sets Session and bumps LockIndex; re-acquire by the holder keeps it; others fail', () => {
    const h = new Harness();
    h.createSession('s1'); // 1
    h.createSession('s2'); // 2
    assert.deepEqual(h.kv('lock', 'L', { session: 's1', value: enc('me') }), { type: 'kv', ok: true }); // 3
    let e = entry(h, 'L');
    assert.deepEqual([e.session, e.lockIndex, e.createIndex, e.modifyIndex], ['s1', 1, 3, 3]);
    assert.deepEqual(h.kv('lock', 'L', { session: 's1', value: enc('me2') }), { type: 'kv', ok: true }); // 4
    e = entry(h, 'L');
    assert.deepEqual([e.lockIndex, dec(e.value)], [1, 'me2']);
    assert.deepEqual(h.kv('lock', 'L', { session: 's2' }), { type: 'kv', ok: false }); // 5
    assert.deepEqual(h.kv('unlock', 'L', { session: 's2' }), { type: 'kv', ok: false }); // 6
    assert.deepEqual(h.kv('unlock', 'L', { session: 's1', value: enc('bye') }), { type: 'kv', ok: true }); // 7
    e = entry(h, 'L');
    assert.deepEqual([e.session, e.lockIndex, dec(e.value), e.modifyIndex], ['', 1, 'bye', 7]);
    assert.deepEqual(h.kv('lock', 'L', { session: 's2' }), { type: 'kv', ok: true });
    assert.equal(entry(h, 'L').lockIndex, 2);
  });

  it('lock with an unknown or missing session is an error (Consul: invalid session)', () => {
    const h = new Harness();
    assert.deepEqual(h.kv('lock', 'L', { session: 'ghost' }), {
      type: 'rejected',
      error: 'invalid session "ghost"',
    });
    assert.deepEqual(h.kv('lock', 'L', { session: '' }), { type: 'rejected', error: 'missing session' });
    assert.equal(h.fsm.get('L').value, null);
  });

  it('a plain set keeps the lock holder but resets LockIndex, like Consul', () => {
    const h = new Harness();
    h.createSession('s1');
    h.kv('lock', 'L', { session: 's1' });
    h.set('L', 'overwrite');
    const e = entry(h, 'L');
    assert.deepEqual([e.session, e.lockIndex, dec(e.value)], ['s1', 0, 'overwrite']);
  });

  it('destroying a release-session unlocks its keys and starts lock-delay from the stamp', () => {
    const h = new Harness();
    h.createSession('s1', { lockDelayMs: 15_000 }); // 1
    h.createSession('s2'); // 2
    h.kv('lock', 'a', { session: 's1', value: enc('va') }); // 3
    h.kv('lock', 'b', { session: 's1' }); // 4
    h.kv('lock', 'c', { session: 's2' }); // 5
    h.nowMs = 5_000_000;
    assert.deepEqual(h.destroySession('s1'), { type: 'session-destroy', existed: true }); // 6
    const a = entry(h, 'a');
    assert.deepEqual([a.session, a.lockIndex, a.modifyIndex, dec(a.value)], ['', 1, 6, 'va']);
    assert.equal(entry(h, 'c').session, 's2');
    assert.equal(h.fsm.lockDelayUntilMs('a'), 5_015_000);
    assert.equal(h.fsm.session('s1').value, null);
    assert.equal(h.fsm.sessionsIndex, 6);
    assert.equal(h.fsm.kvIndex, 6);
    // Within the delay, nobody may take the lock; after it, they may.
    h.nowMs = 5_014_999;
    assert.deepEqual(h.kv('lock', 'a', { session: 's2' }), { type: 'kv', ok: false });
    const t = h.txn([op('lock', 'a', { session: 's2' })]);
    assert.ok(t.type === 'txn' && !t.ok);
    assert.deepEqual(t.errors, [{ opIndex: 0, what: 'failed to lock key "a" due to lock delay' }]);
    h.nowMs = 5_015_000;
    assert.deepEqual(h.kv('lock', 'a', { session: 's2' }), { type: 'kv', ok: true });
    assert.equal(entry(h, 'a').lockIndex, 2);
    assert.deepEqual(h.destroySession('s1'), { type: 'session-destroy', existed: false });
  });

  it('lock-delay is capped at 60 s like Consul', () => {
    const h = new Harness();
    h.createSession('s1', { lockDelayMs: 3_600_000 });
    h.kv('lock', 'a', { session: 's1' });
    h.destroySession('s1');
    assert.equal(h.fsm.lockDelayUntilMs('a'), h.nowMs + 60_000);
  });

  it('destroying a delete-session deletes its keys (with tombstones)', () => {
    const h = new Harness();
    h.createSession('s1', { behavior: 'delete' });
    h.kv('lock', 'svc/a', { session: 's1' });
    h.set('svc/b', 'unlocked');
    h.destroySession('s1'); // 4
    assert.deepEqual(
      h.fsm.list('svc/').value.map((e) => e.key),
      ['svc/b'],
    );
    assert.equal(h.fsm.list('svc/').index, 4);
  });

  it('renew moves renewIndex only; create with a duplicate id is rejected', () => {
    const h = new Harness();
    h.createSession('s1', { ttlMs: 10_000, ttl: '10s' });
    const r = h.run({ type: 'session-renew', id: 's1', nowMs: h.nowMs });
    assert.ok(r.type === 'session-renew' && r.session);
    assert.deepEqual([r.session.createIndex, r.session.modifyIndex, r.session.renewIndex], [1, 1, 2]);
    assert.equal(h.fsm.sessionsIndex, 1);
    assert.deepEqual(h.run({ type: 'session-renew', id: 'nope', nowMs: 0 }), {
      type: 'session-renew',
      session: null,
    });
    assert.equal(h.createSession('s1').type, 'rejected');
    assert.equal(h.fsm.sessions().value.length, 1);
  });
});

describe('fsm: watches', () => {
  it('wakes key, prefix and session waiters only for changes that touch them', async () => {
    const h = new Harness();
    const woke: string[] = [];
    const track = (name: string, w: { changed: Promise<void> }) => w.changed.then(() => woke.push(name));
    const key = h.fsm.watch({ kind: 'key', key: 'a/x' });
    const prefix = h.fsm.watch({ kind: 'prefix', prefix: 'a/' });
    const other = h.fsm.watch({ kind: 'prefix', prefix: 'b/' });
    const sessions = h.fsm.watch({ kind: 'sessions' });
    for (const [n, w] of [
      ['key', key],
      ['prefix', prefix],
      ['other', other],
      ['sessions', sessions],
    ] as const)
      track(n, w);
    h.set('a/y', '1');
    await Promise.resolve();
    await Promise.resolve();
    assert.deepEqual(woke, ['prefix']);
    h.set('a/y', '1'); // identical write: nothing changes, nobody wakes
    h.set('a/x', '1');
    h.createSession('s');
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(woke.sort(), ['key', 'prefix', 'sessions']);
    assert.equal(h.fsm.waiterCount, 1);
    other.cancel();
    assert.equal(h.fsm.waiterCount, 0);
  });

  it('a failed transaction wakes nobody; restore wakes everybody', async () => {
    const h = new Harness();
    let woke = 0;
    h.fsm.watch({ kind: 'prefix', prefix: '' }).changed.then(() => woke++);
    h.txn([op('set', 'a'), op('get', 'missing')]);
    await new Promise((r) => setImmediate(r));
    assert.equal(woke, 0);
    h.fsm.restore(new KvStateMachine().snapshot());
    await new Promise((r) => setImmediate(r));
    assert.equal(woke, 1);
  });
});

describe('fsm: snapshot, restore, determinism', () => {
  function workload(h: Harness): void {
    h.createSession('s1', { lockDelayMs: 1000, ttlMs: 10_000, ttl: '10s', nodeChecks: ['serfHealth'] });
    h.createSession('s2', { behavior: 'delete', name: 'host' });
    for (let i = 0; i < 20; i++) h.set(`k/${(i * 7) % 13}`, `v${i}`, { flags: BigInt(i) << 40n });
    h.kv('lock', 'k/3', { session: 's1' });
    h.kv('lock', 'k/4', { session: 's2' });
    h.kv('delete', 'k/5');
    h.txn([op('set', 'bin', { value: new Uint8Array([0, 255, 128]) }), op('delete-tree', 'k/1')]);
    h.destroySession('s1');
    h.kv('cas', 'k/2', { value: enc('c'), index: 999 });
  }

  it('restore(snapshot()) reproduces the state exactly, and the snapshot bytes', () => {
    const h = new Harness();
    workload(h);
    const snap = h.fsm.snapshot();
    const copy = new KvStateMachine();
    copy.restore(snap);
    assert.deepEqual(copy.list('').value, h.fsm.list('').value);
    assert.deepEqual(copy.sessions().value, h.fsm.sessions().value);
    assert.equal(copy.appliedIndex, h.fsm.appliedIndex);
    assert.equal(copy.kvIndex, h.fsm.kvIndex);
    assert.equal(copy.lockDelayUntilMs('k/3'), h.fsm.lockDelayUntilMs('k/3'));
    assert.equal(copy.list('k/1').index, h.fsm.list('k/1').index, 'tombstones survive a snapshot');
    assertSameBytes(copy.snapshot(), snap);
  });

  it('the same commands give byte-identical state on two replicas', () => {
    const a = new Harness();
    const b = new Harness();
    workload(a);
    workload(b);
    assertSameBytes(a.fsm.snapshot(), b.fsm.snapshot());
  });

  it('a corrupt snapshot is refused with a clear error and the state is kept', () => {
    const h = new Harness();
    h.set('keep', 'me');
    const bad = packr.pack({
      v: 1,
      appliedIndex: 5,
      kvIndex: 5,
      sessionsIndex: 0,
      entries: [['x', new Uint8Array(0), 0, 1, 1, 0, 'no-such-session']],
      sessions: [],
      tombstones: [],
      lockDelays: [],
    });
    assert.throws(() => h.fsm.restore(bad), /corrupt KV snapshot: key "x" is locked by unknown session/);
    assert.throws(() => h.fsm.restore(new Uint8Array([1, 2, 3])), /corrupt KV snapshot/);
    assert.equal(dec(entry(h, 'keep').value), 'me');
  });
});
