// What the leader knows about each follower's log, and the flow control that
// bounds how much it sends before hearing back.
//
// A follower's Progress is in one of three states:
//  - Probe: the leader does not know where the follower's log matches its own.
//    It sends at most one append per heartbeat interval (msgAppFlowPaused) and
//    walks `next` back on each rejection, using the follower's conflict hint to
//    skip a whole term at a time.
//  - Replicate: the logs match up to `match`; the leader streams appends
//    optimistically (advancing `next` as it sends), bounded by Inflights.
//  - Snapshot: the entries the follower needs were compacted; a snapshot is on
//    its way and nothing else is sent until it is acknowledged or reported failed.
import { invariant } from './errors.js';
import { jointCommittedIndex, jointVoteResult, VoteResult } from './quorum.js';
import type { ConfState, NodeId } from './types.js';

export enum ProgressState {
  Probe = 'probe',
  Replicate = 'replicate',
  Snapshot = 'snapshot',
}

/**
 * The appends sent to one follower and not yet acknowledged, as a bounded
 * FIFO of (last index, size). Full when either bound is reached.
 */
export class Inflights {
  private readonly lastIndexes: number[] = [];
  private readonly sizesBytes: number[] = [];
  private totalBytes = 0;

  constructor(
    /** Most appends in flight at once; > 0. */
    readonly maxMessages: number,
    /** Most payload bytes in flight at once; 0 = no byte limit. */
    readonly maxBytes: number,
  ) {
    invariant(maxMessages > 0, `maxInflightMsgs must be positive (got ${maxMessages})`);
  }

  add(lastIndex: number, sizeBytes: number): void {
    invariant(!this.full(), 'append sent while the inflight window is full');
    const n = this.lastIndexes.length;
    invariant(
      n === 0 || this.lastIndexes[n - 1]! < lastIndex,
      'inflight appends must have increasing last indexes',
    );
    this.lastIndexes.push(lastIndex);
    this.sizesBytes.push(sizeBytes);
    this.totalBytes += sizeBytes;
  }

  /** Frees every append whose last index is <= `index` (acknowledged). */
  freeLE(index: number): void {
    let k = 0;
    while (k < this.lastIndexes.length && this.lastIndexes[k]! <= index) {
      this.totalBytes -= this.sizesBytes[k]!;
      k++;
    }
    if (k > 0) {
      this.lastIndexes.splice(0, k);
      this.sizesBytes.splice(0, k);
    }
  }

  /** Frees the oldest slot: a heartbeat answered but appends did not, so one was probably lost. */
  freeFirstOne(): void {
    if (this.lastIndexes.length === 0) return;
    this.freeLE(this.lastIndexes[0]!);
  }

  full(): boolean {
    return (
      this.lastIndexes.length >= this.maxMessages || (this.maxBytes > 0 && this.totalBytes >= this.maxBytes)
    );
  }

  count(): number {
    return this.lastIndexes.length;
  }

  clone(): Inflights {
    const c = new Inflights(this.maxMessages, this.maxBytes);
    c.lastIndexes.push(...this.lastIndexes);
    c.sizesBytes.push(...this.sizesBytes);
    c.totalBytes = this.totalBytes;
    return c;
  }

  reset(): void {
    this.lastIndexes.length = 0;
    this.sizesBytes.length = 0;
    this.totalBytes = 0;
  }
}

export class Progress {
  /** Highest index known to be in the follower's log and equal to ours. */
  match = 0;
  /** Next index to send. Invariant: match < next. */
  next: number;
  state: ProgressState = ProgressState.Probe;
  /** In Snapshot state: the index of the snapshot being sent. */
  pendingSnapshot = 0;
  /** Heard from since the last check-quorum round (or just added). */
  recentActive = true;
  /** In Probe state: one append is outstanding; wait for a response or heartbeat. */
  msgAppFlowPaused = false;
  readonly inflights: Inflights;
  isLearner: boolean;

  constructor(next: number, isLearner: boolean, maxInflightMsgs: number, maxInflightBytes: number) {
    this.next = next;
    this.isLearner = isLearner;
    this.inflights = new Inflights(maxInflightMsgs, maxInflightBytes);
  }

  /** A copy with `isLearner` set (configurations are computed without mutating the current one). */
  withLearner(isLearner: boolean): Progress {
    const c = new Progress(this.next, isLearner, this.inflights.maxMessages, this.inflights.maxBytes);
    c.match = this.match;
    c.state = this.state;
    c.pendingSnapshot = this.pendingSnapshot;
    c.recentActive = this.recentActive;
    c.msgAppFlowPaused = this.msgAppFlowPaused;
    (c as { inflights: Inflights }).inflights = this.inflights.clone();
    return c;
  }

  private resetState(state: ProgressState): void {
    this.msgAppFlowPaused = false;
    this.pendingSnapshot = 0;
    this.state = state;
    this.inflights.reset();
  }

  becomeProbe(): void {
    if (this.state === ProgressState.Snapshot) {
      // The snapshot may have been applied: probe from just after it.
      const pendingSnapshot = this.pendingSnapshot;
      this.resetState(ProgressState.Probe);
      this.next = Math.max(this.match + 1, pendingSnapshot + 1);
    } else {
      this.resetState(ProgressState.Probe);
      this.next = this.match + 1;
    }
  }

  becomeReplicate(): void {
    this.resetState(ProgressState.Replicate);
    this.next = this.match + 1;
  }

  becomeSnapshot(snapshotIndex: number): void {
    this.resetState(ProgressState.Snapshot);
    this.pendingSnapshot = snapshotIndex;
  }

  /** An append up to `index` was acknowledged. Returns false if it was stale. */
  maybeUpdate(index: number): boolean {
    let updated = false;
    if (this.match < index) {
      this.match = index;
      updated = true;
      this.msgAppFlowPaused = false;
    }
    this.next = Math.max(this.next, index + 1);
    return updated;
  }

  /** In Replicate state: entries up to `lastIndex` were sent (not yet acknowledged). */
  sentEntries(lastIndex: number, sizeBytes: number): void {
    switch (this.state) {
      case ProgressState.Replicate:
        this.next = lastIndex + 1;
        this.inflights.add(lastIndex, sizeBytes);
        break;
      case ProgressState.Probe:
        this.msgAppFlowPaused = true;
        break;
      default:
        invariant(false, `sending entries to a follower in ${this.state} state`);
    }
  }

  /**
   * The follower rejected an append whose preceding index was `rejected`; its
   * hint says it may match at `matchHint` or below. Returns false if the
   * rejection is stale (answers an older probe).
   */
  maybeDecrTo(rejected: number, matchHint: number): boolean {
    if (this.state === ProgressState.Replicate) {
      if (rejected <= this.match) return false; // stale: we already know it matches beyond
      this.next = this.match + 1;
      return true;
    }
    if (this.next - 1 !== rejected) return false; // not the probe we have outstanding
    this.next = Math.max(Math.min(rejected, matchHint + 1), this.match + 1, 1);
    this.msgAppFlowPaused = false;
    return true;
  }

  isPaused(): boolean {
    switch (this.state) {
      case ProgressState.Probe:
        return this.msgAppFlowPaused;
      case ProgressState.Replicate:
        return this.inflights.full();
      case ProgressState.Snapshot:
        return true;
    }
  }

  describe(): string {
    let s = `${this.state} match=${this.match} next=${this.next}`;
    if (this.isLearner) s += ' learner';
    if (this.state === ProgressState.Snapshot) s += ` pendingSnap=${this.pendingSnapshot}`;
    if (this.msgAppFlowPaused) s += ' paused';
    if (this.inflights.count() > 0) s += ` inflight=${this.inflights.count()}`;
    return s;
  }
}

/** The membership as the core uses it (ConfState is the persisted form). */
export interface MembershipConfig {
  /** Voters of the current (or, while joint, incoming) configuration. */
  incoming: Set<NodeId>;
  /** While joint: voters of the outgoing configuration; empty otherwise. */
  outgoing: Set<NodeId>;
  learners: Set<NodeId>;
  /** Outgoing voters that become learners when the joint config is left. */
  learnersNext: Set<NodeId>;
  autoLeave: boolean;
}

export function emptyMembership(): MembershipConfig {
  return {
    incoming: new Set(),
    outgoing: new Set(),
    learners: new Set(),
    learnersNext: new Set(),
    autoLeave: false,
  };
}

export function cloneMembership(c: MembershipConfig): MembershipConfig {
  return {
    incoming: new Set(c.incoming),
    outgoing: new Set(c.outgoing),
    learners: new Set(c.learners),
    learnersNext: new Set(c.learnersNext),
    autoLeave: c.autoLeave,
  };
}

export function isJoint(c: MembershipConfig): boolean {
  return c.outgoing.size > 0;
}

const sorted = (s: Iterable<NodeId>): NodeId[] => [...s].sort();

export function membershipToConfState(c: MembershipConfig): ConfState {
  return {
    voters: sorted(c.incoming),
    learners: sorted(c.learners),
    votersOutgoing: sorted(c.outgoing),
    learnersNext: sorted(c.learnersNext),
    autoLeave: c.autoLeave,
  };
}

export function describeMembership(c: MembershipConfig): string {
  let s = `voters=(${sorted(c.incoming).join(' ')})`;
  if (isJoint(c)) s += `&&(${sorted(c.outgoing).join(' ')})`;
  if (c.learners.size > 0) s += ` learners=(${sorted(c.learners).join(' ')})`;
  if (c.learnersNext.size > 0) s += ` learnersNext=(${sorted(c.learnersNext).join(' ')})`;
  if (c.autoLeave) s += ' autoleave';
  return s;
}

/** Membership plus per-member Progress plus the votes of the current election. */
export class ProgressTracker {
  config: MembershipConfig = emptyMembership();
  progress = new Map<NodeId, Progress>();
  votes = new Map<NodeId, boolean>();

  constructor(
    readonly maxInflightMsgs: number,
    readonly maxInflightBytes: number,
  ) {}

  newProgress(next: number, isLearner: boolean): Progress {
    return new Progress(next, isLearner, this.maxInflightMsgs, this.maxInflightBytes);
  }

  /** The largest index acknowledged by a quorum (both halves while joint). */
  committed(): number {
    return jointCommittedIndex(
      this.config.incoming,
      this.config.outgoing,
      (id) => this.progress.get(id)?.match ?? 0,
    );
  }

  isVoter(id: NodeId): boolean {
    return this.config.incoming.has(id) || this.config.outgoing.has(id);
  }

  /** True for a one-voter cluster (no outgoing half). */
  isSingleton(): boolean {
    return this.config.incoming.size === 1 && this.config.outgoing.size === 0;
  }

  /** Members in a deterministic order (sorted ids), so traces are stable. */
  ids(): NodeId[] {
    return sorted(this.progress.keys());
  }

  /** Whether a quorum of voters was recently active (check-quorum). */
  quorumActive(): boolean {
    const votes = new Map<NodeId, boolean>();
    for (const [id, pr] of this.progress) if (!pr.isLearner) votes.set(id, pr.recentActive);
    return jointVoteResult(this.config.incoming, this.config.outgoing, votes) === VoteResult.Won;
  }

  resetVotes(): void {
    this.votes.clear();
  }

  recordVote(id: NodeId, granted: boolean): void {
    if (!this.votes.has(id)) this.votes.set(id, granted);
  }

  tallyVotes(): { granted: number; rejected: number; result: VoteResult } {
    let granted = 0;
    let rejected = 0;
    for (const [id, v] of this.votes) {
      if (!this.isVoter(id)) continue;
      if (v) granted++;
      else rejected++;
    }
    return {
      granted,
      rejected,
      result: jointVoteResult(this.config.incoming, this.config.outgoing, this.votes),
    };
  }

  confState(): ConfState {
    return membershipToConfState(this.config);
  }
}
