import assert from 'node:assert/strict';
import { KernelDataplane } from '../../src/dataplane/kernel.js';
import { bridgeName, gatewayVethName, vxlanName } from '../../src/dataplane/names.js';
import { createSandbox, deleteSandbox } from '../../src/dataplane/sandbox.js';
import {
  dataplaneComplianceSuite,
  newEndpoint,
  newNetwork,
  peerOf,
} from '../../src/dataplane/testing/compliance.js';
import { canManageNetns, createTopology, ping, type Topology } from '../../src/dataplane/testing/topology.js';
import { type BridgeFdb, type IpAddr, type IpLink, type IpNeigh, NetnsShell } from '../../src/netlink/ip.js';

const gatewaySubnet = '198.19.254.0/24';

dataplaneComplianceSuite(
  'kernel',
  (host) =>
    new KernelDataplane({ vtep: host.vtep, hostNetns: host.netns, gatewaySubnet: host.gatewaySubnet }),
);

describe('KernelDataplane specifics', function () {
  this.timeout(60_000);
  let topo: Topology;
  const planes: KernelDataplane[] = [];

  before(async function () {
    const access = canManageNetns();
    if (!access.ok) {
      console.log(`    skipping KernelDataplane specifics: ${access.reason}`);
      this.skip();
    }
    topo = await createTopology({ hostCount: 2 });
  });
  afterEach(async () => {
    for (const dp of planes.splice(0)) await dp.stop().catch(() => {});
  });
  after(async () => {
    await topo?.destroy();
  });

  async function plane(i: number): Promise<KernelDataplane> {
    const h = topo.hosts[i]!;
    const dp = new KernelDataplane({ vtep: h.vtep, hostNetns: h.netns, gatewaySubnet });
    planes.push(dp);
    await dp.start();
    return dp;
  }

  /** The remote entries as `bridge fdb` / `ip neigh` list them, sorted. */
  async function entries(networkId: string) {
    const shell = new NetnsShell(topo.hosts[0]!.netns);
    const vx = vxlanName(networkId);
    const fdb = await shell.bridgeJson<BridgeFdb>(['fdb', 'show', 'dev', vx]);
    const neigh = await shell.ipJson<IpNeigh>(['neigh', 'show', 'dev', vx]);
    return {
      vtepByMac: fdb
        .filter((f) => f.flags?.includes('self') && f.dst)
        .map((f) => `${f.mac}>${f.dst}`)
        .sort(),
      bridgeMacs: fdb
        .filter((f) => f.master && f.state === 'static')
        .map((f) => f.mac)
        .sort(),
      neigh: neigh.map((n) => `${n.dst}>${n.lladdr}`).sort(),
    };
  }

  it('makes a vxlan device with the VNI, port 4789, no learning, ARP proxy and the local VTEP, in the bridge', async () => {
    const dp = await plane(0);
    const net = newNetwork('v', '198.18.20.0/24');
    await dp.ensureNetwork(net);
    const shell = new NetnsShell(topo.hosts[0]!.netns);
    const vx = await shell.link(vxlanName(net.id));
    assert.equal(vx?.linkinfo?.info_kind, 'vxlan');
    const data = vx!.linkinfo!.info_data!;
    assert.equal(data.id, net.vni);
    assert.equal(data.port, 4789);
    assert.equal(data.learning, false);
    assert.equal(data.proxy, true);
    assert.equal(data.local, topo.hosts[0]!.vtep);
    assert.equal(vx?.master, bridgeName(net.id));
    assert.equal(vx?.mtu, 1450);
    assert.ok(vx?.flags.includes('UP'));
  });

  it('programs static FDB and neighbour entries and follows endpoints that move or change MAC', async () => {
    const dp = await plane(0);
    const net = newNetwork('f', '198.18.21.0/24');
    await dp.ensureNetwork(net);
    const [h1, h2] = ['192.0.2.12', '192.0.2.99'];
    const sb = 'unused'; // peers never touch a sandbox
    const p1 = peerOf(newEndpoint(net, sb, '198.18.21.2'), h1);
    const p2 = peerOf(newEndpoint(net, sb, '198.18.21.3'), h1);
    await dp.addPeer(p1);
    await dp.addPeer(p2);
    assert.deepEqual(await entries(net.id), {
      vtepByMac: [`${p1.mac}>${h1}`, `${p2.mac}>${h1}`],
      bridgeMacs: [p1.mac, p2.mac],
      neigh: [`${p1.ip}>${p1.mac}`, `${p2.ip}>${p2.mac}`],
    });

    // p1 moves to another host: the new mapping arrives before the old one is withdrawn.
    await dp.addPeer({ ...p1, vtep: h2 });
    await dp.removePeer(p1);
    assert.deepEqual((await entries(net.id)).vtepByMac, [`${p1.mac}>${h2}`, `${p2.mac}>${h1}`]);

    // p2's IP is given to an endpoint with another MAC: the old MAC goes away.
    const newMac = '02:42:aa:bb:cc:dd';
    await dp.addPeer({ ...p2, mac: newMac, endpointId: 'other' });
    const after = await entries(net.id);
    assert.deepEqual(after.vtepByMac, [`${newMac}>${h1}`, `${p1.mac}>${h2}`].sort());
    assert.deepEqual(after.neigh, [`${p1.ip}>${p1.mac}`, `${p2.ip}>${newMac}`]);

    await dp.removePeer({ ...p1, vtep: h2 });
    await dp.removePeer({ ...p2, mac: newMac });
    assert.deepEqual(await entries(net.id), { vtepByMac: [], bridgeMacs: [], neigh: [] });
  });

  it('applies peers that arrive together (a host joining, a host dying); one on a missing network fails alone', async () => {
    const dp = await plane(0);
    const net = newNetwork('b', '198.18.28.0/24');
    await dp.ensureNetwork(net);
    const peers = Array.from({ length: 40 }, (_, i) =>
      peerOf(newEndpoint(net, 'x', `198.18.28.${i + 2}`), i % 2 ? '192.0.2.12' : '192.0.2.13'),
    );
    const stray = peerOf(
      newEndpoint(newNetwork('nowhere', '198.18.29.0/24'), 'x', '198.18.29.2'),
      '192.0.2.12',
    );
    const added = await Promise.allSettled([...peers, stray].map((p) => dp.addPeer(p)));
    assert.equal(added.filter((r) => r.status === 'fulfilled').length, 40);
    const [failed] = added.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
    assert.match(String(failed?.reason), /network \S+ is not set up on this host/);
    const all = await entries(net.id);
    assert.equal(all.vtepByMac.length, 40);
    assert.equal(all.bridgeMacs.length, 40);
    assert.equal(all.neigh.length, 40);

    // The host at .13 dies: its 20 endpoints go at once; the other host's stay.
    const dead = peers.filter((p) => p.vtep === '192.0.2.13');
    await Promise.all([...dead, stray].map((p) => dp.removePeer(p)));
    const left = await entries(net.id);
    assert.deepEqual(
      left.vtepByMac,
      peers
        .filter((p) => p.vtep === '192.0.2.12')
        .map((p) => `${p.mac}>192.0.2.12`)
        .sort(),
    );
    assert.equal(left.neigh.length, 20);
    assert.equal(left.bridgeMacs.length, 20);
  });

  it('reconcile leaves exactly the state’s FDB and neighbour entries', async () => {
    const dp = await plane(0);
    const net = newNetwork('r', '198.18.22.0/24');
    await dp.ensureNetwork(net);
    const keep = peerOf(newEndpoint(net, 'x', '198.18.22.2'), '192.0.2.12');
    const moved = peerOf(newEndpoint(net, 'x', '198.18.22.3'), '192.0.2.12');
    const stale = peerOf(newEndpoint(net, 'x', '198.18.22.4'), '192.0.2.12');
    for (const p of [keep, moved, stale]) await dp.addPeer(p);
    // Leftovers a crash could leave: an FDB entry without neighbour, a neighbour without FDB.
    const shell = new NetnsShell(topo.hosts[0]!.netns);
    const vx = vxlanName(net.id);
    await shell.bridge([
      'fdb',
      'append',
      '02:42:00:00:00:77',
      'dev',
      vx,
      'dst',
      '192.0.2.77',
      'self',
      'permanent',
    ]);
    await shell.ip([
      'neigh',
      'replace',
      '198.18.22.88',
      'lladdr',
      '02:42:00:00:00:88',
      'dev',
      vx,
      'nud',
      'permanent',
    ]);

    const restarted = new KernelDataplane({
      vtep: topo.hosts[0]!.vtep,
      hostNetns: topo.hosts[0]!.netns,
      gatewaySubnet,
    });
    planes.push(restarted);
    await restarted.start();
    await restarted.reconcile({
      networks: [net],
      endpoints: [],
      peers: [keep, { ...moved, vtep: '192.0.2.13' }],
    });
    assert.deepEqual(await entries(net.id), {
      vtepByMac: [`${keep.mac}>192.0.2.12`, `${moved.mac}>192.0.2.13`],
      bridgeMacs: [keep.mac, moved.mac],
      neigh: [`${keep.ip}>${keep.mac}`, `${moved.ip}>${moved.mac}`],
    });
  });

  it('reconcile wires everything it can and then names what it could not', async () => {
    const dp = await plane(0);
    const net = newNetwork('partial', '198.18.26.0/24');
    const gone = newEndpoint(net, `${topo.prefix}-vanished`, '198.18.26.2');
    const alive = newEndpoint(net, await topo.addSandbox('alive'), '198.18.26.3');
    const peer = peerOf(newEndpoint(net, 'x', '198.18.26.9'), '192.0.2.12');
    await assert.rejects(
      dp.reconcile({ networks: [net], endpoints: [gone, alive], peers: [peer] }),
      (e: Error) =>
        e instanceof AggregateError && /1 failure.*sandbox .*-vanished.*does not exist/.test(e.message),
    );
    const [eth0] = await new NetnsShell(alive.sandbox).ipJson<IpAddr>(['addr', 'show', 'dev', 'eth0']);
    assert.ok(
      eth0?.addr_info.some((a) => a.local === alive.ip),
      'the endpoint after the failing one is attached',
    );
    assert.deepEqual((await entries(net.id)).neigh, [`${peer.ip}>${peer.mac}`], 'peers are programmed');
  });

  it('gives each sandbox its own gateway address and reuses freed ones', async () => {
    const dp = await plane(0);
    const net = newNetwork('g', '198.18.23.0/24');
    await dp.ensureNetwork(net);
    const a = newEndpoint(net, await topo.addSandbox('ga'), '198.18.23.2');
    const b = newEndpoint(net, await topo.addSandbox('gb'), '198.18.23.3');
    const c = newEndpoint(net, await topo.addSandbox('gc'), '198.18.23.4');
    const gwAddress = async (sandbox: string) => {
      const [l] = await new NetnsShell(sandbox).ipJson<IpAddr>(['addr', 'show', 'dev', 'weftgw0']);
      return l?.addr_info.find((x) => x.family === 'inet')?.local;
    };
    await dp.attach(a);
    await dp.attach(b);
    assert.equal(await gwAddress(a.sandbox), '198.19.254.2');
    assert.equal(await gwAddress(b.sandbox), '198.19.254.3');
    await dp.detach(a);
    await dp.attach(c);
    assert.equal(await gwAddress(c.sandbox), '198.19.254.2', 'the freed address is given again');
    // Gateway ports are isolated: containers meet only through their overlay.
    const port = await new NetnsShell(topo.hosts[0]!.netns).link(gatewayVethName(c.sandbox));
    assert.equal(port?.linkinfo?.info_slave_data?.isolated, true);
    assert.equal(port?.master, 'weft_gwbridge');
    const [route] = await new NetnsShell(c.sandbox).ipJson<{ gateway?: string }>([
      'route',
      'show',
      'default',
    ]);
    assert.equal(route?.gateway, '198.19.254.1');
  });

  it('wires a container correctly when devices changed behind its back (namespace deleted and made again)', async () => {
    const dp = await plane(0);
    const net = newNetwork('k', '198.18.27.0/24');
    await dp.ensureNetwork(net);
    const first = newEndpoint(net, await topo.addSandbox('again'), '198.18.27.2');
    const other = newEndpoint(net, await topo.addSandbox('other'), '198.18.27.3');
    await dp.attach(first);
    await dp.attach(other);
    // Someone deletes the container's namespace (its veths go with it) and makes it again.
    await deleteSandbox(first.sandbox);
    await createSandbox(first.sandbox);
    const again = { ...newEndpoint(net, first.sandbox, '198.18.27.4'), endpointId: 'again' };
    await dp.attach(again);
    const [eth0] = await new NetnsShell(again.sandbox).ipJson<IpAddr>(['addr', 'show', 'dev', 'eth0']);
    assert.deepEqual(
      eth0?.addr_info.filter((a) => a.family === 'inet').map((a) => a.local),
      [again.ip],
    );
    assert.ok((await ping(again.sandbox, other.ip)).ok, 'the new container reaches its neighbour');
    assert.ok((await ping(again.sandbox, topo.outsideIp)).ok, 'and the outside through its gateway veth');
    // A foreign eth0 in a fresh namespace is still refused, and left alone.
    const foreign = await topo.addSandbox('foreign');
    await new NetnsShell(foreign).ip(['link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'eth0peer']);
    await assert.rejects(
      dp.attach(newEndpoint(net, foreign, '198.18.27.5')),
      /already has an interface eth0 not made by Weft/,
    );
    const [kept] = await new NetnsShell(foreign).ipJson<IpLink>(['-d', 'link', 'show', 'dev', 'eth0']);
    assert.equal(kept?.linkinfo?.info_kind, 'veth');
    assert.equal(kept?.address === newEndpoint(net, foreign, '198.18.27.5').mac, false);
  });

  it('moves containers to a new gateway subnet when restarted with one', async () => {
    const h = topo.hosts[0]!;
    const dp = await plane(0);
    const net = newNetwork('s', '198.18.25.0/24');
    await dp.ensureNetwork(net);
    const ep = newEndpoint(net, await topo.addSandbox('sub'), '198.18.25.2');
    await dp.attach(ep);

    const moved = new KernelDataplane({ vtep: h.vtep, hostNetns: h.netns, gatewaySubnet: '198.19.253.0/24' });
    planes.push(moved);
    await moved.start();
    await moved.reconcile({ networks: [net], endpoints: [ep], peers: [] });
    const [gw] = await new NetnsShell(ep.sandbox).ipJson<IpAddr>(['addr', 'show', 'dev', 'weftgw0']);
    assert.deepEqual(
      gw?.addr_info.filter((a) => a.family === 'inet').map((a) => `${a.local}/${a.prefixlen}`),
      ['198.19.253.2/24'],
    );
    const [bridge] = await new NetnsShell(h.netns).ipJson<IpAddr>(['addr', 'show', 'dev', 'weft_gwbridge']);
    assert.deepEqual(
      bridge?.addr_info.filter((a) => a.family === 'inet').map((a) => a.local),
      ['198.19.253.1'],
    );
    const nft = await new NetnsShell(h.netns).exec(['nft', 'list', 'table', 'ip', 'weft']);
    assert.match(nft, /198\.19\.253\.0\/24/);
    assert.doesNotMatch(nft, /198\.19\.254/);
    assert.ok(
      (await ping(ep.sandbox, topo.outsideIp)).ok,
      'container reaches outside through the new gateway',
    );
  });

  it('refuses to take over an interface it did not make, and names a VTEP it cannot find', async () => {
    const dp = await plane(0);
    const net = newNetwork('c', '198.18.24.0/24');
    await dp.ensureNetwork(net);
    const sandbox = await topo.addSandbox('conflict');
    await new NetnsShell(sandbox).ip(['link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'eth0peer']);
    await assert.rejects(
      dp.attach(newEndpoint(net, sandbox, '198.18.24.2')),
      /already has an interface eth0/,
    );
    const [eth0] = await new NetnsShell(sandbox).ipJson<IpLink>(['-d', 'link', 'show', 'dev', 'eth0']);
    assert.equal(eth0?.linkinfo?.info_kind, 'veth', 'the foreign interface is untouched');
    assert.equal(eth0?.address === newEndpoint(net, sandbox, '198.18.24.2').mac, false);

    await assert.rejects(
      dp.attach(newEndpoint(net, `${topo.prefix}-missing`, '198.18.24.3')),
      /sandbox netns "wt.*-missing" does not exist/,
    );

    const wrong = new KernelDataplane({
      vtep: '192.0.2.250',
      hostNetns: topo.hosts[1]!.netns,
      gatewaySubnet,
    });
    await assert.rejects(wrong.start(), /VTEP address 192\.0\.2\.250 is not configured/);
  });
});
