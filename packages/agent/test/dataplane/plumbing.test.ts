// Input checks of the shared plumbing: no root needed, nothing touches the kernel.
import assert from 'node:assert/strict';
import type { LocalEndpoint, NetworkSpec } from '@weft/overlay';
import {
  gatewayBridgeAddress,
  Plumbing,
  validateEndpoint,
  validateNetwork,
} from '../../src/dataplane/plumbing.js';

const id = 'ab'.repeat(32);
const ep: LocalEndpoint = {
  networkId: id,
  endpointId: 'e1',
  sandbox: 'c1',
  ifName: 'eth0',
  ip: '198.18.0.2',
  prefixLength: 24,
  mac: '02:42:c6:12:00:02',
  gateway: '198.18.0.1',
};
const net: NetworkSpec = {
  id,
  name: 'app',
  vni: 4097,
  subnets: [{ subnet: '198.18.0.0/24', gateway: '198.18.0.1' }],
  internal: false,
};

describe('plumbing input checks', () => {
  it('accepts a well-formed endpoint and network', () => {
    validateEndpoint(ep);
    validateNetwork(net);
  });

  it('names the field that is wrong in an endpoint', () => {
    const cases: [Partial<LocalEndpoint>, RegExp][] = [
      [{ networkId: 'nope' }, /invalid network id "nope"/],
      [{ sandbox: 'bad/name' }, /invalid sandbox \(netns\) name "bad\/name"/],
      [{ endpointId: 'has space' }, /invalid endpoint id "has space"/],
      [{ ifName: 'a-very-long-interface' }, /invalid interface name "a-very-long-interface"/],
      [{ ifName: 'weftgw0' }, /reserved for Weft's gateway interface/],
      [{ ip: '198.18.0.300' }, /invalid IPv4 address "198.18.0.300"/],
      [{ prefixLength: 33 }, /invalid prefix length 33/],
      [{ mac: '02:42:C6:12:00:02' }, /invalid MAC "02:42:C6:12:00:02"/],
    ];
    for (const [change, message] of cases)
      assert.throws(() => validateEndpoint({ ...ep, ...change }), message);
  });

  it('names the field that is wrong in a network', () => {
    assert.throws(
      () => validateNetwork({ ...net, vni: 16_777_216 }),
      /invalid VNI 16777216 for network "app"/,
    );
    assert.throws(() => validateNetwork({ ...net, mtu: 100 }), /invalid MTU 100 for network "app"/);
    assert.throws(
      () => validateNetwork({ ...net, subnets: [{ subnet: '198.18.0.0', gateway: '198.18.0.1' }] }),
      /invalid IPv4 CIDR "198.18.0.0"/,
    );
  });

  it('rejects unusable options when constructed', () => {
    assert.throws(
      () => new Plumbing({ vtep: 'host-a', gatewaySubnet: null }),
      /invalid IPv4 address "host-a"/,
    );
    assert.throws(
      () => new Plumbing({ vtep: '192.0.2.1', gatewaySubnet: '198.19.0.0/30' }),
      /gateway subnet 198.19.0.0\/30 is too small/,
    );
    assert.throws(
      () => new Plumbing({ vtep: '192.0.2.1', gatewaySubnet: null, hostNetns: '../etc' }),
      /invalid hostNetns "\.\.\/etc"/,
    );
  });

  it('puts the gateway bridge on the first address of its subnet', () => {
    assert.equal(gatewayBridgeAddress('198.19.255.0/24'), '198.19.255.1');
    assert.equal(gatewayBridgeAddress('198.19.255.77/24'), '198.19.255.1');
  });
});
