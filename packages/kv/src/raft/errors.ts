// Errors raised by the Raft core. Storage errors (CompactedError,
// UnavailableError) live in types.ts because storage implementations throw them.

/**
 * An impossible state was reached: a bug in the core or a storage that lost or
 * corrupted data it had acknowledged as durable. Never caught inside the core;
 * the node must stop rather than continue with unsafe state.
 */
export class RaftInvariantError extends Error {
  constructor(message: string) {
    super(`raft invariant violated: ${message}`);
    this.name = 'RaftInvariantError';
  }
}

/** Throws RaftInvariantError unless `cond` holds. */
export function invariant(cond: unknown, message: string | (() => string)): asserts cond {
  if (!cond) throw new RaftInvariantError(typeof message === 'string' ? message : message());
}

/**
 * A proposal, conf change, read or transfer request was not accepted (no
 * leader known, leadership transfer in progress, a conf change still pending,
 * ...). Nothing was appended; the caller may retry later, typically after a
 * leader is known.
 */
export class RequestDroppedError extends Error {
  constructor(
    readonly what: string,
    readonly reason: string,
  ) {
    super(`${what} dropped: ${reason}; retry once a leader is known or the pending change has applied`);
    this.name = 'RequestDroppedError';
  }
}

/** The caller used the RawNode API out of order (e.g. ready() twice without advance()). */
export class RaftUsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'RaftUsageError';
  }
}

/** A config value is out of range; the message names the option and its unit. */
export class RaftConfigError extends Error {
  constructor(message: string) {
    super(`invalid raft config: ${message}`);
    this.name = 'RaftConfigError';
  }
}
