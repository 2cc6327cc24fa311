// Errors a KvClient caller can act on. `code` matches KvNode's errors
// ('unavailable', 'closed', 'invalid'), so code written against a KvNode
// (the agent's KvStore adapter, retry loops) handles a KvClient's the same way.

/**
 * No server could serve the request: none answered (all unreachable), the
 * one asked lost its connection mid-request, or the cluster has no leader or
 * quorum (HTTP 503). When `inFlight` is true the request reached a server and
 * a write may or may not have been applied: retry with check-and-set, or make
 * it idempotent. The next request goes to another server.
 */
export class KvClientUnavailableError extends Error {
  readonly code = 'unavailable';
  constructor(
    message: string,
    readonly inFlight: boolean,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'KvClientUnavailableError';
  }
}

/** The client was closed before or while the call was pending. */
export class KvClientClosedError extends Error {
  readonly code = 'closed';
  constructor(what: string) {
    super(`${what}: the KV client is closed`);
    this.name = 'KvClientClosedError';
  }
}

/** Opening a stream to a server failed: nothing was sent, so any request may go to another server. */
export class TunnelDialError extends Error {
  constructor(
    readonly server: string,
    cause: unknown,
  ) {
    super(`cannot reach KV server ${server}: ${(cause as Error)?.message ?? String(cause)}`, { cause });
    this.name = 'TunnelDialError';
  }
}
