// The one Dataplane compliance suite. Every data plane (kernel, userspace,
// and mixes of them for interop) runs it through a factory:
//
//   import { dataplaneComplianceSuite } from '../../src/dataplane/testing/compliance.js';
//   dataplaneComplianceSuite('kernel', (host) => new KernelDataplane({
//     vtep: host.vtep, hostNetns: host.netns, gatewaySubnet: host.gatewaySubnet }));
//
// Each "host" is a network namespace (see topology.ts) with its own Dataplane
// instance; containers are namespaces with overlay addresses in 198.18.0.0/15.
// The checks are what a user would check: ping, TCP, MTU with DF, NAT to the
// outside, nothing left behind, and a restart that reconciles.

import assert from 'node:assert/strict';
import { randomBytes, randomInt } from 'node:crypto';
import type { Dataplane, LocalEndpoint, NetworkSpec, RemotePeer } from '@weft/overlay';
import { type IpAddr, type IpLink, type IpNeigh, NetnsShell, runCommand } from '../../netlink/ip.js';
import { nativeNetlink } from '../../netlink/rtnetlink.js';
import { bridgeName, macForIp, weftDeviceKind } from '../names.js';
import {
  canManageNetns,
  createTopology,
  hasIputilsPing,
  ping,
  runIn,
  type TestHost,
  type Topology,
  tcpRoundTrip,
} from './topology.js';

export interface DataplaneTestHost extends TestHost {
  /** Host-local subnet for the gateway bridge (inside 198.18.0.0/15). */
  gatewaySubnet: string;
}

/** Builds the data plane for one test host; called again for a simulated restart. */
export type DataplaneFactory = (host: DataplaneTestHost) => Dataplane | Promise<Dataplane>;

export interface ComplianceOptions {
  /** Underlay MTU of the test hosts; default 1500. */
  underlayMtu?: number;
}

const gatewaySubnet = '198.19.255.0/24';

export function newNetwork(
  name: string,
  subnet: string,
  opts: { internal?: boolean; mtu?: number } = {},
): NetworkSpec {
  const base = subnet.split('/')[0]!.split('.').slice(0, 3).join('.');
  return {
    id: randomBytes(32).toString('hex'),
    name,
    vni: randomInt(1, 16_777_216),
    subnets: [{ subnet, gateway: `${base}.1` }],
    internal: opts.internal ?? false,
    ...(opts.mtu === undefined ? {} : { mtu: opts.mtu }),
  };
}

export function newEndpoint(net: NetworkSpec, sandbox: string, ip: string, ifName = 'eth0'): LocalEndpoint {
  return {
    networkId: net.id,
    endpointId: randomBytes(32).toString('hex'),
    sandbox,
    ifName,
    ip,
    prefixLength: Number(net.subnets[0]!.subnet.split('/')[1]),
    mac: macForIp(ip),
    gateway: net.subnets[0]!.gateway,
  };
}

export function peerOf(ep: LocalEndpoint, vtep: string): RemotePeer {
  return { networkId: ep.networkId, endpointId: ep.endpointId, ip: ep.ip, mac: ep.mac, vtep };
}

/** What a user would list to see that nothing was left behind. */
export async function hostSnapshot(netns: string): Promise<{ links: string[]; routes: string; nft: string }> {
  const shell = new NetnsShell(netns);
  const links = (await shell.links()).map((l) => l.ifname).sort();
  const routes = await shell.ip(['route', 'show', 'table', 'all']);
  const nft = await shell.exec(['nft', 'list', 'ruleset']);
  return { links, routes, nft };
}

export function dataplaneComplianceSuite(
  name: string,
  factory: DataplaneFactory,
  opts: ComplianceOptions = {},
): void {
  describe(`Dataplane compliance: ${name}`, function () {
    this.timeout(120_000);
    let topo: Topology;
    let hosts: DataplaneTestHost[] = [];
    const running: Dataplane[] = [];

    before(async function () {
      const access = canManageNetns();
      if (!access.ok) {
        console.log(`    skipping Dataplane compliance (${name}): ${access.reason}`);
        this.skip();
      }
      topo = await createTopology({
        hostCount: 3,
        ...(opts.underlayMtu ? { underlayMtu: opts.underlayMtu } : {}),
      });
      hosts = topo.hosts.map((h) => ({ ...h, gatewaySubnet }));
    });

    after(async () => {
      for (const dp of running.splice(0)) await dp.stop().catch(() => {});
      await topo?.destroy();
    });

    afterEach(async () => {
      for (const dp of running.splice(0)) await dp.stop().catch(() => {});
    });

    async function startPlane(host: DataplaneTestHost): Promise<Dataplane> {
      const dp = await factory(host);
      running.push(dp);
      await dp.start();
      return dp;
    }

    async function startAll(): Promise<Dataplane[]> {
      const out: Dataplane[] = [];
      for (const h of hosts) out.push(await startPlane(h));
      return out;
    }

    /** ensureNetwork everywhere, attach each endpoint on its host, tell every other host about it. */
    async function wire(
      planes: Dataplane[],
      net: NetworkSpec,
      placed: { host: number; ep: LocalEndpoint }[],
    ) {
      for (const dp of planes) await dp.ensureNetwork(net);
      for (const { host, ep } of placed) await planes[host]!.attach(ep);
      for (const { host, ep } of placed) {
        for (let i = 0; i < planes.length; i++)
          if (i !== host) await planes[i]!.addPeer(peerOf(ep, hosts[host]!.vtep));
      }
    }

    async function weftLinksOn(host: DataplaneTestHost): Promise<IpLink[]> {
      return (await new NetnsShell(host.netns).links()).filter((l) => weftDeviceKind(l.ifname) !== undefined);
    }

    async function sandboxLinks(sandbox: string): Promise<string[]> {
      return (await new NetnsShell(sandbox).links()).map((l) => l.ifname).sort();
    }

    it('carries ping and TCP between containers on different hosts and on the same host', async () => {
      const planes = await startAll();
      const net = newNetwork('app', '198.18.0.0/24');
      const c0 = newEndpoint(net, await topo.addSandbox('c0'), '198.18.0.2');
      const c1 = newEndpoint(net, await topo.addSandbox('c1'), '198.18.0.3');
      const c2 = newEndpoint(net, await topo.addSandbox('c2'), '198.18.0.4');
      const c0b = newEndpoint(net, await topo.addSandbox('c0b'), '198.18.0.5');
      await wire(planes, net, [
        { host: 0, ep: c0 },
        { host: 1, ep: c1 },
        { host: 2, ep: c2 },
        { host: 0, ep: c0b },
      ]);

      for (const [from, to] of [
        [c0, c1],
        [c0, c2],
        [c1, c2],
        [c2, c0b],
        [c0, c0b],
      ] as const) {
        const r = await ping(from.sandbox, to.ip);
        assert.ok(r.ok, `ping ${from.ip} -> ${to.ip} failed: ${r.stdout}${r.stderr}`);
      }
      const tcp = await tcpRoundTrip(c1.sandbox, c0.sandbox, c1.ip, 5001, 'hello over vxlan');
      assert.equal(tcp.reply, 'hello over vxlan');
      assert.equal(tcp.seenFrom, c0.ip, 'inside the overlay the source address is not translated');

      // The container sees its own address and Docker-style MAC.
      const [eth0] = await new NetnsShell(c0.sandbox).ipJson<IpAddr>(['addr', 'show', 'dev', 'eth0']);
      assert.equal(eth0?.address, '02:42:c6:12:00:02');
      assert.ok(eth0?.addr_info.some((a) => a.local === c0.ip && a.prefixlen === 24));

      const counters = await planes[0]!.counters();
      assert.ok(counters[net.id], `counters() has no entry for network ${net.id}`);
      assert.ok(counters[net.id]!.txPackets > 0 && counters[net.id]!.rxPackets > 0, JSON.stringify(counters));
    });

    it('a container that asked for a remote address before its host knew it gets the answer as soon as addPeer returns, not on its next ARP try', async function () {
      if (nativeNetlink() === null) {
        console.log('      skipped: the announcement that resolves it needs the native addon');
        this.skip();
      }
      const planes = await startAll();
      const net = newNetwork('early', '198.18.5.0/24');
      const c0 = newEndpoint(net, await topo.addSandbox('e0'), '198.18.5.2');
      const c1 = newEndpoint(net, await topo.addSandbox('e1'), '198.18.5.3');
      for (const dp of planes.slice(0, 2)) await dp.ensureNetwork(net);
      await planes[0]!.attach(c0);
      await planes[1]!.attach(c1);
      await planes[1]!.addPeer(peerOf(c0, hosts[0]!.vtep));
      // c0 retries an unanswered ARP request only after 20 s here: within its
      // ping's 10 s only an answer that comes by itself can resolve c1.
      await new NetnsShell(c0.sandbox).setSysctl('net.ipv4.neigh.eth0.retrans_time_ms', '20000');
      const early = runIn(c0.sandbox, ['ping', '-n', '-c', '1', '-W', '10', c1.ip], 15_000);
      const c0Neighbour = async () =>
        (await new NetnsShell(c0.sandbox).ipJson<IpNeigh>(['neigh', 'show', c1.ip, 'dev', 'eth0']))[0]?.state;
      for (let i = 0; i < 100 && (await c0Neighbour())?.[0] !== 'INCOMPLETE'; i++)
        await new Promise((r) => setTimeout(r, 20));
      assert.deepEqual(await c0Neighbour(), ['INCOMPLETE'], 'c0 asked for c1 and got no answer yet');
      await planes[0]!.addPeer(peerOf(c1, hosts[1]!.vtep));
      const r = await early;
      assert.equal(r.exitCode, 0, `c0's early ping of c1 was not answered: ${r.stdout}${r.stderr}`);
    });

    it('keeps networks apart, even with overlapping subnets', async () => {
      const planes = await startAll();
      const netA = newNetwork('a', '198.18.2.0/24');
      const netB = newNetwork('b', '198.18.2.0/24');
      const a0 = newEndpoint(netA, await topo.addSandbox('a0'), '198.18.2.2');
      const a1 = newEndpoint(netA, await topo.addSandbox('a1'), '198.18.2.3');
      const b0 = newEndpoint(netB, await topo.addSandbox('b0'), '198.18.2.8');
      const b1 = newEndpoint(netB, await topo.addSandbox('b1'), '198.18.2.9');
      await wire(planes, netA, [
        { host: 0, ep: a0 },
        { host: 1, ep: a1 },
      ]);
      await wire(planes, netB, [
        { host: 0, ep: b0 },
        { host: 1, ep: b1 },
      ]);
      assert.ok((await ping(a0.sandbox, a1.ip)).ok, 'a0 -> a1 within network a');
      assert.ok((await ping(b0.sandbox, b1.ip)).ok, 'b0 -> b1 within network b');
      assert.ok(!(await ping(a0.sandbox, b1.ip, { waitSeconds: 1 })).ok, 'a0 reached b1 across networks');
      assert.ok(!(await ping(b0.sandbox, a1.ip, { waitSeconds: 1 })).ok, 'b0 reached a1 across networks');
      assert.ok(!(await ping(a0.sandbox, b0.ip, { waitSeconds: 1 })).ok, 'a0 reached b0 on the same host');
    });

    it('passes the largest unfragmented packet and refuses one byte more (DF)', async function () {
      if (!(await hasIputilsPing())) {
        console.log('    skipping MTU test: needs iputils ping for -M do (apt-get install iputils-ping)');
        this.skip();
      }
      const planes = await startAll();
      const underlayMtu = opts.underlayMtu ?? 1500;
      const ipIcmpHeaderBytes = 28;
      for (const [label, mtuOption, subnetThird] of [
        ['derived', undefined, 3],
        ['explicit', 1400, 4],
      ] as const) {
        const net = newNetwork(
          `mtu-${label}`,
          `198.18.${subnetThird}.0/24`,
          mtuOption ? { mtu: mtuOption } : {},
        );
        const expectedMtu = mtuOption ?? underlayMtu - 50;
        const m0 = newEndpoint(net, await topo.addSandbox(`m0${label[0]}`), `198.18.${subnetThird}.2`);
        const m1 = newEndpoint(net, await topo.addSandbox(`m1${label[0]}`), `198.18.${subnetThird}.3`);
        await wire(planes, net, [
          { host: 0, ep: m0 },
          { host: 1, ep: m1 },
        ]);
        const [link] = await new NetnsShell(m0.sandbox).ipJson<IpLink>(['link', 'show', 'dev', 'eth0']);
        assert.equal(link?.mtu, expectedMtu, `${label} MTU of the container interface`);
        const largest = expectedMtu - ipIcmpHeaderBytes;
        const fits = await ping(m0.sandbox, m1.ip, { payloadBytes: largest, dontFragment: true });
        assert.ok(
          fits.ok,
          `DF ping with ${largest} payload bytes (${expectedMtu} total) failed: ${fits.stdout}${fits.stderr}`,
        );
        const tooBig = await ping(m0.sandbox, m1.ip, {
          payloadBytes: largest + 1,
          dontFragment: true,
          waitSeconds: 1,
        });
        assert.ok(!tooBig.ok, `DF ping with ${largest + 1} payload bytes was answered`);
        assert.match(tooBig.stdout + tooBig.stderr, /message too long|mtu/i, 'refused locally for its size');
      }
    });

    it('gives containers a NATed way out of the overlay, and internal networks none', async () => {
      const planes = await startAll();
      const net = newNetwork('web', '198.18.5.0/24');
      const internal = newNetwork('db', '198.18.6.0/24', { internal: true });
      const w0 = newEndpoint(net, await topo.addSandbox('w0'), '198.18.5.2');
      const d0 = newEndpoint(internal, await topo.addSandbox('d0'), '198.18.6.2');
      await wire(planes, net, [{ host: 0, ep: w0 }]);
      await wire(planes, internal, [{ host: 0, ep: d0 }]);

      const out = await ping(w0.sandbox, topo.outsideIp);
      assert.ok(out.ok, `container -> outside ${topo.outsideIp} failed: ${out.stdout}${out.stderr}`);
      const tcp = await tcpRoundTrip(topo.outsideNetns, w0.sandbox, topo.outsideIp, 5002, 'out');
      assert.equal(tcp.reply, 'out');
      assert.equal(tcp.seenFrom, hosts[0]!.outsideIp, 'the outside sees the host address (masquerade)');

      assert.equal((await new NetnsShell(d0.sandbox).ip(['route', 'show', 'default'])).trim(), '');
      assert.ok(
        !(await ping(d0.sandbox, topo.outsideIp, { waitSeconds: 1 })).ok,
        'internal container reached outside',
      );
    });

    it('leaves no interface, route or rule behind after detach, removeNetwork and stop', async () => {
      const before = await Promise.all(hosts.map((h) => hostSnapshot(h.netns)));
      const planes = await startAll();
      const net = newNetwork('tidy', '198.18.7.0/24');
      const internal = newNetwork('tidy-int', '198.18.8.0/24', { internal: true });
      const t0 = newEndpoint(net, await topo.addSandbox('t0'), '198.18.7.2');
      const t1 = newEndpoint(net, await topo.addSandbox('t1'), '198.18.7.3');
      const t0i = newEndpoint(internal, t0.sandbox, '198.18.8.2', 'eth1');
      await wire(planes, net, [
        { host: 0, ep: t0 },
        { host: 1, ep: t1 },
      ]);
      await wire(planes, internal, [{ host: 0, ep: t0i }]);
      assert.ok((await ping(t0.sandbox, t1.ip)).ok);
      const withBoth = await sandboxLinks(t0.sandbox);
      assert.ok(withBoth.includes('eth0') && withBoth.includes('eth1'), withBoth.join(','));

      await planes[0]!.detach(t0);
      const afterDetach = await sandboxLinks(t0.sandbox);
      assert.ok(!afterDetach.includes('eth0'), `eth0 still in sandbox: ${afterDetach}`);
      assert.ok(afterDetach.includes('eth1'), 'detaching one endpoint removed another');
      assert.deepEqual(
        afterDetach.filter((n) => n !== 'lo' && n !== 'eth1'),
        [],
        'only an internal endpoint is left, so no gateway interface either',
      );
      assert.equal((await new NetnsShell(t0.sandbox).ip(['route', 'show', 'default'])).trim(), '');

      await planes[0]!.removeNetwork(internal.id);
      assert.deepEqual(await sandboxLinks(t0.sandbox), ['lo']);
      const short = internal.id.slice(0, 8);
      assert.deepEqual(
        (await weftLinksOn(hosts[0]!)).map((l) => l.ifname).filter((n) => n.includes(short)),
        [],
        'devices of the removed network remain',
      );

      for (const dp of running.splice(0)) await dp.stop();
      const after = await Promise.all(hosts.map((h) => hostSnapshot(h.netns)));
      for (let i = 0; i < hosts.length; i++) {
        assert.deepEqual(after[i]!.links, before[i]!.links, `links left on host ${i}`);
        assert.equal(after[i]!.routes, before[i]!.routes, `routes left on host ${i}`);
        assert.equal(after[i]!.nft, before[i]!.nft, `nftables rules left on host ${i}`);
      }
      assert.deepEqual(await sandboxLinks(t1.sandbox), ['lo'], 'stop leaves interfaces in containers');
    });

    it('is idempotent: every call can be repeated', async () => {
      const planes = await startAll();
      const net = newNetwork('again', '198.18.9.0/24');
      const i0 = newEndpoint(net, await topo.addSandbox('i0'), '198.18.9.2');
      const i1 = newEndpoint(net, await topo.addSandbox('i1'), '198.18.9.3');
      await wire(planes, net, [
        { host: 0, ep: i0 },
        { host: 1, ep: i1 },
      ]);
      const once = await hostSnapshot(hosts[0]!.netns);
      await planes[0]!.start();
      await wire(planes, net, [
        { host: 0, ep: i0 },
        { host: 1, ep: i1 },
      ]);
      assert.deepEqual(await hostSnapshot(hosts[0]!.netns), once, 'repeating calls changed the host');
      assert.ok((await ping(i0.sandbox, i1.ip)).ok);

      await planes[0]!.removePeer(peerOf(i1, hosts[1]!.vtep));
      await planes[0]!.removePeer(peerOf(i1, hosts[1]!.vtep));
      assert.ok(!(await ping(i0.sandbox, i1.ip, { waitSeconds: 1 })).ok, 'removed peer still reachable');
      await planes[0]!.addPeer(peerOf(i1, hosts[1]!.vtep));
      assert.ok((await ping(i0.sandbox, i1.ip)).ok, 'peer re-added after removal');

      await planes[0]!.detach(i0);
      await planes[0]!.detach(i0);
      await planes[0]!.removeNetwork(net.id);
      await planes[0]!.removeNetwork(net.id);
      await planes[0]!.removePeer(peerOf(i1, hosts[1]!.vtep)); // on a network that is gone
      await planes[0]!.stop();
      await planes[0]!.stop();
    });

    it('rejects an attach to a network it was not given, naming the cause', async () => {
      const [dp] = [await startPlane(hosts[0]!)];
      const net = newNetwork('nope', '198.18.10.0/24');
      const ep = newEndpoint(net, await topo.addSandbox('n0'), '198.18.10.2');
      await assert.rejects(dp!.attach(ep), /ensureNetwork|not set up/);
      await assert.rejects(dp!.addPeer(peerOf(ep, hosts[1]!.vtep)), /ensureNetwork|not set up/);
      await assert.rejects(dp!.ensureNetwork({ ...net, vni: 0 }), /VNI/);
      await assert.rejects(dp!.attach({ ...ep, networkId: 'xyz' }), /network id/);
    });

    it('reconciles after a restart: no duplicates, stale entries removed, traffic flows', async () => {
      const planes = await startAll();
      const net = newNetwork('keep', '198.18.11.0/24');
      const stale = newNetwork('gone', '198.18.12.0/24');
      const k0 = newEndpoint(net, await topo.addSandbox('k0'), '198.18.11.2');
      const k1 = newEndpoint(net, await topo.addSandbox('k1'), '198.18.11.3');
      const k2 = newEndpoint(net, await topo.addSandbox('k2'), '198.18.11.4');
      const kOld = newEndpoint(net, await topo.addSandbox('kold'), '198.18.11.5');
      const s0 = newEndpoint(stale, await topo.addSandbox('s0'), '198.18.12.2');
      await wire(planes, net, [
        { host: 0, ep: k0 },
        { host: 1, ep: k1 },
        { host: 2, ep: k2 },
        { host: 0, ep: kOld },
      ]);
      await wire(planes, stale, [{ host: 0, ep: s0 }]);
      assert.ok((await ping(k0.sandbox, k2.ip)).ok);
      const beforeCrash = (await weftLinksOn(hosts[0]!)).map((l) => l.ifname);

      // Host 0's agent dies without stop(); while it is down, k2 and the stale
      // network leave the state (their removal was never applied on host 0),
      // and kOld's endpoint is released.
      running.splice(running.indexOf(planes[0]!), 1);
      const restarted = await startPlane(hosts[0]!);
      const state = { networks: [net], endpoints: [k0], peers: [peerOf(k1, hosts[1]!.vtep)] };
      await restarted.reconcile(state);

      const afterLinks = (await weftLinksOn(hosts[0]!)).map((l) => l.ifname);
      assert.equal(new Set(afterLinks).size, afterLinks.length);
      for (const n of afterLinks) assert.ok(beforeCrash.includes(n), `reconcile created new device ${n}`);
      assert.ok(!afterLinks.some((n) => n.includes(stale.id.slice(0, 8))), 'stale network devices remain');
      assert.ok(afterLinks.includes(bridgeName(net.id)));
      assert.deepEqual(await sandboxLinks(s0.sandbox), ['lo'], 'stale network endpoint remains');
      assert.deepEqual(await sandboxLinks(kOld.sandbox), ['lo'], 'released endpoint remains');
      assert.ok((await ping(k0.sandbox, k1.ip)).ok, 'k0 -> k1 after reconcile');
      assert.ok(!(await ping(k0.sandbox, k2.ip, { waitSeconds: 1 })).ok, 'stale peer k2 still reachable');
      assert.ok((await ping(k0.sandbox, topo.outsideIp)).ok, 'gateway after reconcile');

      // Reconciling the same state again changes nothing.
      const once = await hostSnapshot(hosts[0]!.netns);
      await restarted.reconcile(state);
      assert.deepEqual(await hostSnapshot(hosts[0]!.netns), once);

      // A host whose data plane starts from nothing is built by reconcile alone.
      running.splice(running.indexOf(planes[1]!), 1);
      await planes[1]!.stop();
      const fresh = await startPlane(hosts[1]!);
      await fresh.reconcile({ networks: [net], endpoints: [k1], peers: [peerOf(k0, hosts[0]!.vtep)] });
      assert.ok((await ping(k1.sandbox, k0.ip)).ok, 'k1 -> k0 after a reconcile from scratch');
    });
  });
}

/** Lists host namespaces' nft tables; exported for mode-specific tests. */
export async function nftTables(netns: string): Promise<string[]> {
  const out = await runCommand(['ip', 'netns', 'exec', netns, 'nft', 'list', 'tables']);
  return out
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '');
}
