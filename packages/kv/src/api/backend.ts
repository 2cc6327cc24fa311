// The seam between the Consul-compatible HTTP server and whatever holds the
// state: LocalBackend (one process, no Raft; tests and reference) or the
// replicated KvNode. The HTTP server builds commands and reads state only
// through this interface; forwarding to the leader, ReadIndex and
// replication are the backend's business.
import type { KvStateReader } from '../fsm/state-machine.js';
import type { ApplyResult, Command, Watch, WatchTarget } from '../fsm/types.js';

/** Consul's read modes: ?consistent, default, ?stale. */
export type Consistency = 'default' | 'consistent' | 'stale';

export interface ReadView {
  /** The state machine as of the read; use it synchronously (it keeps changing afterwards). */
  state: KvStateReader;
  /** X-Consul-KnownLeader: whether this node knows a current leader. */
  knownLeader: boolean;
  /** X-Consul-LastContact: ms since this node last heard from the leader (0 on the leader). */
  lastContactMs: number;
}

export interface AppliedCommand {
  /** Raft index at which the command was applied. */
  index: number;
  /** What the state machine returned for it (on the node that applied it). */
  result: ApplyResult;
}

export interface KvBackend {
  /** Name of this node (default Node of sessions, like Consul's agent node name). */
  readonly nodeName: string;

  /**
   * Wall clock (ms) used to stamp commands (lock-delay). The state machine
   * itself never reads a clock.
   */
  nowMs(): number;

  /**
   * Replicate `command` and resolve once it is applied, with the state
   * machine's result. On a follower the node forwards to the leader.
   * Rejects with an error whose `code` is 'unavailable' when no quorum or
   * leader answers in time (the HTTP layer answers 503), or 'closed'.
   */
  apply(command: Command): Promise<AppliedCommand>;

  /**
   * A view of the state fit for `consistency`:
   *  - 'stale': this node's state right now, whatever its role;
   *  - 'default': the leader's state (a follower may use ReadIndex or forward);
   *  - 'consistent': linearizable (ReadIndex confirmed by a quorum).
   * Rejects like apply() when that cannot be had.
   */
  read(consistency: Consistency): Promise<ReadView>;

  /**
   * Register a waiter on this node's state machine for the next change that
   * touches `target`. Synchronous so a caller can register before reading
   * and never miss a change in between (blocking queries).
   */
  watch(target: WatchTarget): Watch;

  /** Raft address of the current leader ("127.0.0.1:7001"), '' when none is known. */
  leader(): Promise<string>;

  /** Raft addresses of the voting members. */
  peers(): Promise<string[]>;

  /** Every member with its role and name (GET /v1/operator/raft/configuration); optional: without it, 404. */
  membersWithNames?(): Promise<
    Array<{ id: string; address: string; name: string; role: 'voter' | 'learner'; leader: boolean }>
  >;

  /**
   * Removes the member `id` (its Raft address) from the configuration
   * (DELETE /v1/operator/raft/peer); optional: without it, 404. Rejects with
   * `code` 'membership' for a non-member or the last voter.
   */
  removeMember?(id: string): Promise<void>;

  /**
   * Hands leadership to the voter `id` and resolves once it leads
   * (POST /v1/operator/raft/transfer-leader); optional: without it, 404.
   */
  transferLeadership?(id: string): Promise<void>;
}

/** An error a backend raises when the cluster cannot serve the request now (no leader, no quorum, closed). */
export function isUnavailableError(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return code === 'unavailable' || code === 'closed';
}
