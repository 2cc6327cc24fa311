// The agent's replica of the store as a Startable: opens the KvNode on start,
// and on a graceful stop hands leadership to another voter first so the
// cluster does not wait out an election timeout.
import type { KvNode, KvNodeOptions } from '@weft/kv/api/node';
import type { KvNodeLike } from '../kv-adapter/kvnode-store.js';
import type { Logger } from '../log/logger.js';
import type { Startable } from './startable.js';

export class KvNodeComponent implements Startable, KvNodeLike {
  private current?: KvNode;

  constructor(
    private readonly options: KvNodeOptions,
    private readonly open: (o: KvNodeOptions) => Promise<KvNode>,
    private readonly logger: Logger,
  ) {}

  /** The open node; throws (as "unavailable") while the agent is not started. */
  get node(): KvNode {
    if (!this.current) throw Object.assign(new Error('the KV node is not running'), { code: 'unavailable' });
    return this.current;
  }

  get isOpen(): boolean {
    return this.current !== undefined;
  }

  async start(): Promise<void> {
    if (this.current) return;
    this.current = await this.open(this.options);
    this.logger.info({ raftId: this.current.raftId }, 'KV node open');
  }

  async stop(): Promise<void> {
    const node = this.current;
    if (!node) return;
    this.current = undefined;
    await node.close();
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

  get: KvNodeLike['get'] = (...a) => this.node.get(...a);
  list: KvNodeLike['list'] = (...a) => this.node.list(...a);
  put: KvNodeLike['put'] = (...a) => this.node.put(...a);
  delete: KvNodeLike['delete'] = (...a) => this.node.delete(...a);
  txn: KvNodeLike['txn'] = (...a) => this.node.txn(...a);
  createSession: KvNodeLike['createSession'] = (...a) => this.node.createSession(...a);
  renewSession: KvNodeLike['renewSession'] = (...a) => this.node.renewSession(...a);
  destroySession: KvNodeLike['destroySession'] = (...a) => this.node.destroySession(...a);
  watchPrefix: KvNodeLike['watchPrefix'] = (...a) => this.node.watchPrefix(...a);
}
