#!/usr/bin/env node
// bench/overlay: the overlay control plane on a real 3-node @weft/kv cluster
// (in-process KvNodes: LevelDB in temp dirs, libp2p on 127.0.0.1), one
// OverlayManager per node through the KvNodeStore adapter, recording data
// planes (this measures the control plane, not devices). Two numbers:
//   attach → peer-added: from calling attach() on one host until another
//     host's manager emits peer-added for that endpoint (p50/p99 over N
//     attaches, one at a time, rotating the attaching host);
//   host death → reclaimed: a host's manager stops renewing without leaving
//     and its KV node closes; time until every survivor has dropped the dead
//     host's endpoints from its peer table, and until the store no longer
//     holds them (fresh cluster per trial; the victim alternates between a
//     Raft follower and the Raft leader).
//   concurrent attach: 3 hosts × 50 attaches at once to one network (wall
//     time, per-attach latency, and a check that no address is given twice).
// Prints one JSON line per measurement.
//
//   npm run bench:overlay -w @weft/bench -- [--attaches 200] [--death-trials 3] [--session-ttl-ms 2000]
import { performance } from 'node:perf_hooks';
import { KvNodeStore } from '@weft/agent/kv-adapter/kvnode-store';
import type { KvNode } from '@weft/kv/api/node';
import { openLoopbackCluster } from '@weft/kv/testing/loopback-cluster';
import { waitUntil } from '@weft/kv/testing/wait-until';
import { OverlayManager, type RemotePeer } from '@weft/overlay';
import { RecordingDataplane } from '@weft/overlay/testing/recording-dataplane';
import { benchArgs } from './args.js';
import { summarizeMs } from './stats.js';

const args = benchArgs(
  'usage: npm run bench:overlay -- [--attaches 200] [--death-trials 3] [--session-ttl-ms 2000]',
  {
    attaches: { type: 'string', default: '200' },
    'death-trials': { type: 'string', default: '3' },
    'session-ttl-ms': { type: 'string', default: '2000' },
  },
);

function intArg(name: string, raw: string | undefined, min: number, max: number): number {
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min || n > max)
    throw new Error(`--${name} must be an integer in ${min}..${max}, got ${JSON.stringify(raw)}`);
  return n;
}

const attachCount = intArg('attaches', args.attaches, 1, 250);
const deathTrials = intArg('death-trials', args['death-trials'], 0, 4);
const sessionTtlMs = intArg('session-ttl-ms', args['session-ttl-ms'], 500, 10_000);
/** The whole run must stay bounded; past this the process exits non-zero. */
const runBudgetMs = 115_000;
const tickMs = 50;
/** The store is polled this often while timing its reclaim (the peer events carry their own timestamps). */
const pollEvery = { intervalMs: 2 };

interface Host {
  name: string;
  node: KvNode;
  store: KvNodeStore;
  manager: OverlayManager;
  /** endpoint id → performance.now() when this host's manager emitted peer-added / peer-removed for it. */
  peerAddedAt: Map<string, number>;
  peerRemovedAt: Map<string, number>;
}

interface Bed {
  hosts: Host[];
  /** Closes the node of host i (idempotent). */
  killNode(i: number): Promise<void>;
  close(): Promise<void>;
}

async function openBed(): Promise<Bed> {
  const cluster = await openLoopbackCluster(3, { tickMs });
  const managers: OverlayManager[] = [];
  const close = async () => {
    await Promise.allSettled(managers.map((m) => m.stop()));
    await cluster.close();
  };
  try {
    const hosts = await Promise.all(
      cluster.nodes.map(async (node, i): Promise<Host> => {
        const store = new KvNodeStore(node);
        const manager = new OverlayManager({
          store,
          dataplane: new RecordingDataplane(),
          hostname: `bench${i}`,
          advertise: `192.0.2.${i + 1}`,
          peerId: `peer-bench${i}`,
          defaultAddressPools: [{ base: '198.18.0.0/15', size: 24 }],
          sessionTtlMs,
          writeTimeoutMs: 10_000,
        });
        managers.push(manager);
        const peerAddedAt = new Map<string, number>();
        const peerRemovedAt = new Map<string, number>();
        manager.on('peer-added', (p: RemotePeer) => peerAddedAt.set(p.endpointId, performance.now()));
        manager.on('peer-removed', (p: RemotePeer) => peerRemovedAt.set(p.endpointId, performance.now()));
        manager.on('warning', () => undefined); // expected while a host dies; the measurement says what matters
        await manager.start();
        return { name: `bench${i}`, node, store, manager, peerAddedAt, peerRemovedAt };
      }),
    );
    return { hosts, killNode: cluster.kill, close };
  } catch (err) {
    await close();
    throw err;
  }
}

/** Every host joins `network` with one plumbed endpoint, so each has a peer table (and peer events) for it. */
async function joinAll(hosts: Host[], network: string): Promise<void> {
  for (const h of hosts)
    await h.manager.attach({ network, name: `${h.name}-base`, sandbox: `sb-${h.name}`, ifName: 'eth0' });
}

async function benchAttach(bed: Bed): Promise<void> {
  const { hosts } = bed;
  const net = await hosts[0]!.manager.createNetwork({
    name: 'bench-attach',
    subnets: [{ subnet: '198.18.0.0/23' }],
  });
  await joinAll(hosts, net.id);
  const toPeer: number[] = [];
  const attachCall: number[] = [];
  for (let i = 0; i < attachCount; i++) {
    const from = hosts[i % hosts.length]!;
    const to = hosts[(i + 1) % hosts.length]!;
    const t0 = performance.now();
    const ep = await from.manager.attach({
      network: net.id,
      name: `c${i}`,
      sandbox: `sb-c${i}`,
      ifName: 'eth0',
    });
    attachCall.push(performance.now() - t0);
    await waitUntil(
      `peer-added for ${ep.name} on ${to.name}`,
      () => to.peerAddedAt.has(ep.id),
      10_000,
      pollEvery,
    );
    toPeer.push((to.peerAddedAt.get(ep.id) as number) - t0);
  }
  console.log(
    JSON.stringify({
      bench: 'overlay.attach-to-peer-added',
      cluster: '3 KvNodes (LevelDB, libp2p on loopback), 3 OverlayManagers',
      tickMs,
      attachToPeerAdded: summarizeMs(toPeer),
      attachCall: summarizeMs(attachCall),
    }),
  );
}

/** 50 attaches per host, all at once, to one network: how the create-only address keys behave under contention. */
async function benchConcurrentAttach(bed: Bed): Promise<void> {
  const { hosts } = bed;
  const perHost = 50;
  const net = await hosts[1]!.manager.createNetwork({
    name: 'bench-burst',
    subnets: [{ subnet: '198.18.3.0/24' }],
  });
  for (const h of hosts)
    await waitUntil(
      `bench-burst on ${h.name}`,
      () => h.manager.listNetworks().some((n) => n.id === net.id),
      10_000,
      pollEvery,
    );
  let sessionsLost = 0;
  for (const h of hosts) h.manager.on('session-lost', () => sessionsLost++);
  const t0 = performance.now();
  const latencies: number[] = [];
  const results = await Promise.allSettled(
    hosts.flatMap((h) =>
      Array.from({ length: perHost }, async (_, i) => {
        const started = performance.now();
        const ep = await h.manager.attach({
          network: net.id,
          name: `${h.name}-b${i}`,
          sandbox: `sb-b${i}`,
          ifName: 'eth1',
        });
        latencies.push(performance.now() - started);
        return ep;
      }),
    ),
  );
  const wallMs = performance.now() - t0;
  const ips = results.flatMap((r) => (r.status === 'fulfilled' ? [r.value.ip] : []));
  console.log(
    JSON.stringify({
      bench: 'overlay.concurrent-attach',
      attaches: hosts.length * perHost,
      failed: results.length - ips.length,
      duplicateAddresses: ips.length - new Set(ips).size,
      // Host sessions that expired during the burst (renewals starved): every host runs in this one process.
      sessionsLost,
      sessionTtlMs,
      wallMs: Math.round(wallMs),
      attachesPerSecond: Math.round((ips.length / wallMs) * 1000),
      attachCall: summarizeMs(latencies),
    }),
  );
}

interface DeathSample {
  victimRole: 'follower' | 'leader';
  victimEndpoints: number;
  peersDroppedMs: number;
  storeReclaimedMs: number;
}

async function deathTrial(bed: Bed, victimRole: 'follower' | 'leader'): Promise<DeathSample> {
  const { hosts } = bed;
  const victimIndex = hosts.findIndex((h) =>
    victimRole === 'leader' ? h.node.status().role === 'leader' : h.node.status().role !== 'leader',
  );
  if (victimIndex < 0) throw new Error(`no ${victimRole} to kill`);
  const victim = hosts[victimIndex]!;
  const survivors = hosts.filter((h) => h !== victim);
  const net = await survivors[0]!.manager.createNetwork({
    name: 'bench-death',
    subnets: [{ subnet: '198.18.2.0/24' }],
  });
  await joinAll(hosts, net.id);
  const doomed = await Promise.all(
    Array.from({ length: 10 }, (_, i) =>
      victim.manager.attach({ network: net.id, name: `doomed${i}`, sandbox: `sb-d${i}`, ifName: 'eth0' }),
    ),
  );
  // Every endpoint the victim holds (this trial's and any earlier ones): reclaim is batched, so the count matters.
  const doomedIds = victim.manager
    .listEndpoints()
    .filter((e) => e.host === victim.name)
    .map((e) => e.id);
  if (!doomed.every((e) => doomedIds.includes(e.id)))
    throw new Error('the victim does not list its own endpoints');
  await waitUntil(
    'survivors to see the victim endpoints as peers',
    () => survivors.every((h) => doomedIds.every((id) => h.peerAddedAt.has(id))),
    10_000,
    pollEvery,
  );

  const t0 = performance.now();
  await victim.manager.stop(); // no leave: the session simply stops being renewed
  await bed.killNode(victimIndex);
  const boundMs = 4 * sessionTtlMs + 15_000;
  let storeReclaimedAt = 0;
  const store = survivors[0]!.store;
  await waitUntil(
    'the dead host endpoints to be reclaimed everywhere',
    async () => {
      if (storeReclaimedAt === 0) {
        const left = await store.list('weft/v1/endpoints/', { stale: true });
        if (left.every((e) => !doomedIds.some((id) => e.key.endsWith(id))))
          storeReclaimedAt = performance.now();
      }
      return storeReclaimedAt > 0 && survivors.every((h) => doomedIds.every((id) => h.peerRemovedAt.has(id)));
    },
    boundMs,
    pollEvery,
  );
  const peersDroppedAt = Math.max(
    ...survivors.flatMap((h) => doomedIds.map((id) => h.peerRemovedAt.get(id) as number)),
  );
  return {
    victimRole,
    victimEndpoints: doomedIds.length,
    peersDroppedMs: Math.round(peersDroppedAt - t0),
    storeReclaimedMs: Math.round(storeReclaimedAt - t0),
  };
}

async function main(): Promise<void> {
  const budget = setTimeout(() => {
    console.error(`bench:overlay exceeded its ${runBudgetMs} ms budget; exiting`);
    process.exit(2);
  }, runBudgetMs);
  budget.unref();

  const samples: DeathSample[] = [];
  let bed = await openBed();
  try {
    await benchAttach(bed);
    for (let trial = 0; trial < deathTrials; trial++) {
      if (trial > 0) {
        await bed.close();
        bed = await openBed();
      }
      samples.push(await deathTrial(bed, trial % 2 === 0 ? 'follower' : 'leader'));
    }
    // On a fresh cluster, so the burst neither inherits nor leaves load for the other measurements.
    await bed.close();
    bed = await openBed();
    await benchConcurrentAttach(bed);
  } finally {
    await bed.close();
  }
  if (deathTrials > 0) {
    console.log(
      JSON.stringify({
        bench: 'overlay.host-death-to-reclaimed',
        sessionTtlMs,
        // Sessions expire between TTL and 2 × TTL after the last renewal (Consul's grace), later after a leader change.
        expiryWindowMs: [sessionTtlMs, 2 * sessionTtlMs],
        peersDropped: summarizeMs(samples.map((s) => s.peersDroppedMs)),
        storeReclaimed: summarizeMs(samples.map((s) => s.storeReclaimedMs)),
        trials: samples,
      }),
    );
  }
}

main().catch((err) => {
  console.error(err instanceof Error ? (err.stack ?? err.message) : err);
  process.exit(1);
});
