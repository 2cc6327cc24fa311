// One behavioural contract, run against both implementations: what a KvNode
// relies on must hold for the in-memory fake exactly as for libp2p, so tests
// that use the fake can be trusted.
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { emptyConfState, emptyMessage, type Message, MessageType } from '../../src/raft/types.js';
import { waitUntil } from '../../src/testing/wait-until.js';
import { Libp2pTransport } from '../../src/transport/libp2p.js';
import { MemoryNetwork } from '../../src/transport/memory.js';
import {
  type SnapshotStatus,
  silentLog,
  type Transport,
  TransportError,
} from '../../src/transport/transport.js';

interface Harness {
  /** Started transports for `ids`, each knowing the others. */
  cluster(ids: string[]): Promise<Transport[]>;
  cleanup(): Promise<void>;
}

function heartbeat(from: string, to: string, commit: number): Message {
  return { ...emptyMessage(MessageType.Heartbeat, from, to, 1), commit };
}

function memoryHarness(): Harness {
  const started: Transport[] = [];
  return {
    async cluster(ids) {
      const network = new MemoryNetwork();
      const transports = ids.map((id) => network.transport(id, { log: silentLog }));
      for (const t of transports) {
        for (const id of ids) if (id !== t.nodeId) t.setMember({ nodeId: id, multiaddrs: [] });
        await t.start();
        started.push(t);
      }
      return transports;
    },
    async cleanup() {
      await Promise.all(started.splice(0).map((t) => t.stop()));
    },
  };
}

function libp2pHarness(): Harness {
  const started: Libp2pTransport[] = [];
  const dirs: string[] = [];
  return {
    async cluster(ids) {
      const transports: Libp2pTransport[] = [];
      for (const nodeId of ids) {
        const dataDir = await mkdtemp(join(tmpdir(), 'weft-contract-'));
        dirs.push(dataDir);
        const t = new Libp2pTransport({
          nodeId,
          dataDir,
          listen: ['127.0.0.1:0'],
          log: silentLog,
          dialTimeoutMs: 3000,
        });
        await t.start();
        started.push(t);
        transports.push(t);
      }
      // Address-only members, like a KvNode configured with --peers.
      for (const t of transports) {
        for (const other of transports) {
          if (other !== t) t.setMember({ nodeId: other.nodeId, multiaddrs: [other.multiaddrs[0]] });
        }
      }
      return transports;
    },
    async cleanup() {
      await Promise.all(started.splice(0).map((t) => t.stop()));
      await Promise.all(dirs.splice(0).map((d) => rm(d, { recursive: true, force: true })));
    },
  };
}

for (const [name, makeHarness] of [
  ['MemoryTransport', memoryHarness],
  ['Libp2pTransport', libp2pHarness],
] as const) {
  describe(`Transport contract: ${name}`, function () {
    this.timeout(30_000);
    let harness: Harness;
    beforeEach(() => {
      harness = makeHarness();
    });
    afterEach(async () => {
      await harness.cleanup();
    });

    it('delivers in order both ways; start and stop are idempotent', async () => {
      const [a, b] = await harness.cluster(['a', 'b']);
      await a.start();
      const atA: Message[] = [];
      const atB: Message[] = [];
      a.onMessage((m) => atA.push(m));
      b.onMessage((m) => atB.push(m));
      a.send([1, 2, 3].map((i) => heartbeat('a', 'b', i)));
      b.send([heartbeat('b', 'a', 9)]);
      await waitUntil('delivery', () => atB.length === 3 && atA.length === 1);
      assert.deepStrictEqual(
        atB.map((m) => m.commit),
        [1, 2, 3],
      );
      assert.deepStrictEqual(atA[0], heartbeat('b', 'a', 9));
      await b.stop();
      await b.stop();
    });

    it('reports a stopped peer unreachable and never throws from send', async () => {
      const [a, b] = await harness.cluster(['a', 'b']);
      const unreachable: string[] = [];
      a.onUnreachable((id) => unreachable.push(id));
      await b.stop();
      assert.doesNotThrow(() => a.send([heartbeat('a', 'b', 1)]));
      assert.doesNotThrow(() => a.send([heartbeat('a', 'nobody-knows', 1)]));
      await waitUntil(
        'unreachable reported',
        () => unreachable.includes('b') && unreachable.includes('nobody-knows'),
      );
    });

    it('delivers snapshots whole and reports finished; failed for a stopped peer', async () => {
      const [a, b, c] = await harness.cluster(['a', 'b', 'c']);
      const statuses: Array<[string, SnapshotStatus]> = [];
      a.onSnapshotStatus((id, status) => statuses.push([id, status]));
      const atB: Message[] = [];
      b.onMessage((m) => atB.push(m));
      await c.stop();
      const data = new Uint8Array(600_000).map((_, i) => i % 251);
      const snap = (to: string): Message => ({
        ...emptyMessage(MessageType.Snap, 'a', to, 4),
        snapshot: {
          metadata: { index: 42, term: 4, confState: { ...emptyConfState(), voters: ['a', 'b', 'c'] } },
          data,
        },
      });
      a.send([snap('b'), snap('c')]);
      await waitUntil('two statuses', () => statuses.length === 2);
      assert.deepStrictEqual(statuses.sort(), [
        ['b', 'finished'],
        ['c', 'failed'],
      ]);
      assert.deepStrictEqual(atB[0], snap('b'));
    });

    it('drops invalid outgoing messages (local types, foreign from) without throwing', async () => {
      const [a, b] = await harness.cluster(['a', 'b']);
      const atB: Message[] = [];
      b.onMessage((m) => atB.push(m));
      a.send([emptyMessage(MessageType.Hup, 'a', 'b', 1), heartbeat('b', 'b', 1), heartbeat('a', 'b', 7)]);
      await waitUntil('the valid one', () => atB.length === 1);
      await new Promise((resolve) => setTimeout(resolve, 100));
      assert.deepStrictEqual(
        atB.map((m) => m.commit),
        [7],
      );
    });

    it('answers requests with the caller’s NodeId; maps failures to error codes', async () => {
      const [a, b] = await harness.cluster(['a', 'b']);
      b.handle('who', (payload, from) => new TextEncoder().encode(`${from}:${payload.length}`));
      b.handle('boom', () => Promise.reject(new Error('store is read-only')));
      b.handle('hang', () => new Promise(() => {}));
      assert.equal(new TextDecoder().decode(await a.request('b', 'who', new Uint8Array(5))), 'a:5');
      await assert.rejects(a.request('b', 'nope', new Uint8Array()), { code: 'no-handler' });
      await assert.rejects(a.request('b', 'boom', new Uint8Array()), (err: unknown) => {
        return (
          err instanceof TransportError && err.code === 'remote-error' && err.message.includes('read-only')
        );
      });
      await assert.rejects(a.request('b', 'hang', new Uint8Array(), { timeoutMs: 200 }), { code: 'timeout' });
      const controller = new AbortController();
      const pending = a.request('b', 'hang', new Uint8Array(), { signal: controller.signal });
      controller.abort();
      await assert.rejects(pending, { code: 'aborted' });
      b.unhandle('who');
      await assert.rejects(a.request('b', 'who', new Uint8Array()), { code: 'no-handler' });
    });

    it('keeps a changeable address book', async () => {
      const [a] = await harness.cluster(['a', 'b']);
      a.setMember({ nodeId: 'z', multiaddrs: ['127.0.0.1:9'] });
      assert.ok(a.members().some((m) => m.nodeId === 'z'));
      a.removeMember('z');
      assert.ok(!a.members().some((m) => m.nodeId === 'z'));
      assert.ok(a.members().some((m) => m.nodeId === 'b'));
    });
  });
}
