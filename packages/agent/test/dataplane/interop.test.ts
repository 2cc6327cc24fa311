// Wire compatibility: a kernel-VXLAN host and a userspace-engine host on one
// network. The kernel host's underlay veth has tx checksum offload off (the
// topology does that for every host), as a real NIC would fill checksums in.
import assert from 'node:assert/strict';
import { hasIputilsPing, ping, tcpRoundTrip } from '../../src/dataplane/testing/topology.js';
import type { UserspaceDataplane } from '../../src/dataplane/userspace.js';
import { type Cluster, createCluster, skipUnlessNetns, tcpBulkTransfer } from './userspace-fixture.js';

for (const underlayMtu of [1500, 9000]) {
  describe(`interop: kernel VXLAN host <-> userspace host (underlay MTU ${underlayMtu})`, function () {
    this.timeout(90_000);
    let cluster: Cluster | undefined;
    before(async function () {
      skipUnlessNetns(this);
      cluster = await createCluster(['kernel', 'userspace'], { underlayMtu });
    });
    after(async () => {
      await cluster?.destroy();
    });

    it('ping works in both directions', async () => {
      const [k, u] = cluster!.containers;
      for (const [from, to] of [
        [k, u],
        [u, k],
      ] as const) {
        const r = await ping(from!.netns, to!.ip);
        assert.ok(r.ok, `ping ${from!.ip} -> ${to!.ip}: ${r.stdout}${r.stderr}`);
      }
    });

    it('TCP works in both directions, including bulk transfers', async () => {
      const [k, u] = cluster!.containers;
      assert.equal((await tcpRoundTrip(u!.netns, k!.netns, u!.ip, 7101, 'k->u')).reply, 'k->u');
      assert.equal((await tcpRoundTrip(k!.netns, u!.netns, k!.ip, 7102, 'u->k')).reply, 'u->k');
      // Userspace TSO segments verified by the kernel's stack, and kernel
      // VXLAN segments coalesced by the engine.
      for (const [server, client, port] of [
        [k, u, 7103],
        [u, k, 7104],
      ] as const) {
        const r = await tcpBulkTransfer(server!.netns, client!.netns, server!.ip, port, 8 << 20);
        assert.ok(r.ok, `bulk TCP ${client!.ip} -> ${server!.ip}: ${r.detail}`);
      }
      const c = Object.values((cluster!.dataplanes[1] as UserspaceDataplane).engineCounters()!.networks)[0]!;
      assert.ok(c.txSuperFrames > 0, 'the userspace host never segmented a TSO frame');
      assert.ok(c.rxCoalescedFrames > 0, 'the userspace host never coalesced kernel-sent segments');
    });

    it('passes the largest packet the overlay MTU allows with DF, and refuses one byte more', async function () {
      if (!(await hasIputilsPing())) this.skip();
      const [k, u] = cluster!.containers;
      const overlayMtu = underlayMtu - 50;
      const largest = overlayMtu - 28; // IPv4 + ICMP headers
      for (const [from, to] of [
        [k, u],
        [u, k],
      ] as const) {
        const fits = await ping(from!.netns, to!.ip, { payloadBytes: largest, dontFragment: true });
        assert.ok(fits.ok, `${largest}-byte ping ${from!.ip} -> ${to!.ip}: ${fits.stdout}${fits.stderr}`);
        const tooBig = await ping(from!.netns, to!.ip, {
          payloadBytes: largest + 1,
          dontFragment: true,
          waitSeconds: 1,
        });
        assert.equal(tooBig.ok, false, `${largest + 1}-byte ping with DF passed an MTU of ${overlayMtu}`);
      }
    });
  });
}
