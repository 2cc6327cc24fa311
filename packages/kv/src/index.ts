export * from './raft/types.js';
