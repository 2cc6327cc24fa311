// KvNode: one member of a Weft KV cluster, the embedding API.
//
// It owns the layers and runs the one loop that ties them together, in the
// order the Raft core requires (raft/types.ts, Ready):
//   ready() → storage.save (one synced batch) → transport.send(messages)
//           → apply snapshot / committed entries to the FSM → advance()
// Proposals made while a save is in flight land in the next Ready, so they
// share its fsync (group commit). Callers' promises are settled when the
// entry they proposed is applied locally (node-proposals.ts).
import { randomBytes } from 'node:crypto';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { Packr } from 'msgpackr';
import { CommandDecodeError, encodeCommand } from '../fsm/codec.js';
import { SessionReaper } from '../fsm/session-reaper.js';
import { type Indexed, KvStateMachine, type KvStateReader } from '../fsm/state-machine.js';
import { TombstoneReaper } from '../fsm/tombstone-reaper.js';
import type {
  ApplyResult,
  Command,
  DirEntry,
  KvOp,
  SessionBehavior,
  SessionRecord,
  TxnOpError,
  TxnResultEntry,
  Watch,
  WatchTarget,
} from '../fsm/types.js';
import { decodeConfChange } from '../raft/confchange.js';
import { RaftInvariantError, RequestDroppedError } from '../raft/errors.js';
import { suspendAwareClock } from '../raft/lease.js';
import { SeededRandom } from '../raft/rand.js';
import { RawNode } from '../raft/rawnode.js';
import {
  type ConfChange,
  ConfChangeTransition,
  ConfChangeType,
  type ConfState,
  type Entry,
  EntryType,
  type HardState,
  type Message,
  MessageType,
  type NodeId,
  type Ready,
  Role,
  type Snapshot,
} from '../raft/types.js';
import { LevelRaftStorage, StorageOpenError } from '../storage/level-storage.js';
import { silentLog, type Transport, type TransportLog } from '../transport/transport.js';
import { type AutopilotLimits, joinRefusal, type MemberHealth, nextMembershipAction } from './autopilot.js';
import type { AppliedCommand, Consistency, KvBackend, ReadView } from './backend.js';
import { ConsulHttpServer } from './http.js';
import { DEFAULT_CLUSTER_NAME, serveHttpTunnel } from './http-tunnel.js';
import { formatHostPort, type HostPort, multiaddrOf, parseHostPort, raftIdOf } from './node-address.js';
import {
  KvInputError,
  KvMembershipError,
  KvMembershipFullError,
  KvNodeClosedError,
  KvNodeUnavailableError,
} from './node-errors.js';
import { checkKey, checkSessionOptions } from './node-input.js';
import { LocalEntries } from './node-local-entries.js';
import { decodeEnvelope, encodeEnvelope, PendingTable, ProposalIds } from './node-proposals.js';
import { ReadIndexRounds } from './node-reads.js';
import { type WatchSource, watchLoop } from './node-watch.js';

export const DEFAULT_TICK_MS = 50;
export const DEFAULT_ELECTION_TICKS = 8;
/** Heartbeats every 100 ms (4+ per election timeout): every tick cost each idle node twice the CPU, for nothing. */
export const DEFAULT_HEARTBEAT_TICKS = 2;
export const DEFAULT_PROPOSAL_TIMEOUT_MS = 5_000;
/**
 * KvNodeOptions.maxClockDriftRatio default: leader leases allow for one
 * node's monotonic clock running up to 10% faster than another's (real
 * clocks differ by well under 0.1%; the rest is margin).
 */
export const DEFAULT_MAX_CLOCK_DRIFT_RATIO = 0.1;
/**
 * Raft ticks are at least this share of tickMs apart on the monotonic clock: a
 * timer may fire a little early (libuv rearms a repeating timer from its cached
 * loop time), and a follower's promise to a leader lease is counted in ticks.
 */
const MIN_TICK_INTERVAL_SHARE = 0.9;
/** Writes waiting for their commit at once; beyond this new writes fail at once (back-pressure). */
export const MAX_PENDING_PROPOSALS = 10_000;
/** At most this many writes go to the core as one proposal. */
const MAX_PROPOSALS_PER_BATCH = 256;
/** The leader refuses new entries while this many bytes are appended but not applied (back-pressure). */
const MAX_UNCOMMITTED_ENTRIES_BYTES = 64 * 1024 * 1024;
export const DEFAULT_SNAPSHOT_EVERY_ENTRIES = 10_000;
/**
 * Default KvNodeOptions.compactionStepEntries. Compacting 10 000 entries in one
 * batch held every write queued behind it (storage writes are serialized) for
 * 0.1-0.9 s on a loaded machine: a stall every snapshot, in the p99 of writes.
 */
export const DEFAULT_COMPACTION_STEP_ENTRIES = 1_000;
export { DEFAULT_CLUSTER_NAME };

/** How often the leader scans sessions for expired TTLs and learners for promotion. */
const LEADER_DUTY_INTERVAL_MS = 500;
/** A learner within this many entries of the leader's commit index is promoted. */
const PROMOTE_MAX_LAG_ENTRIES = 16;
/** Default KvNodeOptions.deadVoterThresholdMs. */
export const DEFAULT_DEAD_VOTER_THRESHOLD_MS = 10_000;
/** A member that has not heard from any leader for this long asks its peers whether it was removed. */
const REMOVED_CHECK_SILENCE_MS = 2_000;
/**
 * A leaving member asks the leader again this often until it is removed; the
 * leader forgets the request when it has not been repeated for
 * LEAVE_REQUEST_TTL_MS (the member gave up, or stopped before it was removed,
 * and must not be removed later when it comes back).
 */
const LEAVE_RETRY_MS = 250;
const LEAVE_REQUEST_TTL_MS = 5_000;
/** A member removed from the configuration is forgotten by the transport this much later. */
const FORGET_REMOVED_MEMBER_AFTER_MS = 500;
/** How long the leader holds a leave request's answer waiting for the removal (below the request timeout). */
const LEAVE_ANSWER_WAIT_MS = 1_500;
/** A ReadIndex request not answered within this long is issued again. */
const READ_INDEX_RETRY_MS = 500;
/** ReadIndex rounds out at once (node-reads.ts): reads arriving meanwhile need not wait for an answer to start theirs. */
const MAX_READ_ROUNDS_IN_FLIGHT = 4;

/** Message types that may be sent before the Ready that holds them is persisted (see handleReady). */
const SEND_BEFORE_PERSIST: ReadonlySet<MessageType> = new Set([
  MessageType.App,
  MessageType.Heartbeat,
  MessageType.HeartbeatResp,
  MessageType.Prop,
  MessageType.ReadIndex,
  MessageType.ReadIndexResp,
]);

/** Where the LevelDB store lives inside the data directory. */
const RAFT_SUBDIR = 'raft';
const JOIN_PROTOCOL = 'weft-kv/join/1';
const INFO_PROTOCOL = 'weft-kv/info/1';
const LEAVE_PROTOCOL = 'weft-kv/leave/1';
/** A follower asks the leader to start a leadership transfer (transferLeadership()). */
const TRANSFER_PROTOCOL = 'weft-kv/transfer/1';
const rpcPackr = new Packr({ useRecords: false, mapsAsObjects: true });

export interface KvNodeLog extends TransportLog {}

export interface KvNodeOptions {
  /** Directory of this node's state (created if missing). The LevelDB store lives in DIR/raft. */
  dataDir: string;
  /** Human name of this node (--id), kept in the data directory: a directory of another node is refused. */
  id: string;
  /** Raft listen address HOST:PORT. Its canonical form is this member's Raft id. */
  listen: string;
  /** Raft addresses of the other initial members (ignored once the data directory holds state). */
  peers?: string[];
  /**
   * Raft address(es) of running members to join through (new data directory
   * only): added as a learner, promoted once caught up while there are fewer
   * than maxVoters voters. Tried in turn; a full cluster fails the open with
   * KvMembershipFullError.
   */
  join?: string | string[];
  /** How long `join` keeps asking (no leader yet, members unreachable) before open fails. Default: 3 × proposalTimeoutMs, at least 15 s. */
  joinTimeoutMs?: number;
  /** Cluster name; nodes of different clusters refuse each other and each other's data. Default "weft". */
  cluster?: string;
  /** Pre-shared key of a private network (libp2p pnet swarm key file contents, or 64 hex digits). */
  clusterKey?: Uint8Array | string;
  /** Serve the Consul HTTP API on HOST:PORT (port 0 = any free port). Bind loopback unless you mean to expose it. */
  http?: string | HostPort;
  /**
   * Builds the transport for this node's Raft id. Default: libp2p on `listen`.
   * Tests pass MemoryNetwork transports.
   */
  transport?: (raftId: NodeId) => Transport | Promise<Transport>;
  tickMs?: number;
  electionTicks?: number;
  heartbeatTicks?: number;
  /**
   * Linearizable reads at the leader are served from its leader lease while
   * it holds (raft/lease.ts), without a heartbeat round per batch of reads;
   * otherwise by ReadIndex. Default true. Every member must use the same setting.
   */
  leaseReads?: boolean;
  /** The clock drift leader leases allow for (RaftConfig.maxClockDriftRatio). Default 0.1. */
  maxClockDriftRatio?: number;
  /** A write or linearizable read not done within this long fails with KvNodeUnavailableError. */
  proposalTimeoutMs?: number;
  /** Take a snapshot and compact the log after this many applied entries. */
  snapshotEveryEntries?: number;
  /** Log entries removed per compaction batch (default 1000); writes queued meanwhile go between the batches. */
  compactionStepEntries?: number;
  /** Session TTL grace multiplier (Consul: 2). */
  sessionTtlGraceMultiplier?: number;
  /** How long deletions keep their tombstone before the leader reaps them (Consul's tombstone_ttl, 15 min). */
  tombstoneTtlMs?: number;
  /** While leader: promote caught-up learners only up to this many voters. Default: no limit. */
  maxVoters?: number;
  /** While leader: accept joins only up to this many learners (beyond open voter slots). Default: no limit. */
  maxLearners?: number;
  /**
   * While leader (autopilot): a voter not heard from for this long is replaced
   * by a caught-up learner and then removed; a learner that silent is removed.
   * Default 10 s.
   */
  deadVoterThresholdMs?: number;
  log?: KvNodeLog;
}

export interface ReadOptions {
  /** Linearizable read: from the leader's lease while it holds, else a ReadIndex round with a quorum. The default mode does the same. */
  consistent?: boolean;
  /** Serve from this node's state without contacting the leader (possibly stale). */
  stale?: boolean;
}

export interface PutOptions {
  /** Check-and-set: 0 = create only; otherwise the key's ModifyIndex must equal this. */
  cas?: number;
  flags?: bigint;
  /** Acquire the key's lock for this session. */
  acquire?: string;
  /** Release the key's lock held by this session. */
  release?: string;
}

export interface DeleteOptions {
  cas?: number;
  recurse?: boolean;
}

export type TxnResult =
  | { ok: true; index: number; results: TxnResultEntry[] }
  | { ok: false; index: number; errors: TxnOpError[] };

export interface CreateSessionOptions {
  name?: string;
  /** Node name recorded in the session (default: this node's name). */
  node?: string;
  /** 0 = no TTL. */
  ttlMs?: number;
  behavior?: SessionBehavior;
  lockDelayMs?: number;
}

export interface WatchEvent {
  /** Index at which the listing is valid (X-Consul-Index). */
  index: number;
  entries: DirEntry[];
}

export interface KeyWatchEvent {
  /** Index at which `entry` is valid (X-Consul-Index): its ModifyIndex, or the store's index when absent. */
  index: number;
  /** The key's entry; null when it does not exist (not yet created, or deleted). */
  entry: DirEntry | null;
}

export interface WatchOptions {
  /** Yield only once the index differs from this one (a blocking query's ?index); default: yield at once. */
  index?: number;
  /** Ends the iteration. */
  signal?: AbortSignal;
}

export type MemberRole = 'voter' | 'learner';

export interface MemberInfo {
  /** Raft id = canonical raft address. */
  id: NodeId;
  address: string;
  /** Human name (--id) when known. */
  name: string;
  role: MemberRole;
  leader: boolean;
}

export interface KvNodeStatus {
  name: string;
  raftId: NodeId;
  cluster: string;
  leader: NodeId;
  role: 'leader' | 'follower' | 'candidate' | 'pre-candidate';
  term: number;
  commitIndex: number;
  appliedIndex: number;
  snapshotIndex: number;
  firstIndex: number;
  lastIndex: number;
  voters: NodeId[];
  learners: NodeId[];
  /** Linearizable reads this node answered while leader: from its lease, or after a heartbeat round (ReadIndex). */
  readsServed: { lease: number; quorumRound: number };
}

/** Context carried by the conf changes this node proposes. */
interface ConfChangeContext {
  proposalId?: string;
  name?: string;
}

const ROLE_NAMES: Record<Role, KvNodeStatus['role']> = {
  [Role.Follower]: 'follower',
  [Role.PreCandidate]: 'pre-candidate',
  [Role.Candidate]: 'candidate',
  [Role.Leader]: 'leader',
};

export class KvNode implements KvBackend {
  readonly name: string;
  readonly raftId: NodeId;
  readonly cluster: string;
  private readonly log: KvNodeLog;
  private readonly fsm = new KvStateMachine();
  private readonly reaper: SessionReaper;
  private readonly tombstoneReaper: TombstoneReaper;
  private readonly ids = new ProposalIds();
  private readonly proposals = new PendingTable<{ index: number; result: ApplyResult }>();
  private readonly confChanges = new PendingTable<number>();
  private readonly tickMs: number;
  private readonly proposalTimeoutMs: number;
  private readonly snapshotEveryEntries: number;
  private readonly compactionStepEntries: number;
  /** The snapshot being written and the log being compacted, in the background; undefined when idle. */
  private snapshotting: Promise<void> | undefined;
  private readonly membershipLimits: AutopilotLimits & { maxLearners: number };
  /** When this node last received a message from each member (the leader's autopilot reads it). */
  private readonly lastHeardMs = new Map<NodeId, number>();
  /** Leader: when each member that asked to leave last asked (see leave()). */
  private readonly leaveRequestedMs = new Map<NodeId, number>();
  /** A membership change started by this leader (join or autopilot) is in flight: one at a time. */
  private membershipBusy = false;
  /** This member found itself removed and is joining again. */
  private rejoining = false;
  private lastRemovedCheckMs = 0;
  private readonly startedAtMs = Date.now();
  private readonly joinTimeoutMs: number;

  private appliedIndex = 0;
  /** The core's hard state as of the last Ready (written with the next synced save). */
  private latestHardState: HardState;
  private confState: ConfState;
  private leaderId: NodeId = '';
  /** When this node last heard from the leader (X-Consul-LastContact). */
  private lastLeaderContactMs = 0;
  private role: Role = Role.Follower;
  private readonly names = new Map<NodeId, string>();
  /** Members of the configuration last applied (other than this node), as given to the transport. */
  private configuredMembers = new Set<NodeId>();

  /** Proposals refused by the core (no leader yet): retried each tick until their deadline. */
  private retryQueue: Array<{ id: string; attempt: () => void; table: PendingTable<unknown> }> = [];
  private readonly reads = new ReadIndexRounds(READ_INDEX_RETRY_MS, MAX_READ_ROUNDS_IN_FLIGHT);
  /** A ReadIndex round is due at the end of this event-loop turn (readBarrier). */
  private readRoundScheduled = false;
  /**
   * Reads whose index is known (lease or ReadIndex answer) waiting for the
   * state machine to reach it. close() and fail() reject them: the loop that
   * would apply the index is gone, and a caller must not wait forever.
   */
  private readonly appliedWaiters: Array<{
    index: number;
    resolve: () => void;
    reject: (err: Error) => void;
    /** Date.now() after which it fails (onTick); a ReadIndex answer does not bring the entries it names. */
    deadline?: number;
  }> = [];
  private readonly leaderWaiters = new Set<() => void>();
  /** Writes this follower handed to a leader, by proposal id: the leader they went to. */
  private readonly forwardedTo = new Map<string, NodeId>();
  /** Writes appended to this node's log while it led (node-local-entries.ts). */
  private readonly localEntries = new LocalEntries();
  /** Writes waiting for the end of this event-loop turn, to be proposed together. */
  private batchedProposals: Array<{ id: string; data: Uint8Array }> = [];

  private wakeLoop: (() => void) | undefined;
  /** The loop waits for the save of a Ready without a snapshot (see applyCommittedDuringSave). */
  private savingWithoutSnapshot = false;
  private wakeScheduled = false;
  private loopDone: Promise<void> = Promise.resolve();
  private tickTimer: NodeJS.Timeout | undefined;
  /** performance.now() at the last raft.tick(): ticks never come closer than RaftConfig.tickIntervalMs. */
  private lastRaftTickAtMs = Number.NEGATIVE_INFINITY;
  private dutyTimer: NodeJS.Timeout | undefined;
  private closing = false;
  /** The one close in progress or done: every close() call resolves when storage is closed. */
  private closeDone: Promise<void> | undefined;
  private fatal: Error | undefined;
  private readonly closeSignal: Promise<void>;
  private httpServer: ConsulHttpServer | undefined;
  /** The Consul API for KvClients over this node's libp2p (api/http-tunnel.ts); none on other transports. */
  private tunnelServer: ConsulHttpServer | undefined;
  private readonly fatalHandlers: Array<(err: Error) => void> = [];
  private signalClosed!: () => void;

  private constructor(
    options: Required<Pick<KvNodeOptions, 'id'>> & KvNodeOptions,
    raftId: NodeId,
    cluster: string,
    private readonly storage: LevelRaftStorage,
    private readonly raft: RawNode,
    private readonly transport: Transport,
  ) {
    this.name = options.id;
    this.raftId = raftId;
    this.cluster = cluster;
    this.log = options.log ?? silentLog;
    this.tickMs = options.tickMs ?? DEFAULT_TICK_MS;
    this.proposalTimeoutMs = options.proposalTimeoutMs ?? DEFAULT_PROPOSAL_TIMEOUT_MS;
    this.snapshotEveryEntries = options.snapshotEveryEntries ?? DEFAULT_SNAPSHOT_EVERY_ENTRIES;
    this.compactionStepEntries = options.compactionStepEntries ?? DEFAULT_COMPACTION_STEP_ENTRIES;
    this.joinTimeoutMs = options.joinTimeoutMs ?? Math.max(this.proposalTimeoutMs * 3, 15_000);
    const electionTimeoutMs = (options.electionTicks ?? DEFAULT_ELECTION_TICKS) * this.tickMs;
    this.membershipLimits = {
      maxVoters: options.maxVoters ?? Infinity,
      maxLearners: options.maxLearners ?? Infinity,
      deadVoterThresholdMs: options.deadVoterThresholdMs ?? DEFAULT_DEAD_VOTER_THRESHOLD_MS,
      healthyContactMs: Math.max(2 * electionTimeoutMs, 1_000),
      promoteMaxLagEntries: PROMOTE_MAX_LAG_ENTRIES,
    };
    this.reaper = new SessionReaper({
      nowMs: () => Date.now(),
      ...(options.sessionTtlGraceMultiplier ? { ttlGraceMultiplier: options.sessionTtlGraceMultiplier } : {}),
    });
    this.tombstoneReaper = new TombstoneReaper({
      nowMs: () => Date.now(),
      ...(options.tombstoneTtlMs !== undefined ? { tombstoneTtlMs: options.tombstoneTtlMs } : {}),
    });
    this.confState = storage.initialState().confState;
    this.latestHardState = storage.hardState();
    this.names.set(raftId, this.name);
    this.closeSignal = new Promise((resolve) => {
      this.signalClosed = resolve;
    });
  }

  /**
   * Opens (or creates) the node's data directory, starts the transport and
   * the Raft loop. A new directory bootstraps the cluster from `listen` +
   * `peers` (every initial member computes the same configuration), or joins
   * through `join`; an existing one resumes from its own state.
   */
  static async open(options: KvNodeOptions): Promise<KvNode> {
    const raftId = raftIdOf(options.listen);
    checkMembershipOptions(options);
    const cluster = options.cluster ?? DEFAULT_CLUSTER_NAME;
    const peers = (options.peers ?? []).map(raftIdOf).filter((p) => p !== raftId);
    await checkDataDir(options.dataDir);
    const storage = await LevelRaftStorage.open({
      dir: join(options.dataDir, RAFT_SUBDIR),
      nodeId: options.id,
      clusterId: cluster,
      raftId,
    });
    let transport: Transport | undefined;
    try {
      const fresh = storage.lastIndex() === 0 && storage.snapshot().metadata.index === 0;
      if (fresh && !options.join) {
        await storage.bootstrap([raftId, ...peers]);
      }
      transport = options.transport
        ? await options.transport(raftId)
        : await createLibp2pTransport(options, raftId, cluster, options.log ?? silentLog);
      const raft = new RawNode({
        id: raftId,
        storage,
        random: new SeededRandom(randomBytes(4).readUInt32LE(0)),
        electionTimeoutTicks: options.electionTicks ?? DEFAULT_ELECTION_TICKS,
        heartbeatTicks: options.heartbeatTicks ?? DEFAULT_HEARTBEAT_TICKS,
        // The FSM is restored from the stored snapshot, so the core must not re-deliver what it covers.
        appliedIndex: storage.snapshot().metadata.index,
        maxUncommittedEntriesBytes: MAX_UNCOMMITTED_ENTRIES_BYTES,
        preVote: true,
        checkQuorum: true,
        // Fewer messages under load: measured ~5 appends per follower per Ready at concurrency 64.
        coalesceMessages: true,
        leaseReads: options.leaseReads ?? true,
        // Monotonic, plus any time the machine spent suspended (lease.ts).
        leaseClockMs: suspendAwareClock(
          () => performance.now(),
          () => Date.now(),
        ),
        tickIntervalMs: (options.tickMs ?? DEFAULT_TICK_MS) * MIN_TICK_INTERVAL_SHARE,
        maxClockDriftRatio: options.maxClockDriftRatio ?? DEFAULT_MAX_CLOCK_DRIFT_RATIO,
      });
      const node = new KvNode(options, raftId, cluster, storage, raft, transport);
      try {
        node.tunnelServer = await serveHttpTunnel(transport, node, cluster);
        await node.start(peers, fresh && options.join ? [options.join].flat() : undefined);
        if (options.http !== undefined) {
          const { host, port } =
            typeof options.http === 'string'
              ? parseHostPort(options.http, { allowAnyPort: true })
              : options.http;
          node.httpServer = new ConsulHttpServer(node, { host, port });
          await node.httpServer.listen();
        }
      } catch (err) {
        await node.close().catch(() => {});
        throw err;
      }
      return node;
    } catch (err) {
      await transport?.stop().catch(() => {});
      await storage.close().catch(() => {});
      throw err;
    }
  }

  private async start(peers: NodeId[], joinThrough: string[] | undefined): Promise<void> {
    // Restore the FSM from the stored snapshot; the core re-delivers the committed entries after it.
    const snap = this.storage.snapshot();
    this.installSnapshotState(snap);
    for (const peer of peers) this.transport.setMember({ nodeId: peer, multiaddrs: [multiaddrOf(peer)] });
    this.syncTransportMembers();
    this.transport.onMessage((m) => this.onMessage(m));
    this.transport.onUnreachable((id) => {
      this.raft.reportUnreachable(id);
      this.kick();
    });
    this.transport.onSnapshotStatus((id, status) => {
      this.raft.reportSnapshot(id, status === 'finished');
      this.kick();
    });
    this.transport.handle(JOIN_PROTOCOL, (payload) => this.serveJoin(payload));
    this.transport.handle(LEAVE_PROTOCOL, (payload) => this.serveLeave(payload));
    this.transport.handle(TRANSFER_PROTOCOL, (payload) => this.serveTransfer(payload));
    this.transport.handle(INFO_PROTOCOL, () =>
      rpcPackr.pack({
        name: this.name,
        raftId: this.raftId,
        cluster: this.cluster,
        // A restarted member compares these with its own to learn that it was removed (checkStillMember).
        voters: this.confState.voters,
        learners: this.confState.learners,
        appliedIndex: this.appliedIndex,
      }),
    );
    await this.transport.start();
    this.loopDone = this.runLoop();
    this.tickTimer = setInterval(() => this.onTick(), this.tickMs);
    this.dutyTimer = setInterval(() => {
      this.leaderDuties();
      void this.checkStillMember();
    }, LEADER_DUTY_INTERVAL_MS);
    if (joinThrough) await this.joinCluster(joinThrough.map(raftIdOf).filter((id) => id !== this.raftId));
    else await this.rejoinIfRemoved(peers);
  }

  /**
   * A restart of a member that applied its own removal (it left gracefully,
   * or was removed while running): nobody contacts a non-member, so it joins
   * again now, as a learner with its data, before open() resolves, and open()
   * fails with KvMembershipFullError when there is no slot. (A member removed
   * while it was down does not know yet; checkStillMember finds out.)
   */
  private async rejoinIfRemoved(peers: NodeId[]): Promise<void> {
    const commitAtOpen = this.storage.initialState().hardState.commit;
    if (commitAtOpen === 0) return;
    // The configuration is what the replayed log says: wait for the replay (local, no network).
    await new Promise<void>((resolve) => {
      if (this.appliedIndex >= commitAtOpen) return resolve();
      const timer = setTimeout(resolve, this.proposalTimeoutMs);
      const done = () => {
        clearTimeout(timer);
        resolve();
      };
      // Closed during the replay: open() fails on its own further on.
      this.appliedWaiters.push({ index: commitAtOpen, resolve: done, reject: done });
      this.kick();
    });
    const own = this.confState;
    const members = [...own.voters, ...own.learners];
    if (members.length === 0 || members.includes(this.raftId)) return;
    this.log.info(
      { appliedIndex: this.appliedIndex, members },
      'this member was removed from the cluster (it left); joining again as a learner',
    );
    await this.joinCluster([...new Set([...members, ...peers])].filter((id) => id !== this.raftId));
  }

  // ------------------------------------------------------------------ loop

  /**
   * Wakes the loop once the current turn of the event loop is done (setImmediate
   * runs after every I/O callback of this poll phase), so that everything that
   * arrived together (messages from several peers, HTTP requests) goes into
   * one Ready: one LevelDB batch, one append per follower, instead of a Ready
   * for the first arrival and another for the rest.
   */
  private kick(): void {
    if (!this.wakeLoop || this.wakeScheduled) return;
    this.wakeScheduled = true;
    setImmediate(() => {
      this.wakeScheduled = false;
      const wake = this.wakeLoop;
      this.wakeLoop = undefined;
      wake?.();
    });
  }

  private async runLoop(): Promise<void> {
    try {
      while (!this.closing) {
        if (!this.raft.hasReady()) {
          await new Promise<void>((resolve) => {
            this.wakeLoop = resolve;
          });
          continue;
        }
        await this.handleReady(this.raft.ready());
        // The next Ready forms at the end of this event-loop turn, as after an
        // idle wake (kick), not in the middle of it: requests and messages read in
        // this turn (their proposals flushed at setImmediate too) join it.
        await new Promise<void>((resolve) => setImmediate(resolve));
      }
    } catch (err) {
      this.fail(err as Error);
    }
  }

  private async handleReady(rd: Ready): Promise<void> {
    if (rd.softState) this.onSoftState(rd.softState.leader, rd.softState.role);
    // Messages that promise nothing about this node's disk leave at once, in
    // parallel with the fsync (etcd does the same; Raft thesis §10.2.1): the
    // leader's appends and heartbeats, forwarded proposals and reads, and
    // heartbeat/read answers. Not when this Ready changes the term or vote
    // (every message speaks for the term, which must be durable first), and
    // never acks of entries (AppResp) or votes, which go after the save. The
    // leader counts its own unsaved entries towards a commit, but nothing can
    // observe that commit before this save ends: committed entries are applied,
    // and commit indexes sent, only from the next Ready on.
    const persisted = this.storage.hardState();
    const termAndVoteDurable =
      !rd.hardState || (rd.hardState.term === persisted.term && rd.hardState.vote === persisted.vote);
    let late = rd.messages;
    if (termAndVoteDurable && rd.messages.length > 0) {
      const early = rd.messages.filter((m) => SEND_BEFORE_PERSIST.has(m.type));
      if (early.length > 0) {
        late = rd.messages.filter((m) => !SEND_BEFORE_PERSIST.has(m.type));
        this.transport.send(early);
      }
    }
    // Committed entries this node already holds on disk (from earlier Readies)
    // are applied while this Ready's fsync runs: their callers need nothing of
    // it, and waiting would add a whole fsync to every write's latency. A
    // committed entry is never truncated, so what the log held before this
    // save stays. Entries that are only now being written (a one-voter
    // cluster commits at append) and anything after a snapshot wait.
    let appliedEarly = 0;
    if (!rd.snapshot) {
      const durableLastIndex = this.storage.lastIndex();
      const committed = rd.committedEntries;
      while (appliedEarly < committed.length && committed[appliedEarly]!.index <= durableLastIndex)
        appliedEarly++;
    }
    // 1. Durable before anything that depends on it leaves this node.
    // A commit-index-only update promises nothing (a restarted node learns the
    // commit index from the leader again), so it is not written on its own: it
    // rides along with the next write that must be durable anyway (and a
    // snapshot records a commit index at least its own, level-storage.ts).
    // That halves this node's LevelDB batches under load.
    if (rd.hardState) this.latestHardState = rd.hardState;
    let saved: Promise<void> | undefined;
    if (rd.mustSync) {
      saved = this.storage.save(
        {
          hardState: this.latestHardState,
          ...(rd.snapshot ? { snapshot: rd.snapshot } : {}),
          entries: rd.entries,
        },
        { sync: true },
      );
    }
    for (let i = 0; i < appliedEarly; i++) this.applyEntry(rd.committedEntries[i]!);
    if (appliedEarly > 0) this.resolveAppliedWaiters();
    if (saved) {
      // Commits learned while this fsync runs are applied as they arrive (onMessage), not after it.
      this.savingWithoutSnapshot = !rd.snapshot;
      try {
        await saved;
      } finally {
        this.savingWithoutSnapshot = false;
      }
    }
    // 2. Send.
    if (late.length > 0) this.transport.send(late);
    // 3. Apply.
    if (rd.snapshot) {
      this.installSnapshotState(rd.snapshot);
      this.log.info(
        { index: rd.snapshot.metadata.index, bytes: rd.snapshot.data.length },
        'installed snapshot from the leader',
      );
    }
    for (let i = appliedEarly; i < rd.committedEntries.length; i++) this.applyEntry(rd.committedEntries[i]!);
    for (const rs of rd.readStates) this.onReadState(rs.index, rs.requestCtx);
    this.resolveAppliedWaiters();
    // 4. Advance.
    this.raft.advance();
    this.maybeSnapshot();
  }

  private onSoftState(leader: NodeId, role: Role): void {
    const becameLeader = role === Role.Leader && this.role !== Role.Leader;
    const leaderChanged = leader !== this.leaderId;
    if (leaderChanged) this.log.info({ leader, role: ROLE_NAMES[role] }, 'raft leader changed');
    this.leaderId = leader;
    if (leaderChanged) {
      // The round in flight may have died with the old leader: its reads go again with the next one.
      this.reads.supersedeCurrent();
      this.failForwardedWrites(leader);
    }
    this.role = role;
    if (becameLeader) {
      // A new leader has heard from nobody yet: every member gets a full threshold before it counts as dead.
      this.lastHeardMs.clear();
      this.reaper.reset();
      this.tombstoneReaper.reset();
    }
    if (leader) {
      for (const wake of this.leaderWaiters) wake();
      this.leaderWaiters.clear();
      // Requests refused while there was no leader go now, not on the next tick.
      this.retrySubmissions();
      this.issueReadIndex();
    }
  }

  private installSnapshotState(snap: Snapshot): void {
    if (snap.metadata.index === 0) return;
    // The bootstrap snapshot carries no data: the empty state.
    this.fsm.restore(snap.data.length > 0 ? snap.data : new KvStateMachine().snapshot());
    this.appliedIndex = snap.metadata.index;
    this.confState = structuredClone(snap.metadata.confState);
    this.syncTransportMembers();
  }

  private applyEntry(entry: Entry): void {
    // Entries the restored snapshot already covers (a crash between snapshot and compaction).
    if (entry.index <= this.appliedIndex) return;
    const replaced = this.localEntries.replacedAt(entry.index, entry.term);
    if (replaced)
      this.proposals.reject(
        replaced,
        new KvNodeUnavailableError(
          `write not applied: this node appended it at index ${entry.index} while leading, and a newer leader replaced that entry; it was certainly not applied, retry it`,
        ),
      );
    if (entry.type === EntryType.ConfChange) {
      const cc = decodeConfChange(entry.data);
      this.confState = this.raft.applyConfChange(cc);
      const context = decodeConfContext(cc.context);
      for (const change of cc.changes) {
        if (context.name && change.type !== ConfChangeType.RemoveNode)
          this.names.set(change.nodeId, context.name);
      }
      this.syncTransportMembers();
      this.log.info(
        {
          node: this.name,
          index: entry.index,
          voters: this.confState.voters,
          learners: this.confState.learners,
        },
        'membership changed',
      );
      if (context.proposalId) this.confChanges.resolve(context.proposalId, entry.index);
    } else if (entry.data.length > 0) {
      // Empty normal entries are the leaders' no-ops.
      const envelope = decodeEnvelope(entry.data);
      const result = this.fsm.apply(entry.index, envelope?.payload ?? entry.data);
      if (envelope && this.proposals.resolve(envelope.proposalId, { index: entry.index, result }))
        this.forwardedTo.delete(envelope.proposalId);
    }
    this.appliedIndex = entry.index;
  }

  /**
   * Snapshots the state machine and compacts the log behind it, without
   * holding up the loop: the snapshot write is queued in order with the
   * Readies' saves (storage writes are serialized), and the compaction goes in
   * steps of compactionStepEntries, each one atomic batch that moves the log
   * start with its deletions, so the saves of new Readies go in between.
   */
  private maybeSnapshot(): void {
    if (this.snapshotting || this.closing) return;
    const snapIndex = this.storage.snapshot().metadata.index;
    if (this.appliedIndex - snapIndex < this.snapshotEveryEntries) return;
    const index = this.appliedIndex;
    const data = this.fsm.snapshot();
    const written = this.storage.createSnapshot(index, structuredClone(this.confState), data);
    this.snapshotting = (async () => {
      await written;
      // Compact to the snapshot itself: a restart then restores exactly the snapshot and replays what follows.
      for (let to = this.storage.firstIndex() - 1; to < index && !this.closing; ) {
        to = Math.min(index, to + this.compactionStepEntries);
        await this.storage.compact(to);
      }
      this.log.info({ index, bytes: data.length }, 'snapshot taken, log compacted');
    })()
      .catch((err) => this.fail(err as Error))
      .finally(() => {
        this.snapshotting = undefined;
      });
  }

  private onMessage(m: Message): void {
    if (this.closing) return;
    if (m.from === this.leaderId) this.lastLeaderContactMs = Date.now();
    this.lastHeardMs.set(m.from, Date.now());
    try {
      this.raft.step(m);
    } catch (err) {
      if (err instanceof RaftInvariantError) {
        this.fail(err);
        return;
      }
      this.log.warn({ from: m.from, type: m.type, err: (err as Error).message }, 'raft message refused');
    }
    if (this.savingWithoutSnapshot) this.applyCommittedDuringSave();
    this.kick();
  }

  /**
   * While the loop waits for an fsync, an ack (at the leader) or a commit
   * index (at a follower) can commit more entries. They are applied now, in
   * order, and their writers answered, instead of after the fsync when the
   * loop gets to the next Ready: under load the loop spends most of its time
   * in that wait (measured: the leader ~650 ms of every second at ~1700
   * puts/s). Only entries persisted by earlier Readies
   * (RaftLog.committedStableIndex): a snapshot may be taken at the applied
   * index, and must match what the storage holds there; entries of the save
   * in flight wait for it. They come from the core's log, not the storage's
   * view. The Ready that later lists them finds them applied (applyEntry
   * skips them). Stops before a membership change, which goes through the
   * core only in the Ready order.
   */
  private applyCommittedDuringSave(): void {
    const log = this.raft.core.log;
    const upTo = log.committedStableIndex();
    if (upTo <= this.appliedIndex || this.appliedIndex + 1 < log.firstIndex()) return;
    const entries = log.slice(this.appliedIndex + 1, upTo + 1, Number.MAX_SAFE_INTEGER);
    let applied = 0;
    for (const e of entries) {
      if (e.type === EntryType.ConfChange) break;
      this.applyEntry(e);
      applied++;
    }
    if (applied > 0) this.resolveAppliedWaiters();
  }

  private onTick(): void {
    if (this.closing) return;
    const nowMs = performance.now();
    if (nowMs - this.lastRaftTickAtMs >= this.tickMs * MIN_TICK_INTERVAL_SHARE) {
      this.lastRaftTickAtMs = nowMs;
      this.raft.tick();
    }
    this.retrySubmissions();
    // Forwarded writes that timed out are forgotten here (the others leave as they are applied).
    if (this.forwardedTo.size > this.proposals.size)
      for (const id of this.forwardedTo.keys()) if (!this.proposals.has(id)) this.forwardedTo.delete(id);
    if (this.localEntries.size > this.proposals.size)
      this.localEntries.prune(this.appliedIndex, (id) => this.proposals.has(id));
    const now = Date.now();
    this.reads.retryIfOverdue(now);
    this.reads.expire(now, () => this.unavailable('linearizable read', this.proposalTimeoutMs));
    this.expireAppliedWaiters(now);
    this.issueReadIndex();
    this.kick();
  }

  private retrySubmissions(): void {
    const retries = this.retryQueue;
    this.retryQueue = [];
    for (const r of retries) if (r.table.has(r.id)) this.submit(r.id, r.table, r.attempt);
  }

  private fail(err: Error): void {
    if (this.fatal || this.closing) return;
    this.fatal = err;
    this.log.error({ err: err.message, stack: err.stack }, 'KV node stopped after a fatal error');
    const failure = new KvNodeUnavailableError(`KV node ${this.name} stopped: ${err.message}`, {
      cause: err,
    });
    this.proposals.rejectAll(failure);
    this.confChanges.rejectAll(failure);
    this.reads.rejectAll(failure);
    this.rejectAppliedWaiters(failure);
    for (const handler of this.fatalHandlers) handler(err);
    void this.close();
  }

  /**
   * Called once if the node stops on its own (a storage write failed, an
   * invariant broke): it must not go on with state it cannot trust.
   */
  onFatal(handler: (err: Error) => void): void {
    this.fatalHandlers.push(handler);
  }

  /** "host:port" of the Consul HTTP API, when serving one. */
  httpAddress(): string | undefined {
    if (!this.httpServer) return undefined;
    const a = this.httpServer.address();
    return formatHostPort({ host: a.address, port: a.port });
  }

  // -------------------------------------------------------- proposals, reads

  private assertOpen(what: string): void {
    if (this.fatal)
      throw new KvNodeUnavailableError(`${what}: KV node ${this.name} stopped: ${this.fatal.message}`);
    if (this.closing) throw new KvNodeClosedError(what);
  }

  private unavailable(what: string, timeoutMs: number): Error {
    const leader = this.leaderId ? `the leader is ${this.leaderId}` : 'no leader is known';
    return new KvNodeUnavailableError(
      `${what} not completed within ${timeoutMs} ms: ${leader}; a quorum of the ${this.confState.voters.length} voters (${this.confState.voters.join(', ')}) must be reachable. A timed-out write may still be applied later.`,
    );
  }

  /** Runs `attempt` (a core call); a refusal for lack of a leader is retried each tick until the waiter's deadline. */
  private submit(id: string, table: PendingTable<unknown>, attempt: () => void): void {
    try {
      attempt();
      if (table === (this.proposals as PendingTable<unknown>)) this.noteProposed([id]);
      this.kick();
    } catch (err) {
      if (err instanceof RequestDroppedError) this.retryQueue.push({ id, attempt, table });
      else table.reject(id, err as Error);
    }
  }

  /**
   * Proposals the core just accepted: appended here if it leads, else
   * forwarded to the leader it knows. Asked of the core, not of this.role /
   * this.leaderId: those lag while the loop waits for an fsync, and a write
   * recorded against the old leader would be failed when the loop catches up.
   */
  private noteProposed(proposalIds: string[]): void {
    const core = this.raft.core;
    if (core.role === Role.Leader) this.localEntries.appended(proposalIds, core.log.lastIndex(), core.term);
    else for (const id of proposalIds) this.forwardedTo.set(id, core.lead);
  }

  /** Replicates one FSM command; resolves with the index it was applied at and the FSM's result. */
  async propose(command: Command): Promise<{ index: number; result: ApplyResult }> {
    this.assertOpen('write');
    if (this.proposals.size >= MAX_PENDING_PROPOSALS) {
      throw new KvNodeUnavailableError(
        `write refused: ${MAX_PENDING_PROPOSALS} writes are already waiting for their commit on node ${this.name}; retry later`,
      );
    }
    let payload: Uint8Array;
    try {
      payload = encodeCommand(command);
    } catch (err) {
      // The codec refuses what every replica would refuse (value size, flags, op count): bad input.
      if (err instanceof CommandDecodeError)
        throw new KvInputError(`write refused: ${err.message}`, { cause: err });
      throw err;
    }
    const id = this.ids.next();
    const data = encodeEnvelope({ proposalId: id, payload });
    const done = this.proposals.wait(id, this.proposalTimeoutMs, () =>
      this.unavailable('write', this.proposalTimeoutMs),
    );
    this.batchedProposals.push({ id, data });
    if (this.batchedProposals.length === 1) setImmediate(() => this.flushProposals());
    return done;
  }

  /**
   * Writes made during one turn of the event loop (typically one per HTTP
   * request read in that turn) go to the core as one proposal: one message
   * when forwarded, one append and one MsgApp per follower at the leader,
   * instead of one each.
   */
  private flushProposals(): void {
    const all = this.batchedProposals;
    this.batchedProposals = [];
    if (this.closing) return; // close() rejects the waiters
    const table = this.proposals as PendingTable<unknown>;
    for (let start = 0; start < all.length; start += MAX_PROPOSALS_PER_BATCH) {
      const batch = all.slice(start, start + MAX_PROPOSALS_PER_BATCH).filter((p) => table.has(p.id));
      if (batch.length === 0) continue;
      try {
        this.raft.proposeBatch(batch.map((p) => p.data));
        this.noteProposed(batch.map((p) => p.id));
      } catch (err) {
        // Refused as a whole (no leader yet, too many uncommitted bytes): each retries on its own.
        for (const p of batch) {
          if (err instanceof RequestDroppedError)
            this.retryQueue.push({ id: p.id, attempt: () => this.raft.propose(p.data), table });
          else table.reject(p.id, err as Error);
        }
      }
    }
    this.kick();
  }

  /**
   * Resolves once this node's state is at least as new as every write
   * acknowledged anywhere before the call (ReadIndex). Concurrent reads share
   * one ReadIndex round.
   */
  readBarrier(consistency: Consistency = 'default'): Promise<void> {
    this.assertOpen('read');
    if (consistency === 'stale') return Promise.resolve();
    // At a leader whose lease holds: no round, only wait for the state machine to reach the commit index.
    const leaseIndex = this.raft.leaseRead();
    if (leaseIndex !== undefined) {
      if (this.appliedIndex >= leaseIndex) return Promise.resolve();
      return new Promise<void>((resolve, reject) =>
        this.appliedWaiters.push({ index: leaseIndex, resolve, reject }),
      );
    }
    return new Promise<void>((resolve, reject) => {
      this.reads.add({ resolve, reject, deadline: Date.now() + this.proposalTimeoutMs });
      // Reads that arrive in one turn of the event loop (typically one per
      // HTTP request parsed in it) share the round started at its end.
      if (!this.readRoundScheduled) {
        this.readRoundScheduled = true;
        setImmediate(() => {
          this.readRoundScheduled = false;
          this.issueReadIndex();
        });
      }
    });
  }

  /**
   * Starts a ReadIndex round for every read waiting, unless
   * MAX_READ_ROUNDS_IN_FLIGHT are already out: then they wait and go together
   * in the next round, which starts as soon as one is answered. One round
   * (one heartbeat exchange with a quorum) thus serves any number of
   * concurrent reads, instead of one round per read.
   */
  private issueReadIndex(): void {
    if (this.closing) return;
    if (!this.leaderId) return; // the core would drop it; retried on the next tick or leader change
    const waiters = this.reads.takeNextRound(); // none while the most rounds are out: they go with the next
    if (!waiters) return;
    const ctx = randomBytes(8);
    try {
      this.raft.readIndex(ctx);
      this.reads.started(ctx.toString('hex'), waiters, Date.now());
      this.kick();
    } catch (err) {
      if (!(err instanceof RequestDroppedError))
        this.log.warn({ err: (err as Error).message }, 'read index refused');
      this.reads.notStarted(waiters);
    }
  }

  /**
   * Writes forwarded to a leader that is no longer the leader may have died
   * with it (a forwarded proposal is not retransmitted). Rather than leave the
   * caller waiting for the full proposal timeout, they fail now with the same
   * "outcome unknown" error a timeout gives: the write may still be committed
   * by the new leader, so a caller retries it as it would after a timeout.
   */
  private failForwardedWrites(newLeader: NodeId): void {
    for (const [id, leader] of this.forwardedTo) {
      if (leader === newLeader) continue;
      this.forwardedTo.delete(id);
      this.proposals.reject(
        id,
        new KvNodeUnavailableError(
          `write forwarded to leader ${leader || '(none)'} not confirmed: leadership moved to ${newLeader || 'no leader yet'}; it may or may not have been applied, retry it (as after a timeout)`,
        ),
      );
    }
  }

  private onReadState(index: number, ctx: Uint8Array): void {
    // Any answer counts, also one to a round already issued again (node-reads.ts).
    const waiters = this.reads.answered(Buffer.from(ctx).toString('hex'));
    if (!waiters) return;
    if (this.appliedIndex >= index) for (const w of waiters) w.resolve();
    else
      for (const w of waiters)
        this.appliedWaiters.push({ index, resolve: w.resolve, reject: w.reject, deadline: w.deadline });
    this.issueReadIndex();
  }

  /** Answered reads whose entries did not arrive in time (cut off from the leader) fail as unanswered ones do. */
  private expireAppliedWaiters(nowMs: number): void {
    for (const w of this.takeAppliedWaiters((w) => w.deadline !== undefined && w.deadline <= nowMs))
      w.reject(this.unavailable('linearizable read', this.proposalTimeoutMs));
  }

  private rejectAppliedWaiters(err: Error): void {
    for (const w of this.appliedWaiters.splice(0)) w.reject(err);
  }

  private resolveAppliedWaiters(): void {
    for (const w of this.takeAppliedWaiters((w) => w.index <= this.appliedIndex)) w.resolve();
  }

  /** Removes and returns the waiters that `due` picks, in the order they came. */
  private takeAppliedWaiters(due: (w: (typeof this.appliedWaiters)[number]) => boolean) {
    if (this.appliedWaiters.length === 0) return []; // the usual case, on every Ready
    const taken: typeof this.appliedWaiters = [];
    let kept = 0;
    for (const w of this.appliedWaiters) {
      if (due(w)) taken.push(w);
      else this.appliedWaiters[kept++] = w;
    }
    this.appliedWaiters.length = kept;
    return taken;
  }

  // ------------------------------------------------------- KvBackend (HTTP)

  get nodeName(): string {
    return this.name;
  }

  nowMs(): number {
    return Date.now();
  }

  apply(command: Command): Promise<AppliedCommand> {
    return this.propose(command);
  }

  async read(consistency: Consistency): Promise<ReadView> {
    await this.readBarrier(consistency);
    const isLeader = this.role === Role.Leader;
    return {
      state: this.fsm,
      knownLeader: this.leaderId !== '',
      lastContactMs: isLeader || this.lastLeaderContactMs === 0 ? 0 : Date.now() - this.lastLeaderContactMs,
    };
  }

  watch(target: WatchTarget): Watch {
    return this.fsm.watch(target);
  }

  /** Raft address of the current leader, '' when none is known. */
  async leader(): Promise<string> {
    return this.leaderId;
  }

  /** Raft addresses of the voters. */
  async peers(): Promise<string[]> {
    return [...this.confState.voters];
  }

  // ------------------------------------------------------------- KV API

  /** The applied state (for blocking queries and the HTTP layer). Read after readBarrier(). */
  get state(): KvStateReader {
    return this.fsm;
  }

  async get(key: string, options: ReadOptions = {}): Promise<DirEntry | null> {
    checkKey(key, 'key', 'get', true);
    await this.readBarrier(consistencyOf(options));
    return this.fsm.get(key).value;
  }

  async getIndexed(key: string, options: ReadOptions = {}): Promise<Indexed<DirEntry | null>> {
    checkKey(key, 'key', 'get', true);
    await this.readBarrier(consistencyOf(options));
    return this.fsm.get(key);
  }

  async list(prefix: string, options: ReadOptions = {}): Promise<DirEntry[]> {
    checkKey(prefix, 'prefix', 'list');
    await this.readBarrier(consistencyOf(options));
    return this.fsm.list(prefix).value;
  }

  async put(key: string, value: Uint8Array, options: PutOptions = {}): Promise<boolean> {
    checkKey(key, 'key', 'put');
    let op: KvOp;
    const base = { key, value, flags: options.flags ?? 0n, index: 0, session: '' };
    if (options.acquire) op = { ...base, verb: 'lock', session: options.acquire };
    else if (options.release) op = { ...base, verb: 'unlock', session: options.release };
    else if (options.cas !== undefined) op = { ...base, verb: 'cas', index: options.cas };
    else op = { ...base, verb: 'set' };
    return this.kvCommand(op);
  }

  /** Check-and-set: writes only if the key's ModifyIndex is `index` (0 = only if absent). */
  cas(key: string, value: Uint8Array, index: number): Promise<boolean> {
    return this.put(key, value, { cas: index });
  }

  async delete(key: string, options: DeleteOptions = {}): Promise<boolean> {
    checkKey(key, options.recurse ? 'prefix' : 'key', 'delete');
    const base = { key, value: new Uint8Array(0), flags: 0n, index: 0, session: '' };
    let op: KvOp;
    if (options.recurse) op = { ...base, verb: 'delete-tree' };
    else if (options.cas !== undefined) op = { ...base, verb: 'delete-cas', index: options.cas };
    else op = { ...base, verb: 'delete' };
    return this.kvCommand(op);
  }

  private async kvCommand(op: KvOp): Promise<boolean> {
    const { result } = await this.propose({ type: 'kv', op, nowMs: Date.now() });
    if (result.type === 'kv') return result.ok;
    throw new Error(
      result.type === 'rejected' ? result.error : `unexpected result ${result.type} for a kv command`,
    );
  }

  /** All-or-nothing transaction of up to 64 operations (Consul /v1/txn verbs). Read-only ones skip Raft. */
  async txn(
    ops: Array<Partial<KvOp> & Pick<KvOp, 'verb' | 'key'>>,
    options: ReadOptions = {},
  ): Promise<TxnResult> {
    const full: KvOp[] = ops.map((o) => ({
      verb: o.verb,
      key: o.key,
      value: o.value ?? new Uint8Array(0),
      flags: o.flags ?? 0n,
      index: o.index ?? 0,
      session: o.session ?? '',
    }));
    const writes = full.some(
      (o) => !['get', 'get-tree', 'check-index', 'check-session', 'check-not-exists'].includes(o.verb),
    );
    if (!writes) {
      await this.readBarrier(consistencyOf(options));
      const r = this.fsm.readTxn(full);
      return r.ok
        ? { ok: true, index: this.fsm.kvIndex, results: r.results }
        : { ok: false, index: this.fsm.kvIndex, errors: r.errors };
    }
    const { index, result } = await this.propose({ type: 'txn', ops: full, nowMs: Date.now() });
    if (result.type === 'rejected') throw new Error(result.error);
    if (result.type !== 'txn') throw new Error(`unexpected result ${result.type} for a transaction`);
    return result.ok
      ? { ok: true, index, results: result.results }
      : { ok: false, index, errors: result.errors };
  }

  /**
   * Blocking-query watch of a prefix: yields the listing now (or once the
   * prefix's index passes `index`), then every time it moves. Served from this
   * node's applied state, so it keeps going across leader changes. Ends when
   * `signal` aborts or the node closes.
   */
  async *watchPrefix(prefix: string, options: WatchOptions = {}): AsyncIterable<WatchEvent> {
    checkKey(prefix, 'prefix', 'watch');
    const target = { kind: 'prefix', prefix } as const;
    for await (const { index, value } of watchLoop(
      this.watchSource(),
      target,
      () => this.fsm.list(prefix),
      options,
    ))
      yield { index, entries: value };
  }

  /**
   * Watch of one key, like watchPrefix: yields the key's entry now (null if
   * absent), then each time it is written or deleted. While the key stays
   * absent, writes to other keys do not wake it.
   *
   *   for await (const { entry } of node.watchKey('config/x', { signal })) ...
   */
  async *watchKey(key: string, options: WatchOptions = {}): AsyncIterable<KeyWatchEvent> {
    checkKey(key, 'key', 'watch');
    const target = { kind: 'key', key } as const;
    // An absent key stays absent through writes to other keys (the store index moves): not news.
    const worthYielding = (entry: DirEntry | null, previous: DirEntry | null | undefined) =>
      !(entry === null && previous === null);
    for await (const { index, value } of watchLoop(
      this.watchSource(),
      target,
      () => this.fsm.get(key),
      options,
      worthYielding,
    ))
      yield { index, entry: value };
  }

  private watchSource(): WatchSource {
    return { watch: (t) => this.fsm.watch(t), closed: this.closeSignal, isClosing: () => this.closing };
  }

  async createSession(options: CreateSessionOptions = {}): Promise<string> {
    checkSessionOptions(options);
    const id = randomUuid();
    const ttlMs = options.ttlMs ?? 0;
    const { result } = await this.propose({
      type: 'session-create',
      session: {
        id,
        name: options.name ?? '',
        node: options.node ?? this.name,
        lockDelayMs: options.lockDelayMs ?? 15_000,
        behavior: options.behavior ?? 'release',
        ttlMs,
        ttl: ttlMs > 0 ? `${ttlMs / 1000}s` : '',
        nodeChecks: null,
      },
      nowMs: Date.now(),
    });
    if (result.type === 'rejected') throw new Error(result.error);
    if (result.type !== 'session-create')
      throw new Error(`unexpected result ${result.type} for session create`);
    return result.id;
  }

  /** Renews a session's TTL; null when it no longer exists (expired or destroyed). */
  async renewSession(id: string): Promise<SessionRecord | null> {
    const { result } = await this.propose({ type: 'session-renew', id, nowMs: Date.now() });
    if (result.type === 'rejected') throw new Error(result.error);
    if (result.type !== 'session-renew')
      throw new Error(`unexpected result ${result.type} for session renew`);
    return result.session;
  }

  /** Destroys a session (its locks are released or its keys deleted, per its behavior). False when it did not exist. */
  async destroySession(id: string): Promise<boolean> {
    const { result } = await this.propose({ type: 'session-destroy', id, nowMs: Date.now() });
    if (result.type === 'rejected') throw new Error(result.error);
    if (result.type !== 'session-destroy')
      throw new Error(`unexpected result ${result.type} for session destroy`);
    return result.existed;
  }

  async sessions(options: ReadOptions = {}): Promise<SessionRecord[]> {
    await this.readBarrier(consistencyOf(options));
    return this.fsm.sessions().value;
  }

  async session(id: string, options: ReadOptions = {}): Promise<SessionRecord | null> {
    await this.readBarrier(consistencyOf(options));
    return this.fsm.session(id).value;
  }

  // ------------------------------------------------------------ membership

  members(): MemberInfo[] {
    const out: MemberInfo[] = [];
    const add = (id: NodeId, role: MemberRole) =>
      out.push({ id, address: id, name: this.names.get(id) ?? '', role, leader: id === this.leaderId });
    for (const id of this.confState.voters) add(id, 'voter');
    for (const id of this.confState.learners) add(id, 'learner');
    return out;
  }

  /** members() with names of other members asked over the transport where unknown. */
  async membersWithNames(timeoutMs = 1_000): Promise<MemberInfo[]> {
    const unknown = this.members().filter((m) => !m.name);
    await Promise.all(
      unknown.map(async (m) => {
        try {
          const reply = rpcPackr.unpack(
            await this.transport.request(m.id, INFO_PROTOCOL, new Uint8Array(0), { timeoutMs }),
          ) as {
            name?: unknown;
          };
          if (typeof reply.name === 'string') this.names.set(m.id, reply.name);
        } catch {
          // Down members keep an empty name.
        }
      }),
    );
    return this.members();
  }

  /**
   * Adds the member listening on `address` as a learner; the leader promotes it
   * to voter once it has caught up (while voters < maxVoters). Resolves when
   * the addition is applied here. Refused with KvMembershipFullError when the
   * learner slots (maxLearners, plus open voter slots) are taken.
   */
  async addMember(address: string, options: { name?: string } = {}): Promise<MemberInfo> {
    const id = raftIdOf(address);
    if (this.confState.voters.includes(id) || this.confState.learners.includes(id)) {
      return this.members().find((m) => m.id === id)!;
    }
    const full = joinRefusal(this.confState, this.membershipLimits);
    if (full) {
      const { maxVoters, maxLearners } = this.membershipLimits;
      throw new KvMembershipFullError(`cannot add ${id}: ${full}; run it as a client of the store`, {
        maxVoters,
        maxLearners,
      });
    }
    await this.confChange('add member', [{ type: ConfChangeType.AddLearner, nodeId: id }], options.name);
    return (
      this.members().find((m) => m.id === id) ?? {
        id,
        address: id,
        name: options.name ?? '',
        role: 'learner',
        leader: false,
      }
    );
  }

  /** Makes a learner a voter. */
  async promote(id: NodeId): Promise<void> {
    if (this.confState.voters.includes(id)) return;
    if (!this.confState.learners.includes(id))
      throw new KvMembershipError(
        `cannot promote ${id}: it is not a learner of this cluster (members: ${this.memberList()})`,
      );
    await this.confChange('promote member', [{ type: ConfChangeType.AddVoter, nodeId: id }]);
  }

  async removeMember(id: NodeId): Promise<void> {
    const known = this.confState.voters.includes(id) || this.confState.learners.includes(id);
    if (!known)
      throw new KvMembershipError(
        `cannot remove ${id}: not a member of this cluster (members: ${this.memberList()})`,
      );
    if (this.confState.voters.length === 1 && this.confState.voters[0] === id) {
      throw new KvMembershipError(
        `cannot remove ${id}: it is the last voter; the cluster would have no quorum`,
      );
    }
    await this.confChange('remove member', [{ type: ConfChangeType.RemoveNode, nodeId: id }]);
  }

  /**
   * Asks the leader to hand leadership to `id` (a voter); resolves when `id`
   * leads, rejects after the proposal timeout. Called on a follower, it asks
   * the leader over TRANSFER_PROTOCOL: the Raft core would forward the request
   * naming the transferee as its sender (etcd's convention), which the
   * transport drops as a forged sender.
   */
  async transferLeadership(id: NodeId): Promise<void> {
    this.assertOpen('leadership transfer');
    if (!this.confState.voters.includes(id))
      throw new KvMembershipError(
        `cannot transfer leadership to ${id}: not a voter (voters: ${this.confState.voters.join(', ')})`,
      );
    const deadline = Date.now() + this.proposalTimeoutMs;
    while (this.leaderId !== id) {
      if (Date.now() > deadline)
        throw this.unavailable(`leadership transfer to ${id}`, this.proposalTimeoutMs);
      if (this.role === Role.Leader) {
        try {
          this.raft.transferLeadership(id);
          this.kick();
        } catch (err) {
          if (!(err instanceof RequestDroppedError)) throw err;
        }
      } else if (this.leaderId) {
        const request = rpcPackr.pack({ raftId: id, cluster: this.cluster });
        await this.transport
          .request(this.leaderId, TRANSFER_PROTOCOL, request, { timeoutMs: this.tickMs * 10 })
          .catch((err) =>
            this.log.debug({ err: (err as Error).message }, 'leadership transfer request failed; retrying'),
          );
      }
      await new Promise((r) => setTimeout(r, this.tickMs * 2));
    }
  }

  /**
   * A follower's transferLeadership(): the leader starts the transfer to
   * `raftId` (the caller watches for the result); another member passes the
   * request on, as for joins.
   */
  private async serveTransfer(payload: Uint8Array): Promise<Uint8Array> {
    const req = await this.membershipRequest(
      'leadership transfer',
      payload,
      TRANSFER_PROTOCOL,
      this.tickMs * 10,
    );
    if ('answer' in req) return req.answer;
    try {
      this.raft.transferLeadership(req.raftId);
      this.kick();
    } catch (err) {
      if (!(err instanceof RequestDroppedError)) throw err;
    }
    return rpcPackr.pack({ ok: true });
  }

  private memberList(): string {
    return [...this.confState.voters, ...this.confState.learners.map((l) => `${l} (learner)`)].join(', ');
  }

  private async confChange(what: string, changes: ConfChange['changes'], name?: string): Promise<void> {
    this.assertOpen(what);
    const proposalId = this.ids.next();
    const cc: ConfChange = {
      transition: ConfChangeTransition.Auto,
      changes,
      context: rpcPackr.pack({ proposalId, ...(name ? { name } : {}) }),
    };
    const done = this.confChanges.wait(proposalId, this.proposalTimeoutMs, () =>
      this.unavailable(what, this.proposalTimeoutMs),
    );
    this.submit(proposalId, this.confChanges as PendingTable<unknown>, () => this.raft.proposeConfChange(cc));
    await done;
  }

  private syncTransportMembers(): void {
    const ids = new Set([
      ...this.confState.voters,
      ...this.confState.learners,
      ...this.confState.votersOutgoing,
      ...this.confState.learnersNext,
    ]);
    ids.delete(this.raftId);
    const known = new Set(this.transport.members().map((m) => m.nodeId));
    for (const id of ids)
      if (!known.has(id)) this.transport.setMember({ nodeId: id, multiaddrs: [multiaddrOf(id)] });
    // A member that left the configuration is forgotten with the identity it had, so
    // the address can come back as a new node (a wiped disk means a new peer key).
    // Only members that were in an applied configuration: addresses learned
    // otherwise (join target, peer handshakes) are not this list's to remove.
    // Not at once: the messages already queued for it (the commit of its own removal, which
    // tells a leaving member it is out) go first.
    for (const id of this.configuredMembers)
      if (!ids.has(id)) {
        this.names.delete(id);
        setTimeout(() => {
          if (!this.configuredMembers.has(id) && !this.closing) this.transport.removeMember(id);
        }, FORGET_REMOVED_MEMBER_AFTER_MS).unref();
      }
    this.configuredMembers = ids;
  }

  /** Leader only: expire sessions whose TTL ran out, reap old tombstones, run the autopilot (autopilot.ts). */
  private leaderDuties(): void {
    if (this.closing || this.role !== Role.Leader) return;
    for (const command of [...this.reaper.expired(this.fsm), ...this.tombstoneReaper.due(this.fsm)]) {
      this.propose(command).catch((err) =>
        this.log.warn(
          { command: command.type, err: (err as Error).message },
          'leader maintenance command not committed',
        ),
      );
    }
    this.runAutopilot();
  }

  private runAutopilot(): void {
    if (this.membershipBusy) return;
    const now = Date.now();
    const members = new Set([...this.confState.voters, ...this.confState.learners]);
    for (const id of this.lastHeardMs.keys()) if (!members.has(id)) this.lastHeardMs.delete(id);
    for (const [id, atMs] of this.leaveRequestedMs)
      if (!members.has(id) || now - atMs > LEAVE_REQUEST_TTL_MS) this.leaveRequestedMs.delete(id);
    const status = this.raft.status();
    const health = new Map<NodeId, MemberHealth>();
    for (const id of members) {
      if (id === this.raftId) continue;
      // First seen by this leader (new member, new leader): the threshold counts from now. A member
      // receiving a snapshot answers only once it is installed: the stream counts as contact.
      const progress = status.progress?.[id];
      if (!this.lastHeardMs.has(id) || progress?.state === 'snapshot') this.lastHeardMs.set(id, now);
      health.set(id, {
        lastHeardAgoMs: now - this.lastHeardMs.get(id)!,
        matchIndex: progress?.match ?? 0,
      });
    }
    const action = nextMembershipAction({
      self: this.raftId,
      voters: this.confState.voters,
      learners: this.confState.learners,
      health,
      commitIndex: status.commit,
      limits: this.membershipLimits,
      leaving: new Set(this.leaveRequestedMs.keys()),
    });
    if (action.type === 'none') return;
    this.log.info({ member: action.id, reason: action.reason }, `autopilot: ${action.type} member`);
    this.membershipBusy = true;
    const change = {
      promote: () => this.promote(action.id),
      remove: () => this.removeMember(action.id),
      // A voter made a learner again (AddLearner on a voter demotes it).
      demote: () =>
        this.confChange('demote member', [{ type: ConfChangeType.AddLearner, nodeId: action.id }]),
    }[action.type];
    change().then(
      () => {
        this.membershipBusy = false;
        // The next step (remove after promote) goes at once, not at the next duty tick.
        if (!this.closing && this.role === Role.Leader) this.runAutopilot();
      },
      (err) => {
        this.membershipBusy = false;
        this.log.info(
          { member: action.id, err: (err as Error).message },
          `autopilot: ${action.type} not applied; retried later`,
        );
      },
    );
  }

  /**
   * The common part of a join, leave or leadership transfer request: its
   * fields checked, and, on a node that does not lead, the leader's answer (it
   * alone decides membership and starts transfers).
   */
  private async membershipRequest(
    what: 'join' | 'leave' | 'leadership transfer',
    payload: Uint8Array,
    protocol: string,
    forwardTimeoutMs: number,
  ): Promise<{ raftId: string; name?: unknown } | { answer: Uint8Array }> {
    const req = rpcPackr.unpack(payload) as { raftId?: unknown; name?: unknown; cluster?: unknown };
    if (typeof req.raftId !== 'string' || typeof req.cluster !== 'string')
      throw new Error(`malformed ${what} request`);
    if (req.cluster !== this.cluster) {
      throw new Error(`this member belongs to cluster "${this.cluster}", not "${req.cluster}"`);
    }
    if (this.role === Role.Leader) return { raftId: req.raftId, name: req.name };
    if (!this.leaderId) throw new Error(`no leader is known at ${this.raftId} yet; retry`);
    return {
      answer: await this.transport.request(this.leaderId, protocol, payload, { timeoutMs: forwardTimeoutMs }),
    };
  }

  private async serveJoin(payload: Uint8Array): Promise<Uint8Array> {
    // The leader decides, one change at a time, so two joins cannot both take the last slot.
    const req = await this.membershipRequest('join', payload, JOIN_PROTOCOL, this.proposalTimeoutMs + 1_000);
    if ('answer' in req) return req.answer;
    if (this.membershipBusy) throw new Error('another membership change is in progress; retry');
    this.membershipBusy = true;
    try {
      await this.addMember(req.raftId, typeof req.name === 'string' ? { name: req.name } : {});
    } catch (err) {
      if (!(err instanceof KvMembershipFullError)) throw err;
      return rpcPackr.pack({ ok: false, full: err.message, limits: err.limits });
    } finally {
      this.membershipBusy = false;
    }
    return rpcPackr.pack({ ok: true, leader: this.leaderId });
  }

  /**
   * A member asks to leave (leave()): the leader notes it, and its autopilot
   * replaces and removes the member (autopilot.ts, leaving members). The
   * answer says whether the member is still in the configuration; it asks
   * again until it is not. A follower passes the request on to the leader.
   */
  private async serveLeave(payload: Uint8Array): Promise<Uint8Array> {
    const req = await this.membershipRequest('leave', payload, LEAVE_PROTOCOL, LEAVE_ANSWER_WAIT_MS + 500);
    if ('answer' in req) return req.answer;
    const id = req.raftId;
    if (this.isMember(id)) {
      const first = !this.leaveRequestedMs.has(id);
      this.leaveRequestedMs.set(id, Date.now());
      if (first) {
        this.log.info({ member: id }, 'member asked to leave');
        this.runAutopilot();
      }
    }
    // The answer waits a while for the removal: once applied here, this node forgets the member's
    // identity and refuses its next requests (the stream of this one stays open for the answer).
    const answerBy = Date.now() + LEAVE_ANSWER_WAIT_MS;
    while (this.isMember(id) && Date.now() < answerBy && this.role === Role.Leader && !this.closing)
      await new Promise((r) => setTimeout(r, this.tickMs));
    // Still asking while this answer was held: the next request follows within LEAVE_RETRY_MS.
    if (this.leaveRequestedMs.has(id)) this.leaveRequestedMs.set(id, Date.now());
    return rpcPackr.pack({ member: this.isMember(id) });
  }

  private isMember(id: NodeId): boolean {
    return this.confState.voters.includes(id) || this.confState.learners.includes(id);
  }

  /**
   * Leaves the cluster gracefully (Consul's `leave`): if this node leads, it
   * hands leadership to another voter; then the leader removes it, promoting
   * a healthy learner in its place first when there is one, so the cluster
   * keeps its voter count (autopilot.ts). Resolves `{left: true}` once this
   * node is out of the configuration, or `{left: false, reason}` when that did
   * not happen within `timeoutMs` (default 2 × proposalTimeoutMs): no leader,
   * or the voters left would lack a quorum of healthy members. The node keeps
   * serving meanwhile (its vote may be needed to commit its own removal);
   * close it afterwards. Opened again from its data directory, it joins again
   * as a learner (or fails with KvMembershipFullError when there is no slot).
   */
  async leave(options: { timeoutMs?: number } = {}): Promise<{ left: boolean; reason?: string }> {
    this.assertOpen('leave');
    const deadline = Date.now() + (options.timeoutMs ?? 2 * this.proposalTimeoutMs);
    let reason = 'no leader answered';
    while (Date.now() < deadline && !this.closing) {
      if (!this.isMember(this.raftId)) {
        await this.persistRemoval();
        return { left: true };
      }
      if (this.role === Role.Leader) {
        // The leader does not remove itself: another voter takes over, then removes it.
        const successor = this.leadershipSuccessor();
        const alone = this.confState.voters.length === 1 && this.confState.learners.length === 0;
        if (alone) return { left: false, reason: 'it is the only member: there is nobody to hand over to' };
        if (successor === undefined) {
          // Other members exist but none is healthy and caught up yet (a new leader has heard from
          // nobody for a moment): asked again until the deadline.
          reason = 'no other voter, nor a caught-up learner, is reachable to take over leadership';
        } else {
          try {
            if (successor.learner) await this.promote(successor.id);
            else await this.transferLeadership(successor.id);
            continue;
          } catch (err) {
            reason = `handing over to ${successor.id} failed: ${(err as Error).message}`;
          }
        }
      } else {
        reason = await this.askToLeave();
        if (reason === '') {
          // Removed: usually the commit reaches this node too (then a restart knows at once, see rejoinIfRemoved).
          const appliedBy = Date.now() + 1_000;
          while (this.isMember(this.raftId) && Date.now() < appliedBy && !this.closing)
            await new Promise((r) => setTimeout(r, this.tickMs));
          await this.persistRemoval();
          return { left: true };
        }
      }
      await new Promise((r) => setTimeout(r, LEAVE_RETRY_MS));
    }
    return { left: false, reason };
  }

  /**
   * Commit-index-only updates are not written on their own (handleReady), so
   * the commit of this node's removal is made durable here: reopened, the node
   * replays it and knows at once that it must join again (rejoinIfRemoved).
   */
  private async persistRemoval(): Promise<void> {
    if (this.isMember(this.raftId) || this.closing) return;
    await this.storage.save({ hardState: this.latestHardState, entries: [] }, { sync: true });
  }

  /** One leave request to the leader: '' once it says this node is out, else why not yet. */
  private async askToLeave(): Promise<string> {
    const to = this.leaderId || [...this.confState.voters].find((v) => v !== this.raftId) || this.raftId;
    try {
      const reply = rpcPackr.unpack(
        await this.transport.request(
          to,
          LEAVE_PROTOCOL,
          rpcPackr.pack({ raftId: this.raftId, cluster: this.cluster }),
          { timeoutMs: LEAVE_ANSWER_WAIT_MS + 1_000 },
        ),
      ) as { member?: unknown };
      if (reply.member === false) return '';
      return 'the leader has not removed it yet: a membership change is in progress, or the voters left would lack a quorum of healthy members';
    } catch (err) {
      // A member forgets a node's identity when it applies its removal (syncTransportMembers):
      // the connection is still up, but its requests are refused as unknown. Removed, then.
      if (/say hello first/.test((err as Error).message)) return '';
      return `asking ${to} failed: ${(err as Error).message}`;
    }
  }

  /** Who should lead instead of this leader: the most caught-up healthy voter not leaving, else a caught-up learner to promote. */
  private leadershipSuccessor(): { id: NodeId; learner: boolean } | undefined {
    const progress = this.raft.status().progress ?? {};
    const now = Date.now();
    const score = (id: NodeId) => progress[id]?.match ?? 0;
    const healthy = (id: NodeId) =>
      now - (this.lastHeardMs.get(id) ?? 0) <= this.membershipLimits.healthyContactMs;
    const others = (ids: readonly NodeId[]) =>
      ids
        .filter((id) => id !== this.raftId && healthy(id))
        .sort(
          (a, b) =>
            Number(this.leaveRequestedMs.has(a)) - Number(this.leaveRequestedMs.has(b)) ||
            score(b) - score(a),
        );
    const voter = others(this.confState.voters)[0];
    if (voter !== undefined) return { id: voter, learner: false };
    const commit = this.raft.status().commit;
    const learner = others(this.confState.learners).find(
      (id) => score(id) + PROMOTE_MAX_LAG_ENTRIES >= commit && !this.leaveRequestedMs.has(id),
    );
    return learner === undefined ? undefined : { id: learner, learner: true };
  }

  /** Asks the members `through` (in turn) to add this node as a learner; a full cluster throws KvMembershipFullError. */
  private async joinCluster(through: NodeId[]): Promise<void> {
    const known = new Set(this.transport.members().map((m) => m.nodeId));
    for (const id of through)
      if (!known.has(id)) this.transport.setMember({ nodeId: id, multiaddrs: [multiaddrOf(id)] });
    const deadline = Date.now() + this.joinTimeoutMs;
    let lastError: Error | undefined;
    for (let attempt = 0; Date.now() < deadline && !this.closing; attempt++) {
      const target = through[attempt % through.length]!;
      let reply: { ok?: unknown; full?: unknown; limits?: { maxVoters: number; maxLearners: number } };
      try {
        reply = rpcPackr.unpack(
          await this.transport.request(
            target,
            JOIN_PROTOCOL,
            rpcPackr.pack({ raftId: this.raftId, name: this.name, cluster: this.cluster }),
            { timeoutMs: this.proposalTimeoutMs + 1_000 },
          ),
        );
      } catch (err) {
        lastError = err as Error;
        if (/belongs to cluster/.test(lastError.message)) break;
        await new Promise((r) => setTimeout(r, 500));
        continue;
      }
      if (typeof reply.full === 'string') {
        throw new KvMembershipFullError(
          `could not join the cluster through ${target}: ${reply.full}`,
          reply.limits ?? { maxVoters: Infinity, maxLearners: Infinity },
        );
      }
      this.log.info({ through: target }, 'joined the cluster as a learner');
      return;
    }
    throw new KvMembershipError(
      `could not join the cluster through ${through.join(', ')}: ${lastError?.message ?? 'timed out'}`,
    );
  }

  /**
   * A member that hears from no leader for a while asks its peers whether it
   * is still in the configuration: the autopilot (or an operator) may have
   * removed it while it was down, and a removed member is never contacted
   * again. Removed, it joins again as a learner; when the cluster is full it
   * stops with KvMembershipFullError (onFatal), never running on as a stray
   * voter (it could not win an election anyway: its log is behind).
   */
  private async checkStillMember(): Promise<void> {
    const now = Date.now();
    if (this.closing || this.rejoining || this.role === Role.Leader) return;
    if (now - Math.max(this.lastLeaderContactMs, this.startedAtMs) < REMOVED_CHECK_SILENCE_MS) return;
    if (now - this.lastRemovedCheckMs < REMOVED_CHECK_SILENCE_MS) return;
    // Only a node that believes it is a member (a fresh joiner has no configuration yet).
    const own = this.confState;
    if (!own.voters.includes(this.raftId) && !own.learners.includes(this.raftId)) return;
    this.lastRemovedCheckMs = now;
    // The members it knew: some of them applied its removal (other addresses in the address book may be clients).
    const peers = new Set([...own.voters, ...own.learners]);
    peers.delete(this.raftId);
    const removedBy: NodeId[] = [];
    await Promise.all(
      [...peers].map(async (peer) => {
        try {
          const info = rpcPackr.unpack(
            await this.transport.request(peer, INFO_PROTOCOL, new Uint8Array(0), { timeoutMs: 1_000 }),
          ) as { cluster?: unknown; voters?: unknown; learners?: unknown; appliedIndex?: unknown };
          if (info.cluster !== this.cluster || !Array.isArray(info.voters) || !Array.isArray(info.learners))
            return;
          // A newer configuration than ours without us: we were removed after our last applied entry.
          const newer = typeof info.appliedIndex === 'number' && info.appliedIndex > this.appliedIndex;
          if (newer && !info.voters.includes(this.raftId) && !info.learners.includes(this.raftId))
            removedBy.push(peer);
        } catch {
          // Unreachable peers say nothing.
        }
      }),
    );
    if (removedBy.length === 0 || this.closing) return;
    this.log.warn(
      { peers: removedBy, appliedIndex: this.appliedIndex },
      'this member was removed from the cluster while it was away; joining again as a learner',
    );
    this.rejoining = true;
    try {
      await this.joinCluster(removedBy);
    } catch (err) {
      if (err instanceof KvMembershipFullError) this.fail(err);
      else this.log.warn({ err: (err as Error).message }, 'joining again failed; retried later');
    } finally {
      this.rejoining = false;
    }
  }

  /** Resolves once a leader is known (or rejects after the proposal timeout). */
  async waitForLeader(timeoutMs = this.proposalTimeoutMs): Promise<NodeId> {
    if (this.leaderId) return this.leaderId;
    this.assertOpen('wait for leader');
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.leaderWaiters.delete(done);
        reject(this.unavailable('leader election', timeoutMs));
      }, timeoutMs);
      const done = () => {
        clearTimeout(timer);
        resolve();
      };
      this.leaderWaiters.add(done);
    });
    return this.leaderId;
  }

  status(): KvNodeStatus {
    const s = this.raft.status();
    return {
      name: this.name,
      raftId: this.raftId,
      cluster: this.cluster,
      leader: this.leaderId,
      role: ROLE_NAMES[this.role],
      term: s.term,
      commitIndex: s.commit,
      appliedIndex: this.appliedIndex,
      snapshotIndex: this.storage.snapshot().metadata.index,
      firstIndex: this.storage.firstIndex(),
      lastIndex: this.storage.lastIndex(),
      voters: [...this.confState.voters],
      learners: [...this.confState.learners],
      readsServed: { ...this.raft.core.readsServed },
    };
  }

  /**
   * Stops timers, the loop and the transport, then closes storage. Pending
   * calls fail with KvNodeClosedError. Idempotent: a second call (say the
   * user's, after a fatal error began one) resolves with the first, once the
   * data directory is free to open again.
   */
  close(): Promise<void> {
    this.closeDone ??= this.shutdown();
    return this.closeDone;
  }

  private async shutdown(): Promise<void> {
    this.closing = true;
    clearInterval(this.tickTimer);
    clearInterval(this.dutyTimer);
    this.signalClosed();
    // Awaited only after the pending calls fail below: a busy HTTP connection ends once its call settles.
    const serversClosed = Promise.all([
      this.httpServer?.close().catch(() => {}),
      this.tunnelServer?.close().catch(() => {}),
    ]);
    this.kick();
    await this.loopDone;
    const closedError = new KvNodeClosedError('pending call');
    this.proposals.rejectAll(closedError);
    this.confChanges.rejectAll(closedError);
    this.reads.rejectAll(closedError);
    this.rejectAppliedWaiters(closedError);
    await serversClosed;
    await this.snapshotting;
    await this.transport.stop().catch(() => {});
    await this.storage.close();
  }
}

/**
 * A data directory is either new (missing or empty) or ours (it has raft/):
 * a directory of other files is refused rather than written into.
 */
async function checkDataDir(dataDir: string): Promise<void> {
  let names: string[];
  try {
    names = await readdir(dataDir);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return;
    if (code === 'ENOTDIR')
      throw new StorageOpenError(dataDir, 'the data directory is a file, not a directory');
    throw new StorageOpenError(dataDir, `cannot read the data directory: ${(err as Error).message}`, {
      cause: err,
    });
  }
  if (names.length > 0 && !names.includes(RAFT_SUBDIR)) {
    throw new StorageOpenError(
      dataDir,
      `it is not empty (${names.slice(0, 3).join(', ')}${names.length > 3 ? ', ...' : ''}) and holds no ${RAFT_SUBDIR}/ store: not a weft-kv data directory; use an empty or new directory`,
    );
  }
}

function checkMembershipOptions(options: KvNodeOptions): void {
  const check = (name: string, value: number | undefined, min: number) => {
    if (value === undefined || value === Infinity) return;
    if (!Number.isSafeInteger(value) || value < min)
      throw new KvInputError(
        `KvNode option ${name} must be an integer >= ${min} (or Infinity), got ${value}`,
      );
  };
  check('maxVoters', options.maxVoters, 1);
  check('maxLearners', options.maxLearners, 0);
  check('deadVoterThresholdMs', options.deadVoterThresholdMs, 1);
  check('joinTimeoutMs', options.joinTimeoutMs, 1);
}

function consistencyOf(options: ReadOptions): Consistency {
  if (options.stale) return 'stale';
  if (options.consistent) return 'consistent';
  return 'default';
}

function decodeConfContext(context: Uint8Array): ConfChangeContext {
  if (context.length === 0) return {};
  try {
    const raw = rpcPackr.unpack(context) as ConfChangeContext;
    return {
      ...(typeof raw?.proposalId === 'string' ? { proposalId: raw.proposalId } : {}),
      ...(typeof raw?.name === 'string' ? { name: raw.name } : {}),
    };
  } catch {
    return {};
  }
}

function randomUuid(): string {
  return globalThis.crypto.randomUUID();
}

/** The production transport: libp2p on the raft listen address, identity key kept in the data directory. */
async function createLibp2pTransport(
  options: KvNodeOptions,
  raftId: NodeId,
  cluster: string,
  log: KvNodeLog,
): Promise<Transport> {
  // Loaded on demand so embedders using their own transport never load libp2p.
  const { Libp2pTransport } = await import('../transport/libp2p.js');
  const bootstrap = [...(options.peers ?? []), ...[options.join ?? []].flat()]
    .map(raftIdOf)
    .filter((p) => p !== raftId);
  return new Libp2pTransport({
    nodeId: raftId,
    dataDir: options.dataDir,
    listen: [raftId],
    peers: bootstrap,
    clusterName: cluster,
    ...(options.clusterKey !== undefined ? { clusterKey: options.clusterKey } : {}),
    log,
  });
}
