// Test harness: real `weft-kv serve` processes on loopback, each with its
// own LevelDB data directory, driven through the Consul HTTP API like a user
// would. Every process is SIGKILLed in cleanup, also when a test fails.
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort } from '../../src/testing/free-port.js';
import { type Probe, waitUntil } from '../../src/testing/wait-until.js';
import { spawnScript } from '../storage/spawn-script.js';

/**
 * Starts `weft-kv ARGS`. From the compiled tests, as a user runs it: the
 * package's `weft-kv` command (bin/weft-kv, which execs Node with its flags;
 * the child's PID is the member's). From the sources (tsx), the .ts entry
 * point with plain Node. `env` is added to this process's environment.
 */
export function spawnWeftKv(args: string[], env: NodeJS.ProcessEnv = {}): ChildProcess {
  if (import.meta.url.endsWith('.ts'))
    return spawnScript(import.meta.url, '../../src/bin/weft-kv.js', args, {
      env: { ...process.env, ...env },
    });
  const command = fileURLToPath(new URL('../../../bin/weft-kv', import.meta.url));
  return spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
}

/**
 * Waits on real processes: a refused connection while one starts or restarts
 * counts as "not yet", and start-up plus an election on a shared machine gets
 * 20 s unless the caller says otherwise.
 */
export function waitForProcesses<T>(
  what: string,
  probe: () => Probe<T> | Promise<Probe<T>>,
  timeoutMs = 20_000,
): Promise<T> {
  return waitUntil(what, probe, timeoutMs, { retryErrors: true, intervalMs: 100 });
}

export interface ProcessNode {
  name: string;
  raft: string;
  http: string;
  dataDir: string;
  args: string[];
  /** Added to the environment of the node's process (e.g. WEFT_KV_NODE_FLAGS). */
  env?: NodeJS.ProcessEnv;
  child?: ChildProcess;
  stderr: string;
}

export class ProcessCluster {
  readonly nodes: ProcessNode[] = [];
  private root = '';

  static async create(
    count: number,
    extraArgs: string[] = [],
    options: { clusterKey?: boolean } = {},
  ): Promise<ProcessCluster> {
    const c = new ProcessCluster();
    c.root = await mkdtemp(join(tmpdir(), 'weft-kv-proc-'));
    if (options.clusterKey) {
      // A private network: every member gets the same pre-shared key file.
      const keyFile = join(c.root, 'cluster.key');
      await writeFile(keyFile, `${randomBytes(32).toString('hex')}\n`, { mode: 0o600 });
      extraArgs = [...extraArgs, '--cluster-key', keyFile];
    }
    const raftPorts = await Promise.all(Array.from({ length: count }, freePort));
    const httpPorts = await Promise.all(Array.from({ length: count }, freePort));
    const raftAddrs = raftPorts.map((p) => `127.0.0.1:${p}`);
    for (let i = 0; i < count; i++) {
      c.nodes.push(
        c.describe(`n${i + 1}`, raftAddrs[i]!, `127.0.0.1:${httpPorts[i]!}`, [
          ...(count > 1 ? ['--peers', raftAddrs.filter((_, j) => j !== i).join(',')] : []),
          ...extraArgs,
        ]),
      );
    }
    return c;
  }

  /** A node that is not part of the initial configuration (for --join). */
  async addNode(name: string, extraArgs: string[]): Promise<ProcessNode> {
    const node = this.describe(
      name,
      `127.0.0.1:${await freePort()}`,
      `127.0.0.1:${await freePort()}`,
      extraArgs,
    );
    this.nodes.push(node);
    return node;
  }

  private describe(name: string, raft: string, http: string, extraArgs: string[]): ProcessNode {
    const dataDir = join(this.root, name);
    return {
      name,
      raft,
      http,
      dataDir,
      args: [
        'serve',
        '--id',
        name,
        '--data-dir',
        dataDir,
        '--listen',
        raft,
        '--http',
        http,
        '--log-level',
        'info',
        ...extraArgs,
      ],
      stderr: '',
    };
  }

  /** Runs `weft-kv ARGS` to completion (for commands that must fail fast); bounded by timeoutMs. */
  static async run(
    args: string[],
    timeoutMs = 30_000,
  ): Promise<{ code: number | null; stdout: string; stderr: string }> {
    const child = spawnWeftKv(args);
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d) => {
      stdout += d;
    });
    child.stderr!.on('data', (d) => {
      stderr += d;
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    const code = await new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
    clearTimeout(timer);
    return { code, stdout, stderr };
  }

  get rootDir(): string {
    return this.root;
  }

  /** Starts (or restarts, same command) a node; resolves once it printed its ready line. */
  async start(node: ProcessNode): Promise<void> {
    const child = spawnWeftKv(node.args, node.env);
    node.child = child;
    node.stderr = '';
    child.stderr!.on('data', (d) => {
      node.stderr += d;
    });
    await new Promise<void>((resolve, reject) => {
      let out = '';
      const timer = setTimeout(
        () => reject(new Error(`${node.name} did not become ready in 30 s: ${node.stderr}`)),
        30_000,
      );
      child.stdout!.on('data', (d) => {
        out += d;
        if (out.includes('"event":"ready"')) {
          clearTimeout(timer);
          resolve();
        }
      });
      child.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`${node.name} exited with ${code} before it was ready: ${node.stderr}`));
      });
    });
  }

  kill(node: ProcessNode): Promise<void> {
    const child = node.child;
    node.child = undefined;
    if (!child || child.exitCode !== null) return Promise.resolve();
    return new Promise((resolve) => {
      child.once('exit', () => resolve());
      child.kill('SIGKILL');
    });
  }

  running(): ProcessNode[] {
    return this.nodes.filter((n) => n.child);
  }

  async cleanup(): Promise<void> {
    await Promise.all(this.nodes.map((n) => this.kill(n)));
    if (this.root) await rm(this.root, { recursive: true, force: true });
  }

  // ---- Consul HTTP API, as a client would use it

  async put(node: ProcessNode, key: string, value: string): Promise<boolean> {
    const res = await fetch(`http://${node.http}/v1/kv/${key}`, {
      method: 'PUT',
      body: value,
      signal: AbortSignal.timeout(10_000),
    });
    const text = await res.text();
    if (res.status !== 200) throw new Error(`PUT ${key} on ${node.name}: HTTP ${res.status} ${text}`);
    return text.trim() === 'true';
  }

  async get(
    node: ProcessNode,
    key: string,
    mode: 'consistent' | 'stale' = 'consistent',
  ): Promise<string | null> {
    const res = await fetch(`http://${node.http}/v1/kv/${key}?${mode}`, {
      signal: AbortSignal.timeout(10_000),
    });
    if (res.status === 404) return null;
    if (res.status !== 200)
      throw new Error(`GET ${key} on ${node.name}: HTTP ${res.status} ${await res.text()}`);
    const [entry] = (await res.json()) as Array<{ Value: string | null }>;
    return entry?.Value ? Buffer.from(entry.Value, 'base64').toString() : '';
  }

  async keys(node: ProcessNode, prefix: string, mode: 'consistent' | 'stale' = 'stale'): Promise<string[]> {
    const res = await fetch(`http://${node.http}/v1/kv/${prefix}?keys&${mode}`, {
      signal: AbortSignal.timeout(10_000),
    });
    if (res.status === 404) return [];
    if (res.status !== 200)
      throw new Error(`GET ${prefix}?keys on ${node.name}: HTTP ${res.status} ${await res.text()}`);
    return (await res.json()) as string[];
  }

  async leader(node: ProcessNode): Promise<string> {
    const res = await fetch(`http://${node.http}/v1/status/leader`, { signal: AbortSignal.timeout(5_000) });
    return (await res.json()) as string;
  }

  async peers(node: ProcessNode): Promise<string[]> {
    const res = await fetch(`http://${node.http}/v1/status/peers`, { signal: AbortSignal.timeout(5_000) });
    return (await res.json()) as string[];
  }

  /** Waits until every running node names the same leader; returns that node. */
  async agreedLeader(timeoutMs = 20_000): Promise<ProcessNode> {
    return waitForProcesses(
      'all running nodes to agree on a leader',
      async () => {
        const leaders = await Promise.all(this.running().map((n) => this.leader(n)));
        const first = leaders[0];
        if (!first || leaders.some((l) => l !== first)) return undefined;
        return this.nodes.find((n) => n.raft === first && n.child);
      },
      timeoutMs,
    );
  }
}
