// The Consul HTTP API over a real socket, asserting the exact bytes Consul would send.
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { startServer, type TestServer } from './helpers.js';

describe('http: /v1/kv', () => {
  let s: TestServer;
  beforeEach(async () => {
    s = await startServer();
  });
  afterEach(async () => {
    await s.close();
  });

  it('PUT answers true; GET answers Consul DirEntry JSON with X-Consul headers', async () => {
    const put = await s.call('PUT', '/v1/kv/web/config?flags=42', 'bar');
    assert.equal(put.status, 200);
    assert.equal(put.text, 'true');
    assert.equal(put.headers['content-type'], 'application/json');
    const get = await s.call('GET', '/v1/kv/web/config');
    assert.equal(get.status, 200);
    assert.equal(
      get.text,
      '[{"LockIndex":0,"Key":"web/config","Flags":42,"Value":"YmFy","CreateIndex":2,"ModifyIndex":2}]',
    );
    assert.equal(get.headers['x-consul-index'], '2');
    assert.equal(get.headers['x-consul-knownleader'], 'true');
    assert.equal(get.headers['x-consul-lastcontact'], '0');
    assert.equal(get.headers['content-type'], 'application/json');
  });

  it('keeps uint64 flags exact, binary values intact, empty values as null, and HTML-escapes like Go', async () => {
    await s.call('PUT', '/v1/kv/f?flags=18446744073709551615', new Uint8Array([0, 255, 1]));
    const f = await s.call('GET', '/v1/kv/f');
    assert.match(f.text, /"Flags":18446744073709551615,"Value":"AP8B"/);
    const raw = await s.call('GET', '/v1/kv/f?raw');
    assert.deepEqual([...raw.body], [0, 255, 1]);
    assert.equal(raw.headers['content-type'], 'text/plain');
    await s.call('PUT', '/v1/kv/empty', '');
    assert.match((await s.call('GET', '/v1/kv/empty')).text, /"Value":null/);
    await s.call('PUT', `/v1/kv/${encodeURIComponent('a<b>&c')}`, 'x');
    assert.match((await s.call('GET', '/v1/kv/a%3Cb%3E%26c')).text, /"Key":"a\\u003cb\\u003e\\u0026c"/);
  });

  it('missing key: 404 with an empty body and the table index', async () => {
    await s.call('PUT', '/v1/kv/a', '1');
    const r = await s.call('GET', '/v1/kv/nope');
    assert.equal(r.status, 404);
    assert.equal(r.text, '');
    assert.equal(r.headers['x-consul-index'], '2');
  });

  it('recurse lists a prefix in key order; keys folds at the separator; root keys of an empty store is []', async () => {
    assert.equal((await s.call('GET', '/v1/kv/?keys')).text, '[]');
    for (const k of ['app/b', 'app/a/1', 'app/a/2', 'other']) await s.call('PUT', `/v1/kv/${k}`, k);
    const rec = JSON.parse((await s.call('GET', '/v1/kv/app/?recurse')).text) as Array<{
      Key: string;
      Value: string;
    }>;
    assert.deepEqual(
      rec.map((e) => [e.Key, Buffer.from(e.Value, 'base64').toString()]),
      [
        ['app/a/1', 'app/a/1'],
        ['app/a/2', 'app/a/2'],
        ['app/b', 'app/b'],
      ],
    );
    assert.equal((await s.call('GET', '/v1/kv/app/?keys&separator=/')).text, '["app/a/","app/b"]');
    assert.equal((await s.call('GET', '/v1/kv/?keys&seperator=/')).text, '["app/","other"]');
    assert.equal((await s.call('GET', '/v1/kv/zzz/?keys')).status, 404);
    assert.equal((await s.call('GET', '/v1/kv/zzz/?recurse')).status, 404);
    assert.equal(JSON.parse((await s.call('GET', '/v1/kv/?recurse')).text).length, 4);
  });

  it('cas: 0 creates only, a stale index answers false and changes nothing', async () => {
    assert.equal((await s.call('PUT', '/v1/kv/c?cas=0', 'v1')).text, 'true');
    assert.equal((await s.call('PUT', '/v1/kv/c?cas=0', 'v2')).text, 'false');
    assert.equal((await s.call('PUT', '/v1/kv/c?cas=7', 'v2')).text, 'false');
    assert.equal((await s.call('GET', '/v1/kv/c?raw')).text, 'v1');
    assert.equal((await s.call('PUT', '/v1/kv/c?cas=2', 'v3')).text, 'true');
    assert.equal((await s.call('GET', '/v1/kv/c?raw')).text, 'v3');
  });

  it('DELETE: plain, cas, and recurse', async () => {
    for (const k of ['d/1', 'd/2', 'd/3', 'keep']) await s.call('PUT', `/v1/kv/${k}`, 'x');
    assert.equal((await s.call('DELETE', '/v1/kv/d/1')).text, 'true');
    assert.equal((await s.call('DELETE', '/v1/kv/d/2?cas=99')).text, 'false');
    assert.equal((await s.call('DELETE', '/v1/kv/d/2?cas=3')).text, 'true');
    assert.equal((await s.call('DELETE', '/v1/kv/d/?recurse')).text, 'true');
    assert.equal((await s.call('GET', '/v1/kv/?keys')).text, '["keep"]');
  });

  it('blocking query: waits for a change past ?index, then answers with the new index', async () => {
    await s.call('PUT', '/v1/kv/w/a', '1'); // index 2
    const started = Date.now();
    const blocked = s.call('GET', '/v1/kv/w/?recurse&index=2&wait=10s');
    await new Promise((r) => setTimeout(r, 50));
    await s.call('PUT', '/v1/kv/unrelated', 'x'); // 3: outside the prefix, must not answer
    await new Promise((r) => setTimeout(r, 50));
    await s.call('PUT', '/v1/kv/w/b', '2'); // 4
    const r = await blocked;
    assert.equal(r.status, 200);
    assert.equal(r.headers['x-consul-index'], '4');
    assert.equal(JSON.parse(r.text).length, 2);
    assert.ok(Date.now() - started >= 100, 'answered before the relevant change');
    assert.equal(s.backend.fsm.waiterCount, 0);
  });

  it('blocking query: times out after ?wait with the same index; deleting wakes a key watcher', async () => {
    await s.call('PUT', '/v1/kv/k', '1');
    const t = await s.call('GET', '/v1/kv/k?index=2&wait=50ms');
    assert.equal(t.status, 200);
    assert.equal(t.headers['x-consul-index'], '2');
    const blocked = s.call('GET', '/v1/kv/k?index=2&wait=10s');
    await new Promise((r) => setTimeout(r, 30));
    await s.call('DELETE', '/v1/kv/k');
    const r = await blocked;
    assert.equal(r.status, 404);
    assert.equal(r.headers['x-consul-index'], '3');
  });

  it('a client that hangs up stops its blocking query (no waiter left behind)', async () => {
    await s.call('PUT', '/v1/kv/gone', '1');
    const req = request({
      host: '127.0.0.1',
      port: s.port,
      path: '/v1/kv/gone?index=2&wait=10m',
      agent: false,
    });
    req.on('error', () => {});
    req.end();
    for (let i = 0; i < 100 && s.backend.fsm.waiterCount === 0; i++)
      await new Promise((r) => setTimeout(r, 10));
    assert.equal(s.backend.fsm.waiterCount, 1);
    req.destroy();
    for (let i = 0; i < 100 && s.backend.fsm.waiterCount > 0; i++)
      await new Promise((r) => setTimeout(r, 10));
    assert.equal(s.backend.fsm.waiterCount, 0);
  });

  it('close() answers blocked queries instead of hanging', async () => {
    await s.call('PUT', '/v1/kv/c', '1');
    const blocked = s.call('GET', '/v1/kv/c?index=2&wait=10m');
    for (let i = 0; i < 100 && s.backend.fsm.waiterCount === 0; i++)
      await new Promise((r) => setTimeout(r, 10));
    await s.server.close();
    const r = await blocked;
    assert.equal(r.status, 200);
    assert.equal(r.headers['x-consul-index'], '2');
  });

  it('?stale and ?consistent are accepted, and say so in X-Consul-Effective-Consistency', async () => {
    await s.call('PUT', '/v1/kv/k', '1');
    assert.equal((await s.call('GET', '/v1/kv/k?stale')).headers['x-consul-effective-consistency'], 'stale');
    assert.equal(
      (await s.call('GET', '/v1/kv/k?consistent')).headers['x-consul-effective-consistency'],
      'consistent',
    );
    assert.equal((await s.call('GET', '/v1/kv/k')).headers['x-consul-effective-consistency'], 'leader');
  });

  it('?pretty indents like Go MarshalIndent', async () => {
    await s.call('PUT', '/v1/kv/p', 'v');
    assert.equal(
      (await s.call('GET', '/v1/kv/p?pretty')).text,
      '[\n    {\n        "LockIndex": 0,\n        "Key": "p",\n        "Flags": 0,\n        "Value": "dg==",\n        "CreateIndex": 2,\n        "ModifyIndex": 2\n    }\n]\n',
    );
  });
});

describe('http: /v1/txn', () => {
  let s: TestServer;
  beforeEach(async () => {
    s = await startServer();
  });
  afterEach(async () => {
    await s.close();
  });

  const b64 = (t: string) => Buffer.from(t).toString('base64');

  it('applies all ops and answers Results (write rows without Value) and Errors null', async () => {
    const r = await s.call(
      'PUT',
      '/v1/txn',
      JSON.stringify([
        { KV: { Verb: 'set', Key: 'a', Value: b64('A'), Flags: 18446744073709551615n.toString() } },
        { KV: { Verb: 'get', Key: 'a' } },
      ]).replace('"18446744073709551615"', '18446744073709551615'),
    );
    assert.equal(r.status, 200);
    assert.equal(
      r.text,
      '{"Results":[{"KV":{"LockIndex":0,"Key":"a","Flags":18446744073709551615,"Value":null,"CreateIndex":2,"ModifyIndex":2}},' +
        '{"KV":{"LockIndex":0,"Key":"a","Flags":18446744073709551615,"Value":"QQ==","CreateIndex":2,"ModifyIndex":2}}],"Errors":null}',
    );
    const del = await s.call('PUT', '/v1/txn', JSON.stringify([{ KV: { Verb: 'delete', Key: 'a' } }]));
    assert.equal(del.text, '{"Results":null,"Errors":null}');
  });

  it('any failure: 409 with every error by OpIndex, and nothing applied', async () => {
    await s.call('PUT', '/v1/kv/x', 'orig');
    const r = await s.call(
      'PUT',
      '/v1/txn',
      JSON.stringify([
        { KV: { Verb: 'set', Key: 'x', Value: b64('new') } },
        { KV: { Verb: 'cas', Key: 'y', Value: b64('v'), Index: 5 } },
        { KV: { Verb: 'check-not-exists', Key: 'x' } },
      ]),
    );
    assert.equal(r.status, 409);
    assert.equal(
      r.text,
      '{"Results":null,"Errors":[{"OpIndex":1,"What":"failed to set key \\"y\\", index is stale"},{"OpIndex":2,"What":"key \\"x\\" exists"}]}',
    );
    assert.equal((await s.call('GET', '/v1/kv/x?raw')).text, 'orig');
  });

  it('read-only transactions are served without a Raft entry', async () => {
    await s.call('PUT', '/v1/kv/r/1', 'one');
    const before = s.backend.fsm.appliedIndex;
    const r = await s.call('PUT', '/v1/txn?stale', JSON.stringify([{ KV: { Verb: 'get-tree', Key: 'r/' } }]));
    assert.equal(r.status, 200);
    assert.equal(r.headers['x-consul-knownleader'], 'true');
    assert.equal(
      r.text,
      `{"Results":[{"KV":{"LockIndex":0,"Key":"r/1","Flags":0,"Value":"${b64('one')}","CreateIndex":2,"ModifyIndex":2}}],` +
        '"Errors":null,"Index":0,"LastContact":0,"KnownLeader":true,"ConsistencyLevel":"","NotModified":false,"Backend":0,"ResultsFilteredByACLs":false}',
    );
    assert.equal(s.backend.fsm.appliedIndex, before);
  });

  it('an unknown verb or empty key is a 409 per-op error, like Consul, and nothing is proposed', async () => {
    const r = await s.call(
      'PUT',
      '/v1/txn',
      JSON.stringify([{ KV: { Verb: 'frobnicate', Key: 'a' } }, { KV: { Verb: 'set', Key: '' } }]),
    );
    assert.equal(r.status, 409);
    assert.equal(
      r.text,
      '{"Results":null,"Errors":[{"OpIndex":0,"What":"unknown KV verb \\"frobnicate\\""},{"OpIndex":1,"What":"Must provide key"}]}',
    );
    assert.equal(s.backend.fsm.appliedIndex, 0, 'nothing was proposed');
    // Only reads (an unknown verb is not a write): Consul's Txn.Read adds zero QueryMeta.
    const ro = await s.call('PUT', '/v1/txn', JSON.stringify([{ KV: { Verb: 'explode', Key: 'a' } }]));
    assert.equal(ro.status, 409);
    assert.equal(
      ro.text,
      '{"Results":null,"Errors":[{"OpIndex":0,"What":"unknown KV verb \\"explode\\""}],"Index":0,"LastContact":0,' +
        '"KnownLeader":false,"ConsistencyLevel":"","NotModified":false,"Backend":0,"ResultsFilteredByACLs":false}',
    );
  });
});

describe('http: /v1/session and locks', () => {
  let s: TestServer;
  let now = 1_000_000;
  beforeEach(async () => {
    now = 1_000_000;
    s = await startServer({ backend: { nodeName: 'node-a', nowMs: () => now } });
  });
  afterEach(async () => {
    await s.close();
  });

  it('create answers {"ID"}; info and list answer Consul Session JSON', async () => {
    const c = await s.call(
      'PUT',
      '/v1/session/create',
      JSON.stringify({ Name: 'web', TTL: '15s', LockDelay: '5s' }),
    );
    assert.equal(c.status, 200);
    const { ID } = JSON.parse(c.text) as { ID: string };
    assert.match(ID, /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
    const info = await s.call('GET', `/v1/session/info/${ID}`);
    assert.equal(
      info.text,
      `[{"ID":"${ID}","Name":"web","Node":"node-a","LockDelay":5000000000,"Behavior":"release","TTL":"15s",` +
        '"NodeChecks":["serfHealth"],"ServiceChecks":null,"CreateIndex":2,"ModifyIndex":2}]',
    );
    assert.equal(info.headers['x-consul-index'], '2');
    const empty = await s.call('PUT', '/v1/session/create');
    const defaults = JSON.parse(
      (await s.call('GET', `/v1/session/info/${JSON.parse(empty.text).ID}`)).text,
    )[0];
    assert.deepEqual([defaults.LockDelay, defaults.Behavior, defaults.TTL], [15_000_000_000, 'release', '']);
    assert.equal(JSON.parse((await s.call('GET', '/v1/session/list')).text).length, 2);
    assert.equal(JSON.parse((await s.call('GET', '/v1/session/node/node-a')).text).length, 2);
    assert.equal((await s.call('GET', '/v1/session/node/elsewhere')).text, '[]');
    assert.equal((await s.call('GET', '/v1/session/info/unknown')).text, '[]');
  });

  it('acquire/release through ?acquire= and ?release=, with LockIndex and lock-delay', async () => {
    const a = JSON.parse((await s.call('PUT', '/v1/session/create', '{"LockDelay":"10s"}')).text)
      .ID as string;
    const b = JSON.parse((await s.call('PUT', '/v1/session/create', '{"LockDelay":0}')).text).ID as string;
    assert.equal((await s.call('PUT', `/v1/kv/lock?acquire=${a}`, 'a')).text, 'true');
    assert.equal((await s.call('PUT', `/v1/kv/lock?acquire=${b}`, 'b')).text, 'false');
    const held = JSON.parse((await s.call('GET', '/v1/kv/lock')).text)[0];
    assert.deepEqual(
      [held.Session, held.LockIndex, Buffer.from(held.Value, 'base64').toString()],
      [a, 1, 'a'],
    );
    assert.equal((await s.call('PUT', `/v1/kv/lock?release=${b}`)).text, 'false');
    // Destroying the holder releases the key and starts a 10 s lock-delay.
    assert.equal((await s.call('PUT', `/v1/session/destroy/${a}`)).text, 'true');
    const released = JSON.parse((await s.call('GET', '/v1/kv/lock')).text)[0];
    assert.equal(released.Session, undefined);
    now += 9_999;
    assert.equal((await s.call('PUT', `/v1/kv/lock?acquire=${b}`, 'b')).text, 'false');
    now += 1;
    assert.equal((await s.call('PUT', `/v1/kv/lock?acquire=${b}`, 'b')).text, 'true');
    assert.equal(JSON.parse((await s.call('GET', '/v1/kv/lock')).text)[0].LockIndex, 2);
    assert.equal((await s.call('PUT', `/v1/kv/lock?release=${b}`, 'free')).text, 'true');
  });

  it("renew answers the session; an unknown id is 404 with Consul's message", async () => {
    const id = JSON.parse((await s.call('PUT', '/v1/session/create', '{"TTL":"10s"}')).text).ID as string;
    const r = await s.call('PUT', `/v1/session/renew/${id}`);
    assert.equal(r.status, 200);
    assert.equal(JSON.parse(r.text)[0].ID, id);
    const missing = await s.call('PUT', '/v1/session/renew/nope');
    assert.equal(missing.status, 404);
    assert.equal(missing.text, "Session id 'nope' not found");
  });

  it('a TTL session expires through the reaper; behavior=delete removes its keys', async () => {
    const id = JSON.parse(
      (await s.call('PUT', '/v1/session/create', '{"TTL":"10s","Behavior":"delete"}')).text,
    ).ID as string;
    await s.call('PUT', `/v1/kv/hosts/h1?acquire=${id}`, 'h1');
    assert.deepEqual(await s.backend.reapExpiredSessions(), []);
    now += 19_999;
    assert.deepEqual(await s.backend.reapExpiredSessions(), []);
    now += 1;
    assert.deepEqual(await s.backend.reapExpiredSessions(), [id]);
    assert.equal((await s.call('GET', '/v1/kv/hosts/h1')).status, 404);
    assert.equal((await s.call('GET', '/v1/session/list')).text, '[]');
  });

  it('blocking on /v1/session/list wakes when a session is created', async () => {
    const first = await s.call('GET', '/v1/session/list');
    const index = first.headers['x-consul-index'];
    const blocked = s.call('GET', `/v1/session/list?index=${index}&wait=10s`);
    await new Promise((r) => setTimeout(r, 30));
    await s.call('PUT', '/v1/session/create');
    const r = await blocked;
    assert.equal(JSON.parse(r.text).length, 1);
    assert.ok(Number(r.headers['x-consul-index']) > Number(index));
  });
});

describe('http: /v1/status', () => {
  it('answers the leader and peers as JSON', async () => {
    const s = await startServer({ backend: { address: '127.0.0.1:7001' } });
    try {
      assert.equal((await s.call('GET', '/v1/status/leader')).text, '"127.0.0.1:7001"');
      assert.equal((await s.call('GET', '/v1/status/peers')).text, '["127.0.0.1:7001"]');
    } finally {
      await s.close();
    }
  });
});
