import assert from 'node:assert/strict';
import { SessionReaper, TombstoneReaper } from '../../src/fsm/index.js';
import { Harness } from './helpers.js';

describe('fsm: SessionReaper (leader-side TTL expiry)', () => {
  it('with agreeing clocks: expires exactly ttl × grace after the last create/renew stamp', () => {
    const h = new Harness();
    let now = 0;
    h.nowMs = 0;
    const reaper = new SessionReaper({ nowMs: () => now, ttlGraceMultiplier: 2 });
    h.createSession('ttl', { ttlMs: 10_000, ttl: '10s' });
    h.createSession('forever'); // no TTL: never reaped
    now = 5_000; // first scan sees the session late; the stamp (0) still counts
    assert.deepEqual(reaper.expired(h.fsm), []);
    now = 19_999;
    assert.deepEqual(reaper.expired(h.fsm), []);
    h.run({ type: 'session-renew', id: 'ttl', nowMs: now });
    now = 25_000;
    assert.deepEqual(reaper.expired(h.fsm), [], 'renewed at 19.999 s');
    now = 39_998;
    assert.deepEqual(reaper.expired(h.fsm), []);
    now = 39_999;
    const cmds = reaper.expired(h.fsm);
    assert.deepEqual(cmds, [{ type: 'session-destroy', id: 'ttl', nowMs: 39_999 }]);
    // Proposing what the reaper returns invalidates the session like any destroy.
    for (const c of cmds) h.run(c);
    assert.deepEqual(
      h.fsm.sessions().value.map((s) => s.id),
      ['forever'],
    );
    now = 10_000_000;
    assert.deepEqual(reaper.expired(h.fsm), []);
  });

  it('a proposer clock far behind cannot expire a session sooner than ttl after the leader saw it', () => {
    const h = new Harness();
    let now = 1_000_000;
    h.nowMs = 0; // proposer is 1000 s behind
    const reaper = new SessionReaper({ nowMs: () => now, ttlGraceMultiplier: 2 });
    h.createSession('s', { ttlMs: 10_000, ttl: '10s' });
    assert.deepEqual(reaper.expired(h.fsm), []);
    now += 9_999;
    assert.deepEqual(reaper.expired(h.fsm), []);
    now += 1;
    assert.equal(reaper.expired(h.fsm).length, 1);
  });

  it('a proposer clock far ahead cannot postpone expiry past what the leader saw', () => {
    const h = new Harness();
    let now = 0;
    h.nowMs = 1_000_000; // proposer is 1000 s ahead
    const reaper = new SessionReaper({ nowMs: () => now, ttlGraceMultiplier: 2 });
    h.createSession('s', { ttlMs: 10_000, ttl: '10s' });
    assert.deepEqual(reaper.expired(h.fsm), []);
    now = 19_999;
    assert.deepEqual(reaper.expired(h.fsm), []);
    now = 20_000;
    assert.equal(reaper.expired(h.fsm).length, 1);
  });

  it('a new leader (reset) re-observes sessions and never expires one sooner than ttl', () => {
    const h = new Harness();
    let now = 0;
    h.nowMs = 0;
    const reaper = new SessionReaper({ nowMs: () => now, ttlGraceMultiplier: 2 });
    h.createSession('s', { ttlMs: 1_000, ttl: '1s' });
    now = 1_500;
    reaper.reset();
    assert.deepEqual(reaper.expired(h.fsm), [], 'stamp is 1.5 s old, but this leader just saw it');
    now = 2_499;
    assert.deepEqual(reaper.expired(h.fsm), []);
    now = 2_500; // seen at 1.5 s + ttl
    assert.equal(reaper.expired(h.fsm).length, 1);
  });

  it('asks for each expired session once, and again only if the destroy has not applied after 5 s', () => {
    const h = new Harness();
    let now = 0;
    h.nowMs = 0;
    const reaper = new SessionReaper({ nowMs: () => now, ttlGraceMultiplier: 1 });
    h.createSession('s', { ttlMs: 1_000, ttl: '1s' });
    assert.deepEqual(reaper.expired(h.fsm), []);
    now = 1_000;
    assert.equal(reaper.expired(h.fsm).length, 1);
    now = 1_001;
    assert.deepEqual(reaper.expired(h.fsm), [], 'destroy still in flight');
    now = 5_999;
    assert.deepEqual(reaper.expired(h.fsm), []);
    now = 6_000;
    assert.equal(reaper.expired(h.fsm).length, 1, 'the first destroy was lost: ask again');
  });

  it('refuses a grace multiplier below 1', () => {
    assert.throws(() => new SessionReaper({ nowMs: () => 0, ttlGraceMultiplier: 0.5 }), /ttlGraceMultiplier/);
  });
});

describe('fsm: TombstoneReaper (leader-side tombstone GC)', () => {
  it('reaps tombstones only once the deletion is older than the TTL', () => {
    const h = new Harness();
    let now = 0;
    const reaper = new TombstoneReaper({ nowMs: () => now, tombstoneTtlMs: 1000 });
    h.set('a', '1'); // 1
    h.kv('delete', 'a'); // 2
    assert.deepEqual(reaper.due(h.fsm), []); // sees kvIndex 2 at t=0
    now = 500;
    h.set('b', '1'); // 3
    h.kv('delete', 'b'); // 4
    assert.deepEqual(reaper.due(h.fsm), []); // sees kvIndex 4 at t=500
    now = 999;
    assert.deepEqual(reaper.due(h.fsm), []);
    now = 1000;
    const first = reaper.due(h.fsm);
    assert.deepEqual(first, [{ type: 'tombstone-reap', upToIndex: 2 }]);
    for (const c of first) h.run(c);
    assert.equal(h.fsm.tombstoneCount(), 1, 'the later deletion is kept');
    assert.equal(h.fsm.list('b').index, 4, 'its prefix index is still exact');
    now = 1500;
    for (const c of reaper.due(h.fsm)) h.run(c);
    assert.equal(h.fsm.tombstoneCount(), 0);
    now = 10_000;
    assert.deepEqual(reaper.due(h.fsm), [], 'nothing left to reap');
  });
});
