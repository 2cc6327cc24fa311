// Public surface of the Raft core (import '@weft/kv/raft/index').

export {
  ConfChangeError,
  decodeConfChange,
  encodeConfChange,
  isLeaveJoint,
  leaveJointConfChange,
} from './confchange.js';
export { describeEntry, describeMessage } from './describe.js';
export { RaftConfigError, RaftInvariantError, RaftUsageError, RequestDroppedError } from './errors.js';
export { bootstrapState, MemoryStorage, SnapshotOutOfDateError } from './memory-storage.js';
export { ProgressState } from './progress.js';
export { defaultRaftOptions, type RaftConfig, type TestingBugs } from './raft.js';
export { type RandomSource, SeededRandom } from './rand.js';
export { type FollowerStatus, type RaftStatus, RawNode } from './rawnode.js';
export * from './types.js';
