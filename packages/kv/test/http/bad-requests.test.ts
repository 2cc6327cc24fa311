// Every kind of bad input gets a 4xx with a message naming the problem, and changes nothing.
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { startServer, type TestServer } from './helpers.js';

interface Case {
  name: string;
  method: string;
  path: string;
  body?: string | Uint8Array;
  headers?: Record<string, string>;
  status: number;
  message: RegExp;
}

const b64 = (t: string) => Buffer.from(t).toString('base64');
const txn = (ops: unknown) => JSON.stringify(ops);
const tooBig = new Uint8Array(512 * 1024 + 1);

const cases: Case[] = [
  // /v1/kv keys
  {
    name: 'PUT without a key',
    method: 'PUT',
    path: '/v1/kv/',
    body: 'x',
    status: 400,
    message: /^Missing key name$/,
  },
  { name: 'GET without a key', method: 'GET', path: '/v1/kv/', status: 400, message: /^Missing key name$/ },
  {
    name: 'DELETE without a key',
    method: 'DELETE',
    path: '/v1/kv/',
    status: 400,
    message: /^Missing key name$/,
  },
  {
    name: 'key with a leading slash',
    method: 'PUT',
    path: '/v1/kv//abs',
    body: 'x',
    status: 400,
    message: /must not begin with a '\/'/,
  },
  {
    name: 'key not valid UTF-8',
    method: 'PUT',
    path: '/v1/kv/bad%FFkey',
    body: 'x',
    status: 400,
    message: /not valid UTF-8/,
  },
  { name: 'broken %-escape', method: 'GET', path: '/v1/kv/a%zz', status: 400, message: /bad %-escape/ },
  // /v1/kv numbers and flags
  {
    name: 'flags not a number',
    method: 'PUT',
    path: '/v1/kv/seed?flags=abc',
    body: 'x',
    status: 400,
    message: /Invalid \?flags="abc"/,
  },
  {
    name: 'flags above uint64',
    method: 'PUT',
    path: '/v1/kv/seed?flags=18446744073709551616',
    body: 'x',
    status: 400,
    message: /unsigned 64-bit/,
  },
  {
    name: 'negative flags',
    method: 'PUT',
    path: '/v1/kv/seed?flags=-1',
    body: 'x',
    status: 400,
    message: /Invalid \?flags/,
  },
  {
    name: 'cas not a number',
    method: 'PUT',
    path: '/v1/kv/seed?cas=1x',
    body: 'x',
    status: 400,
    message: /Invalid \?cas: "1x"/,
  },
  {
    name: 'cas beyond a safe index',
    method: 'PUT',
    path: '/v1/kv/seed?cas=18446744073709551615',
    body: 'x',
    status: 400,
    message: /Invalid \?cas/,
  },
  {
    name: 'DELETE cas not a number',
    method: 'DELETE',
    path: '/v1/kv/seed?cas=x',
    status: 400,
    message: /Invalid \?cas/,
  },
  {
    name: 'cas with acquire',
    method: 'PUT',
    path: '/v1/kv/seed?cas=1&acquire=s',
    body: 'x',
    status: 400,
    message: /^Conflicting flags: acquire=s&cas=1/,
  },
  {
    name: 'recurse with cas',
    method: 'DELETE',
    path: '/v1/kv/seed?recurse&cas=1',
    status: 400,
    message: /^Conflicting flags/,
  },
  {
    name: 'acquire with an unknown session',
    method: 'PUT',
    path: '/v1/kv/seed?acquire=nope',
    body: 'x',
    status: 400,
    message: /^invalid session "nope"$/,
  },
  {
    name: 'acquire with an empty session',
    method: 'PUT',
    path: '/v1/kv/seed?acquire=',
    body: 'x',
    status: 400,
    message: /^missing session$/,
  },
  {
    name: 'release with an empty session',
    method: 'PUT',
    path: '/v1/kv/seed?release=',
    body: 'x',
    status: 400,
    message: /^missing session$/,
  },
  // value size
  {
    name: 'value over 512 KiB',
    method: 'PUT',
    path: '/v1/kv/seed',
    body: tooBig,
    status: 413,
    message: /^Request body\(524289 bytes\) too large, max size: 524288 bytes/,
  },
  {
    name: 'chunked value over 512 KiB',
    method: 'PUT',
    path: '/v1/kv/seed',
    body: tooBig,
    headers: { 'Transfer-Encoding': 'chunked' },
    status: 413,
    message: /^Request body too large, max size: 524288 bytes/,
  },
  // query options
  {
    name: 'index not a number',
    method: 'GET',
    path: '/v1/kv/seed?index=abc',
    status: 400,
    message: /^Invalid index/,
  },
  {
    name: 'wait without a unit',
    method: 'GET',
    path: '/v1/kv/seed?index=1&wait=5',
    status: 400,
    message: /^Invalid wait time: .*missing unit/,
  },
  {
    name: 'wait with an unknown unit',
    method: 'GET',
    path: '/v1/kv/seed?index=1&wait=5y',
    status: 400,
    message: /^Invalid wait time: .*unknown unit/,
  },
  {
    name: 'stale with consistent',
    method: 'GET',
    path: '/v1/kv/seed?stale&consistent',
    status: 400,
    message: /^Cannot specify \?stale with \?consistent/,
  },
  {
    name: 'unsupported method',
    method: 'POST',
    path: '/v1/kv/seed',
    body: 'x',
    status: 405,
    message: /^method POST not allowed/,
  },
  // /v1/txn
  {
    name: 'txn: not JSON',
    method: 'PUT',
    path: '/v1/txn',
    body: '[{"KV":',
    status: 400,
    message: /^Failed to parse body: unexpected end of input/,
  },
  {
    name: 'txn: trailing garbage',
    method: 'PUT',
    path: '/v1/txn',
    body: '[] x',
    status: 400,
    message: /^Failed to parse body: unexpected data/,
  },
  {
    name: 'txn: not an array',
    method: 'PUT',
    path: '/v1/txn',
    body: '{"KV":{}}',
    status: 400,
    message: /expected a JSON array/,
  },
  {
    name: 'txn: op without KV',
    method: 'PUT',
    path: '/v1/txn',
    body: txn([{ Node: {} }]),
    status: 400,
    message: /operation 0 has no KV member/,
  },
  {
    name: 'txn: invalid base64',
    method: 'PUT',
    path: '/v1/txn',
    body: txn([{ KV: { Verb: 'set', Key: 'seed', Value: 'not base64!' } }]),
    status: 400,
    message: /^Failed to parse body: failed to decode value: illegal base64 data at input byte 3/,
  },
  {
    name: 'txn: base64 without padding',
    method: 'PUT',
    path: '/v1/txn',
    body: txn([{ KV: { Verb: 'set', Key: 'seed', Value: 'YQ' } }]),
    status: 400,
    message: /illegal base64 data/,
  },
  {
    name: 'txn: flags negative',
    method: 'PUT',
    path: '/v1/txn',
    body: '[{"KV":{"Verb":"set","Key":"seed","Flags":-1}}]',
    status: 400,
    message: /KV\.Flags must be an integer/,
  },
  {
    name: 'txn: index fractional',
    method: 'PUT',
    path: '/v1/txn',
    body: '[{"KV":{"Verb":"cas","Key":"seed","Index":1.5}}]',
    status: 400,
    message: /KV\.Index must be an integer/,
  },
  {
    name: 'txn: key not a string',
    method: 'PUT',
    path: '/v1/txn',
    body: '[{"KV":{"Verb":"set","Key":5}}]',
    status: 400,
    message: /KV\.Key must be a string/,
  },
  {
    name: 'txn: 65 operations',
    method: 'PUT',
    path: '/v1/txn',
    body: txn(Array.from({ length: 65 }, (_, i) => ({ KV: { Verb: 'set', Key: `k${i}`, Value: b64('v') } }))),
    status: 413,
    message: /^Transaction contains too many operations \(65 > 64\)$/,
  },
  {
    name: 'txn: body over the limit',
    method: 'PUT',
    path: '/v1/txn',
    body: txn([{ KV: { Verb: 'set', Key: 'big', Value: Buffer.from(tooBig).toString('base64') } }]),
    status: 413,
    message: /^Request body too large, max size: 524288 bytes/,
  },
  {
    name: 'txn: unknown verb',
    method: 'PUT',
    path: '/v1/txn',
    body: txn([
      { KV: { Verb: 'set', Key: 'seed', Value: b64('changed') } },
      { KV: { Verb: 'explode', Key: 'seed' } },
    ]),
    status: 409,
    message: /"OpIndex":1,"What":"unknown KV verb \\"explode\\""/,
  },
  {
    name: 'txn: body not UTF-8',
    method: 'PUT',
    path: '/v1/txn',
    body: new Uint8Array([0x5b, 0xff, 0x5d]),
    status: 400,
    message: /not valid UTF-8/,
  },
  {
    name: 'txn: wrong method',
    method: 'GET',
    path: '/v1/txn',
    status: 405,
    message: /^method GET not allowed/,
  },
  // /v1/session
  {
    name: 'session: bad JSON',
    method: 'PUT',
    path: '/v1/session/create',
    body: '{"TTL":',
    status: 400,
    message: /^Request decode failed: unexpected end of input/,
  },
  {
    name: 'session: body not an object',
    method: 'PUT',
    path: '/v1/session/create',
    body: '[1]',
    status: 400,
    message: /not a JSON object/,
  },
  {
    name: 'session: TTL too short',
    method: 'PUT',
    path: '/v1/session/create',
    body: '{"TTL":"5s"}',
    status: 400,
    message: /^Invalid Session TTL '5000000000', must be between \[10s=24h0m0s\]$/,
  },
  {
    name: 'session: TTL too long',
    method: 'PUT',
    path: '/v1/session/create',
    body: '{"TTL":"25h"}',
    status: 400,
    message: /^Invalid Session TTL/,
  },
  {
    name: 'session: TTL unparsable',
    method: 'PUT',
    path: '/v1/session/create',
    body: '{"TTL":"soon"}',
    status: 400,
    message: /^Session TTL 'soon' invalid/,
  },
  {
    name: 'session: TTL not a string',
    method: 'PUT',
    path: '/v1/session/create',
    body: '{"TTL":10}',
    status: 400,
    message: /TTL must be a string/,
  },
  {
    name: 'session: bad behavior',
    method: 'PUT',
    path: '/v1/session/create',
    body: '{"Behavior":"explode"}',
    status: 400,
    message: /^Invalid Behavior setting 'explode'$/,
  },
  {
    name: 'session: bad lock delay',
    method: 'PUT',
    path: '/v1/session/create',
    body: '{"LockDelay":"later"}',
    status: 400,
    message: /^Request decode failed: time: /,
  },
  {
    name: 'session: health checks',
    method: 'PUT',
    path: '/v1/session/create',
    body: '{"Checks":["service:web"]}',
    status: 400,
    message: /not supported: Weft does not run health checks/,
  },
  {
    name: 'session: destroy without id',
    method: 'PUT',
    path: '/v1/session/destroy/',
    status: 400,
    message: /^Missing session$/,
  },
  {
    name: 'session: renew without id',
    method: 'PUT',
    path: '/v1/session/renew/',
    status: 400,
    message: /^Missing session$/,
  },
  {
    name: 'session: info without id',
    method: 'GET',
    path: '/v1/session/info/',
    status: 400,
    message: /^Missing session$/,
  },
  {
    name: 'session: create with GET',
    method: 'GET',
    path: '/v1/session/create',
    status: 405,
    message: /^method GET not allowed/,
  },
  // unknown endpoints
  {
    name: 'unknown endpoint',
    method: 'GET',
    path: '/v1/agent/self',
    status: 404,
    message: /^no such endpoint: GET \/v1\/agent\/self/,
  },
  {
    // A backend without membership (this one: one process, no Raft) has no operator endpoints.
    name: 'raft peer removal without a replicated backend',
    method: 'DELETE',
    path: '/v1/operator/raft/peer?address=127.0.0.1:7001',
    status: 404,
    message: /^no such endpoint: DELETE \/v1\/operator\/raft\/peer/,
  },
];

describe('http: bad requests get a 4xx naming the problem and change nothing', () => {
  let s: TestServer;
  let sessionId: string;
  before(async () => {
    s = await startServer();
    await s.call('PUT', '/v1/kv/seed?flags=3', 'original');
    sessionId = JSON.parse((await s.call('PUT', '/v1/session/create', '{"Name":"keep"}')).text).ID;
    await s.call('PUT', `/v1/kv/locked?acquire=${sessionId}`, 'held');
  });
  after(async () => {
    await s.close();
  });

  for (const c of cases) {
    it(`${c.name} → ${c.status}`, async () => {
      const before = Buffer.from(s.backend.fsm.snapshot());
      const r = await s.call(c.method, c.path, c.body, c.headers);
      assert.equal(r.status, c.status, `status for ${c.method} ${c.path}: ${r.text.slice(0, 200)}`);
      assert.match(r.text, c.message);
      assert.ok(Buffer.from(s.backend.fsm.snapshot()).equals(before), 'state changed');
      // The server is still healthy afterwards.
      assert.equal((await s.call('GET', '/v1/kv/seed?raw')).text, 'original');
    });
  }

  it('raw non-ASCII bytes in the URL → 400 naming the parse error', async () => {
    const before = Buffer.from(s.backend.fsm.snapshot());
    const raw = await new Promise<string>((resolve, reject) => {
      const sock = connect(s.port, '127.0.0.1', () => {
        sock.write(
          Buffer.concat([
            Buffer.from('PUT /v1/kv/a'),
            Buffer.from([0xff]),
            Buffer.from(' HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nv'),
          ]),
        );
      });
      let data = '';
      sock.on('data', (c: Buffer) => {
        data += c.toString('latin1');
      });
      sock.on('end', () => resolve(data));
      sock.on('error', reject);
    });
    assert.match(raw, /^HTTP\/1\.1 400 Bad Request\r\n/);
    assert.match(raw, /\r\n\r\nmalformed HTTP request \(HPE_INVALID_URL/);
    assert.ok(Buffer.from(s.backend.fsm.snapshot()).equals(before));
  });

  it('the seeded lock and session are intact after all of the above', async () => {
    const locked = JSON.parse((await s.call('GET', '/v1/kv/locked')).text)[0];
    assert.equal(locked.Session, sessionId);
    assert.equal(JSON.parse((await s.call('GET', '/v1/session/list')).text).length, 1);
  });
});
