// The lean HTTP/1.1 front end (api/http-fast.ts) on raw sockets: what it
// serves itself, what it hands to node:http, and that a client cannot tell
// the two apart.
import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';
import { startServer, type TestServer } from './helpers.js';

interface Parsed {
  statusLine: string;
  status: number;
  headers: Map<string, string>;
  body: Buffer;
}

/** Split a byte stream of HTTP/1.1 responses (Content-Length framed) into responses; `rest` is incomplete. */
function parseResponses(buf: Buffer): { responses: Parsed[]; rest: Buffer } {
  const responses: Parsed[] = [];
  for (;;) {
    const end = buf.indexOf('\r\n\r\n');
    if (end === -1) break;
    const lines = buf.toString('latin1', 0, end).split('\r\n');
    const headers = new Map<string, string>();
    for (const line of lines.slice(1)) {
      const colon = line.indexOf(':');
      headers.set(line.slice(0, colon).toLowerCase(), line.slice(colon + 1).trim());
    }
    const status = Number(lines[0]!.split(' ')[1]);
    // 1xx answers have no body.
    const length = status < 200 ? 0 : Number(headers.get('content-length') ?? 0);
    if (buf.length < end + 4 + length) break;
    responses.push({ statusLine: lines[0]!, status, headers, body: buf.subarray(end + 4, end + 4 + length) });
    buf = buf.subarray(end + 4 + length);
  }
  return { responses, rest: buf };
}

/** A raw connection: write bytes, wait for n responses, see whether the server closed it. */
class Raw {
  private buf: Buffer = Buffer.alloc(0);
  private readonly received: Parsed[] = [];
  closed = false;
  private wake = () => {};

  private constructor(readonly socket: Socket) {
    socket.on('data', (d: Buffer) => {
      const { responses, rest } = parseResponses(Buffer.concat([this.buf, d]));
      this.buf = rest;
      this.received.push(...responses);
      this.wake();
    });
    socket.on('close', () => {
      this.closed = true;
      this.wake();
    });
    socket.on('error', () => {});
  }

  static open(port: number): Promise<Raw> {
    return new Promise((resolve, reject) => {
      const socket = connect(port, '127.0.0.1', () => resolve(new Raw(socket)));
      socket.once('error', reject);
    });
  }

  write(data: string | Buffer): void {
    this.socket.write(data);
  }

  async responses(n: number, timeoutMs = 5000): Promise<Parsed[]> {
    const deadline = Date.now() + timeoutMs;
    while (this.received.length < n) {
      if (this.closed) throw new Error(`connection closed after ${this.received.length} of ${n} responses`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`${this.received.length} of ${n} responses after ${timeoutMs} ms`);
      await new Promise<void>((r) => {
        const t = setTimeout(r, left);
        this.wake = () => {
          clearTimeout(t);
          r();
        };
      });
    }
    return this.received.splice(0, n);
  }

  async untilClosed(timeoutMs = 5000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!this.closed && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    if (!this.closed) throw new Error(`still open after ${timeoutMs} ms`);
  }

  close(): void {
    this.socket.destroy();
  }
}

const put = (key: string, value: string | Buffer, extra = '') => {
  const body = Buffer.from(value);
  return Buffer.concat([
    Buffer.from(`PUT /v1/kv/${key} HTTP/1.1\r\nHost: t\r\nContent-Length: ${body.length}\r\n${extra}\r\n`),
    body,
  ]);
};
const get = (path: string, extra = '') => `GET ${path} HTTP/1.1\r\nHost: t\r\n${extra}\r\n`;
const value = (s: TestServer, key: string) => {
  const v = s.backend.fsm.get(key).value?.value;
  return v === undefined ? undefined : Buffer.from(v).toString();
};

describe('http: the fast front end (raw sockets)', () => {
  let s: TestServer;
  const raws: Raw[] = [];
  const open = async (server = s) => {
    const r = await Raw.open(server.port);
    raws.push(r);
    return r;
  };

  beforeEach(async () => {
    s = await startServer();
  });
  afterEach(async () => {
    for (const r of raws.splice(0)) r.close();
    await s.close();
  });

  it('answers pipelined requests on one connection in order, keeping it open', async () => {
    const c = await open();
    c.write(
      Buffer.concat([
        put('p', 'one'),
        Buffer.from(get('/v1/kv/p?raw')),
        put('p', 'two'),
        Buffer.from(get('/v1/kv/p?raw')),
      ]),
    );
    const [a, b, d, e] = await c.responses(4);
    assert.deepEqual(
      [a!.status, a!.body.toString(), b!.body.toString(), d!.body.toString(), e!.body.toString()],
      [200, 'true', 'one', 'true', 'two'],
    );
    assert.equal(a!.headers.get('connection'), 'keep-alive');
    assert.match(a!.headers.get('keep-alive') ?? '', /^timeout=\d+$/);
    assert.ok(!Number.isNaN(Date.parse(a!.headers.get('date') ?? '')), 'a Date header');
    assert.equal(c.closed, false);
  });

  it('serves a request that arrives one byte at a time', async () => {
    const c = await open();
    const bytes = put('slow', 'drip');
    for (const byte of bytes) {
      c.write(Buffer.from([byte]));
      await new Promise((r) => setImmediate(r));
    }
    const [r] = await c.responses(1);
    assert.equal(r!.status, 200);
    assert.equal(value(s, 'slow'), 'drip');
  });

  it('hands a connection to node:http at the first request it does not parse, with the bytes already read', async () => {
    const c = await open();
    const chunked =
      'PUT /v1/kv/chunked HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n';
    const big = Buffer.alloc(100 * 1024, 'b'); // above the fast path's body limit
    // One write: a fast request, then two node:http ones, then one that node:http serves too now.
    c.write(
      Buffer.concat([
        put('first', '1'),
        Buffer.from(chunked),
        put('big', big),
        Buffer.from(get('/v1/kv/chunked?raw')),
      ]),
    );
    const rs = await c.responses(4);
    assert.deepEqual(
      rs.map((r) => [r.status, r.body.toString()]),
      [
        [200, 'true'],
        [200, 'true'],
        [200, 'true'],
        [200, 'abcde'],
      ],
    );
    assert.equal(value(s, 'first'), '1');
    assert.equal(value(s, 'big'), big.toString());
    assert.equal(c.closed, false);
  });

  it('Expect: 100-continue gets node:http interim answer, then the result', async () => {
    const c = await open();
    c.write('PUT /v1/kv/expect HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n');
    const [cont] = await c.responses(1);
    assert.equal(cont!.status, 100);
    c.write('hello');
    const [r] = await c.responses(1);
    assert.equal(r!.status, 200);
    assert.equal(value(s, 'expect'), 'hello');
  });

  it('HTTP/1.0, HEAD, raw non-ASCII and an oversized head get node:http answers', async () => {
    await s.call('PUT', '/v1/kv/h', 'v');
    const old = await open();
    old.write('GET /v1/kv/h?raw HTTP/1.0\r\n\r\n');
    const [r10] = await old.responses(1);
    assert.equal(r10!.body.toString(), 'v');
    await old.untilClosed(); // HTTP/1.0 without keep-alive: closed after the answer

    const head = await open();
    head.write('HEAD /v1/kv/h HTTP/1.1\r\nHost: t\r\n\r\n');
    const [rh] = await head.responses(1);
    assert.equal(rh!.status, 405); // Consul's KV endpoint has no HEAD; node:http sent no body

    const bytes = await open();
    bytes.write(
      Buffer.concat([Buffer.from('GET /v1/kv/\xff HTTP/1.1\r\n', 'latin1'), Buffer.from('Host: t\r\n\r\n')]),
    );
    const [rb] = await bytes.responses(1);
    assert.equal(rb!.status, 400);
    assert.match(rb!.body.toString(), /malformed HTTP request/);

    const long = await open();
    long.write(`GET /v1/kv/h HTTP/1.1\r\nHost: t\r\nX-Filler: ${'x'.repeat(17 * 1024)}\r\n\r\n`);
    const [rl] = await long.responses(1);
    assert.equal(rl!.status, 431);
  });

  it('answers exactly as node:http does: status, headers (but Date) and body', async () => {
    const plain = await startServer({ http: { fastPath: false } });
    try {
      const requests = [
        put('same', 'value'),
        get('/v1/kv/same'),
        get('/v1/kv/same?raw'),
        get('/v1/kv/missing'),
        get('/v1/kv/?keys'),
        put('same?cas=999', 'x'),
        put('same?flags=oops', 'x'),
        'POST /v1/kv/same HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n',
        'GET /v1/nothing-here HTTP/1.1\r\nHost: t\r\n\r\n',
        'PUT /v1/txn HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n\r\n[',
        get('/v1/status/leader'),
        'DELETE /v1/kv/same HTTP/1.1\r\nHost: t\r\n\r\n',
      ];
      const answers = async (server: TestServer) => {
        const c = await open(server);
        const out: Parsed[] = [];
        for (const r of requests) {
          c.write(r);
          out.push(...(await c.responses(1)));
        }
        return out.map((r) => {
          const headers = [...r.headers].filter(([name]) => name !== 'date');
          return { statusLine: r.statusLine, headers, body: r.body.toString() };
        });
      };
      const fast = await answers(s);
      const node = await answers(plain);
      assert.deepEqual(fast, node);
    } finally {
      await plain.close();
    }
  });

  it('Connection: close is answered with Connection: close, then the server closes', async () => {
    const c = await open();
    c.write(Buffer.concat([put('bye', '1', 'Connection: close\r\n'), put('never', '1')]));
    const [r] = await c.responses(1);
    assert.equal(r!.headers.get('connection'), 'close');
    await c.untilClosed();
    assert.equal(value(s, 'never'), undefined, 'nothing after Connection: close is served');
  });

  it('closes an idle connection after keepAliveTimeoutMs and a stalled request after headersTimeoutMs', async () => {
    const t = await startServer({ http: { keepAliveTimeoutMs: 200, headersTimeoutMs: 300 } });
    try {
      const idle = await open(t);
      idle.write(get('/v1/status/leader'));
      const [r] = await idle.responses(1);
      assert.equal(r!.status, 200);
      const stalled = await open(t);
      stalled.write('PUT /v1/kv/stall HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc');
      const started = Date.now();
      await idle.untilClosed(3000);
      await stalled.untilClosed(3000);
      assert.ok(Date.now() - started >= 150, 'not closed before its timeout');
      assert.equal(t.backend.fsm.get('stall').value, null);
    } finally {
      await t.close();
    }
  });

  it('a client that half-closes mid-request ends its blocking query and the connection', async () => {
    await s.call('PUT', '/v1/kv/w', '1');
    const c = await open();
    c.write(get('/v1/kv/w?index=2&wait=10m'));
    for (let i = 0; i < 100 && s.backend.fsm.waiterCount === 0; i++)
      await new Promise((r) => setTimeout(r, 10));
    assert.equal(s.backend.fsm.waiterCount, 1);
    c.socket.end(); // FIN only
    await c.untilClosed();
    for (let i = 0; i < 100 && s.backend.fsm.waiterCount > 0; i++)
      await new Promise((r) => setTimeout(r, 10));
    assert.equal(s.backend.fsm.waiterCount, 0);
  });

  it('close() drops idle connections at once and answers a blocked query before closing its connection', async () => {
    await s.call('PUT', '/v1/kv/b', '1');
    const idle = await open();
    idle.write(get('/v1/status/leader'));
    await idle.responses(1);
    const blocked = await open();
    blocked.write(get('/v1/kv/b?index=2&wait=10m'));
    for (let i = 0; i < 100 && s.backend.fsm.waiterCount === 0; i++)
      await new Promise((r) => setTimeout(r, 10));
    await s.server.close();
    const [r] = await blocked.responses(1);
    assert.equal(r!.status, 200);
    assert.equal(r!.headers.get('connection'), 'close');
    await idle.untilClosed(1000);
    await blocked.untilClosed(1000);
  });

  it('survives random and mangled requests (seeded), then serves a good one', async function () {
    this.timeout(30_000);
    let seed = 0x5eed;
    const rand = (n: number) => {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      return seed % n;
    };
    const templates = [
      put('fz', 'value'),
      Buffer.from(get('/v1/kv/fz?raw')),
      Buffer.from('PUT /v1/txn HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\n[]'),
    ];
    for (let round = 0; round < 200; round++) {
      const c = await open();
      let bytes: Buffer;
      if (round % 4 === 0) bytes = Buffer.from(Array.from({ length: 1 + rand(300) }, () => rand(256)));
      else {
        bytes = Buffer.from(templates[rand(templates.length)]!);
        for (let k = 0, n = 1 + rand(4); k < n; k++) bytes[rand(bytes.length)] = rand(256);
      }
      c.write(bytes);
      c.socket.end();
      await new Promise((r) => setTimeout(r, 1));
      c.close();
    }
    const c = await open();
    c.write(put('after-fuzz', 'ok'));
    const [r] = await c.responses(1);
    assert.equal(r!.status, 200);
    assert.equal(value(s, 'after-fuzz'), 'ok');
  });
});
