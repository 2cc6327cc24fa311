// Embedding API: one member of a replicated KV cluster.

export {
  type AutopilotAction,
  type AutopilotInput,
  type AutopilotLimits,
  joinRefusal,
  type MemberHealth,
  nextMembershipAction,
} from './api/autopilot.js';
export { KV_HTTP_PROTOCOL } from './api/http-tunnel.js';
export {
  type CreateSessionOptions,
  DEFAULT_CLUSTER_NAME,
  DEFAULT_DEAD_VOTER_THRESHOLD_MS,
  DEFAULT_ELECTION_TICKS,
  DEFAULT_HEARTBEAT_TICKS,
  DEFAULT_PROPOSAL_TIMEOUT_MS,
  DEFAULT_SNAPSHOT_EVERY_ENTRIES,
  DEFAULT_TICK_MS,
  type DeleteOptions,
  type KeyWatchEvent,
  KvNode,
  type KvNodeLog,
  type KvNodeOptions,
  type KvNodeStatus,
  type MemberInfo,
  type MemberRole,
  type PutOptions,
  type ReadOptions,
  type TxnResult,
  type WatchEvent,
  type WatchOptions,
} from './api/node.js';
export { AddressError, type HostPort, multiaddrOf, parseHostPort, raftIdOf } from './api/node-address.js';
export {
  KvInputError,
  KvMembershipError,
  KvMembershipFullError,
  KvNodeClosedError,
  KvNodeUnavailableError,
} from './api/node-errors.js';
export type { SessionInfo, TxnOpInput } from './client/consul-json.js';
export { KvClientClosedError, KvClientUnavailableError } from './client/errors.js';
// A process that uses the store without being a Raft member (Consul's client agent).
export {
  KvClient,
  type KvClientOptions,
  type KvClientRequestOptions,
  type KvClientResponse,
} from './client/kv-client.js';
// Records and limits of the replicated state machine, as the API returns and checks them.
export { CommandDecodeError } from './fsm/codec.js';
export {
  type DirEntry,
  type KvOp,
  type KvVerb,
  MAX_TXN_OPS,
  MAX_VALUE_BYTES,
  type SessionBehavior,
  type SessionRecord,
  type TxnOpError,
  type TxnResultEntry,
} from './fsm/types.js';
export * from './raft/types.js';
// Durable Raft storage (LevelDB).
export * from './storage/index.js';
