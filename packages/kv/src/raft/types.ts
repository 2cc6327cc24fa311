// The vocabulary shared by the Raft core, storage, transport and simulator.
// The core is a pure state machine: it never does I/O; everything the outside
// world must do comes out in a Ready (see ready.ts / rawnode.ts).
//
// These types are a contract between layers (storage persists them, transport
// encodes them with protobuf, the simulator inspects them). Change them only
// together with transport/raft.proto and storage.

/** Node identity: a short printable string ("n1", a libp2p peer id, ...). Never empty. */
export type NodeId = string;

/** Sentinel for "no node" in vote / leader fields. */
export const NONE: NodeId = '';

export enum EntryType {
  Normal = 0,
  ConfChange = 1,
}

export interface Entry {
  term: number;
  index: number;
  type: EntryType;
  /** Opaque to Raft. For ConfChange entries: encodeConfChange(). Empty for the leader's no-op. */
  data: Uint8Array;
}

/** What must be durable before any message that depends on it is sent. */
export interface HardState {
  term: number;
  vote: NodeId; // NONE when not voted in `term`
  commit: number;
}

export interface ConfState {
  voters: NodeId[];
  learners: NodeId[];
  /** Non-empty while in a joint configuration (C_old of C_old,new). */
  votersOutgoing: NodeId[];
  /** Voters of the outgoing config that become learners when the joint config is left. */
  learnersNext: NodeId[];
  /** Leave the joint configuration automatically once it is committed. */
  autoLeave: boolean;
}

export interface SnapshotMetadata {
  index: number;
  term: number;
  confState: ConfState;
}

export interface Snapshot {
  metadata: SnapshotMetadata;
  /** The application's state at metadata.index (opaque to Raft). */
  data: Uint8Array;
}

export enum ConfChangeType {
  AddVoter = 0,
  AddLearner = 1,
  RemoveNode = 2,
}

export interface ConfChangeSingle {
  type: ConfChangeType;
  nodeId: NodeId;
}

export enum ConfChangeTransition {
  /** One change: applied directly. Several: joint consensus, left automatically. */
  Auto = 0,
  /** Joint consensus, left automatically once committed. */
  JointImplicit = 1,
  /** Joint consensus, left only by an explicit empty ConfChange. */
  JointExplicit = 2,
}

export interface ConfChange {
  transition: ConfChangeTransition;
  changes: ConfChangeSingle[];
  /** Opaque to Raft; lets the application attach e.g. the new member's address. */
  context: Uint8Array;
}

export enum MessageType {
  Hup = 0, // local: start an election
  Beat = 1, // local: leader heartbeat tick
  Prop = 2, // proposal (local or forwarded to leader)
  App = 3, // AppendEntries
  AppResp = 4,
  Vote = 5,
  VoteResp = 6,
  PreVote = 7,
  PreVoteResp = 8,
  Snap = 9, // InstallSnapshot
  Heartbeat = 10,
  HeartbeatResp = 11,
  Unreachable = 12, // local: transport reports a peer unreachable
  SnapStatus = 13, // local: transport reports a snapshot send result
  CheckQuorum = 14, // local
  TransferLeader = 15,
  TimeoutNow = 16,
  ReadIndex = 17,
  ReadIndexResp = 18,
}

export interface Message {
  type: MessageType;
  from: NodeId;
  to: NodeId;
  term: number;
  /** App: term of the entry preceding `entries`. Vote: candidate's last log term. Resp: hint term. */
  logTerm: number;
  /** App: index preceding `entries`. Vote: candidate's last index. AppResp: matched / rejected index. */
  index: number;
  entries: Entry[];
  commit: number;
  reject: boolean;
  /** AppResp on reject: the follower's hint for the next probe (fast backtracking). */
  rejectHint: number;
  snapshot?: Snapshot;
  /** ReadIndex request context, heartbeat context, campaign type for transfer. */
  context: Uint8Array;
}

export enum Role {
  Follower = 0,
  PreCandidate = 1,
  Candidate = 2,
  Leader = 3,
}

export interface SoftState {
  leader: NodeId;
  role: Role;
}

/** A linearizable read may be served once the node has applied up to `index`. */
export interface ReadState {
  index: number;
  requestCtx: Uint8Array;
}

/**
 * Everything the caller must do, in this order:
 *  1. persist `hardState`, `entries` and `snapshot` in one atomic, synced write
 *     (when `mustSync`; otherwise sync may be skipped),
 *  2. send `messages`,
 *  3. apply `snapshot` (if any) then `committedEntries` to the state machine,
 *  4. call `advance()`.
 */
export interface Ready {
  softState?: SoftState;
  hardState?: HardState;
  readStates: ReadState[];
  entries: Entry[];
  snapshot?: Snapshot;
  committedEntries: Entry[];
  messages: Message[];
  mustSync: boolean;
}

export function emptyConfState(): ConfState {
  return { voters: [], learners: [], votersOutgoing: [], learnersNext: [], autoLeave: false };
}

export function emptyMessage(type: MessageType, from: NodeId, to: NodeId, term: number): Message {
  return {
    type,
    from,
    to,
    term,
    logTerm: 0,
    index: 0,
    entries: [],
    commit: 0,
    reject: false,
    rejectHint: 0,
    context: new Uint8Array(0),
  };
}

/** Read side of the log that the core consults; implemented in memory and on LevelDB. */
export interface RaftLogStorage {
  initialState(): { hardState: HardState; confState: ConfState };
  /** Entries [lo, hi), at most maxBytes (at least one entry if any). Throws CompactedError / UnavailableError. */
  entries(lo: number, hi: number, maxBytes: number): Entry[];
  /** Term of entry i; valid for firstIndex()-1 ..= lastIndex(). */
  term(i: number): number;
  lastIndex(): number;
  /** Index of the first entry still in the log (snapshot index + 1). */
  firstIndex(): number;
  snapshot(): Snapshot;
}

export class CompactedError extends Error {
  constructor(index: number, firstIndex: number) {
    super(`raft log entry ${index} was compacted (first available index is ${firstIndex})`);
    this.name = 'CompactedError';
  }
}

export class UnavailableError extends Error {
  constructor(index: number, lastIndex: number) {
    super(`raft log entry ${index} is not available yet (last index is ${lastIndex})`);
    this.name = 'UnavailableError';
  }
}
