// Leader-side TTL expiry for sessions. The state machine has no clock, so
// expiry is decided on the leader and replicated as ordinary destroy commands.
//
// Deadline choice: a session expires when the leader has seen no create or
// renew for ttl × ttlGraceMultiplier, measured on the leader's own clock from
// the moment this reaper first observed the latest renewal (FSM renewIndex).
// Consul does the same (leader-local timers reset on renew, ttl ×
// SessionTTLMultiplier = 2, all timers restarted on a new leader): the promise
// is "never before ttl", with up to 2×ttl of grace for renewals in flight.
// Using the leader's own clock, not the proposer's stamp, keeps clock skew
// between hosts out of expiry; a new leader (reset()) gives every session a
// full grace period again, like Consul's initializeSessionTimers.
import type { KvStateReader } from './state-machine.js';
import type { Command } from './types.js';

export const DEFAULT_TTL_GRACE_MULTIPLIER = 2;

export interface SessionReaperOptions {
  /** Leader's wall clock in ms (injected so tests control time). */
  nowMs: () => number;
  /** Expire after ttl × this without a renewal; 1 = exactly the TTL. Default 2 (Consul). */
  ttlGraceMultiplier?: number;
}

export class SessionReaper {
  private readonly nowMs: () => number;
  private readonly graceMultiplier: number;
  /** session id → renewIndex last seen and the leader time it was first seen. */
  private readonly observed = new Map<string, { renewIndex: number; seenAtMs: number }>();

  constructor(opts: SessionReaperOptions) {
    this.nowMs = opts.nowMs;
    this.graceMultiplier = opts.ttlGraceMultiplier ?? DEFAULT_TTL_GRACE_MULTIPLIER;
    if (!(this.graceMultiplier >= 1))
      throw new Error(`ttlGraceMultiplier must be >= 1, got ${this.graceMultiplier}`);
  }

  /** Forget all observations: call when this node becomes leader. */
  reset(): void {
    this.observed.clear();
  }

  /**
   * Scan the sessions and return destroy commands for those whose TTL ran
   * out. Call periodically on the leader (every second or so: the scan
   * interval adds to the expiry latency); propose what it returns.
   */
  expired(state: KvStateReader): Command[] {
    const now = this.nowMs();
    const out: Command[] = [];
    const live = new Set<string>();
    for (const s of state.sessions().value) {
      if (s.ttlMs === 0) continue;
      live.add(s.id);
      const seen = this.observed.get(s.id);
      if (!seen || seen.renewIndex !== s.renewIndex) {
        this.observed.set(s.id, { renewIndex: s.renewIndex, seenAtMs: now });
        continue;
      }
      if (now - seen.seenAtMs >= s.ttlMs * this.graceMultiplier) {
        out.push({ type: 'session-destroy', id: s.id, nowMs: now });
      }
    }
    for (const id of Array.from(this.observed.keys())) if (!live.has(id)) this.observed.delete(id);
    return out;
  }
}
