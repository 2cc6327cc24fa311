// Consul-compatible HTTP API (the KV, transaction, session and status
// endpoints, and the Raft operator ones) over any KvBackend. Responses follow
// Consul's agent/*_endpoint.go: same paths, status codes, JSON field names and
// order, base64 values, `true`/`false` bodies and X-Consul-* headers, so
// Consul clients work unchanged. Bad input never changes state.
//
// Deliberate differences from Consul:
//  - client mistakes Consul answers with 500 (unparsable ?flags/?cas, lock with
//    an unknown session, invalid session TTL, removing a non-member) are 400
//    naming the problem;
//  - keys are refused only for a leading '/' or invalid UTF-8 (not Consul
//    1.21's character allow-list);
//  - no ACLs (?token, X-Consul-Token ignored), one datacenter (?dc ignored),
//    no namespaces, no ?cached, no gzip;
//  - sessions: health checks other than the implicit serfHealth are refused;
//    a session without TTL lives until destroyed (nothing watches node health);
//  - a cluster without quorum answers 503 with the cause (Consul: 500).
import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { KvStateReader } from '../fsm/state-machine.js';
import {
  type ApplyResult,
  type Command,
  type DirEntry,
  KV_VERBS,
  type KvOp,
  type KvVerb,
  MAX_FLAGS,
  MAX_TXN_OPS,
  MAX_VALUE_BYTES,
  type SessionRecord,
  type SessionSpec,
  type TxnOpError,
  type WatchTarget,
  WRITE_VERBS,
} from '../fsm/types.js';
import {
  type AppliedCommand,
  type Consistency,
  isUnavailableError,
  type KvBackend,
  type ReadView,
} from './backend.js';
import {
  decodeStdBase64,
  formatGoDurationMs,
  type GoJson,
  goJson,
  JsonNumber,
  JsonSyntaxError,
  type JsonValue,
  parseGoDurationMs,
  parseGoDurationNs,
  parseJson,
  parseUint64,
} from './http-codec.js';
import { FastFront, type FastRequest, type ResponseLike } from './http-fast.js';
import { raftIdOf } from './node-address.js';

export interface ConsulHttpServerOptions {
  /** Listen address; loopback unless you mean to expose the store. */
  host?: string;
  /** 0 = any free port (see address()). Consul's is 8500. */
  port?: number;
  /** Shortest session TTL accepted (Consul's session_ttl_min, default 10 s). */
  sessionTtlMinMs?: number;
  /** Blocking-query wait when ?wait is absent (Consul: 5 min). */
  defaultWaitMs?: number;
  /** Longest blocking-query wait (Consul: 10 min). */
  maxWaitMs?: number;
  /** Source of jitter for blocking-query timeouts (default Math.random). */
  random?: () => number;
  /** How long an idle keep-alive connection stays open (node:http's default: 5 s). */
  keepAliveTimeoutMs?: number;
  /** How long a request's head (and, on the fast path, body) may take to arrive (node:http's headersTimeout: 60 s). */
  headersTimeoutMs?: number;
  /** Headers set on every response (the tunnel names its cluster: CLUSTER_HEADER). */
  responseHeaders?: Record<string, string>;
  /**
   * Serve well-formed requests on TCP connections with the lean front end
   * (api/http-fast.ts) instead of node:http, which still takes every other
   * connection. Default true; false = node:http for everything.
   */
  fastPath?: boolean;
}

/** Response header (a Weft extension) of the KvClient tunnel: the member's cluster name, which clients check. */
export const CLUSTER_HEADER = 'X-Weft-Cluster';

/**
 * Response header (a Weft extension) on /v1/txn: the Raft index the
 * transaction was applied at (the store's index for a read-only one), which
 * Consul's answer lacks and KvClient's txn() returns like KvNode's.
 */
export const TXN_INDEX_HEADER = 'X-Weft-Index';

/** Consul's structs.SessionTTLMax. */
const SESSION_TTL_MAX_MS = 24 * 3600 * 1000;
/** Consul's default session lock-delay. */
const DEFAULT_LOCK_DELAY_MS = 15_000;
/** Consul's structs.JitterFraction: a blocking wait gets up to wait/16 extra. */
const JITTER_FRACTION = 16;
/** Consul's lockDelayMinThreshold: smaller numbers are seconds, larger nanoseconds. */
const LOCK_DELAY_SECONDS_BELOW = 1000;
const KV_MAX_VALUE_SIZE_URL =
  'https://developer.hashicorp.com/docs/agent/config/config-files#kv_max_value_size';

/** A response decided before the end of a handler: status plus plain-text body. */
class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly closeConnection = false,
  ) {
    super(message);
  }
}

interface QueryOptions {
  consistency: Consistency;
  minIndex: number;
  waitMs: number;
  pretty: boolean;
}

interface Request {
  method: string;
  path: string;
  query: URLSearchParams;
  /** The request body, refused with 413 (`tooLarge(declared length)`) beyond maxBytes. */
  body: (maxBytes: number, tooLarge: (declaredLength: number | undefined) => string) => Promise<Uint8Array>;
  res: ResponseLike;
}

export class ConsulHttpServer {
  private readonly server: Server;
  private readonly host: string;
  private readonly port: number;
  private readonly sessionTtlMinMs: number;
  private readonly defaultWaitMs: number;
  private readonly maxWaitMs: number;
  private readonly random: () => number;
  private readonly responseHeaders: [string, string][];
  /** Aborted on close() so blocked queries return instead of holding the server open. */
  private readonly closing = new AbortController();
  /** Accepted connections (acceptConnection) still waiting for their first request's headers. */
  private readonly awaitingFirstRequest = new WeakMap<object, NodeJS.Timeout>();
  /** node:http's own connection listener, which the fast front end hands connections to. */
  private readonly nodeConnection: (socket: Duplex) => void;
  private readonly fast: FastFront | undefined;

  constructor(
    private readonly backend: KvBackend,
    opts: ConsulHttpServerOptions = {},
  ) {
    this.host = opts.host ?? '127.0.0.1';
    this.port = opts.port ?? 0;
    this.sessionTtlMinMs = opts.sessionTtlMinMs ?? 10_000;
    this.defaultWaitMs = opts.defaultWaitMs ?? 5 * 60_000;
    this.maxWaitMs = opts.maxWaitMs ?? 10 * 60_000;
    this.random = opts.random ?? Math.random;
    this.responseHeaders = Object.entries(opts.responseHeaders ?? {});
    this.server = createServer((req, res) => void this.handle(req, res));
    if (opts.keepAliveTimeoutMs !== undefined) this.server.keepAliveTimeout = opts.keepAliveTimeoutMs;
    if (opts.headersTimeoutMs !== undefined) this.server.headersTimeout = opts.headersTimeoutMs;
    const [nodeListener] = this.server.listeners('connection');
    if (typeof nodeListener !== 'function')
      throw new Error('node:http server without its connection listener');
    this.nodeConnection = (socket) => nodeListener.call(this.server, socket);
    if (opts.fastPath ?? true) {
      const server = this.server;
      const fast = new FastFront({
        handle: (req, res) => void this.handleFast(req, res),
        handOff: this.nodeConnection,
        keepAliveTimeoutMs: () => server.keepAliveTimeout,
        headersTimeoutMs: () => server.headersTimeout,
      });
      this.fast = fast;
      // The front end sees every accepted connection first.
      server.removeListener('connection', nodeListener as (socket: Socket) => void);
      server.on('connection', (socket: Socket) => fast.accept(socket));
    }
    this.server.on('request', (req: IncomingMessage) => {
      clearTimeout(this.awaitingFirstRequest.get(req.socket));
      this.awaitingFirstRequest.delete(req.socket);
    });
    // Requests node:http cannot parse (raw non-ASCII in the URL, oversized headers): say why.
    this.server.on('clientError', (err: NodeJS.ErrnoException & { bytesParsed?: number }, socket) => {
      if (!socket.writable) return socket.destroy();
      const tooLarge = err.code === 'HPE_HEADER_OVERFLOW';
      const body = `malformed HTTP request (${err.code ?? 'parse error'}: ${err.message}); percent-encode keys in the URL`;
      socket.end(
        `HTTP/1.1 ${tooLarge ? '431 Request Header Fields Too Large' : '400 Bad Request'}\r\n` +
          `Content-Type: text/plain; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
      );
    });
  }

  /** Request handler, for mounting into another node:http server. */
  get handler(): (req: IncomingMessage, res: ServerResponse) => void {
    return (req, res) => void this.handle(req, res);
  }

  /**
   * Serves HTTP on a connection that did not come from listen(): a libp2p
   * stream of the KvClient tunnel (api/http-tunnel.ts). Works on a server
   * that never listens. node:http enforces its headers timeout only on
   * connections of a listening server, so `firstRequestTimeoutMs` bounds how
   * long a connection may take to deliver its first request's headers
   * (later ones are bounded by the keep-alive timeout while idle).
   */
  acceptConnection(socket: Duplex, options: { firstRequestTimeoutMs?: number } = {}): void {
    const limitMs = options.firstRequestTimeoutMs;
    if (limitMs !== undefined && limitMs > 0) {
      const timer = setTimeout(() => {
        this.awaitingFirstRequest.delete(socket);
        socket.destroy();
      }, limitMs);
      timer.unref();
      this.awaitingFirstRequest.set(socket, timer);
      socket.once('close', () => clearTimeout(timer));
    }
    this.nodeConnection(socket);
  }

  async listen(): Promise<AddressInfo> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.port, this.host, () => {
        this.server.off('error', reject);
        resolve();
      });
    });
    return this.address();
  }

  address(): AddressInfo {
    const a = this.server.address();
    if (a === null || typeof a === 'string') throw new Error('HTTP server is not listening');
    return a;
  }

  /** Stop accepting, end blocked queries, close idle connections. */
  async close(): Promise<void> {
    this.closing.abort();
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      this.server.closeIdleConnections();
      this.fast?.close();
    });
  }

  // ------------------------------------------------------------ dispatch

  private handle(raw: IncomingMessage, res: ServerResponse): Promise<void> {
    return this.dispatch(
      raw.method ?? 'GET',
      raw.url ?? '/',
      (max, tooLarge) => readBody(raw, max, tooLarge),
      res,
    );
  }

  /** A request the fast front end parsed, its body already in. */
  private handleFast(fast: FastRequest, res: ResponseLike): Promise<void> {
    const body = fast.body;
    return this.dispatch(
      fast.method,
      fast.url,
      (max, tooLarge) =>
        body.length > max
          ? Promise.reject(new HttpError(413, tooLarge(body.length), true))
          : // A view, not a copy: the socket's chunk is not reused, and commands are encoded at once.
            Promise.resolve(new Uint8Array(body.buffer, body.byteOffset, body.length)),
      res,
    );
  }

  private async dispatch(
    method: string,
    url: string,
    body: Request['body'],
    res: ResponseLike,
  ): Promise<void> {
    for (const [name, value] of this.responseHeaders) res.setHeader(name, value);
    const q = url.indexOf('?');
    const req: Request = {
      method,
      path: q === -1 ? url : url.slice(0, q),
      query: new URLSearchParams(q === -1 ? '' : url.slice(q + 1)),
      body,
      res,
    };
    try {
      await this.route(req);
    } catch (err) {
      this.fail(res, err);
    }
  }

  private async route(req: Request): Promise<void> {
    const { path } = req;
    if (path.startsWith('/v1/kv/') || path === '/v1/kv') return this.kv(req);
    if (path === '/v1/txn') return this.only(req, ['PUT'], () => this.txn(req));
    if (path.startsWith('/v1/session/')) return this.session(req);
    if (path === '/v1/status/leader') {
      return this.only(req, ['GET'], async () => this.json(req, 200, await this.backend.leader()));
    }
    if (path === '/v1/status/peers') {
      return this.only(req, ['GET'], async () => this.json(req, 200, await this.backend.peers()));
    }
    const withNames = this.backend.membersWithNames?.bind(this.backend);
    if (path === '/v1/operator/raft/configuration' && withNames) {
      return this.only(req, ['GET'], async () => {
        const members = await withNames();
        // Consul's shape; a learner is a non-voter (Voter: false), as Consul's read replicas are.
        this.json(req, 200, {
          Servers: members.map((m) => ({
            ID: m.id,
            Node: m.name,
            Address: m.address,
            Leader: m.leader,
            Voter: m.role === 'voter',
            ProtocolVersion: '3',
          })),
        });
      });
    }
    if (path === '/v1/operator/raft/peer' && this.backend.removeMember)
      return this.only(req, ['DELETE'], () => this.removePeer(req));
    if (path === '/v1/operator/raft/transfer-leader' && this.backend.transferLeadership)
      return this.only(req, ['POST'], () => this.transferLeader(req));
    throw new HttpError(
      404,
      `no such endpoint: ${req.method} ${path} (Weft serves /v1/kv, /v1/txn, /v1/session, /v1/status, /v1/operator/raft/configuration, /v1/operator/raft/peer, /v1/operator/raft/transfer-leader)`,
    );
  }

  // ------------------------------------------------------------ /v1/operator/raft

  /**
   * Consul's OperatorRaftPeer: removes a member named by ?id or ?address
   * (both are its Raft address in Weft) and answers 200 with no body once the
   * removal is applied here. A non-member or the last voter is 400 naming it
   * (Consul: 500).
   */
  private async removePeer(req: Request): Promise<void> {
    const hasId = req.query.has('id');
    const hasAddress = req.query.has('address');
    if (!hasId && !hasAddress) {
      throw new HttpError(
        400,
        "Must specify either ?id with the server's ID or ?address with IP:port of peer to remove",
      );
    }
    if (hasId && hasAddress) throw new HttpError(400, 'Must specify only one of ?id or ?address');
    const id = raftAddressParam(req.query, hasId ? 'id' : 'address');
    await this.membership(() => this.backend.removeMember!(id));
    req.res.statusCode = 200;
    req.res.setHeader('Content-Length', 0);
    req.res.end();
  }

  /**
   * Consul's OperatorRaftTransferLeader: hands leadership to the voter ?id,
   * or without it to another voter (the first in address order), and answers
   * {"Success":true} once that voter leads.
   */
  private async transferLeader(req: Request): Promise<void> {
    let id: string;
    if (req.query.has('id')) id = raftAddressParam(req.query, 'id');
    else {
      const [voters, leader] = await Promise.all([this.backend.peers(), this.backend.leader()]);
      const other = voters.filter((v) => v !== leader).sort()[0];
      if (other === undefined) throw new HttpError(400, 'no other voter to transfer leadership to');
      id = other;
    }
    await this.membership(() => this.backend.transferLeadership!(id));
    this.json(req, 200, { Success: true });
  }

  /** A membership call whose refusal (code 'membership') is the client's mistake: 400 with its message. */
  private async membership(run: () => Promise<void>): Promise<void> {
    try {
      await run();
    } catch (err) {
      if ((err as { code?: unknown }).code === 'membership') throw new HttpError(400, (err as Error).message);
      throw err;
    }
  }

  private async only(req: Request, methods: string[], run: () => Promise<void>): Promise<void> {
    if (!methods.includes(req.method)) throw methodNotAllowed(req.method, methods);
    await run();
  }

  private fail(res: ResponseLike, err: unknown): void {
    let status = 500;
    let message: string;
    let close = false;
    if (err instanceof HttpError) {
      status = err.status;
      message = err.message;
      close = err.closeConnection;
    } else if (isUnavailableError(err)) {
      status = 503;
      message = (err as Error).message;
    } else {
      message = `internal error: ${(err as Error)?.message ?? String(err)}`;
    }
    if (res.headersSent) {
      res.destroy();
      return;
    }
    res.statusCode = status;
    res.setHeader('Content-Type', 'text/plain; charset=utf-8');
    if (close) res.setHeader('Connection', 'close');
    res.end(message);
  }

  private json(req: Request, status: number, body: GoJson): void {
    const text = goJson(body, req.query.has('pretty'));
    req.res.statusCode = status;
    req.res.setHeader('Content-Type', 'application/json');
    req.res.setHeader('Content-Length', Buffer.byteLength(text));
    req.res.end(text);
  }

  // ------------------------------------------------------------ /v1/kv

  private async kv(req: Request): Promise<void> {
    const key = kvKey(req.path);
    switch (req.method) {
      case 'GET':
        return req.query.has('keys') ? this.kvKeys(req, key) : this.kvGet(req, key);
      case 'PUT':
        return this.kvPut(req, key);
      case 'DELETE':
        return this.kvDelete(req, key);
      default:
        throw methodNotAllowed(req.method, ['GET', 'PUT', 'DELETE']);
    }
  }

  private async kvGet(req: Request, key: string): Promise<void> {
    const recurse = req.query.has('recurse');
    if (!recurse && key === '') throw new HttpError(400, 'Missing key name');
    const opts = this.queryOptions(req);
    const target: WatchTarget = recurse ? { kind: 'prefix', prefix: key } : { kind: 'key', key };
    const { view, result } = await this.blockingRead(req, opts, target, (state) => {
      if (recurse) return state.list(key);
      const one = state.get(key);
      return { index: one.index, value: one.value ? [one.value] : [] };
    });
    this.setMeta(req, opts, view, result.index);
    const entries = result.value;
    if (entries.length === 0) {
      req.res.statusCode = 404;
      req.res.end();
      return;
    }
    if (req.query.has('raw') && !recurse) {
      const body = (entries[0] as DirEntry).value;
      req.res.setHeader('Content-Type', 'text/plain');
      req.res.setHeader('X-Content-Type-Options', 'nosniff');
      req.res.setHeader('Content-Security-Policy', 'sandbox');
      req.res.setHeader('Content-Length', body.length);
      req.res.end(body);
      return;
    }
    this.json(req, 200, entries.map(dirEntryJson));
  }

  private async kvKeys(req: Request, prefix: string): Promise<void> {
    // Consul accepts its historic misspelling too.
    const separator = req.query.get('separator') ?? req.query.get('seperator') ?? '';
    const opts = this.queryOptions(req);
    const { view, result } = await this.blockingRead(req, opts, { kind: 'prefix', prefix }, (state) =>
      state.keys(prefix, separator),
    );
    this.setMeta(req, opts, view, result.index);
    if (result.value.length === 0 && prefix !== '') {
      req.res.statusCode = 404;
      req.res.end();
      return;
    }
    this.json(req, 200, result.value);
  }

  private async kvPut(req: Request, key: string): Promise<void> {
    if (key === '') throw new HttpError(400, 'Missing key name');
    conflictingFlags(req.query, ['cas', 'acquire', 'release']);
    const op: KvOp = { verb: 'set', key, value: new Uint8Array(0), flags: 0n, index: 0, session: '' };
    if (req.query.has('flags')) op.flags = uint64Param(req.query, 'flags');
    if (req.query.has('cas')) {
      op.index = indexParam(req.query, 'cas');
      op.verb = 'cas';
    }
    if (req.query.has('acquire')) {
      op.session = req.query.get('acquire') ?? '';
      op.verb = 'lock';
    }
    if (req.query.has('release')) {
      op.session = req.query.get('release') ?? '';
      op.verb = 'unlock';
    }
    if ((op.verb === 'lock' || op.verb === 'unlock') && op.session === '') {
      throw new HttpError(400, 'missing session');
    }
    if (op.verb === 'lock') {
      // Checked before proposing so a typo costs no log entry; the state machine re-checks at apply.
      // Not 'stale': a follower may not yet have applied a session the client just created.
      const view = await this.backend.read('default');
      if (view.state.session(op.session).value === null) {
        throw new HttpError(400, `invalid session ${JSON.stringify(op.session)}`);
      }
    }
    op.value = await req.body(MAX_VALUE_BYTES, (length) =>
      length === undefined
        ? `Request body too large, max size: ${MAX_VALUE_BYTES} bytes. See ${KV_MAX_VALUE_SIZE_URL}.`
        : `Request body(${length} bytes) too large, max size: ${MAX_VALUE_BYTES} bytes. See ${KV_MAX_VALUE_SIZE_URL}.`,
    );
    const result = await this.propose({ type: 'kv', op, nowMs: this.backend.nowMs() });
    // Consul: a plain set always answers true; conditional writes answer whether they happened.
    this.json(req, 200, op.verb === 'set' ? true : kvOk(result));
  }

  private async kvDelete(req: Request, key: string): Promise<void> {
    conflictingFlags(req.query, ['recurse', 'cas']);
    const op: KvOp = { verb: 'delete', key, value: new Uint8Array(0), flags: 0n, index: 0, session: '' };
    if (req.query.has('recurse')) op.verb = 'delete-tree';
    else if (key === '') throw new HttpError(400, 'Missing key name');
    if (req.query.has('cas')) {
      op.index = indexParam(req.query, 'cas');
      op.verb = 'delete-cas';
    }
    const result = await this.propose({ type: 'kv', op, nowMs: this.backend.nowMs() });
    this.json(req, 200, op.verb === 'delete-cas' ? kvOk(result) : true);
  }

  // ------------------------------------------------------------ /v1/txn

  private async txn(req: Request): Promise<void> {
    const text = Buffer.from(
      await req.body(MAX_VALUE_BYTES, () => `Request body too large, max size: ${MAX_VALUE_BYTES} bytes`),
    );
    const ops = parseTxnOps(text);
    // Like Consul's preCheck: problems found before Raft are reported per op with 409.
    const preErrors: TxnOpError[] = [];
    ops.forEach((op, opIndex) => {
      if (!(KV_VERBS as readonly string[]).includes(op.verb)) {
        preErrors.push({ opIndex, what: `unknown KV verb ${JSON.stringify(op.verb)}` });
      } else if (op.key === '' && op.verb !== 'delete-tree') {
        preErrors.push({ opIndex, what: 'Must provide key' });
      }
    });
    const readOnly = ops.every((op) => !WRITE_VERBS.has(op.verb as KvVerb));
    if (preErrors.length > 0) {
      // Consul's Txn.Read returns its pre-check errors before filling QueryMeta: zero values.
      const meta = readOnly ? txnQueryMeta(0, false) : {};
      return this.txnResponse(req, { type: 'txn', ok: false, errors: preErrors }, meta);
    }
    const kvOps = ops as KvOp[];
    if (readOnly) {
      // Read-only transactions skip Raft and honour ?stale / ?consistent, like Consul's Txn.Read.
      const opts = this.queryOptions(req);
      const view = await this.backend.read(opts.consistency);
      req.res.setHeader('X-Consul-KnownLeader', String(view.knownLeader));
      req.res.setHeader('X-Consul-LastContact', String(Math.round(view.lastContactMs)));
      // Consul answers a read-only transaction with structs.TxnReadResponse, whose embedded
      // QueryMeta (no JSON tags) adds these members after Results and Errors.
      req.res.setHeader(TXN_INDEX_HEADER, String(view.state.kvIndex));
      return this.txnResponse(
        req,
        view.state.readTxn(kvOps),
        txnQueryMeta(view.lastContactMs, view.knownLeader),
      );
    }
    const { index, result } = await this.proposeIndexed({
      type: 'txn',
      ops: kvOps,
      nowMs: this.backend.nowMs(),
    });
    if (result.type !== 'txn') throw new Error(`txn command answered ${result.type}`);
    req.res.setHeader(TXN_INDEX_HEADER, String(index));
    return this.txnResponse(req, result);
  }

  private txnResponse(
    req: Request,
    result: Extract<ApplyResult, { type: 'txn' }>,
    queryMeta: { [key: string]: GoJson } = {},
  ): void {
    if (!result.ok) {
      const errors = result.errors.map((e) => ({ OpIndex: e.opIndex, What: e.what }));
      this.json(req, 409, { Results: null, Errors: errors, ...queryMeta });
      return;
    }
    // Consul leaves Results null when no op produced a row (deletes only).
    const rows = result.results.map((e) => ({ KV: dirEntryJson(e) }));
    this.json(req, 200, { Results: rows.length > 0 ? rows : null, Errors: null, ...queryMeta });
  }

  // ------------------------------------------------------------ /v1/session

  private async session(req: Request): Promise<void> {
    const rest = req.path.slice('/v1/session/'.length);
    const slash = rest.indexOf('/');
    const action = slash === -1 ? rest : rest.slice(0, slash);
    const arg = slash === -1 ? undefined : decodePathSegment(rest.slice(slash + 1), 'session id');
    const needId = (): string => {
      if (!arg) throw new HttpError(400, 'Missing session');
      return arg;
    };
    switch (action) {
      case 'create':
        return this.only(req, ['PUT'], () => this.sessionCreate(req));
      case 'destroy':
        return this.only(req, ['PUT'], async () => {
          await this.propose({ type: 'session-destroy', id: needId(), nowMs: this.backend.nowMs() });
          this.json(req, 200, true);
        });
      case 'renew':
        return this.only(req, ['PUT'], async () => {
          const id = needId();
          const result = await this.propose({ type: 'session-renew', id, nowMs: this.backend.nowMs() });
          if (result.type !== 'session-renew' || result.session === null) {
            throw new HttpError(404, `Session id '${id}' not found`);
          }
          this.json(req, 200, [sessionJson(result.session)]);
        });
      case 'info':
        return this.only(req, ['GET'], () => {
          const id = needId();
          return this.sessionRead(req, (state) => {
            const s = state.session(id);
            return { index: s.index, value: s.value ? [s.value] : [] };
          });
        });
      case 'list':
        return this.only(req, ['GET'], () => this.sessionRead(req, (state) => state.sessions()));
      case 'node':
        return this.only(req, ['GET'], () => {
          if (!arg) throw new HttpError(400, 'Missing node name');
          return this.sessionRead(req, (state) => {
            const all = state.sessions();
            return { index: all.index, value: all.value.filter((s) => s.node === arg) };
          });
        });
      default:
        throw new HttpError(404, `no such endpoint: ${req.method} ${req.path}`);
    }
  }

  private async sessionRead(
    req: Request,
    run: (state: KvStateReader) => { index: number; value: SessionRecord[] },
  ): Promise<void> {
    const opts = this.queryOptions(req);
    const { view, result } = await this.blockingRead(req, opts, { kind: 'sessions' }, run);
    this.setMeta(req, opts, view, result.index);
    this.json(req, 200, result.value.map(sessionJson));
  }

  private async sessionCreate(req: Request): Promise<void> {
    const body = Buffer.from(await req.body(MAX_VALUE_BYTES, () => 'Request body too large')).toString(
      'utf8',
    );
    const spec: SessionSpec = {
      id: randomUUID(),
      name: '',
      node: this.backend.nodeName,
      lockDelayMs: DEFAULT_LOCK_DELAY_MS,
      behavior: 'release',
      ttlMs: 0,
      ttl: '',
      nodeChecks: ['serfHealth'],
    };
    if (body.trim() !== '') this.applySessionBody(spec, body);
    const result = await this.propose({ type: 'session-create', session: spec, nowMs: this.backend.nowMs() });
    if (result.type !== 'session-create') throw new Error(`session-create answered ${result.type}`);
    this.json(req, 200, { ID: result.id });
  }

  /** Fill `spec` from a session/create body (Go decodes field names case-insensitively). */
  private applySessionBody(spec: SessionSpec, body: string): void {
    const decodeFailed = (why: string): never => {
      throw new HttpError(400, `Request decode failed: ${why}`);
    };
    let parsed: JsonValue;
    try {
      parsed = parseJson(body);
    } catch (err) {
      decodeFailed((err as Error).message);
      return;
    }
    if (
      parsed === null ||
      typeof parsed !== 'object' ||
      Array.isArray(parsed) ||
      parsed instanceof JsonNumber
    ) {
      decodeFailed('body is not a JSON object');
      return;
    }
    const field = (name: string): JsonValue | undefined => {
      const k = Object.keys(parsed).find((x) => x.toLowerCase() === name.toLowerCase());
      return k === undefined ? undefined : (parsed as Record<string, JsonValue>)[k];
    };
    const str = (name: string): string | undefined => {
      const v = field(name);
      if (v === undefined || v === null) return undefined;
      if (typeof v !== 'string') return decodeFailed(`${name} must be a string`);
      return v;
    };
    spec.name = str('Name') ?? spec.name;
    spec.node = str('Node') || spec.node;
    const behavior = str('Behavior');
    if (behavior !== undefined && behavior !== '') {
      if (behavior !== 'release' && behavior !== 'delete') {
        throw new HttpError(400, `Invalid Behavior setting '${behavior}'`);
      }
      spec.behavior = behavior;
    }
    const lockDelay = field('LockDelay');
    if (lockDelay !== undefined && lockDelay !== null)
      spec.lockDelayMs = lockDelayMs(lockDelay, decodeFailed);
    const ttl = str('TTL');
    if (ttl !== undefined && ttl !== '') {
      let ttlMs: number;
      try {
        ttlMs = parseGoDurationMs(ttl);
      } catch (err) {
        throw new HttpError(400, `Session TTL '${ttl}' invalid: ${(err as Error).message}`);
      }
      if (ttlMs !== 0 && (ttlMs < this.sessionTtlMinMs || ttlMs > SESSION_TTL_MAX_MS)) {
        throw new HttpError(
          400,
          `Invalid Session TTL '${Math.round(ttlMs * 1e6)}', must be between [${formatGoDurationMs(this.sessionTtlMinMs)}=${formatGoDurationMs(SESSION_TTL_MAX_MS)}]`,
        );
      }
      spec.ttl = ttl;
      spec.ttlMs = Math.ceil(ttlMs);
    }
    // Weft evaluates no health checks: only Consul's implicit serfHealth is accepted (and echoed).
    let checks: string[] | undefined;
    for (const name of ['Checks', 'NodeChecks']) {
      const v = field(name);
      if (v === undefined) continue;
      if (v === null) checks = checks ?? [];
      else if (Array.isArray(v) && v.every((c) => typeof c === 'string'))
        checks = [...(checks ?? []), ...(v as string[])];
      else decodeFailed(`${name} must be a list of check ids`);
    }
    const serviceChecks = field('ServiceChecks');
    if (Array.isArray(serviceChecks) && serviceChecks.length > 0) {
      throw new HttpError(
        400,
        'ServiceChecks are not supported: Weft does not run health checks; use a session TTL',
      );
    }
    if (checks !== undefined) {
      const unsupported = checks.filter((c) => c !== 'serfHealth');
      if (unsupported.length > 0) {
        throw new HttpError(
          400,
          `health checks ${JSON.stringify(unsupported)} are not supported: Weft does not run health checks; use a session TTL`,
        );
      }
      spec.nodeChecks = checks.length > 0 ? checks : null;
    }
  }

  // ------------------------------------------------------------ helpers

  /** Propose through the backend and turn state-machine rejections into 400s. */
  private async propose(cmd: Command): Promise<ApplyResult> {
    return (await this.proposeIndexed(cmd)).result;
  }

  /** propose(), with the Raft index the command was applied at. */
  private async proposeIndexed(cmd: Command): Promise<AppliedCommand> {
    const applied = await this.backend.apply(cmd);
    if (applied.result.type === 'rejected') throw new HttpError(400, applied.result.error);
    return applied;
  }

  /** Consul's parse(): consistency mode, ?index, ?wait. */
  private queryOptions(req: Request): QueryOptions {
    const { query } = req;
    if (query.has('stale') && query.has('consistent')) {
      throw new HttpError(400, 'Cannot specify ?stale with ?consistent, conflicting semantics.');
    }
    let waitMs = this.defaultWaitMs;
    const wait = query.get('wait');
    if (wait) {
      try {
        waitMs = parseGoDurationNs(wait) / 1e6;
      } catch (err) {
        throw new HttpError(400, `Invalid wait time: ${(err as Error).message}`);
      }
      if (waitMs < 0) throw new HttpError(400, `Invalid wait time: ${JSON.stringify(wait)} is negative`);
      if (waitMs === 0) waitMs = this.defaultWaitMs;
    }
    waitMs = Math.min(waitMs, this.maxWaitMs);
    let minIndex = 0;
    const index = query.get('index');
    if (index) minIndex = indexParam(query, 'index', 'Invalid index');
    return {
      consistency: query.has('stale') ? 'stale' : query.has('consistent') ? 'consistent' : 'default',
      minIndex,
      waitMs,
      pretty: query.has('pretty'),
    };
  }

  /**
   * Consul's blocking query: answer at once unless ?index is given and the
   * result's index is not past it; then wait (up to wait + jitter) for a
   * change touching `target` and re-run. The waiter is registered before
   * each read so no change in between is missed.
   */
  private async blockingRead<T>(
    req: Request,
    opts: QueryOptions,
    target: WatchTarget,
    run: (state: KvStateReader) => { index: number; value: T },
  ): Promise<{ view: ReadView; result: { index: number; value: T } }> {
    const blocking = opts.minIndex > 0;
    const deadline = Date.now() + opts.waitMs + this.random() * (opts.waitMs / JITTER_FRACTION);
    const gone = new AbortController();
    const onClose = () => gone.abort();
    req.res.once('close', onClose);
    try {
      for (;;) {
        const watch = blocking ? this.backend.watch(target) : undefined;
        try {
          const view = await this.backend.read(opts.consistency);
          const result = run(view.state);
          const remainingMs = deadline - Date.now();
          if (!watch || result.index > opts.minIndex || remainingMs <= 0 || gone.signal.aborted) {
            return { view, result };
          }
          if (this.closing.signal.aborted) return { view, result };
          await waitFor(watch.changed, remainingMs, [gone.signal, this.closing.signal]);
        } finally {
          watch?.cancel();
        }
      }
    } finally {
      req.res.off('close', onClose);
    }
  }

  private setMeta(req: Request, opts: QueryOptions, view: ReadView, index: number): void {
    const { res } = req;
    res.setHeader('X-Consul-Index', String(Math.max(1, index)));
    res.setHeader('X-Consul-KnownLeader', String(view.knownLeader));
    res.setHeader('X-Consul-LastContact', String(Math.round(view.lastContactMs)));
    res.setHeader(
      'X-Consul-Effective-Consistency',
      opts.consistency === 'default' ? 'leader' : opts.consistency,
    );
    res.setHeader('X-Consul-Query-Backend', 'blocking-query');
  }
}

/** Resolve when `changed` settles, the time is up, or a signal aborts. */
function waitFor(changed: Promise<void>, timeoutMs: number, signals: AbortSignal[]): Promise<void> {
  return new Promise<void>((resolve) => {
    const timer = setTimeout(done, timeoutMs);
    function done() {
      clearTimeout(timer);
      for (const s of signals) s.removeEventListener('abort', done);
      resolve();
    }
    for (const s of signals) s.addEventListener('abort', done, { once: true });
    changed.then(done, done);
  });
}

/** A member's Raft address from ?name (HOST:PORT, as /v1/operator/raft/configuration lists them). */
function raftAddressParam(query: URLSearchParams, name: string): string {
  const raw = query.get(name) ?? '';
  try {
    return raftIdOf(raw);
  } catch (err) {
    throw new HttpError(400, `Invalid ?${name}: ${(err as Error).message}`);
  }
}

function methodNotAllowed(method: string, allowed: string[]): HttpError {
  return new HttpError(405, `method ${method} not allowed (allowed: ${allowed.join(', ')})`);
}

function decodePathSegment(raw: string, what: string): string {
  try {
    return decodeURIComponent(raw);
  } catch {
    throw new HttpError(400, `Invalid ${what}: bad %-escape or not valid UTF-8 in ${JSON.stringify(raw)}`);
  }
}

/** The key of a /v1/kv/<key> path: %-decoded, valid UTF-8, no leading slash (as Consul's client and server insist). */
function kvKey(path: string): string {
  const key = decodePathSegment(path.slice('/v1/kv/'.length), 'key');
  if (key.startsWith('/')) throw new HttpError(400, "Invalid key: key must not begin with a '/'");
  return key;
}

/** Consul's conflictingFlags: at most one of `flags` may be present. */
function conflictingFlags(query: URLSearchParams, flags: string[]): void {
  if (flags.filter((f) => query.has(f)).length > 1) {
    const sorted = new URLSearchParams(query);
    sorted.sort();
    throw new HttpError(400, `Conflicting flags: ${sorted.toString()}\n`);
  }
}

function uint64Param(query: URLSearchParams, name: string): bigint {
  const text = query.get(name) ?? '';
  const v = parseUint64(text);
  if (v === undefined) {
    throw new HttpError(
      400,
      `Invalid ?${name}=${JSON.stringify(text)}: must be an unsigned 64-bit decimal integer`,
    );
  }
  return v;
}

/** An index (Raft log position): uint64 on the wire, but must fit a JS safe integer here. */
function indexParam(query: URLSearchParams, name: string, prefix = `Invalid ?${name}`): number {
  const text = query.get(name) ?? '';
  const v = parseUint64(text);
  if (v === undefined || v > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new HttpError(400, `${prefix}: ${JSON.stringify(text)} is not an index (an unsigned integer)`);
  }
  return Number(v);
}

function kvOk(result: ApplyResult): boolean {
  if (result.type !== 'kv') throw new Error(`kv command answered ${result.type}`);
  return result.ok;
}

/**
 * Read a request body of at most `maxBytes`. Over the limit: 413 with
 * `tooLarge(declared length)`; the connection is closed rather than
 * draining what the client keeps sending.
 */
function readBody(
  req: IncomingMessage,
  maxBytes: number,
  tooLarge: (declaredLength: number | undefined) => string,
): Promise<Uint8Array> {
  const declared = req.headers['content-length'];
  if (declared !== undefined && Number(declared) > maxBytes) {
    req.resume();
    return Promise.reject(new HttpError(413, tooLarge(Number(declared)), true));
  }
  // Listeners, not `for await`: an async iterator per request cost a few
  // percent of a loaded node's CPU (profiled), for a body that is usually one chunk.
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let total = 0;
    const done = () => {
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('error', onError);
      req.off('close', onClose);
    };
    const onData = (chunk: Buffer) => {
      total += chunk.length;
      if (total > maxBytes) {
        done();
        // The rest is discarded; the 413 closes the connection after it.
        req.resume();
        reject(new HttpError(413, tooLarge(undefined), true));
        return;
      }
      chunks.push(chunk);
    };
    const onEnd = () => {
      done();
      resolve(new Uint8Array(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks)));
    };
    const onError = (err: Error) => {
      done();
      reject(err);
    };
    const onClose = () => {
      done();
      reject(new Error('the client closed the connection before the request body arrived'));
    };
    req.on('data', onData);
    req.on('end', onEnd);
    req.on('error', onError);
    req.on('close', onClose);
  });
}

/** A parsed txn op before verb validation (an unknown verb is reported per op with 409, like Consul). */
interface ParsedTxnOp extends Omit<KvOp, 'verb'> {
  verb: KvVerb | string;
}

/** Decode a /v1/txn body (Consul's api.TxnOps); 400 "Failed to parse body: …" or 413 on bad input. */
function parseTxnOps(body: Buffer): ParsedTxnOp[] {
  const failed = (why: string): never => {
    throw new HttpError(400, `Failed to parse body: ${why}`);
  };
  const text = body.toString('utf8');
  if (!Buffer.from(text, 'utf8').equals(body)) failed('body is not valid UTF-8');
  let parsed: JsonValue;
  try {
    parsed = parseJson(text);
  } catch (err) {
    return failed(err instanceof JsonSyntaxError ? err.message : String(err));
  }
  if (!Array.isArray(parsed)) return failed('expected a JSON array of operations');
  if (parsed.length > MAX_TXN_OPS) {
    throw new HttpError(413, `Transaction contains too many operations (${parsed.length} > ${MAX_TXN_OPS})`);
  }
  return parsed.map((rawOp, i) => {
    const where = `operation ${i}`;
    const opObj = asObject(rawOp, where, failed);
    const kvRaw = member(opObj, 'KV');
    if (kvRaw === undefined || kvRaw === null) {
      return failed(
        `${where} has no KV member (Weft supports KV operations only, not Node, Service or Check)`,
      );
    }
    const kv = asObject(kvRaw, `${where} KV`, failed);
    const str = (name: string): string => {
      const v = member(kv, name);
      if (v === undefined || v === null) return '';
      return typeof v === 'string' ? v : failed(`${where} KV.${name} must be a string`);
    };
    const uint = (name: string, max: bigint): bigint => {
      const v = member(kv, name);
      if (v === undefined || v === null) return 0n;
      const n = v instanceof JsonNumber ? parseUint64(v.text) : undefined;
      if (n === undefined || n > max) return failed(`${where} KV.${name} must be an integer in 0..${max}`);
      return n;
    };
    let value: Uint8Array = new Uint8Array(0);
    const rawValue = member(kv, 'Value');
    if (rawValue !== undefined && rawValue !== null) {
      if (typeof rawValue !== 'string') return failed(`${where} KV.Value must be a base64 string`);
      const decoded = decodeStdBase64(rawValue);
      if (!(decoded instanceof Uint8Array)) {
        return failed(
          `failed to decode value: illegal base64 data at input byte ${decoded.badOffset} (${where})`,
        );
      }
      value = decoded;
    }
    const key = str('Key');
    if (value.length > MAX_VALUE_BYTES) {
      throw new HttpError(
        413,
        `Value for key ${JSON.stringify(key)} is too large (${value.length} > ${MAX_VALUE_BYTES} bytes)`,
      );
    }
    return {
      verb: str('Verb'),
      key,
      value,
      flags: uint('Flags', MAX_FLAGS),
      index: Number(uint('Index', BigInt(Number.MAX_SAFE_INTEGER))),
      session: str('Session'),
    };
  });
}

function asObject(v: JsonValue, where: string, failed: (why: string) => never): Record<string, JsonValue> {
  if (v === null || typeof v !== 'object' || Array.isArray(v) || v instanceof JsonNumber) {
    return failed(`${where} must be a JSON object`);
  }
  return v;
}

/** Case-insensitive member lookup, as Go's encoding/json matches field names. */
function member(obj: Record<string, JsonValue>, name: string): JsonValue | undefined {
  if (name in obj) return obj[name];
  const lower = name.toLowerCase();
  const k = Object.keys(obj).find((x) => x.toLowerCase() === lower);
  return k === undefined ? undefined : obj[k];
}

/** Consul's LockDelay: a Go duration string, or a number (below 1000 means seconds, else nanoseconds). */
function lockDelayMs(v: JsonValue, failed: (why: string) => never): number {
  let ns: number;
  if (typeof v === 'string') {
    try {
      ns = parseGoDurationNs(v);
    } catch (err) {
      return failed((err as Error).message);
    }
  } else if (v instanceof JsonNumber) {
    ns = Number(v.text);
  } else return failed('LockDelay must be a duration string or a number');
  if (ns < LOCK_DELAY_SECONDS_BELOW) ns *= 1e9;
  if (!Number.isFinite(ns) || ns < 0)
    return failed(`LockDelay ${JSON.stringify(v instanceof JsonNumber ? v.text : v)} is not a valid delay`);
  return Math.round(ns / 1e6);
}

/** The QueryMeta members Consul's read-only transaction responses carry (LastContact in ns). */
function txnQueryMeta(lastContactMs: number, knownLeader: boolean): { [key: string]: GoJson } {
  return {
    Index: 0,
    LastContact: Math.round(lastContactMs) * 1_000_000,
    KnownLeader: knownLeader,
    ConsistencyLevel: '',
    NotModified: false,
    Backend: 0,
    ResultsFilteredByACLs: false,
  };
}

/** Consul's DirEntry JSON: LockIndex, Key, Flags, Value (base64, null when empty), Session (omitempty), CreateIndex, ModifyIndex. */
export function dirEntryJson(e: DirEntry): GoJson {
  return {
    LockIndex: e.lockIndex,
    Key: e.key,
    Flags: e.flags,
    Value: e.value.length > 0 ? e.value : null,
    Session: e.session === '' ? undefined : e.session,
    CreateIndex: e.createIndex,
    ModifyIndex: e.modifyIndex,
  };
}

/** Consul's structs.Session JSON. LockDelay is a Go time.Duration: nanoseconds. */
export function sessionJson(s: SessionRecord): GoJson {
  return {
    ID: s.id,
    Name: s.name,
    Node: s.node,
    LockDelay: s.lockDelayMs * 1_000_000,
    Behavior: s.behavior,
    TTL: s.ttl,
    NodeChecks: s.nodeChecks,
    ServiceChecks: null,
    CreateIndex: s.createIndex,
    ModifyIndex: s.modifyIndex,
  };
}
