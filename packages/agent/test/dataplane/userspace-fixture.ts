// Multi-host fixture for the userspace data plane tests: N namespace hosts
// (the other data plane's test topology), one network, one container per
// host, every host told about every other host's container. Each host runs
// the data plane kind it is given, so the same fixture builds userspace-only
// and mixed kernel/userspace networks.

import { randomBytes } from 'node:crypto';
import type { Dataplane, LocalEndpoint, NetworkSpec, RemotePeer } from '@weft/overlay';
import { KernelDataplane } from '../../src/dataplane/kernel.js';
import { macForIp } from '../../src/dataplane/names.js';
import { canManageNetns, createTopology, type Topology } from '../../src/dataplane/testing/topology.js';
import { UserspaceDataplane, type UserspaceDataplaneOptions } from '../../src/dataplane/userspace.js';

/** The CPUs of a kernel CPU list ("0-3,6", as in Cpus_allowed_list or /sys/devices/system/cpu/possible). */
export function parseCpuList(text: string): number[] {
  return text
    .trim()
    .split(',')
    .flatMap((range) => {
      const [lo, hi] = range.split('-').map(Number);
      if (lo === undefined || Number.isNaN(lo)) return [];
      return Array.from({ length: (hi ?? lo) - lo + 1 }, (_, k) => lo + k);
    });
}

export type DataplaneKind = 'userspace' | 'kernel' | 'userspace-nooffload';

export interface Container {
  host: number;
  netns: string;
  ip: string;
  endpoint: LocalEndpoint;
}

export interface Cluster {
  topology: Topology;
  network: NetworkSpec;
  dataplanes: Dataplane[];
  containers: Container[];
  destroy(): Promise<void>;
}

export function skipUnlessNetns(ctx: Mocha.Context): void {
  const { ok, reason } = canManageNetns();
  if (!ok) {
    console.log(`      (skipped: ${reason})`);
    ctx.skip();
  }
}

export function makeDataplane(
  kind: DataplaneKind,
  host: { netns: string; vtep: string },
  userspaceOptions: Pick<UserspaceDataplaneOptions, 'streamNapUs'> = {},
): Dataplane {
  const common = { vtep: host.vtep, hostNetns: host.netns, gatewaySubnet: null };
  if (kind === 'kernel') return new KernelDataplane(common);
  return new UserspaceDataplane({ ...common, ...userspaceOptions, offloads: kind === 'userspace' });
}

export function randomNetwork(overrides: Partial<NetworkSpec> = {}): NetworkSpec {
  return {
    id: randomBytes(32).toString('hex'),
    name: `net${randomBytes(2).toString('hex')}`,
    vni: 1000 + (randomBytes(2).readUInt16BE() % 50000),
    subnets: [{ subnet: '198.18.0.0/24', gateway: '198.18.0.1' }],
    internal: true,
    ...overrides,
  };
}

/** Builds the cluster; everything made is removed by destroy(), also when building fails. */
export async function createCluster(
  kinds: DataplaneKind[],
  opts: { underlayMtu?: number; userspace?: Pick<UserspaceDataplaneOptions, 'streamNapUs'> } = {},
): Promise<Cluster> {
  const topology = await createTopology({ hostCount: kinds.length, underlayMtu: opts.underlayMtu });
  const dataplanes: Dataplane[] = [];
  const destroy = async () => {
    for (const dp of dataplanes) await dp.stop().catch(() => {});
    await topology.destroy();
  };
  try {
    const network = randomNetwork();
    const containers: Container[] = [];
    for (const [i, kind] of kinds.entries()) {
      const dp = makeDataplane(kind, topology.hosts[i]!, opts.userspace);
      dataplanes.push(dp);
      await dp.start();
      await dp.ensureNetwork(network);
      const netns = await topology.addSandbox(`c${i}`);
      const ip = `198.18.0.${10 + i}`;
      const endpoint: LocalEndpoint = {
        networkId: network.id,
        endpointId: `ep${i}`,
        sandbox: netns,
        ifName: 'eth0',
        ip,
        prefixLength: 24,
        mac: macForIp(ip),
        gateway: '198.18.0.1',
      };
      await dp.attach(endpoint);
      containers.push({ host: i, netns, ip, endpoint });
    }
    for (const [i, dp] of dataplanes.entries()) {
      for (const c of containers) {
        if (c.host === i) continue;
        await dp.addPeer(peerOf(c, topology.hosts[c.host]!.vtep));
      }
    }
    return { topology, network, dataplanes, containers, destroy };
  } catch (e) {
    await destroy();
    throw e;
  }
}

export function peerOf(c: Container, vtep: string): RemotePeer {
  return {
    networkId: c.endpoint.networkId,
    endpointId: c.endpoint.endpointId,
    ip: c.ip,
    mac: c.endpoint.mac,
    vtep,
  };
}

/**
 * Sends `bytes` of random data over one TCP connection from a client in
 * clientNetns to a server in serverNetns; the server answers with the SHA-256
 * and length of what it received. Resolves true when both match.
 */
export async function tcpBulkTransfer(
  serverNetns: string,
  clientNetns: string,
  ip: string,
  port: number,
  bytes: number,
): Promise<{ ok: boolean; detail: string }> {
  const { runIn, startNodeServerIn } = await import('../../src/dataplane/testing/topology.js');
  const serverJs =
    "const h=require('crypto').createHash('sha256');let n=0;" +
    "const s=require('net').createServer(c=>{c.on('data',d=>{h.update(d);n+=d.length});" +
    "c.on('end',()=>{c.end(h.digest('hex')+' '+n);s.close()})});" +
    `s.listen(${port},'::',()=>console.log('ready'));setTimeout(()=>process.exit(3),30000)`;
  const server = await startNodeServerIn(serverNetns, serverJs);
  try {
    const clientJs =
      `const data=require('crypto').randomBytes(${bytes});` +
      "const want=require('crypto').createHash('sha256').update(data).digest('hex')+' '+data.length;" +
      `const c=require('net').connect(${port},'${ip}',()=>c.end(data));` +
      "let r='';c.on('data',d=>r+=d);c.on('end',()=>{console.log(r===want?'ok':'mismatch '+r+' want '+want);process.exit(0)});" +
      "c.on('error',e=>{console.error(e.message);process.exit(2)});setTimeout(()=>process.exit(4),25000)";
    const r = await runIn(clientNetns, [process.execPath, '-e', clientJs], 30_000);
    const out = r.stdout.trim();
    return { ok: r.exitCode === 0 && out === 'ok', detail: `exit ${r.exitCode}: ${out} ${r.stderr.trim()}` };
  } finally {
    server.kill('SIGKILL');
  }
}
