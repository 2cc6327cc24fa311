// The Consul HTTP API over the cluster's own libp2p, for processes that use
// the store without being Raft members (KvClient: Consul's server/client
// split). Each stream of KV_HTTP_PROTOCOL is one HTTP/1.1 connection handed
// to a ConsulHttpServer, so every route (blocking queries, txn, sessions,
// ?stale / ?consistent, forwarding to the leader) behaves exactly as on the
// TCP listener, and none has to be written twice.
//
// The tunnel's server follows the embedding API's input rules rather than
// Consul's HTTP defaults: a client's sessions may have TTLs under Consul's
// 10 s minimum, as a KvNode embedder's may (weft agents renew host sessions
// every TTL/3 with TTLs of a few seconds).
//
// Who may connect: whoever completes the libp2p handshake, i.e. holds the
// cluster key when there is one; the same guard as Raft traffic.
import type { Libp2pTransport } from '../transport/libp2p.js';
import type { Transport } from '../transport/transport.js';
import type { KvBackend } from './backend.js';
import { CLUSTER_HEADER, ConsulHttpServer } from './http.js';

export const KV_HTTP_PROTOCOL = '/weft/kv-http/1.0.0';

/** The cluster name members and clients use unless told otherwise (re-exported by node.ts). */
export const DEFAULT_CLUSTER_NAME = 'weft';

/**
 * HTTP connections (streams) one client connection may hold open at once:
 * each blocking query holds one. Beyond it, new streams are refused and the
 * client's request fails naming the limit.
 */
export const MAX_TUNNEL_STREAMS_PER_CONNECTION = 1024;

/**
 * Idle keep-alive connections are closed after this long. Long enough that a
 * client (which drops its idle ones sooner, taught by the Keep-Alive header)
 * never sends on a connection the server is closing.
 */
export const TUNNEL_KEEP_ALIVE_TIMEOUT_MS = 30_000;

/** A stream that has not delivered a request's headers by then is reset (node:http's headersTimeout is 60 s). */
export const TUNNEL_FIRST_REQUEST_TIMEOUT_MS = 30_000;

/** The part of Libp2pTransport the tunnel needs; other transports (in memory) have no tunnel. */
type StreamServingTransport = Pick<Libp2pTransport, 'handleStream'>;

function servesStreams(transport: Transport): transport is Transport & StreamServingTransport {
  return typeof (transport as Partial<StreamServingTransport>).handleStream === 'function';
}

/**
 * Serves the Consul HTTP API of `backend` on `transport`'s libp2p streams.
 * Returns the server (close it before stopping the transport), or undefined
 * when the transport cannot carry streams.
 */
export async function serveHttpTunnel(
  transport: Transport,
  backend: KvBackend,
  cluster: string,
): Promise<ConsulHttpServer | undefined> {
  if (!servesStreams(transport)) return undefined;
  // Loaded here, not at import: only a libp2p transport (already loaded) needs it.
  const { StreamSocket } = await import('../transport/stream-socket.js');
  const server = new ConsulHttpServer(backend, {
    sessionTtlMinMs: 1,
    keepAliveTimeoutMs: TUNNEL_KEEP_ALIVE_TIMEOUT_MS,
    // Clients check it, as members check each other's hello: a client of another cluster is told so.
    responseHeaders: { [CLUSTER_HEADER]: cluster },
  });
  transport.handleStream(
    KV_HTTP_PROTOCOL,
    (stream, connection) => {
      const parts = connection.remoteAddr.getComponents();
      const host = parts.find((c) => c.name === 'ip4' || c.name === 'ip6' || c.name === 'dns')?.value;
      const port = Number(parts.find((c) => c.name === 'tcp')?.value);
      server.acceptConnection(
        new StreamSocket(stream, {
          remoteAddress: host ?? connection.remotePeer.toString(),
          ...(Number.isInteger(port) ? { remotePort: port } : {}),
        }),
        { firstRequestTimeoutMs: TUNNEL_FIRST_REQUEST_TIMEOUT_MS },
      );
    },
    { maxInboundStreams: MAX_TUNNEL_STREAMS_PER_CONNECTION },
  );
  return server;
}
