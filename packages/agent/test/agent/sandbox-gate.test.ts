// The gate that lets `weft run` commit an endpoint while its namespace is
// being made: the data plane's attach into that namespace waits for it.
import assert from 'node:assert/strict';
import type { LocalEndpoint } from '@weft/overlay';
import { RecordingDataplane } from '@weft/overlay/testing/recording-dataplane';
import { SandboxGate } from '../../src/agent/sandbox-gate.js';

const ep = (sandbox: string): LocalEndpoint => ({
  networkId: 'a'.repeat(64),
  endpointId: 'b'.repeat(64),
  sandbox,
  ifName: 'eth0',
  ip: '198.18.0.2',
  prefixLength: 24,
  mac: '02:42:c6:12:00:02',
  gateway: '198.18.0.1',
});

function deferred() {
  let resolve!: () => void;
  let reject!: (e: Error) => void;
  const promise = new Promise<void>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/** A recording data plane with the test network already set up. */
async function dataplane(): Promise<RecordingDataplane> {
  const dp = new RecordingDataplane();
  await dp.ensureNetwork({
    id: 'a'.repeat(64),
    name: 'n',
    vni: 256,
    subnets: [{ subnet: '198.18.0.0/24', gateway: '198.18.0.1' }],
    internal: false,
  });
  return dp;
}

const tick = () => new Promise((r) => setImmediate(r));

describe('SandboxGate', () => {
  it('holds an attach into a namespace still being made until it exists', async () => {
    const inner = await dataplane();
    const gate = new SandboxGate();
    const dp = gate.wrap(inner);
    const made = deferred();
    gate.hold('weft-h1-web', made.promise);
    const attached = dp.attach(ep('weft-h1-web'));
    await tick();
    assert.equal(inner.calls.filter((c) => c.op === 'attach').length, 0, 'attach ran before the namespace');
    made.resolve();
    await attached;
    assert.equal(inner.calls.filter((c) => c.op === 'attach').length, 1);
  });

  it('fails the attach naming the namespace when making it failed, and never calls the data plane', async () => {
    const inner = await dataplane();
    const gate = new SandboxGate();
    const made = deferred();
    gate.hold('weft-h1-db', made.promise);
    made.reject(new Error('ip netns add: permission denied'));
    await assert.rejects(
      gate.wrap(inner).attach(ep('weft-h1-db')),
      /container namespace weft-h1-db could not be made: ip netns add: permission denied/,
    );
    assert.equal(inner.calls.filter((c) => c.op === 'attach').length, 0);
  });

  it('lets other namespaces and other calls through at once', async () => {
    const inner = await dataplane();
    const gate = new SandboxGate();
    const dp = gate.wrap(inner);
    gate.hold('weft-h1-slow', new Promise(() => {})); // never made
    await dp.attach(ep('weft-h1-other'));
    await dp.addPeer({
      networkId: 'a'.repeat(64),
      endpointId: 'c'.repeat(64),
      ip: '198.18.0.3',
      mac: '02:42:c6:12:00:03',
      vtep: '192.0.2.12',
    });
    assert.deepEqual(
      inner.calls.map((c) => c.op),
      ['ensureNetwork', 'attach', 'addPeer'],
    );
  });
});
