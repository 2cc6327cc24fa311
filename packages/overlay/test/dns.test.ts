// The embedded DNS server answered by a real resolver client (`dig`, Debian
// dnsutils) over loopback. Containers are endpoints with addresses in
// 127.77.0.0/16, so dig can send from "their" address with -b.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createSocket, type Socket } from 'node:dgram';
import { createServer, type Server } from 'node:net';
import { promisify } from 'node:util';
import dnsPacket from 'dns-packet';
import { DnsServer, readResolvConf } from '../src/dns-server.js';
import type { EndpointInfo } from '../src/manager.js';
import { MemoryKvStore } from '../src/testing/memory-kvstore.js';
import { startHost, type TestHost, waitFor } from './helpers.js';

const run = promisify(execFile);

interface DigResult {
  status: string;
  answers: { name: string; type: string; data: string }[];
  flags: string;
}

async function dig(
  server: { address: string; port: number },
  from: string,
  name: string,
  type = 'A',
  extra: string[] = [],
): Promise<DigResult> {
  const args = [
    '-b',
    from,
    `@${server.address}`,
    '-p',
    String(server.port),
    ...(type === 'PTR' ? ['-x', name] : [name, type]),
    '+tries=1',
    '+time=3',
    '+noall',
    '+comments',
    '+answer',
    ...extra,
  ];
  const { stdout } = await run('dig', args, { timeout: 10_000 });
  const status = /status: (\w+)/.exec(stdout)?.[1] ?? `no status in: ${stdout}`;
  const flags = /;; flags: ([^;]*);/.exec(stdout)?.[1] ?? '';
  const answers = stdout
    .split('\n')
    .filter((l) => l && !l.startsWith(';'))
    .map((l) => l.split(/\s+/))
    .filter((f) => f.length >= 5)
    .map((f) => ({ name: f[0], type: f[3], data: f[4] }));
  return { status, answers, flags };
}

/** A stand-in for the host's resolver on loopback: knows example.test, NXDOMAIN otherwise; counts queries. */
class FakeUpstream {
  readonly udp: Socket = createSocket('udp4');
  tcp?: Server;
  readonly seen: string[] = [];
  port = 0;

  private reply(msg: Buffer): Buffer {
    const q = dnsPacket.decode(msg);
    const question = q.questions?.[0];
    this.seen.push(question?.name ?? '?');
    const known = question?.name === 'example.test';
    return dnsPacket.encode({
      id: q.id,
      type: 'response',
      flags: dnsPacket.RECURSION_AVAILABLE | (known ? 0 : 3),
      questions: q.questions,
      answers: known ? [{ type: 'A', name: 'example.test', ttl: 60, class: 'IN', data: '192.0.2.55' }] : [],
    });
  }

  async start(): Promise<void> {
    this.udp.on('message', (msg, rinfo) => this.udp.send(this.reply(msg), rinfo.port, rinfo.address));
    await new Promise<void>((r) => this.udp.bind(0, '127.0.0.1', () => r()));
    this.port = this.udp.address().port;
    this.tcp = createServer((sock) => {
      sock.on('data', (data) => {
        const reply = this.reply(data.subarray(2));
        const len = Buffer.alloc(2);
        len.writeUInt16BE(reply.length);
        sock.end(Buffer.concat([len, reply]));
      });
      sock.on('error', () => undefined);
    });
    await new Promise<void>((resolve, reject) => {
      this.tcp?.once('error', reject);
      this.tcp?.listen(this.port, '127.0.0.1', () => resolve());
    });
  }

  async stop(): Promise<void> {
    await new Promise<void>((r) => this.udp.close(() => r()));
    await new Promise<void>((r) => (this.tcp ? this.tcp.close(() => r()) : r()));
  }
}

describe('embedded DNS (dig against the server on loopback)', function () {
  this.timeout(30_000);
  let store: MemoryKvStore;
  let hosts: TestHost[];
  let upstream: FakeUpstream;
  let server: DnsServer;
  let addr: { address: string; port: number };
  let web: EndpointInfo;
  let mongo: EndpointInfo;
  let apiOnApp: EndpointInfo;
  let apiOnBack: EndpointInfo;
  let lonely: EndpointInfo;

  before(async () => {
    store = new MemoryKvStore();
    hosts = [await startHost(store, 'host-a'), await startHost(store, 'host-b')];
    const [a, b] = hosts.map((h) => h.manager);
    await a.createNetwork({ name: 'appnet', subnets: [{ subnet: '127.77.1.0/24' }] });
    await a.createNetwork({ name: 'backnet', subnets: [{ subnet: '127.77.2.0/24' }] });
    web = await a.attach({ network: 'appnet', name: 'web', aliases: ['www', 'front'], container: 'c-web' });
    mongo = await b.attach({ network: 'appnet', name: 'mongo', container: 'c-mongo' }); // on another host
    apiOnApp = await a.attach({ network: 'appnet', name: 'api', container: 'c-api' });
    apiOnBack = await a.attach({ network: 'backnet', name: 'api', container: 'c-api' });
    lonely = await b.attach({ network: 'backnet', name: 'lonely', container: 'c-lonely' });
    await waitFor(() => a.listEndpoints().length === 5, 'host-a sees all endpoints');
    upstream = new FakeUpstream();
    await upstream.start();
    server = new DnsServer({
      resolver: () => a.dnsTable(),
      address: '127.0.0.1',
      port: 0,
      upstreams: [`127.0.0.1:${upstream.port}`],
      upstreamTimeoutMs: 1_000,
    });
    addr = await server.start();
  });
  after(async () => {
    await server?.stop();
    await upstream?.stop();
    for (const h of hosts ?? []) await h.manager.stop();
    store?.close();
  });

  it('A records for container names on shared networks, across hosts, without a store round trip', async () => {
    const storeOps = { ...store.opCounts };
    const r = await dig(addr, web.ip, 'mongo');
    assert.equal(r.status, 'NOERROR');
    assert.deepEqual(r.answers, [{ name: 'mongo.', type: 'A', data: mongo.ip }]);
    assert.match(r.flags, /\baa\b/);
    assert.deepEqual((await dig(addr, mongo.ip, 'web')).answers, [{ name: 'web.', type: 'A', data: web.ip }]);
    assert.deepEqual({ ...store.opCounts }, storeOps, 'answers come from the local table');
  });

  it('aliases and name.network', async () => {
    assert.deepEqual(
      (await dig(addr, mongo.ip, 'www')).answers.map((a) => a.data),
      [web.ip],
    );
    assert.deepEqual(
      (await dig(addr, mongo.ip, 'FRONT')).answers.map((a) => a.data),
      [web.ip],
    );
    const fq = await dig(addr, mongo.ip, 'web.appnet');
    assert.equal(fq.status, 'NOERROR');
    assert.deepEqual(fq.answers, [{ name: 'web.appnet.', type: 'A', data: web.ip }]);
    assert.deepEqual(
      (await dig(addr, mongo.ip, 'www.appnet.')).answers.map((a) => a.data),
      [web.ip],
    );
  });

  it('a container sees every network it is attached to, and only those', async () => {
    // api is on appnet and backnet: from either of its addresses it resolves both
    assert.deepEqual(
      (await dig(addr, apiOnBack.ip, 'mongo')).answers.map((a) => a.data),
      [mongo.ip],
    );
    assert.deepEqual(
      (await dig(addr, apiOnApp.ip, 'lonely.backnet')).answers.map((a) => a.data),
      [lonely.ip],
    );
    // the asker's own network comes first for a name on both
    assert.deepEqual(
      (await dig(addr, apiOnBack.ip, 'api')).answers.map((a) => a.data),
      [apiOnBack.ip],
    );
    // web shares nothing with lonely: its name is not ours, so it is forwarded (and the upstream says NXDOMAIN)
    const seen = upstream.seen.length;
    const hidden = await dig(addr, web.ip, 'lonely');
    assert.equal(hidden.status, 'NXDOMAIN');
    assert.deepEqual(upstream.seen.slice(seen), ['lonely']);
  });

  it('NXDOMAIN for unknown names in a network domain, answered locally', async () => {
    const seen = upstream.seen.length;
    const r = await dig(addr, web.ip, 'nothere.appnet');
    assert.equal(r.status, 'NXDOMAIN');
    assert.match(r.flags, /\baa\b/);
    assert.equal(upstream.seen.length, seen, 'not forwarded');
  });

  it('PTR: an address on a shared network maps to name.network', async () => {
    const r = await dig(addr, web.ip, mongo.ip, 'PTR');
    assert.equal(r.status, 'NOERROR');
    assert.deepEqual(
      r.answers.map((a) => [a.type, a.data]),
      [['PTR', 'mongo.appnet.']],
    );
    const free = await dig(addr, web.ip, '127.77.1.250', 'PTR');
    assert.equal(free.status, 'NXDOMAIN');
  });

  it('IPv4-only names answer AAAA with an empty NOERROR', async () => {
    const r = await dig(addr, web.ip, 'mongo', 'AAAA');
    assert.equal(r.status, 'NOERROR');
    assert.deepEqual(r.answers, []);
  });

  it('everything else is forwarded upstream, over UDP and TCP; unknown askers are forwarded too', async () => {
    const viaUdp = await dig(addr, web.ip, 'example.test');
    assert.deepEqual(viaUdp.answers, [{ name: 'example.test.', type: 'A', data: '192.0.2.55' }]);
    const viaTcp = await dig(addr, web.ip, 'example.test', 'A', ['+tcp']);
    assert.deepEqual(
      viaTcp.answers.map((a) => a.data),
      ['192.0.2.55'],
    );
    const local = await dig(addr, web.ip, 'www', 'A', ['+tcp']);
    assert.deepEqual(
      local.answers.map((a) => a.data),
      [web.ip],
    );
    // 127.0.0.1 is no container: container names are not served to it
    const seen = upstream.seen.length;
    assert.equal((await dig(addr, '127.0.0.1', 'web')).status, 'NXDOMAIN');
    assert.deepEqual(upstream.seen.slice(seen), ['web']);
  });

  it('a removed endpoint stops resolving', async () => {
    const [a] = hosts.map((h) => h.manager);
    const tmp = await a.attach({ network: 'appnet', name: 'tmp' });
    assert.deepEqual(
      (await dig(addr, web.ip, 'tmp')).answers.map((x) => x.data),
      [tmp.ip],
    );
    await a.detach('appnet', 'tmp');
    assert.equal((await dig(addr, web.ip, 'tmp.appnet')).status, 'NXDOMAIN');
  });

  it('an upstream that does not answer gives SERVFAIL after the timeout', async () => {
    const silent = createSocket('udp4');
    await new Promise<void>((r) => silent.bind(0, '127.0.0.1', () => r()));
    const lost = new DnsServer({
      resolver: () => hosts[0].manager.dnsTable(),
      address: '127.0.0.1',
      port: 0,
      upstreams: [`127.0.0.1:${silent.address().port}`],
      upstreamTimeoutMs: 300,
    });
    const where = await lost.start();
    try {
      assert.equal((await dig(where, web.ip, 'example.test')).status, 'SERVFAIL');
      assert.deepEqual(
        (await dig(where, web.ip, 'web')).answers.map((a) => a.data),
        [web.ip],
        'local names still answered',
      );
    } finally {
      await lost.stop();
      silent.close();
    }
  });

  it('reads upstreams from resolv.conf and refuses malformed upstreams', async () => {
    const { mkdtempSync, writeFileSync, rmSync } = await import('node:fs');
    const { join } = await import('node:path');
    const { tmpdir } = await import('node:os');
    const dir = mkdtempSync(join(tmpdir(), 'weft-dns-'));
    try {
      const path = join(dir, 'resolv.conf');
      writeFileSync(
        path,
        '# comment\nnameserver 192.0.2.53\nnameserver fe80::1\nsearch example\nnameserver 198.51.100.53\n',
      );
      assert.deepEqual(readResolvConf(path), ['192.0.2.53', '198.51.100.53']);
      const s = new DnsServer({
        resolver: () => hosts[0].manager.dnsTable(),
        resolvConfPath: path,
        address: '127.0.0.1',
        port: 0,
      });
      assert.deepEqual(s.upstreams, [
        { address: '192.0.2.53', port: 53 },
        { address: '198.51.100.53', port: 53 },
      ]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    assert.throws(
      () => new DnsServer({ resolver: () => hosts[0].manager.dnsTable(), upstreams: ['dns.example:53'] }),
      /DNS upstream "dns.example:53" is not valid/,
    );
  });
});
