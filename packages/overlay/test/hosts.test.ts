import assert from 'node:assert/strict';
import { ManualClock } from '../src/clock.js';
import type { OverlayError } from '../src/errors.js';
import type { KvStore, WatchEvent } from '../src/kvstore.js';
import type { EndpointRecord } from '../src/records.js';
import { MemoryKvStore } from '../src/testing/memory-kvstore.js';
import { contents, startHost, type TestHost, waitFor } from './helpers.js';

/** Delegates to a MemoryKvStore; its watches can be cut, like a lost connection to the agent's store. */
class BreakableWatchStore implements KvStore {
  private down = false;
  private cut = new AbortController();
  constructor(readonly inner: MemoryKvStore) {}
  get: KvStore['get'] = (...a) => this.inner.get(...a);
  list: KvStore['list'] = (...a) => this.inner.list(...a);
  put: KvStore['put'] = (...a) => this.inner.put(...a);
  delete: KvStore['delete'] = (...a) => this.inner.delete(...a);
  txn: KvStore['txn'] = (...a) => this.inner.txn(...a);
  createSession: KvStore['createSession'] = (...a) => this.inner.createSession(...a);
  renewSession: KvStore['renewSession'] = (...a) => this.inner.renewSession(...a);
  destroySession: KvStore['destroySession'] = (...a) => this.inner.destroySession(...a);
  breakWatches(): void {
    this.down = true;
    this.cut.abort();
    this.cut = new AbortController();
  }
  restoreWatches(): void {
    this.down = false;
  }
  async *watch(
    prefix: string,
    opts: { index?: number; signal?: AbortSignal } = {},
  ): AsyncIterable<WatchEvent> {
    if (this.down) throw new Error('watch: connection refused');
    const cut = this.cut.signal;
    const signal = opts.signal ? AbortSignal.any([opts.signal, cut]) : cut;
    for await (const ev of this.inner.watch(prefix, { ...opts, signal })) {
      if (cut.aborted) break;
      yield ev;
    }
    if (cut.aborted && !opts.signal?.aborted) throw new Error('watch: connection lost');
  }
}

const sandboxed = (name: string) => ({ name, sandbox: `ns-${name}`, ifName: 'eth0' });

describe('hosts, liveness and the peer table', () => {
  let store: MemoryKvStore;
  let hosts: TestHost[];

  beforeEach(() => {
    hosts = [];
  });
  afterEach(async () => {
    for (const h of hosts) await h.manager.stop();
    store?.close();
  });

  it('a second host with a taken hostname is refused; the same peer restarting takes its name and endpoints back', async () => {
    store = new MemoryKvStore();
    const a = await startHost(store, 'host-a');
    hosts.push(a);
    const before = contents(store);
    await assert.rejects(startHost(store, 'host-a', { peerId: 'someone-else' }), (e: OverlayError) => {
      assert.equal(e.code, 'conflict');
      assert.match(e.message, /hostname "host-a" is already registered by another host \(peer peer-host-a/);
      return true;
    });
    assert.deepEqual(contents(store), before);
    await a.manager.createNetwork({ name: 'n', subnets: [{ subnet: '198.18.1.0/24' }] });
    const ep = await a.manager.attach({ network: 'n', ...sandboxed('web') });
    const session = a.manager.session;
    await a.manager.stop(); // crash-like: session left to expire
    hosts = [];
    const restarted = await startHost(store, 'host-a');
    hosts.push(restarted);
    assert.equal(restarted.manager.session, session, 'adopted the live session');
    assert.deepEqual(
      restarted.manager.listEndpoints('n').map((e) => e.id),
      [ep.id],
    );
    // the restarted data plane is rebuilt from a full listing
    const first = restarted.dataplane.calls[0];
    assert.equal(first.op, 'reconcile');
    if (first.op === 'reconcile')
      assert.deepEqual(
        [first.state.networks.map((n) => n.name), first.state.endpoints.map((e) => e.endpointId)],
        [['n'], [ep.id]],
      );
  });

  it('two hosts claiming one hostname at the same instant: exactly one is registered', async () => {
    store = new MemoryKvStore();
    const results = await Promise.allSettled([
      startHost(store, 'same', { peerId: 'peer-1' }),
      startHost(store, 'same', { peerId: 'peer-2' }),
    ]);
    const ok = results.filter((r): r is PromiseFulfilledResult<TestHost> => r.status === 'fulfilled');
    const refused = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
    hosts.push(...ok.map((r) => r.value));
    assert.equal(ok.length, 1);
    assert.equal(refused.length, 1);
    assert.equal(refused[0].reason.code, 'conflict');
    assert.deepEqual(
      ok[0].value.manager.hosts().map((h) => [h.name, h.peerId]),
      [['same', ok[0].value.manager.peerId]],
    );
  });

  it('the data plane gets networks, local endpoints and remote peers in order, and drops peers on detach', async () => {
    store = new MemoryKvStore();
    const [a, b] = [
      await startHost(store, 'host-a', { vtep: '198.51.100.1' }),
      await startHost(store, 'host-b'),
    ];
    hosts.push(a, b);
    const net = await a.manager.createNetwork({
      name: 'n',
      subnets: [{ subnet: '198.18.1.0/24' }],
      options: { mtu: 1450 },
    });
    // Every host prepares the network's devices as soon as it learns of it,
    // before any container there joins (a first attach then only wires the container);
    // peers come only with a local endpoint on the network.
    await waitFor(() => b.dataplane.networks.has(net.id), 'host-b prepares the network');
    assert.deepEqual(
      [...b.dataplane.networks.values()].map((n) => [n.id, n.vni, n.mtu, n.subnets]),
      [[net.id, net.vni, 1450, [{ subnet: '198.18.1.0/24', gateway: '198.18.1.1' }]]],
    );
    const early = await a.manager.attach({ network: 'n', ...sandboxed('early') });
    await b.manager.attach({ network: 'n', ...sandboxed('db') });
    assert.deepEqual(
      [...b.dataplane.peers.values()].map((p) => p.endpointId),
      [early.id],
      'host-b learns the peers of a network once it has an endpoint there',
    );
    assert.equal(b.dataplane.calls.filter((c) => c.op === 'ensureNetwork').length, 1, 'prepared once');
    await a.manager.detach('n', 'early');
    const web = await a.manager.attach({ network: 'n', ...sandboxed('web') });
    await waitFor(() => b.dataplane.peers.has(web.id), 'host-b learns web');
    assert.deepEqual(b.dataplane.peers.get(web.id), {
      networkId: net.id,
      endpointId: web.id,
      ip: web.ip,
      mac: web.mac,
      vtep: '198.51.100.1',
    });
    assert.deepEqual(
      b.manager.peers(net.id).map((p) => p.ip),
      [web.ip],
    );
    // an endpoint without a sandbox is still a peer (its host plumbs it some other way)
    const bare = await a.manager.attach({ network: 'n', name: 'bare' });
    await waitFor(() => b.dataplane.peers.has(bare.id), 'host-b learns bare');
    await a.manager.detach('n', 'web');
    await waitFor(() => !b.dataplane.peers.has(web.id), 'host-b forgets web');
    const ops = b.dataplane.calls.map((c) => c.op);
    assert.ok(ops.indexOf('ensureNetwork') < ops.indexOf('attach'));
    assert.ok(ops.indexOf('attach') < ops.indexOf('addPeer'));
    assert.ok(
      !a.dataplane.peers.has(web.id) && !a.dataplane.endpoints.has(web.id),
      'host-a detached web locally',
    );
    // the last local endpoint leaving drops the peers; the devices stay until the network is removed
    await b.manager.detach('n', 'db');
    await waitFor(() => b.dataplane.peers.size === 0, 'host-b left the network');
    assert.ok(b.dataplane.networks.has(net.id), 'host-b keeps the network prepared');
    await a.manager.detach('n', 'bare');
    await a.manager.removeNetwork('n');
    await waitFor(
      () => a.dataplane.networks.size === 0 && b.dataplane.networks.size === 0,
      'the network removed from every host',
    );
  });

  it('after a lost watch the data plane is reconciled from a full listing, including changes made meanwhile', async () => {
    store = new MemoryKvStore();
    const flaky = new BreakableWatchStore(store);
    const a = await startHost(store, 'host-a');
    const b = await startHost(flaky as unknown as MemoryKvStore, 'host-b');
    hosts.push(a, b);
    const warnings: Error[] = [];
    b.manager.on('warning', (e) => warnings.push(e));
    await a.manager.createNetwork({ name: 'n', subnets: [{ subnet: '198.18.1.0/24' }] });
    await b.manager.attach({ network: 'n', ...sandboxed('db') });
    const old = await a.manager.attach({ network: 'n', ...sandboxed('old') });
    await waitFor(() => b.dataplane.peers.has(old.id), 'host-b learns old');
    flaky.breakWatches();
    await a.manager.detach('n', 'old');
    const fresh = await a.manager.attach({ network: 'n', ...sandboxed('fresh') });
    await new Promise((r) => setTimeout(r, 100));
    assert.ok(b.dataplane.peers.has(old.id), 'while the watch is down host-b keeps its last state');
    const reconcilesBefore = b.dataplane.calls.filter((c) => c.op === 'reconcile').length;
    flaky.restoreWatches();
    await waitFor(() => b.dataplane.peers.has(fresh.id) && !b.dataplane.peers.has(old.id), 'host-b repaired');
    assert.equal(b.dataplane.calls.filter((c) => c.op === 'reconcile').length, reconcilesBefore + 1);
    assert.ok(warnings.some((w) => /watching the store failed/.test(w.message)));
  });

  it('host death (fake clock): endpoints and addresses are reclaimed once, peers dropped, within the TTL', async () => {
    const clock = new ManualClock();
    store = new MemoryKvStore({ clock });
    const opts = { clock, sessionTtlMs: 10_000 };
    const [a, b, c] = [
      await startHost(store, 'host-a', opts),
      await startHost(store, 'host-b', opts),
      await startHost(store, 'host-c', opts),
    ];
    hosts.push(b, c);
    const net = await a.manager.createNetwork({ name: 'n', subnets: [{ subnet: '198.18.1.0/24' }] });
    await b.manager.attach({ network: 'n', ...sandboxed('b1') });
    await c.manager.attach({ network: 'n', ...sandboxed('c1') });
    const doomed = [];
    for (let i = 0; i < 20; i++) doomed.push(await a.manager.attach({ network: 'n', ...sandboxed(`a${i}`) }));
    await waitFor(
      () => b.dataplane.peerIps(net.id).length === 21 && c.dataplane.peerIps(net.id).length === 21,
      'peers learned',
    );
    const reclaimed: EndpointRecord[] = [];
    const downs: string[] = [];
    for (const h of [b, c]) {
      h.manager.on('reclaimed', (eps) => reclaimed.push(...eps));
      h.manager.on('host-down', (host) => downs.push(host.name));
    }
    await a.manager.stop(); // dies without leaving: nobody renews its session
    await clock.advance(5_000);
    assert.ok(
      store.snapshot().some((e) => e.key === 'weft/v1/hosts/host-a'),
      'host-a is still alive within its TTL',
    );
    assert.equal(b.dataplane.peerIps(net.id).length, 21);
    await clock.advance(5_001);
    await waitFor(
      () => !Object.keys(contents(store)).some((k) => k.endsWith('/hosts/host-a')),
      'host-a record expired',
      1_000,
    );
    await waitFor(
      () => b.dataplane.peerIps(net.id).length === 1 && c.dataplane.peerIps(net.id).length === 1,
      'peers of host-a dropped',
      1_000,
    );
    await waitFor(() => b.manager.listEndpoints('n').length === 2, 'endpoints reclaimed', 2_000);
    const keys = Object.keys(contents(store));
    for (const ep of doomed) {
      assert.ok(!keys.includes(`weft/v1/ipam/${net.id}/${ep.ip}`), `address ${ep.ip} released`);
      assert.ok(!keys.includes(`weft/v1/endpoint-names/${net.id}/${ep.name}`), `name ${ep.name} released`);
    }
    assert.deepEqual(
      reclaimed.map((e) => e.id).sort(),
      doomed.map((e) => e.id).sort(),
      'each endpoint reclaimed exactly once across hosts',
    );
    assert.deepEqual(downs.sort(), ['host-a', 'host-a']);
    // the addresses can be given again
    assert.equal((await b.manager.attach({ network: 'n', name: 'new' })).ip, doomed[0].ip);
  });

  it('host death (real time, short TTL): reclaimed within TTL plus a bound', async function () {
    this.timeout(10_000);
    store = new MemoryKvStore();
    const opts = { sessionTtlMs: 300 };
    const [a, b] = [await startHost(store, 'host-a', opts), await startHost(store, 'host-b', opts)];
    hosts.push(b);
    await a.manager.createNetwork({ name: 'n', subnets: [{ subnet: '198.18.1.0/24' }] });
    for (let i = 0; i < 5; i++) await a.manager.attach({ network: 'n', name: `a${i}` });
    await new Promise((r) => setTimeout(r, 600)); // renewals keep both alive past 2 TTLs
    assert.equal(b.manager.listEndpoints('n').length, 5);
    await a.manager.stop();
    await waitFor(() => b.manager.listEndpoints('n').length === 0, 'reclaimed', 300 + 1_500);
    assert.deepEqual(
      Object.keys(contents(store)).filter((k) => k.includes('/ipam/')),
      [],
    );
  });

  it('a host whose session expired re-registers; its old endpoints are reclaimed', async () => {
    const clock = new ManualClock();
    store = new MemoryKvStore({ clock });
    const a = await startHost(store, 'host-a', { clock });
    hosts.push(a);
    await a.manager.createNetwork({ name: 'n', subnets: [{ subnet: '198.18.1.0/24' }] });
    await a.manager.attach({ network: 'n', ...sandboxed('x') });
    const lost: string[] = [];
    a.manager.on('session-lost', (s) => lost.push(s.session));
    const old = a.manager.session as string;
    await store.destroySession(old); // what an expiry during a long partition looks like
    await clock.advance(4_000); // next renewal notices
    await waitFor(() => a.manager.session !== undefined && a.manager.session !== old, 're-registered');
    assert.deepEqual(lost, [old]);
    await waitFor(
      () => a.manager.listEndpoints('n').length === 0 && a.dataplane.endpoints.size === 0,
      'stale endpoint reclaimed and detached',
    );
    assert.equal((await a.manager.attach({ network: 'n', ...sandboxed('x') })).ip, '198.18.1.2');
  });

  it('leaving the cluster reclaims at once; malformed records are reported and ignored', async () => {
    store = new MemoryKvStore();
    const a = await startHost(store, 'host-a');
    const b = await startHost(store, 'host-b');
    hosts.push(b);
    const warnings: string[] = [];
    b.manager.on('warning', (e) => warnings.push(e.message));
    await a.manager.createNetwork({ name: 'n', subnets: [{ subnet: '198.18.1.0/24' }] });
    await a.manager.attach({ network: 'n', name: 'x' });
    await store.put('weft/v1/networks/garbage', new TextEncoder().encode('{not json'));
    await waitFor(
      () => warnings.some((w) => /malformed records.*weft\/v1\/networks\/garbage/.test(w)),
      'warning about garbage',
    );
    assert.deepEqual(
      b.manager.listNetworks().map((n) => n.name),
      ['n'],
    );
    await a.manager.stop({ leave: true });
    await waitFor(() => b.manager.listEndpoints('n').length === 0, 'reclaimed right after leave', 1_000);
    assert.deepEqual(
      b.manager.hosts().map((h) => h.name),
      ['host-b'],
    );
  });

  it('a store without quorum: writes fail within the bound with a clear error; local reads and DNS keep working', async function () {
    this.timeout(10_000);
    store = new MemoryKvStore();
    const a = await startHost(store, 'host-a', { writeTimeoutMs: 300 });
    hosts.push(a);
    await a.manager.createNetwork({ name: 'n', subnets: [{ subnet: '198.18.1.0/24' }] });
    const web = await a.manager.attach({ network: 'n', name: 'web' });
    store.partition('hang');
    const started = Date.now();
    await assert.rejects(a.manager.attach({ network: 'n', name: 'late' }), (e: OverlayError) => {
      assert.equal(e.code, 'unavailable');
      assert.match(
        e.message,
        /could not attach "late" to network "n": the store did not answer within 300 ms/,
      );
      return true;
    });
    assert.ok(Date.now() - started < 2_000);
    assert.equal(a.manager.inspectNetwork('n').endpoints.length, 1);
    assert.deepEqual(a.manager.dnsTable().lookupName(web.ip, 'web'), { found: [web.ip] });
    store.heal();
    // the attach that was refused must not appear once the store answers again
    await new Promise((r) => setTimeout(r, 100));
    assert.ok(!Object.values(contents(store)).some((v) => v.includes('"late"')), 'late endpoint undone');
    store.partition('reject');
    await assert.rejects(
      a.manager.createNetwork({ name: 'm' }),
      (e: OverlayError) => e.code === 'unavailable' && /no quorum/.test(e.message),
    );
    store.heal();
    await a.manager.attach({ network: 'n', name: 'after' });
  });

  it('a data plane failure on attach rolls the endpoint back', async () => {
    store = new MemoryKvStore();
    const a = await startHost(store, 'host-a');
    hosts.push(a);
    await a.manager.createNetwork({ name: 'n', subnets: [{ subnet: '198.18.1.0/24' }] });
    a.dataplane.failWhen = (c) => (c.op === 'attach' ? new Error('veth creation failed: EEXIST') : undefined);
    a.manager.on('warning', () => undefined);
    await assert.rejects(a.manager.attach({ network: 'n', ...sandboxed('web') }), (e: OverlayError) => {
      assert.match(
        e.message,
        /data plane could not attach "web" to network "n": veth creation failed: EEXIST; the endpoint was removed again/,
      );
      return true;
    });
    await waitFor(() => a.manager.listEndpoints('n').length === 0, 'rolled back');
    assert.deepEqual(
      Object.keys(contents(store)).filter((k) => k.includes('/ipam/') || k.includes('/endpoint')),
      [],
    );
  });
});
