// node:http's connection pool over the cluster's libp2p: each pooled
// "socket" is one stream of the HTTP tunnel (api/http-tunnel.ts) on one
// libp2p connection per server. Keep-alive reuses streams, so a request
// costs no new stream (and no protocol negotiation round trip) while the
// pool has an idle one; the server's Keep-Alive header tells the pool when
// to drop idle ones first.
import { Agent, type ClientRequestArgs } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Connection } from '@libp2p/interface';
import { multiaddr } from '@multiformats/multiaddr';
import type { Libp2p } from 'libp2p';
import { KV_HTTP_PROTOCOL, MAX_TUNNEL_STREAMS_PER_CONNECTION } from '../api/http-tunnel.js';
import { formatHostPort, multiaddrOf } from '../api/node-address.js';
import { StreamSocket } from '../transport/stream-socket.js';
import { TunnelDialError } from './errors.js';

export interface TunnelAgentOptions {
  /** Per connection attempt and per stream negotiation. */
  dialTimeoutMs: number;
  /** Streams (concurrent requests, blocking queries included) per server; more requests wait. */
  maxStreamsPerServer: number;
}

export class TunnelAgent extends Agent {
  private readonly connections = new Map<string, Promise<Connection>>();

  constructor(
    private readonly node: Libp2p,
    private readonly options: TunnelAgentOptions,
  ) {
    super({
      keepAlive: true,
      maxSockets: Math.min(options.maxStreamsPerServer, MAX_TUNNEL_STREAMS_PER_CONNECTION),
      // The most recently used stream first: the others can expire.
      scheduling: 'lifo',
    });
  }

  override createConnection(
    options: ClientRequestArgs,
    callback?: (err: Error | null, stream: Duplex) => void,
  ): Duplex | undefined {
    const server = formatHostPort({ host: String(options.host), port: Number(options.port) });
    this.openStream(server).then(
      (socket) => callback?.(null, socket),
      (err) =>
        callback?.(
          err instanceof TunnelDialError ? err : new TunnelDialError(server, err),
          undefined as never,
        ),
    );
    return undefined;
  }

  private async openStream(server: string): Promise<StreamSocket> {
    const connection = await this.connection(server);
    try {
      const stream = await connection.newStream(KV_HTTP_PROTOCOL, {
        signal: AbortSignal.timeout(this.options.dialTimeoutMs),
        maxOutboundStreams: MAX_TUNNEL_STREAMS_PER_CONNECTION,
      });
      return new StreamSocket(stream, { remoteAddress: server });
    } catch (err) {
      const name = (err as Error)?.name;
      const hint =
        name === 'UnsupportedProtocolError'
          ? ` (it does not serve ${KV_HTTP_PROTOCOL}: is it a weft-kv member of this version?)`
          : '';
      throw new TunnelDialError(
        server,
        new Error(`${(err as Error)?.message ?? err}${hint}`, { cause: err }),
      );
    }
  }

  /** One libp2p connection per server, dialed on first use and again once it closed. */
  private connection(server: string): Promise<Connection> {
    const known = this.connections.get(server);
    if (known) {
      return known.then((c) => (c.status === 'open' ? c : this.dial(server)));
    }
    return this.dial(server);
  }

  private dial(server: string): Promise<Connection> {
    const pending = this.node
      .dial(multiaddr(multiaddrOf(server)), { signal: AbortSignal.timeout(this.options.dialTimeoutMs) })
      .catch((err: unknown) => {
        if (this.connections.get(server) === pending) this.connections.delete(server);
        throw new TunnelDialError(server, err);
      });
    this.connections.set(server, pending);
    return pending;
  }

  override destroy(): void {
    super.destroy();
    this.connections.clear();
  }
}
