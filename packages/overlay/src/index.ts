export * from './dataplane.js';
export * from './kvstore.js';
