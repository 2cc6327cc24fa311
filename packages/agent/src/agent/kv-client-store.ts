// The store of an agent that runs as a client of the KV cluster (beyond the
// voter and learner limits, see kv-role.ts): the servers' KV over the
// network, without a replica. This is the one place client mode plugs in;
// while it is undefined, an agent that must be a client refuses to start
// with an error saying so (kv-component.ts).
import type { KvClientFactory } from './kv-component.js';

export const openKvClientStore: KvClientFactory | undefined = undefined;
