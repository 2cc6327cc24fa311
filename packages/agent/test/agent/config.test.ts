import assert from 'node:assert/strict';
import { parseAgentConfig } from '../../src/agent/config.js';
import { DnsIdentityBook } from '../../src/agent/dns-identity.js';

describe('weft agent flags', () => {
  const base = { name: 'host1', advertise: '192.0.2.11' };

  it('fills defaults and normalizes lists', () => {
    const c = parseAgentConfig({ ...base, peers: ' 192.0.2.12, 192.0.2.13:9000 ,' });
    assert.deepEqual(c.peers, ['192.0.2.12', '192.0.2.13:9000']);
    assert.equal(c.api, '127.0.0.1:8500');
    assert.equal(c.voters, 3);
    assert.equal(c.learners, 4);
    assert.equal(c.raftPort, 8300);
    assert.equal(c.gatewaySubnet, '172.18.0.0/16');
    assert.equal(c.sandboxPrefix, 'weft-host1-');
    assert.equal(c.hostTtlMs, 10_000);
    assert.equal(c.deadVoterThresholdMs, 10_000);
    assert.equal(parseAgentConfig({ ...base, gatewaySubnet: 'none' }).gatewaySubnet, null);
  });

  it('rejects bad values with the flag and the reason', () => {
    const bad: [Record<string, unknown>, RegExp][] = [
      [{ name: 'bad name', advertise: '192.0.2.11' }, /--name "bad name" is not a valid host name/],
      [{ name: 'h', advertise: 'host.example' }, /--advertise "host.example" is not an IPv4 address/],
      [{ ...base, peers: '192.0.2.12,nope' }, /--peers entry "nope" is not an IPv4 address/],
      [{ ...base, api: '0.0.0.0:8500' }, /--api 0\.0\.0\.0:8500 is not a loopback address/],
      [{ ...base, api: '127.0.0.1' }, /--api "127\.0\.0\.1" is not host:port/],
      [{ ...base, voters: '4' }, /--voters must be 3 or 5, got "4"/],
      [{ ...base, learners: '-1' }, /--learners must be an integer from 0 to 16/],
      [{ ...base, dataplane: 'dpdk' }, /--dataplane must be kernel or userspace, got "dpdk"/],
      [{ ...base, raftPort: '70000' }, /--raft-port must be a TCP port/],
      [
        { ...base, gatewaySubnet: '198.18.0.0/30' },
        /--gateway-subnet "198\.18\.0\.0\/30" must be an IPv4 CIDR of \/29 or larger/,
      ],
      [{ ...base, hostTtl: '10' }, /--host-ttl must be milliseconds from 1000 to 600000/],
      [
        { ...base, deadVoterThreshold: '5' },
        /--dead-voter-threshold must be milliseconds from 1000 to 3600000/,
      ],
    ];
    for (const [raw, message] of bad) assert.throws(() => parseAgentConfig(raw), message);
  });
});

describe('DNS identity of containers', () => {
  it('maps a query from a gateway address to the container’s overlay address', async () => {
    const book = new DnsIdentityBook(
      async () => [{ sandbox: 'weft-h1-web', ip: '198.19.255.2' }],
      () => [{ sandbox: 'weft-h1-web', ip: '198.18.9.2' } as never],
    );
    const asked: string[] = [];
    const table = book.wrap({
      lookupName: (clientIp) => {
        asked.push(clientIp);
        return { found: ['198.18.9.3'] };
      },
      lookupAddress: () => undefined,
    });
    table.lookupName('198.19.255.2', 'mongo');
    await book.refresh();
    table.lookupName('198.19.255.2', 'mongo');
    table.lookupName('198.18.9.7', 'mongo');
    assert.deepEqual(asked, ['198.19.255.2', '198.18.9.2', '198.18.9.7']);
  });
});
