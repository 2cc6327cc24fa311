// `npm run sim -w @weft/kv -- --seeds N` (or `--seed S` to replay one seed).
// Prints one line per failing seed with its trace tail, and as the LAST line a
// JSON summary. Exit status 1 if any seed failed.
import { parseArgs } from 'node:util';
import type { TestingBugs } from '../raft/raft.js';
import { type Regime, runSimulation, type SimResult } from './simulator.js';

const bugNames = [
  'commitPreviousTermByCount',
  'skipVotePersist',
  'readIndexWithoutQuorum',
  'voteWithoutLogCheck',
  'leaseFromAckArrival',
  'leaseKeptAcrossTransfer',
] as const;

function main(): number {
  const { values } = parseArgs({
    options: {
      seeds: { type: 'string' },
      seed: { type: 'string' },
      first: { type: 'string' },
      steps: { type: 'string' },
      'fault-ms': { type: 'string' },
      bug: { type: 'string', multiple: true },
      regime: { type: 'string' },
      verbose: { type: 'boolean', short: 'v' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    console.log(
      'usage: cli.js [--seeds N | --seed S] [--first F] [--steps K] [--fault-ms MS] [--verbose]\n' +
        '  --seeds N     run seeds F..F+N-1 (default N=100, F=1)\n' +
        '  --seed S      run one seed (replay a failure); prints its trace tail\n' +
        '  --steps K     most simulation events per seed\n' +
        '  --fault-ms MS virtual length of the fault phase per seed\n' +
        '  --bug NAME    switch on a deliberate Raft bug (testing the simulator): ' +
        `${bugNames.join(', ')}\n` +
        '  --regime JSON fix parts of the per-seed regime, e.g. \'{"checkQuorum":false}\'',
    );
    return 0;
  }
  const int = (name: string, v: string | undefined, dflt: number): number => {
    if (v === undefined) return dflt;
    const n = Number(v);
    if (!Number.isInteger(n) || n < 0) {
      console.error(`--${name} must be a non-negative integer, got "${v}"`);
      process.exit(2);
    }
    return n;
  };
  const single = values.seed !== undefined;
  const first = single ? int('seed', values.seed, 1) : int('first', values.first, 1);
  const count = single ? 1 : int('seeds', values.seeds, 100);
  const maxSteps = values.steps !== undefined ? int('steps', values.steps, 0) : undefined;
  const faultPhaseMs = values['fault-ms'] !== undefined ? int('fault-ms', values['fault-ms'], 0) : undefined;

  const testingBugs: TestingBugs = {};
  for (const b of values.bug ?? []) {
    if (!(bugNames as readonly string[]).includes(b)) {
      console.error(`unknown --bug "${b}"; known: ${bugNames.join(', ')}`);
      process.exit(2);
    }
    testingBugs[b as (typeof bugNames)[number]] = true;
  }
  let regime: Partial<Regime> | undefined;
  if (values.regime !== undefined) {
    try {
      regime = JSON.parse(values.regime) as Partial<Regime>;
    } catch (err) {
      console.error(`--regime is not valid JSON: ${(err as Error).message}`);
      process.exit(2);
    }
  }
  const started = performance.now();
  const totals = {
    steps: 0,
    elections: 0,
    snapshots: 0,
    confChanges: 0,
    opsChecked: 0,
    appliedDuringSave: 0,
    leaseReads: 0,
    linearizabilityUnknown: 0,
  };
  let failures = 0;
  let firstFailingSeed: number | null = null;
  for (let seed = first; seed < first + count; seed++) {
    const r: SimResult = runSimulation({ seed, maxSteps, faultPhaseMs, testingBugs, regime });
    totals.steps += r.stats.steps;
    totals.elections += r.stats.elections;
    totals.snapshots += r.stats.snapshots;
    totals.confChanges += r.stats.confChanges;
    totals.opsChecked += r.stats.opsChecked;
    totals.appliedDuringSave += r.stats.appliedDuringSave;
    totals.leaseReads += r.stats.leaseReads;
    totals.linearizabilityUnknown += r.stats.linearizabilityUnknown;
    if (!r.ok) {
      failures++;
      firstFailingSeed ??= seed;
      console.log(`seed ${seed} FAILED: ${r.failure}`);
      const extra = [
        ...(values.bug ?? []).map((b) => `--bug ${b}`),
        ...(values.regime !== undefined ? [`--regime '${values.regime}'`] : []),
        ...(values.steps !== undefined ? [`--steps ${values.steps}`] : []),
        ...(values['fault-ms'] !== undefined ? [`--fault-ms ${values['fault-ms']}`] : []),
      ].join(' ');
      console.log(`  replay: node packages/kv/dist/src/sim/cli.js --seed ${seed}${extra ? ` ${extra}` : ''}`);
      console.log('  trace tail:');
      for (const line of r.traceTail) console.log(`    ${line}`);
    } else if (single || values.verbose) {
      console.log(`seed ${seed} ok: ${JSON.stringify(r.stats)}`);
      if (single && values.verbose) for (const line of r.traceTail) console.log(`    ${line}`);
    }
  }
  const seconds = (performance.now() - started) / 1000;
  console.log(
    JSON.stringify({
      seeds: count,
      failures,
      firstFailingSeed,
      ...totals,
      seconds: Number(seconds.toFixed(2)),
      seedsPerSecond: Number((count / seconds).toFixed(2)),
    }),
  );
  return failures === 0 ? 0 : 1;
}

process.exitCode = main();
