// The Raft consensus algorithm as a pure state machine.
//
// Raft never does I/O and never reads a clock: time advances only through
// tick(), input arrives only through step(), and everything the outside world
// must do (persist, send, apply) is collected in fields that RawNode hands out
// as a Ready. Randomness (the election timeout) comes from an injected
// RandomSource. The structure follows etcd-io/raft (raft.go), written anew.
//
// Safety-relevant rules, each enforced where it lives:
//  - a node votes at most once per term (vote is part of the persisted HardState);
//  - a leader commits only entries of its own term by counting replicas
//    (maybeCommit); older entries become committed as their prefix;
//  - a node never truncates committed entries (RaftLog.append asserts it);
//  - one membership change at a time: a leader accepts a ConfChange only after
//    the previous one was applied and after it has committed an entry of its term;
//  - a ReadIndex is served only after the leader committed an entry of its
//    term and a quorum acknowledged a heartbeat sent after the request arrived,
//    or (leaseReads) while its leader lease holds (lease.ts has the argument).
import {
  applyConfChangeTo,
  ConfChangeError,
  decodeConfChange,
  encodeConfChange,
  isLeaveJoint,
  leaveJointConfChange,
  restoreMembership,
} from './confchange.js';
import { invariant, RaftConfigError, RequestDroppedError } from './errors.js';
import { LeaderLease, leaseDurationMs } from './lease.js';
import { entriesSizeBytes, RaftLog } from './log.js';
import {
  describeMembership,
  isJoint,
  type MembershipConfig,
  type Progress,
  ProgressState,
  ProgressTracker,
} from './progress.js';
import { jointVoteResult, VoteResult } from './quorum.js';
import type { RandomSource } from './rand.js';
import {
  type ConfChange,
  type ConfState,
  type Entry,
  EntryType,
  emptyMessage,
  type HardState,
  type Message,
  MessageType,
  NONE,
  type NodeId,
  type RaftLogStorage,
  type ReadState,
  Role,
  type Snapshot,
  type SoftState,
} from './types.js';

/**
 * Deliberate bugs for proving that the simulator catches safety violations.
 * Never set outside tests.
 */
export interface TestingBugs {
  /** Commit an entry of an earlier term once a majority has it (Raft paper figure 8). */
  commitPreviousTermByCount?: boolean;
  /** Leave the vote out of the persisted HardState: a restarted node may vote twice in a term. */
  skipVotePersist?: boolean;
  /** Answer ReadIndex at once, without confirming leadership with a quorum. */
  readIndexWithoutQuorum?: boolean;
  /** Grant votes without comparing logs (breaks leader completeness). */
  voteWithoutLogCheck?: boolean;
  /** Count a leader lease from when the acknowledgements arrived, not from when the round was sent. */
  leaseFromAckArrival?: boolean;
  /** Keep serving lease reads after sending TimeoutNow (a transfer). */
  leaseKeptAcrossTransfer?: boolean;
}

export interface RaftConfig {
  /** This node's id; non-empty. */
  id: NodeId;
  /** The durable log; read at start and whenever entries are not in memory. */
  storage: RaftLogStorage;
  /** Source of the randomized election timeout. */
  random: RandomSource;
  /** A follower that hears from no leader for this many ticks (randomized up to twice it) starts an election. */
  electionTimeoutTicks?: number;
  /** A leader sends heartbeats every this many ticks; must be < electionTimeoutTicks. */
  heartbeatTicks?: number;
  /**
   * Index the application's state machine has applied (when it persists its
   * state beyond the last snapshot). 0 = the storage snapshot's index.
   */
  appliedIndex?: number;
  /** Most entry bytes in one append message (at least one entry is always sent). */
  maxSizePerMsgBytes?: number;
  /** Most append messages in flight to one follower in Replicate state. */
  maxInflightMsgs?: number;
  /** Most entry bytes in flight to one follower; 0 = unlimited. */
  maxInflightBytes?: number;
  /** Most bytes of committed entries in one Ready. */
  maxCommittedSizePerReadyBytes?: number;
  /** Most bytes of appended-but-uncommitted entries a leader accepts; 0 = unlimited. */
  maxUncommittedEntriesBytes?: number;
  /** Run a pre-vote round before incrementing the term (a partitioned node cannot disrupt). */
  preVote?: boolean;
  /** A leader steps down if it has not heard from a quorum within an election timeout. */
  checkQuorum?: boolean;
  /** Followers drop proposals instead of forwarding them to the leader. */
  disableProposalForwarding?: boolean;
  /**
   * Each Ready merges consecutive appends to one peer, and successful acks to
   * one peer, into one message (coalesce.ts). Off by default so that message
   * transcripts match etcd's; KvNode turns it on.
   */
  coalesceMessages?: boolean;
  /**
   * Answer ReadIndex requests at once while the leader lease holds (lease.ts),
   * instead of confirming leadership with a heartbeat round each time. Needs
   * leaseClockMs and tickIntervalMs. Every voter must run with it: it makes a
   * node refuse votes and elections for electionTimeoutTicks after it heard
   * from a leader or started, which is what the lease relies on.
   */
  leaseReads?: boolean;
  /** This node's monotonic clock in milliseconds (not wall time); with leaseReads. */
  leaseClockMs?: () => number;
  /** Shortest interval between two tick() calls, in ms of this node's clock; with leaseReads. */
  tickIntervalMs?: number;
  /**
   * Assumption of leaseReads: no node's clock (and tick rate) runs more than
   * (1 + maxClockDriftRatio) times as fast as another's. The lease is
   * shortened by this factor.
   */
  maxClockDriftRatio?: number;
  /** Called with one line per notable event (role change, ...); for traces. */
  logger?: (line: string) => void;
  testingBugs?: TestingBugs;
}

/** Resolved configuration with every default filled in. */
export type ResolvedRaftConfig = Required<Omit<RaftConfig, 'logger' | 'testingBugs' | 'leaseClockMs'>> &
  Pick<RaftConfig, 'logger' | 'leaseClockMs'> & { testingBugs: TestingBugs };

export const defaultRaftOptions = {
  electionTimeoutTicks: 10,
  heartbeatTicks: 1,
  appliedIndex: 0,
  maxSizePerMsgBytes: 1024 * 1024,
  maxInflightMsgs: 256,
  maxInflightBytes: 0,
  maxCommittedSizePerReadyBytes: 16 * 1024 * 1024,
  maxUncommittedEntriesBytes: 0,
  preVote: true,
  checkQuorum: true,
  disableProposalForwarding: false,
  coalesceMessages: false,
  leaseReads: false,
  /** 0 = not given (required with leaseReads). */
  tickIntervalMs: 0,
  maxClockDriftRatio: 0.1,
} as const;

export function resolveRaftConfig(c: RaftConfig): ResolvedRaftConfig {
  const r: ResolvedRaftConfig = {
    ...defaultRaftOptions,
    ...stripUndefined(c),
    testingBugs: c.testingBugs ?? {},
  } as ResolvedRaftConfig;
  if (!r.id) throw new RaftConfigError('id must be a non-empty node id');
  const positive = (name: keyof ResolvedRaftConfig): void => {
    const v = r[name];
    if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0) {
      throw new RaftConfigError(`${name} must be a positive integer (got ${String(v)})`);
    }
  };
  positive('electionTimeoutTicks');
  positive('heartbeatTicks');
  positive('maxSizePerMsgBytes');
  positive('maxInflightMsgs');
  positive('maxCommittedSizePerReadyBytes');
  if (r.heartbeatTicks >= r.electionTimeoutTicks) {
    throw new RaftConfigError(
      `heartbeatTicks (${r.heartbeatTicks}) must be smaller than electionTimeoutTicks (${r.electionTimeoutTicks})`,
    );
  }
  for (const name of ['maxInflightBytes', 'maxUncommittedEntriesBytes', 'appliedIndex'] as const) {
    if (!Number.isInteger(r[name]) || r[name] < 0)
      throw new RaftConfigError(`${name} must be a non-negative integer`);
  }
  if (!Number.isFinite(r.maxClockDriftRatio) || r.maxClockDriftRatio < 0)
    throw new RaftConfigError(
      `maxClockDriftRatio must be a non-negative number (got ${String(r.maxClockDriftRatio)})`,
    );
  if (r.leaseReads) {
    if (typeof r.leaseClockMs !== 'function')
      throw new RaftConfigError('leaseReads needs leaseClockMs (a monotonic clock in ms)');
    if (!Number.isFinite(r.tickIntervalMs) || r.tickIntervalMs <= 0)
      throw new RaftConfigError(
        `leaseReads needs tickIntervalMs, the shortest interval between ticks in ms (got ${String(r.tickIntervalMs)})`,
      );
  }
  return r;
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  const out: Partial<T> = {};
  for (const [k, v] of Object.entries(o)) if (v !== undefined) (out as Record<string, unknown>)[k] = v;
  return out;
}

/** Why an election is started; a transfer skips pre-vote and overrides leader leases. */
export enum CampaignType {
  PreElection = 'pre-election',
  Election = 'election',
  Transfer = 'transfer',
}

const campaignTransferContext = new TextEncoder().encode('CampaignTransfer');

function isCampaignTransfer(ctx: Uint8Array): boolean {
  if (ctx.byteLength !== campaignTransferContext.byteLength) return false;
  for (let i = 0; i < ctx.byteLength; i++) if (ctx[i] !== campaignTransferContext[i]) return false;
  return true;
}

function contextKey(ctx: Uint8Array): string {
  return Buffer.from(ctx).toString('hex');
}

/** The response type for a vote request type. */
function voteRespType(t: MessageType): MessageType {
  return t === MessageType.Vote ? MessageType.VoteResp : MessageType.PreVoteResp;
}

interface PendingRead {
  index: number;
  req: Message;
  acks: Set<NodeId>;
}

/**
 * Pending ReadIndex requests at the leader, in arrival order. A heartbeat
 * carries the context of the newest one; a quorum acknowledging it confirms
 * every request up to and including it.
 */
class ReadOnlyQueue {
  private readonly pending = new Map<string, PendingRead>();
  private queue: string[] = [];

  add(index: number, req: Message): void {
    const key = contextKey(req.context);
    if (this.pending.has(key)) return;
    this.pending.set(key, { index, req, acks: new Set() });
    this.queue.push(key);
  }

  ack(from: NodeId, ctx: Uint8Array): Set<NodeId> | undefined {
    const rs = this.pending.get(contextKey(ctx));
    if (!rs) return undefined;
    rs.acks.add(from);
    return rs.acks;
  }

  /** Removes and returns every request up to and including `ctx`. */
  advance(ctx: Uint8Array): PendingRead[] {
    const key = contextKey(ctx);
    const pos = this.queue.indexOf(key);
    if (pos < 0) return [];
    const done = this.queue.slice(0, pos + 1).map((k) => this.pending.get(k)!);
    for (const k of this.queue.slice(0, pos + 1)) this.pending.delete(k);
    this.queue = this.queue.slice(pos + 1);
    return done;
  }

  lastContext(): Uint8Array | undefined {
    const last = this.queue[this.queue.length - 1];
    return last === undefined ? undefined : this.pending.get(last)!.req.context;
  }

  size(): number {
    return this.queue.length;
  }
}

export class Raft {
  readonly id: NodeId;
  readonly cfg: ResolvedRaftConfig;
  term = 0;
  vote: NodeId = NONE;
  lead: NodeId = NONE;
  role: Role = Role.Follower;
  readonly log: RaftLog;
  readonly tracker: ProgressTracker;
  /** Messages to send once the current Ready has been persisted. */
  msgs: Message[] = [];
  readStates: ReadState[] = [];
  /** Leader: the transfer target while a leadership transfer is in progress. */
  leadTransferee: NodeId = NONE;
  /** Leader: index of the last conf change appended; no new one until it is applied. */
  pendingConfIndex = 0;
  /** Leader: bytes of entries appended but not yet applied (bounded by maxUncommittedEntriesBytes). */
  uncommittedSizeBytes = 0;
  private readOnly = new ReadOnlyQueue();
  /** ReadIndex requests that arrived before this leader committed an entry of its term. */
  private pendingReadIndexMessages: Message[] = [];
  /** Leader with leaseReads: the lease, until step-down, a term change or a transfer's TimeoutNow. */
  private lease: LeaderLease | undefined;
  /**
   * Ticks since this node last heard from the leader of its term, or since it
   * started; not reset by term changes. With leaseReads it votes for nobody
   * and does not campaign until this reaches electionTimeoutTicks (lease.ts).
   */
  ticksSinceLeaderContact = 0;
  /** ReadIndex requests this leader answered from its lease / after a heartbeat round (status). */
  readonly readsServed = { lease: 0, quorumRound: 0 };
  /** Ticks since the last election timeout (follower: since hearing from the leader). */
  electionElapsed = 0;
  heartbeatElapsed = 0;
  randomizedElectionTimeoutTicks = 0;

  constructor(config: RaftConfig) {
    this.cfg = resolveRaftConfig(config);
    this.id = this.cfg.id;
    this.log = new RaftLog(this.cfg.storage, this.cfg.maxCommittedSizePerReadyBytes);
    this.tracker = new ProgressTracker(this.cfg.maxInflightMsgs, this.cfg.maxInflightBytes);
    const { hardState, confState } = this.cfg.storage.initialState();
    const restored = restoreMembership(confState, this.log.lastIndex(), (next, learner) =>
      this.tracker.newProgress(next, learner),
    );
    this.tracker.config = restored.config;
    this.tracker.progress = restored.progress;
    if (hardState.term !== 0 || hardState.vote !== NONE || hardState.commit !== 0) this.loadState(hardState);
    // Unless told otherwise, the application's state is the storage snapshot's.
    const applied =
      this.cfg.appliedIndex > 0 ? this.cfg.appliedIndex : this.cfg.storage.snapshot().metadata.index;
    invariant(
      applied <= this.log.committed,
      () => `applied index ${applied} is beyond the stored commit index ${this.log.committed}`,
    );
    if (applied > this.log.applied) this.log.appliedTo(applied);
    this.becomeFollower(this.term, NONE);
  }

  private loadState(hs: HardState): void {
    invariant(hs.commit >= this.log.committed && hs.commit <= this.log.lastIndex(), () => {
      return `stored commit ${hs.commit} is out of range [${this.log.committed}, ${this.log.lastIndex()}]: storage lost entries`;
    });
    this.log.committed = hs.commit;
    this.term = hs.term;
    this.vote = hs.vote;
  }

  private trace(line: string): void {
    this.cfg.logger?.(`${this.id} ${line}`);
  }

  // --- state ------------------------------------------------------------------

  hardState(): HardState {
    return {
      term: this.term,
      vote: this.cfg.testingBugs.skipVotePersist ? NONE : this.vote,
      commit: this.log.committed,
    };
  }

  softState(): SoftState {
    return { leader: this.lead, role: this.role };
  }

  /** Whether this node may become leader: a voter that is not mid-way through installing a snapshot. */
  promotable(): boolean {
    const pr = this.tracker.progress.get(this.id);
    return pr !== undefined && !pr.isLearner && !this.log.hasPendingSnapshot();
  }

  // --- sending ----------------------------------------------------------------

  private send(m: Message): void {
    if (m.from === NONE) m.from = this.id;
    if (
      m.type === MessageType.Vote ||
      m.type === MessageType.VoteResp ||
      m.type === MessageType.PreVote ||
      m.type === MessageType.PreVoteResp
    ) {
      invariant(m.term !== 0, `${MessageType[m.type]} must carry a term`);
    } else if (m.type !== MessageType.Prop && m.type !== MessageType.ReadIndex) {
      // Proposals and read requests are forwarded "as local", without a term.
      m.term = this.term;
    }
    invariant(m.to !== this.id, `message ${MessageType[m.type]} addressed to self`);
    this.msgs.push(m);
  }

  private msg(type: MessageType, to: NodeId): Message {
    return emptyMessage(type, this.id, to, 0);
  }

  /** Sends an append (or a snapshot) to `to` if flow control allows. Returns whether something was sent. */
  private maybeSendAppend(to: NodeId, sendIfEmpty: boolean): boolean {
    const pr = this.tracker.progress.get(to);
    if (!pr || pr.isPaused()) return false;
    const prevIndex = pr.next - 1;
    const prevTerm = this.log.term(prevIndex);
    let ents: Entry[] | undefined;
    if (prevTerm !== undefined) {
      try {
        ents = this.log.entriesFrom(pr.next, this.cfg.maxSizePerMsgBytes);
      } catch (err) {
        if (!(err instanceof Error && err.name === 'CompactedError')) throw err;
      }
    }
    if (prevTerm === undefined || ents === undefined) return this.maybeSendSnapshot(to, pr);
    if (ents.length === 0 && !sendIfEmpty) return false;
    const m = this.msg(MessageType.App, to);
    m.index = prevIndex;
    m.logTerm = prevTerm;
    m.entries = ents;
    m.commit = this.log.committed;
    this.send(m);
    if (ents.length > 0 || pr.state === ProgressState.Probe) {
      pr.sentEntries(ents.length > 0 ? ents[ents.length - 1]!.index : prevIndex, entriesSizeBytes(ents));
    }
    return true;
  }

  private maybeSendSnapshot(to: NodeId, pr: Progress): boolean {
    // A follower we have not heard from lately may be down: do not ship a big snapshot into the void.
    if (!pr.recentActive) return false;
    const snapshot = this.log.snapshot();
    invariant(snapshot.metadata.index > 0, `follower ${to} needs compacted entries but there is no snapshot`);
    pr.becomeSnapshot(snapshot.metadata.index);
    const m = this.msg(MessageType.Snap, to);
    m.snapshot = snapshot;
    this.send(m);
    this.trace(`sent snapshot ${snapshot.metadata.term}/${snapshot.metadata.index} to ${to}`);
    return true;
  }

  private sendAppend(to: NodeId): void {
    this.maybeSendAppend(to, true);
  }

  private bcastAppend(): void {
    for (const id of this.tracker.ids()) if (id !== this.id) this.sendAppend(id);
  }

  private sendHeartbeat(to: NodeId, ctx: Uint8Array | undefined, leaseRound: number): void {
    const pr = this.tracker.progress.get(to)!;
    const m = this.msg(MessageType.Heartbeat, to);
    // The lease round this heartbeat belongs to (0 without leaseReads); the answer echoes it.
    m.index = leaseRound;
    // Never tell a follower to commit beyond what it is known to have.
    m.commit = Math.min(pr.match, this.log.committed);
    if (ctx) m.context = ctx;
    this.send(m);
  }

  private bcastHeartbeat(ctx = this.readOnly.lastContext()): void {
    const leaseRound = this.lease?.startRound() ?? 0;
    for (const id of this.tracker.ids()) if (id !== this.id) this.sendHeartbeat(id, ctx, leaseRound);
  }

  private sendTimeoutNow(to: NodeId): void {
    // The target campaigns with votes forced past the followers' promises, and
    // its vote requests may arrive long after: no lease reads for the rest of this term.
    if (this.lease && !this.cfg.testingBugs.leaseKeptAcrossTransfer) {
      this.lease = undefined;
      this.trace('dropped its leader lease: TimeoutNow sent');
    }
    this.send(this.msg(MessageType.TimeoutNow, to));
  }

  // --- role transitions -------------------------------------------------------

  private reset(term: number): void {
    if (this.term !== term) {
      this.term = term;
      this.vote = NONE;
    }
    this.lead = NONE;
    this.electionElapsed = 0;
    this.heartbeatElapsed = 0;
    this.randomizedElectionTimeoutTicks =
      this.cfg.electionTimeoutTicks + this.cfg.random.intn(this.cfg.electionTimeoutTicks);
    this.leadTransferee = NONE;
    this.tracker.resetVotes();
    const last = this.log.lastIndex();
    for (const [id, old] of this.tracker.progress) {
      const pr = this.tracker.newProgress(last + 1, old.isLearner);
      if (id === this.id) pr.match = last;
      this.tracker.progress.set(id, pr);
    }
    this.pendingConfIndex = 0;
    this.uncommittedSizeBytes = 0;
    this.pendingReadIndexMessages = [];
    this.readOnly = new ReadOnlyQueue();
    this.lease = undefined;
  }

  becomeFollower(term: number, lead: NodeId): void {
    const was = this.role;
    this.reset(term);
    this.lead = lead;
    this.role = Role.Follower;
    if (was !== Role.Follower) this.trace(`became follower at term ${term}`);
  }

  private becomePreCandidate(): void {
    invariant(this.role !== Role.Leader, 'leader cannot become pre-candidate');
    // The term is not increased, so a pre-candidate disrupts nobody.
    this.tracker.resetVotes();
    this.lead = NONE;
    this.role = Role.PreCandidate;
    this.trace(`became pre-candidate at term ${this.term}`);
  }

  private becomeCandidate(): void {
    invariant(this.role !== Role.Leader, 'leader cannot become candidate');
    this.reset(this.term + 1);
    this.vote = this.id;
    this.role = Role.Candidate;
    this.trace(`became candidate at term ${this.term}`);
  }

  private becomeLeader(): void {
    invariant(this.role !== Role.Follower, 'follower cannot become leader without an election');
    this.reset(this.term);
    this.lead = this.id;
    this.role = Role.Leader;
    this.tracker.progress.get(this.id)?.becomeReplicate();
    if (this.cfg.leaseReads) {
      this.lease = new LeaderLease(
        this.id,
        leaseDurationMs(this.cfg.electionTimeoutTicks, this.cfg.tickIntervalMs, this.cfg.maxClockDriftRatio),
        this.cfg.leaseClockMs!,
        this.cfg.testingBugs.leaseFromAckArrival === true,
      );
    }
    // Conf changes in the log we have not applied may be uncommitted; refuse
    // new ones until everything up to here is applied.
    this.pendingConfIndex = this.log.lastIndex();
    // The empty entry commits everything before it once replicated (leaders
    // commit only entries of their own term by counting).
    const ok = this.appendEntries([{ term: 0, index: 0, type: EntryType.Normal, data: new Uint8Array(0) }]);
    invariant(ok, 'the new leader could not append its empty entry');
    this.trace(`became leader at term ${this.term}`);
  }

  private hup(t: CampaignType): void {
    if (this.role === Role.Leader) return;
    if (t !== CampaignType.Transfer && this.leasePromiseHeld()) {
      this.trace('heard from a leader (or started) less than an election timeout ago; not campaigning');
      return;
    }
    if (!this.promotable()) {
      this.trace('is not promotable; not campaigning');
      return;
    }
    if (this.hasUnappliedConfChanges()) {
      this.trace('has committed but unapplied conf changes; not campaigning');
      return;
    }
    this.campaign(t);
  }

  private hasUnappliedConfChanges(): boolean {
    if (this.log.applied >= this.log.committed) return false;
    const lo = Math.max(this.log.applied + 1, this.log.firstIndex());
    for (const e of this.log.slice(lo, this.log.committed + 1, Number.MAX_SAFE_INTEGER)) {
      if (e.type === EntryType.ConfChange) return true;
    }
    return false;
  }

  campaign(t: CampaignType): void {
    let voteMsg: MessageType;
    let term: number;
    if (t === CampaignType.PreElection) {
      this.becomePreCandidate();
      voteMsg = MessageType.PreVote;
      term = this.term + 1; // the term we would campaign in; ours is unchanged
    } else {
      this.becomeCandidate();
      voteMsg = MessageType.Vote;
      term = this.term;
    }
    if (this.poll(this.id, voteRespType(voteMsg), true) === VoteResult.Won) {
      // A one-voter cluster wins at once.
      if (t === CampaignType.PreElection) this.campaign(CampaignType.Election);
      else this.becomeLeader();
      return;
    }
    const voters = [...new Set([...this.tracker.config.incoming, ...this.tracker.config.outgoing])].sort();
    for (const id of voters) {
      if (id === this.id) continue;
      const m = this.msg(voteMsg, id);
      m.term = term;
      m.index = this.log.lastIndex();
      m.logTerm = this.log.lastTerm();
      if (t === CampaignType.Transfer) m.context = campaignTransferContext;
      this.send(m);
    }
  }

  private poll(id: NodeId, t: MessageType, granted: boolean): VoteResult {
    this.tracker.recordVote(id, granted);
    const { granted: g, rejected, result } = this.tracker.tallyVotes();
    this.trace(
      `received ${MessageType[t]} ${granted ? 'granted' : 'rejected'} from ${id}: ${g} granted, ${rejected} rejected`,
    );
    return result;
  }

  // --- ticks ------------------------------------------------------------------

  tick(): void {
    if (this.ticksSinceLeaderContact < this.cfg.electionTimeoutTicks) this.ticksSinceLeaderContact++;
    if (this.role === Role.Leader) this.tickHeartbeat();
    else this.tickElection();
  }

  private tickElection(): void {
    this.electionElapsed++;
    if (this.promotable() && this.electionElapsed >= this.randomizedElectionTimeoutTicks) {
      this.electionElapsed = 0;
      this.step(this.msg(MessageType.Hup, this.id));
    }
  }

  private tickHeartbeat(): void {
    this.heartbeatElapsed++;
    this.electionElapsed++;
    if (this.electionElapsed >= this.cfg.electionTimeoutTicks) {
      this.electionElapsed = 0;
      if (this.cfg.checkQuorum) this.step(this.msg(MessageType.CheckQuorum, this.id));
      // A transfer that did not finish within an election timeout is abandoned.
      if (this.role === Role.Leader && this.leadTransferee !== NONE) this.abortLeaderTransfer();
    }
    if (this.role !== Role.Leader) return;
    if (this.heartbeatElapsed >= this.cfg.heartbeatTicks) {
      this.heartbeatElapsed = 0;
      this.step(this.msg(MessageType.Beat, this.id));
    }
  }

  private abortLeaderTransfer(): void {
    if (this.leadTransferee !== NONE) this.trace(`aborted leadership transfer to ${this.leadTransferee}`);
    this.leadTransferee = NONE;
  }

  // --- appending and committing ----------------------------------------------

  /** Leader: appends entries to its own log. Returns false if the uncommitted-size limit refused them. */
  private appendEntries(es: Entry[]): boolean {
    let li = this.log.lastIndex();
    let size = 0;
    for (const e of es) size += e.data.byteLength;
    const limit = this.cfg.maxUncommittedEntriesBytes;
    // An empty entry (leader's no-op) is always allowed; otherwise at least one proposal fits.
    if (limit > 0 && size > 0 && this.uncommittedSizeBytes > 0 && this.uncommittedSizeBytes + size > limit)
      return false;
    this.uncommittedSizeBytes += size;
    const ents = es.map((e) => ({ ...e, term: this.term, index: ++li }));
    li = this.log.append(ents);
    this.tracker.progress.get(this.id)?.maybeUpdate(li);
    this.maybeCommit();
    return true;
  }

  /** Leader: advances the commit index to what a quorum has, if that entry is of our term. */
  private maybeCommit(): boolean {
    const mci = this.tracker.committed();
    if (!Number.isFinite(mci)) return false;
    const before = this.log.committed;
    const advanced = this.log.maybeCommit(
      mci,
      this.term,
      this.cfg.testingBugs.commitPreviousTermByCount === true,
    );
    if (advanced) invariant(this.log.committed > before, 'commit went backwards');
    return advanced;
  }

  private committedEntryInCurrentTerm(): boolean {
    return this.log.term(this.log.committed) === this.term;
  }

  /**
   * The index at which a linearizable read may be served right now from the
   * leader lease, once the state machine has applied it; undefined when this
   * node is not a leader holding a valid lease with an entry of its term
   * committed (lease.ts, points 4 and 5).
   */
  leaseReadIndex(): number | undefined {
    if (this.role !== Role.Leader || !this.lease || !this.committedEntryInCurrentTerm()) return undefined;
    if (!this.lease.valid(this.tracker.config.incoming, this.tracker.config.outgoing)) return undefined;
    this.readsServed.lease++;
    return this.log.committed;
  }

  /** leaseReads: this node promised not to help elect anyone yet (lease.ts, point 1). */
  private leasePromiseHeld(): boolean {
    return this.cfg.leaseReads && this.ticksSinceLeaderContact < this.cfg.electionTimeoutTicks;
  }

  // --- step -------------------------------------------------------------------

  /**
   * Feeds one message (from the network or a local request) into the state
   * machine. Throws RequestDroppedError when a local request cannot be accepted.
   */
  step(m: Message): void {
    if (
      (m.type === MessageType.Vote || m.type === MessageType.PreVote) &&
      m.term >= this.term &&
      !(m.term === this.term && this.vote === m.from) &&
      !isCampaignTransfer(m.context) &&
      this.leasePromiseHeld()
    ) {
      // Checked before any term change, and also at our own term: a term
      // reached through another message (with no leader) must not free the vote.
      this.trace(
        `ignored ${MessageType[m.type]} from ${m.from} at term ${m.term}: heard from a leader (or started) ${this.ticksSinceLeaderContact} ticks ago`,
      );
      return;
    }
    if (m.term === 0) {
      // local message or a forwarded proposal / read request
    } else if (m.term > this.term) {
      if (m.type === MessageType.Vote || m.type === MessageType.PreVote) {
        const force = isCampaignTransfer(m.context);
        const inLease =
          this.cfg.checkQuorum && this.lead !== NONE && this.electionElapsed < this.cfg.electionTimeoutTicks;
        if (!force && inLease) {
          // We heard from a leader within the minimum election timeout: this
          // candidate is probably partitioned or lagging. Ignore it, so it
          // cannot depose a healthy leader.
          this.trace(
            `ignored ${MessageType[m.type]} from ${m.from} at term ${m.term}: leader ${this.lead} lease not expired`,
          );
          return;
        }
      }
      if (m.type === MessageType.PreVote) {
        // Never change our term for a pre-vote.
      } else if (m.type === MessageType.PreVoteResp && !m.reject) {
        // Our pre-vote was granted at the future term; the term changes only if we win.
      } else {
        const leaderMsg =
          m.type === MessageType.App || m.type === MessageType.Heartbeat || m.type === MessageType.Snap;
        this.trace(`received ${MessageType[m.type]} with higher term ${m.term} from ${m.from}`);
        this.becomeFollower(m.term, leaderMsg ? m.from : NONE);
      }
    } else if (m.term < this.term) {
      if (
        (this.cfg.checkQuorum || this.cfg.preVote) &&
        (m.type === MessageType.Heartbeat || m.type === MessageType.App)
      ) {
        // A stale leader (e.g. healed from a partition): tell it our term so it
        // steps down. Without this, with pre-vote or check-quorum we would
        // ignore it forever and it would never learn.
        this.send(this.msg(MessageType.AppResp, m.from));
      } else if (m.type === MessageType.PreVote) {
        const r = this.msg(MessageType.PreVoteResp, m.from);
        r.term = this.term;
        r.reject = true;
        this.send(r);
      }
      return; // ignore other stale messages
    }

    if (m.type === MessageType.App || m.type === MessageType.Heartbeat || m.type === MessageType.Snap) {
      // From the leader of our term (m.term === this.term here).
      this.ticksSinceLeaderContact = 0;
    }
    switch (m.type) {
      case MessageType.Hup:
        this.hup(this.cfg.preVote ? CampaignType.PreElection : CampaignType.Election);
        return;
      case MessageType.Vote:
      case MessageType.PreVote: {
        const canVote =
          this.vote === m.from ||
          (this.vote === NONE && this.lead === NONE) ||
          (m.type === MessageType.PreVote && m.term > this.term);
        const upToDate = this.cfg.testingBugs.voteWithoutLogCheck || this.log.isUpToDate(m.index, m.logTerm);
        const r = this.msg(voteRespType(m.type), m.from);
        if (canVote && upToDate) {
          // The response carries the candidate's term so that it is not
          // mistaken for a stale message (a pre-vote is for a future term).
          r.term = m.term;
          this.send(r);
          if (m.type === MessageType.Vote) {
            this.electionElapsed = 0;
            this.vote = m.from;
          }
          this.trace(`granted ${MessageType[m.type]} to ${m.from} at term ${m.term}`);
        } else {
          r.term = this.term;
          r.reject = true;
          this.send(r);
          this.trace(
            `rejected ${MessageType[m.type]} from ${m.from} at term ${m.term} (${canVote ? 'log behind' : `voted ${this.vote || '-'} lead ${this.lead || '-'}`})`,
          );
        }
        return;
      }
      default:
        break;
    }
    switch (this.role) {
      case Role.Leader:
        this.stepLeader(m);
        return;
      case Role.Candidate:
      case Role.PreCandidate:
        this.stepCandidate(m);
        return;
      case Role.Follower:
        this.stepFollower(m);
        return;
    }
  }

  private isLocal(m: Message): boolean {
    return m.from === this.id || m.from === NONE;
  }

  /**
   * Set while stepping a request made through the RawNode API (propose,
   * readIndex, ...): only those throw RequestDroppedError when dropped. A
   * forwarded request that comes back to its origin is dropped silently.
   */
  localRequest = false;

  private drop(m: Message, reason: string): void {
    if (this.localRequest)
      throw new RequestDroppedError(
        MessageType[m.type] === 'Prop' ? 'proposal' : MessageType[m.type]!,
        reason,
      );
    this.trace(`dropped ${MessageType[m.type]} from ${m.from}: ${reason}`);
  }

  private stepLeader(m: Message): void {
    switch (m.type) {
      case MessageType.Beat:
        this.bcastHeartbeat();
        return;
      case MessageType.CheckQuorum: {
        const self = this.tracker.progress.get(this.id);
        if (self) self.recentActive = true;
        if (!this.tracker.quorumActive()) {
          this.trace('stepped down: no quorum active within an election timeout (check-quorum)');
          this.becomeFollower(this.term, NONE);
        }
        for (const [id, pr] of this.tracker.progress) if (id !== this.id) pr.recentActive = false;
        return;
      }
      case MessageType.Prop: {
        invariant(m.entries.length > 0, 'proposal without entries');
        if (!this.tracker.progress.has(this.id)) {
          this.drop(m, 'this leader was removed from the configuration');
          return;
        }
        if (this.leadTransferee !== NONE) {
          this.drop(m, `leadership is being transferred to ${this.leadTransferee}`);
          return;
        }
        for (let i = 0; i < m.entries.length; i++) {
          const e = m.entries[i]!;
          if (e.type !== EntryType.ConfChange) continue;
          let cc: ConfChange;
          try {
            cc = decodeConfChange(e.data);
          } catch (err) {
            this.drop(m, (err as Error).message);
            return;
          }
          const refused = this.refuseConfChange(cc);
          if (refused) {
            this.drop(m, refused);
            return;
          }
          this.pendingConfIndex = this.log.lastIndex() + i + 1;
        }
        if (!this.appendEntries(m.entries)) {
          this.drop(
            m,
            `more than maxUncommittedEntriesBytes (${this.cfg.maxUncommittedEntriesBytes}) uncommitted`,
          );
          return;
        }
        this.bcastAppend();
        return;
      }
      case MessageType.ReadIndex: {
        if (this.tracker.isSingleton()) {
          this.respondReadIndex(m, this.log.committed);
          return;
        }
        if (!this.committedEntryInCurrentTerm()) {
          // Our commit index may be behind the previous leader's until our
          // empty entry commits; queue the request until then.
          this.pendingReadIndexMessages.push(m);
          return;
        }
        this.startReadIndex(m);
        return;
      }
      case MessageType.TransferLeader: {
        // As in etcd, the request names the transferee in `from`.
        const transferee = m.from;
        const pr = this.tracker.progress.get(transferee);
        if (!pr || pr.isLearner) {
          this.trace(`ignored transfer to ${transferee}: not a voter`);
          return;
        }
        if (this.leadTransferee !== NONE) {
          if (this.leadTransferee === transferee) return;
          this.abortLeaderTransfer();
        }
        if (transferee === this.id) return;
        this.trace(`starts leadership transfer to ${transferee}`);
        // The transfer must finish within an election timeout.
        this.electionElapsed = 0;
        this.leadTransferee = transferee;
        if (pr.match === this.log.lastIndex()) this.sendTimeoutNow(transferee);
        else this.sendAppend(transferee);
        return;
      }
      default:
        break;
    }

    const pr = this.tracker.progress.get(m.from);
    if (!pr) return; // a response from a node no longer in the configuration
    switch (m.type) {
      case MessageType.AppResp: {
        pr.recentActive = true;
        if (m.reject) {
          let nextProbe = m.rejectHint;
          if (m.logTerm > 0) nextProbe = this.log.findConflictByTerm(m.rejectHint, m.logTerm).index;
          if (pr.maybeDecrTo(m.index, nextProbe)) {
            if (pr.state === ProgressState.Replicate) pr.becomeProbe();
            this.sendAppend(m.from);
          }
          return;
        }
        if (m.index > this.log.lastIndex()) {
          // Cannot be an answer to anything we sent: ignore rather than trust it.
          this.trace(
            `ignored AppResp from ${m.from} for index ${m.index} beyond our last index ${this.log.lastIndex()}`,
          );
          return;
        }
        const oldPaused = pr.isPaused();
        if (pr.maybeUpdate(m.index) || (pr.match === m.index && pr.state === ProgressState.Probe)) {
          switch (pr.state) {
            case ProgressState.Probe:
              pr.becomeReplicate();
              break;
            case ProgressState.Snapshot:
              if (pr.match + 1 >= this.log.firstIndex()) {
                // The follower can be served from the log again.
                pr.becomeProbe();
                pr.becomeReplicate();
              }
              break;
            case ProgressState.Replicate:
              pr.inflights.freeLE(m.index);
              break;
          }
          if (this.maybeCommit()) {
            this.releasePendingReadIndexMessages();
            this.bcastAppend();
          } else if (oldPaused) {
            this.sendAppend(m.from);
          }
          // Fill the inflight window; bounded by maxInflightMsgs (each send adds one inflight).
          for (let i = 0; i < this.cfg.maxInflightMsgs && this.maybeSendAppend(m.from, false); i++);
          if (m.from === this.leadTransferee && pr.match === this.log.lastIndex()) {
            this.trace(`sent TimeoutNow to ${m.from}: its log is up to date`);
            this.sendTimeoutNow(m.from);
          }
        }
        return;
      }
      case MessageType.HeartbeatResp: {
        pr.recentActive = true;
        pr.msgAppFlowPaused = false;
        // The follower is reachable but the window is still full: an append was
        // probably lost. Free one slot so replication cannot stall forever.
        if (pr.state === ProgressState.Replicate && pr.inflights.full()) pr.inflights.freeFirstOne();
        if (pr.match < this.log.lastIndex() || pr.state === ProgressState.Probe) this.sendAppend(m.from);
        if (m.index > 0) this.lease?.acknowledged(m.from, m.index);
        if (m.context.byteLength === 0) return;
        const acks = this.readOnly.ack(m.from, m.context);
        if (!acks) return;
        const votes = new Map<NodeId, boolean>();
        for (const id of acks) votes.set(id, true);
        if (
          jointVoteResult(this.tracker.config.incoming, this.tracker.config.outgoing, votes) !==
          VoteResult.Won
        )
          return;
        for (const rs of this.readOnly.advance(m.context)) {
          this.readsServed.quorumRound++;
          this.respondReadIndex(rs.req, rs.index);
        }
        return;
      }
      case MessageType.SnapStatus: {
        if (pr.state !== ProgressState.Snapshot) return;
        if (m.reject) {
          pr.pendingSnapshot = 0;
          this.trace(`snapshot to ${m.from} failed`);
        }
        // Probe from after the snapshot (it may have been applied); wait for
        // a heartbeat response before sending, in case the follower is down.
        pr.becomeProbe();
        pr.msgAppFlowPaused = true;
        return;
      }
      case MessageType.Unreachable:
        if (pr.state === ProgressState.Replicate) pr.becomeProbe();
        return;
      default:
        return;
    }
  }

  /** Why the leader must refuse conf change `cc` now, or undefined if it may be appended. */
  private refuseConfChange(cc: ConfChange): string | undefined {
    if (this.pendingConfIndex > this.log.applied) {
      return `the previous conf change at index ${this.pendingConfIndex} is not applied yet (applied=${this.log.applied})`;
    }
    const joint = isJoint(this.tracker.config);
    const leave = isLeaveJoint(cc);
    if (joint && !leave) return 'the configuration is joint; leave it before the next change';
    if (!joint && leave) return 'the configuration is not joint; nothing to leave';
    if (!this.committedEntryInCurrentTerm()) {
      return 'this leader has not yet committed an entry of its term';
    }
    try {
      applyConfChangeTo(
        { config: this.tracker.config, progress: this.tracker.progress },
        cc,
        this.log.lastIndex(),
        (next, learner) => this.tracker.newProgress(next, learner),
      );
    } catch (err) {
      if (err instanceof ConfChangeError) return err.message;
      throw err;
    }
    return undefined;
  }

  private startReadIndex(m: Message): void {
    if (this.cfg.testingBugs.readIndexWithoutQuorum) {
      this.respondReadIndex(m, this.log.committed);
      return;
    }
    const leaseIndex = this.leaseReadIndex();
    if (leaseIndex !== undefined) {
      this.respondReadIndex(m, leaseIndex);
      return;
    }
    this.readOnly.add(this.log.committed, m);
    this.readOnly.ack(this.id, m.context);
    this.bcastHeartbeat(m.context);
  }

  private releasePendingReadIndexMessages(): void {
    if (this.pendingReadIndexMessages.length === 0 || !this.committedEntryInCurrentTerm()) return;
    const msgs = this.pendingReadIndexMessages;
    this.pendingReadIndexMessages = [];
    for (const m of msgs) this.startReadIndex(m);
  }

  private respondReadIndex(req: Message, index: number): void {
    if (this.isLocal(req)) {
      this.readStates.push({ index, requestCtx: req.context });
      return;
    }
    const r = this.msg(MessageType.ReadIndexResp, req.from);
    r.index = index;
    r.context = req.context;
    this.send(r);
  }

  private stepCandidate(m: Message): void {
    const myVoteResp = this.role === Role.PreCandidate ? MessageType.PreVoteResp : MessageType.VoteResp;
    switch (m.type) {
      case MessageType.Prop: {
        this.drop(m, 'no leader (election in progress)');
        return;
      }
      case MessageType.ReadIndex: {
        this.drop(m, 'no leader (election in progress)');
        return;
      }
      case MessageType.TransferLeader: {
        this.drop(m, 'no leader (election in progress)');
        return;
      }
      case MessageType.App:
        this.becomeFollower(m.term, m.from);
        this.handleAppendEntries(m);
        return;
      case MessageType.Heartbeat:
        this.becomeFollower(m.term, m.from);
        this.handleHeartbeat(m);
        return;
      case MessageType.Snap:
        this.becomeFollower(m.term, m.from);
        this.handleSnapshot(m);
        return;
      case myVoteResp: {
        const res = this.poll(m.from, m.type, !m.reject);
        if (res === VoteResult.Won) {
          if (this.role === Role.PreCandidate) {
            this.campaign(CampaignType.Election);
          } else {
            this.becomeLeader();
            this.bcastAppend();
          }
        } else if (res === VoteResult.Lost) {
          // A pre-vote rejected at a higher term already moved us to that term above.
          this.becomeFollower(this.term, NONE);
        }
        return;
      }
      default:
        return; // TimeoutNow while campaigning, stale responses, ...
    }
  }

  private stepFollower(m: Message): void {
    switch (m.type) {
      case MessageType.Prop:
        if (this.lead === NONE) {
          this.drop(m, 'no leader known');
          return;
        }
        if (this.cfg.disableProposalForwarding) {
          this.drop(m, 'proposal forwarding is disabled');
          return;
        }
        this.forward(m);
        return;
      case MessageType.App:
        this.electionElapsed = 0;
        this.lead = m.from;
        this.handleAppendEntries(m);
        return;
      case MessageType.Heartbeat:
        this.electionElapsed = 0;
        this.lead = m.from;
        this.handleHeartbeat(m);
        return;
      case MessageType.Snap:
        this.electionElapsed = 0;
        this.lead = m.from;
        this.handleSnapshot(m);
        return;
      case MessageType.TransferLeader:
        if (this.lead === NONE) {
          this.drop(m, 'no leader known');
          return;
        }
        this.forward(m);
        return;
      case MessageType.TimeoutNow:
        this.trace(`received TimeoutNow from ${m.from}: campaigning to take over leadership`);
        // A transfer skips pre-vote: we know the leader is alive and asked for it.
        this.hup(CampaignType.Transfer);
        return;
      case MessageType.ReadIndex:
        if (this.lead === NONE) {
          this.drop(m, 'no leader known');
          return;
        }
        this.forward(m);
        return;
      case MessageType.ReadIndexResp:
        this.readStates.push({ index: m.index, requestCtx: m.context });
        return;
      default:
        return;
    }
  }

  private forward(m: Message): void {
    const f: Message = { ...m, to: this.lead, from: this.isLocal(m) ? this.id : m.from };
    this.send(f);
  }

  private handleAppendEntries(m: Message): void {
    if (m.index < this.log.committed) {
      // Everything up to our commit index matches the leader's log already.
      const r = this.msg(MessageType.AppResp, m.from);
      r.index = this.log.committed;
      this.send(r);
      return;
    }
    const lastNew = this.log.maybeAppend(m.index, m.logTerm, m.commit, m.entries);
    const r = this.msg(MessageType.AppResp, m.from);
    if (lastNew !== undefined) {
      r.index = lastNew;
      this.send(r);
      return;
    }
    // Reject with a hint: the last index at or below m.index whose term is at
    // most m.logTerm. The leader can skip all entries after it in one step.
    const hint = this.log.findConflictByTerm(Math.min(m.index, this.log.lastIndex()), m.logTerm);
    r.index = m.index;
    r.reject = true;
    r.rejectHint = hint.index;
    r.logTerm = hint.term;
    this.trace(`rejected append at ${m.logTerm}/${m.index}: hint ${hint.term}/${hint.index}`);
    this.send(r);
  }

  private handleHeartbeat(m: Message): void {
    this.log.commitTo(m.commit);
    const r = this.msg(MessageType.HeartbeatResp, m.from);
    r.context = m.context;
    r.index = m.index; // the leader's lease round
    this.send(r);
  }

  private handleSnapshot(m: Message): void {
    invariant(m.snapshot, 'Snap message without a snapshot');
    const r = this.msg(MessageType.AppResp, m.from);
    const md = m.snapshot.metadata;
    if (this.restore(m.snapshot)) {
      this.trace(`restored snapshot ${md.term}/${md.index}`);
      r.index = this.log.lastIndex();
    } else {
      r.index = this.log.committed;
    }
    this.send(r);
  }

  /** Installs a snapshot from the leader. Returns false if it was ignored (old, or we already have it). */
  private restore(s: Snapshot): boolean {
    const md = s.metadata;
    if (md.index <= this.log.committed) return false;
    invariant(this.role === Role.Follower, `snapshot installed as ${Role[this.role]}`);
    const cs = md.confState;
    // The snapshot's configuration may predate our addition (the leader sends
    // the newest snapshot it has, which can be older than the conf change
    // that added us). Installing it is still safe: without being a voter in
    // our own configuration we cannot campaign, and the entries after the
    // snapshot carry the change that adds us.
    if (this.log.matchTerm(md.index, md.term)) {
      // We have the entries already; just learn that they are committed.
      this.log.commitTo(md.index);
      return false;
    }
    this.log.restore(s);
    const restored = restoreMembership(cs, this.log.lastIndex(), (next, learner) =>
      this.tracker.newProgress(next, learner),
    );
    this.switchToConfig(restored.config, restored.progress);
    return true;
  }

  // --- membership ------------------------------------------------------------

  /** Applies a committed ConfChange (called by the application in log order). Returns the new ConfState. */
  applyConfChange(cc: ConfChange): ConfState {
    let next: { config: MembershipConfig; progress: Map<NodeId, Progress> };
    try {
      next = applyConfChangeTo(
        { config: this.tracker.config, progress: this.tracker.progress },
        cc,
        this.log.lastIndex(),
        (n, learner) => this.tracker.newProgress(n, learner),
      );
    } catch (err) {
      if (!(err instanceof ConfChangeError)) throw err;
      // Every node applies the same log, so every node ignores the same invalid change.
      this.trace(`ignored committed conf change: ${err.message}`);
      return this.tracker.confState();
    }
    this.switchToConfig(next.config, next.progress);
    return this.tracker.confState();
  }

  private switchToConfig(config: MembershipConfig, progress: Map<NodeId, Progress>): void {
    this.tracker.config = config;
    this.tracker.progress = progress;
    this.lease?.configurationChanged();
    this.trace(`switched to configuration ${describeMembership(config)}`);
    const pr = progress.get(this.id);
    if (this.role !== Role.Leader) return;
    if (!pr || pr.isLearner) {
      // Removed or demoted: a leader must be a voter. Tell followers the
      // commit index, then step down; the remaining voters elect a leader.
      this.bcastAppend();
      this.trace('stepped down: no longer a voter');
      this.becomeFollower(this.term, NONE);
      return;
    }
    if (this.maybeCommit()) this.bcastAppend();
    else for (const id of this.tracker.ids()) if (id !== this.id) this.maybeSendAppend(id, false);
    if (this.leadTransferee !== NONE && !this.tracker.isVoter(this.leadTransferee))
      this.abortLeaderTransfer();
  }

  // --- after the application acted on a Ready --------------------------------

  /** The application persisted/applied up to these points (RawNode.advance). */
  advance(
    appliedIndex: number,
    lastPersisted: { index: number; term: number } | undefined,
    snapshotIndex: number,
  ): void {
    if (snapshotIndex > 0) this.log.stableSnapTo(snapshotIndex);
    if (lastPersisted) this.log.stableTo(lastPersisted.index, lastPersisted.term);
    if (appliedIndex > this.log.applied) {
      const oldApplied = this.log.applied;
      this.log.appliedTo(appliedIndex);
      if (this.role === Role.Leader) this.reduceUncommittedSize(oldApplied, appliedIndex);
    }
    // Leave a joint config automatically once it is applied.
    if (
      this.role === Role.Leader &&
      this.tracker.config.autoLeave &&
      this.log.applied >= this.pendingConfIndex &&
      this.committedEntryInCurrentTerm()
    ) {
      const m = this.msg(MessageType.Prop, this.id);
      m.entries = [
        { term: 0, index: 0, type: EntryType.ConfChange, data: encodeConfChange(leaveJointConfChange()) },
      ];
      // If dropped (e.g. a transfer is in progress) it is retried on the next advance.
      const before = this.log.lastIndex();
      this.step(m);
      if (this.log.lastIndex() > before) this.trace('proposed leaving the joint configuration');
    }
  }

  private reduceUncommittedSize(fromExclusive: number, toInclusive: number): void {
    if (this.uncommittedSizeBytes === 0) return;
    let size = 0;
    const lo = Math.max(fromExclusive + 1, this.log.firstIndex());
    if (lo <= toInclusive)
      for (const e of this.log.slice(lo, toInclusive + 1, Number.MAX_SAFE_INTEGER)) size += e.data.byteLength;
    this.uncommittedSizeBytes = Math.max(0, this.uncommittedSizeBytes - size);
  }

  /** Pending ReadIndex requests at this leader (for status). */
  pendingReadCount(): number {
    return this.readOnly.size() + this.pendingReadIndexMessages.length;
  }
}
