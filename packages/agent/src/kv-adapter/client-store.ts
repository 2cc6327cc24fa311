// The store of an agent that is a client of the KV cluster, not a Raft member
// (Consul's server/client split: beyond the voter and learner limits, hosts
// use the servers' store over the network and replicate nothing). A KvClient
// of @weft/kv has the methods the overlay's adapter uses on a KvNode, so the
// same KvNodeStore serves both: one set of semantics and error translation
// (unavailable → KvUnavailableError, so the overlay retries), one set of
// metrics. What the client adds: it talks to one server at a time over the
// cluster's libp2p (the cluster key guards it), fails over when that server
// dies, and re-issues blocking queries elsewhere, so watches survive.
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
  const client = await openKvClient(options.servers, {
    ...(options.clusterKey !== undefined ? { clusterKey: options.clusterKey } : {}),
    ...(options.name !== undefined ? { name: options.name } : {}),
    ...(options.logger ? { log: transportLog(options.logger) } : {}),
    ...(options.connectTimeoutMs !== undefined ? { connectTimeoutMs: options.connectTimeoutMs } : {}),
    ...options.client,
  });
  return { store: new KvNodeStore(client, options.metrics), client, close: () => client.close() };
}

/**
 * The client alone, for code that wraps it itself (the agent's KV component
 * uses it in place of a KvNode: it has the same store methods and close()).
 * `options.log` takes a KvNode-style log (a pino logger's four levels).
 */
export function openKvClient(
  servers: string[],
  options: Omit<KvClientOptions, 'servers'> = {},
): Promise<KvClient> {
  return KvClient.connect({ ...options, servers });
}
