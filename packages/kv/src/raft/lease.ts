// Leader leases (RaftConfig.leaseReads): a leader that a quorum has recently
// heard from answers linearizable reads from its own state, without a
// heartbeat round per read.
//
// Why it is safe (under the clock assumption below):
//
// 1. Follower promise. With leaseReads, a node that hears from the leader of
//    its term (App, Heartbeat, Snap), or starts (it may have heard from one
//    just before it stopped), neither grants a vote nor starts an election of
//    its own until it has counted electionTimeoutTicks ticks since
//    (Raft.ticksSinceLeaderContact; a pre-vote is refused the same way). This
//    holds whatever happens to its term meanwhile: a higher-term message that
//    is not a vote request moves it to that term with no leader, which alone
//    would let it vote at once; the contact counter is not reset by that.
//    Its own election timer is randomized in [E, 2E) ticks, never below E,
//    and campaigning is refused while the promise holds in any case (Raft.hup:
//    also RawNode.campaign, and a node that just restarted). The leader's
//    heartbeat interval plays no part: only when rounds were made and answered.
//    Only a transfer's forced campaign overrides the promise, see 4.
// 2. Tick granularity. The first of those ticks may come right after the
//    contact, so the promise lasts (E-1) full tick intervals, each at least
//    tickIntervalMs of the follower's own clock: (E-1) * tickIntervalMs.
// 3. Clock drift. Assumption: no node's clock runs more than
//    (1 + maxClockDriftRatio) times as fast as another's (measuring the same
//    real interval, the fast one reads at most that much more). The promise
//    then lasts at least (E-1) * tickIntervalMs / (1 + maxClockDriftRatio)
//    on the leader's clock: durationMs below.
// 4. The lease. The leader numbers each heartbeat broadcast (a round) and
//    notes its own clock when it makes it, before it is even persisted or
//    sent. A follower can only receive a round after that moment, so its
//    promise covers [sentAtMs, sentAtMs + durationMs) on the leader's clock
//    from its answer to that round on. Once a quorum (of the current
//    configuration, joint configurations need both halves) has answered
//    round r or a later one, no other node can collect a quorum of votes for
//    a higher term before sentAt(r) + durationMs: every quorum of voters
//    contains one of them (or this leader itself, which votes for nobody
//    while it leads). So no newer leader exists, and no write this leader
//    does not know of can be committed, until then: reads answered at the
//    commit index are linearizable. Counting from when the acknowledgements
//    ARRIVE instead would add the round trip to the lease (testingBugs.
//    leaseFromAckArrival; the simulator catches it).
//    A transfer breaks the promise on purpose (TimeoutNow makes the target
//    campaign with votes forced through), so a leader that sends TimeoutNow
//    serves no lease read for the rest of its term, even if the transfer is
//    abandoned: the forced vote requests may still be on their way.
// 5. The leader answers from the lease only once it has committed an entry
//    of its own term (before that its commit index may lag the previous
//    leader's); and with no valid lease it falls back to ReadIndex.
//
// If the clock assumption is broken (a follower's ticks much faster than the
// leader's clock allows for), the lease can outlive the promise and a
// partitioned old leader can answer stale reads: the simulator shows it with
// a drift beyond the configured bound.
import { jointCommittedIndex } from './quorum.js';
import type { NodeId } from './types.js';

interface Round {
  seq: number;
  sentAtMs: number;
}

export class LeaderLease {
  /** Rounds not yet too old to found a lease, oldest first; seq is consecutive. */
  private rounds: Round[] = [];
  private nextSeq = 1;
  /** Per voter: the highest round it acknowledged (by its sequence number). */
  private readonly ackedSeq = new Map<NodeId, number>();
  /** Per voter, with testingBugs.leaseFromAckArrival: when its last acknowledgement arrived. */
  private readonly ackArrivedAtMs = new Map<NodeId, number>();
  /**
   * When the lease ends, as of the last round, acknowledgement or configuration
   * change (computed then, not on every read); undefined = to be recomputed.
   */
  private validUntilMs: number | undefined;

  constructor(
    private readonly self: NodeId,
    readonly durationMs: number,
    private readonly clockMs: () => number,
    private readonly countFromAckArrival: boolean,
  ) {}

  /** A heartbeat round is about to be made: its sequence number (carried in the heartbeats' index). */
  startRound(): number {
    const now = this.clockMs();
    // Rounds older than a lease can found nothing any more; the bound keeps this small.
    while (this.rounds.length > 0 && this.rounds[0]!.sentAtMs + this.durationMs <= now) this.rounds.shift();
    const seq = this.nextSeq++;
    this.rounds.push({ seq, sentAtMs: now });
    this.validUntilMs = undefined;
    return seq;
  }

  /** `from` answered round `seq` (a HeartbeatResp of this term). */
  acknowledged(from: NodeId, seq: number): void {
    if (seq <= 0 || seq >= this.nextSeq) return; // not a round of this lease
    // The broken variant: any answer renews the lease from now, however old its round.
    if (this.countFromAckArrival) this.ackArrivedAtMs.set(from, this.clockMs());
    if (seq <= (this.ackedSeq.get(from) ?? 0)) return;
    this.ackedSeq.set(from, seq);
    this.validUntilMs = undefined;
  }

  /** The voters changed: the next check counts the quorum anew. */
  configurationChanged(): void {
    this.validUntilMs = undefined;
  }

  /** Whether the lease holds now under `incoming` / `outgoing` voters (the current configuration). */
  valid(incoming: ReadonlySet<NodeId>, outgoing: ReadonlySet<NodeId>): boolean {
    const now = this.clockMs();
    if (this.countFromAckArrival) {
      // The broken variant: the lease runs from when the acknowledgements arrived.
      const since = jointCommittedIndex(incoming, outgoing, (id) =>
        id === this.self ? now : (this.ackArrivedAtMs.get(id) ?? Number.NEGATIVE_INFINITY),
      );
      return now < since + this.durationMs;
    }
    this.validUntilMs ??= this.computeValidUntilMs(incoming, outgoing);
    return now < this.validUntilMs;
  }

  private computeValidUntilMs(incoming: ReadonlySet<NodeId>, outgoing: ReadonlySet<NodeId>): number {
    const latest = this.nextSeq - 1;
    const seq = jointCommittedIndex(incoming, outgoing, (id) =>
      id === this.self ? latest : (this.ackedSeq.get(id) ?? 0),
    );
    const first = this.rounds[0];
    if (!first || seq < first.seq) return Number.NEGATIVE_INFINITY; // no acknowledged round recent enough
    return this.rounds[seq - first.seq]!.sentAtMs + this.durationMs;
  }
}

/** How long a lease lasts on the leader's clock (point 3 above). */
export function leaseDurationMs(
  electionTimeoutTicks: number,
  tickIntervalMs: number,
  maxClockDriftRatio: number,
): number {
  return ((electionTimeoutTicks - 1) * tickIntervalMs) / (1 + maxClockDriftRatio);
}

/**
 * A clock for the leader lease that also counts time the machine spent
 * suspended. A monotonic clock (performance.now(), CLOCK_MONOTONIC) stops
 * while the machine sleeps, so a leader suspended mid-lease would wake up
 * believing its lease still holds while the others elected a new leader. The
 * wall clock does count the sleep (the kernel sets it from the hardware clock
 * on resume): whenever it has advanced more than the monotonic clock since the
 * last reading (by over toleranceMs, far above NTP's slewing at a heartbeat's
 * interval), the difference is added. So this clock never runs slower than
 * the monotonic one, and running ahead only ends a lease early (reads then go
 * through ReadIndex). A wall clock stepped back is ignored. Only for the
 * lease: the followers' promise counts ticks, which must never speed up.
 */
export function suspendAwareClock(
  monoMs: () => number,
  wallMs: () => number,
  toleranceMs = 20,
): () => number {
  let lastMono = monoMs();
  let lastWall = wallMs();
  let suspendedMs = 0;
  return () => {
    const mono = monoMs();
    const wall = wallMs();
    const unseenMs = wall - lastWall - (mono - lastMono);
    if (unseenMs > toleranceMs) suspendedMs += unseenMs;
    lastMono = mono;
    lastWall = wall;
    return mono + suspendedMs;
  };
}
