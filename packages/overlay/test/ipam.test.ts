import assert from 'node:assert/strict';
import type { OverlayError } from '../src/errors.js';
import { NetworkAddressSpace, planSubnets } from '../src/ipam.js';
import { formatIp, macForIp, parseIp } from '../src/ipv4.js';

describe('IPAM planning', () => {
  const pools = [{ base: '198.18.0.0/22', size: 24 }];

  it('picks the first pool block that overlaps nothing, skipping past big networks', () => {
    const existing = [
      { networkName: 'big', subnet: '198.18.0.0/23' },
      { networkName: 'small', subnet: '198.18.3.128/25' },
    ];
    assert.deepEqual(planSubnets([], existing, pools), [
      { subnet: '198.18.2.0/24', gateway: '198.18.2.1', auxAddresses: {} },
    ]);
    const two = planSubnets([{}, {}], [{ networkName: 'big', subnet: '198.18.0.0/23' }], pools);
    assert.deepEqual(
      two.map((s) => s.subnet),
      ['198.18.2.0/24', '198.18.3.0/24'],
    );
  });

  it('reports an exhausted pool, and refuses gateway/ip-range without a subnet', () => {
    const full = [{ networkName: 'all', subnet: '198.18.0.0/22' }];
    assert.throws(
      () => planSubnets([], full, pools),
      (e: OverlayError) =>
        e.code === 'exhausted' &&
        /no free subnet left in the default address pools 198\.18\.0\.0\/22/.test(e.message),
    );
    assert.throws(
      () => planSubnets([{ gateway: '198.18.0.1' }], [], pools),
      (e: OverlayError) => e.code === 'invalid' && /need an explicit subnet/.test(e.message),
    );
    assert.throws(() => planSubnets([{ subnet: '198.18.0.0/31' }], [], pools), /too small/);
  });

  it('never hands out network, broadcast, gateway or aux addresses', () => {
    const [s] = planSubnets(
      [{ subnet: '198.18.9.0/29', gateway: '198.18.9.6', auxAddresses: { a: '198.18.9.3' } }],
      [],
      pools,
    );
    const space = new NetworkAddressSpace('n', [s]);
    assert.deepEqual(space.freeAddresses(new Set(), 100).map(formatIp), [
      '198.18.9.1',
      '198.18.9.2',
      '198.18.9.4',
      '198.18.9.5',
    ]);
    assert.deepEqual(space.freeAddresses(new Set([parseIp('198.18.9.1') as number]), 2).map(formatIp), [
      '198.18.9.2',
      '198.18.9.4',
    ]);
    assert.deepEqual(space.subnetOf(parseIp('198.18.9.2') as number), {
      prefixLength: 29,
      gateway: '198.18.9.6',
    });
  });

  it('derives MACs like Docker', () => {
    assert.equal(macForIp(parseIp('198.18.255.10') as number), '02:42:c6:12:ff:0a');
    assert.equal(parseIp('01.2.3.4'), undefined);
    assert.equal(parseIp('1.2.3.256'), undefined);
  });
});
