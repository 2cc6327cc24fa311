// The KvStore contract as one importable mocha suite. The in-memory fake and
// the replicated @weft/kv node both run it, so a unit test that passes
// against the fake says something about the real store.
//
//   import { kvStoreComplianceSuite } from '@weft/overlay/testing/kvstore-compliance';
//   kvStoreComplianceSuite('my store', async () => ({ store, close: async () => … }));

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import type { KvEntry, KvStore, WatchEvent } from '../kvstore.js';

export interface KvStoreHarness {
  store: KvStore;
  /**
   * Moves the store's clock forward (fake clocks). Without it the TTL tests
   * wait in real time, using `sessionTtlMs` from the suite options.
   */
  advanceTimeMs?(ms: number): Promise<void>;
  close(): Promise<void>;
}

export interface KvStoreComplianceOptions {
  /** TTL used by the session expiry tests; keep it short for real-time stores. */
  sessionTtlMs?: number;
  /**
   * Extra time a store may take beyond 2 × TTL to invalidate an expired session
   * (Consul invalidates between TTL and 2 × TTL).
   */
  expirySlackMs?: number;
}

const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array) => new TextDecoder().decode(b);

export function kvStoreComplianceSuite(
  name: string,
  factory: () => Promise<KvStoreHarness>,
  options: KvStoreComplianceOptions = {},
): void {
  describe(`KvStore compliance: ${name}`, () => {
    let h: KvStoreHarness;
    let kv: KvStore;
    /** Unique per test, so a store shared between tests (a real cluster) cannot interfere. */
    let p: string;
    const ttlMs = options.sessionTtlMs ?? 1_000;
    const slackMs = options.expirySlackMs ?? 1_000;

    beforeEach(async () => {
      h = await factory();
      kv = h.store;
      p = `compliance/${randomBytes(4).toString('hex')}/`;
    });
    afterEach(async () => {
      await h?.close();
    });

    async function passTime(ms: number): Promise<void> {
      if (h.advanceTimeMs) await h.advanceTimeMs(ms);
      else await new Promise((r) => setTimeout(r, ms));
    }

    /** Waits (bounded) until the store says the session is gone. */
    async function expectSessionGoneWithin(session: string, boundMs: number): Promise<void> {
      if (h.advanceTimeMs) {
        await h.advanceTimeMs(boundMs);
        assert.equal(await kv.renewSession(session), false, 'session must be invalid after its TTL expired');
        return;
      }
      const deadline = Date.now() + boundMs;
      // Probe with a key acquire rather than renew: renewing would keep it alive.
      const probe = `${p}probe`;
      for (;;) {
        const held = await kv.get(probe);
        if (!held || held.session !== session) return;
        if (Date.now() > deadline) assert.fail(`session ${session} still holds ${probe} after ${boundMs} ms`);
        await new Promise((r) => setTimeout(r, 50));
      }
    }

    describe('keys and indexes', () => {
      it('get of a missing key is null; put then get round-trips value and flags', async () => {
        assert.equal(await kv.get(`${p}missing`), null);
        const value = new Uint8Array([0, 1, 2, 255, 128]);
        assert.equal(await kv.put(`${p}a`, value, { flags: 0xffff_ffff_ffff_ffffn }), true);
        const e = await kv.get(`${p}a`);
        assert.ok(e);
        assert.equal(e.key, `${p}a`);
        assert.deepEqual([...e.value], [...value]);
        assert.equal(e.flags, 0xffff_ffff_ffff_ffffn);
        assert.equal(e.createIndex, e.modifyIndex);
        assert.equal(e.lockIndex, 0);
        assert.equal(e.session, undefined);
      });

      it('an update keeps CreateIndex and raises ModifyIndex', async () => {
        await kv.put(`${p}a`, enc('1'));
        const first = await kv.get(`${p}a`);
        await kv.put(`${p}a`, enc('2'));
        const second = await kv.get(`${p}a`);
        assert.ok(first && second);
        assert.equal(second.createIndex, first.createIndex);
        assert.ok(second.modifyIndex > first.modifyIndex);
        assert.equal(dec(second.value), '2');
      });

      it('list returns exactly the keys under a prefix, sorted', async () => {
        await kv.put(`${p}b/2`, enc('x'));
        await kv.put(`${p}a`, enc('x'));
        await kv.put(`${p}b/1`, enc('x'));
        await kv.put(`${p}bb`, enc('x'));
        await kv.put(`${p.slice(0, -1)}x`, enc('outside'));
        assert.deepEqual(
          (await kv.list(`${p}b/`)).map((e) => e.key),
          [`${p}b/1`, `${p}b/2`],
        );
        assert.deepEqual(
          (await kv.list(p)).map((e) => e.key),
          [`${p}a`, `${p}b/1`, `${p}b/2`, `${p}bb`],
        );
        assert.deepEqual(await kv.list(`${p}none/`), []);
        await kv.delete(`${p.slice(0, -1)}x`);
      });

      it('cas=0 creates only when absent; cas=index updates only at that index', async () => {
        assert.equal(await kv.put(`${p}c`, enc('1'), { cas: 0 }), true);
        assert.equal(await kv.put(`${p}c`, enc('2'), { cas: 0 }), false);
        const e = await kv.get(`${p}c`);
        assert.ok(e);
        assert.equal(dec(e.value), '1');
        assert.equal(await kv.put(`${p}c`, enc('3'), { cas: e.modifyIndex + 1000 }), false);
        assert.equal(await kv.put(`${p}c`, enc('3'), { cas: e.modifyIndex }), true);
        assert.equal(await kv.put(`${p}c`, enc('4'), { cas: e.modifyIndex }), false);
        assert.equal(dec((await kv.get(`${p}c`))!.value), '3');
      });

      it('concurrent cas=0 creates of one key: exactly one succeeds', async () => {
        const results = await Promise.all(
          Array.from({ length: 10 }, (_, i) => kv.put(`${p}race`, enc(String(i)), { cas: 0 })),
        );
        assert.equal(results.filter(Boolean).length, 1);
        const winner = results.indexOf(true);
        assert.equal(dec((await kv.get(`${p}race`))!.value), String(winner));
      });

      it('read-modify-write with cas loses no update under concurrency', async () => {
        await kv.put(`${p}counter`, enc('0'));
        const writers = 8;
        await Promise.all(
          Array.from({ length: writers }, async () => {
            for (let attempt = 0; attempt < 200; attempt++) {
              const cur = (await kv.get(`${p}counter`))!;
              const next = String(Number(dec(cur.value)) + 1);
              if (await kv.put(`${p}counter`, enc(next), { cas: cur.modifyIndex })) return;
            }
            assert.fail('cas retries did not converge');
          }),
        );
        assert.equal(dec((await kv.get(`${p}counter`))!.value), String(writers));
      });

      it('delete, delete with cas, recursive delete', async () => {
        await kv.put(`${p}d/1`, enc('x'));
        await kv.put(`${p}d/2`, enc('x'));
        await kv.put(`${p}d/3`, enc('x'));
        await kv.put(`${p}keep`, enc('x'));
        assert.equal(await kv.delete(`${p}d/1`), true);
        assert.equal(await kv.get(`${p}d/1`), null);
        const two = (await kv.get(`${p}d/2`))!;
        assert.equal(await kv.delete(`${p}d/2`, { cas: two.modifyIndex + 1000 }), false);
        assert.ok(await kv.get(`${p}d/2`));
        assert.equal(await kv.delete(`${p}d/2`, { cas: two.modifyIndex }), true);
        assert.equal(await kv.get(`${p}d/2`), null);
        assert.equal(await kv.delete(`${p}d/`, { recurse: true }), true);
        assert.deepEqual(
          (await kv.list(p)).map((e) => e.key),
          [`${p}keep`],
        );
      });
    });

    describe('transactions', () => {
      it('applies all operations at one index and returns get results', async () => {
        await kv.put(`${p}x`, enc('old'));
        const r = await kv.txn([
          { verb: 'set', key: `${p}a`, value: enc('A') },
          { verb: 'cas', key: `${p}b`, value: enc('B'), index: 0 },
          { verb: 'delete', key: `${p}x` },
          { verb: 'get', key: `${p}a` },
        ]);
        assert.equal(r.ok, true);
        if (!r.ok) return;
        const a = (await kv.get(`${p}a`))!;
        const b = (await kv.get(`${p}b`))!;
        assert.equal(a.modifyIndex, b.modifyIndex, 'one transaction = one index');
        assert.equal(r.index, a.modifyIndex);
        assert.equal(await kv.get(`${p}x`), null);
        const got = r.results.find((e) => e.key === `${p}a` && dec(e.value) === 'A');
        assert.ok(got, 'get result carries the value written earlier in the same transaction');
      });

      it('is all-or-nothing: one failed check leaves every key unchanged and names the failed op', async () => {
        await kv.put(`${p}exists`, enc('v'));
        const before = await kv.list(p);
        const r = await kv.txn([
          { verb: 'set', key: `${p}new`, value: enc('n') },
          { verb: 'delete', key: `${p}exists` },
          { verb: 'check-not-exists', key: `${p}exists` },
          { verb: 'set', key: `${p}new2`, value: enc('n') },
        ]);
        // the delete before it makes check-not-exists pass: ops see earlier ops
        assert.equal(r.ok, true);
        await kv.put(`${p}exists`, enc('v'));
        const snapshot = await kv.list(p);
        const r2 = await kv.txn([
          { verb: 'set', key: `${p}never`, value: enc('n') },
          { verb: 'delete', key: `${p}new` },
          { verb: 'check-not-exists', key: `${p}exists` },
        ]);
        assert.equal(r2.ok, false);
        if (r2.ok) return;
        assert.deepEqual(
          r2.errors.map((e) => e.opIndex),
          [2],
        );
        assert.ok(r2.errors[0].what.length > 0);
        assert.deepEqual(await kv.list(p), snapshot);
        assert.ok(before.length > 0);
      });

      it('cas / check-index / delete-cas / get of a missing key fail the transaction', async () => {
        await kv.put(`${p}k`, enc('v'));
        const k = (await kv.get(`${p}k`))!;
        const failing: Parameters<KvStore['txn']>[0][] = [
          [{ verb: 'cas', key: `${p}k`, value: enc('z'), index: 0 }],
          [{ verb: 'cas', key: `${p}k`, value: enc('z'), index: k.modifyIndex + 1000 }],
          [{ verb: 'check-index', key: `${p}k`, index: k.modifyIndex + 1000 }],
          [{ verb: 'check-index', key: `${p}missing`, index: 1 }],
          [{ verb: 'delete-cas', key: `${p}k`, index: k.modifyIndex + 1000 }],
          [{ verb: 'get', key: `${p}missing` }],
          [{ verb: 'check-session', key: `${p}k`, session: '00000000-0000-0000-0000-000000000000' }],
        ];
        for (const ops of failing) {
          const r = await kv.txn([{ verb: 'set', key: `${p}side`, value: enc('s') }, ...ops]);
          assert.equal(r.ok, false, `expected failure for ${JSON.stringify(ops[0].verb)}`);
          if (!r.ok) assert.equal(r.errors[0].opIndex, 1);
          assert.equal(await kv.get(`${p}side`), null);
        }
        const ok = await kv.txn([
          { verb: 'check-index', key: `${p}k`, index: k.modifyIndex },
          { verb: 'delete-cas', key: `${p}k`, index: k.modifyIndex },
        ]);
        assert.equal(ok.ok, true);
        assert.equal(await kv.get(`${p}k`), null);
        // Like Consul, delete-cas of a key that is already gone succeeds: callers that
        // must know who deleted it pair it with check-index (which fails on a missing key).
        assert.equal((await kv.txn([{ verb: 'delete-cas', key: `${p}k`, index: k.modifyIndex }])).ok, true);
        const raced = await kv.txn([
          { verb: 'check-index', key: `${p}k`, index: k.modifyIndex },
          { verb: 'delete-cas', key: `${p}k`, index: k.modifyIndex },
        ]);
        assert.equal(raced.ok, false);
      });

      it('get-tree and delete-tree work on prefixes', async () => {
        await kv.put(`${p}t/1`, enc('1'));
        await kv.put(`${p}t/2`, enc('2'));
        await kv.put(`${p}u`, enc('u'));
        const r = await kv.txn([{ verb: 'get-tree', key: `${p}t/` }]);
        assert.ok(r.ok);
        if (!r.ok) return;
        assert.deepEqual(
          r.results.map((e) => [e.key, dec(e.value)]),
          [
            [`${p}t/1`, '1'],
            [`${p}t/2`, '2'],
          ],
        );
        const d = await kv.txn([{ verb: 'delete-tree', key: `${p}t/` }]);
        assert.ok(d.ok);
        assert.deepEqual(
          (await kv.list(p)).map((e) => e.key),
          [`${p}u`],
        );
      });

      it('rejects more than 64 operations and writes nothing', async () => {
        const ops = Array.from({ length: 65 }, (_, i) => ({
          verb: 'set' as const,
          key: `${p}many/${i}`,
          value: enc('x'),
        }));
        await assert.rejects(kv.txn(ops));
        assert.deepEqual(await kv.list(`${p}many/`), []);
        const r = await kv.txn(ops.slice(0, 64));
        assert.ok(r.ok);
        assert.equal((await kv.list(`${p}many/`)).length, 64);
      });
    });

    describe('sessions and locks', () => {
      it('acquire / release: one holder at a time, LockIndex counts acquisitions', async () => {
        const s1 = await kv.createSession({ ttlMs: 60_000, lockDelayMs: 0 });
        const s2 = await kv.createSession({ ttlMs: 60_000, lockDelayMs: 0 });
        try {
          assert.notEqual(s1, s2);
          assert.equal(await kv.put(`${p}lock`, enc('one'), { acquire: s1 }), true);
          let e = (await kv.get(`${p}lock`))!;
          assert.equal(e.session, s1);
          assert.equal(e.lockIndex, 1);
          assert.equal(await kv.put(`${p}lock`, enc('two'), { acquire: s2 }), false);
          assert.equal(dec((await kv.get(`${p}lock`))!.value), 'one');
          // re-acquire by the holder updates the value without a new LockIndex
          assert.equal(await kv.put(`${p}lock`, enc('one-b'), { acquire: s1 }), true);
          e = (await kv.get(`${p}lock`))!;
          assert.equal(e.lockIndex, 1);
          assert.equal(dec(e.value), 'one-b');
          assert.equal(await kv.put(`${p}lock`, enc('x'), { release: s2 }), false);
          assert.equal(await kv.put(`${p}lock`, enc('free'), { release: s1 }), true);
          e = (await kv.get(`${p}lock`))!;
          assert.equal(e.session, undefined);
          assert.equal(await kv.put(`${p}lock`, enc('two'), { acquire: s2 }), true);
          e = (await kv.get(`${p}lock`))!;
          assert.equal(e.session, s2);
          assert.equal(e.lockIndex, 2);
        } finally {
          await kv.destroySession(s1);
          await kv.destroySession(s2);
        }
      });

      it('acquire with a session that does not exist is rejected', async () => {
        const s = await kv.createSession({ ttlMs: 60_000, lockDelayMs: 0 });
        await kv.destroySession(s);
        await assert.rejects(kv.put(`${p}lock`, enc('x'), { acquire: s }));
        assert.equal(await kv.get(`${p}lock`), null);
      });

      it('txn lock / check-session / unlock', async () => {
        const s = await kv.createSession({ ttlMs: 60_000, lockDelayMs: 0 });
        try {
          const r = await kv.txn([
            { verb: 'lock', key: `${p}l`, value: enc('v'), session: s },
            { verb: 'check-session', key: `${p}l`, session: s },
            { verb: 'set', key: `${p}other`, value: enc('o') },
          ]);
          assert.ok(r.ok);
          assert.equal((await kv.get(`${p}l`))!.session, s);
          const u = await kv.txn([{ verb: 'unlock', key: `${p}l`, value: enc('v2'), session: s }]);
          assert.ok(u.ok);
          const c = await kv.txn([{ verb: 'check-session', key: `${p}l`, session: s }]);
          assert.equal(c.ok, false);
        } finally {
          await kv.destroySession(s);
        }
      });

      it('destroying a "release" session frees its keys (ModifyIndex moves); a "delete" session removes them', async () => {
        const rel = await kv.createSession({ ttlMs: 60_000, behavior: 'release', lockDelayMs: 0 });
        const del = await kv.createSession({ ttlMs: 60_000, behavior: 'delete', lockDelayMs: 0 });
        await kv.put(`${p}r`, enc('r'), { acquire: rel });
        await kv.put(`${p}d`, enc('d'), { acquire: del });
        const before = (await kv.get(`${p}r`))!;
        await kv.destroySession(rel);
        await kv.destroySession(del);
        const after = (await kv.get(`${p}r`))!;
        assert.equal(after.session, undefined);
        assert.equal(dec(after.value), 'r');
        assert.ok(after.modifyIndex > before.modifyIndex);
        assert.equal(await kv.get(`${p}d`), null);
        assert.equal(await kv.renewSession(rel), false);
        // with lock delay 0 the freed key can be taken at once
        const s3 = await kv.createSession({ ttlMs: 60_000, lockDelayMs: 0 });
        assert.equal(await kv.put(`${p}r`, enc('again'), { acquire: s3 }), true);
        await kv.destroySession(s3);
      });

      it('a session that is renewed stays; one that is not expires within 2 x TTL and drops its keys', async function () {
        this.timeout(20_000 + ttlMs * 8);
        const kept = await kv.createSession({ ttlMs, behavior: 'delete', lockDelayMs: 0 });
        const lapsed = await kv.createSession({ ttlMs, behavior: 'delete', lockDelayMs: 0 });
        await kv.put(`${p}kept`, enc('k'), { acquire: kept });
        await kv.put(`${p}probe`, enc('l'), { acquire: lapsed });
        // renew `kept` at half-TTL steps across more than two TTLs
        for (let elapsed = 0; elapsed < ttlMs * 2; elapsed += ttlMs / 2) {
          await passTime(ttlMs / 2);
          assert.equal(await kv.renewSession(kept), true, `renew at ${elapsed + ttlMs / 2} ms`);
        }
        // 2 x TTL have passed since `lapsed` was last touched
        await expectSessionGoneWithin(lapsed, h.advanceTimeMs ? 0 : slackMs);
        assert.equal(await kv.get(`${p}probe`), null);
        assert.equal((await kv.get(`${p}kept`))?.session, kept);
        assert.equal(await kv.renewSession(lapsed), false);
        await kv.destroySession(kept);
        assert.equal(await kv.get(`${p}kept`), null);
      });

      it('renewing an unknown session returns false', async () => {
        assert.equal(await kv.renewSession('00000000-0000-0000-0000-000000000000'), false);
      });
    });

    describe('watch (blocking queries)', () => {
      async function next(it: AsyncIterator<WatchEvent>, what: string): Promise<WatchEvent> {
        let timer: NodeJS.Timeout | undefined;
        const timeout = new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error(`watch did not yield: ${what}`)), 5_000);
        });
        try {
          const r = await Promise.race([it.next(), timeout]);
          assert.equal(r.done, false, `watch ended early: ${what}`);
          return r.value as WatchEvent;
        } finally {
          clearTimeout(timer);
        }
      }
      const keys = (entries: KvEntry[]) => entries.map((e) => e.key);

      it('yields the listing now, then after each change under the prefix (writes, deletes, session drops)', async () => {
        await kv.put(`${p}w/1`, enc('1'));
        const ac = new AbortController();
        const it = kv.watch(`${p}w/`, { signal: ac.signal })[Symbol.asyncIterator]();
        try {
          const first = await next(it, 'initial listing');
          assert.deepEqual(keys(first.entries), [`${p}w/1`]);
          assert.ok(first.index >= 1);

          const pending = next(it, 'after put');
          await kv.put(`${p}elsewhere`, enc('x')); // outside the prefix: may not wake it
          await kv.put(`${p}w/2`, enc('2'));
          const second = await pending;
          assert.deepEqual(keys(second.entries), [`${p}w/1`, `${p}w/2`]);
          assert.ok(second.index > first.index);

          await kv.delete(`${p}w/1`);
          let third = await next(it, 'after delete');
          while (keys(third.entries).includes(`${p}w/1`)) third = await next(it, 'after delete');
          assert.deepEqual(keys(third.entries), [`${p}w/2`]);
          assert.ok(third.index > second.index);

          const s = await kv.createSession({ ttlMs: 60_000, behavior: 'delete', lockDelayMs: 0 });
          await kv.put(`${p}w/held`, enc('h'), { acquire: s });
          let fourth = await next(it, 'after acquire');
          while (!keys(fourth.entries).includes(`${p}w/held`)) fourth = await next(it, 'after acquire');
          await kv.destroySession(s);
          let fifth = await next(it, 'after session destroy');
          while (keys(fifth.entries).includes(`${p}w/held`)) fifth = await next(it, 'after session destroy');
          assert.deepEqual(keys(fifth.entries), [`${p}w/2`]);
        } finally {
          ac.abort();
        }
      });

      it('a burst of writes may be coalesced, but the last state always arrives', async () => {
        const ac = new AbortController();
        const it = kv.watch(`${p}burst/`, { signal: ac.signal })[Symbol.asyncIterator]();
        try {
          await next(it, 'initial listing');
          for (let i = 1; i <= 30; i++) await kv.put(`${p}burst/k`, enc(String(i)));
          let last = await next(it, 'burst');
          let lastIndex = last.index;
          while (dec(last.entries[0]?.value ?? enc('')) !== '30') {
            last = await next(it, 'rest of the burst');
            assert.ok(last.index > lastIndex, 'indexes only move forward');
            lastIndex = last.index;
          }
        } finally {
          ac.abort();
        }
      });

      it('with an index, waits until the prefix moves past it; abort ends the iteration', async () => {
        await kv.put(`${p}i/a`, enc('1'));
        const idx = (await kv.get(`${p}i/a`))!.modifyIndex;
        const ac = new AbortController();
        const it = kv.watch(`${p}i/`, { index: idx, signal: ac.signal })[Symbol.asyncIterator]();
        let yielded = false;
        const pending = next(it, 'after change').then((ev) => {
          yielded = true;
          return ev;
        });
        await new Promise((r) => setTimeout(r, 100));
        assert.equal(yielded, false, 'a watch from the current index must block');
        await kv.put(`${p}i/a`, enc('2'));
        const ev = await pending;
        assert.ok(ev.index > idx);
        assert.equal(dec(ev.entries[0].value), '2');
        const after = it.next();
        ac.abort();
        const end = await Promise.race([after, new Promise((r) => setTimeout(() => r('timeout'), 5_000))]);
        assert.notEqual(end, 'timeout', 'abort must end a blocked watch');
        assert.equal((end as IteratorResult<WatchEvent>).done, true);
      });
    });
  });
}
