// A client agent's Consul API: a client agent is not a Raft member (Consul's
// server/client split), so its /v1/ KV requests are passed on to a server
// through its KvClient (see agent/kv-client-store.ts), over the cluster's
// libp2p, which the cluster key guards. Its overlay store is the same
// KvNodeStore a member uses, over the KvClient (which has a KvNode's store
// methods): one set of semantics, error translation and metrics.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { KvClient } from '@weft/kv/client/kv-client';

/** The part of KvClient the Consul API proxy needs. */
export type ConsulRequester = Pick<KvClient, 'request'>;

/** Headers of the servers' answers that the proxy passes on (Consul clients read them). */
const PASSED_HEADERS =
  /^(content-type|x-consul-.*|x-weft-index|x-content-type-options|content-security-policy)$/i;
/** Longest body proxied (a value or a transaction, with room for base64). */
const MAX_PROXIED_BODY_BYTES = 1 << 20;
/** Consul's longest blocking wait is 10 min, plus jitter (wait/16). */
const BLOCKING_QUERY_TIMEOUT_MS = 11 * 60_000;

/**
 * Serves a client agent's Consul KV API (/v1/kv, /v1/txn, /v1/session,
 * /v1/status) by passing each request on to a server through the KvClient,
 * so `weft kv ...` and Consul clients work on every host, also on those that
 * hold no replica. Status, body and the X-Consul-* headers come back as the
 * server answered; no server reachable is a 503 saying so.
 */
export async function proxyConsulRequest(
  client: ConsulRequester,
  req: IncomingMessage,
  res: ServerResponse,
): Promise<void> {
  const url = req.url ?? '/';
  try {
    const chunks: Buffer[] = [];
    let total = 0;
    for await (const chunk of req as AsyncIterable<Buffer>) {
      total += chunk.length;
      if (total > MAX_PROXIED_BODY_BYTES) {
        res.writeHead(413, { 'content-type': 'text/plain; charset=utf-8', connection: 'close' });
        res.end(`request body over ${MAX_PROXIED_BODY_BYTES} bytes\n`);
        return;
      }
      chunks.push(chunk);
    }
    const gone = new AbortController();
    res.once('close', () => gone.abort());
    const answer = await client.request(req.method ?? 'GET', url, {
      ...(chunks.length > 0 ? { body: new Uint8Array(Buffer.concat(chunks)) } : {}),
      signal: gone.signal,
      ...(/[?&]index=/.test(url) ? { timeoutMs: BLOCKING_QUERY_TIMEOUT_MS } : {}),
    });
    for (const [name, value] of Object.entries(answer.headers)) {
      if (value !== undefined && PASSED_HEADERS.test(name)) res.setHeader(name, value);
    }
    res.setHeader('content-length', answer.body.length);
    res.writeHead(answer.status);
    res.end(answer.body);
  } catch (err) {
    if (res.headersSent || res.destroyed) return void res.destroy();
    res.writeHead((err as { code?: unknown }).code === 'unavailable' ? 503 : 502, {
      'content-type': 'text/plain; charset=utf-8',
    });
    res.end(
      `this agent is a client of the KV store and could not reach a server: ${(err as Error).message}\n`,
    );
  }
}
