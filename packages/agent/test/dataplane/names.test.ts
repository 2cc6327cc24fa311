import assert from 'node:assert/strict';
import {
  bridgeName,
  endpointVethName,
  gatewayVethName,
  macForIp,
  maxIfNameLength,
  parseCidr,
  tapName,
  vxlanName,
  weftDeviceKind,
} from '../../src/dataplane/names.js';

const netA = '3f2a1b4c'.padEnd(64, '0');
const netB = '3f2a1b4d'.padEnd(64, '0');

describe('device names', () => {
  it('are deterministic, distinct per network/endpoint and fit in 15 characters', () => {
    const names = [
      bridgeName(netA),
      vxlanName(netA),
      tapName(netA),
      endpointVethName(netA, 'ep1'),
      gatewayVethName('wt123-c0'),
    ];
    assert.deepEqual(names.slice(0, 3), ['wb-3f2a1b4c', 'wx-3f2a1b4c', 'wt-3f2a1b4c']);
    for (const n of names) assert.ok(n.length <= maxIfNameLength, n);
    assert.equal(endpointVethName(netA, 'ep1'), endpointVethName(netA, 'ep1'));
    assert.notEqual(endpointVethName(netA, 'ep1'), endpointVethName(netA, 'ep2'));
    assert.notEqual(endpointVethName(netA, 'ep1'), endpointVethName(netB, 'ep1'));
    assert.notEqual(gatewayVethName('a'), gatewayVethName('b'));
  });

  it('are recognised as Weft devices, and nothing else is', () => {
    assert.equal(weftDeviceKind(bridgeName(netA)), 'bridge');
    assert.equal(weftDeviceKind(vxlanName(netA)), 'vxlan');
    assert.equal(weftDeviceKind(tapName(netA)), 'tap');
    assert.equal(weftDeviceKind(endpointVethName(netA, 'e')), 'endpoint-veth');
    assert.equal(weftDeviceKind(gatewayVethName('s')), 'gateway-veth');
    assert.equal(weftDeviceKind('weft_gwbridge'), 'gateway-bridge');
    for (const foreign of ['wlan0', 'wb-xyz', 'eth0', 'wg0', 'wireguard0', 'docker0', 'wvabc']) {
      assert.equal(weftDeviceKind(foreign), undefined, foreign);
    }
  });

  it('reject ids that are not 64 hex characters', () => {
    assert.throws(() => bridgeName('my-net'), /invalid network id "my-net"/);
  });

  it('derive MACs the Docker way: 02:42 and the IPv4 bytes', () => {
    assert.equal(macForIp('198.18.0.2'), '02:42:c6:12:00:02');
    assert.throws(() => macForIp('198.18.0.256'), /invalid IPv4 address/);
  });

  it('parse CIDRs to the network address', () => {
    assert.deepEqual(parseCidr('198.18.3.7/24'), {
      network: ((198 << 24) >>> 0) + (18 << 16) + (3 << 8),
      prefixLength: 24,
    });
    assert.throws(() => parseCidr('198.18.3.0'), /invalid IPv4 CIDR/);
  });
});
