// The store of an agent that runs as a client of the KV cluster (beyond the
// voter and learner limits, see kv-role.ts): the servers' KV over the
// network, without a replica — a KvClient of @weft/kv, which has the store
// methods of a KvNode. (Without this factory, e.g. in tests, an agent that
// must be a client refuses to start, saying so: kv-component.ts.)
import { KvClient } from '@weft/kv/client/kv-client';
import type { KvClientFactory } from './kv-component.js';

export const openKvClientStore: KvClientFactory = (servers, options) =>
  KvClient.connect({
    servers,
    ...(options.clusterKey !== undefined ? { clusterKey: options.clusterKey } : {}),
    ...(options.cluster !== undefined ? { cluster: options.cluster } : {}),
    ...(options.id !== undefined ? { name: options.id } : {}),
    ...(options.log ? { log: options.log } : {}),
  });
