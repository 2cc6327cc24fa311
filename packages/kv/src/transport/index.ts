// Public surface of the transport layer. Libp2pTransport lives in libp2p.ts and
// is imported from there, so that in-memory users never load libp2p.
export * from './codec.js';
export * from './memory.js';
export * from './transport.js';
