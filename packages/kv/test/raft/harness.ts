// A small in-process cluster for unit and transcript tests: real RawNodes on
// MemoryStorage, messages held in a queue that the test delivers explicitly
// (or all at once with stabilize()), with optional drop rules.
import { decodeConfChange } from '../../src/raft/confchange.js';
import { describeEntry, describeMessage } from '../../src/raft/describe.js';
import { MemoryStorage } from '../../src/raft/memory-storage.js';
import type { RaftConfig } from '../../src/raft/raft.js';
import { SeededRandom } from '../../src/raft/rand.js';
import { RawNode } from '../../src/raft/rawnode.js';
import {
  type ConfState,
  type Entry,
  EntryType,
  type Message,
  MessageType,
  type NodeId,
  type ReadState,
  Role,
} from '../../src/raft/types.js';

export interface HarnessNode {
  id: NodeId;
  raw: RawNode;
  storage: MemoryStorage;
  /** Data of every applied normal entry, in order (no-ops excluded). */
  applied: string[];
  readStates: ReadState[];
  confState: ConfState;
}

export type HarnessOptions = Partial<Omit<RaftConfig, 'id' | 'storage' | 'random'>>;

export class Harness {
  readonly nodes = new Map<NodeId, HarnessNode>();
  /** Messages sent and not yet delivered, in send order. */
  queue: Message[] = [];
  /** Directed links that drop messages: "from->to". */
  readonly cut = new Set<string>();
  readonly trace: string[] = [];
  /** Leave heartbeats out of the trace (they repeat every tick). */
  hideHeartbeats = false;
  private seed = 1;

  constructor(
    voters: NodeId[],
    readonly options: HarnessOptions = {},
  ) {
    for (const id of voters) this.addNode(id, voters);
  }

  /** Adds a node; with `bootstrapVoters` it is an initial member, else it starts empty (to be added by a conf change). */
  addNode(id: NodeId, bootstrapVoters?: NodeId[]): HarnessNode {
    const storage = new MemoryStorage();
    if (bootstrapVoters) storage.bootstrap(bootstrapVoters);
    return this.start(id, storage);
  }

  /** (Re)starts a node from what its storage holds; unpersisted state is gone. */
  start(id: NodeId, storage: MemoryStorage): HarnessNode {
    const raw = new RawNode({
      electionTimeoutTicks: 10,
      heartbeatTicks: 1,
      ...this.options,
      id,
      storage,
      random: new SeededRandom(this.seed++),
      logger: (line) => this.trace.push(line),
    });
    const snapData = new TextDecoder().decode(storage.snapshot().data);
    const n: HarnessNode = {
      id,
      raw,
      storage,
      applied: snapData === '' ? [] : (JSON.parse(snapData) as string[]),
      readStates: [],
      confState: storage.initialState().confState,
    };
    this.nodes.set(id, n);
    return n;
  }

  node(id: NodeId): HarnessNode {
    const n = this.nodes.get(id);
    if (!n) throw new Error(`no node ${id}`);
    return n;
  }

  /** Handles every Ready of node `id`: persist, queue messages, apply, advance. */
  process(id: NodeId): void {
    const n = this.node(id);
    for (let i = 0; i < 100 && n.raw.hasReady(); i++) {
      const rd = n.raw.ready();
      if (rd.snapshot) {
        n.storage.applySnapshot(rd.snapshot);
        n.confState = rd.snapshot.metadata.confState;
        const data = new TextDecoder().decode(rd.snapshot.data);
        n.applied = data === '' ? [] : (JSON.parse(data) as string[]);
        n.applied.push(`<snapshot ${rd.snapshot.metadata.index}>`);
      }
      n.storage.append(rd.entries);
      if (rd.hardState) n.storage.setHardState(rd.hardState);
      for (const m of rd.messages) this.queue.push(m);
      for (const e of rd.committedEntries) this.apply(n, e);
      n.readStates.push(...rd.readStates);
      n.raw.advance();
    }
  }

  private apply(n: HarnessNode, e: Entry): void {
    if (e.type === EntryType.ConfChange) {
      n.confState = n.raw.applyConfChange(decodeConfChange(e.data));
      n.applied.push(`<conf ${describeEntry(e)}>`);
    } else if (e.data.byteLength > 0) {
      n.applied.push(new TextDecoder().decode(e.data));
    }
  }

  processAll(): void {
    for (const id of [...this.nodes.keys()].sort()) this.process(id);
  }

  /** Delivers queued messages (optionally only those to `to`); returns how many were delivered. */
  deliver(filter?: (m: Message) => boolean): number {
    const now = this.queue.filter((m) => !filter || filter(m));
    this.queue = this.queue.filter((m) => filter && !filter(m));
    let n = 0;
    for (const m of now) {
      if (this.cut.has(`${m.from}->${m.to}`) || !this.nodes.has(m.to)) {
        if (!(this.hideHeartbeats && m.type === MessageType.Heartbeat))
          this.trace.push(`dropped ${describeMessage(m)}`);
        continue;
      }
      const dest = this.nodes.get(m.to);
      if (!dest) continue;
      if (
        !(this.hideHeartbeats && (m.type === MessageType.Heartbeat || m.type === MessageType.HeartbeatResp))
      ) {
        this.trace.push(describeMessage(m));
      }
      dest.raw.step(m);
      n++;
    }
    return n;
  }

  /** Processes and delivers until nothing is left to do. */
  stabilize(maxRounds = 200): void {
    for (let round = 0; round < maxRounds; round++) {
      this.processAll();
      if (this.queue.length === 0) return;
      this.deliver();
    }
    throw new Error(`cluster did not stabilize within ${maxRounds} rounds`);
  }

  /** Storage of crashed nodes (their "disk"), by id. */
  readonly crashed = new Map<NodeId, MemoryStorage>();

  /** Stops a node; whatever it did not persist (process()) is lost. Messages to it are dropped. */
  crash(id: NodeId): void {
    const n = this.node(id);
    this.crashed.set(id, n.storage);
    this.nodes.delete(id);
    // What it had queued for sending dies with it.
    this.queue = this.queue.filter((m) => m.from !== id);
  }

  restart(id: NodeId): HarnessNode {
    const storage = this.crashed.get(id);
    if (!storage) throw new Error(`${id} is not crashed`);
    this.crashed.delete(id);
    return this.start(id, storage);
  }

  /** Snapshots node `id` at its applied index and compacts its log up to there. */
  compact(id: NodeId): number {
    const n = this.node(id);
    const index = n.raw.status().applied;
    n.storage.createSnapshot(index, n.confState, new TextEncoder().encode(JSON.stringify(n.applied)));
    n.storage.compact(index);
    return index;
  }

  tick(id: NodeId, ticks = 1): void {
    for (let i = 0; i < ticks; i++) this.node(id).raw.tick();
  }

  isolate(id: NodeId): void {
    for (const other of this.nodes.keys()) {
      if (other === id) continue;
      this.cut.add(`${id}->${other}`);
      this.cut.add(`${other}->${id}`);
    }
  }

  heal(): void {
    this.cut.clear();
  }

  leaders(): NodeId[] {
    return [...this.nodes.values()].filter((n) => n.raw.status().role === Role.Leader).map((n) => n.id);
  }

  /** Elects `id` by timing it out (it must be able to win). */
  elect(id: NodeId): void {
    this.node(id).raw.campaign();
    this.stabilize();
  }

  propose(id: NodeId, data: string): void {
    this.node(id).raw.propose(new TextEncoder().encode(data));
  }
}
