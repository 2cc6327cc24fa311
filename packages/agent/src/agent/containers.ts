// Containers as Weft knows them: a network namespace (the sandbox) plus,
// optionally, one command the agent runs in it in the background. Records
// are kept in <data-dir>/containers.json so an agent killed with -9 finds its
// containers (namespaces and processes outlive it) when it comes back.
import { closeSync, mkdirSync, openSync, renameSync, writeFileSync } from 'node:fs';
import { mkdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { createSandbox, deleteSandbox, sandboxExists } from '../dataplane/sandbox.js';
import type { Logger } from '../log/logger.js';
import { CommandError, listNetns, runCommand, startDetached } from '../netlink/ip.js';
import type { Startable } from './startable.js';

/** A network the container was attached to, so a restarted agent can attach it again. */
export interface Attachment {
  networkId: string;
  ifName: string;
  aliases: string[];
  /** The address it had; asked for again on restore (another is taken if it is gone). */
  ip: string;
}

export interface ContainerRecord {
  name: string;
  /** `ip netns` name of the container's namespace. */
  sandbox: string;
  created: string;
  command: string[];
  /** Set when the agent started the command in the background (`run -d`). */
  pid?: number;
  exitCode?: number;
  attachments?: Attachment[];
}

interface StateFile {
  version: 1;
  containers: ContainerRecord[];
}

export interface ContainerRuntimeOptions {
  dataDir: string;
  /** Namespace names are global on a machine: prefix them with something unique to this host. */
  sandboxPrefix: string;
  /** Contents of /etc/resolv.conf inside containers (points at the embedded DNS server). */
  resolvConf: () => string;
  logger: Logger;
}

export class ContainerRuntime implements Startable {
  private readonly records = new Map<string, ContainerRecord>();
  private readonly statePath: string;
  private loaded = false;
  /** Serializes state changes so concurrent API calls never interleave writes. */
  private queue: Promise<unknown> = Promise.resolve();
  /** Pid of each command this process started that has not exited yet, by container name. */
  private readonly liveCommands = new Map<string, number>();

  constructor(private readonly opts: ContainerRuntimeOptions) {
    this.statePath = join(opts.dataDir, 'containers.json');
  }

  async start(): Promise<void> {
    if (this.loaded) return;
    await mkdir(join(this.opts.dataDir, 'logs'), { recursive: true });
    let text: string | undefined;
    try {
      text = await readFile(this.statePath, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    if (text !== undefined) {
      let state: StateFile;
      try {
        state = JSON.parse(text) as StateFile;
        if (state.version !== 1 || !Array.isArray(state.containers)) throw new Error('unexpected layout');
      } catch (err) {
        throw new Error(
          `${this.statePath} is damaged (${(err as Error).message}); move it away to start without local containers`,
        );
      }
      const present = new Set(await listNetns());
      for (const r of state.containers) {
        if (!present.has(r.sandbox)) {
          // The machine rebooted or someone deleted the namespace: the container is gone.
          this.opts.logger.warn(
            { container: r.name, sandbox: r.sandbox },
            'container namespace vanished; forgetting it',
          );
          continue;
        }
        this.records.set(r.name, r);
      }
      await this.save();
    }
    this.loaded = true;
  }

  async stop(): Promise<void> {
    // Containers outlive the agent (like Docker's live-restore); `removeAll` is the explicit teardown.
    this.loaded = false;
    this.records.clear();
  }

  list(): ContainerRecord[] {
    return [...this.records.values()].sort((a, b) => a.created.localeCompare(b.created));
  }

  get(name: string): ContainerRecord | undefined {
    return this.records.get(name);
  }

  sandboxName(name: string): string {
    return `${this.opts.sandboxPrefix}${name}`;
  }

  /**
   * Makes the container's namespace (loopback up unless `loopbackUp` is
   * false: `weft run` leaves that to the attach that wires it, one change
   * less on its path) and resolv.conf, and records it; returns the record.
   * `onNamespace` is called as soon as the namespace exists, before
   * resolv.conf and the state file are written (they wait for the thread
   * pool, which the store's writes keep busy): wiring needs only the namespace.
   */
  create(
    name: string,
    command: string[],
    opts: { loopbackUp?: boolean; onNamespace?: () => void } = {},
  ): Promise<ContainerRecord> {
    return this.serial(async () => {
      if (this.records.has(name)) throw new Error(`container "${name}" already exists`);
      const sandbox = this.sandboxName(name);
      if (await sandboxExists(sandbox)) {
        // Left over from a container this agent forgot (state file moved away): reuse is unsafe.
        await this.deleteSandbox(sandbox);
      }
      // Namespace, resolv.conf and the state file do not depend on each other: all at once. A
      // record saved for a namespace that then fails is removed again here; one whose namespace
      // never came (a crash in between) is dropped when the agent starts (see start).
      const record: ContainerRecord = { name, sandbox, created: new Date().toISOString(), command };
      this.records.set(name, record);
      const confDir = `/etc/netns/${sandbox}`;
      const made = await Promise.allSettled([
        createSandbox(sandbox, { loopbackUp: opts.loopbackUp ?? true }).then(() => opts.onNamespace?.()),
        this.writeResolvConf(confDir),
        this.save(),
      ]);
      const failed = made.find((r) => r.status === 'rejected');
      if (failed) {
        this.records.delete(name);
        await this.deleteSandbox(sandbox).catch(() => {});
        await this.save().catch(() => {});
        throw failed.reason;
      }
      return record;
    });
  }

  /** Runs the command in the background; its output goes to <data-dir>/logs/<name>.log. */
  startCommand(name: string): Promise<ContainerRecord> {
    return this.serial(async () => {
      const record = this.mustGet(name);
      // Synchronous, like save(): a local open, not worth a wait in the thread pool.
      const logFd = openSync(join(this.opts.dataDir, 'logs', `${name}.log`), 'a');
      try {
        const pid = await startDetached(
          ['ip', 'netns', 'exec', record.sandbox, ...record.command],
          logFd,
          (code) => {
            if (this.liveCommands.get(name) === pid) this.liveCommands.delete(name);
            const current = this.records.get(name);
            if (current && current.pid === pid) {
              current.exitCode = code;
              void this.serial(() => this.save());
            }
          },
        );
        this.liveCommands.set(name, pid);
        record.pid = pid;
        delete record.exitCode;
        await this.save();
        return record;
      } finally {
        closeSync(logFd);
      }
    });
  }

  /** Records the container's networks (replaces the list). */
  setAttachments(name: string, attachments: Attachment[]): Promise<void> {
    return this.serial(async () => {
      this.mustGet(name).attachments = attachments;
      await this.save();
    });
  }

  /** 'running' while any process lives in the namespace. */
  async state(
    record: ContainerRecord,
  ): Promise<{ state: 'running' | 'created' | 'exited'; exitCode?: number }> {
    // The command this agent started is still alive in the namespace: no need to scan every process.
    if (record.pid !== undefined && this.liveCommands.get(record.name) === record.pid)
      return { state: 'running' };
    const pids = await this.pids(record.sandbox);
    if (pids.length > 0) return { state: 'running' };
    if (record.pid !== undefined || record.exitCode !== undefined)
      return { state: 'exited', exitCode: record.exitCode };
    return { state: 'created' };
  }

  /** Kills everything in the container and deletes its namespace. */
  remove(name: string): Promise<void> {
    return this.serial(async () => {
      const record = this.mustGet(name);
      await this.deleteSandbox(record.sandbox);
      this.records.delete(name);
      await this.save();
      await rm(join(this.opts.dataDir, 'logs', `${name}.log`), { force: true });
    });
  }

  private async pids(sandbox: string): Promise<number[]> {
    try {
      const out = await runCommand(['ip', 'netns', 'pids', sandbox]);
      return out
        .split('\n')
        .filter((l) => /^\d+$/.test(l.trim()))
        .map(Number);
    } catch (err) {
      if (err instanceof CommandError) return [];
      throw err;
    }
  }

  private async deleteSandbox(sandbox: string): Promise<void> {
    // A namespace with live processes would survive `ip netns del` unseen: end them first.
    for (const signal of ['SIGTERM', 'SIGKILL'] as const) {
      const pids = await this.pids(sandbox);
      if (pids.length === 0) break;
      for (const pid of pids) {
        try {
          process.kill(pid, signal);
        } catch {
          // already gone
        }
      }
      if (signal === 'SIGTERM') await waitFor(async () => (await this.pids(sandbox)).length === 0, 2_000);
    }
    await deleteSandbox(sandbox);
    await rm(`/etc/netns/${sandbox}`, { recursive: true, force: true });
  }

  private mustGet(name: string): ContainerRecord {
    const r = this.records.get(name);
    if (!r) throw new Error(`container "${name}" not found on this host`);
    return r;
  }

  /**
   * Writes the state file. Synchronous on purpose (a few KB, no fsync: tens
   * of microseconds): fs/promises waits for libuv's thread pool, which the
   * store's synced writes keep busy, and `weft run` saves twice on its path
   * (10-20 ms in all at p50 on a loaded host, for work the JS thread does at once).
   */
  private async save(): Promise<void> {
    const state: StateFile = { version: 1, containers: this.list() };
    const tmp = `${this.statePath}.tmp`;
    writeFileSync(tmp, `${JSON.stringify(state, null, 2)}\n`);
    renameSync(tmp, this.statePath);
  }

  /** The container's resolv.conf, for `ip netns exec` to bind-mount (synchronous: see save). */
  private async writeResolvConf(confDir: string): Promise<void> {
    mkdirSync(confDir, { recursive: true });
    writeFileSync(`${confDir}/resolv.conf`, this.opts.resolvConf());
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.queue.then(fn, fn);
    this.queue = next.catch(() => {});
    return next;
  }
}

async function waitFor(check: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
}
