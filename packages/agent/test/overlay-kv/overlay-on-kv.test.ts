// The overlay control plane on the real replicated store: three hosts, each an
// OverlayManager on its own KvNode (LevelDB on disk, libp2p on loopback),
// talking to its node through the KvNodeStore adapter. What a user of
// `weft network create` / `weft run` on several hosts relies on: names are
// unique cluster-wide, addresses are never handed out twice, every host sees
// the same networks, refused requests change nothing, and a dead host's
// endpoints disappear from the store and from every other host's peer table.
// (The KvStore compliance suite on this cluster is in ../agent/kvnode-store.test.ts.)
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promisify } from 'node:util';
import { type LoopbackCluster, openLoopbackCluster } from '@weft/kv/testing/loopback-cluster';
import { waitUntil } from '@weft/kv/testing/wait-until';
import {
  DnsServer,
  type EndpointInfo,
  isOverlayError,
  type KvEntry,
  type OverlayErrorCode,
  OverlayManager,
} from '@weft/overlay';
import { RecordingDataplane } from '@weft/overlay/testing/recording-dataplane';
import { KvNodeStore } from '../../src/kv-adapter/kvnode-store.js';
import { type OverlayHost, startHosts, stopHosts } from './fixture.js';

const run = promisify(execFile);
const prefix = 'weft/v1/';
/** Short, so that host death is seen within seconds; renewals run every TTL / 3. */
const sessionTtlMs = 2_000;
// KV sessions expire between TTL and 2 × TTL after the last renewal (Consul's
// grace); a new Raft leader re-observes sessions, adding up to one more TTL,
// plus an election. This bound is a liveness check, not a performance goal
// (bench:overlay measures the real time).
const reclaimBoundMs = 3 * sessionTtlMs + 6_000;

/** Every key under the overlay prefix with its value and ModifyIndex, read linearizably through `store`. */
async function storeContents(store: KvNodeStore): Promise<string[]> {
  const entries: KvEntry[] = await store.list(prefix, { consistent: true });
  return entries.map((e) => `${e.key} @${e.modifyIndex} = ${new TextDecoder().decode(e.value)}`);
}

async function expectRejection(
  what: string,
  p: Promise<unknown>,
  code: OverlayErrorCode,
  mentions: RegExp,
): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(isOverlayError(e, code), `${what}: expected OverlayError(${code}), got ${String(e)}`);
    assert.match((e as Error).message, mentions, `${what}: message should name the cause`);
    return true;
  });
}

/** Asks a DNS server for an A record from `from` (dig binds to it), like a container would. */
async function dig(
  server: { address: string; port: number },
  from: string,
  name: string,
): Promise<{ status: string; addresses: string[] }> {
  const args = ['-b', from, `@${server.address}`, '-p', String(server.port), name, 'A'];
  const { stdout } = await run('dig', [...args, '+tries=1', '+time=3', '+noall', '+comments', '+answer'], {
    timeout: 10_000,
  });
  const status = /status: (\w+)/.exec(stdout)?.[1] ?? `no status in: ${stdout}`;
  const addresses = stdout
    .split('\n')
    .filter((l) => l && !l.startsWith(';'))
    .map((l) => l.split(/\s+/))
    .filter((f) => f.length >= 5 && f[3] === 'A')
    .map((f) => f[4] as string);
  return { status, addresses };
}

function unique(tag: string): string {
  return `${tag}-${randomBytes(3).toString('hex')}`;
}

describe('overlay on a real 3-node @weft/kv cluster', function () {
  this.timeout(60_000);
  let cluster: LoopbackCluster | undefined;
  let hosts: OverlayHost[] = [];

  before(async () => {
    cluster = await openLoopbackCluster(3);
    hosts = await startHosts(cluster, { sessionTtlMs });
  });
  after(async () => {
    await stopHosts(hosts);
    await cluster?.close();
  });

  it('a network created on one host appears on every host with the same ID, VNI and subnet', async () => {
    const [h0, h1, h2] = hosts as [OverlayHost, OverlayHost, OverlayHost];
    const name = unique('visible');
    const created = await h1.manager.createNetwork({ name, subnets: [{ subnet: '198.18.200.0/24' }] });
    for (const h of [h0, h2]) {
      await waitUntil(`${name} on ${h.name}`, () => h.manager.listNetworks().some((n) => n.name === name));
    }
    for (const h of hosts) {
      const seen = h.manager.inspectNetwork(name);
      assert.equal(seen.id, created.id, `${h.name} sees the same ID`);
      assert.equal(seen.vni, created.vni);
      assert.deepEqual(seen.ipam, created.ipam);
      // The same record on every replica's disk, read from each node's own state.
      const byName = await h.store.get(`${prefix}network-names/${name}`, { stale: true });
      assert.ok(byName, `${h.name}'s replica holds the name key`);
      assert.equal(new TextDecoder().decode(byName.value), created.id);
    }
  });

  it('the same network name created on every host at the same instant: exactly one wins, the others get a conflict naming it', async () => {
    for (let round = 0; round < 3; round++) {
      const name = unique('race');
      // Two callers per host, all released together.
      const callers = hosts.flatMap((h) => [h, h]);
      const results = await Promise.allSettled(
        callers.map((h, i) =>
          h.manager.createNetwork({ name, subnets: [{ subnet: `198.18.${210 + round * 8 + i}.0/24` }] }),
        ),
      );
      const won = results.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
      assert.equal(
        won.length,
        1,
        `round ${round}: exactly one creator wins (${results.map((r) => r.status)})`,
      );
      const winner = won[0]!;
      for (const r of results) {
        if (r.status === 'fulfilled') continue;
        assert.ok(isOverlayError(r.reason, 'conflict'), `loser got ${String(r.reason)}`);
        assert.match(r.reason.message, new RegExp(`network "${name}" already exists \\(id ${winner.id}\\)`));
      }
      // One record in the store, its name and VNI keys pointing at it.
      const all = await hosts[0]!.store.list(`${prefix}networks/`);
      const named = all.filter((e) => JSON.parse(new TextDecoder().decode(e.value)).name === name);
      assert.equal(named.length, 1);
      const vniKey = await hosts[2]!.store.get(`${prefix}vni/${winner.vni}`);
      assert.equal(vniKey && new TextDecoder().decode(vniKey.value), winner.id);
      for (const h of hosts)
        await waitUntil(`${name} on ${h.name}`, () =>
          h.manager.listNetworks().some((n) => n.id === winner.id),
        );
    }
  });

  it('different networks created on every host at once get distinct subnets and VNIs from the pool', async () => {
    const names = hosts.flatMap((h) => [unique(`${h.name}-a`), unique(`${h.name}-b`)]);
    const created = await Promise.all(
      names.map((name, i) => hosts[i % hosts.length]!.manager.createNetwork({ name })),
    );
    const everyNetwork = hosts[0]!.manager.listNetworks();
    await waitUntil('all new networks on all hosts', () =>
      hosts.every((h) => names.every((n) => h.manager.listNetworks().some((x) => x.name === n))),
    );
    const all = hosts[0]!.manager.listNetworks();
    assert.ok(all.length >= everyNetwork.length);
    const subnets = all.flatMap((n) => n.ipam.config.map((c) => c.subnet));
    assert.equal(new Set(subnets).size, subnets.length, `no subnet twice: ${subnets.join(' ')}`);
    assert.equal(new Set(all.map((n) => n.vni)).size, all.length, 'no VNI twice');
    for (const n of created) assert.match(n.ipam.config[0]!.subnet, /^198\.(18|19)\./);
  });

  it('3 hosts × 50 concurrent attaches to one network: every attach succeeds and no address is given twice', async () => {
    const [h0] = hosts as [OverlayHost];
    const net = await h0.manager.createNetwork({
      name: unique('busy'),
      subnets: [{ subnet: '198.18.100.0/24' }],
    });
    for (const h of hosts)
      await waitUntil(`network on ${h.name}`, () => h.manager.listNetworks().some((n) => n.id === net.id));
    const perHost = 50;
    const attached = await Promise.all(
      hosts.flatMap((h) =>
        Array.from({ length: perHost }, (_, i) =>
          h.manager.attach({
            network: net.name,
            name: `${h.name}-c${i}`,
            sandbox: `sb-${h.name}-${i}`,
            ifName: 'eth0',
          }),
        ),
      ),
    );
    const ips = attached.map((e) => e.ip);
    assert.equal(new Set(ips).size, ips.length, 'no duplicate address');
    for (const ip of ips) {
      assert.match(ip, /^198\.18\.100\.\d+$/);
      assert.notEqual(ip, net.ipam.config[0]!.gateway, 'the gateway is never handed out');
    }
    // The store: one address key per endpoint, each naming its endpoint.
    const ipam = await hosts[1]!.store.list(`${prefix}ipam/${net.id}/`);
    assert.equal(ipam.length, hosts.length * perHost);
    const byIp = new Map(attached.map((e) => [e.ip, e.id]));
    for (const e of ipam) {
      const ip = e.key.slice(e.key.lastIndexOf('/') + 1);
      assert.equal(new TextDecoder().decode(e.value), byIp.get(ip), `address key of ${ip}`);
    }
    // Every host ends up with every endpoint; its peer table (and data plane) holds exactly the remote ones.
    for (const h of hosts) {
      const remote = attached.filter((e) => e.host !== h.name);
      await waitUntil(
        `${h.name} sees all ${attached.length} endpoints and ${remote.length} peers`,
        () =>
          h.manager.listEndpoints(net.id).length === attached.length &&
          h.dataplane.peerIps(net.id).length === remote.length,
      );
      assert.deepEqual(h.dataplane.peerIps(net.id), remote.map((e) => e.ip).sort());
      const vtepOf = new Map(hosts.map((x) => [x.name, x.manager.vtep]));
      for (const p of h.manager.peers(net.id)) {
        const ep = attached.find((e) => e.id === p.endpointId) as EndpointInfo;
        assert.equal(p.vtep, vtepOf.get(ep.host), `peer ${p.ip} points at its host's VTEP`);
        assert.equal(p.mac, ep.mac);
      }
    }
  });

  it('attaches racing two Raft leadership transfers: no address twice, no leaked keys, every host agrees', async () => {
    const kvCluster = cluster as LoopbackCluster;
    const [h0] = hosts as [OverlayHost];
    const net = await h0.manager.createNetwork({
      name: unique('moving'),
      subnets: [{ subnet: '198.18.110.0/24' }],
    });
    for (const h of hosts)
      await waitUntil(`network on ${h.name}`, () => h.manager.listNetworks().some((n) => n.id === net.id));
    const requests = hosts.flatMap((h) =>
      Array.from({ length: 20 }, (_, i) => ({ host: h, name: `${h.name}-m${i}` })),
    );
    const settled = Promise.allSettled(
      requests.map((r) =>
        r.host.manager.attach({ network: net.id, name: r.name, sandbox: `sb-${r.name}`, ifName: 'eth0' }),
      ),
    );
    for (let move = 0; move < 2; move++) {
      await new Promise((r) => setTimeout(r, 30));
      const leader = kvCluster.nodes.find((n) => n.status().role === 'leader');
      const target = kvCluster.nodes.find((n) => n !== leader);
      if (leader && target) await leader.transferLeadership(target.status().raftId);
    }
    const results = await settled;
    const ok = results.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
    for (const r of results) {
      if (r.status === 'rejected')
        assert.ok(isOverlayError(r.reason, 'unavailable'), `a failed attach says why: ${String(r.reason)}`);
    }
    assert.ok(ok.length > 0, 'some attaches got through');
    // The store holds exactly the attaches that were acknowledged: no lost one, no leaked one.
    const store = hosts[2]!.store;
    const decode = (e: KvEntry) => new TextDecoder().decode(e.value);
    const endpoints = (await store.list(`${prefix}endpoints/${net.id}/`)).map(
      (e) => JSON.parse(decode(e)) as EndpointInfo,
    );
    const ipam = await store.list(`${prefix}ipam/${net.id}/`);
    const names = await store.list(`${prefix}endpoint-names/${net.id}/`);
    assert.deepEqual(
      endpoints.map((e) => e.id).sort(),
      ok.map((e) => e.id).sort(),
      'store endpoints = acknowledged attaches',
    );
    assert.deepEqual(
      ipam.map((e) => `${e.key.slice(e.key.lastIndexOf('/') + 1)}=${decode(e)}`).sort(),
      endpoints.map((e) => `${e.ip}=${e.id}`).sort(),
      'one address key per endpoint, naming it',
    );
    assert.equal(names.length, endpoints.length, 'one name key per endpoint');
    assert.equal(new Set(endpoints.map((e) => e.ip)).size, endpoints.length, 'no duplicate address');
    for (const h of hosts)
      await waitUntil(
        `${h.name} sees exactly the acknowledged endpoints`,
        () =>
          h.manager
            .listEndpoints(net.id)
            .map((e) => e.id)
            .sort()
            .join() ===
          ok
            .map((e) => e.id)
            .sort()
            .join(),
      );
  });

  it('refused requests (bad names, subnets, options, addresses, taken names, in-use removal) change nothing in the store', async () => {
    const [h0, h1, h2] = hosts as [OverlayHost, OverlayHost, OverlayHost];
    const net = await h0.manager.createNetwork({
      name: unique('strict'),
      subnets: [{ subnet: '198.18.150.0/24' }],
    });
    const ep = await h1.manager.attach({ network: net.name, name: 'web', ip: '198.18.150.10' });
    await waitUntil('endpoint on host2', () => h2.manager.listEndpoints(net.id).length === 1);
    const before = await storeContents(h0.store);

    await expectRejection(
      'bad name',
      h1.manager.createNetwork({ name: 'no spaces!' }),
      'invalid',
      /network name "no spaces!" is not valid/,
    );
    await expectRejection(
      'bad driver',
      h1.manager.createNetwork({ name: unique('d'), driver: 'bridge' }),
      'invalid',
      /driver "bridge"/,
    );
    await expectRejection(
      'unknown option',
      h2.manager.createNetwork({ name: unique('o'), options: { colour: 'red' } as never }),
      'invalid',
      /unknown network option "colour"/,
    );
    await expectRejection(
      'bad mtu',
      h2.manager.createNetwork({ name: unique('m'), options: { mtu: 5 } }),
      'invalid',
      /mtu 5/,
    );
    await expectRejection(
      'not a CIDR',
      h0.manager.createNetwork({ name: unique('c'), subnets: [{ subnet: '198.18.300.0/24' }] }),
      'invalid',
      /198\.18\.300\.0\/24/,
    );
    await expectRejection(
      'overlapping subnet',
      h2.manager.createNetwork({ name: unique('ov'), subnets: [{ subnet: '198.18.150.128/25' }] }),
      'conflict',
      new RegExp(net.name),
    );
    await expectRejection(
      'taken name',
      h2.manager.createNetwork({ name: net.name, subnets: [{ subnet: '198.18.151.0/24' }] }),
      'conflict',
      /already exists/,
    );
    await expectRejection(
      'unknown network',
      h2.manager.attach({ network: unique('nowhere'), name: 'x' }),
      'not-found',
      /nowhere/,
    );
    await expectRejection(
      'bad endpoint name',
      h2.manager.attach({ network: net.name, name: '-x' }),
      'invalid',
      /endpoint name "-x"/,
    );
    await expectRejection(
      'bad ip',
      h2.manager.attach({ network: net.name, name: 'x', ip: '198.18.150.999' }),
      'invalid',
      /198\.18\.150\.999/,
    );
    await expectRejection(
      'ip outside',
      h2.manager.attach({ network: net.name, name: 'x', ip: '198.18.151.5' }),
      'invalid',
      /not in network/,
    );
    await expectRejection(
      'ip taken',
      h2.manager.attach({ network: net.name, name: 'x', ip: ep.ip }),
      'conflict',
      /198\.18\.150\.10 is already in use/,
    );
    await expectRejection(
      'endpoint name taken',
      h0.manager.attach({ network: net.name, name: 'web' }),
      'conflict',
      /endpoint name "web" is already in use/,
    );
    await expectRejection(
      'sandbox without ifName',
      h0.manager.attach({ network: net.name, name: 'y', sandbox: 'sb' }),
      'invalid',
      /together/,
    );
    await expectRejection('detach unknown', h0.manager.detach(net.name, 'nobody'), 'not-found', /nobody/);
    await expectRejection(
      'remove in use',
      h2.manager.removeNetwork(net.name),
      'in-use',
      /web \(host host1, 198\.18\.150\.10\)/,
    );
    await expectRejection('remove unknown', h2.manager.removeNetwork(unique('ghost')), 'not-found', /ghost/);
    // A second host claiming a live host's name (another peer ID) is refused.
    const impostor = new OverlayManager({
      store: new KvNodeStore(h2.node),
      dataplane: new RecordingDataplane(),
      hostname: 'host0',
      advertise: '192.0.2.99',
      peerId: 'peer-impostor',
      sessionTtlMs: 10_000,
    });
    await expectRejection(
      'taken hostname',
      impostor.start(),
      'conflict',
      /hostname "host0" is already registered/,
    );

    assert.deepEqual(await storeContents(h1.store), before, 'the store is exactly as before');
    // The impostor's refused session is not left around holding anything, and the hosts are unchanged.
    assert.deepEqual(
      hosts.map((h) => h.manager.hosts().map((x) => `${x.name}/${x.peerId}`)),
      hosts.map(() => ['host0/peer-host0', 'host1/peer-host1', 'host2/peer-host2']),
    );
  });

  it('a garbage record written straight into the store is skipped with a warning; the overlay keeps working', async () => {
    const [h0, h1, h2] = hosts as [OverlayHost, OverlayHost, OverlayHost];
    const badKey = `${prefix}networks/${'f'.repeat(64)}`;
    const networksBefore = h2.manager.listNetworks().map((n) => n.id);
    await h0.store.put(badKey, new TextEncoder().encode('{not json'));
    try {
      for (const h of hosts)
        await waitUntil(`${h.name} warns about ${badKey}`, () =>
          h.warnings.some((w) => w.message.includes(badKey)),
        );
      assert.deepEqual(
        h2.manager.listNetworks().map((n) => n.id),
        networksBefore,
      );
      const net = await h1.manager.createNetwork({
        name: unique('after-garbage'),
        subnets: [{ subnet: '198.18.160.0/24' }],
      });
      const ep = await h2.manager.attach({ network: net.id, name: 'still-works' });
      assert.equal(ep.ip, '198.18.160.2');
    } finally {
      await h0.store.delete(badKey);
    }
  });

  it("bytes handed out by the adapter (get, list, txn, watch) are the caller's: writing into them changes no replica", async () => {
    const [h0, h1] = hosts as [OverlayHost, OverlayHost];
    const key = `scratch/${unique('bytes')}`;
    const input = new TextEncoder().encode('original');
    await h0.store.put(key, input);
    input.fill(0x21); // the caller reuses its buffer after the write
    const scribble = (e: KvEntry | null | undefined) => e?.value.fill(0x58);
    scribble(await h0.store.get(key));
    scribble((await h0.store.list(key))[0]);
    const r = await h0.store.txn([{ verb: 'get', key }]);
    if (r.ok) scribble(r.results[0]);
    const abort = new AbortController();
    for await (const ev of h1.store.watch(key, { signal: abort.signal })) {
      scribble(ev.entries[0]);
      abort.abort();
    }
    for (const h of hosts) {
      // A stale read is served from this replica's applied state, which may trail the leader for a moment.
      let e = await h.store.get(key, { stale: true });
      for (let tries = 0; e === null && tries < 500; tries++) {
        await new Promise((r) => setTimeout(r, 10));
        e = await h.store.get(key, { stale: true });
      }
      assert.equal(e && new TextDecoder().decode(e.value), 'original', `${h.name}'s replica`);
    }
    await h0.store.delete(key);
  });

  it('a host whose session is lost (as after a partition longer than its TTL) re-registers; its old endpoints are reclaimed everywhere', async () => {
    const [h0, h1, h2] = hosts as [OverlayHost, OverlayHost, OverlayHost];
    const net = await h0.manager.createNetwork({
      name: unique('lost'),
      subnets: [{ subnet: '198.18.170.0/24' }],
    });
    await h0.manager.attach({ network: net.id, name: 'watcher', sandbox: 'sb-watcher', ifName: 'eth0' });
    const old = await h1.manager.attach({ network: net.id, name: 'old', sandbox: 'sb-old', ifName: 'eth0' });
    await waitUntil('host0 has the endpoint as a peer', () => h0.dataplane.peerIps(net.id).includes(old.ip));
    const lostSession = h1.manager.session as string;
    const lost = new Promise<{ session: string }>((resolve) => h1.manager.once('session-lost', resolve));

    await h2.store.destroySession(lostSession); // what the leader does when the TTL runs out

    assert.equal((await lost).session, lostSession);
    await waitUntil(
      'every host sees host1 back under a new session',
      () =>
        hosts.every((h) => h.manager.hosts().some((x) => x.name === 'host1' && x.session !== lostSession)),
      reclaimBoundMs,
    );
    assert.notEqual(h1.manager.session, lostSession);
    for (const h of hosts)
      await waitUntil(
        `${h.name} drops the endpoint made under the lost session`,
        () => h.manager.listEndpoints(net.id).every((e) => e.id !== old.id),
        reclaimBoundMs,
      );
    assert.equal(await h2.store.get(`${prefix}ipam/${net.id}/${old.ip}`), null, 'its address is free');
    await waitUntil('host0 drops the peer', () => !h0.dataplane.peerIps(net.id).includes(old.ip));
    await waitUntil('host1 unplumbs it', () => !h1.dataplane.endpoints.has(old.id));
    const again = await h1.manager.attach({
      network: net.id,
      name: 'old',
      sandbox: 'sb-old',
      ifName: 'eth0',
    });
    await waitUntil('the re-attached endpoint reaches host0', () =>
      h0.dataplane.peerIps(net.id).includes(again.ip),
    );
  });

  it('names attached on one host resolve through the embedded DNS server of another, and stop resolving after detach', async () => {
    const [h0, h1, h2] = hosts as [OverlayHost, OverlayHost, OverlayHost];
    // Container addresses on loopback (127.77/16), so dig can send from them and the server knows the asker.
    const net = await h0.manager.createNetwork({
      name: unique('named'),
      subnets: [{ subnet: '127.77.50.0/24' }],
    });
    const web = await h0.manager.attach({
      network: net.id,
      name: 'web',
      aliases: ['www'],
      container: 'c-web',
    });
    const mongo = await h1.manager.attach({ network: net.id, name: 'mongo', container: 'c-mongo' });
    const client = await h2.manager.attach({ network: net.id, name: 'client', container: 'c-client' });
    const server = new DnsServer({
      resolver: () => h2.manager.dnsTable(),
      address: '127.0.0.1',
      port: 0,
      upstreams: ['127.0.0.1:9'], // nothing forwarded in this test
      upstreamTimeoutMs: 300,
    });
    const where = await server.start();
    try {
      const ask = (name: string) => dig(where, client.ip, name);
      await waitUntil('host2 sees all three endpoints', () => h2.manager.listEndpoints(net.id).length === 3);
      assert.deepEqual(await ask('web'), { status: 'NOERROR', addresses: [web.ip] });
      assert.deepEqual(await ask('www'), { status: 'NOERROR', addresses: [web.ip] });
      assert.deepEqual(await ask(`mongo.${net.name}`), { status: 'NOERROR', addresses: [mongo.ip] });
      await h1.manager.detach(net.id, 'mongo');
      await waitUntil('host2 sees the detach', () => h2.manager.listEndpoints(net.id).length === 2);
      assert.deepEqual(await ask(`mongo.${net.name}`), { status: 'NXDOMAIN', addresses: [] });
      // A bare name that is no longer local goes upstream (Docker does the same); ours is dead.
      assert.deepEqual(await ask('mongo'), { status: 'SERVFAIL', addresses: [] });
    } finally {
      await server.stop();
    }
  });

  // Last in this block: it kills one of the three hosts.
  it(`a dead host (its KV node a follower): endpoints reclaimed and dropped from every peer table within ${reclaimBoundMs} ms; addresses free again`, async () => {
    await killHostAndExpectReclaim(cluster as LoopbackCluster, hosts, 'follower', reclaimBoundMs);
  });
});

describe('a dead host whose KV node was the Raft leader (3-node @weft/kv cluster)', function () {
  this.timeout(60_000);
  let cluster: LoopbackCluster | undefined;
  let hosts: OverlayHost[] = [];
  before(async () => {
    cluster = await openLoopbackCluster(3);
    hosts = await startHosts(cluster, { sessionTtlMs });
  });
  after(async () => {
    await stopHosts(hosts);
    await cluster?.close();
  });

  it(`endpoints reclaimed (after a new election) and dropped from every peer table within ${reclaimBoundMs} ms; its addresses become free`, async () => {
    await killHostAndExpectReclaim(cluster as LoopbackCluster, hosts, 'leader', reclaimBoundMs);
  });
});

/**
 * Kills one host (its manager stops renewing without leaving, and its KV node
 * closes), then checks what the other hosts must see: the dead host's
 * endpoints gone from the store and from their peer tables and data planes,
 * within `boundMs`, and its addresses free again.
 */
async function killHostAndExpectReclaim(
  cluster: LoopbackCluster,
  hosts: OverlayHost[],
  victimRole: 'leader' | 'follower',
  boundMs: number,
): Promise<void> {
  const victimIndex = cluster.nodes.findIndex((n) =>
    victimRole === 'leader' ? n.status().role === 'leader' : n.status().role !== 'leader',
  );
  assert.ok(victimIndex >= 0, `a ${victimRole} exists`);
  const victim = hosts[victimIndex]!;
  const survivors = hosts.filter((h) => h !== victim);
  const net = await survivors[0]!.manager.createNetwork({
    name: unique('shared'),
    subnets: [{ subnet: '198.18.50.0/24' }],
  });
  for (const h of survivors)
    await h.manager.attach({
      network: net.id,
      name: `${h.name}-app`,
      sandbox: `sb-${h.name}`,
      ifName: 'eth0',
    });
  const doomed = await Promise.all(
    Array.from({ length: 5 }, (_, i) =>
      victim.manager.attach({ network: net.id, name: `doomed-${i}`, sandbox: `sb-d${i}`, ifName: 'eth0' }),
    ),
  );
  const doomedIps = doomed.map((e) => e.ip).sort();
  for (const h of survivors)
    await waitUntil(`${h.name} has the victim's endpoints as peers`, () =>
      doomedIps.every((ip) => h.dataplane.peerIps(net.id).includes(ip)),
    );
  const hostDown = survivors.map(
    (h) =>
      new Promise<void>((resolve) => h.manager.on('host-down', (x) => x.name === victim.name && resolve())),
  );
  const reclaimed: string[] = [];
  for (const h of survivors)
    h.manager.on('reclaimed', (eps) =>
      reclaimed.push(...eps.filter((e) => e.networkId === net.id).map((e) => e.ip)),
    );

  // Crash: the manager stops renewing without leaving, and the host's KV node goes away.
  const killedAt = Date.now();
  await victim.manager.stop();
  await cluster.kill(victimIndex);

  const isVictims = (p: { vtep: string }) => p.vtep === victim.manager.vtep;
  for (const h of survivors) {
    await waitUntil(
      `${h.name} drops the dead host's peers and endpoints`,
      () =>
        h.manager.peers(net.id).filter(isVictims).length === 0 &&
        [...h.dataplane.peers.values()].filter(isVictims).length === 0 &&
        h.manager.listEndpoints(net.id).every((e) => e.host !== victim.name),
      boundMs - (Date.now() - killedAt),
    );
    // The survivors' own peer tables still hold each other.
    assert.deepEqual(
      h.manager
        .peers(net.id)
        .map((p) => p.ip)
        .sort(),
      survivors
        .filter((x) => x !== h)
        .flatMap((x) =>
          x.manager
            .listEndpoints(net.id)
            .filter((e) => e.host === x.name)
            .map((e) => e.ip),
        )
        .sort(),
    );
  }
  await Promise.all(hostDown);
  // Gone from the store itself: host record, endpoints, addresses, names.
  const store = survivors[1]!.store;
  assert.equal(await store.get(`${prefix}hosts/${victim.name}`), null);
  const left = await store.list(`${prefix}ipam/${net.id}/`);
  assert.equal(left.length, survivors.length, 'only the survivors keep addresses');
  assert.equal((await store.list(`${prefix}endpoints/${net.id}/`)).length, survivors.length);
  assert.equal((await store.list(`${prefix}endpoint-names/${net.id}/`)).length, survivors.length);
  assert.deepEqual([...new Set(reclaimed)].sort(), doomedIps, 'a survivor reported reclaiming exactly those');
  // A reclaimed address can be taken again.
  const reused = await survivors[0]!.manager.attach({ network: net.id, name: 'reuse', ip: doomedIps[0] });
  assert.equal(reused.ip, doomedIps[0]);
}
