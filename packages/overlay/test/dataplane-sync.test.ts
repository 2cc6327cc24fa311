import assert from 'node:assert/strict';
import type { NetworkSpec, RemotePeer } from '../src/dataplane.js';
import { DataplaneSync } from '../src/dataplane-sync.js';
import { RecordingDataplane } from '../src/testing/recording-dataplane.js';

const net: NetworkSpec = {
  id: 'a'.repeat(64),
  name: 'n',
  vni: 4096,
  subnets: [{ subnet: '198.18.1.0/24', gateway: '198.18.1.1' }],
  internal: false,
};
const peer = (n: number, vtep = '192.0.2.2'): RemotePeer => ({
  networkId: net.id,
  endpointId: `ep${n}`,
  ip: `198.18.1.${n}`,
  mac: `02:42:c6:12:01:${n.toString(16).padStart(2, '0')}`,
  vtep,
});

describe('DataplaneSync', () => {
  it('applies diffs in order, is idempotent, and retries what failed', async () => {
    const dp = new RecordingDataplane();
    const sync = new DataplaneSync(dp);
    let r = await sync.sync({ networks: [net], endpoints: [], peers: [peer(2), peer(3)] }, { full: false });
    assert.deepEqual(
      dp.calls.map((c) => c.op),
      ['ensureNetwork', 'addPeer', 'addPeer'],
    );
    assert.equal(r.peersAdded.length, 2);
    r = await sync.sync({ networks: [net], endpoints: [], peers: [peer(2), peer(3)] }, { full: false });
    assert.equal(dp.calls.length, 3, 'same state again: no calls');
    // a peer moved to another VTEP is removed, then re-added
    dp.failWhen = (c) =>
      c.op === 'addPeer' && c.peer.ip === '198.18.1.4' ? new Error('fdb busy') : undefined;
    r = await sync.sync(
      { networks: [net], endpoints: [], peers: [peer(2, '192.0.2.9'), peer(4)] },
      { full: false },
    );
    assert.deepEqual(
      dp.calls.slice(3).map((c) => c.op),
      ['removePeer', 'removePeer', 'addPeer', 'addPeer'],
    );
    assert.equal(r.failures.get('peer:ep4')?.message, 'fdb busy');
    assert.deepEqual(dp.peerIps(net.id), ['198.18.1.2']);
    dp.failWhen = undefined;
    r = await sync.sync(
      { networks: [net], endpoints: [], peers: [peer(2, '192.0.2.9'), peer(4)] },
      { full: false },
    );
    assert.equal(r.failures.size, 0);
    assert.deepEqual(dp.peerIps(net.id), ['198.18.1.2', '198.18.1.4']);
  });

  it('a full sync goes through reconcile and reports what changed', async () => {
    const dp = new RecordingDataplane();
    const sync = new DataplaneSync(dp);
    await sync.sync({ networks: [net], endpoints: [], peers: [peer(2)] }, { full: false });
    const r = await sync.sync({ networks: [net], endpoints: [], peers: [peer(3)] }, { full: true });
    assert.equal(dp.calls.at(-1)?.op, 'reconcile');
    assert.deepEqual(
      r.peersAdded.map((p) => p.ip),
      ['198.18.1.3'],
    );
    assert.deepEqual(
      r.peersRemoved.map((p) => p.ip),
      ['198.18.1.2'],
    );
    assert.deepEqual(
      sync.appliedPeers().map((p) => p.ip),
      ['198.18.1.3'],
    );
  });
});
