// The store of an agent that is a client of the KV cluster, not a Raft member
// (Consul's server/client split: beyond the voter and learner limits, hosts
// use the servers' store over the network and replicate nothing). A KvClient
// of @weft/kv has the methods the overlay's adapter uses on a KvNode, so the
// same KvNodeStore serves both: one set of semantics and error translation
// (unavailable → KvUnavailableError, so the overlay retries), one set of
// metrics. What the client adds: it talks to one server at a time over the
// cluster's libp2p (the cluster key guards it), fails over when that server
// dies, and re-issues blocking queries elsewhere, so watches survive.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { KvClient, type KvClientOptions } from '@weft/kv/client/kv-client';
import type { TransportLog } from '@weft/kv/transport/transport';
import type { KvStore } from '@weft/overlay';
import type { Logger } from '../log/logger.js';
import type { AgentMetrics } from '../metrics/metrics.js';
import { KvNodeStore } from './kvnode-store.js';

export interface ClientStoreOptions {
  /** Raft addresses (HOST:PORT) of members to use; more are learned from the cluster. */
  servers: string[];
  /** The cluster's pre-shared key, as the members were given it. */
  clusterKey?: Uint8Array | string;
  /** This agent's name, recorded as the Node of its sessions. */
  name?: string;
  logger?: Logger;
  metrics?: AgentMetrics;
  /** How long to wait for a first server to answer (default 10 s). */
  connectTimeoutMs?: number;
  /** Overrides for tests (watch wait, timeouts). */
  client?: Partial<Omit<KvClientOptions, 'servers' | 'clusterKey' | 'name' | 'log'>>;
}

export interface ClientStore {
  /** The overlay's store. */
  store: KvStore;
  /** The client under it (status: currentServer(), knownServers(); raw Consul requests). */
  client: KvClient;
  close(): Promise<void>;
}

function transportLog(logger: Logger): TransportLog {
  return {
    debug: (f, m) => logger.debug(f, m),
    info: (f, m) => logger.info(f, m),
    warn: (f, m) => logger.warn(f, m),
    error: (f, m) => logger.error(f, m),
  };
}

/**
 * Opens a KvClient of `servers` and returns it, plus the overlay's store on
 * it. Rejects (KvClientUnavailableError, naming each server's problem) when
 * no server answers within connectTimeoutMs.
 */
export async function createClientStore(options: ClientStoreOptions): Promise<ClientStore> {
  const client = await KvClient.connect({
    servers: options.servers,
    ...(options.clusterKey !== undefined ? { clusterKey: options.clusterKey } : {}),
    ...(options.name !== undefined ? { name: options.name } : {}),
    ...(options.logger ? { log: transportLog(options.logger) } : {}),
    ...(options.connectTimeoutMs !== undefined ? { connectTimeoutMs: options.connectTimeoutMs } : {}),
    ...options.client,
  });
  return { store: new KvNodeStore(client, options.metrics), client, close: () => client.close() };
}

/** The part of KvClient the Consul API proxy needs. */
export type ConsulRequester = Pick<KvClient, 'request'>;

/** Headers of the servers' answers that the proxy passes on (Consul clients read them). */
const PASSED_HEADERS =
  /^(content-type|x-consul-.*|x-weft-index|x-content-type-options|content-security-policy)$/i;
/** Longest body proxied (a value or a transaction, with room for base64). */
const MAX_PROXIED_BODY_BYTES = 1 << 20;
/** Consul's longest blocking wait is 10 min, plus jitter (wait/16). */
const BLOCKING_QUERY_TIMEOUT_MS = 11 * 60_000;

/**
 * Serves a client agent's Consul KV API (/v1/kv, /v1/txn, /v1/session,
 * /v1/status) by passing each request on to a server through the KvClient,
 * so `weft kv ...` and Consul clients work on every host, also on those that
 * hold no replica. Status, body and the X-Consul-* headers come back as the
 * server answered; no server reachable is a 503 saying so.
 */
export async function proxyConsulRequest(
  client: ConsulRequester,
  req: IncomingMessage,
  res: ServerResponse,
): Promise<void> {
  const url = req.url ?? '/';
  try {
    const chunks: Buffer[] = [];
    let total = 0;
    for await (const chunk of req as AsyncIterable<Buffer>) {
      total += chunk.length;
      if (total > MAX_PROXIED_BODY_BYTES) {
        res.writeHead(413, { 'content-type': 'text/plain; charset=utf-8', connection: 'close' });
        res.end(`request body over ${MAX_PROXIED_BODY_BYTES} bytes\n`);
        return;
      }
      chunks.push(chunk);
    }
    const gone = new AbortController();
    res.once('close', () => gone.abort());
    const answer = await client.request(req.method ?? 'GET', url, {
      ...(chunks.length > 0 ? { body: new Uint8Array(Buffer.concat(chunks)) } : {}),
      signal: gone.signal,
      ...(/[?&]index=/.test(url) ? { timeoutMs: BLOCKING_QUERY_TIMEOUT_MS } : {}),
    });
    for (const [name, value] of Object.entries(answer.headers)) {
      if (value !== undefined && PASSED_HEADERS.test(name)) res.setHeader(name, value);
    }
    res.setHeader('content-length', answer.body.length);
    res.writeHead(answer.status);
    res.end(answer.body);
  } catch (err) {
    if (res.headersSent || res.destroyed) return void res.destroy();
    res.writeHead((err as { code?: unknown }).code === 'unavailable' ? 503 : 502, {
      'content-type': 'text/plain; charset=utf-8',
    });
    res.end(
      `this agent is a client of the KV store and could not reach a server: ${(err as Error).message}\n`,
    );
  }
}
