// A whole test cluster: a lab of namespace hosts with one `weft agent` each,
// started with the others as peers (no external store). Used by the
// end-to-end tests, the `npm start` demo and the convergence benchmark.

import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AgentHandle, weftBin } from './agents.js';
import { Lab } from './lab.js';

export interface Cluster {
  lab: Lab;
  agents: AgentHandle[];
  workDir: string;
  /** Kills every agent, removes every namespace and the work dir. Safe to call twice. */
  destroy(): Promise<void>;
}

export interface ClusterOptions {
  hosts: number;
  dataplane?: 'kernel' | 'userspace';
  /** Per host (by index), overriding `dataplane`: mixed clusters. */
  dataplanes?: ('kernel' | 'userspace')[];
  /** Extra `weft agent` flags for every agent. */
  extraArgs?: string[];
}

/** A prefix unique to this process, short enough for interface names. */
export function runPrefix(tag: string): string {
  return `wt${process.pid % 1000}${tag}`.slice(0, 9);
}

export function preflight(): string | undefined {
  if (process.getuid?.() !== 0) return 'needs root (network namespaces)';
  if (!existsSync(weftBin)) return `the weft binary is not built (${weftBin}); run npx tsc -b`;
  return undefined;
}

/** Skips the calling suite (in its `before`), saying why, when preflight finds it cannot run here. */
export function skipUnlessReady(ctx: Mocha.Context): void {
  const why = preflight();
  if (why) {
    console.log(`      skipped: ${why}`);
    ctx.skip();
  }
}

export async function startCluster(prefix: string, opts: ClusterOptions): Promise<Cluster> {
  const workDir = await mkdtemp(join(tmpdir(), `weft-${prefix}-`));
  let lab: Lab | undefined;
  const agents: AgentHandle[] = [];
  const destroy = async () => {
    await Promise.all(agents.map((a) => a.kill('SIGKILL').catch(() => {})));
    if (lab) await lab.destroy();
    else await Lab.removeLeftovers(prefix);
    await rm(workDir, { recursive: true, force: true });
  };
  try {
    lab = await Lab.create(prefix, opts.hosts);
    const all = lab.hosts.map((h) => h.ip);
    for (const host of lab.hosts) {
      agents.push(
        new AgentHandle(lab, host, {
          peers: all.filter((ip) => ip !== host.ip),
          dataDir: join(workDir, host.name),
          logFile: join(workDir, `${host.name}.log`),
          dataplane: opts.dataplanes?.[agents.length] ?? opts.dataplane,
          extraArgs: opts.extraArgs,
        }),
      );
    }
    for (const a of agents) a.start();
    await Promise.all(agents.map((a) => a.waitReady(90_000)));
  } catch (err) {
    const logs = agents.map((a) => `--- ${a.host.name} ---\n${a.logTail(30)}`).join('\n');
    await destroy();
    throw new Error(`cluster did not start: ${(err as Error).message}\n${logs}`, { cause: err });
  }
  return { lab, agents, workDir, destroy };
}
