// KvClient: the store for a process that is not a Raft member (Consul's
// server/client split). It runs its own small libp2p node (TCP + noise +
// yamux, the cluster key as pnet) that listens nowhere, dials one server at a
// time, and speaks the Consul HTTP API to it through the server's HTTP tunnel
// (api/http-tunnel.ts). So hundreds of hosts can use a cluster of a few
// servers without any of them replicating the log, with the embedding API's
// methods (get, put, cas, delete, list, txn, sessions, watchPrefix) and no
// port of its own.
//
// Failing over (client/server-list.ts has the policy):
//  - a server that cannot be reached is skipped before anything is sent, so
//    every request, write or read, simply goes to the next one;
//  - a request the server took but never answered (its connection died)
//    fails with KvClientUnavailableError(inFlight: true) — a write may or may
//    not have been applied — and the next request goes elsewhere. Reads
//    (the typed get/list/sessions/... and watches) are retried on another
//    server instead, like Consul's client retries reads after an EOF;
//  - 503 (that server has no leader or quorum) moves the next requests to
//    another server; reads are retried there at once.
import { request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import { hostname } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Libp2p } from 'libp2p';
import { CLUSTER_HEADER, TXN_INDEX_HEADER } from '../api/http.js';
import { DEFAULT_CLUSTER_NAME } from '../api/http-tunnel.js';
import type {
  CreateSessionOptions,
  DeleteOptions,
  KeyWatchEvent,
  MemberInfo,
  PutOptions,
  ReadOptions,
  TxnResult,
  WatchEvent,
  WatchOptions,
} from '../api/node.js';
import { parseHostPort, raftIdOf } from '../api/node-address.js';
import { KvInputError } from '../api/node-errors.js';
import { checkKey, checkSessionOptions } from '../api/node-input.js';
import { type DirEntry, MAX_TXN_OPS } from '../fsm/types.js';
import { silentLog, type TransportLog } from '../transport/transport.js';
import {
  asArray,
  dirEntryFromJson,
  membersFromJson,
  parseBody,
  type SessionInfo,
  sessionFromJson,
  type TxnOpInput,
  txnBody,
  txnRowsFromJson,
} from './consul-json.js';
import { KvClientClosedError, KvClientUnavailableError, TunnelDialError } from './errors.js';
import { ServerList } from './server-list.js';
import type { TunnelAgent, TunnelAgentOptions } from './tunnel-agent.js';

export interface KvClientOptions {
  /** Raft addresses (HOST:PORT) of servers, as in the members' --peers; more are learned from the cluster. */
  servers: string[];
  /** The cluster's pre-shared key (file contents, or 64 hex digits): required when the servers use one. */
  clusterKey?: string | Uint8Array;
  /** The cluster's name (the members' --cluster, default "weft"): a server of another cluster is not used. */
  cluster?: string;
  /** Node name recorded in the sessions this client creates (default: the host name). */
  name?: string;
  /** connect() waits this long for a first server to answer (default 10 s). */
  connectTimeoutMs?: number;
  /** Per connection attempt and stream opening (default 5 s). */
  dialTimeoutMs?: number;
  /** A request not answered within this long fails (default 30 s; blocking queries get their wait on top). */
  requestTimeoutMs?: number;
  /** How long one blocking query of a watch waits on the server before it is re-issued (default 60 s). */
  watchWaitMs?: number;
  /** Reshuffle the server order this often to spread clients out again (default 2 min; 0 = never). */
  rebalanceIntervalMs?: number;
  /** Ask the cluster for its voters this often, to learn servers added later (default 30 s; 0 = never). */
  refreshServersIntervalMs?: number;
  /** Concurrent requests (blocking queries included) per server; more wait for a free one (default 256). */
  maxStreamsPerServer?: number;
  log?: TransportLog;
}

export interface KvClientRequestOptions {
  /** Request body (PUT). */
  body?: string | Uint8Array;
  headers?: Record<string, string>;
  /** Abandons the request; it then rejects with the signal's reason. */
  signal?: AbortSignal;
  /** Overrides the client's requestTimeoutMs for this request. */
  timeoutMs?: number;
}

export interface KvClientResponse {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
  /** The server (Raft address) that answered. */
  server: string;
}

/** Largest response body accepted (a listing of a huge prefix beyond this fails rather than exhausting memory). */
const MAX_RESPONSE_BYTES = 512 * 1024 * 1024;
/** Pause between rounds over all servers while a watch or connect() waits for one to come back. */
const RETRY_PAUSE_MS = 250;
const MAX_RETRY_PAUSE_MS = 2_000;

/** The request reached a server but no answer came back (its connection died, or time ran out). */
class InFlightFailure extends Error {
  constructor(
    readonly server: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

export class KvClient {
  /** Node name recorded in this client's sessions. */
  readonly name: string;
  private readonly servers: ServerList;
  private readonly agent: TunnelAgent;
  private readonly closing = new AbortController();
  private readonly timers: NodeJS.Timeout[] = [];
  private readonly requestTimeoutMs: number;
  private readonly watchWaitMs: number;
  private readonly log: TransportLog;
  private readonly cluster: string;
  private closed = false;

  private constructor(
    private readonly node: Libp2p,
    makeAgent: (options: TunnelAgentOptions) => TunnelAgent,
    options: KvClientOptions,
    seeds: string[],
  ) {
    this.name = options.name ?? hostname();
    this.servers = new ServerList(seeds);
    this.requestTimeoutMs = options.requestTimeoutMs ?? 30_000;
    this.watchWaitMs = options.watchWaitMs ?? 60_000;
    this.log = options.log ?? silentLog;
    this.cluster = options.cluster ?? DEFAULT_CLUSTER_NAME;
    this.agent = makeAgent({
      dialTimeoutMs: options.dialTimeoutMs ?? 5_000,
      maxStreamsPerServer: options.maxStreamsPerServer ?? 256,
    });
  }

  /**
   * Starts the client and resolves once a server answered (it need not know a
   * leader yet). Rejects with KvClientUnavailableError naming each server's
   * problem if none answers within connectTimeoutMs, or with an AddressError /
   * Error naming a malformed server address or cluster key.
   */
  static async connect(options: KvClientOptions): Promise<KvClient> {
    if (!Array.isArray(options.servers) || options.servers.length === 0) {
      throw new KvInputError(
        'KV client: no servers given (expected Raft addresses HOST:PORT of cluster members)',
      );
    }
    const seeds = options.servers.map(raftIdOf);
    const { node, TunnelAgent } = await createClientLibp2p(options.clusterKey);
    const client = new KvClient(node, (o) => new TunnelAgent(node, o), options, seeds);
    try {
      await client.waitForServer(options.connectTimeoutMs ?? 10_000);
    } catch (err) {
      await client.close();
      throw err;
    }
    client.startTimers(options);
    return client;
  }

  private async waitForServer(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (let pauseMs = RETRY_PAUSE_MS; ; pauseMs = Math.min(pauseMs * 2, MAX_RETRY_PAUSE_MS)) {
      try {
        const timeoutMs = Math.max(1, deadline - Date.now());
        await this.exchange(
          'GET',
          '/v1/status/leader',
          { timeoutMs },
          { retryInFlight: true, retry503: false },
        );
        return;
      } catch (err) {
        if (!(err instanceof KvClientUnavailableError) || Date.now() + pauseMs > deadline) {
          if (err instanceof KvClientUnavailableError) {
            throw new KvClientUnavailableError(
              `KV client: no server answered within ${timeoutMs} ms (${err.message}); ` +
                'check the addresses, that the servers run, and the cluster key',
              false,
              { cause: err },
            );
          }
          throw err;
        }
      }
      await sleep(pauseMs, undefined, { signal: this.closing.signal }).catch(() => {});
    }
  }

  private startTimers(options: KvClientOptions): void {
    const rebalanceMs = options.rebalanceIntervalMs ?? 120_000;
    if (rebalanceMs > 0) this.timers.push(setInterval(() => this.servers.rebalance(), rebalanceMs));
    const refreshMs = options.refreshServersIntervalMs ?? 30_000;
    if (refreshMs > 0) {
      const refresh = () => void this.refreshServers().catch(() => {});
      this.timers.push(setInterval(refresh, refreshMs));
      refresh();
    }
    for (const t of this.timers) t.unref();
  }

  /** Adds the cluster's current voters to the servers this client may use. */
  async refreshServers(): Promise<void> {
    const peers = await this.readJson('/v1/status/peers');
    const reported = asArray('GET /v1/status/peers', peers).flatMap((p) => {
      try {
        return typeof p === 'string' ? [raftIdOf(p)] : [];
      } catch {
        return [];
      }
    });
    if (reported.length > 0) this.servers.update(reported);
  }

  /** The server this client sends its next request to. */
  currentServer(): string {
    return this.servers.preferred();
  }

  /** Every server this client knows, in the order it would try them. */
  knownServers(): string[] {
    return this.servers.all();
  }

  // ------------------------------------------------------------ HTTP

  /**
   * One Consul HTTP API request (`path` with its query, e.g.
   * "/v1/kv/app?recurse"), sent to the current server or, when that one
   * cannot be reached, the next. Any status is returned as is. Rejects with
   * KvClientUnavailableError when no server could be reached, or the one that
   * took the request failed before answering (inFlight: true).
   */
  request(method: string, path: string, options: KvClientRequestOptions = {}): Promise<KvClientResponse> {
    return this.exchange(method, path, options, { retryInFlight: false, retry503: false });
  }

  private async exchange(
    method: string,
    path: string,
    options: KvClientRequestOptions,
    policy: { retryInFlight: boolean; retry503: boolean },
  ): Promise<KvClientResponse> {
    if (this.closed) throw new KvClientClosedError(`${method} ${path}`);
    const problems: string[] = [];
    const tried = new Set<string>();
    for (;;) {
      const server = this.servers.all().find((s) => !tried.has(s));
      if (server === undefined) {
        throw new KvClientUnavailableError(
          `${method} ${path}: no KV server could serve it (${problems.join('; ')})`,
          problems.some((p) => p.includes('in flight')),
        );
      }
      tried.add(server);
      try {
        const response = await this.sendTo(server, method, path, options);
        if (response.status === 503) {
          this.servers.noteFailure(server);
          if (policy.retry503) {
            problems.push(`${server}: ${response.body.toString('utf8').trim()}`);
            continue;
          }
        }
        return response;
      } catch (err) {
        if (err instanceof TunnelDialError) {
          this.servers.noteFailure(server);
          problems.push(err.message);
          this.log.debug({ server, err: err.message }, 'KV server unreachable; trying the next');
          continue;
        }
        if (err instanceof InFlightFailure) {
          this.servers.noteFailure(server);
          this.log.warn({ server, method, path, err: err.message }, 'KV server failed during a request');
          if (policy.retryInFlight) {
            problems.push(`${server}: ${err.message}`);
            continue;
          }
          throw new KvClientUnavailableError(
            `${method} ${path}: ${err.message}; it may or may not have been applied (retry it: the next request goes to another server)`,
            true,
            { cause: err.cause },
          );
        }
        throw err;
      }
    }
  }

  private sendTo(
    server: string,
    method: string,
    path: string,
    options: KvClientRequestOptions,
  ): Promise<KvClientResponse> {
    const { host, port } = parseHostPort(server);
    const timeoutMs = options.timeoutMs ?? this.requestTimeoutMs;
    const timeout = AbortSignal.timeout(timeoutMs);
    const signals = [this.closing.signal, timeout, ...(options.signal ? [options.signal] : [])];
    const signal = AbortSignal.any(signals);
    const body =
      options.body === undefined
        ? undefined
        : typeof options.body === 'string'
          ? Buffer.from(options.body)
          : Buffer.from(options.body.buffer, options.body.byteOffset, options.body.byteLength);
    return new Promise<KvClientResponse>((resolve, reject) => {
      let sent = false;
      let settled = false;
      const req = httpRequest({
        agent: this.agent,
        host,
        port,
        method,
        path,
        headers: { ...(body ? { 'content-length': String(body.length) } : {}), ...options.headers },
      });
      const onAbort = () => req.destroy(new Error('aborted'));
      signal.addEventListener('abort', onAbort, { once: true });
      const settle = (outcome: () => void) => {
        if (settled) return;
        settled = true;
        signal.removeEventListener('abort', onAbort);
        outcome();
      };
      const fail = (err: Error) =>
        settle(() => {
          if (options.signal?.aborted) return reject(options.signal.reason);
          if (this.closing.signal.aborted) return reject(new KvClientClosedError(`${method} ${path}`));
          if (err instanceof TunnelDialError) return reject(err);
          const why = timeout.aborted
            ? `no answer within ${timeoutMs} ms`
            : `connection lost (${err.message})`;
          if (!sent) return reject(new TunnelDialError(server, new Error(why)));
          reject(
            new InFlightFailure(server, `server ${server} took the request but failed in flight: ${why}`, {
              cause: err,
            }),
          );
        });
      req.once('socket', () => {
        sent = true;
      });
      req.once('error', fail);
      req.once('response', (res) => {
        const chunks: Buffer[] = [];
        let total = 0;
        res.on('data', (chunk: Buffer) => {
          total += chunk.length;
          if (total > MAX_RESPONSE_BYTES) {
            req.destroy(new Error(`answer larger than ${MAX_RESPONSE_BYTES} bytes`));
            return;
          }
          chunks.push(chunk);
        });
        res.once('end', () =>
          settle(() => {
            const cluster = res.headers[CLUSTER_HEADER.toLowerCase()];
            if (cluster !== this.cluster) {
              // As if unreachable: a member of another cluster did nothing for us; the next server may do.
              const named = JSON.stringify(cluster ?? '(none)');
              reject(
                new TunnelDialError(
                  server,
                  new Error(
                    `it is a member of cluster ${named}, this client's is ${JSON.stringify(this.cluster)} (check the server addresses and the cluster option)`,
                  ),
                ),
              );
              return;
            }
            resolve({
              status: res.statusCode ?? 0,
              headers: res.headers,
              body: Buffer.concat(chunks),
              server,
            });
          }),
        );
        // A response cut short (the connection died mid-body).
        res.once('error', fail);
        res.once('aborted', () => fail(new Error('answer cut short')));
      });
      req.end(body);
    });
  }

  // ------------------------------------------------------------ helpers

  /** A read: retried on another server when one fails mid-request or has no quorum. */
  private read(path: string, options: KvClientRequestOptions = {}): Promise<KvClientResponse> {
    return this.exchange('GET', path, options, { retryInFlight: true, retry503: true });
  }

  private write(method: 'PUT' | 'DELETE', path: string, options: KvClientRequestOptions = {}) {
    return this.exchange(method, path, options, { retryInFlight: false, retry503: false });
  }

  private async readJson(path: string, options: KvClientRequestOptions = {}) {
    return parseBody(
      `GET ${path}`,
      expectOk(`GET ${path}`, await this.read(path, options)).body.toString('utf8'),
    );
  }

  // ------------------------------------------------------------ the embedding API

  async get(key: string, options: ReadOptions = {}): Promise<DirEntry | null> {
    return (await this.getIndexed(key, options)).value;
  }

  /** The key's entry with the index a blocking query would compare (X-Consul-Index). */
  async getIndexed(
    key: string,
    options: ReadOptions = {},
  ): Promise<{ index: number; value: DirEntry | null }> {
    checkKey(key, 'key', 'get', true);
    if (key === '') return { index: 0, value: null }; // never stored; HTTP cannot name it
    const path = `/v1/kv/${encodeKey(key)}${readQuery(options)}`;
    const res = await this.read(path);
    return { index: consulIndex(res), value: firstEntry(`GET ${path}`, res) };
  }

  /** Every key under `prefix`, in key order, with values. */
  async list(prefix: string, options: ReadOptions = {}): Promise<DirEntry[]> {
    checkKey(prefix, 'prefix', 'list');
    const path = `/v1/kv/${encodeKey(prefix)}?recurse${readQuery(options, '&')}`;
    return entries(`GET ${path}`, await this.read(path));
  }

  /** Key names under `prefix`; with a separator, deeper keys fold into "prefix…separator". */
  async keys(prefix: string, options: ReadOptions & { separator?: string } = {}): Promise<string[]> {
    checkKey(prefix, 'prefix', 'keys');
    const sep = options.separator ? `&separator=${encodeURIComponent(options.separator)}` : '';
    const path = `/v1/kv/${encodeKey(prefix)}?keys${sep}${readQuery(options, '&')}`;
    const res = await this.read(path);
    if (res.status === 404) return [];
    const list = asArray(
      `GET ${path}`,
      parseBody(`GET ${path}`, expectOk(`GET ${path}`, res).body.toString('utf8')),
    );
    return list.filter((k): k is string => typeof k === 'string');
  }

  /** Set; with cas / acquire / release, false when the condition failed. */
  async put(key: string, value: Uint8Array, options: PutOptions = {}): Promise<boolean> {
    checkKey(key, 'key', 'put');
    const query = new URLSearchParams();
    if (options.flags !== undefined && options.flags !== 0n) query.set('flags', options.flags.toString());
    if (options.acquire) query.set('acquire', options.acquire);
    else if (options.release) query.set('release', options.release);
    else if (options.cas !== undefined) query.set('cas', String(options.cas));
    const q = query.toString();
    const path = `/v1/kv/${encodeKey(key)}${q ? `?${q}` : ''}`;
    return booleanBody(`PUT ${path}`, await this.write('PUT', path, { body: value }));
  }

  /** Check-and-set: writes only if the key's ModifyIndex is `index` (0 = only if absent). */
  cas(key: string, value: Uint8Array, index: number): Promise<boolean> {
    return this.put(key, value, { cas: index });
  }

  async delete(key: string, options: DeleteOptions = {}): Promise<boolean> {
    checkKey(key, options.recurse ? 'prefix' : 'key', 'delete');
    const query = options.recurse ? '?recurse' : options.cas !== undefined ? `?cas=${options.cas}` : '';
    const path = `/v1/kv/${encodeKey(key)}${query}`;
    return booleanBody(`DELETE ${path}`, await this.write('DELETE', path));
  }

  /** All-or-nothing transaction of up to 64 operations (Consul /v1/txn verbs). */
  async txn(ops: TxnOpInput[], options: ReadOptions = {}): Promise<TxnResult> {
    if (ops.length > MAX_TXN_OPS) {
      throw new KvInputError(`txn: ${ops.length} operations; at most ${MAX_TXN_OPS} per transaction`);
    }
    const readOnly = ops.every((o) =>
      ['get', 'get-tree', 'check-index', 'check-session', 'check-not-exists'].includes(o.verb),
    );
    const path = `/v1/txn${readOnly ? readQuery(options) : ''}`;
    const body = txnBody(ops);
    // A read-only transaction is a read: safe to retry on another server.
    const res = readOnly
      ? await this.exchange('PUT', path, { body }, { retryInFlight: true, retry503: true })
      : await this.write('PUT', path, { body });
    if (res.status !== 200 && res.status !== 409) expectOk(`PUT ${path}`, res);
    const rows = txnRowsFromJson(`PUT ${path}`, parseBody(`PUT ${path}`, res.body.toString('utf8')));
    const index = Number(res.headers[TXN_INDEX_HEADER.toLowerCase()] ?? 0);
    return res.status === 200
      ? { ok: true, index, results: rows.results }
      : { ok: false, index, errors: rows.errors };
  }

  async createSession(options: CreateSessionOptions = {}): Promise<string> {
    checkSessionOptions(options);
    const ttlMs = options.ttlMs ?? 0;
    const body = JSON.stringify({
      Name: options.name ?? '',
      Node: options.node ?? this.name,
      Behavior: options.behavior ?? 'release',
      LockDelay: `${options.lockDelayMs ?? 15_000}ms`,
      ...(ttlMs > 0 ? { TTL: `${ttlMs / 1000}s` } : {}),
    });
    const path = '/v1/session/create';
    const res = expectOk(`PUT ${path}`, await this.write('PUT', path, { body }));
    const id = (parseBody(`PUT ${path}`, res.body.toString('utf8')) as { ID?: unknown } | null)?.ID;
    if (typeof id !== 'string') throw new Error(`PUT ${path}: the answer carries no session ID`);
    return id;
  }

  /** Renews a session's TTL; null when it no longer exists (expired or destroyed). */
  async renewSession(id: string): Promise<SessionInfo | null> {
    const path = `/v1/session/renew/${encodeURIComponent(id)}`;
    const res = await this.write('PUT', path);
    if (res.status === 404) return null;
    const list = asArray(
      `PUT ${path}`,
      parseBody(`PUT ${path}`, expectOk(`PUT ${path}`, res).body.toString('utf8')),
    );
    return list.length > 0 ? sessionFromJson(`PUT ${path}`, list[0]!) : null;
  }

  /**
   * Destroys a session (its locks are released or its keys deleted, per its
   * behavior). Always true: the HTTP API does not say whether it existed.
   */
  async destroySession(id: string): Promise<boolean> {
    const path = `/v1/session/destroy/${encodeURIComponent(id)}`;
    expectOk(`PUT ${path}`, await this.write('PUT', path));
    return true;
  }

  async sessions(options: ReadOptions = {}): Promise<SessionInfo[]> {
    const path = `/v1/session/list${readQuery(options)}`;
    return asArray(`GET ${path}`, await this.readJson(path)).map((s) => sessionFromJson(`GET ${path}`, s));
  }

  async session(id: string, options: ReadOptions = {}): Promise<SessionInfo | null> {
    const path = `/v1/session/info/${encodeURIComponent(id)}${readQuery(options)}`;
    const list = asArray(`GET ${path}`, await this.readJson(path));
    return list.length > 0 ? sessionFromJson(`GET ${path}`, list[0]!) : null;
  }

  /** Raft address of the current leader, '' when the server asked knows none. */
  async leader(): Promise<string> {
    const v = await this.readJson('/v1/status/leader');
    return typeof v === 'string' ? v : '';
  }

  /** The Raft members (voters and learners, with names and the leader) as the server asked sees them. */
  async members(options: { timeoutMs?: number } = {}): Promise<MemberInfo[]> {
    const path = '/v1/operator/raft/configuration';
    return membersFromJson(`GET ${path}`, await this.readJson(path, options));
  }

  /** Raft addresses of the voting members. */
  async peers(): Promise<string[]> {
    return asArray('GET /v1/status/peers', await this.readJson('/v1/status/peers')).filter(
      (p): p is string => typeof p === 'string',
    );
  }

  /**
   * Blocking-query watch of a prefix, like KvNode.watchPrefix: the listing now
   * (or once the prefix's index passes `index`), then after every change.
   * Survives server deaths and leader changes: a failed query is re-issued on
   * another server from the last index seen. Ends when `signal` aborts or
   * the client closes; throws only for errors no retry can fix (bad input).
   */
  async *watchPrefix(prefix: string, options: WatchOptions = {}): AsyncIterable<WatchEvent> {
    checkKey(prefix, 'prefix', 'watch');
    const what = `watch of prefix "${prefix}"`;
    for await (const { index, res } of this.watchLoop(`/v1/kv/${encodeKey(prefix)}?recurse`, what, options)) {
      yield { index, entries: entries(what, res) };
    }
  }

  /** Watch of one key, like KvNode.watchKey: null while absent; an absent key staying absent is not news. */
  async *watchKey(key: string, options: WatchOptions = {}): AsyncIterable<KeyWatchEvent> {
    checkKey(key, 'key', 'watch');
    const what = `watch of key "${key}"`;
    let previous: DirEntry | null | undefined;
    for await (const { index, res } of this.watchLoop(`/v1/kv/${encodeKey(key)}`, what, options)) {
      const entry = firstEntry(what, res);
      if (!(entry === null && previous === null)) yield { index, entry };
      previous = entry;
    }
  }

  /** Consul blocking queries on `path` from `options.index`, yielding each answer past the last index. */
  private async *watchLoop(
    path: string,
    what: string,
    options: WatchOptions,
  ): AsyncGenerator<{ index: number; res: KvClientResponse }> {
    const signal = options.signal
      ? AbortSignal.any([options.signal, this.closing.signal])
      : this.closing.signal;
    let index = options.index ?? 0;
    let first = options.index === undefined;
    let pauseMs = RETRY_PAUSE_MS;
    const sep = path.includes('?') ? '&' : '?';
    while (!signal.aborted) {
      const query = first ? path : `${path}${sep}index=${index}&wait=${this.watchWaitMs}ms`;
      let res: KvClientResponse;
      try {
        res = await this.read(query, {
          signal,
          // The server may hold the query for wait + wait/16 (Consul's jitter).
          timeoutMs: this.watchWaitMs + this.watchWaitMs / 16 + this.requestTimeoutMs,
        });
        if (res.status === 503)
          throw new KvClientUnavailableError(`${what}: ${res.body.toString('utf8')}`, false);
        if (res.status !== 404) expectOk(`GET ${query}`, res);
      } catch (err) {
        if (signal.aborted) return;
        if (!(err instanceof KvClientUnavailableError)) throw err;
        // Every server failed this round: wait and go round again (a watcher must not have to poll).
        this.log.debug({ what, err: err.message }, 'watch: no server answered; retrying');
        await sleep(pauseMs, undefined, { signal }).catch(() => {});
        pauseMs = Math.min(pauseMs * 2, MAX_RETRY_PAUSE_MS);
        continue;
      }
      pauseMs = RETRY_PAUSE_MS;
      const next = consulIndex(res);
      // Consul's rule: yield what moved past the last index; an unchanged index is a timed-out wait.
      if (first || next > index) {
        first = false;
        index = next;
        yield { index, res };
      }
    }
  }

  /** Stops watches and pending requests (they reject with KvClientClosedError), closes connections. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const t of this.timers) clearInterval(t);
    this.closing.abort(new KvClientClosedError('request'));
    this.agent.destroy();
    await this.node.stop();
  }
}

/** Path form of a key: every character but '/' percent-encoded (the server decodes the whole remainder). */
function encodeKey(key: string): string {
  return key.split('/').map(encodeURIComponent).join('/');
}

function readQuery(options: ReadOptions, lead = '?'): string {
  if (options.stale) return `${lead}stale`;
  if (options.consistent) return `${lead}consistent`;
  return '';
}

function consulIndex(res: KvClientResponse): number {
  const v = Number(res.headers['x-consul-index']);
  return Number.isSafeInteger(v) && v >= 0 ? v : 0;
}

/** Throws for any status but 200: 400/413 as KvInputError (nothing was written), 503 as unavailable. */
function expectOk(request: string, res: KvClientResponse): KvClientResponse {
  if (res.status === 200) return res;
  const text = res.body.toString('utf8').trim();
  const what = `${request} on server ${res.server}`;
  if (res.status === 400 || res.status === 413) throw new KvInputError(`${what}: refused: ${text}`);
  // A write that timed out waiting for its commit may still be applied.
  if (res.status === 503) throw new KvClientUnavailableError(`${what}: ${text}`, !request.startsWith('GET'));
  throw new Error(`${what}: HTTP ${res.status}: ${text}`);
}

function booleanBody(request: string, res: KvClientResponse): boolean {
  const text = expectOk(request, res).body.toString('utf8').trim();
  if (text === 'true') return true;
  if (text === 'false') return false;
  throw new Error(`${request}: expected true or false, got ${JSON.stringify(text.slice(0, 100))}`);
}

function entries(what: string, res: KvClientResponse): DirEntry[] {
  if (res.status === 404) return [];
  const body = parseBody(what, expectOk(what, res).body.toString('utf8'));
  return asArray(what, body).map((e) => dirEntryFromJson(what, e));
}

function firstEntry(what: string, res: KvClientResponse): DirEntry | null {
  return entries(what, res)[0] ?? null;
}

/**
 * The client's libp2p node: the members' wire stack (clusterWireStack), no
 * listen address, no DHT (a client finds servers by address, not peer id).
 * Loaded on demand so importing @weft/kv does not load libp2p.
 */
async function createClientLibp2p(
  clusterKey: string | Uint8Array | undefined,
): Promise<{ node: Libp2p; TunnelAgent: typeof TunnelAgent }> {
  await import('../transport/polyfill.js');
  const { parseClusterKey } = await import('../transport/identity.js');
  // Parsed before anything starts: a malformed key is reported naming the problem.
  const psk = clusterKey === undefined ? undefined : parseClusterKey(clusterKey);
  const [{ generateKeyPair }, { createLibp2p }, { clusterWireStack, quietLogger }] = await Promise.all([
    import('@libp2p/crypto/keys'),
    import('libp2p'),
    import('../transport/libp2p.js'),
  ]);
  // Its stream sockets and multiaddr parsing are needed only now, too.
  const { TunnelAgent } = await import('./tunnel-agent.js');
  const node = await createLibp2p({
    privateKey: await generateKeyPair('Ed25519'), // a client has no identity anyone records
    logger: quietLogger(),
    addresses: { listen: [] },
    ...clusterWireStack(psk),
  });
  return { node, TunnelAgent };
}
