export * from './clock.js';
export * from './dataplane.js';
export * from './kvstore.js';
