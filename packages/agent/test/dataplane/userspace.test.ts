import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { tapName } from '../../src/dataplane/names.js';
import { loadNativeAddon } from '../../src/dataplane/native.js';
import { ping, runIn, tcpRoundTrip } from '../../src/dataplane/testing/topology.js';
import type { UserspaceDataplane } from '../../src/dataplane/userspace.js';
import { NetnsShell } from '../../src/netlink/ip.js';
import {
  type Cluster,
  createCluster,
  parseCpuList,
  skipUnlessNetns,
  tcpBulkTransfer,
} from './userspace-fixture.js';

/** The container's IPv6 link-local address on eth0 once duplicate address detection is done. */
async function waitForLinkLocal(netns: string): Promise<string> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const out = await new NetnsShell(netns).ip(['-6', '-o', 'addr', 'show', 'dev', 'eth0', 'scope', 'link']);
    const m = /inet6 (fe80::[0-9a-f:]+)\/64/.exec(out);
    if (m !== null && !/tentative/.test(out)) return m[1]!;
    if (Date.now() > deadline) throw new Error(`no usable link-local address in ${netns}: ${out}`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

/** CPUs this process may run on (its packet threads inherit them). */
function allowedCpus(): number[] {
  return parseCpuList(
    /Cpus_allowed_list:\s*(\S+)/.exec(readFileSync('/proc/self/status', 'utf8'))?.[1] ?? '',
  );
}

describe('userspace data plane (native addon)', function () {
  this.timeout(60_000);

  for (const kind of ['userspace', 'userspace-nooffload'] as const) {
    describe(`three hosts, ${kind}`, () => {
      let cluster: Cluster | undefined;
      before(async function () {
        skipUnlessNetns(this);
        cluster = await createCluster([kind, kind, kind]);
      });
      after(async () => {
        await cluster?.destroy();
      });

      it('containers ping each other across hosts in both directions', async () => {
        const [a, b, c] = cluster!.containers;
        for (const [from, to] of [
          [a, b],
          [b, a],
          [a, c],
          [c, b],
        ] as const) {
          const r = await ping(from!.netns, to!.ip, { count: 1, waitSeconds: 2 });
          assert.ok(r.ok, `ping ${from!.ip} -> ${to!.ip} failed: ${r.stdout}${r.stderr}`);
        }
      });

      it('carries TCP connections (with a payload larger than one segment)', async () => {
        const [a, b] = cluster!.containers;
        const r1 = await tcpRoundTrip(b!.netns, a!.netns, b!.ip, 7001, 'hello');
        assert.equal(r1.reply, 'hello');
        assert.equal(r1.seenFrom, a!.ip);
        // 8 MB each way: TSO super-frames out, GRO/coalesced frames in.
        for (const [server, client, port] of [
          [a, b, 7002],
          [b, a, 7003],
        ] as const) {
          const r = await tcpBulkTransfer(server!.netns, client!.netns, server!.ip, port, 8 << 20);
          assert.ok(r.ok, `bulk TCP ${client!.ip} -> ${server!.ip}: ${r.detail}`);
        }
        // Both hosts sent and received bulk data: with offloads that went
        // through TSO segmentation and receive coalescing, without through
        // the one-packet-per-frame path.
        for (const dp of cluster!.dataplanes.slice(0, 2)) {
          const c = Object.values((dp as UserspaceDataplane).engineCounters()!.networks)[0]!;
          if (kind === 'userspace') {
            assert.ok(
              c.txSuperFrames > 0 && c.rxCoalescedFrames > 0,
              `offload path unused: ${JSON.stringify(c)}`,
            );
          } else {
            assert.equal(c.txSuperFrames + c.rxCoalescedFrames, 0, `offload path used with offloads off`);
          }
        }
      });

      it('carries IPv6 (link-local) TCP: neighbour discovery replicated to every host, TSO6 segmented', async () => {
        const [a, b] = cluster!.containers;
        // Both ends: a connection from a still-tentative source fails with EADDRNOTAVAIL.
        const [linkLocal] = await Promise.all([waitForLinkLocal(b!.netns), waitForLinkLocal(a!.netns)]);
        const counters = () =>
          Object.values((cluster!.dataplanes[0] as UserspaceDataplane).engineCounters()!.networks)[0]!;
        const before = counters();
        const r = await tcpBulkTransfer(b!.netns, a!.netns, `${linkLocal}%eth0`, 7005, 2 << 20);
        assert.ok(r.ok, `bulk TCP over IPv6 to ${linkLocal}: ${r.detail}`);
        const after = counters();
        assert.ok(after.flooded > 0, 'neighbour solicitations were not replicated');
        if (kind === 'userspace') {
          assert.ok(after.txSuperFrames > before.txSuperFrames, 'no IPv6 TSO frame was segmented');
        }
      });

      it('answers ARP from the peer table and counts traffic per network', async () => {
        const [a, b] = cluster!.containers;
        const neigh = await new NetnsShell(a!.netns).ip(['neigh', 'show', b!.ip]);
        assert.match(neigh, new RegExp(b!.endpoint.mac));
        const counters = await cluster!.dataplanes[0]!.counters();
        const c = counters[cluster!.network.id];
        assert.ok(c !== undefined, 'no counters for the network');
        assert.ok(c.txPackets > 0 && c.rxPackets > 0 && c.txBytes > 0 && c.rxBytes > 0, JSON.stringify(c));
        const engine = (cluster!.dataplanes[0] as UserspaceDataplane).engineCounters()!;
        const own = Object.values(engine.networks)[0]!;
        assert.ok(own.arpReplies > 0, `no ARP replies counted: ${JSON.stringify(own)}`);
        // The packet thread slept and was woken for that traffic; its busy-poll
        // window stays within the default bound of 200 µs.
        assert.ok(engine.thread.wakeups > 0, JSON.stringify(engine.thread));
        assert.ok(engine.thread.busyPollWindowUs >= 0 && engine.thread.busyPollWindowUs <= 200);
      });

      it('drops traffic to MACs no peer has, and counts it', async () => {
        const [a] = cluster!.containers;
        // An address in the subnet that no endpoint has: ARP is not answered.
        const r = await ping(a!.netns, '198.18.0.99', { count: 1, waitSeconds: 1 });
        assert.equal(r.ok, false);
        const engine = (cluster!.dataplanes[0] as UserspaceDataplane).engineCounters()!;
        assert.ok(Object.values(engine.networks)[0]!.drops.arp_unanswered! > 0);
      });
    });
  }

  it('survives its TAP being deleted by hand: no spinning thread, ensureNetwork repairs it', async function () {
    skipUnlessNetns(this);
    const cluster = await createCluster(['userspace', 'userspace']);
    try {
      const [a, b] = cluster.containers;
      const host0 = new NetnsShell(cluster.topology.hosts[0]!.netns);
      await host0.ip(['link', 'delete', 'dev', tapName(cluster.network.id)]);
      const cpuBefore = process.cpuUsage();
      await new Promise((resolve) => setTimeout(resolve, 1500));
      const cpu = process.cpuUsage(cpuBefore);
      // A real-time thread spinning on the dead descriptor would burn ~1.5 s here.
      assert.ok(
        cpu.system + cpu.user < 600_000,
        `process used ${(cpu.system + cpu.user) / 1000} ms CPU while idle`,
      );
      assert.equal((await ping(a!.netns, b!.ip, { waitSeconds: 1 })).ok, false);
      await cluster.dataplanes[0]!.ensureNetwork(cluster.network);
      // The container's ARP entry for b may still be resolving (or have
      // failed) from the outage, and would answer this ping with "host
      // unreachable" once its last probe, sent into the dead TAP, expires.
      await new NetnsShell(a!.netns).ip(['neigh', 'flush', 'dev', 'eth0']);
      const r = await ping(a!.netns, b!.ip);
      assert.ok(r.ok, `no traffic after ensureNetwork recreated the TAP: ${r.stdout}`);
      const engine = (cluster.dataplanes[0] as UserspaceDataplane).engineCounters()!;
      assert.ok(engine.networks[String(cluster.network.vni)] !== undefined);
    } finally {
      await cluster.destroy();
    }
  });

  it('every packet is handled by the packet thread of the CPU it shows up on, from either CPU', async function () {
    skipUnlessNetns(this);
    const cpus = allowedCpus();
    if (cpus.length < 2) this.skip(); // one queue's worth of CPUs: nothing to steer
    const cluster = await createCluster(['userspace', 'userspace']);
    try {
      const [a, b] = cluster.containers;
      const threads = () =>
        cluster.dataplanes.map((dp) => (dp as UserspaceDataplane).engineCounters()!.thread);
      for (const t of threads()) {
        assert.ok(t.steersByCpu, `the engine does not steer by CPU: ${t.steeringError}`);
        for (const cpu of cpus) assert.equal(t.queues[cpu]!.cpu, cpu, JSON.stringify(t.queues));
      }
      // Warm-up (ARP), then pings from a container pinned to one CPU: the
      // request enters host a's TAP on that CPU, crosses the underlay veth
      // in that CPU's softirq to host b, and the answer comes back the same
      // way, so on both hosts the queue of that CPU does the rounds. Other
      // queues see the containers' own chatter, sent from timers on any CPU
      // (IPv6 router solicitations and MLD reports after link-up, flooded
      // to every host): 4 such rounds in 0.5 s seen right after set-up, and
      // once 4 against 11 pinged rounds on a CI machine, so the pings are
      // many (30) and must be most of the work, not nearly all of it. Were
      // steering broken, one flow's datagrams would hash to one socket for
      // both CPUs, and one of the two runs would fail by 30 rounds.
      const count = 30;
      assert.ok((await ping(a!.netns, b!.ip, { count: 2 })).ok);
      for (const cpu of cpus.slice(0, 2)) {
        const before = threads();
        const r = await runIn(a!.netns, [
          'taskset',
          '-c',
          String(cpu),
          'ping',
          '-n',
          '-c',
          String(count),
          '-i',
          '0.02',
          b!.ip,
        ]);
        assert.equal(r.exitCode, 0, `ping failed: ${r.stdout}${r.stderr}`);
        for (const [host, t] of threads().entries()) {
          const rounds = t.queues.map((q, i) => q.rounds - before[host]!.queues[i]!.rounds);
          const others = rounds.reduce((x, y) => x + y, 0) - rounds[cpu]!;
          const detail = `host ${host}, pings from CPU ${cpu}: rounds per queue ${JSON.stringify(rounds)}`;
          // host a: a round per request from the TAP and per answer from the
          // socket; host b one per request (busy polling may take the other
          // packet of a ping in the same round)
          assert.ok(rounds[cpu]! >= count, detail);
          assert.ok(others <= rounds[cpu]! / 2, detail);
        }
      }
    } finally {
      await cluster.destroy();
    }
  });

  it('sends each inner flow from one UDP source port, and different flows from several (RFC 7348 entropy)', async function () {
    skipUnlessNetns(this);
    const cluster = await createCluster(['userspace', 'userspace']);
    try {
      const [a, b] = cluster.containers;
      const hostB = cluster.topology.hosts[1]!.netns;
      // Host b records the outer source port of every VXLAN datagram
      // carrying one of the test's datagrams, told apart by their length:
      // outer UDP 8 + VXLAN 8 + Ethernet 14 + IPv4 20 + UDP 8 + 1000 bytes.
      const nft = async (...args: string[]) => {
        const r = await runIn(hostB, ['nft', ...args]);
        assert.equal(r.exitCode, 0, `nft ${args.join(' ')}: ${r.stderr}`);
        return r.stdout;
      };
      await nft('add', 'table', 'inet', 'sports');
      await nft('add', 'set', 'inet', 'sports', 'seen', '{ type inet_service; flags dynamic; size 1024; }');
      await nft('add', 'chain', 'inet', 'sports', 'in', '{ type filter hook input priority 0; }');
      await nft(
        'add',
        'rule',
        'inet',
        'sports',
        'in',
        'udp',
        'dport',
        '4789',
        'udp',
        'length',
        '1058',
        'add',
        '@seen',
        '{ udp sport }',
      );
      const seen = async () => {
        const set = JSON.parse(await nft('-j', 'list', 'set', 'inet', 'sports', 'seen')) as {
          nftables: { set?: { elem?: number[] } }[];
        };
        return set.nftables.find((x) => x.set !== undefined)!.set!.elem ?? [];
      };
      // Datagrams of 1000 bytes to b's discard port: `flows` sockets, each
      // sending `each`, the sender moving to the next allowed CPU before
      // every datagram, as a scheduler may move a sender: its frames then
      // reach the packet threads of different CPUs, and the port must not
      // depend on which one sends.
      const cpus = allowedCpus();
      const send = async (flows: number, each: number) => {
        const py = [
          'import os, socket',
          `cpus = ${JSON.stringify(cpus)}`,
          `socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(${flows})]`,
          'n = 0',
          `for _ in range(${each}):`,
          '    for s in socks:',
          '        os.sched_setaffinity(0, {cpus[n % len(cpus)]})',
          '        n += 1',
          `        s.sendto(bytes(1000), ('${b!.ip}', 9))`,
        ].join('\n');
        const r = await runIn(a!.netns, ['python3', '-c', py]);
        assert.equal(r.exitCode, 0, `sender: ${r.stderr}`);
      };
      assert.ok((await ping(a!.netns, b!.ip, { count: 1 })).ok);
      await send(1, 30);
      const one = await seen();
      assert.equal(one.length, 1, `one flow left from ports ${JSON.stringify(one)}`);
      await nft('flush', 'set', 'inet', 'sports', 'seen');
      // 40 flows over the 8 ports of a packet thread: all on 3 or fewer is
      // a 1-in-10^16 chance for a working hash.
      await send(40, 1);
      const many = await seen();
      assert.ok(many.length >= 4, `40 flows left from ports ${JSON.stringify(many)}`);
      assert.ok(!many.includes(4789), 'a flow left from the listening port 4789');
    } finally {
      await cluster.destroy();
    }
  });

  it('keeps a TCP stream in order although its frames leave from two CPUs', async function () {
    skipUnlessNetns(this);
    if (allowedCpus().length < 2) this.skip(); // one queue: nothing to reorder
    const cluster = await createCluster(['userspace', 'userspace']);
    try {
      const [a, b] = cluster.containers;
      /** The receiver's count of segments that arrived out of order (TcpExt TCPOFOQueue). */
      const outOfOrder = async () => {
        const r = await runIn(b!.netns, ['cat', '/proc/net/netstat']);
        const lines = r.stdout.split('\n').filter((l) => l.startsWith('TcpExt:'));
        const names = lines[0]!.split(/\s+/);
        const values = lines[1]!.split(/\s+/);
        return Number(values[names.indexOf('TCPOFOQueue')]);
      };
      assert.ok((await ping(a!.netns, b!.ip, { count: 2 })).ok);
      const before = await outOfOrder();
      // The sender's write() and the softirq that takes its ACKs both send
      // its segments, from different CPUs: steered by CPU alone, two threads
      // sent them (4 s at 5 Gbit/s: 42,864 out-of-order arrivals). Kept on
      // one queue it arrives in order (a little slack: the stack picks a new
      // flow hash, and so a new queue, after a retransmission timeout).
      const bulk = await tcpBulkTransfer(b!.netns, a!.netns, b!.ip, 7030, 64 << 20);
      assert.ok(bulk.ok, bulk.detail);
      const reordered = (await outOfOrder()) - before;
      assert.ok(reordered <= 20, `${reordered} segments arrived out of order`);
    } finally {
      await cluster.destroy();
    }
  });

  /** Both hosts' thread stats summed, before and after a 32 MB stream a -> b, then after 30 pings. */
  async function streamThenPings(streamNapUs?: number) {
    const cluster = await createCluster(['userspace', 'userspace'], { userspace: { streamNapUs } });
    try {
      const [a, b] = cluster.containers;
      const sum = () => {
        const total = { busyPolls: 0, naps: 0, wakeups: 0 };
        for (const dp of cluster.dataplanes) {
          const t = (dp as UserspaceDataplane).engineCounters()!.thread;
          total.busyPolls += t.busyPolls;
          total.naps += t.naps;
          total.wakeups += t.wakeups;
        }
        return total;
      };
      // Warm up (ARP, the connection's first window) so the counted rounds are the stream's.
      assert.ok((await ping(a!.netns, b!.ip, { count: 2 })).ok);
      const before = sum();
      const bulk = await tcpBulkTransfer(b!.netns, a!.netns, b!.ip, 7020, 32 << 20);
      assert.ok(bulk.ok, bulk.detail);
      const afterStream = sum();
      const r = await runIn(a!.netns, ['ping', '-n', '-c', '30', '-i', '0.02', b!.ip]);
      assert.equal(r.exitCode, 0, `ping failed: ${r.stdout}${r.stderr}`);
      const afterPings = sum();
      const delta = (x: typeof before, y: typeof before) => ({
        busyPolls: y.busyPolls - x.busyPolls,
        naps: y.naps - x.naps,
        wakeups: y.wakeups - x.wakeups,
      });
      const { steersByCpu, streamNapUs } = (cluster.dataplanes[0] as UserspaceDataplane).engineCounters()!
        .thread;
      return {
        stream: delta(before, afterStream),
        pings: delta(afterStream, afterPings),
        steersByCpu,
        streamNapUs,
      };
    } finally {
      await cluster.destroy();
    }
  }

  it('steered by CPU, a stream wakes its packet threads and never naps by default; streamNapUs makes them nap, and neither busy-polls during it', async function () {
    skipUnlessNetns(this);
    const woken = await streamThenPings();
    // With one CPU there is one queue, and the default is to nap.
    if (!woken.steersByCpu) this.skip();
    const napping = await streamThenPings(200);
    const detail = JSON.stringify({ woken, napping });
    // Steered by CPU naps are off by default (each costs a timer interrupt,
    // dearer here than the same-CPU wake-up it saves); with streamNapUs the threads that
    // carry the stream's bulk nap instead of blocking, so the stream costs
    // fewer wake-ups (measured: 557 naps against 903 wake-ups, 1539 wake-ups
    // without naps, per 32 MB; the threads on the ACK path do not nap).
    assert.equal(woken.streamNapUs, 0, detail);
    assert.equal(woken.stream.naps, 0, `naps by default: ${detail}`);
    assert.equal(napping.streamNapUs, 200, detail);
    assert.ok(
      napping.stream.naps > 0.25 * (napping.stream.naps + napping.stream.wakeups),
      `too few naps during the stream with streamNapUs 200: ${detail}`,
    );
    assert.ok(napping.stream.wakeups < woken.stream.wakeups, `naps saved no wake-ups: ${detail}`);
    // The stream's ACKs and short segments come within 1 ms of its bulk
    // rounds and do not spin; light rounds after a stall of the stream may.
    // Measured with naps: 0.3-2.5% of its idle moments began a busy-poll
    // spell, 5.3% with a busy loop on one of the two CPUs (the stream stalls
    // more); the rule before spun after most light rounds that sent: 7.5-21%.
    for (const [name, run] of Object.entries({ woken, napping })) {
      const idleMoments = run.stream.wakeups + run.stream.naps;
      assert.ok(
        run.stream.busyPolls < 0.08 * idleMoments,
        `${name}: busy-polling during the stream: ${detail}`,
      );
    }
    // Pings 20 ms apart are no stream: no naps, and busy polling is back.
    // The spin window adapts (it halves after each 20 ms gap and regrows on
    // a quick answer), so the count varies: 10-34 spells over these 30
    // pings measured, and 4 of 10 pings once (hence 30).
    assert.equal(napping.pings.naps, 0, detail);
    assert.ok(woken.pings.busyPolls >= 5, `pings no longer busy-poll: ${detail}`);
  });

  it('stop() leaves no TAP devices and no native threads behind', async function () {
    skipUnlessNetns(this);
    const addon = loadNativeAddon();
    const before = addon.liveThreads();
    const cluster = await createCluster(['userspace', 'userspace']);
    try {
      const perHost = cluster.dataplanes.map(
        (dp) => (dp as UserspaceDataplane).engineCounters()!.thread.threads,
      );
      assert.ok(perHost.every((n) => n >= 1));
      assert.equal(
        addon.liveThreads(),
        before + perHost[0]! + perHost[1]!,
        'one packet thread per queue and host',
      );
      const host = new NetnsShell(cluster.topology.hosts[0]!.netns);
      assert.ok((await host.link(tapName(cluster.network.id))) !== undefined);
      for (const dp of cluster.dataplanes) await dp.stop();
      assert.equal(addon.liveThreads(), before);
      for (const h of cluster.topology.hosts) {
        const names = (await new NetnsShell(h.netns).links()).map((l) => l.ifname);
        assert.deepEqual(
          names.filter((n) => n !== 'lo' && n !== 'eth0'),
          [],
          `left behind in ${h.netns}`,
        );
        const sockets = await runIn(h.netns, ['ss', '-Hlun', 'sport = :4789']);
        assert.equal(sockets.stdout.trim(), '', 'the VXLAN socket is still open');
      }
    } finally {
      await cluster.destroy();
    }
  });
});
