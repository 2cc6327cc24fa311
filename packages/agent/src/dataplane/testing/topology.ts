// Test hosts on one machine: each "host" is a network namespace, all joined by
// an underlay bridge (in its own namespace) on 192.0.2.0/24; an "outside"
// namespace at 198.51.100.100 stands for the world beyond the overlay, and
// every host also has 198.51.100.(11+i) so NATed container traffic can reach it.
//
//   ns <p>-ul:  bridge br0 ── h0 ══ eth0 (ns <p>-h0: 192.0.2.11, 198.51.100.11)
//                         ── h1 ══ eth0 (ns <p>-h1: 192.0.2.12, 198.51.100.12)
//                         ── out ═ eth0 (ns <p>-out: 198.51.100.100)
//
// Names carry a per-process prefix so concurrent test runs never collide.

import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { listNetns, NetnsShell, runCommand } from '../../netlink/ip.js';
import { createSandbox, deleteSandbox } from '../sandbox.js';

export interface TestHost {
  index: number;
  /** `ip netns` name of the host namespace (pass as hostNetns). */
  netns: string;
  /** Underlay address on eth0 (pass as vtep). */
  vtep: string;
  /** The host's address on the "outside" subnet. */
  outsideIp: string;
}

export interface Topology {
  prefix: string;
  underlayNetns: string;
  outsideNetns: string;
  outsideIp: string;
  hosts: TestHost[];
  /** Creates a container namespace with a unique name; removed by destroy(). */
  addSandbox(label: string): Promise<string>;
  /** Removes every namespace this topology made. Safe to call twice. */
  destroy(): Promise<void>;
}

export interface TopologyOptions {
  hostCount: number;
  /** MTU of the underlay links; default 1500. */
  underlayMtu?: number;
}

export const outsideAddress = '198.51.100.100';

/** Fails with a clear message unless we can create network namespaces. */
export function canManageNetns(): { ok: boolean; reason: string } {
  if (process.platform !== 'linux') return { ok: false, reason: 'network namespaces need Linux' };
  if (process.getuid?.() !== 0)
    return { ok: false, reason: 'namespace tests need root (run as root, e.g. in CI)' };
  return { ok: true, reason: '' };
}

let topologyCounter = 0;

/** A fresh prefix: `wt` + pid%1000 + random; short enough for namespace and link names. */
export function uniquePrefix(): string {
  return `wt${process.pid % 1000}${randomBytes(2).toString('hex')}${topologyCounter++}`;
}

export async function createTopology(opts: TopologyOptions): Promise<Topology> {
  const prefix = uniquePrefix();
  const mtu = String(opts.underlayMtu ?? 1500);
  const created: string[] = [];
  const sandboxes: string[] = [];
  const underlayNetns = `${prefix}-ul`;
  const outsideNetns = `${prefix}-out`;
  const hosts: TestHost[] = [];

  const destroy = async (): Promise<void> => {
    const existing = new Set(await listNetns());
    for (const ns of [...sandboxes, ...created].reverse()) {
      if (existing.has(ns)) await deleteSandbox(ns).catch(() => {});
    }
    sandboxes.length = 0;
    created.length = 0;
  };

  try {
    const add = async (ns: string) => {
      await createSandbox(ns);
      created.push(ns);
    };
    await add(underlayNetns);
    const ul = new NetnsShell(underlayNetns);
    await ul.ipBatch([
      'link add br0 type bridge',
      'link set br0 addrgenmode none',
      `link set br0 mtu ${mtu} up`,
    ]);

    // One veth per namespace into the underlay bridge; checksum offload off so
    // a userspace encapsulator sees (and sends) complete UDP checksums.
    const plug = async (ns: string, port: string, addrs: string[]) => {
      await ul.ip([
        'link',
        'add',
        port,
        'mtu',
        mtu,
        'type',
        'veth',
        'peer',
        'name',
        'eth0',
        'mtu',
        mtu,
        'netns',
        ns,
      ]);
      await ul.ipBatch([`link set ${port} addrgenmode none`, `link set ${port} master br0 up`]);
      const shell = new NetnsShell(ns);
      // No IPv6 link-local addresses: their late arrival (after DAD) would make
      // "nothing left behind" snapshots of routes flaky.
      await shell.ipBatch([
        'link set eth0 addrgenmode none',
        ...addrs.map((a) => `address add ${a} dev eth0`),
        'link set eth0 up',
      ]);
      await ul.exec(['ethtool', '-K', port, 'tx', 'off']);
      await shell.exec(['ethtool', '-K', 'eth0', 'tx', 'off']);
    };

    for (let i = 0; i < opts.hostCount; i++) {
      const netns = `${prefix}-h${i}`;
      await add(netns);
      const host: TestHost = {
        index: i,
        netns,
        vtep: `192.0.2.${11 + i}`,
        outsideIp: `198.51.100.${11 + i}`,
      };
      await plug(netns, `h${i}`, [`${host.vtep}/24`, `${host.outsideIp}/24`]);
      hosts.push(host);
    }
    await add(outsideNetns);
    await plug(outsideNetns, 'out', [`${outsideAddress}/24`]);
  } catch (e) {
    await destroy();
    throw e;
  }

  return {
    prefix,
    underlayNetns,
    outsideNetns,
    outsideIp: outsideAddress,
    hosts,
    async addSandbox(label: string) {
      const name = `${prefix}-${label}`;
      await createSandbox(name);
      sandboxes.push(name);
      return name;
    },
    destroy,
  };
}

export interface CommandResult {
  exitCode: number | null;
  stdout: string;
  stderr: string;
}

/** Runs argv in a namespace and reports how it ended (never throws on a non-zero exit). */
export async function runIn(netns: string, argv: string[], timeoutMs = 10_000): Promise<CommandResult> {
  return new Promise((resolve, reject) => {
    const child = spawn('ip', ['netns', 'exec', netns, ...argv], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (b: Buffer) => {
      stdout += b.toString();
    });
    child.stderr.on('data', (b: Buffer) => {
      stderr += b.toString();
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ exitCode: code, stdout, stderr });
    });
  });
}

/** One ping (iputils when present for -M do, busybox otherwise); true if answered. */
export async function ping(
  netns: string,
  ip: string,
  opts: { payloadBytes?: number; dontFragment?: boolean; count?: number; waitSeconds?: number } = {},
): Promise<CommandResult & { ok: boolean }> {
  const argv = ['ping', '-n', '-c', String(opts.count ?? 1), '-W', String(opts.waitSeconds ?? 2)];
  if (opts.payloadBytes !== undefined) argv.push('-s', String(opts.payloadBytes));
  if (opts.dontFragment) argv.push('-M', 'do');
  argv.push(ip);
  const r = await runIn(netns, argv, ((opts.waitSeconds ?? 2) + (opts.count ?? 1) + 3) * 1000);
  return { ...r, ok: r.exitCode === 0 };
}

/** Whether iputils ping (needed for -M do) is installed. */
export async function hasIputilsPing(): Promise<boolean> {
  try {
    return /iputils/.test(await runCommand(['ping', '-V']));
  } catch {
    return false;
  }
}

/**
 * Runs a Node one-liner `serverJs` in `netns` and resolves once it prints
 * "ready" (it is listening). The caller kills it when done.
 */
export async function startNodeServerIn(netns: string, serverJs: string): Promise<ChildProcess> {
  const server = spawn('ip', ['netns', 'exec', netns, process.execPath, '-e', serverJs], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  try {
    await new Promise<void>((resolve, reject) => {
      let out = '';
      server.stdout?.on('data', (b: Buffer) => {
        out += b.toString();
        if (out.includes('ready')) resolve();
      });
      server.on('close', (code) => reject(new Error(`server in ${netns} exited (${code}) before listening`)));
    });
  } catch (err) {
    server.kill('SIGKILL');
    throw err;
  }
  return server;
}

/**
 * A TCP round trip: a Node echo server in `serverNetns` on ip:port, a Node
 * client in `clientNetns`. Resolves with what the client received and the
 * address the server saw the connection come from.
 */
export async function tcpRoundTrip(
  serverNetns: string,
  clientNetns: string,
  ip: string,
  port: number,
  message: string,
): Promise<{ reply: string; seenFrom: string }> {
  const serverJs =
    "const s=require('net').createServer(c=>{c.on('data',d=>{c.end(c.remoteAddress+' '+d);s.close()})});" +
    `s.listen(${port},'0.0.0.0',()=>console.log('ready'));setTimeout(()=>process.exit(3),15000)`;
  const server = await startNodeServerIn(serverNetns, serverJs);
  try {
    const clientJs =
      `const c=require('net').connect(${port},'${ip}',()=>c.write(${JSON.stringify(message)}));` +
      "let r='';c.on('data',d=>r+=d);c.on('end',()=>{console.log(r);process.exit(0)});" +
      "c.on('error',e=>{console.error(e.message);process.exit(2)});setTimeout(()=>process.exit(4),5000)";
    const r = await runIn(clientNetns, [process.execPath, '-e', clientJs], 10_000);
    if (r.exitCode !== 0)
      throw new Error(`TCP client in ${clientNetns} to ${ip}:${port} failed: ${r.stderr.trim()}`);
    const line = r.stdout.trim();
    const space = line.indexOf(' ');
    return { seenFrom: line.slice(0, space).replace(/^::ffff:/, ''), reply: line.slice(space + 1) };
  } finally {
    server.kill('SIGKILL');
  }
}
