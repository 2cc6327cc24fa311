import assert from 'node:assert/strict';
import type { OverlayError } from '../src/errors.js';
import type { OverlayManager } from '../src/manager.js';
import { MemoryKvStore } from '../src/testing/memory-kvstore.js';
import { contents, lateWatch, startHost, type TestHost, waitFor } from './helpers.js';

describe('endpoints and IPAM', () => {
  let store: MemoryKvStore;
  let hosts: TestHost[];
  let a: OverlayManager;

  beforeEach(async () => {
    store = new MemoryKvStore();
    hosts = [
      await startHost(store, 'host-a'),
      await startHost(store, 'host-b'),
      await startHost(store, 'host-c'),
    ];
    a = hosts[0].manager;
  });
  afterEach(async () => {
    for (const h of hosts) await h.manager.stop();
    store.close();
  });

  it('attach writes endpoint, address and name in one transaction; MAC is 02:42 + the IP', async () => {
    const net = await a.createNetwork({ name: 'n', subnets: [{ subnet: '198.18.1.0/24' }] });
    const txnsBefore = store.opCounts.txn;
    const ep = await a.attach({ network: 'n', name: 'web', aliases: ['www', 'front'] });
    assert.equal(store.opCounts.txn - txnsBefore, 1, 'one transaction');
    assert.equal(ep.ip, '198.18.1.2', 'the gateway .1 is reserved; the network address is never given');
    assert.equal(ep.mac, '02:42:c6:12:01:02');
    assert.equal(ep.prefixLength, 24);
    assert.equal(ep.gateway, '198.18.1.1');
    assert.equal(ep.host, 'host-a');
    assert.deepEqual(ep.aliases, ['www', 'front']);
    const keys = contents(store);
    assert.equal(keys[`weft/v1/ipam/${net.id}/198.18.1.2`], ep.id);
    assert.equal(keys[`weft/v1/endpoint-names/${net.id}/web`], ep.id);
    assert.equal(JSON.parse(keys[`weft/v1/endpoints/${net.id}/${ep.id}`]).ip, '198.18.1.2');
    assert.deepEqual(
      a.listEndpoints('n').map((e) => e.name),
      ['web'],
    );
  });

  it('skips gateway and aux addresses, honours ip-range, and releases on detach', async () => {
    await a.createNetwork({
      name: 'r',
      subnets: [
        {
          subnet: '198.18.2.0/24',
          gateway: '198.18.2.129',
          ipRange: '198.18.2.128/29',
          auxAddresses: { x: '198.18.2.130' },
        },
      ],
    });
    const ips = [];
    for (let i = 0; i < 5; i++) ips.push((await a.attach({ network: 'r', name: `c${i}` })).ip);
    // range .128-.135: .128 is inside the subnet (not its network address), .129 gateway, .130 aux
    assert.deepEqual(ips, ['198.18.2.128', '198.18.2.131', '198.18.2.132', '198.18.2.133', '198.18.2.134']);
    await a.detach('r', 'c1');
    assert.equal((await a.attach({ network: 'r', name: 'again' })).ip, '198.18.2.131');
  });

  it('a requested IP is honoured, or refused when taken, reserved or outside the network', async () => {
    await a.createNetwork({ name: 'f', subnets: [{ subnet: '198.18.3.0/24' }] });
    assert.equal((await a.attach({ network: 'f', name: 'fixed', ip: '198.18.3.77' })).ip, '198.18.3.77');
    const before = contents(store);
    const cases: [string, string, RegExp][] = [
      ['198.18.3.77', 'conflict', /IP 198\.18\.3\.77 is already in use in network "f"/],
      ['198.18.3.1', 'conflict', /reserved/],
      ['198.18.3.255', 'conflict', /reserved/],
      ['198.18.4.5', 'invalid', /not in network "f" \(subnets 198\.18\.3\.0\/24\)/],
      ['198.18.3', 'invalid', /not a valid IPv4 address/],
    ];
    for (const [ip, code, message] of cases) {
      await assert.rejects(
        a.attach({ network: 'f', name: `x${ip.replaceAll('.', '-')}`, ip }),
        (e: OverlayError) => {
          assert.equal(e.code, code, e.message);
          assert.match(e.message, message);
          return true;
        },
      );
    }
    assert.deepEqual(contents(store), before);
  });

  it('names are unique per network, but the same name may join several networks', async () => {
    await a.createNetwork({ name: 'one', subnets: [{ subnet: '198.18.5.0/24' }] });
    await a.createNetwork({ name: 'two', subnets: [{ subnet: '198.18.6.0/24' }] });
    await a.attach({ network: 'one', name: 'db' });
    await hosts[1].manager.attach({ network: 'two', name: 'db' });
    const before = contents(store);
    await assert.rejects(hosts[2].manager.attach({ network: 'one', name: 'db' }), (e: OverlayError) => {
      assert.equal(e.code, 'conflict');
      assert.match(e.message, /endpoint name "db" is already in use in network "one"/);
      return true;
    });
    await assert.rejects(
      a.attach({ network: 'one', name: 'bad name' }),
      (e: OverlayError) => e.code === 'invalid',
    );
    await assert.rejects(
      a.detach('one', 'ghost'),
      (e: OverlayError) => e.code === 'not-found' && /"ghost" not found in network "one"/.test(e.message),
    );
    assert.deepEqual(contents(store), before);
  });

  it('exhaustion is reported with the network name', async () => {
    await a.createNetwork({ name: 'tiny', subnets: [{ subnet: '198.18.7.0/30' }] });
    assert.equal((await a.attach({ network: 'tiny', name: 'only' })).ip, '198.18.7.2');
    await assert.rejects(a.attach({ network: 'tiny', name: 'more' }), (e: OverlayError) => {
      assert.equal(e.code, 'exhausted');
      assert.match(e.message, /no free IP address left in network "tiny" \(198\.18\.7\.0\/30\)/);
      return true;
    });
  });

  it('attach decides from the local view (no store read) and stays correct when that view is behind', async () => {
    const net = await a.createNetwork({ name: 'lag', subnets: [{ subnet: '198.18.9.0/24' }] });
    const late = lateWatch(store);
    const d = await startHost(late.store, 'host-d');
    hosts.push(d);
    await waitFor(() => d.manager.listNetworks().some((n) => n.id === net.id), 'host-d sees the network');
    const reads = () => store.opCounts.get + store.opCounts.list;
    const readsBefore = reads();
    const first = await d.manager.attach({ network: 'lag', name: 'first' });
    assert.equal(first.ip, '198.18.9.2');
    assert.equal(reads() - readsBefore, 0, 'no read round trip when the view is current');

    // host-d stops hearing about changes; host-a takes the next address and a name.
    late.hold();
    const taken = await a.attach({ network: 'lag', name: 'taken' });
    assert.equal(taken.ip, '198.18.9.3');
    await assert.rejects(d.manager.attach({ network: 'lag', name: 'taken' }), (e: OverlayError) => {
      assert.equal(e.code, 'conflict');
      assert.match(e.message, /endpoint name "taken" is already in use in network "lag"/);
      return true;
    });
    const next = d.manager.attach({ network: 'lag', name: 'next' });
    await new Promise((r) => setTimeout(r, 20)); // committed; waiting for host-d's view
    late.release();
    assert.equal((await next).ip, '198.18.9.4', 'the address host-d did not know about is not given twice');
    const keys = contents(store);
    assert.equal(keys[`weft/v1/ipam/${net.id}/198.18.9.3`], taken.id);
  });

  it('wires a container while its endpoint commits, once; a try whose commit fails is unwired before the next', async () => {
    const net = await a.createNetwork({ name: 'ahead', subnets: [{ subnet: '198.18.10.0/24' }] });
    const late = lateWatch(store);
    const d = await startHost(late.store, 'host-d');
    hosts.push(d);
    await waitFor(() => d.dataplane.networks.has(net.id), 'host-d prepared the network');
    const inSandbox = (sandbox: string) => ({ sandbox, ifName: 'eth0' });
    const first = await d.manager.attach({ network: 'ahead', name: 'first', ...inSandbox('ns-first') });
    const attaches = (sandbox: string) =>
      d.dataplane.calls.flatMap((c) => (c.op === 'attach' && c.ep.sandbox === sandbox ? [c.ep] : []));
    assert.deepEqual(
      attaches('ns-first').map((e) => e.endpointId),
      [first.id],
      'attached once: ahead of the commit, not again after it',
    );

    // host-d stops hearing about changes; host-a takes the next address.
    late.hold();
    await a.attach({ network: 'ahead', name: 'taken' });
    const next = d.manager.attach({ network: 'ahead', name: 'next', ...inSandbox('ns-next') });
    await new Promise((r) => setTimeout(r, 20)); // committed; waiting for host-d's view
    late.release();
    const ep = await next;
    const tries = attaches('ns-next');
    assert.deepEqual(
      tries.map((e) => e.ip),
      ['198.18.10.3', '198.18.10.4'],
    );
    const firstTry = tries[0]!;
    const ops = d.dataplane.calls.map((c) => c.op);
    const detachAt = d.dataplane.calls.findIndex(
      (c) => c.op === 'detach' && c.ep.endpointId === firstTry.endpointId,
    );
    assert.ok(detachAt >= 0, 'the try that lost its address was unwired');
    assert.ok(detachAt < ops.lastIndexOf('attach'), 'before the next try was wired');
    assert.deepEqual(
      [...d.dataplane.endpoints.values()]
        .filter((e) => e.sandbox === 'ns-next')
        .map((e) => [e.endpointId, e.ip]),
      [[ep.id, '198.18.10.4']],
    );
  });

  it('3 hosts x 50 concurrent attaches: 150 endpoints, no address given twice', async function () {
    this.timeout(30_000);
    await a.createNetwork({ name: 'busy', subnets: [{ subnet: '198.18.8.0/24' }] });
    const attaches = hosts.flatMap((h, hi) =>
      Array.from({ length: 50 }, (_, i) => h.manager.attach({ network: 'busy', name: `h${hi}-c${i}` })),
    );
    const eps = await Promise.all(attaches);
    assert.equal(eps.length, 150);
    assert.equal(new Set(eps.map((e) => e.ip)).size, 150, 'every address distinct');
    const keys = contents(store);
    const netId = eps[0].networkId;
    const ipamKeys = Object.keys(keys).filter((k) => k.startsWith(`weft/v1/ipam/${netId}/`));
    assert.equal(ipamKeys.length, 150);
    for (const ep of eps)
      assert.equal(keys[`weft/v1/ipam/${netId}/${ep.ip}`], ep.id, `${ep.name} owns ${ep.ip}`);
    assert.ok(!eps.some((e) => e.ip === '198.18.8.0' || e.ip === '198.18.8.1' || e.ip === '198.18.8.255'));
  });
});
