// Prometheus metrics for one agent (served at GET /metrics). Gauges that
// mirror another component's state are filled at scrape time from the
// sources given here, so nothing has to push numbers on every change.

import type { DataplaneCounters } from '@weft/overlay';
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';

export interface RaftNumbers {
  term: number;
  commitIndex: number;
  appliedIndex: number;
  isLeader: boolean;
}

export interface MetricSources {
  raft?: () => RaftNumbers | undefined;
  /** Members known to the cluster (hosts registered in the store). */
  peers?: () => number;
  /** Endpoints by where they live. */
  endpoints?: () => { local: number; remote: number };
  dataplane?: () => Promise<DataplaneCounters>;
}

export type KvOp = 'get' | 'list' | 'put' | 'delete' | 'txn' | 'session' | 'watch';

export class AgentMetrics {
  readonly registry = new Registry();
  private sources: MetricSources = {};
  readonly kvOps: Counter<'op' | 'outcome'>;
  readonly kvLatencySeconds: Histogram<'op'>;

  constructor(opts: { defaultMetrics?: boolean } = {}) {
    if (opts.defaultMetrics ?? true)
      collectDefaultMetrics({ register: this.registry, prefix: 'weft_process_' });
    const gauge = (
      name: string,
      help: string,
      read: (g: Gauge) => void | Promise<void>,
      labelNames: string[] = [],
    ) =>
      new Gauge({
        name,
        help,
        labelNames,
        registers: [this.registry],
        async collect() {
          this.reset();
          await read(this);
        },
      });
    gauge('weft_raft_term', 'Current Raft term', (g) => {
      const r = this.sources.raft?.();
      if (r) g.set(r.term);
    });
    gauge('weft_raft_commit_index', 'Highest log index known committed', (g) => {
      const r = this.sources.raft?.();
      if (r) g.set(r.commitIndex);
    });
    gauge('weft_raft_applied_index', 'Highest log index applied to the KV state machine', (g) => {
      const r = this.sources.raft?.();
      if (r) g.set(r.appliedIndex);
    });
    gauge('weft_raft_is_leader', '1 when this agent is the Raft leader', (g) => {
      const r = this.sources.raft?.();
      if (r) g.set(r.isLeader ? 1 : 0);
    });
    gauge('weft_peers', 'Hosts registered in the cluster', (g) => {
      const n = this.sources.peers?.();
      if (n !== undefined) g.set(n);
    });
    gauge(
      'weft_endpoints',
      'Overlay endpoints known to this agent',
      (g) => {
        const e = this.sources.endpoints?.();
        if (e) {
          g.set({ location: 'local' }, e.local);
          g.set({ location: 'remote' }, e.remote);
        }
      },
      ['location'],
    );
    const dataplaneGauge = (
      name: string,
      help: string,
      pick: (c: DataplaneCounters[string]) => [string, number][],
    ) =>
      gauge(
        name,
        help,
        async (g) => {
          const read = this.sources.dataplane;
          if (!read) return;
          let counters: DataplaneCounters;
          try {
            counters = await read();
          } catch {
            return; // a scrape must not fail because one device vanished mid-read
          }
          for (const [network, c] of Object.entries(counters)) {
            for (const [direction, value] of pick(c)) g.set({ network, direction }, value);
          }
        },
        ['network', 'direction'],
      );
    dataplaneGauge('weft_dataplane_packets', 'Packets carried by the data plane per overlay network', (c) => [
      ['tx', c.txPackets],
      ['rx', c.rxPackets],
    ]);
    dataplaneGauge('weft_dataplane_bytes', 'Bytes carried by the data plane per overlay network', (c) => [
      ['tx', c.txBytes],
      ['rx', c.rxBytes],
    ]);
    dataplaneGauge(
      'weft_dataplane_drops',
      'Packets dropped by the data plane, by reason (in direction)',
      (c) => Object.entries(c.drops),
    );
    this.kvOps = new Counter({
      name: 'weft_kv_operations_total',
      help: 'KV operations issued by this agent',
      labelNames: ['op', 'outcome'],
      registers: [this.registry],
    });
    this.kvLatencySeconds = new Histogram({
      name: 'weft_kv_operation_seconds',
      help: 'Latency of KV operations issued by this agent',
      labelNames: ['op'],
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers: [this.registry],
    });
  }

  setSources(sources: MetricSources): void {
    this.sources = { ...this.sources, ...sources };
  }

  /** Times one KV operation and counts its outcome. */
  async observeKv<T>(op: KvOp, run: () => Promise<T>): Promise<T> {
    const end = this.kvLatencySeconds.startTimer({ op });
    try {
      const result = await run();
      this.kvOps.inc({ op, outcome: 'ok' });
      return result;
    } catch (err) {
      this.kvOps.inc({ op, outcome: 'error' });
      throw err;
    } finally {
      end();
    }
  }

  render(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}
