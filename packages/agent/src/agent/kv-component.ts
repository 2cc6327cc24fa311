// The agent's part in the store as a Startable. As a voter or learner it
// opens a KvNode (a replica) on start, and on a graceful stop hands
// leadership to another voter first so the cluster does not wait out an
// election timeout. As a client (the cluster's voter and learner slots are
// full, see kv-role.ts) it opens a client of the servers instead, through
// `openClient`, and keeps checking for a free slot: when one frees up (a
// learner was promoted, or a member left or died and was removed) it opens a
// replica that joins as a learner and becomes the store in the client's
// place. Either way it is the overlay's store (KvNodeLike).
import { joinRefusal } from '@weft/kv/api/autopilot';
import type { KvNode, KvNodeOptions } from '@weft/kv/api/node';
import type { ConsulRequester } from '../kv-adapter/client-store.js';
import type { KvNodeLike } from '../kv-adapter/kvnode-store.js';
import type { Logger } from '../log/logger.js';
import { clientRank, forgetClientRole, isRecordedClient, type KvRole, recordClientRole } from './kv-role.js';
import type { Startable } from './startable.js';

/** A Raft member as `weft members` shows it. */
export interface RaftMember {
  /** Raft address host:port. */
  address: string;
  name: string;
  role: 'voter' | 'learner';
  leader: boolean;
}

/**
 * A store that is not a Raft member: the servers' KV over the network.
 * `members` (e.g. from a server's GET /v1/operator/raft/configuration) lets a
 * client agent show the other hosts' roles; without it they show as unknown.
 */
export type KvClientStore = KvNodeLike & {
  close(): Promise<void>;
  /** The servers' Raft configuration (KvClient: GET /v1/operator/raft/configuration). */
  members?(options?: { timeoutMs?: number }): Promise<RaftMember[]>;
  /** Any Consul API request, passed on to a server (the agent's /v1/ API on a client host). */
  request?: ConsulRequester['request'];
};

/**
 * Opens the store of a client agent. `servers` are Raft addresses of members
 * to try (the initial voters first); `options` carries the cluster key and
 * name the servers expect, and the agent's name (`id`: its sessions' Node).
 */
export type KvClientFactory = (
  servers: string[],
  options: Pick<KvNodeOptions, 'clusterKey' | 'cluster' | 'log'> & Partial<Pick<KvNodeOptions, 'id'>>,
) => Promise<KvClientStore>;

export interface KvComponentRole {
  /** Where the agent records that it runs as a client (its data directory). */
  dataDir: string;
  /** Members a client connects to. */
  servers: string[];
  /** Client mode; when absent an agent that must be a client refuses to start, saying why. */
  openClient?: KvClientFactory;
  /** Every agent's Raft address (own and --peers): the order in which clients take a freed slot (see liveAddresses). */
  allAddresses?: string[];
  /** How often a client checks for a free voter or learner slot; 0 = never. */
  slotCheckIntervalMs?: number;
  /** leave() only hands over leadership and stays in the Raft configuration (--keep-raft-membership). */
  keepMembershipOnLeave?: boolean;
}

/** Default KvComponentRole.slotCheckIntervalMs (plus up to 20% jitter). */
export const DEFAULT_SLOT_CHECK_INTERVAL_MS = 2_000;
/** How long a graceful leave waits for the removal from the Raft configuration. */
const LEAVE_TIMEOUT_MS = 10_000;

export class KvNodeComponent implements Startable, KvNodeLike {
  private current?: KvNode;
  private client?: KvClientStore;
  private readonly fatalHandlers: Array<(err: Error) => void> = [];
  private startCancelled = false;
  /** Stopping or leaving: no client takes a slot any more. */
  private stopping = false;
  private slotTimer: NodeJS.Timeout | undefined;
  /** A client's attempt to take a slot, in progress. */
  private promotion: Promise<void> | undefined;
  /** Consecutive checks that found a slot free (see clientRank). */
  private freeSlotChecks = 0;
  private liveAddresses: (() => string[]) | undefined;

  constructor(
    private readonly options: KvNodeOptions,
    private readonly open: (o: KvNodeOptions) => Promise<KvNode>,
    private readonly logger: Logger,
    private readonly role?: KvComponentRole,
  ) {}

  /** The open node; throws (as "unavailable") while the agent is not started, or runs as a client. */
  get node(): KvNode {
    if (!this.current) throw Object.assign(new Error('the KV node is not running'), { code: 'unavailable' });
    return this.current;
  }

  /** True while a KV node (voter or learner) is open; false for a client. */
  get isOpen(): boolean {
    return this.current !== undefined;
  }

  /** The store of a client agent (undefined for a voter or learner, or before start). */
  get clientStore(): KvClientStore | undefined {
    return this.client;
  }

  /** Members a client of the store would use. */
  get servers(): string[] {
    return this.role?.servers ?? [];
  }

  /** This agent's part in the store, once started. */
  get kvRole(): KvRole | undefined {
    if (this.client) return 'client';
    if (!this.current) return undefined;
    return this.current.status().voters.includes(this.current.raftId) ? 'voter' : 'learner';
  }

  /** The Raft members: this node's configuration, or as a client the servers' (when the client can tell). */
  async raftMembers(): Promise<RaftMember[] | undefined> {
    if (this.current) return this.current.members();
    // Undefined when no server tells in time: other hosts' roles then show as unknown rather than wrong.
    return this.client?.members?.({ timeoutMs: 2_000 }).catch(() => undefined);
  }

  /**
   * Raft addresses of the hosts that are up (the overlay's host registry):
   * clients rank among these rather than among every --peers address, so a
   * client that is down, or an agent that left, holds nobody up.
   */
  setLiveAddresses(source: () => string[]): void {
    this.liveAddresses = source;
  }

  /** Called if the KV node stops on its own (e.g. it was removed and the cluster is full). */
  onFatal(handler: (err: Error) => void): void {
    this.fatalHandlers.push(handler);
  }

  async start(): Promise<void> {
    if (this.current || this.client) return;
    this.stopping = false;
    if (this.role && (await isRecordedClient(this.role.dataDir))) {
      await this.startClient(
        'this agent was refused a voter or learner slot before (recorded in its data directory)',
      );
      return;
    }
    try {
      this.current = await this.openPatiently();
    } catch (err) {
      if (!this.role || (err as { code?: unknown }).code !== 'membership-full') throw err;
      await recordClientRole(this.role.dataDir);
      await this.startClient((err as Error).message);
      return;
    }
    this.watchFatal(this.current);
    this.logger.info({ raftId: this.current.raftId, role: this.kvRole }, 'KV node open');
  }

  private watchFatal(node: KvNode): void {
    node.onFatal((err) => {
      if ((err as { code?: unknown }).code === 'membership-full' && this.role) {
        // Removed while away and no slot left: the next start runs as a client.
        void recordClientRole(this.role.dataDir).catch(() => {});
        this.logger.error(
          { err: err.message },
          'this agent was removed from the KV cluster and the cluster is full: restart it and it runs as a client',
        );
      }
      for (const handler of this.fatalHandlers) handler(err);
    });
  }

  /**
   * A learner started together with the voters may find no leader to join
   * through for a while (they are still starting, electing): it keeps asking,
   * as long as the overlay waits for the store, unless the start is cancelled.
   */
  private async openPatiently(maxWaitMs = 300_000): Promise<KvNode> {
    const deadline = Date.now() + maxWaitMs;
    for (;;) {
      try {
        return await this.open(this.options);
      } catch (err) {
        const message = (err as Error).message;
        const retryable =
          (err as { code?: unknown }).code === 'membership' &&
          /could not join/.test(message) &&
          !/belongs to cluster/.test(message);
        if (!retryable || this.startCancelled || Date.now() > deadline) throw err;
        this.logger.info(
          { err: message },
          'no member took the join yet (the voters may be electing); retrying',
        );
      }
    }
  }

  /** Gives up a start in progress after its current attempt. */
  cancelStart(): void {
    this.startCancelled = true;
  }

  private async startClient(reason: string): Promise<void> {
    const role = this.role!;
    if (!role.openClient) {
      throw new Error(
        `this agent must run as a client of the KV store (${reason}), but this build has no client mode; raise --learners on every agent, or start this one with a fresh --data-dir once a slot is free`,
      );
    }
    this.client = await role.openClient(role.servers, {
      ...(this.options.clusterKey !== undefined ? { clusterKey: this.options.clusterKey } : {}),
      ...(this.options.cluster !== undefined ? { cluster: this.options.cluster } : {}),
      ...(this.options.log ? { log: this.options.log } : {}),
      id: this.options.id, // the agent's name: the Node of its sessions
    });
    this.logger.info({ servers: role.servers, reason }, 'running as a client of the KV store');
    this.scheduleSlotCheck();
  }

  private scheduleSlotCheck(): void {
    const intervalMs = this.role?.slotCheckIntervalMs ?? DEFAULT_SLOT_CHECK_INTERVAL_MS;
    if (intervalMs <= 0 || this.stopping || !this.client) return;
    this.slotTimer = setTimeout(
      () => {
        this.promotion = this.checkForSlot()
          .catch((err) =>
            this.logger.warn({ err: (err as Error).message }, 'checking for a free KV slot failed'),
          )
          .finally(() => {
            this.promotion = undefined;
            this.scheduleSlotCheck();
          });
      },
      intervalMs * (1 + 0.2 * Math.random()),
    );
    this.slotTimer.unref();
  }

  /** A client: asks the servers for the configuration and takes a free slot when it is its turn. */
  private async checkForSlot(): Promise<void> {
    const client = this.client;
    if (!client?.members || this.stopping) return;
    const members = await client.members({ timeoutMs: 2_000 }).catch(() => undefined);
    if (!members) return;
    const addresses = (role: RaftMember['role']) =>
      members.filter((m) => m.role === role).map((m) => m.address);
    const limits = {
      maxVoters: this.options.maxVoters ?? Infinity,
      maxLearners: this.options.maxLearners ?? Infinity,
    };
    if (joinRefusal({ voters: addresses('voter'), learners: addresses('learner') }, limits)) {
      this.freeSlotChecks = 0;
      return;
    }
    this.freeSlotChecks++;
    const live = this.liveAddresses?.() ?? [];
    const all = live.length > 0 ? live : (this.role?.allAddresses ?? []);
    const rank = clientRank(
      this.options.listen,
      all,
      members.map((m) => m.address),
    );
    if (this.freeSlotChecks <= rank) return;
    await this.becomeMember(client);
  }

  /**
   * Opens a replica that joins as a learner and, once it has caught up, makes
   * it the store in place of `client`. Refused as full (another client was
   * quicker), it stays a client.
   */
  private async becomeMember(client: KvClientStore): Promise<void> {
    const role = this.role!;
    this.logger.info('a KV slot is free: joining as a learner');
    let node: KvNode;
    try {
      // A fresh directory joins through the servers; one that left joins again (KvNode.open).
      node = await this.open({ ...this.options, join: role.servers });
    } catch (err) {
      const full = (err as { code?: unknown }).code === 'membership-full';
      this.logger.info(
        { err: (err as Error).message },
        full ? 'the free slot was taken by another agent; still a client' : 'joining failed; still a client',
      );
      return;
    }
    try {
      // A linearizable read returns once this replica has applied all that was committed when
      // it asked: the overlay must not watch a replica that has not caught up (it would see the
      // networks and hosts missing).
      await node.get('weft/v1/');
      if (this.stopping || this.client !== client) throw new Error('the agent is stopping');
    } catch (err) {
      this.logger.warn({ err: (err as Error).message }, 'the new replica did not catch up; still a client');
      await node.leave({ timeoutMs: 3_000 }).catch(() => {});
      await node.close();
      return;
    }
    await forgetClientRole(role.dataDir);
    this.current = node;
    this.client = undefined;
    this.watchFatal(node);
    this.logger.info(
      { raftId: node.raftId, role: this.kvRole },
      'this agent is now a KV replica (it was a client)',
    );
    // The overlay's watch on the client breaks here and is set up again on the replica.
    await client.close().catch(() => {});
  }

  async stop(): Promise<void> {
    this.stopping = true;
    clearTimeout(this.slotTimer);
    await this.promotion;
    const node = this.current;
    const client = this.client;
    this.current = undefined;
    this.client = undefined;
    await node?.close();
    await client?.close();
  }

  /**
   * Graceful leave (before stop): if this agent's replica leads, it hands
   * leadership over; then it is removed from the Raft configuration, a
   * healthy learner promoted in its place first (KvNode.leave). Best effort
   * and bounded: when the removal cannot be made (it would cost the quorum,
   * no leader) the agent stops anyway, still a member, as if killed (the
   * autopilot replaces it later). A client has nothing to leave. With
   * keepMembershipOnLeave it only hands over leadership, so that a restart
   * (an upgrade) comes back as the same voter without membership changes.
   */
  async leave(timeoutMs = LEAVE_TIMEOUT_MS): Promise<void> {
    this.stopping = true;
    clearTimeout(this.slotTimer);
    await this.promotion;
    const node = this.current;
    if (!node) return;
    if (this.role?.keepMembershipOnLeave) {
      await this.handOverLeadership(node);
      return;
    }
    const result = await node
      .leave({ timeoutMs })
      .catch((err: Error) => ({ left: false, reason: err.message }));
    const s = node.status();
    if (result.left)
      this.logger.info({ raftId: node.raftId }, 'left the KV cluster (removed from the Raft configuration)');
    else if (s.voters.length === 1 && s.voters[0] === node.raftId)
      this.logger.info(
        { raftId: node.raftId, learners: s.learners },
        'the last voter stays in the Raft configuration, holding the data: start this agent again to bring the cluster back',
      );
    else
      this.logger.warn(
        { raftId: node.raftId, reason: result.reason },
        'could not leave the KV cluster; stopping as a member (the autopilot replaces it once it is past the dead-voter threshold)',
      );
  }

  /** If `node` leads, hands leadership to another voter (best effort, bounded): the others need not wait out an election. */
  private async handOverLeadership(node: KvNode, timeoutMs = 3_000): Promise<void> {
    const s = node.status();
    const target = s.role === 'leader' ? s.voters.find((v) => v !== s.raftId) : undefined;
    if (target === undefined) return;
    try {
      await Promise.race([
        node.transferLeadership(target),
        new Promise((_, reject) =>
          setTimeout(() => reject(new Error(`no new leader within ${timeoutMs} ms`)), timeoutMs).unref(),
        ),
      ]);
      this.logger.info({ to: target }, 'leadership transferred; staying in the Raft configuration');
    } catch (err) {
      this.logger.warn(
        { err: (err as Error).message, to: target },
        'leadership transfer failed; the others will elect a leader',
      );
    }
  }

  /** The store calls go to the node, or to the client. */
  private get store(): KvNodeLike {
    return this.client ?? this.node;
  }

  get: KvNodeLike['get'] = (...a) => this.store.get(...a);
  list: KvNodeLike['list'] = (...a) => this.store.list(...a);
  put: KvNodeLike['put'] = (...a) => this.store.put(...a);
  delete: KvNodeLike['delete'] = (...a) => this.store.delete(...a);
  txn: KvNodeLike['txn'] = (...a) => this.store.txn(...a);
  createSession: KvNodeLike['createSession'] = (...a) => this.store.createSession(...a);
  renewSession: KvNodeLike['renewSession'] = (...a) => this.store.renewSession(...a);
  destroySession: KvNodeLike['destroySession'] = (...a) => this.store.destroySession(...a);
  watchPrefix: KvNodeLike['watchPrefix'] = (...a) => this.store.watchPrefix(...a);
}
