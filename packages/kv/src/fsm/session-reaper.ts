// Leader-side TTL expiry for sessions. The state machine has no clock, so
// expiry is decided on the leader and replicated as ordinary destroy commands.
//
// Deadline: lastRenewal + ttl × ttlGraceMultiplier (default 2, as Consul's
// SessionTTLMultiplier: the promise is "never before ttl", with up to 2×ttl of
// grace for renewals in flight).
//
// lastRenewal comes from two clocks. The create/renew command carries its
// proposer's stamp S (exact when clocks agree); the reaper also notes O, its
// own time when it first saw that renewal (never early, but late by up to one
// scan). It uses
//     lastRenewal = max(min(O, S), O − ttl × (multiplier − 1))
// so a proposer whose clock runs ahead cannot postpone expiry past O, and one
// whose clock runs behind cannot make a session expire less than ttl after the
// leader saw it renewed. With agreeing clocks this is exactly S + 2×ttl.
// A new leader (reset()) re-observes every session, like Consul's
// initializeSessionTimers.
import type { KvStateReader } from './state-machine.js';
import type { Command } from './types.js';

export const DEFAULT_TTL_GRACE_MULTIPLIER = 2;
/** How long to wait for a proposed destroy to apply before proposing it again. */
const DESTROY_RETRY_MS = 5_000;

export interface SessionReaperOptions {
  /** Leader's wall clock in ms (injected so tests control time). */
  nowMs: () => number;
  /** Expire after ttl × this without a renewal; 1 = exactly the TTL. Default 2 (Consul). */
  ttlGraceMultiplier?: number;
}

export class SessionReaper {
  private readonly nowMs: () => number;
  private readonly graceMultiplier: number;
  /** session id → renewIndex last seen, the leader time it was first seen, when we last asked to destroy it. */
  private readonly observed = new Map<
    string,
    { renewIndex: number; seenAtMs: number; destroyProposedAtMs?: number }
  >();

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
   * out. Call periodically on the leader (every second or so); propose what
   * it returns.
   */
  expired(state: KvStateReader): Command[] {
    const now = this.nowMs();
    const out: Command[] = [];
    const live = new Set<string>();
    for (const s of state.sessions().value) {
      if (s.ttlMs === 0) continue;
      live.add(s.id);
      let seen = this.observed.get(s.id);
      if (!seen || seen.renewIndex !== s.renewIndex) {
        seen = { renewIndex: s.renewIndex, seenAtMs: now };
        this.observed.set(s.id, seen);
      }
      const graceMs = s.ttlMs * this.graceMultiplier;
      const lastRenewalMs = Math.max(
        Math.min(seen.seenAtMs, s.renewedAtMs),
        seen.seenAtMs - s.ttlMs * (this.graceMultiplier - 1),
      );
      if (now - lastRenewalMs < graceMs) continue;
      // A destroy takes a commit round to apply: ask again only if it has not landed after a while.
      if (seen.destroyProposedAtMs !== undefined && now - seen.destroyProposedAtMs < DESTROY_RETRY_MS)
        continue;
      seen.destroyProposedAtMs = now;
      out.push({ type: 'session-destroy', id: s.id, nowMs: now });
    }
    for (const id of Array.from(this.observed.keys())) if (!live.has(id)) this.observed.delete(id);
    return out;
  }
}
