// Three-node clusters on loopback for the KV benchmark: Weft's `weft-kv` and
// etcd (Debian's etcd-server, v3 JSON gateway). Both expose the same small
// surface so the benchmark can drive them alternately with one load generator.
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort } from '@weft/kv/testing/free-port';
import { waitUntil } from '@weft/kv/testing/wait-until';
import { type HttpRequestSpec, request } from './loadgen.js';

export type ReadMode = 'linearizable' | 'stale';

export interface BenchCluster {
  readonly name: string;
  start(): Promise<void>;
  stop(): Promise<void>;
  /** Index of the current leader, or -1. */
  leader(): Promise<number>;
  kill(i: number): void;
  restart(i: number): Promise<void>;
  alive(i: number): boolean;
  /** CPU time (user + system) the cluster's live processes used so far, in ms (Linux /proc). */
  cpuMs(): number;
  put(node: number, key: string, value: Buffer): HttpRequestSpec;
  get(node: number, key: string, mode: ReadMode): HttpRequestSpec;
}

/** /proc/PID/stat counts CPU time in clock ticks: USER_HZ, 100 on Linux. */
const CLOCK_TICK_MS = 10;

const probeAgent = new http.Agent({ keepAlive: false });

abstract class ProcessCluster implements BenchCluster {
  abstract readonly name: string;
  protected procs: (ChildProcess | null)[] = [null, null, null];
  protected readonly dir = mkdtempSync(join(tmpdir(), 'weft-bench-'));

  protected abstract spawnNode(i: number, restart: boolean): ChildProcess;
  abstract leader(): Promise<number>;
  abstract put(node: number, key: string, value: Buffer): HttpRequestSpec;
  abstract get(node: number, key: string, mode: ReadMode): HttpRequestSpec;
  protected abstract allocatePorts(): Promise<void>;

  protected launch(i: number, restart: boolean): void {
    const p = this.spawnNode(i, restart);
    p.stdout?.resume();
    p.stderr?.resume();
    this.procs[i] = p;
    p.once('exit', () => {
      if (this.procs[i] === p) this.procs[i] = null;
    });
  }

  async start(): Promise<void> {
    await this.allocatePorts();
    for (let i = 0; i < 3; i++) this.launch(i, false);
    await this.waitReady();
  }

  /** A cheap request any serving member answers. */
  protected abstract probe(node: number): HttpRequestSpec;

  async waitReady(): Promise<number> {
    // A member still starting refuses connections: an error means "not yet".
    return waitUntil(
      `${this.name} leader, a successful write and every live member serving`,
      async () => {
        const l = await this.leader();
        if (l < 0) return undefined;
        const res = await request(this.put(l, 'bench/ready', Buffer.from('1')), probeAgent, 2000);
        if (res.status !== 200) return undefined;
        // The leader answering does not mean the others listen yet; the workloads use all three.
        for (let i = 0; i < 3; i++) {
          if (this.alive(i) && (await request(this.probe(i), probeAgent, 2000)).status !== 200)
            return undefined;
        }
        return l;
      },
      30_000,
      { intervalMs: 50, retryErrors: true },
    );
  }

  alive(i: number): boolean {
    return this.procs[i] !== null;
  }

  cpuMs(): number {
    let ticks = 0;
    for (const p of this.procs) {
      if (!p?.pid) continue;
      try {
        // Fields after the parenthesised command name: utime and stime are the 12th and 13th.
        const stat = readFileSync(`/proc/${p.pid}/stat`, 'utf8');
        const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
        ticks += Number(fields[11]) + Number(fields[12]);
      } catch {
        // exited meanwhile
      }
    }
    return ticks * CLOCK_TICK_MS;
  }

  kill(i: number): void {
    this.procs[i]?.kill('SIGKILL');
    this.procs[i] = null;
  }

  async restart(i: number): Promise<void> {
    this.launch(i, true);
    await this.waitReady();
  }

  async stop(): Promise<void> {
    // SIGTERM first when profiling (WEFT_BENCH_NODE_ARGS=--cpu-prof …): Node writes the profile only on a clean exit.
    const graceMs = process.env.WEFT_BENCH_NODE_ARGS ? 5_000 : 0;
    const exits = this.procs.map(
      (p) =>
        new Promise<void>((resolve) => {
          if (!p || p.exitCode !== null) return resolve();
          p.once('exit', () => resolve());
          if (graceMs === 0) return void p.kill('SIGKILL');
          p.kill('SIGTERM');
          setTimeout(() => p.kill('SIGKILL'), graceMs).unref();
        }),
    );
    await Promise.all(exits);
    rmSync(this.dir, { recursive: true, force: true });
  }
}

export class EtcdCluster extends ProcessCluster {
  readonly name = 'etcd';
  private clientPorts: number[] = [];
  private peerPorts: number[] = [];
  private memberIds: string[] = [];

  static ensureInstalled(): void {
    if (existsSync('/usr/bin/etcd')) return;
    console.error('installing etcd-server (Debian) for the benchmark…');
    execFileSync('apt-get', ['install', '-y', '-qq', 'etcd-server'], {
      stdio: 'inherit',
      env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
    });
  }

  protected async allocatePorts(): Promise<void> {
    for (let i = 0; i < 3; i++) {
      this.clientPorts.push(await freePort());
      this.peerPorts.push(await freePort());
    }
  }

  protected spawnNode(i: number): ChildProcess {
    const cluster = this.peerPorts.map((p, j) => `e${j}=http://127.0.0.1:${p}`).join(',');
    return spawn(
      'etcd',
      [
        '--name',
        `e${i}`,
        '--data-dir',
        join(this.dir, `e${i}`),
        '--listen-client-urls',
        `http://127.0.0.1:${this.clientPorts[i]}`,
        '--advertise-client-urls',
        `http://127.0.0.1:${this.clientPorts[i]}`,
        '--listen-peer-urls',
        `http://127.0.0.1:${this.peerPorts[i]}`,
        '--initial-advertise-peer-urls',
        `http://127.0.0.1:${this.peerPorts[i]}`,
        '--initial-cluster',
        cluster,
        '--initial-cluster-state',
        'new',
        '--initial-cluster-token',
        'weft-bench',
        '--logger',
        'zap',
        '--log-level',
        'error',
      ],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
        env: { ...process.env, ETCD_UNSUPPORTED_ARCH: process.arch === 'x64' ? '' : process.arch },
      },
    );
  }

  private post(node: number, path: string, body: unknown): HttpRequestSpec {
    return {
      method: 'POST',
      host: '127.0.0.1',
      port: this.clientPorts[node]!,
      path,
      body: Buffer.from(JSON.stringify(body)),
      headers: { 'content-type': 'application/json' },
    };
  }

  protected probe(node: number): HttpRequestSpec {
    return this.post(node, '/v3/maintenance/status', {});
  }

  async leader(): Promise<number> {
    for (let i = 0; i < 3; i++) {
      if (!this.alive(i)) continue;
      try {
        const res = await request(this.probe(i), probeAgent, 1000);
        const status = JSON.parse(res.body.toString()) as {
          header?: { member_id?: string };
          leader?: string;
        };
        if (status.header?.member_id) this.memberIds[i] = status.header.member_id;
        if (status.leader && status.leader !== '0') {
          const idx = this.memberIds.indexOf(status.leader);
          if (idx >= 0 && this.alive(idx)) return idx;
        }
      } catch {
        // try the next member
      }
    }
    return -1;
  }

  put(node: number, key: string, value: Buffer): HttpRequestSpec {
    return this.post(node, '/v3/kv/put', {
      key: Buffer.from(key).toString('base64'),
      value: value.toString('base64'),
    });
  }

  get(node: number, key: string, mode: ReadMode): HttpRequestSpec {
    return this.post(node, '/v3/kv/range', {
      key: Buffer.from(key).toString('base64'),
      ...(mode === 'stale' ? { serializable: true } : {}),
    });
  }
}

/** The `weft-kv` command as installed: a launcher that runs Node with the flags a member runs with. */
const weftKvBin = fileURLToPath(new URL('../../../../packages/kv/bin/weft-kv', import.meta.url));

export class WeftKvCluster extends ProcessCluster {
  private raftPorts: number[] = [];
  private httpPorts: number[] = [];

  /**
   * `bin`: another build's `weft-kv` launcher (packages/kv/bin/weft-kv), or
   * its dist/src/bin/weft-kv.js for a build without one (run with plain
   * `node`, so without the launcher's flags), to compare two builds in one
   * run (main.ts --compare-bin). `nodeArgs`: Node/V8 flags added for this
   * cluster's processes (--compare-node-args), after those of
   * WEFT_BENCH_NODE_ARGS; the launcher takes them in WEFT_KV_NODE_FLAGS.
   */
  constructor(
    readonly name = 'weft',
    private readonly bin = weftKvBin,
    private readonly nodeArgs: readonly string[] = [],
  ) {
    super();
  }

  protected async allocatePorts(): Promise<void> {
    if (!existsSync(this.bin)) throw new Error(`${this.bin} not found: run \`npm run build\` first`);
    for (let i = 0; i < 3; i++) {
      this.raftPorts.push(await freePort());
      this.httpPorts.push(await freePort());
    }
  }

  protected spawnNode(i: number): ChildProcess {
    const peers = this.raftPorts.filter((_, j) => j !== i).map((p) => `127.0.0.1:${p}`);
    // WEFT_BENCH_NODE_ARGS: extra Node flags for the weft-kv processes, e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof".
    const nodeArgs = [
      ...(process.env.WEFT_BENCH_NODE_ARGS ?? '').split(' ').filter(Boolean),
      ...this.nodeArgs,
    ];
    const env: NodeJS.ProcessEnv = { ...process.env, WEFT_LOG_LEVEL: 'error' };
    const launcher = !this.bin.endsWith('.js');
    if (launcher) env.WEFT_KV_NODE_FLAGS = nodeArgs.join(' ');
    // The launcher execs Node: the child's PID is the member's (cpuMs reads its /proc entry).
    return spawn(
      launcher ? this.bin : process.execPath,
      [
        ...(launcher ? [] : [...nodeArgs, this.bin]),
        'serve',
        '--id',
        `n${i + 1}`,
        '--data-dir',
        join(this.dir, `n${i + 1}`),
        '--listen',
        `127.0.0.1:${this.raftPorts[i]}`,
        '--http',
        `127.0.0.1:${this.httpPorts[i]}`,
        '--peers',
        peers.join(','),
      ],
      { stdio: ['ignore', 'pipe', 'pipe'], env },
    );
  }

  protected probe(node: number): HttpRequestSpec {
    return { method: 'GET', host: '127.0.0.1', port: this.httpPorts[node]!, path: '/v1/status/leader' };
  }

  async leader(): Promise<number> {
    for (let i = 0; i < 3; i++) {
      if (!this.alive(i)) continue;
      try {
        const res = await request(this.probe(i), probeAgent, 1000);
        const addr = JSON.parse(res.body.toString()) as string;
        const port = Number(addr.split(':').pop());
        const idx =
          this.raftPorts.indexOf(port) >= 0 ? this.raftPorts.indexOf(port) : this.httpPorts.indexOf(port);
        if (idx >= 0 && this.alive(idx)) return idx;
      } catch {
        // try the next node
      }
    }
    return -1;
  }

  put(node: number, key: string, value: Buffer): HttpRequestSpec {
    return {
      method: 'PUT',
      host: '127.0.0.1',
      port: this.httpPorts[node]!,
      path: `/v1/kv/${key}`,
      body: value,
    };
  }

  get(node: number, key: string, mode: ReadMode): HttpRequestSpec {
    return {
      method: 'GET',
      host: '127.0.0.1',
      port: this.httpPorts[node]!,
      path: `/v1/kv/${key}${mode === 'stale' ? '?stale' : '?consistent'}`,
    };
  }
}
