#!/usr/bin/env node
// bench/kv/autopilot: how long a cluster with maxVoters 3, maxLearners 1
// takes to replace a dead voter. Per trial: 3 voters + 1 learner (KvNodes in
// this process: LevelDB on disk, libp2p on loopback), a writer through the
// learner, then the leader (or a follower) is stopped without a goodbye (its
// transport just closes, as after kill -9). Prints one JSON line per trial:
// ms from the death to the learner's promotion and to the dead voter's
// removal, and the longest gap between acknowledged writes; then a summary.
//
//   npm run bench:autopilot -w @weft/bench -- [--trials 5] [--threshold-ms 1500] [--victim leader|follower]
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KvNode, type KvNodeOptions } from '@weft/kv/api/node';
import { freePort } from '@weft/kv/testing/free-port';
import { waitUntil } from '@weft/kv/testing/wait-until';
import { benchArgs } from '../args.js';
import { median } from '../stats.js';

const args = benchArgs(
  'usage: npm run bench:autopilot -- [--trials 5] [--threshold-ms 1500] [--victim leader|follower]',
  {
    trials: { type: 'string', default: '5' },
    'threshold-ms': { type: 'string', default: '1500' },
    victim: { type: 'string', default: 'leader' },
  },
);
const trials = Number(args.trials);
const thresholdMs = Number(args['threshold-ms']);
const victimKind = args.victim;
if (!Number.isInteger(trials) || trials < 1)
  throw new Error(`--trials must be a positive integer, got ${args.trials}`);
if (!Number.isInteger(thresholdMs) || thresholdMs < 100)
  throw new Error(`--threshold-ms must be an integer >= 100, got ${args['threshold-ms']}`);
if (victimKind !== 'leader' && victimKind !== 'follower')
  throw new Error(`--victim must be leader or follower, got ${victimKind}`);

interface Trial {
  promotedMs: number;
  removedMs: number;
  longestWriteGapMs: number;
  writes: number;
}

async function trial(root: string): Promise<Trial> {
  const addresses = await Promise.all([0, 1, 2, 3].map(async () => `127.0.0.1:${await freePort()}`));
  const base = (i: number): KvNodeOptions => ({
    dataDir: join(root, `n${i}`),
    id: `n${i}`,
    listen: addresses[i]!,
    maxVoters: 3,
    maxLearners: 1,
    deadVoterThresholdMs: thresholdMs,
  });
  const nodes = await Promise.all(
    [0, 1, 2].map((i) => KvNode.open({ ...base(i), peers: addresses.slice(0, 3) })),
  );
  try {
    await Promise.all(nodes.map((n) => n.waitForLeader(30_000)));
    const learner = await KvNode.open({ ...base(3), join: addresses.slice(0, 3) });
    nodes.push(learner);
    await waitUntil('the learner to catch up', () => learner.status().appliedIndex > 0, 30_000);
    let writing = true;
    let writes = 0;
    let lastAckMs = Date.now();
    let longestWriteGapMs = 0;
    const writer = (async () => {
      for (let i = 0; writing; i++) {
        try {
          await learner.put(`bench/${i}`, new Uint8Array(16));
          const now = Date.now();
          longestWriteGapMs = Math.max(longestWriteGapMs, now - lastAckMs);
          lastAckMs = now;
          writes++;
        } catch {
          await new Promise((r) => setTimeout(r, 5));
        }
      }
    })();
    await new Promise((r) => setTimeout(r, 500));
    const victim = nodes
      .slice(0, 3)
      .find((n) => (n.status().role === 'leader') === (victimKind === 'leader'))!;
    const t0 = Date.now();
    lastAckMs = t0;
    longestWriteGapMs = 0;
    await victim.close();
    const survivor = nodes.slice(0, 3).find((n) => n !== victim)!;
    // Polled every 10 ms: the promotion and removal times are read when this returns.
    await waitUntil('the promotion', () => survivor.status().voters.includes(learner.raftId), 60_000, {
      intervalMs: 10,
    });
    const promotedMs = Date.now() - t0;
    await waitUntil('the removal', () => !survivor.status().voters.includes(victim.raftId), 60_000, {
      intervalMs: 10,
    });
    const removedMs = Date.now() - t0;
    await new Promise((r) => setTimeout(r, 300));
    writing = false;
    await writer;
    return { promotedMs, removedMs, longestWriteGapMs, writes };
  } finally {
    await Promise.all(nodes.map((n) => n.close()));
  }
}

const results: Trial[] = [];
for (let i = 0; i < trials; i++) {
  const root = await mkdtemp(join(tmpdir(), 'weft-bench-autopilot-'));
  try {
    const r = await trial(root);
    results.push(r);
    console.log(JSON.stringify({ bench: 'autopilot', trial: i + 1, victim: victimKind, thresholdMs, ...r }));
  } finally {
    await rm(root, { recursive: true, force: true });
  }
}
console.log(
  JSON.stringify({
    bench: 'autopilot',
    summary: true,
    victim: victimKind,
    thresholdMs,
    trials,
    promotedMsMedian: median(results.map((r) => r.promotedMs)),
    removedMsMedian: median(results.map((r) => r.removedMs)),
    longestWriteGapMsMedian: median(results.map((r) => r.longestWriteGapMs)),
  }),
);
