// The store of an agent that runs as a client of the KV cluster (beyond the
// voter and learner limits, see kv-role.ts): the servers' KV over the
// network, without a replica. This is the one place client mode plugs in:
// a KvClient of @weft/kv (kv-adapter/client-store.ts), which has the store
// methods of a KvNode. (Were it undefined, an agent that must be a client
// would refuse to start, saying so: kv-component.ts.)
import { openKvClient } from '../kv-adapter/client-store.js';
import type { KvClientFactory } from './kv-component.js';

export const openKvClientStore: KvClientFactory | undefined = (servers, options) =>
  openKvClient(servers, {
    ...(options.clusterKey !== undefined ? { clusterKey: options.clusterKey } : {}),
    ...(options.cluster !== undefined ? { cluster: options.cluster } : {}),
    ...(options.id !== undefined ? { name: options.id } : {}),
    ...(options.log ? { log: options.log } : {}),
  });
