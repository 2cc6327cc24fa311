#!/usr/bin/env node
// weft-kv: a standalone member of a Weft KV cluster with Consul's HTTP KV API.
//
//   weft-kv serve --id n1 --data-dir /var/lib/weft-kv --listen 127.0.0.1:7001 \
//     --http 127.0.0.1:8501 --peers 127.0.0.1:7002,127.0.0.1:7003
//
// The same command restarts a node from its data directory. A new node joins
// a running cluster with --join ADDR instead of --peers. `weft-kv operator
// raft list-peers|remove-peer|transfer-leader` operate a running cluster
// through a member's HTTP API (operator.ts).
import { readFile } from 'node:fs/promises';
import { Command, InvalidArgumentError } from 'commander';
import { pino } from 'pino';
import {
  DEFAULT_CLUSTER_NAME,
  DEFAULT_ELECTION_TICKS,
  DEFAULT_SNAPSHOT_EVERY_ENTRIES,
  DEFAULT_TICK_MS,
  KvNode,
} from '../api/node.js';
import { parseHostPort, raftIdOf } from '../api/node-address.js';
import { KvMembershipFullError } from '../api/node-errors.js';
import { parseClusterKey } from '../transport/identity.js';
import { OperatorError, operatorCommand } from './operator.js';

function address(value: string): string {
  try {
    return raftIdOf(value);
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message);
  }
}

/** HTTP address: HOST:PORT, or a bare PORT on loopback. */
function httpAddress(value: string): string {
  return address(/^\d+$/.test(value.trim()) ? `127.0.0.1:${value.trim()}` : value);
}

function addressList(value: string): string[] {
  return value
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.length > 0)
    .map(address);
}

function positiveInt(value: string): number {
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n <= 0)
    throw new InvalidArgumentError(`expected a positive integer, got ${JSON.stringify(value)}`);
  return n;
}

function nonNegativeInt(value: string): number {
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n < 0)
    throw new InvalidArgumentError(`expected an integer >= 0, got ${JSON.stringify(value)}`);
  return n;
}

function driftRatio(value: string): number {
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n) || n < 0 || n > 10)
    throw new InvalidArgumentError(
      `expected a ratio between 0 and 10 (0.1 = 10%), got ${JSON.stringify(value)}`,
    );
  return n;
}

/** Exit status when the cluster refused this node because its voter and learner slots are full. */
const EXIT_MEMBERSHIP_FULL = 3;

function errorLine(err: Error): string {
  return err instanceof KvMembershipFullError ? `${err.name}: ${err.message}` : err.message;
}

interface ServeOptions {
  id: string;
  dataDir: string;
  listen: string;
  http?: string;
  peers: string[];
  join?: string[];
  cluster: string;
  maxVoters?: number;
  maxLearners?: number;
  deadVoterThresholdMs?: number;
  clusterKey?: string;
  tickMs: number;
  snapshotEntries: number;
  leaseReads: boolean;
  maxClockDriftRatio?: number;
  leaveOnTerminate: boolean;
  logLevel: string;
}

async function serve(opts: ServeOptions): Promise<void> {
  const log = pino({ level: opts.logLevel, base: { node: opts.id } }, pino.destination(2));
  let clusterKey: Uint8Array | undefined;
  if (opts.clusterKey) {
    try {
      clusterKey = await readFile(opts.clusterKey);
      parseClusterKey(clusterKey);
    } catch (err) {
      throw new Error(`--cluster-key ${opts.clusterKey}: ${(err as Error).message}`);
    }
  }
  if (opts.join && opts.join.length > 0 && opts.peers.length > 0) {
    log.warn('--peers is ignored with --join: a joining node learns the members from the cluster');
  }
  const http = opts.http ? parseHostPort(opts.http) : undefined;
  const node = await KvNode.open({
    dataDir: opts.dataDir,
    id: opts.id,
    listen: opts.listen,
    peers: opts.join ? [] : opts.peers,
    ...(opts.join ? { join: opts.join } : {}),
    cluster: opts.cluster,
    ...(clusterKey ? { clusterKey } : {}),
    ...(http ? { http } : {}),
    ...(opts.maxVoters !== undefined ? { maxVoters: opts.maxVoters } : {}),
    ...(opts.maxLearners !== undefined ? { maxLearners: opts.maxLearners } : {}),
    ...(opts.deadVoterThresholdMs !== undefined ? { deadVoterThresholdMs: opts.deadVoterThresholdMs } : {}),
    tickMs: opts.tickMs,
    snapshotEveryEntries: opts.snapshotEntries,
    leaseReads: opts.leaseReads,
    ...(opts.maxClockDriftRatio !== undefined ? { maxClockDriftRatio: opts.maxClockDriftRatio } : {}),
    log,
  });
  const httpAddress = node.httpAddress();
  // One machine-readable line on stdout: scripts and tests wait for it.
  process.stdout.write(
    `${JSON.stringify({ event: 'ready', name: node.name, raftId: node.raftId, cluster: node.cluster, http: httpAddress ?? null })}\n`,
  );
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'shutting down');
    // --leave-on-terminate: out of the configuration first (leadership handed
    // over, a learner promoted in its place), so the others stop counting it
    // for the quorum; it stops either way (leave() is bounded).
    const leave = opts.leaveOnTerminate
      ? node
          .leave()
          .then((r) =>
            r.left
              ? log.info('left the cluster')
              : log.warn({ reason: r.reason }, 'could not leave the cluster; stopping as a member'),
          )
      : Promise.resolve();
    leave
      .then(() => node.close())
      .then(() => process.exit(0))
      .catch((err) => {
        log.error({ err: (err as Error).message }, 'shutdown failed');
        process.exit(1);
      });
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  node.onFatal((err) => {
    log.error({ err: err.message }, 'fatal error: exiting');
    // The same one-line error the start-up path prints: a removed member finding the cluster full says so.
    process.stderr.write(`weft-kv: ${errorLine(err)}\n`);
    process.exit(err instanceof KvMembershipFullError ? EXIT_MEMBERSHIP_FULL : 1);
  });
}

const program = new Command('weft-kv')
  .description('Raft-replicated key-value store with a Consul-compatible HTTP API')
  .showHelpAfterError();

program
  .command('serve')
  .description('run a cluster member (creates, joins or restarts from --data-dir)')
  .requiredOption('--id <name>', 'name of this node (recorded in the data directory)')
  .requiredOption('--data-dir <dir>', "this node's state directory (created if missing)")
  .requiredOption(
    '--listen <host:port>',
    "Raft listen address; also this member's identity in the cluster",
    address,
  )
  .option(
    '--http <host:port>',
    'serve the Consul HTTP API here (a bare port means 127.0.0.1:PORT; bind loopback unless you mean to expose it)',
    httpAddress,
  )
  .option('--peers <list>', 'comma-separated Raft addresses of the other initial members', addressList, [])
  .option(
    '--join <list>',
    'join a running cluster through these members, comma-separated (new data directory only)',
    addressList,
  )
  .option(
    '--max-voters <n>',
    'as leader, promote learners only up to N voters (default: no limit)',
    positiveInt,
  )
  .option(
    '--max-learners <n>',
    'as leader, refuse joins beyond N learners (default: no limit)',
    nonNegativeInt,
  )
  .option(
    '--dead-voter-threshold-ms <ms>',
    'as leader, replace a voter (and drop a learner) silent for this long (default 10000)',
    positiveInt,
  )
  .option('--cluster <name>', 'cluster name: members of other clusters are refused', DEFAULT_CLUSTER_NAME)
  .option(
    '--cluster-key <file>',
    'pre-shared key file (libp2p private network): peers without it cannot connect',
  )
  .option(
    '--tick-ms <ms>',
    `Raft tick interval (heartbeat every tick, election timeout ${DEFAULT_ELECTION_TICKS} to ${2 * DEFAULT_ELECTION_TICKS - 1} ticks)`,
    positiveInt,
    DEFAULT_TICK_MS,
  )
  .option(
    '--snapshot-entries <n>',
    'snapshot and compact the log every N applied entries',
    positiveInt,
    DEFAULT_SNAPSHOT_EVERY_ENTRIES,
  )
  .option(
    '--no-lease-reads',
    'serve every linearizable read by a ReadIndex round, not from the leader lease (give it to every member alike; for machines whose monotonic clock can stop, e.g. suspended VMs)',
  )
  .option(
    '--max-clock-drift-ratio <r>',
    'how much faster one member clock may run than another, for leader leases (default 0.1)',
    driftRatio,
  )
  .option(
    '--leave-on-terminate',
    "on SIGTERM or SIGINT, leave the cluster before stopping (Consul's leave_on_terminate; start it again and it joins as a learner)",
    false,
  )
  .option('--log-level <level>', 'pino log level (stderr)', 'info')
  .action(async (opts: ServeOptions) => {
    try {
      await serve(opts);
    } catch (err) {
      process.stderr.write(`weft-kv: ${errorLine(err as Error)}\n`);
      process.exit(err instanceof KvMembershipFullError ? EXIT_MEMBERSHIP_FULL : 1);
    }
  });

program.addCommand(operatorCommand(httpAddress));

try {
  await program.parseAsync(process.argv);
} catch (err) {
  // serve reports its own failures; this is an operator command's (a member's answer, or none).
  if (!(err instanceof OperatorError)) throw err;
  process.stderr.write(`weft-kv: ${err.message}\n`);
  process.exit(1);
}
