// Membership over the real transport (libp2p on loopback, LevelDB on disk):
// a member removed from the cluster, whose disk was lost, joins again at its
// old address with a new identity.
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KvNode, type KvNodeOptions } from '../../src/api/node.js';
import { freePort } from '../../src/testing/free-port.js';
import { waitUntil } from '../../src/testing/wait-until.js';
import { dec, enc } from './robustness-cluster.js';

describe('KvNode membership over libp2p', function () {
  this.timeout(90_000);
  let root: string;
  const nodes = new Map<string, KvNode>();
  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), 'weft-kv-rejoin-'));
  });
  afterEach(async () => {
    await Promise.all([...nodes.values()].map((n) => n.close()));
    nodes.clear();
    await rm(root, { recursive: true, force: true });
  });

  it('a removed member whose data directory was wiped rejoins at its old address', async () => {
    const addrs = await Promise.all([0, 1, 2].map(async () => `127.0.0.1:${await freePort()}`));
    const options = (address: string, extra: Partial<KvNodeOptions> = {}): KvNodeOptions => ({
      dataDir: join(root, address.replace(/[:.]/g, '_')),
      id: `n${address.split(':')[1]}`,
      listen: address,
      peers: addrs,
      tickMs: 20,
      proposalTimeoutMs: 3_000,
      ...extra,
    });
    for (const n of await Promise.all(addrs.map((a) => KvNode.open(options(a))))) nodes.set(n.raftId, n);
    const leader = await waitUntil('a leader', () =>
      [...nodes.values()].find((n) => n.status().role === 'leader'),
    );
    assert.equal(await leader.put('m/k', enc('before')), true);
    const gone = [...nodes.values()].find((n) => n !== leader)!;
    const goneAddress = gone.raftId;
    await leader.removeMember(goneAddress);
    await gone.close();
    nodes.delete(goneAddress);
    // The disk is lost: a new data directory means a new libp2p identity at the same address.
    await rm(options(goneAddress).dataDir, { recursive: true, force: true });
    for (const n of nodes.values())
      await waitUntil(
        `${n.name} to apply the removal`,
        () => !n.status().voters.includes(goneAddress) || undefined,
      );

    const back = await KvNode.open(options(goneAddress, { peers: [], join: leader.raftId }));
    nodes.set(back.raftId, back);
    await waitUntil('the rejoined node to become a voter', () =>
      leader.status().voters.includes(goneAddress) ? true : undefined,
    );
    assert.equal(dec((await back.get('m/k'))?.value), 'before', 'it caught up');
    assert.equal(await back.put('m/k', enc('after')), true, 'it forwards writes to the leader');
    for (const n of nodes.values()) assert.equal(dec((await n.get('m/k'))?.value), 'after');
  });
});
