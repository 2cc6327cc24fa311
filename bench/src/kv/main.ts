#!/usr/bin/env node
// bench/kv: Weft's replicated KV against etcd on the same machine, in the same
// invocation. Both 3-node clusters run on loopback; each workload runs against
// Weft and etcd alternately (order swapped each round) so machine noise hits
// both alike. Prints one JSON line per workload and one for failover.
//
//   npm run bench:kv -w @weft/bench -- [--concurrency 64] [--duration-ms 5000] [--rounds 3]
//        [--value-bytes 128] [--keys 1000] [--workloads put,get,get-stale,mixed] [--failover-trials 5]
//        [--warmup-ms 8000] [--compare-bin OTHER/packages/kv/bin/weft-kv]
//        [--compare-node-args="--some-v8-flag ..."]
// --warmup-ms: before the measured rounds, each cluster serves the mixed
// workload this long, unmeasured. A fresh weft-kv process spends its first
// seconds compiling (V8's optimizing compiler runs on helper threads, counted
// in the server's CPU): measured at concurrency 64, its CPU per put fell from
// ~1.5 ms in the first 4 s to ~0.75 ms after 16 s. etcd (Go) has no such phase;
// a long-running server's cost is the one after it. 0 measures cold processes.
// --compare-bin adds a third cluster, "base", running another build of weft-kv
// (e.g. a worktree of an older commit), alternated with the other two: each
// line then also holds base's figures and weft's ratio to them. Give its
// launcher (packages/kv/bin/weft-kv); a build without one, by its
// dist/src/bin/weft-kv.js, runs with plain `node` (no launcher flags).
// --compare-node-args gives base's processes these Node/V8 flags (with this
// build unless --compare-bin names another): a flag judged in the same run.
import http from 'node:http';
import { benchArgs } from '../args.js';
import { median } from '../stats.js';
import { type BenchCluster, EtcdCluster, type ReadMode, WeftKvCluster } from './clusters.js';
import { type LoadResult, request, runLoad } from './loadgen.js';

const args = benchArgs(
  'usage: npm run bench:kv -- [--concurrency 64] [--duration-ms 5000] [--rounds 3] [--value-bytes 128] [--keys 1000]\n' +
    '       [--workloads put,get,get-stale,mixed] [--failover-trials 5] [--failover-concurrency 8] [--warmup-ms 8000]\n' +
    '       [--compare-bin OTHER/packages/kv/bin/weft-kv] [--compare-node-args="FLAGS"]',
  {
    concurrency: { type: 'string', default: '64' },
    'duration-ms': { type: 'string', default: '5000' },
    rounds: { type: 'string', default: '3' },
    'value-bytes': { type: 'string', default: '128' },
    keys: { type: 'string', default: '1000' },
    workloads: { type: 'string', default: 'put,get,get-stale,mixed' },
    'failover-trials': { type: 'string', default: '5' },
    'failover-concurrency': { type: 'string', default: '8' },
    'warmup-ms': { type: 'string', default: '8000' },
    'compare-bin': { type: 'string' },
    'compare-node-args': { type: 'string' },
  },
);

function positiveInt(name: string, raw: string | undefined, allowZero = false): number {
  const n = Number(raw);
  if (!Number.isInteger(n) || n < (allowZero ? 0 : 1))
    throw new Error(
      `--${name} must be a ${allowZero ? 'non-negative' : 'positive'} integer, got ${JSON.stringify(raw)}`,
    );
  return n;
}

const concurrency = positiveInt('concurrency', args.concurrency);
const durationMs = positiveInt('duration-ms', args['duration-ms']);
const rounds = positiveInt('rounds', args.rounds);
const valueBytes = positiveInt('value-bytes', args['value-bytes']);
const keyCount = positiveInt('keys', args.keys);
const failoverTrials = positiveInt('failover-trials', args['failover-trials'], true);
const failoverConcurrency = positiveInt('failover-concurrency', args['failover-concurrency']);
const warmupMs = positiveInt('warmup-ms', args['warmup-ms'], true);
const workloads = String(args.workloads).split(',');
for (const w of workloads) {
  if (!['put', 'get', 'get-stale', 'mixed'].includes(w))
    throw new Error(`unknown workload ${JSON.stringify(w)} (put, get, get-stale, mixed)`);
}

const value = Buffer.alloc(valueBytes, 'x');
let rng = 0x9e3779b9;
const nextKey = () => {
  rng ^= rng << 13;
  rng ^= rng >>> 17;
  rng ^= rng << 5;
  return `bench/k${(rng >>> 0) % keyCount}`;
};

function workloadRequest(c: BenchCluster, workload: string, worker: number) {
  const node = worker % 3;
  const read = (mode: ReadMode) => c.get(node, nextKey(), mode);
  switch (workload) {
    case 'put':
      return c.put(node, nextKey(), value);
    case 'get':
      return read('linearizable');
    case 'get-stale':
      return read('stale');
    case 'mixed-warmup': // half writes, half linearizable reads: every path the workloads use gets compiled
      return (rng >>> 0) % 2 === 0 ? c.put(node, nextKey(), value) : read('linearizable');
    default: // mixed: 90% linearizable reads, 10% writes
      return (rng >>> 0) % 10 === 0 ? c.put(node, nextKey(), value) : read('linearizable');
  }
}

async function preload(c: BenchCluster): Promise<void> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 16 });
  const batch: Promise<unknown>[] = [];
  for (let k = 0; k < keyCount; k++) {
    batch.push(request(c.put(k % 3, `bench/k${k}`, value), agent));
    if (batch.length === 16) await Promise.all(batch.splice(0));
  }
  await Promise.all(batch);
  agent.destroy();
}

function summarize(results: LoadResult[], cpuMsPerOp: number[]) {
  const mean = (f: (r: LoadResult) => number) => results.reduce((s, r) => s + f(r), 0) / results.length;
  return {
    opsPerSecond: Math.round(mean((r) => r.opsPerSecond)),
    p50Ms: Number(mean((r) => r.p50Ms).toFixed(2)),
    p99Ms: Number(mean((r) => r.p99Ms).toFixed(2)),
    serverCpuMsPerOp: Number((cpuMsPerOp.reduce((s, x) => s + x, 0) / cpuMsPerOp.length).toFixed(3)),
    errors: results.reduce((s, r) => s + r.errors, 0),
    rounds: results.map((r) => Math.round(r.opsPerSecond)),
    ...(results.find((r) => r.firstError)
      ? { firstError: results.find((r) => r.firstError)!.firstError }
      : {}),
  };
}

/** Kill -9 the leader under write load; the window is kill → first write acknowledged after it. */
async function failoverTrial(c: BenchCluster): Promise<number> {
  const leader = await c.leader();
  if (leader < 0) throw new Error(`${c.name}: no leader before failover trial`);
  let killedAt = Number.POSITIVE_INFINITY;
  let firstAckAfterKill = Number.POSITIVE_INFINITY;
  let stop = false;
  const workers = Array.from({ length: failoverConcurrency }, async (_, w) => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    for (let seq = 0; !stop; seq++) {
      const candidates = [0, 1, 2].filter((i) => c.alive(i));
      const node = candidates[(w + seq) % candidates.length]!;
      const startedAt = performance.now();
      try {
        const res = await request(c.put(node, `bench/failover/${w}`, value), agent, 3000);
        if (res.status === 200 && startedAt > killedAt)
          firstAckAfterKill = Math.min(firstAckAfterKill, performance.now());
      } catch {
        await new Promise((r) => setTimeout(r, 5)); // connection refused from the dead node: pick another
      }
    }
    agent.destroy();
  });
  await new Promise((r) => setTimeout(r, 1000));
  killedAt = performance.now();
  c.kill(leader);
  const deadline = Date.now() + 15_000;
  while (firstAckAfterKill === Number.POSITIVE_INFINITY && Date.now() < deadline)
    await new Promise((r) => setTimeout(r, 10));
  stop = true;
  await Promise.all(workers);
  await c.restart(leader);
  if (firstAckAfterKill === Number.POSITIVE_INFINITY)
    throw new Error(`${c.name}: no write acknowledged within 15 s of killing the leader`);
  return firstAckAfterKill - killedAt;
}

async function main(): Promise<void> {
  EtcdCluster.ensureInstalled();
  const weft = new WeftKvCluster();
  const etcd = new EtcdCluster();
  const baseNodeArgs = (args['compare-node-args'] ?? '').split(' ').filter(Boolean);
  const base =
    args['compare-bin'] || baseNodeArgs.length > 0
      ? new WeftKvCluster('base', args['compare-bin'], baseNodeArgs)
      : undefined;
  const clusters: BenchCluster[] = base ? [weft, base, etcd] : [weft, etcd];
  const cleanup = async () => {
    await Promise.allSettled(clusters.map((c) => c.stop()));
  };
  process.once('SIGINT', () => void cleanup().then(() => process.exit(130)));
  try {
    // One after the other: freePort() hands out a port that is free now, and a
    // cluster starting in parallel could be handed the same one before the first binds it.
    for (const c of clusters) await c.start();
    for (const c of clusters) await preload(c);
    if (warmupMs > 0) {
      for (const c of clusters)
        await runLoad({
          concurrency,
          durationMs: warmupMs,
          next: (w) => workloadRequest(c, 'mixed-warmup', w),
        });
    }
    for (const workload of workloads) {
      const results: Record<string, LoadResult[]> = { weft: [], etcd: [], base: [] };
      // Server CPU per operation: on a machine shared with other work, throughput follows it.
      const cpuPerOp: Record<string, number[]> = { weft: [], etcd: [], base: [] };
      for (let round = 0; round < rounds; round++) {
        const order = round % 2 === 0 ? clusters : [...clusters].reverse();
        for (const c of order) {
          const cpuBefore = c.cpuMs();
          const r = await runLoad({ concurrency, durationMs, next: (w) => workloadRequest(c, workload, w) });
          cpuPerOp[c.name]!.push((c.cpuMs() - cpuBefore) / Math.max(1, r.ops));
          results[c.name]!.push(r);
        }
      }
      const w = summarize(results.weft!, cpuPerOp.weft!);
      const e = summarize(results.etcd!, cpuPerOp.etcd!);
      const b = base ? summarize(results.base!, cpuPerOp.base!) : undefined;
      console.log(
        JSON.stringify({
          bench: 'kv',
          workload,
          concurrency,
          durationMs,
          warmupMs,
          valueBytes,
          keys: keyCount,
          weft: w,
          etcd: e,
          ratio: Number((w.opsPerSecond / e.opsPerSecond).toFixed(3)),
          p99Ratio: Number((w.p99Ms / e.p99Ms).toFixed(3)),
          ...(b
            ? {
                base: b,
                ratioToBase: Number((w.opsPerSecond / b.opsPerSecond).toFixed(3)),
                baseRatio: Number((b.opsPerSecond / e.opsPerSecond).toFixed(3)),
              }
            : {}),
        }),
      );
    }
    if (failoverTrials > 0) {
      const windows: Record<string, number[]> = { weft: [], etcd: [], base: [] };
      for (let t = 0; t < failoverTrials; t++) {
        const order = t % 2 === 0 ? clusters : [...clusters].reverse();
        for (const c of order) windows[c.name]!.push(await failoverTrial(c));
      }
      const fmt = (xs: number[]) => ({ medianMs: Math.round(median(xs)), trialsMs: xs.map(Math.round) });
      console.log(
        JSON.stringify({
          bench: 'kv-failover',
          concurrency: failoverConcurrency,
          weft: fmt(windows.weft!),
          etcd: fmt(windows.etcd!),
          ...(base ? { base: fmt(windows.base!) } : {}),
          ratio: Number((median(windows.weft!) / median(windows.etcd!)).toFixed(3)),
        }),
      );
    }
  } finally {
    await cleanup();
  }
}

main().catch((err) => {
  console.error(`bench/kv failed: ${(err as Error).stack ?? err}`);
  process.exit(1);
});
