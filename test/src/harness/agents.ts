// `weft agent` processes in lab hosts, and the `weft` CLI run the way a user
// on that host would run it (inside the host's namespace, API on loopback).
import { type ChildProcess, spawn } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type Probe, waitUntil } from '@weft/kv/testing/wait-until';
import { type ExecResult, exec, type Lab, type LabHost } from './lab.js';

/**
 * Enters only the host's network namespace. `ip netns exec` would also give
 * the process a mount namespace of its own, and container namespaces the
 * agent then makes (bind mounts under /run/netns) would be invisible to the
 * CLI on the same host: a real host has one mount namespace, so do the same.
 */
export function enterHost(netns: string): string[] {
  return ['nsenter', `--net=/run/netns/${netns}`, '--'];
}

function findRepoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'packages', 'agent', 'package.json'))) {
    const up = dirname(dir);
    if (up === dir) throw new Error('cannot find the weft repository root above the test harness');
    dir = up;
  }
  return dir;
}

export const repoRoot = findRepoRoot();
const cliDir = join(repoRoot, 'packages', 'agent', 'dist', 'src', 'cli');
/**
 * The built `weft` program for Node (the agent runs it): the one-file CLI
 * (`npm run build`, packages/agent/scripts/bundle-cli.mjs), which starts
 * faster and runs main.js itself when older than it, else the tsc output.
 */
export const weftBin = existsSync(join(cliDir, 'weft.cjs'))
  ? join(cliDir, 'weft.cjs')
  : join(cliDir, 'main.js');
/** The `weft` command as users run it (the package's bin): CLI calls go through it. */
export const weftCommand = join(repoRoot, 'packages', 'agent', 'bin', 'weft');

/** Subnet of each host's gateway bridge in tests (inside 198.18.0.0/15, away from test overlays). */
export const testGatewaySubnet = '198.19.255.0/24';

export interface AgentOptions {
  peers: string[];
  dataDir: string;
  logFile: string;
  dataplane?: 'kernel' | 'userspace';
  extraArgs?: string[];
  /** Host liveness TTL; short in tests so dead hosts vanish quickly. */
  hostTtlMs?: number;
}

export class AgentHandle {
  private child?: ChildProcess;
  private exited?: Promise<number | null>;

  constructor(
    readonly lab: Lab,
    readonly host: LabHost,
    readonly opts: AgentOptions,
  ) {}

  get pid(): number | undefined {
    return this.child?.pid;
  }

  get running(): boolean {
    return this.child !== undefined && this.child.exitCode === null && this.child.signalCode === null;
  }

  start(): void {
    if (this.running) return;
    const log = openSync(this.opts.logFile, 'a');
    const flags: [string, string][] = [
      ['--name', this.host.name],
      ['--advertise', this.host.ip],
      ['--peers', this.opts.peers.join(',')],
      ['--data-dir', this.opts.dataDir],
      ['--dataplane', this.opts.dataplane ?? 'kernel'],
      ['--api', '127.0.0.1:8500'],
      ['--gateway-subnet', testGatewaySubnet],
      // Names outside the overlay go to the lab's outside namespace, never to a real resolver.
      ['--dns-upstream', '198.51.100.1'],
      ['--host-ttl', String(this.opts.hostTtlMs ?? 4_000)],
    ];
    const args = [
      ...enterHost(this.host.netns).slice(1),
      process.execPath,
      weftBin,
      'agent',
      ...flags.flat(),
      ...(this.opts.extraArgs ?? []),
    ];
    // nsenter execs node in place, so the pid is the agent's own: signals reach it directly.
    const child = spawn('nsenter', args, { stdio: ['ignore', log, log] });
    closeSync(log);
    this.child = child;
    this.exited = new Promise((resolve) => child.once('exit', (code) => resolve(code)));
  }

  /** Sends a signal and waits until the process is gone; resolves with its exit code (null if killed). */
  async kill(signal: NodeJS.Signals = 'SIGKILL', timeoutMs = 20_000): Promise<number | null> {
    if (!this.child || !this.exited) return null;
    if (this.running) this.child.kill(signal);
    const timer = new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), timeoutMs).unref());
    const result = await Promise.race([this.exited, timer]);
    if (result === 'timeout') {
      this.child.kill('SIGKILL');
      await this.exited;
      throw new Error(`agent on ${this.host.name} did not exit within ${timeoutMs} ms after ${signal}`);
    }
    return result;
  }

  /** Runs the CLI on this host (with this process's environment unless `env` is given). */
  weft(args: string[], timeoutMs = 30_000, env?: NodeJS.ProcessEnv): Promise<ExecResult> {
    return exec([...enterHost(this.host.netns), weftCommand, ...args], { timeoutMs, env });
  }

  /** Runs the CLI and fails with its stderr if it exits non-zero. */
  async mustWeft(args: string[], timeoutMs = 30_000, env?: NodeJS.ProcessEnv): Promise<string> {
    const r = await this.weft(args, timeoutMs, env);
    if (r.code !== 0) {
      throw new Error(
        `weft ${args.join(' ')} on ${this.host.name} exited ${r.code}: ${r.stderr.trim()}\n--- agent log ---\n${this.logTail()}`,
      );
    }
    return r.stdout;
  }

  /**
   * Retries the CLI until it exits 0 (e.g. a name that has yet to resolve);
   * on timeout the error carries the last output.
   */
  async weftUntilOk(args: string[], timeoutMs = 30_000): Promise<string> {
    return eventually(
      `\`weft ${args.join(' ')}\` on ${this.host.name} to succeed`,
      async () => {
        const r = await this.weft(args);
        if (r.code !== 0) throw new Error(`exit ${r.code}: ${(r.stdout + r.stderr).trim().slice(-2000)}`);
        return r.stdout;
      },
      timeoutMs,
      500,
    );
  }

  /** Polls `weft status` until the agent answers (and, with `needLeader`, knows a leader). */
  async waitReady(timeoutMs = 60_000, needLeader = true): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let last = '';
    while (Date.now() < deadline) {
      if (!this.running)
        throw new Error(`agent on ${this.host.name} exited during startup:\n${this.logTail()}`);
      const r = await this.weft(['--format', 'json', 'status'], 10_000);
      if (r.code === 0) {
        const status = JSON.parse(r.stdout) as { leader: string };
        if (!needLeader || status.leader) return;
        last = 'no leader yet';
      } else last = r.stderr.trim();
      await new Promise((res) => setTimeout(res, 300));
    }
    throw new Error(
      `agent on ${this.host.name} not ready after ${timeoutMs} ms (${last})\n${this.logTail()}`,
    );
  }

  logTail(lines = 40): string {
    try {
      return readFileSync(this.opts.logFile, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
    } catch {
      return '(no log)';
    }
  }
}

/**
 * Retries `check` until it answers a value (not undefined or false) or the
 * time is up. Agents start, restart and die during these tests, so a thrown
 * error (a refused connection, a failing command) counts as "not yet".
 */
export function eventually<T>(
  what: string,
  check: () => Promise<Probe<T>>,
  timeoutMs = 30_000,
  stepMs = 300,
): Promise<T> {
  return waitUntil(what, check, timeoutMs, { intervalMs: stepMs, retryErrors: true });
}
