export * from './codec.js';
export * from './session-reaper.js';
export * from './state-machine.js';
export * from './tombstone-reaper.js';
export * from './types.js';
