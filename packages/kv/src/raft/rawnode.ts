// RawNode: the API an application drives the Raft core through.
//
// Run loop (single-threaded; see README "Raft core"):
//
//   every tick interval:   node.tick()
//   on a network message:  node.step(msg)
//   on a client request:   node.propose(data) / node.readIndex(ctx) / ...
//   whenever node.hasReady():
//     const rd = node.ready();
//     1. persist, in ONE atomic synced write (sync may be skipped if !rd.mustSync):
//        rd.snapshot (storage.applySnapshot) first, then rd.entries (storage.append,
//        replacing any conflicting suffix), then rd.hardState;
//     2. send rd.messages (only now: votes and acks promise what was just persisted);
//     3. apply rd.snapshot (if any) to the state machine, then rd.committedEntries in
//        order; for each ConfChange entry call node.applyConfChange(decodeConfChange(e.data));
//        serve rd.readStates once the state machine has applied up to their index;
//     4. node.advance().

import { coalesceMessages } from './coalesce.js';
import { encodeConfChange } from './confchange.js';
import { RaftUsageError } from './errors.js';
import type { ProgressState } from './progress.js';
import { Raft, type RaftConfig } from './raft.js';
import {
  type ConfChange,
  type ConfState,
  type Entry,
  EntryType,
  emptyMessage,
  type HardState,
  type Message,
  MessageType,
  type NodeId,
  type Ready,
  Role,
  type SoftState,
} from './types.js';

/** Message types that only the node itself may generate; refused from the network. */
const localOnly = new Set([
  MessageType.Hup,
  MessageType.Beat,
  MessageType.Unreachable,
  MessageType.SnapStatus,
  MessageType.CheckQuorum,
]);

export interface FollowerStatus {
  match: number;
  next: number;
  state: ProgressState;
  isLearner: boolean;
  recentActive: boolean;
  inflight: number;
}

export interface RaftStatus {
  id: NodeId;
  term: number;
  vote: NodeId;
  commit: number;
  applied: number;
  lastIndex: number;
  firstIndex: number;
  leader: NodeId;
  role: Role;
  /** Only on the leader: what it knows about each member. */
  progress?: Record<NodeId, FollowerStatus>;
  confState: ConfState;
  leadTransferee: NodeId;
  pendingReads: number;
}

export class RawNode {
  private readonly raft: Raft;
  private prevSoftState: SoftState;
  private prevHardState: HardState;
  private outstanding: Ready | undefined;

  constructor(config: RaftConfig) {
    this.raft = new Raft(config);
    this.prevSoftState = this.raft.softState();
    this.prevHardState = this.raft.hardState();
  }

  get id(): NodeId {
    return this.raft.id;
  }

  /** Advances logical time by one tick (election / heartbeat timers). */
  tick(): void {
    this.raft.tick();
  }

  /** Starts an election now (pre-vote first if enabled). */
  campaign(): void {
    this.raft.step(emptyMessage(MessageType.Hup, this.raft.id, this.raft.id, 0));
  }

  /**
   * Proposes `data` for the log. Forwarded to the leader if this node is a
   * follower. Throws RequestDroppedError if it certainly was not accepted;
   * success only means it was appended or forwarded, not committed: watch
   * committed entries (e.g. by a request id inside `data`).
   */
  propose(data: Uint8Array): void {
    this.proposeEntry(EntryType.Normal, data);
  }

  /**
   * Proposes several normal entries as one request (one message when
   * forwarded, one append and one round of MsgApp at the leader), all or
   * none: throws RequestDroppedError like propose() if the batch is refused.
   */
  proposeBatch(data: readonly Uint8Array[]): void {
    if (data.length === 0) throw new RaftUsageError('proposeBatch needs at least one entry');
    const m = emptyMessage(MessageType.Prop, this.raft.id, this.raft.id, 0);
    m.entries = data.map((d) => ({ term: 0, index: 0, type: EntryType.Normal, data: d }));
    this.stepLocal(m);
  }

  /** Proposes a membership change (applied via applyConfChange once committed). */
  proposeConfChange(cc: ConfChange): void {
    this.proposeEntry(EntryType.ConfChange, encodeConfChange(cc));
  }

  private proposeEntry(type: EntryType, data: Uint8Array): void {
    const m = emptyMessage(MessageType.Prop, this.raft.id, this.raft.id, 0);
    m.entries = [{ term: 0, index: 0, type, data }];
    this.stepLocal(m);
  }

  /**
   * Requests a linearizable read point. A ReadState {index, requestCtx: ctx}
   * appears in a later Ready; reads may be served once the state machine has
   * applied up to `index`. `ctx` must be unique among outstanding requests.
   * If no ReadState appears (leader lost), the caller times out and retries.
   */
  readIndex(ctx: Uint8Array): void {
    if (ctx.byteLength === 0) throw new RaftUsageError('readIndex needs a non-empty, unique request context');
    const m = emptyMessage(MessageType.ReadIndex, this.raft.id, this.raft.id, 0);
    m.context = ctx;
    this.stepLocal(m);
  }

  private stepLocal(m: Message): void {
    this.raft.localRequest = true;
    try {
      this.raft.step(m);
    } finally {
      this.raft.localRequest = false;
    }
  }

  /**
   * With leaseReads, at a leader whose lease holds: the index a linearizable
   * read may be served at once the state machine has applied it, without a
   * ReadIndex round or a Ready. Undefined otherwise: use readIndex().
   */
  leaseRead(): number | undefined {
    return this.raft.leaseReadIndex();
  }

  /** Asks the leader to hand leadership to `transferee` (a voter). Best effort; check status().leader. */
  transferLeadership(transferee: NodeId): void {
    this.stepLocal(emptyMessage(MessageType.TransferLeader, transferee, this.raft.id, 0));
  }

  /**
   * Feeds a message received from a peer. Throws RaftUsageError for messages
   * that cannot come from the network (local-only types, wrong recipient);
   * the transport should log and drop them.
   */
  step(m: Message): void {
    if (localOnly.has(m.type)) {
      throw new RaftUsageError(
        `message type ${MessageType[m.type]} from ${m.from} is local-only and cannot come from the network`,
      );
    }
    if (m.to !== this.raft.id) throw new RaftUsageError(`message for ${m.to} delivered to ${this.raft.id}`);
    const forwarded =
      m.type === MessageType.Prop ||
      m.type === MessageType.ReadIndex ||
      m.type === MessageType.TransferLeader;
    // A forwarded request may come back to the node that made it (its leader changed meanwhile).
    if (m.from === this.raft.id && !forwarded) {
      throw new RaftUsageError(
        `${MessageType[m.type]} from ${m.from} looks like it came from this node itself`,
      );
    }
    const problem = malformed(m);
    if (problem) throw new RaftUsageError(`malformed ${MessageType[m.type]} from ${m.from}: ${problem}`);
    this.raft.step(m);
  }

  /** Applies a committed conf change; returns the configuration now in effect. */
  applyConfChange(cc: ConfChange): ConfState {
    return this.raft.applyConfChange(cc);
  }

  /** The transport could not reach `id`: stop streaming appends to it until it answers. */
  reportUnreachable(id: NodeId): void {
    this.raft.step(emptyMessage(MessageType.Unreachable, id, this.raft.id, 0));
  }

  /** The transport finished sending a snapshot to `id` (ok) or gave up (!ok). */
  reportSnapshot(id: NodeId, ok: boolean): void {
    const m = emptyMessage(MessageType.SnapStatus, id, this.raft.id, 0);
    m.reject = !ok;
    this.raft.step(m);
  }

  hasReady(): boolean {
    if (this.outstanding) return false;
    const r = this.raft;
    const ss = r.softState();
    if (ss.leader !== this.prevSoftState.leader || ss.role !== this.prevSoftState.role) return true;
    if (!hardStateEqual(r.hardState(), this.prevHardState)) return true;
    if (r.log.hasPendingSnapshot()) return true;
    if (r.msgs.length > 0 || r.log.unstableEntries().length > 0 || r.readStates.length > 0) return true;
    return r.log.hasNextCommittedEntries();
  }

  /**
   * Everything the application must do now (see the file comment for the
   * order). Call advance() when done; ready() may not be called again before.
   */
  ready(): Ready {
    if (this.outstanding) throw new RaftUsageError('ready() called again before advance()');
    const r = this.raft;
    const ss = r.softState();
    const hs = r.hardState();
    const entries = r.log.unstableEntries().slice();
    const rd: Ready = {
      readStates: r.readStates,
      entries,
      committedEntries: r.log.nextCommittedEntries(),
      messages: r.cfg.coalesceMessages ? coalesceMessages(r.msgs, r.cfg.maxSizePerMsgBytes) : r.msgs,
      mustSync: false,
    };
    if (ss.leader !== this.prevSoftState.leader || ss.role !== this.prevSoftState.role) rd.softState = ss;
    if (!hardStateEqual(hs, this.prevHardState)) rd.hardState = hs;
    if (r.log.unstable.snapshot) rd.snapshot = r.log.unstable.snapshot;
    rd.mustSync =
      entries.length > 0 ||
      rd.snapshot !== undefined ||
      (rd.hardState !== undefined &&
        (hs.term !== this.prevHardState.term || hs.vote !== this.prevHardState.vote));
    r.msgs = [];
    r.readStates = [];
    this.outstanding = rd;
    return rd;
  }

  /** The application finished the last Ready (persisted, sent, applied). */
  advance(): void {
    const rd = this.outstanding;
    if (!rd) throw new RaftUsageError('advance() called without an outstanding ready()');
    this.outstanding = undefined;
    if (rd.softState) this.prevSoftState = rd.softState;
    if (rd.hardState) this.prevHardState = rd.hardState;
    const last: Entry | undefined = rd.entries[rd.entries.length - 1];
    let applied = rd.snapshot ? rd.snapshot.metadata.index : 0;
    const lastCommitted = rd.committedEntries[rd.committedEntries.length - 1];
    if (lastCommitted) applied = Math.max(applied, lastCommitted.index);
    this.raft.advance(
      applied,
      last ? { index: last.index, term: last.term } : undefined,
      rd.snapshot?.metadata.index ?? 0,
    );
  }

  status(): RaftStatus {
    const r = this.raft;
    const st: RaftStatus = {
      id: r.id,
      term: r.term,
      vote: r.vote,
      commit: r.log.committed,
      applied: r.log.applied,
      lastIndex: r.log.lastIndex(),
      firstIndex: r.log.firstIndex(),
      leader: r.lead,
      role: r.role,
      confState: r.tracker.confState(),
      leadTransferee: r.leadTransferee,
      pendingReads: r.pendingReadCount(),
    };
    if (r.role === Role.Leader) {
      st.progress = {};
      for (const id of r.tracker.ids()) {
        const pr = r.tracker.progress.get(id)!;
        st.progress[id] = {
          match: pr.match,
          next: pr.next,
          state: pr.state,
          isLearner: pr.isLearner,
          recentActive: pr.recentActive,
          inflight: pr.inflights.count(),
        };
      }
    }
    return st;
  }

  /** The core itself, for tests and the simulator's invariant checks (read only). */
  get core(): Raft {
    return this.raft;
  }
}

function hardStateEqual(a: HardState, b: HardState): boolean {
  return a.term === b.term && a.vote === b.vote && a.commit === b.commit;
}

/** Why a message from the network cannot be valid, or undefined. Protects the log from garbage. */
function malformed(m: Message): string | undefined {
  if (!Number.isSafeInteger(m.term) || m.term < 0) return `bad term ${m.term}`;
  if (m.term === 0 && m.type !== MessageType.Prop && m.type !== MessageType.ReadIndex) return 'no term';
  if (!Number.isSafeInteger(m.index) || m.index < 0 || !Number.isSafeInteger(m.commit) || m.commit < 0) {
    return 'bad index or commit';
  }
  if (m.type === MessageType.App) {
    for (let i = 0; i < m.entries.length; i++) {
      const e = m.entries[i]!;
      if (e.index !== m.index + 1 + i) return `entry ${i} has index ${e.index}, expected ${m.index + 1 + i}`;
      if (e.term > m.term || e.term < (i === 0 ? m.logTerm : m.entries[i - 1]!.term)) {
        return `entry ${e.index} has term ${e.term} out of order (message term ${m.term})`;
      }
    }
  } else if (m.type === MessageType.Prop) {
    if (m.entries.length === 0) return 'proposal without entries';
  } else if (m.type === MessageType.Snap) {
    if (!m.snapshot || m.snapshot.metadata.index <= 0) return 'no snapshot';
  }
  return undefined;
}
