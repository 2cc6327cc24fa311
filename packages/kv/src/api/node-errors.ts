// Errors a KvNode caller can act on. Each message says what happened and
// what to do; `code` lets HTTP layers map them (503 for unavailable).

/**
 * A write or linearizable read could not complete in time: no leader is
 * known, or the leader cannot reach a quorum. A timed-out write may still be
 * applied later (it may already be in the log); retry with check-and-set when
 * that matters.
 */
export class KvNodeUnavailableError extends Error {
  readonly code = 'unavailable';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'KvNodeUnavailableError';
  }
}

/** The node was closed while the call was pending, or before it was made. */
export class KvNodeClosedError extends Error {
  readonly code = 'closed';
  constructor(what: string) {
    super(`${what}: the KV node is closed`);
    this.name = 'KvNodeClosedError';
  }
}

/** A membership request was refused (unknown member, removing the last voter, ...). */
export class KvMembershipError extends Error {
  readonly code = 'membership';
  constructor(message: string) {
    super(message);
    this.name = 'KvMembershipError';
  }
}

/**
 * A call's arguments were refused before anything was proposed (a key with a
 * leading '/', a session TTL out of range, a value over the size limit, ...).
 * Nothing was written; fix the input named in the message. The HTTP API
 * refuses the same input with 400.
 */
export class KvInputError extends Error {
  readonly code = 'invalid';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'KvInputError';
  }
}

/**
 * A join was refused because the cluster has as many voters and learners as
 * its limits allow (KvNodeOptions.maxVoters / maxLearners on the leader). The
 * caller can run as a client of the store instead of a member (Consul's
 * server/client split), or retry once a member was removed.
 */
export class KvMembershipFullError extends Error {
  readonly code = 'membership-full';
  constructor(
    message: string,
    readonly limits: { maxVoters: number; maxLearners: number },
  ) {
    super(message);
    this.name = 'KvMembershipFullError';
  }
}
