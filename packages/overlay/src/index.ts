export * from './clock.js';
export * from './dataplane.js';
export * from './dns-table.js';
export * from './errors.js';
export * from './ipam.js';
export * from './kvstore.js';
export * from './manager.js';
export * from './records.js';
