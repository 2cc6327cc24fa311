// A single-process KvBackend: commands go straight to a KvStateMachine with a
// monotonically increasing index, as if every proposal committed at once.
// Used by the HTTP tests and as the reference for what KvNode must provide.
// It still encodes every command, so it exercises the same bytes Raft carries.
import { encodeCommand } from '../fsm/codec.js';
import { SessionReaper } from '../fsm/session-reaper.js';
import { KvStateMachine } from '../fsm/state-machine.js';
import { TombstoneReaper } from '../fsm/tombstone-reaper.js';
import type { Command, Watch, WatchTarget } from '../fsm/types.js';
import type { AppliedCommand, Consistency, KvBackend, ReadView } from './backend.js';

export interface LocalBackendOptions {
  nodeName?: string;
  /** Address reported by /v1/status/leader and /peers. */
  address?: string;
  /** Injected wall clock (ms); default Date.now. */
  nowMs?: () => number;
  /** Session TTL grace multiplier for the built-in reaper (default 2, Consul's). */
  ttlGraceMultiplier?: number;
  /** How long deletions keep their tombstone (default 15 min, Consul's tombstone_ttl). */
  tombstoneTtlMs?: number;
}

export class LocalBackend implements KvBackend {
  readonly nodeName: string;
  readonly fsm = new KvStateMachine();
  private readonly address: string;
  private readonly clock: () => number;
  private readonly reaper: SessionReaper;
  private readonly tombstoneReaper: TombstoneReaper;
  private reaperTimer: NodeJS.Timeout | undefined;
  /**
   * Last index handed out. Starts at 1 as if Raft's leader had committed its
   * empty entry: the first command gets index 2, as on a real node, so an
   * empty table's index (reported as 1, never 0, like Consul) always moves
   * when the first write lands.
   */
  private index = 1;

  constructor(opts: LocalBackendOptions = {}) {
    this.nodeName = opts.nodeName ?? 'local';
    this.address = opts.address ?? '127.0.0.1:8300';
    this.clock = opts.nowMs ?? Date.now;
    this.reaper = new SessionReaper({ nowMs: this.clock, ttlGraceMultiplier: opts.ttlGraceMultiplier });
    this.tombstoneReaper = new TombstoneReaper({ nowMs: this.clock, tombstoneTtlMs: opts.tombstoneTtlMs });
  }

  nowMs(): number {
    return this.clock();
  }

  async apply(command: Command): Promise<AppliedCommand> {
    const bytes = encodeCommand(command);
    this.index += 1;
    return { index: this.index, result: this.fsm.apply(this.index, bytes) };
  }

  async read(_consistency: Consistency): Promise<ReadView> {
    // One process: every read is as fresh as a linearizable one.
    return { state: this.fsm, knownLeader: true, lastContactMs: 0 };
  }

  watch(target: WatchTarget): Watch {
    return this.fsm.watch(target);
  }

  async leader(): Promise<string> {
    return this.address;
  }

  async peers(): Promise<string[]> {
    return [this.address];
  }

  /**
   * One round of what a leader does periodically: destroy sessions whose TTL
   * ran out and reap old tombstones. Returns the destroyed session ids.
   */
  async reapExpiredSessions(): Promise<string[]> {
    const ids: string[] = [];
    for (const cmd of [...this.reaper.expired(this.fsm), ...this.tombstoneReaper.due(this.fsm)]) {
      await this.apply(cmd);
      if (cmd.type === 'session-destroy') ids.push(cmd.id);
    }
    return ids;
  }

  /** Run reapExpiredSessions every `intervalMs` until close(). */
  startReaper(intervalMs = 1000): void {
    if (this.reaperTimer) return;
    this.reaperTimer = setInterval(() => void this.reapExpiredSessions(), intervalMs);
    this.reaperTimer.unref();
  }

  close(): void {
    if (this.reaperTimer) clearInterval(this.reaperTimer);
    this.reaperTimer = undefined;
  }
}
