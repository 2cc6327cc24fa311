import assert from 'node:assert/strict';
import { OverlayError } from '../src/errors.js';
import type { OverlayManager } from '../src/manager.js';
import { MemoryKvStore } from '../src/testing/memory-kvstore.js';
import { contents, startHost, type TestHost, waitFor } from './helpers.js';

describe('networks', () => {
  let store: MemoryKvStore;
  let hosts: TestHost[];
  let a: OverlayManager;
  let b: OverlayManager;

  beforeEach(async () => {
    store = new MemoryKvStore();
    hosts = [await startHost(store, 'host-a'), await startHost(store, 'host-b')];
    [a, b] = hosts.map((h) => h.manager);
  });
  afterEach(async () => {
    for (const h of hosts) await h.manager.stop();
    store.close();
  });

  it('creates a network with every option, visible on every host under the same 64-hex ID', async () => {
    const net = await a.createNetwork({
      name: 'appnet',
      subnets: [
        {
          subnet: '198.18.10.0/24',
          gateway: '198.18.10.254',
          ipRange: '198.18.10.128/25',
          auxAddresses: { router: '198.18.10.130' },
        },
      ],
      options: { mtu: 1400, internal: true, attachable: true },
      labels: { team: 'db' },
    });
    assert.match(net.id, /^[0-9a-f]{64}$/);
    assert.equal(net.driver, 'overlay');
    assert.deepEqual(net.ipam.config, [
      {
        subnet: '198.18.10.0/24',
        gateway: '198.18.10.254',
        ipRange: '198.18.10.128/25',
        auxAddresses: { router: '198.18.10.130' },
      },
    ]);
    assert.deepEqual(net.options, { mtu: 1400, internal: true, attachable: true });
    assert.deepEqual(net.labels, { team: 'db' });
    assert.ok(net.vni >= 4096);
    await waitFor(() => b.listNetworks().some((n) => n.name === 'appnet'), 'network visible on host-b');
    assert.equal(b.inspectNetwork('appnet').id, net.id);
    assert.equal(b.inspectNetwork(net.id).name, 'appnet');
    assert.equal(b.inspectNetwork(net.id.slice(0, 6)).name, 'appnet');
    assert.deepEqual(b.inspectNetwork('appnet').endpoints, []);
  });

  it('gives each network its own VNI and a non-overlapping subnet from the default pool', async () => {
    const explicit = await a.createNetwork({ name: 'n0', subnets: [{ subnet: '198.18.0.0/23' }] });
    const created = [];
    for (let i = 1; i <= 4; i++) created.push(await (i % 2 ? a : b).createNetwork({ name: `n${i}` }));
    const all = [explicit, ...created];
    assert.equal(new Set(all.map((n) => n.vni)).size, all.length);
    const subnets = created.map((n) => n.ipam.config[0].subnet);
    assert.deepEqual(subnets, ['198.18.2.0/24', '198.18.3.0/24', '198.18.4.0/24', '198.18.5.0/24']);
    assert.deepEqual(
      created.map((n) => n.ipam.config[0].gateway),
      ['198.18.2.1', '198.18.3.1', '198.18.4.1', '198.18.5.1'],
    );
  });

  it('resolves IDs like Docker: full ID, name, unique prefix; ambiguous prefixes are refused', async () => {
    const nets = [];
    for (let i = 0; i < 20; i++) nets.push(await a.createNetwork({ name: `p${i}` }));
    // 20 IDs over 16 hex digits: at least two share their first digit
    const byFirst = new Map<string, number>();
    for (const n of nets) byFirst.set(n.id[0], (byFirst.get(n.id[0]) ?? 0) + 1);
    const shared = [...byFirst].find(([, count]) => count > 1);
    assert.ok(shared);
    assert.throws(
      () => a.inspectNetwork(shared[0]),
      (e: OverlayError) => e.code === 'invalid' && /ambiguous/.test(e.message),
    );
    assert.throws(
      () => a.inspectNetwork('nope'),
      (e: OverlayError) => e.code === 'not-found' && /"nope" not found/.test(e.message),
    );
  });

  it('refuses bad input with an error naming the problem, and changes nothing in the store', async () => {
    await a.createNetwork({ name: 'taken', subnets: [{ subnet: '198.18.20.0/24' }] });
    const cases: [Parameters<OverlayManager['createNetwork']>[0], string, RegExp][] = [
      [
        { name: 'x1', subnets: [{ subnet: '198.18.300.0/24' }] },
        'invalid',
        /"198\.18\.300\.0\/24" is not a valid IPv4 CIDR/,
      ],
      [{ name: 'x2', subnets: [{ subnet: '198.18.30.0' }] }, 'invalid', /not a valid IPv4 CIDR/],
      [
        { name: 'x3', subnets: [{ subnet: '198.18.30.5/24' }] },
        'invalid',
        /host bits set; did you mean 198\.18\.30\.0\/24/,
      ],
      [
        { name: 'x4', subnets: [{ subnet: '198.18.20.128/25' }] },
        'conflict',
        /overlaps subnet 198\.18\.20\.0\/24 of network "taken"/,
      ],
      [
        { name: 'x5', subnets: [{ subnet: '198.18.31.0/24', gateway: '198.18.32.1' }] },
        'invalid',
        /gateway 198\.18\.32\.1 is not a usable address of subnet 198\.18\.31\.0\/24/,
      ],
      [
        { name: 'x6', subnets: [{ subnet: '198.18.31.0/24', gateway: '198.18.31.255' }] },
        'invalid',
        /gateway 198\.18\.31\.255 is not a usable/,
      ],
      [
        { name: 'x7', subnets: [{ subnet: '198.18.31.0/24', ipRange: '198.18.32.0/25' }] },
        'invalid',
        /ip-range 198\.18\.32\.0\/25 is not inside subnet/,
      ],
      [
        { name: 'x8', subnets: [{ subnet: '198.18.31.0/24', auxAddresses: { r: '198.18.31.1' } }] },
        'invalid',
        /aux-address r=198\.18\.31\.1 is already the gateway/,
      ],
      [
        { name: 'x9', subnets: [{ subnet: '198.18.31.0/24' }, { subnet: '198.18.31.0/25' }] },
        'conflict',
        /overlaps subnet 198\.18\.31\.0\/24 of this request/,
      ],
      [
        { name: 'taken', subnets: [{ subnet: '198.18.40.0/24' }] },
        'conflict',
        /network "taken" already exists \(id [0-9a-f]{64}\)/,
      ],
      [{ name: 'bad/name' }, 'invalid', /network name "bad\/name" is not valid/],
      [{ name: 'x10', driver: 'bridge' }, 'invalid', /driver "bridge" is not supported/],
      [{ name: 'x11', options: { mtu: 20 } }, 'invalid', /mtu 20 must be an integer/],
      [{ name: 'x12', options: { color: 'red' } as never }, 'invalid', /unknown network option "color"/],
      [{ name: 'x13', subnets: [{ subnet: 'fd00::/64' }] }, 'invalid', /IPv6 is not supported/],
    ];
    const before = contents(store);
    for (const [req, code, message] of cases) {
      await assert.rejects(a.createNetwork(req), (e: OverlayError) => {
        assert.ok(e instanceof OverlayError, `${req.name}: expected an OverlayError, got ${e}`);
        assert.equal(e.code, code, `${req.name}: ${e.message}`);
        assert.match(e.message, message);
        return true;
      });
    }
    await assert.rejects(
      a.removeNetwork('unknown-net'),
      (e: OverlayError) => e.code === 'not-found' && /"unknown-net" not found/.test(e.message),
    );
    await assert.rejects(
      a.attach({ network: 'unknown-net', name: 'c' }),
      (e: OverlayError) => e.code === 'not-found',
    );
    assert.deepEqual(contents(store), before);
  });

  it('N managers creating the same name at the same instant: exactly one wins, the others get a conflict', async () => {
    const more = [
      await startHost(store, 'host-c'),
      await startHost(store, 'host-d'),
      await startHost(store, 'host-e'),
    ];
    hosts.push(...more);
    const managers = hosts.map((h) => h.manager);
    const results = await Promise.allSettled(managers.map((m) => m.createNetwork({ name: 'my-net' })));
    const won = results.filter((r) => r.status === 'fulfilled');
    const lost = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
    assert.equal(won.length, 1);
    assert.equal(lost.length, managers.length - 1);
    for (const r of lost) {
      assert.equal(r.reason.code, 'conflict');
      assert.match(r.reason.message, /network "my-net" already exists/);
    }
    const stored = store.snapshot().filter((e) => e.key.startsWith('weft/v1/networks/'));
    assert.equal(stored.length, 1);
  });

  it('concurrent creates of different networks never overlap and never share a VNI', async () => {
    const results = await Promise.all(
      Array.from({ length: 6 }, (_, i) => (i % 2 ? a : b).createNetwork({ name: `c${i}` })),
    );
    const subnets = results.map((n) => n.ipam.config[0].subnet);
    assert.equal(new Set(subnets).size, 6);
    assert.equal(new Set(results.map((n) => n.vni)).size, 6);
  });

  it('attach racing remove: never both succeed, and no endpoint outlives its network', async () => {
    for (let round = 0; round < 15; round++) {
      const net = await a.createNetwork({
        name: `race${round}`,
        subnets: [{ subnet: `198.18.${100 + round}.0/24` }],
      });
      // shift one side by a few event-loop turns, so every interleaving gets its chance
      const ticks = async (n: number) => {
        for (let i = 0; i < n; i++) await new Promise((r) => setImmediate(r));
      };
      const [attached, removed] = await Promise.allSettled([
        ticks(round % 5).then(() => b.attach({ network: net.id, name: 'c' })),
        ticks(Math.floor(round / 5) * 2).then(() => a.removeNetwork(net.id)),
      ]);
      assert.ok(
        !(attached.status === 'fulfilled' && removed.status === 'fulfilled'),
        `round ${round}: both succeeded`,
      );
      if (removed.status === 'rejected') assert.equal(removed.reason.code, 'in-use');
      if (attached.status === 'rejected') assert.match(attached.reason.code, /^(not-found|conflict)$/);
      const keys = Object.keys(contents(store));
      const networkGone = !keys.includes(`weft/v1/networks/${net.id}`);
      const leftovers = keys.filter((k) => k.includes(`/${net.id}/`));
      if (networkGone) assert.deepEqual(leftovers, [], `round ${round}: keys left for a removed network`);
      else await b.detach(net.id, 'c').then(() => a.removeNetwork(net.id));
    }
  });

  it('remove: refused while endpoints are attached (naming them), then removes every key of the network', async () => {
    const net = await a.createNetwork({ name: 'rm-me', subnets: [{ subnet: '198.18.50.0/24' }] });
    await a.attach({ network: 'rm-me', name: 'web' });
    await b.attach({ network: 'rm-me', name: 'db' });
    const before = contents(store);
    await assert.rejects(b.removeNetwork('rm-me'), (e: OverlayError) => {
      assert.equal(e.code, 'in-use');
      assert.match(
        e.message,
        /network "rm-me" has active endpoints: .*db \(host host-b, 198\.18\.50\.\d+\).*web \(host host-a/,
      );
      return true;
    });
    assert.deepEqual(contents(store), before);
    await a.detach('rm-me', 'web');
    await b.detach(net.id, 'db');
    await b.removeNetwork(net.id.slice(0, 10));
    assert.deepEqual(
      store
        .snapshot()
        .map((e) => e.key)
        .filter((k) => k.includes(net.id) || k.includes('rm-me') || k.endsWith(`vni/${net.vni}`)),
      [],
    );
    await waitFor(() => a.listNetworks().length === 0, 'removal visible on host-a');
    // the name and the subnet can be used again
    const again = await a.createNetwork({ name: 'rm-me', subnets: [{ subnet: '198.18.50.0/24' }] });
    assert.notEqual(again.id, net.id);
  });
});
