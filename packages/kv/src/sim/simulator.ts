// Deterministic cluster simulator for the Raft core.
//
// One seed drives everything: the network (drops, delays, duplicates,
// reordering, partitions of several shapes), crashes that lose whatever was not
// persisted and restarts from what was, membership changes, leadership
// transfers, snapshots and log compaction, and clients issuing writes, CAS and
// linearizable reads (by ReadIndex or leader lease) against a per-key register
// state machine. Time is virtual (milliseconds); nothing depends on the wall
// clock. Each node has its own clock running at its own rate (within
// regime.clockDriftRatio of the others): it ticks and measures its leader
// lease by it.
//
// After every step the simulator asserts: at most one leader per term; log
// matching; leader completeness; every node's applied sequence agrees with
// every other's (a prefix of the longest); snapshots agree with the state
// they claim. At the end it heals all faults, waits for convergence, checks
// that every acknowledged write is in every replica, and checks the client
// history for linearizability.
import { decodeConfChange } from '../raft/confchange.js';
import { describeMessage } from '../raft/describe.js';
import { RaftInvariantError, RequestDroppedError } from '../raft/errors.js';
import { MemoryStorage } from '../raft/memory-storage.js';
import type { TestingBugs } from '../raft/raft.js';
import { SeededRandom } from '../raft/rand.js';
import { RawNode } from '../raft/rawnode.js';
import {
  type ConfChange,
  ConfChangeTransition,
  ConfChangeType,
  type ConfState,
  type Entry,
  EntryType,
  type Message,
  MessageType,
  type NodeId,
  type Ready,
  Role,
} from '../raft/types.js';
import { EventQueue } from './event-queue.js';
import { checkLinearizability, type HistoryOp } from './linearizability.js';
import { decodeCommand, encodeCommand, RegisterMachine } from './register.js';

export interface SimOptions {
  seed: number;
  /** Most events processed in one run (the fault phase ends early if reached). */
  maxSteps?: number;
  /** Virtual length of the fault phase. */
  faultPhaseMs?: number;
  /** Virtual time allowed after healing for the cluster to converge. */
  settleMs?: number;
  /** Virtual length of one Raft tick. */
  tickMs?: number;
  /** Deliberate bugs switched on in every node (tests of the simulator itself). */
  testingBugs?: TestingBugs;
  /** Time budget for the linearizability check. */
  linearizabilityBudgetMs?: number;
  /** Trace lines kept for a failure report. */
  traceLines?: number;
  /** Fix parts of the per-seed regime (normally drawn from the seed). */
  regime?: Partial<Regime>;
}

export interface SimStats {
  steps: number;
  elections: number;
  snapshots: number;
  confChanges: number;
  opsChecked: number;
  /** Entries applied while their node's Ready was being persisted (regime.applyDuringSave). */
  appliedDuringSave: number;
  /** Reads answered by a leader from its lease (regime.leaseReads). */
  leaseReads: number;
  /** 1 if the linearizability check ran out of budget (not a failure). */
  linearizabilityUnknown: number;
  virtualMs: number;
}

export interface SimResult {
  seed: number;
  ok: boolean;
  /** What was violated, with details. */
  failure?: string;
  /** The last trace lines before the end or the failure. */
  traceTail: string[];
  stats: SimStats;
}

/** A safety property did not hold; ends the run. */
export class SimViolation extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SimViolation';
  }
}

interface SimNode {
  id: NodeId;
  /** The "disk": survives crashes. */
  storage: MemoryStorage;
  /** Undefined while crashed or after retirement. */
  raw: RawNode | undefined;
  incarnation: number;
  sm: RegisterMachine;
  readyScheduled: boolean;
  /** A Ready without a snapshot is being persisted (asyncPersist): its 'persisted' event is pending. */
  saving: boolean;
  /** Removed from the cluster and shut down for good. */
  retired: boolean;
  /** This incarnation's clock: it reads clockLocalStartMs at virtual time clockRealStartMs and runs at clockRate. */
  clockRate: number;
  clockRealStartMs: number;
  clockLocalStartMs: number;
  /** The node's clock at its last tick: ticks are tickMs of its own clock apart, whatever its rate does. */
  lastTickLocalMs: number;
  /** Client operations this node is the gateway for, by op id. */
  pendingOps: Map<string, PendingOp>;
  /** Read requests by context. */
  pendingReads: Map<string, PendingRead>;
}

interface PendingOp {
  history: HistoryOp;
  opId: string;
  timeoutAtMs: number;
}

interface PendingRead {
  history: HistoryOp;
  readIndex: number | undefined;
  timeoutAtMs: number;
}

type SimEvent =
  | { kind: 'tick'; node: NodeId; incarnation: number }
  | { kind: 'ready'; node: NodeId; incarnation: number }
  | { kind: 'persisted'; node: NodeId; incarnation: number; ready: Ready }
  | { kind: 'deliver'; msg: Message; sentAtMs: number }
  | { kind: 'snapStatus'; leader: NodeId; incarnation: number; to: NodeId; ok: boolean }
  | { kind: 'unreachable'; node: NodeId; incarnation: number; peer: NodeId }
  | { kind: 'restart'; node: NodeId }
  | { kind: 'retire'; node: NodeId }
  | { kind: 'heal' }
  | { kind: 'isolate'; node: NodeId; incarnation: number }
  | { kind: 'fault' }
  | { kind: 'client'; clientId: number }
  | { kind: 'timeouts' };

interface CommittedRecord {
  term: number;
  data: string;
  /** Term of the node that learned it was committed: a leader of this term or later must have it. */
  knownAtTerm: number;
}

const textDecoder = new TextDecoder();
const textEncoder = new TextEncoder();

/** The per-seed shape of the run: drawn from the seed so that seeds cover different regimes. */
export interface Regime {
  initialVoters: number;
  electionTimeoutTicks: number;
  /** Probability of crashing a node right after it granted a vote. */
  crashAfterVoteRate: number;
  /** Messages already on their way when a link is cut still arrive (only new sends are dropped). */
  inFlightSurvivesPartition: boolean;
  /** Probability of cutting a leader off from the others right after it sent TimeoutNow (a transfer). */
  isolateAfterTimeoutNowRate: number;
  /** Probability of crashing a leader right after it persisted and sent new entries. */
  crashLeaderAfterAppendRate: number;
  clientTimeoutMs: number;
  dropRate: number;
  duplicateRate: number;
  minDelayMs: number;
  jitterMs: number;
  longDelayRate: number;
  diskLatencyMs: number;
  faultEveryMs: number;
  snapshotEveryEntries: number;
  keepEntriesAfterSnapshot: number;
  maxSizePerMsgBytes: number;
  maxInflightMsgs: number;
  maxInflightBytes: number;
  maxUncommittedEntriesBytes: number;
  heartbeatTicks: number;
  /** Persist each Ready asynchronously: the node keeps running while the write is in flight. */
  asyncPersist: boolean;
  /** RaftConfig.coalesceMessages (KvNode runs with it on). */
  coalesceMessages: boolean;
  /**
   * With asyncPersist: entries that become committed while a Ready's write is
   * in flight are applied as messages arrive, from the core's log, as KvNode
   * does (applyCommittedDuringSave), instead of after the write.
   */
  applyDuringSave: boolean;
  clients: number;
  keys: string[];
  /** Share of client operations that are linearizable reads, in percent (the rest: writes and CAS). */
  readPercent: number;
  preVote: boolean;
  checkQuorum: boolean;
  /** RaftConfig.leaseReads (KvNode runs with it on). */
  leaseReads: boolean;
  /** RaftConfig.maxClockDriftRatio: the drift the lease allows for. */
  maxClockDriftRatio: number;
  /**
   * How far apart the nodes' clock rates really are: each node's clock runs at
   * 1 to 1 + clockDriftRatio times virtual time. Drawn within
   * maxClockDriftRatio; a test sets it beyond to show that the lease depends
   * on that assumption.
   */
  clockDriftRatio: number;
  /**
   * Whenever a node becomes leader its clock moves to the slow end of the
   * spread and every other's to the fast end. Fast clocks win elections, so
   * otherwise the leader is rarely the slow one, the case a lease must survive.
   */
  slowLeaderClock: boolean;
}

export class Simulation {
  private readonly rng: SeededRandom;
  private readonly netRng: SeededRandom;
  private readonly regime: Regime;
  private readonly queue = new EventQueue<SimEvent>();
  private readonly nodes = new Map<NodeId, SimNode>();
  private nowMs = 0;
  private steps = 0;
  private readonly opts: Required<Omit<SimOptions, 'testingBugs'>> & { testingBugs: TestingBugs };
  /** Directed links that currently drop messages, as "from>to", with the time they were cut. */
  private blocked = new Map<string, number>();
  private faultsOn = true;
  private nextNodeNumber = 1;
  private readonly trace: string[] = [];
  private traceHead = 0;
  // --- invariant bookkeeping ---
  private readonly leaderOfTerm = new Map<number, NodeId>();
  /** index -> term -> {prevTerm, data}: what an entry (index, term) is, as first persisted anywhere. */
  private readonly entryRegistry = new Map<number, Map<number, { prevTerm: number; data: string }>>();
  private readonly committed = new Map<number, CommittedRecord>();
  private maxCommittedIndex = 0;
  /** Snapshot state fingerprints by index. */
  private readonly snapshotStates = new Map<number, string>();
  private readonly history: HistoryOp[] = [];
  private readonly ackedOps = new Set<string>();
  private opCounter = 0;
  private readonly stats: SimStats = {
    steps: 0,
    elections: 0,
    snapshots: 0,
    confChanges: 0,
    opsChecked: 0,
    appliedDuringSave: 0,
    leaseReads: 0,
    linearizabilityUnknown: 0,
    virtualMs: 0,
  };
  private readonly confChangeIndexes = new Set<number>();

  constructor(options: SimOptions) {
    this.opts = {
      maxSteps: 60_000,
      faultPhaseMs: 6_000,
      settleMs: 10_000,
      tickMs: 10,
      linearizabilityBudgetMs: 2_000,
      traceLines: 60,
      ...Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined)),
      testingBugs: options.testingBugs ?? {},
    } as Simulation['opts'];
    this.rng = new SeededRandom(options.seed);
    this.netRng = this.rng.fork();
    const r = this.rng;
    this.regime = {
      initialVoters: r.pick([3, 3, 5]),
      electionTimeoutTicks: r.pick([5, 10, 10]),
      crashAfterVoteRate: r.pick([0, 0.1, 0.3]),
      clientTimeoutMs: r.pick([300, 1000]),
      crashLeaderAfterAppendRate: r.pick([0, 0, 0.05]),
      dropRate: r.pick([0, 0.01, 0.05, 0.1]),
      duplicateRate: r.pick([0, 0.02, 0.05]),
      minDelayMs: 1 + r.intn(3),
      jitterMs: r.pick([1, 5, 15]),
      longDelayRate: r.pick([0, 0.01, 0.03]),
      diskLatencyMs: r.pick([0, 1, 3]),
      faultEveryMs: r.pick([150, 300, 600]),
      snapshotEveryEntries: r.pick([5, 20, 60]),
      keepEntriesAfterSnapshot: r.pick([0, 2, 10]),
      maxSizePerMsgBytes: r.pick([1, 200, 4096]),
      maxInflightMsgs: r.pick([1, 4, 64]),
      clients: 2 + r.intn(3),
      keys: r.pick([['a'], ['a', 'b'], ['a', 'b', 'c']]),
      preVote: r.chance(0.85),
      checkQuorum: r.chance(0.85),
      maxInflightBytes: r.pick([0, 0, 300]),
      maxUncommittedEntriesBytes: r.pick([0, 0, 500]),
      heartbeatTicks: r.pick([1, 1, 2]),
      asyncPersist: r.chance(0.5),
      coalesceMessages: r.chance(0.75),
      applyDuringSave: r.chance(0.75),
      leaseReads: r.chance(0.6),
      maxClockDriftRatio: r.pick([0.05, 0.1, 0.2]),
      clockDriftRatio: 0, // drawn below, within maxClockDriftRatio
      slowLeaderClock: r.chance(0.3),
      readPercent: r.pick([40, 40, 70]),
      isolateAfterTimeoutNowRate: r.pick([0, 0.3]),
      inFlightSurvivesPartition: r.chance(0.5),
      ...options.regime,
    };
    if (options.regime?.clockDriftRatio === undefined)
      this.regime.clockDriftRatio = this.regime.maxClockDriftRatio * r.pick([0.5, 1, 1]);
  }

  // --- tracing ------------------------------------------------------------------

  private log(line: string): void {
    const max = this.opts.traceLines;
    const s = `${this.nowMs.toFixed(1).padStart(8)}ms ${line}`;
    if (this.trace.length < max) this.trace.push(s);
    else {
      this.trace[this.traceHead] = s;
      this.traceHead = (this.traceHead + 1) % max;
    }
  }

  private traceTail(): string[] {
    return this.trace.slice(this.traceHead).concat(this.trace.slice(0, this.traceHead));
  }

  private fail(message: string): never {
    throw new SimViolation(message);
  }

  // --- nodes --------------------------------------------------------------------

  private newNodeId(): NodeId {
    return `n${this.nextNodeNumber++}`;
  }

  private startNode(n: SimNode): void {
    n.incarnation++;
    const snap = n.storage.snapshot();
    n.sm = RegisterMachine.fromSnapshot(snap.data, snap.metadata.index);
    n.clockRealStartMs = this.nowMs;
    n.clockLocalStartMs = this.rng.intn(1_000_000);
    n.clockRate = this.drawClockRate();
    n.raw = new RawNode({
      id: n.id,
      storage: n.storage,
      random: this.rng.fork(),
      electionTimeoutTicks: this.regime.electionTimeoutTicks,
      heartbeatTicks: Math.min(this.regime.heartbeatTicks, this.regime.electionTimeoutTicks - 1),
      maxSizePerMsgBytes: this.regime.maxSizePerMsgBytes,
      maxInflightMsgs: this.regime.maxInflightMsgs,
      maxInflightBytes: this.regime.maxInflightBytes,
      maxUncommittedEntriesBytes: this.regime.maxUncommittedEntriesBytes,
      preVote: this.regime.preVote,
      checkQuorum: this.regime.checkQuorum,
      coalesceMessages: this.regime.coalesceMessages,
      leaseReads: this.regime.leaseReads,
      leaseClockMs: () => this.localClockMs(n),
      tickIntervalMs: this.opts.tickMs,
      maxClockDriftRatio: this.regime.maxClockDriftRatio,
      testingBugs: this.opts.testingBugs,
      logger: (line) => this.log(line),
    });
    n.readyScheduled = false;
    n.saving = false;
    // Nodes tick out of phase with each other, every tickMs of their own clock.
    const firstTickInMs = 1 + this.rng.intn(this.opts.tickMs);
    n.lastTickLocalMs = this.localClockMs(n) + firstTickInMs - this.opts.tickMs;
    this.queue.push(this.nowMs + firstTickInMs / n.clockRate, {
      kind: 'tick',
      node: n.id,
      incarnation: n.incarnation,
    });
  }

  private localClockMs(n: SimNode): number {
    return n.clockLocalStartMs + (this.nowMs - n.clockRealStartMs) * n.clockRate;
  }

  /** A clock rate within the regime's spread; both ends of it are the interesting ones. */
  private drawClockRate(): number {
    const drift = this.regime.clockDriftRatio;
    return this.rng.pick([1, 1 + drift, 1 + drift * this.rng.float()]);
  }

  /** A node's clock changes its rate, to `rate` or one drawn within the spread. */
  private changeClockRate(n: SimNode, rate = this.drawClockRate()): void {
    if (!n.raw) return;
    n.clockLocalStartMs = this.localClockMs(n);
    n.clockRealStartMs = this.nowMs;
    n.clockRate = rate;
    this.log(`CLOCK ${n.id} runs at ${n.clockRate.toFixed(3)}x`);
  }

  private addNode(bootstrapVoters?: NodeId[]): SimNode {
    const id = this.newNodeId();
    const storage = new MemoryStorage();
    if (bootstrapVoters) storage.bootstrap(bootstrapVoters);
    const n: SimNode = {
      id,
      storage,
      raw: undefined,
      incarnation: 0,
      sm: new RegisterMachine(),
      readyScheduled: false,
      saving: false,
      retired: false,
      clockRate: 1,
      clockRealStartMs: 0,
      clockLocalStartMs: 0,
      lastTickLocalMs: 0,
      pendingOps: new Map(),
      pendingReads: new Map(),
    };
    this.nodes.set(id, n);
    this.startNode(n);
    return n;
  }

  private crash(n: SimNode, why: string): void {
    if (!n.raw) return;
    this.log(`CRASH ${n.id} (${why}); unpersisted state lost`);
    this.stats.leaseReads += n.raw.core.readsServed.lease;
    n.raw = undefined;
    n.incarnation++;
    n.readyScheduled = false;
    n.saving = false;
    // The gateway is gone: its clients never hear back (their ops are indeterminate).
    for (const op of n.pendingOps.values()) {
      this.history.push(op.history);
      this.scheduleClient(op.history.clientId);
    }
    for (const rd of n.pendingReads.values()) this.scheduleClient(rd.history.clientId);
    n.pendingOps.clear();
    n.pendingReads.clear();
  }

  private alive(): SimNode[] {
    return [...this.nodes.values()].filter((n) => n.raw !== undefined);
  }

  private leader(): SimNode | undefined {
    let best: SimNode | undefined;
    for (const n of this.nodes.values()) {
      const c = n.raw?.core;
      if (c && c.role === Role.Leader && (!best || c.term > best.raw!.core.term)) best = n;
    }
    return best;
  }

  private scheduleReady(n: SimNode): void {
    if (!n.raw || n.readyScheduled || !n.raw.hasReady()) return;
    n.readyScheduled = true;
    const latency = this.regime.diskLatencyMs === 0 ? 0 : this.rng.intn(this.regime.diskLatencyMs + 1);
    this.queue.push(this.nowMs + latency, { kind: 'ready', node: n.id, incarnation: n.incarnation });
  }

  // --- network --------------------------------------------------------------------

  private send(m: Message): void {
    const from = this.nodes.get(m.from);
    const to = this.nodes.get(m.to);
    if (!to || !from) return;
    if (this.blocked.has(`${m.from}>${m.to}`)) {
      // Sometimes the transport notices (connection refused) and says so.
      if (this.netRng.chance(0.2)) {
        this.queue.push(this.nowMs + 1, {
          kind: 'unreachable',
          node: m.from,
          incarnation: from.incarnation,
          peer: m.to,
        });
      }
      this.afterLostSnapshot(m);
      return;
    }
    const net = this.netRng;
    if (this.faultsOn && this.regime.dropRate > 0 && net.chance(this.regime.dropRate)) {
      this.afterLostSnapshot(m);
      return;
    }
    const copies =
      this.faultsOn && this.regime.duplicateRate > 0 && net.chance(this.regime.duplicateRate) ? 2 : 1;
    for (let i = 0; i < copies; i++) {
      let delay = this.regime.minDelayMs + net.intn(this.regime.jitterMs + 1);
      if (this.faultsOn && this.regime.longDelayRate > 0 && net.chance(this.regime.longDelayRate))
        delay += net.intn(300);
      this.queue.push(this.nowMs + delay, { kind: 'deliver', msg: m, sentAtMs: this.nowMs });
    }
  }

  /** A transport reports a failed snapshot send to the leader. */
  private afterLostSnapshot(m: Message): void {
    if (m.type !== MessageType.Snap) return;
    const leader = this.nodes.get(m.from);
    if (!leader?.raw) return;
    this.queue.push(this.nowMs + 50, {
      kind: 'snapStatus',
      leader: m.from,
      incarnation: leader.incarnation,
      to: m.to,
      ok: false,
    });
  }

  private deliver(m: Message, sentAtMs: number): void {
    const to = this.nodes.get(m.to);
    if (!to?.raw) {
      this.afterLostSnapshot(m);
      return;
    }
    const cutAtMs = this.blocked.get(`${m.from}>${m.to}`);
    if (cutAtMs !== undefined && !(this.regime.inFlightSurvivesPartition && sentAtMs < cutAtMs)) {
      this.afterLostSnapshot(m);
      return;
    }
    if (m.type !== MessageType.Heartbeat && m.type !== MessageType.HeartbeatResp)
      this.log(describeMessage(m));
    to.raw.step(m);
    if (to.saving && this.regime.applyDuringSave) this.applyCommittedDuringSave(to);
    if (m.type === MessageType.Snap) {
      const leader = this.nodes.get(m.from);
      if (leader?.raw) {
        this.queue.push(this.nowMs + 1, {
          kind: 'snapStatus',
          leader: m.from,
          incarnation: leader.incarnation,
          to: m.to,
          ok: true,
        });
      }
    }
    this.scheduleReady(to);
  }

  // --- the Ready loop ----------------------------------------------------------------

  private handleReady(n: SimNode): void {
    n.readyScheduled = false;
    const raw = n.raw;
    if (!raw) return;
    if (this.regime.asyncPersist) {
      // Like a real node awaiting its disk write: the Ready is outstanding
      // while the node keeps stepping messages and ticking.
      if (!raw.hasReady()) return;
      const rd = raw.ready();
      this.checkReady(n, rd);
      const latency =
        1 + (this.regime.diskLatencyMs === 0 ? 0 : this.rng.intn(this.regime.diskLatencyMs + 1));
      n.saving = !rd.snapshot;
      this.queue.push(this.nowMs + latency, {
        kind: 'persisted',
        node: n.id,
        incarnation: n.incarnation,
        ready: rd,
      });
      return;
    }
    for (let i = 0; i < 16 && raw.hasReady(); i++) {
      const rd = raw.ready();
      this.checkReady(n, rd);
      if (!this.completeReady(n, rd)) return;
    }
    this.checkLeaders();
    this.scheduleReady(n);
  }

  /** Persists, sends, applies and advances one Ready. Returns false if the node crashed at the end. */
  private completeReady(n: SimNode, rd: Ready): boolean {
    const raw = n.raw!;
    // 1. persist (atomically: nothing else happens in between in the simulation)
    if (rd.snapshot) n.storage.applySnapshot(rd.snapshot);
    n.storage.append(rd.entries);
    if (rd.hardState) n.storage.setHardState(rd.hardState);
    // 2. send
    for (const m of rd.messages) this.send(m);
    // 3. apply
    if (rd.snapshot) this.installSnapshot(n, rd.snapshot.data, rd.snapshot.metadata.index);
    for (const e of rd.committedEntries) {
      // Entries applied while this Ready was being persisted (applyDuringSave) are not applied twice.
      if (this.regime.applyDuringSave && e.index <= n.sm.appliedIndex) continue;
      this.applyEntry(n, e);
    }
    for (const rs of rd.readStates) {
      const pr = n.pendingReads.get(textDecoder.decode(rs.requestCtx));
      if (pr && pr.readIndex === undefined) pr.readIndex = rs.index;
    }
    this.answerClients(n);
    // 4. advance
    raw.advance();
    this.maybeSnapshot(n);
    if (rd.softState?.role === Role.Leader) {
      this.stats.elections++;
      this.log(`LEADER ${n.id} term ${raw.core.term}`);
      if (this.regime.slowLeaderClock) {
        // The worst placement for a lease: leaders' clocks (also a deposed one
        // that does not know it yet) at the slow end, everyone else's at the fast end.
        for (const other of this.alive()) {
          if (other.raw!.core.role === Role.Leader) this.changeClockRate(other, 1);
          else this.changeClockRate(other, 1 + this.regime.clockDriftRatio);
        }
      }
    }
    // Crash at an interesting point: right after promising a vote. The
    // promise must survive the restart (it was persisted before sending).
    if (
      this.faultsOn &&
      rd.messages.some((m) => m.type === MessageType.VoteResp && !m.reject) &&
      this.rng.chance(this.regime.crashAfterVoteRate)
    ) {
      this.crash(n, 'right after granting a vote');
      // Back quickly, while other candidates' requests for the same term are still in flight.
      this.queue.push(this.nowMs + 1 + this.rng.intn(3), { kind: 'restart', node: n.id });
      return false;
    }
    // ... a leader right after handing over leadership (TimeoutNow) is cut
    // off: a transfer often comes before a node goes away. If it kept its
    // lease, its clients would read while the new leader writes.
    if (
      this.faultsOn &&
      rd.messages.some((m) => m.type === MessageType.TimeoutNow) &&
      this.rng.chance(this.regime.isolateAfterTimeoutNowRate)
    ) {
      // Once the TimeoutNow has arrived (unless the network delayed it longer).
      const afterMs = this.regime.minDelayMs + this.regime.jitterMs + 1;
      this.queue.push(this.nowMs + afterMs, { kind: 'isolate', node: n.id, incarnation: n.incarnation });
    }
    // ... and a leader right after sending new entries: leaves uncommitted,
    // diverging suffixes behind (the raw material of Raft's figure 8).
    if (
      this.faultsOn &&
      raw.core.role === Role.Leader &&
      rd.entries.length > 0 &&
      this.rng.chance(this.regime.crashLeaderAfterAppendRate)
    ) {
      this.crash(n, 'leader right after appending');
      this.queue.push(this.nowMs + 1 + this.rng.intn(300), { kind: 'restart', node: n.id });
      return false;
    }
    return true;
  }

  /** Invariants on what a node is about to persist. */
  private checkReady(n: SimNode, rd: Ready): void {
    const core = n.raw!.core;
    if (core.role === Role.Leader) {
      const prev = this.leaderOfTerm.get(core.term);
      if (prev !== undefined && prev !== n.id)
        this.fail(`two leaders in term ${core.term}: ${prev} and ${n.id}`);
      this.leaderOfTerm.set(core.term, n.id);
    }
    // Log matching: an entry (index, term) is the same everywhere, and so is its predecessor's term.
    for (let i = 0; i < rd.entries.length; i++) {
      const e = rd.entries[i]!;
      const prevTerm = i > 0 ? rd.entries[i - 1]!.term : core.log.term(e.index - 1);
      if (prevTerm === undefined) continue; // predecessor compacted: covered by the snapshot check
      const data = entryKey(e);
      let byTerm = this.entryRegistry.get(e.index);
      if (!byTerm) {
        byTerm = new Map();
        this.entryRegistry.set(e.index, byTerm);
      }
      const known = byTerm.get(e.term);
      if (!known) byTerm.set(e.term, { prevTerm, data });
      else if (known.prevTerm !== prevTerm || known.data !== data) {
        this.fail(
          `log matching violated at ${n.id}: entry ${e.term}/${e.index} has predecessor term ${prevTerm} and data ${data}, ` +
            `elsewhere predecessor term ${known.prevTerm} and data ${known.data}`,
        );
      }
    }
  }

  private installSnapshot(n: SimNode, data: Uint8Array, index: number): void {
    n.sm = RegisterMachine.fromSnapshot(data, index);
    this.stats.snapshots++;
    this.log(`SNAPSHOT ${n.id} installed at ${index}`);
    const known = this.snapshotStates.get(index);
    const fp = n.sm.fingerprint();
    if (known !== undefined && known !== fp)
      this.fail(`snapshot at ${index} installed on ${n.id} differs from the state at ${index} elsewhere`);
    this.snapshotStates.set(index, fp);
    // The snapshot's index is committed: record it like an applied entry.
    const rec = this.committed.get(index);
    const term = n.storage.snapshot().metadata.term;
    if (rec && rec.term !== term)
      this.fail(`snapshot ${term}/${index} on ${n.id} contradicts committed entry ${rec.term}/${index}`);
  }

  /** KvNode.applyCommittedDuringSave: committed entries persisted by earlier Readies, up to the first membership change. */
  private applyCommittedDuringSave(n: SimNode): void {
    const log = n.raw!.core.log;
    const upTo = log.committedStableIndex();
    if (upTo <= n.sm.appliedIndex || n.sm.appliedIndex + 1 < log.firstIndex()) return;
    for (const e of log.slice(n.sm.appliedIndex + 1, upTo + 1, Number.MAX_SAFE_INTEGER)) {
      if (e.type === EntryType.ConfChange) break;
      this.applyEntry(n, e);
      this.stats.appliedDuringSave++;
    }
    this.answerClients(n);
  }

  private applyEntry(n: SimNode, e: Entry): void {
    const raw = n.raw!;
    if (e.index !== n.sm.appliedIndex + 1) {
      this.fail(
        `${n.id} applied entry ${e.index} after ${n.sm.appliedIndex}: applied sequence has a gap or repeats`,
      );
    }
    // Applied sequences agree: every node applies the same entry at each index.
    const data = entryKey(e);
    const rec = this.committed.get(e.index);
    if (rec) {
      if (rec.term !== e.term || rec.data !== data) {
        this.fail(
          `${n.id} applied ${e.term}/${e.index} ${data} but ${rec.term}/${e.index} ${rec.data} was applied elsewhere`,
        );
      }
      rec.knownAtTerm = Math.min(rec.knownAtTerm, raw.core.term);
    } else {
      this.committed.set(e.index, { term: e.term, data, knownAtTerm: raw.core.term });
      if (e.index > this.maxCommittedIndex) this.maxCommittedIndex = e.index;
    }
    if (e.type === EntryType.ConfChange) {
      const cc = decodeConfChange(e.data);
      const cs = raw.applyConfChange(cc);
      n.sm.appliedIndex = e.index;
      if (!this.confChangeIndexes.has(e.index)) {
        this.confChangeIndexes.add(e.index);
        this.stats.confChanges++;
      }
      if (raw.core.role === Role.Leader || raw.core.lead === n.id) this.retireRemoved(cs);
      this.log(
        `CONF ${n.id} applied ${e.index}: voters=${cs.voters.join(',')} out=${cs.votersOutgoing.join(',')} learners=${cs.learners.join(',')}`,
      );
      return;
    }
    if (e.data.byteLength === 0) {
      n.sm.appliedIndex = e.index; // the leader's empty entry
      return;
    }
    n.sm.apply(e.index, decodeCommand(e.data));
  }

  /** Nodes no longer in the configuration are shut down a little later (like an operator would). */
  private retireRemoved(cs: ConfState): void {
    const members = new Set([...cs.voters, ...cs.votersOutgoing, ...cs.learners]);
    for (const other of this.nodes.values()) {
      if (!other.retired && !members.has(other.id) && other.storage.lastIndex() > 0) {
        this.queue.push(this.nowMs + 200 + this.rng.intn(800), { kind: 'retire', node: other.id });
      }
    }
  }

  private maybeSnapshot(n: SimNode, force = false): void {
    const snapIndex = n.storage.snapshot().metadata.index;
    const applied = n.sm.appliedIndex;
    if (applied <= snapIndex) return;
    if (!force && applied - snapIndex < this.regime.snapshotEveryEntries) return;
    const confState = n.raw!.core.tracker.confState();
    // The conf state at `applied` is the one in effect now: conf changes take effect when applied.
    const data = n.sm.serialize();
    n.storage.createSnapshot(applied, confState, data);
    const fp = n.sm.fingerprint();
    const known = this.snapshotStates.get(applied);
    if (known !== undefined && known !== fp)
      this.fail(`state of ${n.id} at ${applied} differs from another replica's at ${applied}`);
    this.snapshotStates.set(applied, fp);
    n.storage.compact(Math.max(snapIndex, applied - (force ? 0 : this.regime.keepEntriesAfterSnapshot)));
  }

  /** Leader completeness: a leader's log holds every entry known committed at or before its term. */
  private checkLeaders(): void {
    if (this.maxCommittedIndex === 0) return;
    for (const n of this.nodes.values()) {
      const core = n.raw?.core;
      if (!core || core.role !== Role.Leader) continue;
      // Check the highest committed entry this leader must have.
      for (let i = this.maxCommittedIndex; i > 0 && i > this.maxCommittedIndex - 8; i--) {
        const rec = this.committed.get(i);
        if (!rec || rec.knownAtTerm > core.term) continue;
        if (i < core.log.firstIndex() - 1) break; // inside its snapshot
        const t = core.log.term(i);
        if (t !== rec.term) {
          this.fail(
            `leader completeness violated: leader ${n.id} of term ${core.term} has term ${t} at ${i}, committed entry is ${rec.term}/${i}`,
          );
        }
        break;
      }
    }
  }

  // --- clients ------------------------------------------------------------------

  /** Per client: the node it sends its next request to, if it is up. */
  private readonly clientGateway = new Map<number, NodeId>();

  private issueClientOp(clientId: number): void {
    if (!this.faultsOn) return; // no new operations once the run is settling
    const gateways = this.alive().filter((n) => !n.retired);
    if (gateways.length === 0) {
      this.scheduleClient(clientId);
      return;
    }
    // Clients stick to the node that last answered them (usually the leader,
    // possibly a deposed one that does not know it yet), like real clients do.
    const preferred = this.nodes.get(this.clientGateway.get(clientId) ?? '');
    const g =
      preferred?.raw && !preferred.retired && this.rng.chance(0.8) ? preferred : this.rng.pick(gateways);
    const key = this.rng.pick(this.regime.keys);
    const opId = `c${clientId}.${++this.opCounter}`;
    const roll = this.rng.intn(100);
    const raw = g.raw!;
    if (roll < this.regime.readPercent) {
      const h: HistoryOp = { clientId, key, kind: 'read', call: this.nowMs, ret: null };
      // Half the time at once from the lease when it holds (KvNode does that), as a request otherwise.
      const leaseIndex = this.rng.chance(0.5) ? raw.leaseRead() : undefined;
      if (leaseIndex !== undefined) {
        g.pendingReads.set(opId, {
          history: h,
          readIndex: leaseIndex,
          timeoutAtMs: this.nowMs + this.regime.clientTimeoutMs,
        });
        this.answerClients(g);
        return;
      }
      try {
        raw.readIndex(textEncoder.encode(opId));
      } catch (err) {
        if (err instanceof RequestDroppedError) {
          this.scheduleClient(clientId);
          return;
        }
        throw err;
      }
      g.pendingReads.set(opId, {
        history: h,
        readIndex: undefined,
        timeoutAtMs: this.nowMs + this.regime.clientTimeoutMs,
      });
    } else {
      const value = `${opId}`;
      let h: HistoryOp;
      let data: Uint8Array;
      // The rest: writes and CAS, half each.
      if (roll < (100 + this.regime.readPercent) / 2) {
        h = { clientId, key, kind: 'write', value, call: this.nowMs, ret: null };
        data = encodeCommand({ op: opId, kind: 'write', key, value });
      } else {
        // Expect a value the key plausibly has: what this gateway has applied, or absent.
        const expected = this.rng.chance(0.8) ? g.sm.get(key) : null;
        h = { clientId, key, kind: 'cas', value, expected, call: this.nowMs, ret: null };
        data = encodeCommand({ op: opId, kind: 'cas', key, expected, value });
      }
      try {
        raw.propose(data);
      } catch (err) {
        if (err instanceof RequestDroppedError) {
          this.scheduleClient(clientId);
          return;
        }
        throw err;
      }
      g.pendingOps.set(opId, { history: h, opId, timeoutAtMs: this.nowMs + this.regime.clientTimeoutMs });
    }
    this.scheduleReady(g);
    // The client waits for the answer (or timeout) before its next op.
  }

  private scheduleClient(clientId: number): void {
    this.queue.push(this.nowMs + 5 + this.rng.intn(40), { kind: 'client', clientId });
  }

  /** Answers the clients whose operations this node has now applied / can now serve. */
  private answerClients(n: SimNode): void {
    for (const [opId, op] of n.pendingOps) {
      const ok = n.sm.results.get(opId);
      if (ok === undefined) continue;
      op.history.ret = this.nowMs;
      if (op.history.kind === 'cas') op.history.ok = ok;
      this.history.push(op.history);
      this.ackedOps.add(opId);
      this.clientGateway.set(op.history.clientId, n.id);
      n.pendingOps.delete(opId);
      this.scheduleClient(op.history.clientId);
    }
    for (const [ctx, rd] of n.pendingReads) {
      if (rd.readIndex === undefined || n.sm.appliedIndex < rd.readIndex) continue;
      rd.history.ret = this.nowMs;
      rd.history.output = n.sm.get(rd.history.key);
      this.history.push(rd.history);
      this.clientGateway.set(rd.history.clientId, n.id);
      n.pendingReads.delete(ctx);
      this.scheduleClient(rd.history.clientId);
    }
  }

  /** After a timeout the client tries the leader its gateway knows of, or anyone. */
  private redirectClient(clientId: number, gateway: SimNode): void {
    const lead = gateway.raw?.core.lead;
    if (lead) this.clientGateway.set(clientId, lead);
    else this.clientGateway.delete(clientId);
  }

  private expireClientOps(): void {
    for (const n of this.nodes.values()) {
      for (const [opId, op] of n.pendingOps) {
        if (op.timeoutAtMs > this.nowMs) continue;
        this.history.push(op.history); // ret stays null: indeterminate
        n.pendingOps.delete(opId);
        this.redirectClient(op.history.clientId, n);
        this.scheduleClient(op.history.clientId);
      }
      for (const [ctx, rd] of n.pendingReads) {
        if (rd.timeoutAtMs > this.nowMs) continue;
        n.pendingReads.delete(ctx); // an unanswered read constrains nothing
        this.redirectClient(rd.history.clientId, n);
        this.scheduleClient(rd.history.clientId);
      }
    }
  }

  // --- faults -----------------------------------------------------------------------

  private members(): SimNode[] {
    return [...this.nodes.values()].filter((n) => !n.retired);
  }

  private injectFault(): void {
    const r = this.rng;
    const leader = this.leader();
    const roll = r.intn(100);
    if (roll < 30) {
      this.partition();
    } else if (roll < 45) {
      const victims = this.alive().filter((n) => !n.retired);
      if (victims.length === 0) return;
      const v = leader && r.chance(0.4) ? leader : r.pick(victims);
      this.crash(v, 'fault');
      this.queue.push(this.nowMs + 50 + r.intn(1500), { kind: 'restart', node: v.id });
    } else if (roll < 60) {
      this.changeMembership(leader);
    } else if (roll < 70) {
      if (!leader?.raw) return;
      const cs = leader.raw.core.tracker.confState();
      const target = r.pick(cs.voters);
      this.log(`TRANSFER requested ${leader.id} -> ${target}`);
      leader.raw.transferLeadership(target);
      this.scheduleReady(leader);
    } else if (roll < 78) {
      // Snapshot everywhere and compact everything applied: lagging followers need InstallSnapshot.
      for (const n of this.alive()) this.maybeSnapshot(n, true);
      this.log('COMPACT all nodes');
    } else if (roll < 85) {
      this.blocked.clear();
      this.log('HEAL');
    } else if (roll < 93 && this.regime.clockDriftRatio > 0) {
      const nodes = this.alive();
      if (nodes.length > 0) this.changeClockRate(r.pick(nodes));
    }
  }

  private partition(): void {
    const r = this.rng;
    const ids = this.members().map((n) => n.id);
    if (ids.length < 2) return;
    const block = (a: NodeId, b: NodeId): void => {
      this.blocked.set(`${a}>${b}`, this.nowMs);
    };
    const cutBoth = (a: NodeId, b: NodeId): void => {
      block(a, b);
      block(b, a);
    };
    const shuffled = [...ids];
    for (let i = shuffled.length - 1; i > 0; i--) {
      const j = r.intn(i + 1);
      [shuffled[i], shuffled[j]] = [shuffled[j]!, shuffled[i]!];
    }
    this.blocked.clear();
    const kind = r.pick(['split', 'one-way', 'leader-isolated', 'bridge'] as const);
    if (kind === 'split') {
      const cut = 1 + r.intn(shuffled.length - 1);
      const a = shuffled.slice(0, cut);
      const b = shuffled.slice(cut);
      for (const x of a) for (const y of b) cutBoth(x, y);
      this.log(`PARTITION split ${a.join(',')} | ${b.join(',')}`);
    } else if (kind === 'one-way') {
      const from = shuffled[0]!;
      for (const y of shuffled.slice(1)) if (r.chance(0.7)) block(from, y);
      this.log(`PARTITION one-way: ${from} cannot send to some peers`);
    } else if (kind === 'leader-isolated') {
      this.isolate(this.leader()?.id ?? shuffled[0]!, ids);
      return;
    } else {
      if (shuffled.length < 3) return;
      const bridge = shuffled[0]!;
      const rest = shuffled.slice(1);
      const cut = 1 + r.intn(rest.length - 1);
      const a = rest.slice(0, cut);
      const b = rest.slice(cut);
      for (const x of a) for (const y of b) cutBoth(x, y);
      this.log(`PARTITION bridge ${bridge} between ${a.join(',')} | ${b.join(',')}`);
    }
    this.queue.push(this.nowMs + 200 + r.intn(1500), { kind: 'heal' });
  }

  /** Cuts `l` (a leader) off from the others, both ways, until a heal. */
  private isolate(l: NodeId, ids: NodeId[]): void {
    this.blocked.clear();
    for (const y of ids) {
      if (y === l) continue;
      this.blocked.set(`${l}>${y}`, this.nowMs);
      this.blocked.set(`${y}>${l}`, this.nowMs);
    }
    // Clients are spread over the network too: some keep talking to the
    // isolated (possibly deposed, not yet aware) leader, the rest to the others.
    const others = ids.filter((y) => y !== l);
    for (let c = 1; c <= this.regime.clients; c++) {
      this.clientGateway.set(c, this.rng.chance(0.5) ? l : this.rng.pick(others));
    }
    this.log(`PARTITION leader ${l} isolated`);
    this.queue.push(this.nowMs + 200 + this.rng.intn(1500), { kind: 'heal' });
  }

  private changeMembership(leader: SimNode | undefined): void {
    if (!leader?.raw) return;
    const r = this.rng;
    const core = leader.raw.core;
    const cs = core.tracker.confState();
    let cc: ConfChange | undefined;
    const mk = (transition: ConfChangeTransition, changes: ConfChange['changes']): ConfChange => ({
      transition,
      changes,
      context: new Uint8Array(0),
    });
    if (cs.votersOutgoing.length > 0) {
      cc = mk(ConfChangeTransition.Auto, []); // leave an explicit joint config
    } else if (cs.learners.length > 0 && r.chance(0.7)) {
      const learner = r.pick(cs.learners);
      if (cs.voters.length >= 5 || (cs.voters.length >= 3 && r.chance(0.4))) {
        // Replace a voter by the learner in one joint step.
        const out = r.pick(cs.voters);
        const transition = r.chance(0.5)
          ? ConfChangeTransition.JointImplicit
          : ConfChangeTransition.JointExplicit;
        cc = mk(transition, [
          { type: ConfChangeType.AddVoter, nodeId: learner },
          { type: ConfChangeType.RemoveNode, nodeId: out },
        ]);
      } else {
        cc = mk(ConfChangeTransition.Auto, [{ type: ConfChangeType.AddVoter, nodeId: learner }]);
      }
    } else if (cs.voters.length + cs.learners.length < 6 && this.nextNodeNumber <= 12 && r.chance(0.6)) {
      const n = this.addNode();
      this.log(`NEW node ${n.id} started (empty)`);
      cc = mk(ConfChangeTransition.Auto, [{ type: ConfChangeType.AddLearner, nodeId: n.id }]);
    } else if (cs.voters.length > 3) {
      cc = mk(ConfChangeTransition.Auto, [{ type: ConfChangeType.RemoveNode, nodeId: r.pick(cs.voters) }]);
    } else if (cs.learners.length > 0) {
      cc = mk(ConfChangeTransition.Auto, [{ type: ConfChangeType.RemoveNode, nodeId: r.pick(cs.learners) }]);
    } else if (cs.voters.length === 3 && r.chance(0.3)) {
      // Demote a voter to learner (it is promoted back later).
      cc = mk(ConfChangeTransition.Auto, [{ type: ConfChangeType.AddLearner, nodeId: r.pick(cs.voters) }]);
    }
    if (!cc) return;
    try {
      leader.raw.proposeConfChange(cc);
      this.log(
        `CONFCHANGE proposed at ${leader.id}: ${JSON.stringify(cc.changes)} transition=${cc.transition}`,
      );
    } catch (err) {
      if (!(err instanceof RequestDroppedError)) throw err;
      this.log(`CONFCHANGE refused: ${err.reason}`);
    }
    this.scheduleReady(leader);
  }

  // --- main loop ----------------------------------------------------------------

  run(): SimResult {
    let failure: string | undefined;
    try {
      this.runPhases();
    } catch (err) {
      if (err instanceof SimViolation) failure = err.message;
      else if (err instanceof RaftInvariantError) failure = `${err.message} (thrown by the Raft core)`;
      else failure = `unexpected error: ${(err as Error).stack ?? String(err)}`;
    }
    this.stats.steps = this.steps;
    this.stats.virtualMs = Math.round(this.nowMs);
    for (const n of this.nodes.values()) this.stats.leaseReads += n.raw?.core.readsServed.lease ?? 0;
    return {
      seed: this.opts.seed,
      ok: failure === undefined,
      failure,
      traceTail: this.traceTail(),
      stats: this.stats,
    };
  }

  private runPhases(): void {
    const voters: NodeId[] = [];
    for (let i = 1; i <= this.regime.initialVoters; i++) voters.push(`n${i}`);
    for (const _ of voters) this.addNode(voters);
    for (let c = 1; c <= this.regime.clients; c++)
      this.queue.push(50 + this.rng.intn(100), { kind: 'client', clientId: c });
    this.queue.push(this.regime.faultEveryMs, { kind: 'fault' });
    this.queue.push(100, { kind: 'timeouts' });

    // Fault phase.
    const faultEnd = this.opts.faultPhaseMs;
    const maxSteps = this.opts.maxSteps;
    this.runUntil(() => this.nowMs >= faultEnd || this.steps >= maxSteps);

    // Heal everything and let the cluster converge.
    this.faultsOn = false;
    this.blocked.clear();
    this.log('FINAL heal: no more faults, crashed members restart');
    for (const n of this.members()) if (!n.raw) this.startNode(n);
    const settleEnd = this.nowMs + this.opts.settleMs;
    this.runUntil(() => this.converged() || this.nowMs >= settleEnd);
    if (!this.converged())
      this.fail(
        `cluster did not converge within ${this.opts.settleMs}ms after healing: ${this.describeState()}`,
      );
    this.finalChecks();
  }

  private runUntil(done: () => boolean): void {
    for (let i = 1; ; i++) {
      if (i % 16 === 0 && done()) return;
      const ev = this.queue.pop();
      if (!ev) return;
      this.nowMs = ev.timeMs;
      this.steps++;
      this.handle(ev.event);
    }
  }

  private handle(ev: SimEvent): void {
    switch (ev.kind) {
      case 'tick': {
        const n = this.nodes.get(ev.node)!;
        if (!n.raw || n.incarnation !== ev.incarnation) return;
        // Scheduled at the rate of the time; if the clock slowed since, it is not time yet.
        const untilTickMs = n.lastTickLocalMs + this.opts.tickMs - this.localClockMs(n);
        if (untilTickMs > 1e-6) {
          this.queue.push(this.nowMs + untilTickMs / n.clockRate, ev);
          return;
        }
        n.lastTickLocalMs = this.localClockMs(n);
        n.raw.tick();
        this.scheduleReady(n);
        this.queue.push(this.nowMs + this.opts.tickMs / n.clockRate, ev);
        return;
      }
      case 'ready': {
        const n = this.nodes.get(ev.node)!;
        if (n.incarnation !== ev.incarnation) return;
        this.handleReady(n);
        return;
      }
      case 'persisted': {
        const n = this.nodes.get(ev.node)!;
        if (!n.raw || n.incarnation !== ev.incarnation) return; // crashed before the write finished
        n.saving = false;
        if (this.completeReady(n, ev.ready)) {
          this.checkLeaders();
          this.scheduleReady(n);
        }
        return;
      }
      case 'deliver':
        this.deliver(ev.msg, ev.sentAtMs);
        return;
      case 'snapStatus': {
        const n = this.nodes.get(ev.leader)!;
        if (!n.raw || n.incarnation !== ev.incarnation) return;
        n.raw.reportSnapshot(ev.to, ev.ok);
        this.scheduleReady(n);
        return;
      }
      case 'unreachable': {
        const n = this.nodes.get(ev.node)!;
        if (!n.raw || n.incarnation !== ev.incarnation) return;
        n.raw.reportUnreachable(ev.peer);
        return;
      }
      case 'restart': {
        const n = this.nodes.get(ev.node)!;
        if (n.raw || n.retired) return;
        this.log(`RESTART ${n.id} from persisted state (lastIndex ${n.storage.lastIndex()})`);
        this.startNode(n);
        return;
      }
      case 'retire': {
        const n = this.nodes.get(ev.node)!;
        if (n.retired) return;
        // Only if still not a member in the leader's view (it may have been re-added).
        const l = this.leader();
        if (l?.raw) {
          const cs = l.raw.core.tracker.confState();
          if ([...cs.voters, ...cs.votersOutgoing, ...cs.learners].includes(n.id)) return;
        } else return;
        this.crash(n, 'removed from the cluster');
        n.retired = true;
        this.log(`RETIRE ${n.id}`);
        return;
      }
      case 'isolate': {
        const n = this.nodes.get(ev.node)!;
        if (!this.faultsOn || !n.raw || n.incarnation !== ev.incarnation) return;
        this.isolate(
          n.id,
          this.members().map((m) => m.id),
        );
        return;
      }
      case 'heal':
        if (this.blocked.size > 0) this.log('HEAL');
        this.blocked.clear();
        return;
      case 'fault':
        if (!this.faultsOn) return;
        this.injectFault();
        this.queue.push(
          this.nowMs + this.regime.faultEveryMs / 2 + this.rng.intn(this.regime.faultEveryMs),
          ev,
        );
        return;
      case 'client':
        this.issueClientOp(ev.clientId);
        return;
      case 'timeouts':
        this.expireClientOps();
        this.queue.push(this.nowMs + 50, ev);
        return;
    }
  }

  /** Every live member applied everything the leader has, and no client op is outstanding. */
  private converged(): boolean {
    const l = this.leader();
    if (!l?.raw) return false;
    const core = l.raw.core;
    if (core.log.committed !== core.log.lastIndex()) return false;
    if (core.tracker.confState().votersOutgoing.length > 0) {
      // An explicit joint config is left by the operator; do it now.
      if (this.steps % 50 === 0) this.changeMembership(l);
      return false;
    }
    const members = new Set([...core.tracker.progress.keys()]);
    for (const n of this.nodes.values()) {
      if (!members.has(n.id)) continue;
      if (!n.raw) return false;
      if (n.sm.appliedIndex !== core.log.committed) return false;
      if (n.pendingOps.size > 0 || n.pendingReads.size > 0) return false;
    }
    return true;
  }

  private describeState(): string {
    const parts: string[] = [];
    for (const n of this.nodes.values()) {
      if (n.retired) continue;
      const st = n.raw?.status();
      parts.push(
        st
          ? `${n.id}:${Role[st.role]} t${st.term} commit=${st.commit} applied=${n.sm.appliedIndex} last=${st.lastIndex} lead=${st.leader || '-'} voters=${st.confState.voters.join(',')}${st.confState.votersOutgoing.length ? `&&${st.confState.votersOutgoing.join(',')}` : ''}`
          : `${n.id}:down`,
      );
    }
    const l = this.leader();
    if (l?.raw) {
      const core = l.raw.core;
      parts.push(
        `leader progress: ${core.tracker
          .ids()
          .map((id) => `${id}=${core.tracker.progress.get(id)!.describe()}`)
          .join(', ')}`,
      );
    }
    return parts.join('; ');
  }

  private finalChecks(): void {
    // Operations still waiting at non-member gateways never got an answer: indeterminate.
    for (const n of this.nodes.values()) {
      for (const op of n.pendingOps.values()) this.history.push(op.history);
      n.pendingOps.clear();
    }
    const l = this.leader()!;
    const members = new Set([...l.raw!.core.tracker.progress.keys()]);
    const replicas = [...this.nodes.values()].filter((n) => members.has(n.id) && n.raw);
    const fp = l.sm.fingerprint();
    for (const n of replicas) {
      if (n.sm.fingerprint() !== fp)
        this.fail(`replica ${n.id} state differs from leader ${l.id} after convergence`);
    }
    // No acknowledged write lost.
    for (const op of this.ackedOps) {
      for (const n of replicas)
        if (!n.sm.results.has(op)) this.fail(`acknowledged operation ${op} is missing on ${n.id}`);
    }
    const lin = checkLinearizability(this.history, { timeBudgetMs: this.opts.linearizabilityBudgetMs });
    this.stats.opsChecked = lin.opsChecked;
    if (lin.verdict === 'unknown') this.stats.linearizabilityUnknown = 1;
    if (lin.verdict === 'violation') {
      this.fail(`client history is not linearizable (key ${lin.key}): ${lin.detail ?? ''}`);
    }
  }
}

function entryKey(e: Entry): string {
  return `${e.type}:${textDecoder.decode(e.data)}`;
}

/** Runs one seed. */
export function runSimulation(options: SimOptions): SimResult {
  return new Simulation(options).run();
}
