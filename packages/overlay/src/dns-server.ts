// Embedded DNS server, one per host, serving the containers on it (Docker's
// 127.0.0.11 resolver, but listening where the agent tells it). Container
// names, aliases and `name.network` come from the local name table (never a
// store round trip per query); everything else is forwarded to the host's
// upstream resolvers, UDP over UDP and TCP over TCP, with a timeout.
import { createSocket, type RemoteInfo, type Socket } from 'node:dgram';
import { readFileSync } from 'node:fs';
import { createConnection, createServer, type Server, type Socket as TcpSocket } from 'node:net';
import dnsPacket, { type Answer, type DecodedPacket, type Packet, type Question } from 'dns-packet';
import type { DnsResolver } from './dns-table.js';
import { invalid } from './errors.js';
import { parseIp } from './ipv4.js';

export interface Upstream {
  address: string;
  port: number;
}

export interface DnsServerOptions {
  /** Where names come from; a function is asked on every query, so it can hand out the latest table. */
  resolver: DnsResolver | (() => DnsResolver);
  /** Listen address; default 127.0.0.11 (Docker's). */
  address?: string;
  /** Listen port; default 53; 0 = any free port (UDP and TCP share it). */
  port?: number;
  /** Resolvers for other names, "ip" or "ip:port"; default the nameservers in `resolvConfPath`. */
  upstreams?: string[];
  resolvConfPath?: string;
  /** Per upstream attempt; after the last upstream the client gets SERVFAIL. Default 2000. */
  upstreamTimeoutMs?: number;
  /** TTL of local answers. Default 600 s like Docker. */
  ttlSeconds?: number;
  /** Also serve DNS over TCP on the same port. Default true. */
  tcp?: boolean;
  /** Bound on forwarded queries in flight; more get SERVFAIL at once. Default 512. */
  maxForwardsInFlight?: number;
}

const rcode = { NOERROR: 0, FORMERR: 1, SERVFAIL: 2, NXDOMAIN: 3 } as const;
const maxPlainUdpBytes = 512;
const tcpIdleTimeoutMs = 10_000;

/** Nameservers listed in a resolv.conf (IPv4 only); empty if the file is missing. */
export function readResolvConf(path = '/etc/resolv.conf'): string[] {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch {
    return [];
  }
  const out: string[] = [];
  for (const line of text.split('\n')) {
    const m = /^\s*nameserver\s+(\S+)/.exec(line);
    if (m && parseIp(m[1]) !== undefined) out.push(m[1]);
  }
  return out;
}

export function parseUpstream(text: string): Upstream {
  const m = /^([^:]+)(?::(\d+))?$/.exec(text);
  const port = m?.[2] === undefined ? 53 : Number(m[2]);
  if (!m || parseIp(m[1]) === undefined || !(port >= 1 && port <= 65535)) {
    throw invalid(
      `DNS upstream "${text}" is not valid; use an IPv4 address with an optional port, e.g. 192.0.2.53:53`,
    );
  }
  return { address: m[1], port };
}

export class DnsServer {
  readonly upstreams: Upstream[];
  private readonly resolverFn: () => DnsResolver;
  private readonly listenAddress: string;
  private readonly listenPort: number;
  private readonly upstreamTimeoutMs: number;
  private readonly ttlSeconds: number;
  private readonly serveTcp: boolean;
  private readonly maxForwards: number;
  private udp?: Socket;
  private tcp?: Server;
  private readonly tcpClients = new Set<TcpSocket>();
  private forwardsInFlight = 0;
  private bound?: Upstream;

  constructor(opts: DnsServerOptions) {
    const r = opts.resolver;
    this.resolverFn = typeof r === 'function' ? r : () => r;
    this.listenAddress = opts.address ?? '127.0.0.11';
    if (parseIp(this.listenAddress) === undefined)
      throw invalid(`DNS listen address "${this.listenAddress}" is not an IPv4 address`);
    this.listenPort = opts.port ?? 53;
    if (!(Number.isInteger(this.listenPort) && this.listenPort >= 0 && this.listenPort <= 65535))
      throw invalid(`DNS port ${this.listenPort} is not valid`);
    this.upstreams = (opts.upstreams ?? readResolvConf(opts.resolvConfPath)).map(parseUpstream);
    this.upstreamTimeoutMs = opts.upstreamTimeoutMs ?? 2_000;
    this.ttlSeconds = opts.ttlSeconds ?? 600;
    this.serveTcp = opts.tcp ?? true;
    this.maxForwards = opts.maxForwardsInFlight ?? 512;
  }

  /** Address and port actually bound (useful with port 0). */
  address(): Upstream {
    if (!this.bound) throw new Error('DNS server is not started');
    return { ...this.bound };
  }

  async start(): Promise<Upstream> {
    if (this.bound) return this.address();
    // With port 0 the TCP port is taken from UDP's; retry if another process holds it on TCP.
    for (let attempt = 0; ; attempt++) {
      const udp = createSocket('udp4');
      udp.on('message', (msg, rinfo) => void this.onUdp(udp, msg, rinfo));
      udp.on('error', () => undefined);
      await new Promise<void>((resolve, reject) => {
        udp.once('error', reject);
        udp.bind(this.listenPort, this.listenAddress, () => {
          udp.off('error', reject);
          resolve();
        });
      }).catch((e: NodeJS.ErrnoException) => {
        udp.close();
        throw new Error(
          `DNS server cannot listen on udp ${this.listenAddress}:${this.listenPort}: ${e.message}`,
          { cause: e },
        );
      });
      const port = udp.address().port;
      if (!this.serveTcp) {
        this.udp = udp;
        this.bound = { address: this.listenAddress, port };
        break;
      }
      const tcp = createServer((sock) => this.onTcpConnection(sock));
      try {
        await new Promise<void>((resolve, reject) => {
          tcp.once('error', reject);
          tcp.listen(port, this.listenAddress, () => {
            tcp.off('error', reject);
            resolve();
          });
        });
      } catch (e) {
        udp.close();
        if (this.listenPort === 0 && attempt < 5) continue;
        throw new Error(
          `DNS server cannot listen on tcp ${this.listenAddress}:${port}: ${(e as Error).message}`,
          { cause: e },
        );
      }
      this.udp = udp;
      this.tcp = tcp;
      this.bound = { address: this.listenAddress, port };
      break;
    }
    return this.address();
  }

  async stop(): Promise<void> {
    const udp = this.udp;
    const tcp = this.tcp;
    this.udp = undefined;
    this.tcp = undefined;
    this.bound = undefined;
    for (const c of this.tcpClients) c.destroy();
    this.tcpClients.clear();
    if (udp) await new Promise<void>((r) => udp.close(() => r()));
    if (tcp) await new Promise<void>((r) => tcp.close(() => r()));
  }

  // ------------------------------------------------------------------ serving

  private async onUdp(sock: Socket, msg: Buffer, rinfo: RemoteInfo): Promise<void> {
    const reply = await this.handle(msg, rinfo.address, 'udp');
    if (reply && this.udp === sock) sock.send(reply, rinfo.port, rinfo.address, () => undefined);
  }

  private onTcpConnection(sock: TcpSocket): void {
    this.tcpClients.add(sock);
    sock.setTimeout(tcpIdleTimeoutMs, () => sock.destroy());
    sock.on('close', () => this.tcpClients.delete(sock));
    sock.on('error', () => undefined);
    let buf = Buffer.alloc(0);
    sock.on('data', (chunk) => {
      buf = Buffer.concat([buf, chunk]);
      while (buf.length >= 2) {
        const len = buf.readUInt16BE(0);
        if (buf.length < 2 + len) break;
        const msg = buf.subarray(2, 2 + len);
        buf = buf.subarray(2 + len);
        void this.handle(msg, sock.remoteAddress?.replace(/^::ffff:/, '') ?? '', 'tcp').then((reply) => {
          if (reply && !sock.destroyed) sock.write(Buffer.concat([lengthPrefix(reply.length), reply]));
        });
      }
    });
  }

  /** Answers one query: locally when the name is ours, otherwise by forwarding. */
  private async handle(msg: Buffer, clientIp: string, transport: 'udp' | 'tcp'): Promise<Buffer | undefined> {
    let query: DecodedPacket;
    try {
      query = dnsPacket.decode(msg);
    } catch {
      return msg.length >= 2 ? errorReply(msg.readUInt16BE(0), rcode.FORMERR) : undefined;
    }
    if (query.type === 'response') return undefined;
    const question = query.questions?.[0];
    if (!question) return errorReply(query.id ?? 0, rcode.FORMERR);
    const local = this.localAnswer(clientIp, question);
    if (local) {
      const packet: Packet = {
        id: query.id,
        type: 'response',
        flags:
          dnsPacket.AUTHORITATIVE_ANSWER |
          dnsPacket.RECURSION_AVAILABLE |
          ((query.flags ?? 0) & dnsPacket.RECURSION_DESIRED) |
          local.rcode,
        questions: [question],
        answers: local.answers,
      };
      let out = dnsPacket.encode(packet);
      if (transport === 'udp' && out.length > udpLimit(query)) {
        out = dnsPacket.encode({
          ...packet,
          flags: (packet.flags ?? 0) | dnsPacket.TRUNCATED_RESPONSE,
          answers: [],
        });
      }
      return out;
    }
    return this.forward(msg, query.id ?? 0, transport);
  }

  private localAnswer(clientIp: string, q: Question): { rcode: number; answers: Answer[] } | undefined {
    const resolver = this.resolverFn();
    const type = q.type as string; // dns-packet also yields 'ANY', missing from its typings
    const name = q.name.replace(/\.$/, '');
    const reverse = /^(\d+)\.(\d+)\.(\d+)\.(\d+)\.in-addr\.arpa$/i.exec(name);
    if (reverse) {
      if (type !== 'PTR' && type !== 'ANY') return undefined;
      const ip = `${reverse[4]}.${reverse[3]}.${reverse[2]}.${reverse[1]}`;
      const r = resolver.lookupAddress(clientIp, ip);
      if (r === undefined) return undefined;
      if (r === 'nxdomain') return { rcode: rcode.NXDOMAIN, answers: [] };
      return {
        rcode: rcode.NOERROR,
        answers: r.found.map((data) => ({
          type: 'PTR',
          name: q.name,
          ttl: this.ttlSeconds,
          class: 'IN',
          data,
        })),
      };
    }
    const r = resolver.lookupName(clientIp, name);
    if (r === undefined) return undefined;
    if (r === 'nxdomain') return { rcode: rcode.NXDOMAIN, answers: [] };
    // Ours but IPv4 only: other types get an empty NOERROR (NODATA), like Docker.
    if (type !== 'A' && type !== 'ANY') return { rcode: rcode.NOERROR, answers: [] };
    return {
      rcode: rcode.NOERROR,
      answers: r.found.map((data) => ({ type: 'A', name: q.name, ttl: this.ttlSeconds, class: 'IN', data })),
    };
  }

  /** Tries each upstream in turn; SERVFAIL when none answers in time. */
  private async forward(msg: Buffer, id: number, transport: 'udp' | 'tcp'): Promise<Buffer> {
    const upstreams = this.upstreams.filter(
      (u) => !(this.bound && u.address === this.bound.address && u.port === this.bound.port),
    );
    if (upstreams.length === 0 || this.forwardsInFlight >= this.maxForwards)
      return errorReply(id, rcode.SERVFAIL, msg);
    this.forwardsInFlight++;
    try {
      for (const u of upstreams) {
        try {
          return transport === 'udp' ? await this.forwardUdp(msg, id, u) : await this.forwardTcp(msg, u);
        } catch {
          // next upstream
        }
      }
      return errorReply(id, rcode.SERVFAIL, msg);
    } finally {
      this.forwardsInFlight--;
    }
  }

  private forwardUdp(msg: Buffer, id: number, u: Upstream): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      // A fresh socket per query: a random source port, and no reply mix-ups between clients.
      const sock = createSocket('udp4');
      const done = (err?: Error, reply?: Buffer) => {
        clearTimeout(timer);
        sock.close();
        if (err || !reply) reject(err ?? new Error('no reply'));
        else resolve(reply);
      };
      const timer = setTimeout(
        () => done(new Error(`upstream ${u.address}:${u.port} timed out`)),
        this.upstreamTimeoutMs,
      );
      sock.on('error', (e) => done(e));
      sock.on('message', (reply, rinfo) => {
        if (
          rinfo.address === u.address &&
          rinfo.port === u.port &&
          reply.length >= 2 &&
          reply.readUInt16BE(0) === id
        )
          done(undefined, reply);
      });
      sock.send(msg, u.port, u.address, (e) => e && done(e));
    });
  }

  private forwardTcp(msg: Buffer, u: Upstream): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      const sock = createConnection({ host: u.address, port: u.port });
      let buf = Buffer.alloc(0);
      const done = (err?: Error, reply?: Buffer) => {
        clearTimeout(timer);
        sock.destroy();
        if (err || !reply) reject(err ?? new Error('no reply'));
        else resolve(reply);
      };
      const timer = setTimeout(
        () => done(new Error(`upstream ${u.address}:${u.port} timed out`)),
        this.upstreamTimeoutMs,
      );
      sock.on('error', (e) => done(e));
      sock.on('connect', () => sock.write(Buffer.concat([lengthPrefix(msg.length), msg])));
      sock.on('data', (chunk) => {
        buf = Buffer.concat([buf, chunk]);
        if (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0))
          done(undefined, buf.subarray(2, 2 + buf.readUInt16BE(0)));
      });
      sock.on('end', () => done(new Error('upstream closed the connection')));
    });
  }
}

function lengthPrefix(n: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(n);
  return b;
}

function udpLimit(query: DecodedPacket): number {
  const opt = query.additionals?.find((a) => a.type === 'OPT') as { udpPayloadSize?: number } | undefined;
  return opt?.udpPayloadSize
    ? Math.max(maxPlainUdpBytes, Math.min(opt.udpPayloadSize, 4096))
    : maxPlainUdpBytes;
}

/** A reply with only a header (and the question, when the query could be parsed). */
function errorReply(id: number, code: number, query?: Buffer): Buffer {
  let questions: Question[] = [];
  let rd = 0;
  if (query) {
    try {
      const q = dnsPacket.decode(query);
      questions = q.questions ?? [];
      rd = (q.flags ?? 0) & dnsPacket.RECURSION_DESIRED;
    } catch {
      // header only
    }
  }
  return dnsPacket.encode({
    id,
    type: 'response',
    flags: dnsPacket.RECURSION_AVAILABLE | rd | code,
    questions,
    answers: [],
  });
}
