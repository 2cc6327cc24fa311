// The unmodified npm `consul` client against our server: what a Consul user's code sees.
import assert from 'node:assert/strict';
import Consul from 'consul';
import { startServer, type TestServer } from './helpers.js';

// papi (under the client) resolves a `false` JSON body as undefined; real Consul's `false` gives the same.
const REFUSED = undefined;

describe('http: the npm consul client works unchanged', () => {
  let s: TestServer;
  let consul: Consul;
  let now = 5_000_000;
  beforeEach(async () => {
    now = 5_000_000;
    s = await startServer({ backend: { nodeName: 'weft-1', nowMs: () => now } });
    consul = new Consul({ host: '127.0.0.1', port: s.port });
  });
  afterEach(async () => {
    consul.destroy();
    await s.close();
  });

  it('kv: set / get / keys / del, with flags, indexes and 404 as undefined', async () => {
    assert.equal(await consul.kv.set('app/db', 'postgres'), true);
    assert.equal(await consul.kv.set({ key: 'app/web', value: 'nginx', flags: 7 }), true);
    const db = await consul.kv.get('app/db');
    assert.deepEqual(db, {
      LockIndex: 0,
      Key: 'app/db',
      Flags: 0,
      Value: 'postgres',
      CreateIndex: 2,
      ModifyIndex: 2,
    });
    assert.equal((await consul.kv.get('app/web'))?.Flags, 7);
    assert.equal(await consul.kv.get('app/missing'), undefined);
    assert.deepEqual(await consul.kv.keys('app/'), ['app/db', 'app/web']);
    const all = (await consul.kv.get({ key: 'app/', recurse: true })) as Array<{
      Key: string;
      Value: string;
    }>;
    assert.deepEqual(
      all.map((e) => [e.Key, e.Value]),
      [
        ['app/db', 'postgres'],
        ['app/web', 'nginx'],
      ],
    );
    assert.equal(await consul.kv.set({ key: 'app/db', value: 'x', cas: 1 }), REFUSED);
    assert.equal(await consul.kv.set({ key: 'app/db', value: 'mysql', cas: 2 }), true);
    assert.equal((await consul.kv.get('app/db'))?.Value, 'mysql');
    await consul.kv.del('app/web');
    assert.equal(await consul.kv.get('app/web'), undefined);
    await consul.kv.del({ key: 'app/', recurse: true });
    assert.deepEqual(await consul.kv.keys(''), []);
  });

  it('kv: a server-side error surfaces as a client error with our message', async () => {
    await assert.rejects(consul.kv.set({ key: 'k', value: 'v', flags: -1 }), /Invalid \?flags="-1"/);
  });

  it('transaction: all-or-nothing with Consul result shapes', async () => {
    const b64 = (t: string) => Buffer.from(t).toString('base64');
    // The package's .d.ts declares create(options); its JavaScript takes the operations array (as called here).
    const create = (ops: unknown[]) => consul.transaction.create(ops as never) as Promise<unknown>;
    const ok = (await create([
      { KV: { Verb: 'set', Key: 't/a', Value: b64('1') } },
      { KV: { Verb: 'set', Key: 't/b', Value: b64('2') } },
    ])) as { Results: Array<{ KV: { Key: string } }>; Errors: null };
    assert.deepEqual(
      ok.Results.map((r) => r.KV.Key),
      ['t/a', 't/b'],
    );
    assert.equal(ok.Errors, null);
    await assert.rejects(
      create([
        { KV: { Verb: 'delete', Key: 't/a' } },
        { KV: { Verb: 'check-index', Key: 't/b', Index: 999 } },
      ]),
      (err: Error & { response?: { statusCode: number; body: unknown } }) => {
        assert.equal(err.response?.statusCode, 409);
        assert.deepEqual(err.response?.body, {
          Results: null,
          Errors: [{ OpIndex: 1, What: 'failed index check for key "t/b", current modify index 2 != 999' }],
        });
        return true;
      },
    );
    assert.equal((await consul.kv.get('t/a'))?.Value, '1');
  });

  it('session + lock: acquire, contend, release, destroy releases', async () => {
    const a = (await consul.session.create({ name: 'a', ttl: '10s', lockdelay: '1ms' })) as { ID: string };
    const b = (await consul.session.create({ name: 'b' })) as { ID: string };
    const info = (await consul.session.info(a.ID)) as {
      ID: string;
      Node: string;
      TTL: string;
      Behavior: string;
    };
    assert.deepEqual([info.ID, info.Node, info.TTL, info.Behavior], [a.ID, 'weft-1', '10s', 'release']);
    assert.equal(((await consul.session.list()) as unknown[]).length, 2);
    assert.equal(await consul.kv.set({ key: 'leader', value: 'a', acquire: a.ID }), true);
    assert.equal(await consul.kv.set({ key: 'leader', value: 'b', acquire: b.ID }), REFUSED);
    const held = await consul.kv.get('leader');
    assert.equal((held as unknown as { Session: string }).Session, a.ID);
    assert.equal(held?.LockIndex, 1);
    const renewed = (await consul.session.renew(a.ID)) as Array<{ ID: string }>;
    assert.equal(renewed[0]?.ID, a.ID);
    await consul.session.destroy(a.ID);
    assert.equal(((await consul.kv.get('leader')) as unknown as { Session?: string }).Session, undefined);
    now += 1; // lock-delay of 1 ms has passed
    assert.equal(await consul.kv.set({ key: 'leader', value: 'b', acquire: b.ID }), true);
    assert.equal(await consul.kv.set({ key: 'leader', value: 'b-out', release: b.ID }), true);
    assert.equal((await consul.kv.get('leader'))?.Value, 'b-out');
  });

  it('watch: a blocking-query watch sees each change exactly once', async () => {
    await consul.kv.set('cfg/x', '1');
    const watch = consul.watch({
      method: consul.kv.get,
      options: { key: 'cfg/', recurse: 'true', wait: '5s' },
    });
    const seen: string[][] = [];
    const waitFor = (n: number) =>
      new Promise<void>((resolve, reject) => {
        const check = () => {
          if (seen.length >= n) {
            watch.off('change', check);
            resolve();
          }
        };
        watch.on('change', check);
        watch.on('error', reject);
        check();
      });
    watch.on('change', (data: Array<{ Key: string; Value: string }> | undefined) => {
      seen.push((data ?? []).map((e) => `${e.Key}=${e.Value}`));
    });
    try {
      await waitFor(1);
      await consul.kv.set('cfg/y', '2');
      await waitFor(2);
      await consul.kv.set('other', 'ignored');
      await consul.kv.del('cfg/x');
      await waitFor(3);
      assert.deepEqual(seen, [['cfg/x=1'], ['cfg/x=1', 'cfg/y=2'], ['cfg/y=2']]);
    } finally {
      watch.end();
    }
  });
});
