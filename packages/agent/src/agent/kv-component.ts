// The agent's part in the store as a Startable. As a voter or learner it
// opens a KvNode (a replica) on start, and on a graceful stop hands
// leadership to another voter first so the cluster does not wait out an
// election timeout. As a client (the cluster's voter and learner slots are
// full, see kv-role.ts) it opens a client of the servers instead, through
// `openClient`. Either way it is the overlay's store (KvNodeLike).
import type { KvNode, KvNodeOptions } from '@weft/kv/api/node';
import type { ConsulRequester } from '../kv-adapter/client-store.js';
import type { KvNodeLike } from '../kv-adapter/kvnode-store.js';
import type { Logger } from '../log/logger.js';
import { isRecordedClient, type KvRole, recordClientRole } from './kv-role.js';
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
}

export class KvNodeComponent implements Startable, KvNodeLike {
  private current?: KvNode;
  private client?: KvClientStore;
  private readonly fatalHandlers: Array<(err: Error) => void> = [];
  private startCancelled = false;

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

  /** Called if the KV node stops on its own (e.g. it was removed and the cluster is full). */
  onFatal(handler: (err: Error) => void): void {
    this.fatalHandlers.push(handler);
  }

  async start(): Promise<void> {
    if (this.current || this.client) return;
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
    const node = this.current;
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
    this.logger.info({ raftId: node.raftId, role: this.kvRole }, 'KV node open');
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
  }

  async stop(): Promise<void> {
    const node = this.current;
    const client = this.client;
    this.current = undefined;
    this.client = undefined;
    await node?.close();
    await client?.close();
  }

  /** If this node leads, hand leadership to the most caught-up other voter (best effort, bounded). */
  async transferLeadership(timeoutMs = 3_000): Promise<void> {
    const node = this.current;
    if (!node) return;
    const s = node.status();
    if (s.role !== 'leader') return;
    const target = s.voters.find((v) => v !== s.raftId);
    if (!target) return;
    try {
      await Promise.race([
        node.transferLeadership(target),
        new Promise((_, reject) =>
          setTimeout(() => reject(new Error(`no new leader within ${timeoutMs} ms`)), timeoutMs).unref(),
        ),
      ]);
      this.logger.info({ to: target }, 'leadership transferred');
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
