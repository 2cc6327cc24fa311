#!/usr/bin/env node
import { mkdtemp, rm } from 'node:fs/promises';
// bench/kv-client: what a client agent pays for not being a Raft member. A
// 3-node in-process cluster (LevelDB in temp dirs, libp2p on 127.0.0.1) with
// the Consul HTTP API on TCP too; the same requests go to the same member
// (a follower, as most clients' server is) through KvClient's libp2p tunnel
// and through node:http over TCP with keep-alive, alternating in each round
// so machine noise hits both alike. Per mode: sequential latency p50/p99 and
// throughput at --concurrency. Prints one JSON line per measurement.
//
//   npm run bench:kv-client -w @weft/bench -- [--ops 500] [--concurrency 32] [--rounds 3]
import { Agent, request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { KvNode } from '@weft/kv/api/node';
import { KvClient } from '@weft/kv/client/kv-client';
import { freePort } from '@weft/kv/testing/free-port';
import { benchArgs } from './args.js';
import { median, percentileOfSorted } from './stats.js';

const args = benchArgs('usage: npm run bench:kv-client -- [--ops 500] [--concurrency 32] [--rounds 3]', {
  ops: { type: 'string', default: '500' },
  concurrency: { type: 'string', default: '32' },
  rounds: { type: 'string', default: '3' },
});
const ops = Number(args.ops);
const concurrency = Number(args.concurrency);
const rounds = Number(args.rounds);
for (const [name, v] of [
  ['ops', ops],
  ['concurrency', concurrency],
  ['rounds', rounds],
] as const) {
  if (!Number.isInteger(v) || v < 1) throw new Error(`--${name} must be a positive integer, got ${v}`);
}

type Op = (i: number) => Promise<unknown>;
async function sequential(op: Op): Promise<number[]> {
  const ms: number[] = [];
  for (let i = 0; i < ops; i++) {
    const t = performance.now();
    await op(i);
    ms.push(performance.now() - t);
  }
  return ms.sort((a, b) => a - b);
}

async function throughput(op: Op): Promise<number> {
  let next = 0;
  const t = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < ops) await op(next++);
    }),
  );
  return ops / ((performance.now() - t) / 1000);
}

const root = await mkdtemp(join(tmpdir(), 'weft-bench-kv-client-'));
const addresses: string[] = [];
for (let i = 0; i < 3; i++) addresses.push(`127.0.0.1:${await freePort()}`);
const nodes = await Promise.all(
  addresses.map((listen, i) =>
    KvNode.open({ dataDir: join(root, `n${i}`), id: `n${i}`, listen, peers: addresses, http: '127.0.0.1:0' }),
  ),
);
try {
  await Promise.all(nodes.map((n) => n.waitForLeader(30_000)));
  const server = nodes.find((n) => n.status().role !== 'leader')!;
  const client = await KvClient.connect({ servers: [server.raftId], refreshServersIntervalMs: 0 });
  const agent = new Agent({ keepAlive: true, maxSockets: concurrency });
  const base = `http://${server.httpAddress()}`;
  const tcp = (method: string, path: string, body?: Buffer) =>
    new Promise<void>((resolve, reject) => {
      const req = request(`${base}${path}`, { method, agent }, (res) => {
        res.resume();
        res.once('end', () =>
          res.statusCode === 200 ? resolve() : reject(new Error(`HTTP ${res.statusCode}`)),
        );
      });
      req.once('error', reject);
      req.end(body);
    });
  const value = Buffer.alloc(128, 'x');
  for (let i = 0; i < 100; i++) await server.put(`bench/k${i}`, value);
  const modes: Record<string, Record<string, Op>> = {
    'get (linearizable)': {
      tunnel: (i) => client.get(`bench/k${i % 100}`),
      tcp: (i) => tcp('GET', `/v1/kv/bench/k${i % 100}`),
    },
    'get ?stale': {
      tunnel: (i) => client.get(`bench/k${i % 100}`, { stale: true }),
      tcp: (i) => tcp('GET', `/v1/kv/bench/k${i % 100}?stale`),
    },
    put: {
      tunnel: (i) => client.put(`bench/k${i % 100}`, value),
      tcp: (i) => tcp('PUT', `/v1/kv/bench/k${i % 100}`, value),
    },
  };
  for (const [workload, paths] of Object.entries(modes)) {
    const results: Record<string, { p50Ms: number[]; p99Ms: number[]; opsPerSec: number[] }> = {};
    for (let round = 0; round < rounds; round++) {
      const order = round % 2 === 0 ? ['tunnel', 'tcp'] : ['tcp', 'tunnel'];
      for (const path of order) {
        const op = paths[path]!;
        results[path] ??= { p50Ms: [], p99Ms: [], opsPerSec: [] };
        const r = results[path];
        const lat = await sequential(op);
        r.p50Ms.push(percentileOfSorted(lat, 0.5));
        r.p99Ms.push(percentileOfSorted(lat, 0.99));
        r.opsPerSec.push(await throughput(op));
      }
    }
    const summary = Object.fromEntries(
      Object.entries(results).map(([k, r]) => [
        k,
        {
          p50Ms: +median(r.p50Ms).toFixed(2),
          p99Ms: +median(r.p99Ms).toFixed(2),
          opsPerSec: Math.round(median(r.opsPerSec)),
        },
      ]),
    );
    console.log(
      JSON.stringify({
        bench: 'kv-client',
        workload,
        ops,
        concurrency,
        rounds,
        ...summary,
        tunnelOverTcp: {
          p50: +(summary.tunnel!.p50Ms / summary.tcp!.p50Ms).toFixed(2),
          opsPerSec: +(summary.tunnel!.opsPerSec / summary.tcp!.opsPerSec).toFixed(2),
        },
      }),
    );
  }
  agent.destroy();
  await client.close();
} finally {
  await Promise.allSettled(nodes.map((n) => n.close()));
  await rm(root, { recursive: true, force: true });
}
