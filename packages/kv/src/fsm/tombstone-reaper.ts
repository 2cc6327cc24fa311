// Leader-side garbage collection of tombstones. Deleted keys leave a
// tombstone (key → deletion index) so a prefix's X-Consul-Index never moves
// backwards while blocking queries may still be waiting on it. Like Consul's
// tombstone_ttl (default 15 min), tombstones are kept for tombstoneTtlMs after
// the deletion and then reaped through an ordinary replicated command, so
// every replica forgets the same ones.
import type { KvStateMachine } from './state-machine.js';
import type { Command } from './types.js';

export const DEFAULT_TOMBSTONE_TTL_MS = 15 * 60_000;

export interface TombstoneReaperOptions {
  /** Leader's wall clock in ms. */
  nowMs: () => number;
  /** How long a tombstone outlives its deletion (default 15 min, Consul's tombstone_ttl). */
  tombstoneTtlMs?: number;
}

export class TombstoneReaper {
  private readonly nowMs: () => number;
  private readonly ttlMs: number;
  /** (kvIndex, time first seen) checkpoints, oldest first; at most one per distinct index seen. */
  private readonly checkpoints: Array<{ index: number; atMs: number }> = [];
  private reapedUpTo = 0;

  constructor(opts: TombstoneReaperOptions) {
    this.nowMs = opts.nowMs;
    this.ttlMs = opts.tombstoneTtlMs ?? DEFAULT_TOMBSTONE_TTL_MS;
  }

  /** Forget everything (call on becoming leader): tombstones get a full TTL again. */
  reset(): void {
    this.checkpoints.length = 0;
  }

  /**
   * Call periodically on the leader (same loop as SessionReaper); propose
   * what it returns. Everything deleted at or before an index the leader saw
   * at least tombstoneTtlMs ago is reaped.
   */
  due(state: Pick<KvStateMachine, 'kvIndex' | 'tombstoneCount'>): Command[] {
    const now = this.nowMs();
    const last = this.checkpoints[this.checkpoints.length - 1];
    if (!last || last.index !== state.kvIndex) this.checkpoints.push({ index: state.kvIndex, atMs: now });
    let upTo = 0;
    while (
      this.checkpoints.length > 0 &&
      (this.checkpoints[0] as { atMs: number }).atMs <= now - this.ttlMs
    ) {
      upTo = (this.checkpoints.shift() as { index: number }).index;
    }
    // Bound memory even if called very often with a busy store: keep at most 10k checkpoints.
    if (this.checkpoints.length > 10_000) this.checkpoints.splice(0, this.checkpoints.length - 10_000);
    if (upTo <= this.reapedUpTo || state.tombstoneCount() === 0) return [];
    this.reapedUpTo = upTo;
    return [{ type: 'tombstone-reap', upToIndex: upTo }];
  }
}
