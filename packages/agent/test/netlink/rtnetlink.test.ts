// Container namespaces and wiring, held to one contract by both paths: the
// native addon's rtnetlink (native/src/netlink.cc) and iproute2 (WEFT_NETLINK=ip).
// Real namespaces, veths and bridges; everything is checked the way a user
// would look at it (`ip -j`, ping).
import assert from 'node:assert/strict';
import { readdirSync, readlinkSync } from 'node:fs';
import { Plumbing } from '../../src/dataplane/plumbing.js';
import { createSandbox, deleteSandbox, sandboxExists } from '../../src/dataplane/sandbox.js';
import { newEndpoint, newNetwork } from '../../src/dataplane/testing/compliance.js';
import {
  canManageNetns,
  createTopology,
  ping,
  runIn,
  type Topology,
} from '../../src/dataplane/testing/topology.js';
import {
  type BridgeFdb,
  CommandError,
  commandRunners,
  type IpAddr,
  type IpLink,
  type IpNeigh,
  type IpRoute,
  isMissingDevice,
  isMissingEntry,
  listNetns,
  NetlinkError,
  NetnsShell,
} from '../../src/netlink/ip.js';
import { applyNetlinkOps, createNetns, nativeNetlink, netlinkPath } from '../../src/netlink/rtnetlink.js';

const paths = ['native', 'ip'] as const;

/** Runs `fn` with WEFT_NETLINK selecting `path`, restoring the caller's setting after. */
function usePath(path: (typeof paths)[number]): { restore(): void } {
  const saved = process.env.WEFT_NETLINK;
  if (path === 'ip') process.env.WEFT_NETLINK = 'ip';
  else delete process.env.WEFT_NETLINK;
  return {
    restore() {
      if (saved === undefined) delete process.env.WEFT_NETLINK;
      else process.env.WEFT_NETLINK = saved;
    },
  };
}

for (const path of paths) {
  describe(`container namespaces and wiring (${path})`, function () {
    this.timeout(60_000);
    let topo: Topology;
    let env: { restore(): void } | undefined;

    before(async function () {
      const access = canManageNetns();
      if (!access.ok) {
        console.log(`    skipping: ${access.reason}`);
        this.skip();
      }
      env = usePath(path);
      if (path === 'native' && nativeNetlink() === null) {
        console.log('    skipping: the native addon (with netlinkApply) is not built');
        this.skip();
      }
      topo = await createTopology({ hostCount: 1 });
    });
    after(async () => {
      env?.restore();
      await topo?.destroy();
    });
    beforeEach(() => assert.equal(netlinkPath(), path));

    it('makes an `ip netns` namespace with loopback up, refuses the name twice, and `ip netns del` removes it', async () => {
      const name = `${topo.prefix}-nn`;
      try {
        await createNetns(name, { loopbackUp: true });
        assert.ok((await listNetns()).includes(name));
        const [lo] = await new NetnsShell(name).ipJson<IpLink>(['link', 'show', 'dev', 'lo']);
        assert.ok(lo?.flags.includes('UP'));
        const again = await createNetns(name, { loopbackUp: true }).catch((e) => e);
        assert.ok(
          (again instanceof NetlinkError &&
            again.code === 'EEXIST' &&
            /already exists/.test(again.message)) ||
            (again instanceof CommandError && /File exists/.test(again.stderr)),
          `expected "already exists", got ${again}`,
        );
        await createSandbox(name); // idempotent over an existing one
        await deleteSandbox(name);
        assert.equal(await sandboxExists(name), false);
        assert.ok(!(await listNetns()).includes(name));

        const quiet = `${topo.prefix}-nq`;
        await createNetns(quiet, { loopbackUp: false });
        const [down] = await new NetnsShell(quiet).ipJson<IpLink>(['link', 'show', 'dev', 'lo']);
        assert.ok(!down?.flags.includes('UP'));
        await deleteSandbox(quiet);
      } finally {
        for (const n of [name, `${topo.prefix}-nq`]) await deleteSandbox(n).catch(() => {});
      }
    });

    it('applies a veth pair into a sandbox with name, MAC, MTU, alias, bridge port, address and default route', async () => {
      const host = topo.hosts[0]!.netns;
      const sandbox = await topo.addSandbox('ap');
      const veth = `${topo.prefix.slice(0, 9)}v`;
      await new NetnsShell(host).ip(['link', 'add', 'nlbr0', 'type', 'bridge']);
      await applyNetlinkOps([
        {
          op: 'vethAdd',
          netns: host,
          name: veth,
          mtu: 1400,
          peerName: 'eth1',
          peerMac: '02:42:c6:12:28:05',
          peerMtu: 1400,
          peerNetns: sandbox,
        },
        {
          op: 'linkSet',
          netns: host,
          name: veth,
          alias: 'weft-test a=1 b=2',
          master: 'nlbr0',
          up: true,
          addrGenModeNone: true,
        },
        { op: 'bridgePortSet', netns: host, name: veth, isolated: true },
        { op: 'addrReplace', netns: sandbox, dev: 'eth1', ip: '198.18.40.5', prefixLength: 24 },
        { op: 'addrReplace', netns: sandbox, dev: 'eth1', ip: '198.18.41.5', prefixLength: 24 },
        { op: 'addrDelete', netns: sandbox, dev: 'eth1', ip: '198.18.41.5', prefixLength: 24 },
        { op: 'linkSet', netns: sandbox, name: 'eth1', mtu: 1300, up: true },
        { op: 'routeReplaceDefault', netns: sandbox, dev: 'eth1', gateway: '198.18.40.1' },
      ]);
      const [hostSide] = await new NetnsShell(host).ipJson<IpLink>(['-d', 'link', 'show', 'dev', veth]);
      assert.equal(hostSide?.mtu, 1400);
      assert.equal(hostSide?.ifalias, 'weft-test a=1 b=2');
      assert.equal(hostSide?.master, 'nlbr0');
      assert.ok(hostSide?.flags.includes('UP'));
      assert.equal(hostSide?.linkinfo?.info_slave_data?.isolated, true);
      const [inside] = await new NetnsShell(sandbox).ipJson<IpAddr>(['addr', 'show', 'dev', 'eth1']);
      assert.equal(inside?.address, '02:42:c6:12:28:05');
      assert.equal(inside?.mtu, 1300);
      assert.ok(inside?.flags.includes('UP'));
      assert.deepEqual(
        inside?.addr_info.filter((a) => a.family === 'inet').map((a) => `${a.local}/${a.prefixlen}`),
        ['198.18.40.5/24'],
      );
      const routes = await new NetnsShell(sandbox).ipJson<IpRoute>(['route', 'show', 'default']);
      assert.deepEqual(
        routes.map((r) => `${r.dst} ${r.gateway} ${r.dev}`),
        ['default 198.18.40.1 eth1'],
      );
      // No IPv6 link-local address on the host side (addrgenmode none before up).
      const [hostAddrs] = await new NetnsShell(host).ipJson<IpAddr>(['addr', 'show', 'dev', veth]);
      assert.deepEqual(hostAddrs?.addr_info, []);

      await applyNetlinkOps([{ op: 'linkDelete', netns: host, name: veth }]);
      assert.equal(await new NetnsShell(host).link(veth), undefined);
      assert.equal(await new NetnsShell(sandbox).link('eth1'), undefined); // its peer went with it
      await new NetnsShell(host).ip(['link', 'delete', 'nlbr0']);
    });

    it("programs a vxlan device's remote entries (FDB self and master, neighbours) as `bridge` and `ip` show them, and removes them", async () => {
      const host = topo.hosts[0]!.netns;
      const shell = new NetnsShell(host);
      const vx = `${topo.prefix.slice(0, 9)}x`;
      await shell.ip(['link', 'add', 'nlbr1', 'type', 'bridge']);
      await shell.ip([
        'link',
        'add',
        vx,
        'type',
        'vxlan',
        'id',
        '4242',
        'dstport',
        '4789',
        'nolearning',
        'proxy',
      ]);
      await shell.ip(['link', 'set', vx, 'master', 'nlbr1']);
      const peers = [
        { mac: '02:42:c6:12:2a:05', ip: '198.18.42.5', vtep: '192.0.2.21' },
        { mac: '02:42:c6:12:2a:06', ip: '198.18.42.6', vtep: '192.0.2.22' },
      ];
      const entries = async () => {
        const fdb = await shell.bridgeJson<BridgeFdb>(['fdb', 'show', 'dev', vx]);
        const neigh = await shell.ipJson<IpNeigh>(['neigh', 'show', 'dev', vx]);
        return {
          self: fdb
            .filter((f) => f.flags?.includes('self') && f.dst !== undefined)
            .map((f) => `${f.mac} ${f.dst} ${f.state}`)
            .sort(),
          master: fdb
            .filter((f) => f.master === 'nlbr1' && f.state === 'static')
            .map((f) => f.mac)
            .sort(),
          neigh: neigh.map((n) => `${n.dst} ${n.lladdr} ${n.state?.join(',')}`).sort(),
        };
      };
      await applyNetlinkOps(
        peers.flatMap((p) => [
          { op: 'fdbReplace', netns: host, dev: vx, mac: p.mac, where: 'self', dst: p.vtep } as const,
          { op: 'fdbReplace', netns: host, dev: vx, mac: p.mac, where: 'master' } as const,
          { op: 'neighReplace', netns: host, dev: vx, ip: p.ip, mac: p.mac } as const,
        ]),
      );
      assert.deepEqual(await entries(), {
        self: ['02:42:c6:12:2a:05 192.0.2.21 permanent', '02:42:c6:12:2a:06 192.0.2.22 permanent'],
        master: ['02:42:c6:12:2a:05', '02:42:c6:12:2a:06'],
        neigh: ['198.18.42.5 02:42:c6:12:2a:05 PERMANENT', '198.18.42.6 02:42:c6:12:2a:06 PERMANENT'],
      });
      // Replace moves a MAC to another VTEP and an IP to another MAC, without duplicates.
      await applyNetlinkOps([
        {
          op: 'fdbReplace',
          netns: host,
          dev: vx,
          mac: '02:42:c6:12:2a:05',
          where: 'self',
          dst: '192.0.2.23',
        },
        { op: 'neighReplace', netns: host, dev: vx, ip: '198.18.42.6', mac: '02:42:c6:12:2a:07' },
      ]);
      const moved = await entries();
      assert.deepEqual(moved.self, [
        '02:42:c6:12:2a:05 192.0.2.23 permanent',
        '02:42:c6:12:2a:06 192.0.2.22 permanent',
      ]);
      assert.deepEqual(moved.neigh, [
        '198.18.42.5 02:42:c6:12:2a:05 PERMANENT',
        '198.18.42.6 02:42:c6:12:2a:07 PERMANENT',
      ]);

      await applyNetlinkOps([
        { op: 'fdbDelete', netns: host, dev: vx, mac: '02:42:c6:12:2a:05', where: 'self' },
        { op: 'fdbDelete', netns: host, dev: vx, mac: '02:42:c6:12:2a:05', where: 'master' },
        { op: 'neighDelete', netns: host, dev: vx, ip: '198.18.42.5' },
      ]);
      assert.deepEqual(await entries(), {
        self: ['02:42:c6:12:2a:06 192.0.2.22 permanent'],
        master: ['02:42:c6:12:2a:06'],
        neigh: ['198.18.42.6 02:42:c6:12:2a:07 PERMANENT'],
      });
      // Deleting what is not there: recognisable as such, and nothing after it is applied.
      const gone = await applyNetlinkOps([
        { op: 'fdbDelete', netns: host, dev: vx, mac: '02:42:c6:12:2a:05', where: 'self' },
        { op: 'neighDelete', netns: host, dev: vx, ip: '198.18.42.6' },
      ]).catch((e) => e);
      assert.ok(isMissingEntry(gone), `expected a missing-entry error, got ${gone}`);
      assert.equal((await entries()).neigh.length, 1);
      const noDev = await applyNetlinkOps([
        { op: 'neighReplace', netns: host, dev: 'nosuch1', ip: '198.18.42.9', mac: '02:42:c6:12:2a:09' },
      ]).catch((e) => e);
      assert.ok(isMissingDevice(noDev), `expected a missing-device error, got ${noDev}`);
      // An ARP announcement is best effort: one that cannot be sent does not stop the changes after it.
      await applyNetlinkOps([
        { op: 'announce', netns: host, dev: 'nosuch1', ip: '198.18.42.9', mac: '02:42:c6:12:2a:09' },
        { op: 'neighReplace', netns: host, dev: vx, ip: '198.18.42.9', mac: '02:42:c6:12:2a:09' },
      ]);
      assert.ok((await entries()).neigh.includes('198.18.42.9 02:42:c6:12:2a:09 PERMANENT'));
      await shell.ip(['link', 'delete', vx]);
      await shell.ip(['link', 'delete', 'nlbr1']);
    });

    it('a batch that removes a link and makes one of the same name addresses the new one', async () => {
      const host = topo.hosts[0]!.netns;
      const sandbox = await topo.addSandbox('rm');
      const veth = `${topo.prefix.slice(0, 9)}r`;
      const make = { op: 'vethAdd', netns: host, name: veth, peerName: 'eth2', peerNetns: sandbox } as const;
      const address = (ip: string) =>
        ({ op: 'addrReplace', netns: sandbox, dev: 'eth2', ip, prefixLength: 24 }) as const;
      await applyNetlinkOps([
        make,
        address('198.18.45.2'),
        { op: 'linkDelete', netns: host, name: veth },
        make,
        address('198.18.45.3'),
      ]);
      const [eth2] = await new NetnsShell(sandbox).ipJson<IpAddr>(['addr', 'show', 'dev', 'eth2']);
      assert.deepEqual(
        eth2?.addr_info.filter((a) => a.family === 'inet').map((a) => a.local),
        ['198.18.45.3'],
      );
      await applyNetlinkOps([{ op: 'linkDelete', netns: host, name: veth }]);
    });

    it('stops at the first failure, naming the device or namespace; a missing device is recognisable', async () => {
      const host = topo.hosts[0]!.netns;
      const sandbox = await topo.addSandbox('er');
      const missing = await applyNetlinkOps([
        { op: 'linkSet', netns: sandbox, name: 'nosuch0', up: true },
        { op: 'addrReplace', netns: sandbox, dev: 'lo', ip: '198.18.43.1', prefixLength: 32 },
      ]).catch((e) => e);
      assert.ok(isMissingDevice(missing), `expected a missing-device error, got ${missing}`);
      assert.match(missing.message, /nosuch0/);
      const [lo] = await new NetnsShell(sandbox).ipJson<IpAddr>(['addr', 'show', 'dev', 'lo']);
      assert.ok(
        !lo?.addr_info.some((a) => a.local === '198.18.43.1'),
        'the change after the failing one must not be applied',
      );

      const noNs = await applyNetlinkOps([
        { op: 'linkSet', netns: `${topo.prefix}-gone`, name: 'lo', up: true },
      ]).catch((e) => e);
      assert.ok(noNs instanceof Error);
      assert.match(noNs.message, new RegExp(`${topo.prefix}-gone`));

      const noPeerNs = await applyNetlinkOps([
        { op: 'vethAdd', netns: host, name: 'nlx0', peerName: 'eth0', peerNetns: `${topo.prefix}-gone` },
      ]).catch((e) => e);
      assert.ok(noPeerNs instanceof Error);
      assert.match(noPeerNs.message, new RegExp(`${topo.prefix}-gone`));
      assert.equal(await new NetnsShell(host).link('nlx0'), undefined);

      const noMaster = await applyNetlinkOps([
        { op: 'linkSet', netns: sandbox, name: 'lo', master: 'nosuchbr' },
      ]).catch((e) => e);
      assert.ok(noMaster instanceof Error);
      assert.match(noMaster.message, /nosuchbr/);
    });

    it('Plumbing.attach wires containers (fresh and repair paths) that reach each other and the gateway; detach removes them', async () => {
      const h = topo.hosts[0]!;
      const plumbing = new Plumbing({ vtep: h.vtep, hostNetns: h.netns, gatewaySubnet: '198.19.253.0/24' });
      await plumbing.ensureHost();
      const net = newNetwork('nl', '198.18.42.0/24');
      await plumbing.ensureBridge(net);
      const a = newEndpoint(net, await topo.addSandbox('pa'), '198.18.42.2');
      const b = newEndpoint(net, await topo.addSandbox('pb'), '198.18.42.3');
      await plumbing.attach(a); // lists the host first
      await plumbing.attach(b); // the fresh path: no listing, one change set
      for (const [from, to] of [
        [a, b.ip],
        [b, a.ip],
        [b, '198.19.253.1'], // the gateway bridge, through the default route
      ] as const) {
        const r = await ping(from.sandbox, to);
        assert.ok(r.ok, `ping ${to} from ${from.sandbox}: ${r.stdout}${r.stderr}`);
      }
      const [eth0] = await new NetnsShell(b.sandbox).ipJson<IpAddr>(['addr', 'show', 'dev', 'eth0']);
      assert.equal(eth0?.address, b.mac);
      assert.equal(eth0?.mtu, 1450);
      const lo = await runIn(b.sandbox, ['ping', '-c', '1', '-W', '2', '127.0.0.1']);
      assert.equal(lo.exitCode, 0, 'loopback is up');

      // Broken behind the agent's back: the container's interface is gone. attach repairs it.
      await new NetnsShell(b.sandbox).ip(['link', 'delete', 'dev', 'eth0']);
      await plumbing.attach(b);
      assert.ok((await ping(a.sandbox, b.ip)).ok);
      await plumbing.attach(b); // idempotent
      assert.ok((await ping(a.sandbox, b.ip)).ok);

      await plumbing.detach(b);
      assert.equal(await new NetnsShell(b.sandbox).link('eth0'), undefined);
      assert.deepEqual(
        (await plumbing.gatewayVeths()).map((g) => g.sandbox),
        [a.sandbox],
      );
      await plumbing.removeNetwork(net.id, []);
      await plumbing.teardownHost();
    });
  });
}

/** Network namespace of every thread of this process, by thread id. */
function threadNamespaces(): Map<string, string> {
  const out = new Map<string, string>();
  for (const tid of readdirSync('/proc/self/task')) {
    try {
      out.set(tid, readlinkSync(`/proc/self/task/${tid}/ns/net`));
    } catch {
      // the thread ended meanwhile
    }
  }
  return out;
}

describe('native rtnetlink and the thread pool', function () {
  this.timeout(60_000);
  let topo: Topology;
  let env: { restore(): void } | undefined;

  before(async function () {
    const access = canManageNetns();
    env = usePath('native');
    if (!access.ok || nativeNetlink() === null) {
      console.log(`    skipping: ${access.ok ? 'the native addon is not built' : access.reason}`);
      this.skip();
    }
    topo = await createTopology({ hostCount: 1 });
  });
  after(async () => {
    env?.restore();
    await topo?.destroy();
  });

  it('every worker thread is back in its own network namespace after successful and failing operations', async () => {
    const own = readlinkSync('/proc/self/ns/net');
    for (const [tid, ns] of threadNamespaces()) assert.equal(ns, own, `thread ${tid} before`);
    const host = topo.hosts[0]!.netns;
    const made: string[] = [];
    const work: Promise<unknown>[] = [];
    for (let i = 0; i < 6; i++) {
      const name = `${topo.prefix}-t${i}`;
      made.push(name);
      // A namespace made on a pool thread (unshare there), then the same name again (fails early).
      work.push(createNetns(name, { loopbackUp: true }).then(() => createNetns(name, { loopbackUp: true })));
      // Changes in other namespaces: fine ones, and ones the kernel refuses.
      work.push(applyNetlinkOps([{ op: 'linkSet', netns: host, name: 'lo', up: true }]));
      work.push(applyNetlinkOps([{ op: 'linkSet', netns: host, name: 'nosuch0', up: true }]));
      work.push(applyNetlinkOps([{ op: 'linkSet', netns: `${topo.prefix}-gone`, name: 'lo', up: true }]));
    }
    try {
      const results = await Promise.allSettled(work);
      assert.equal(results.filter((r) => r.status === 'rejected').length, 6 * 3);
      for (const [tid, ns] of threadNamespaces()) assert.equal(ns, own, `thread ${tid} after`);
      // What it would break: a command started from a pool thread runs in that thread's namespace.
      const seen = await Promise.all(
        Array.from({ length: 8 }, () => commandRunners.native(['readlink', '/proc/self/ns/net'])),
      );
      assert.deepEqual(new Set(seen.map((s) => s.trim())), new Set([own]));
    } finally {
      for (const n of made) await deleteSandbox(n).catch(() => {});
    }
  });
});
