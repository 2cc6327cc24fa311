import assert from 'node:assert/strict';
import { EntryType, emptyConfState, emptyMessage, type Message, MessageType } from '../../src/raft/types.js';
import { MemoryNetwork, type MemoryTransport } from '../../src/transport/memory.js';
import { type SnapshotStatus, silentLog, TransportError } from '../../src/transport/transport.js';

function app(from: string, to: string, index: number): Message {
  return {
    ...emptyMessage(MessageType.App, from, to, 1),
    index: index - 1,
    entries: [{ term: 1, index, type: EntryType.Normal, data: new Uint8Array([index & 0xff]) }],
  };
}

function snap(from: string, to: string, bytes: number): Message {
  return {
    ...emptyMessage(MessageType.Snap, from, to, 2),
    snapshot: {
      metadata: { index: 10, term: 2, confState: { ...emptyConfState(), voters: [from, to] } },
      data: new Uint8Array(bytes).fill(7),
    },
  };
}

/** Resolves once `count` messages have arrived, or rejects after timeoutMs. */
function collect(transport: MemoryTransport, count: number, timeoutMs = 2000): Promise<Message[]> {
  const got: Message[] = [];
  return new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`only ${got.length}/${count} messages arrived`)),
      timeoutMs,
    );
    transport.onMessage((m) => {
      got.push(m);
      if (got.length === count) {
        clearTimeout(timer);
        resolve(got);
      }
    });
  });
}

const tick = () => new Promise((resolve) => setImmediate(resolve));

describe('MemoryTransport', () => {
  let network: MemoryNetwork;
  let a: MemoryTransport;
  let b: MemoryTransport;
  let c: MemoryTransport;

  beforeEach(async () => {
    network = new MemoryNetwork();
    a = network.transport('a', { log: silentLog });
    b = network.transport('b', { log: silentLog });
    c = network.transport('c', { log: silentLog, maxQueuedMessagesPerPeer: 4 });
    await Promise.all([a.start(), b.start(), c.start()]);
  });
  afterEach(async () => {
    await Promise.all([a.stop(), b.stop(), c.stop()]);
  });

  it('delivers messages in order, as decoded copies, asynchronously', async () => {
    const sent = [app('a', 'b', 1), app('a', 'b', 2), app('a', 'b', 3)];
    const arrived = collect(b, 3);
    a.send(sent);
    assert.equal(network.stats.delivered, 0, 'delivery must not happen inside send()');
    const got = await arrived;
    assert.deepStrictEqual(got, sent);
    assert.notStrictEqual(got[0], sent[0]);
  });

  it('reports unreachable for stopped peers and cut links, and heals', async () => {
    const unreachable: string[] = [];
    a.onUnreachable((id) => unreachable.push(id));
    await c.stop();
    a.send([app('a', 'c', 1)]);
    network.cut('a', 'b');
    a.send([app('a', 'b', 1)]);
    await tick();
    assert.deepStrictEqual(unreachable.sort(), ['b', 'c']);

    network.heal();
    const got = collect(b, 1);
    a.send([app('a', 'b', 2)]);
    assert.equal((await got)[0].index, 1);
  });

  it('partitions groups symmetrically', async () => {
    network.partition(['a'], ['b', 'c']);
    const unreachable: string[] = [];
    b.onUnreachable((id) => unreachable.push(id));
    b.send([app('b', 'a', 1)]);
    const toC = collect(c, 1);
    b.send([app('b', 'c', 1)]);
    await toC;
    assert.deepStrictEqual(unreachable, ['a']);
  });

  it('bounds the per-peer queue: overflow is dropped and reported', async () => {
    const unreachable: string[] = [];
    c.onUnreachable((id) => unreachable.push(id));
    const received: Message[] = [];
    a.onMessage((m) => received.push(m));
    c.send([1, 2, 3, 4, 5, 6].map((i) => app('c', 'a', i)));
    assert.deepStrictEqual(unreachable, ['a', 'a']);
    await tick();
    await tick();
    assert.deepStrictEqual(
      received.map((m) => m.index),
      [0, 1, 2, 3],
    );
  });

  it('reports snapshot status: finished when delivered, failed when cut', async () => {
    const statuses: Array<[string, SnapshotStatus]> = [];
    a.onSnapshotStatus((id, status) => statuses.push([id, status]));
    const got = collect(b, 1);
    a.send([snap('a', 'b', 1000)]);
    assert.equal((await got)[0].snapshot?.data.byteLength, 1000);
    network.cut('a', 'c');
    a.send([snap('a', 'c', 10)]);
    await tick();
    assert.deepStrictEqual(statuses, [
      ['b', 'finished'],
      ['c', 'failed'],
    ]);
  });

  it('loses about dropRate of the messages', async () => {
    let seed = 1;
    const random = () => {
      seed = (seed * 16807) % 2147483647;
      return seed / 2147483647;
    };
    network = new MemoryNetwork({ random });
    const x = network.transport('x', { log: silentLog });
    const y = network.transport('y', { log: silentLog });
    await Promise.all([x.start(), y.start()]);
    network.dropRate = 0.5;
    let received = 0;
    y.onMessage(() => received++);
    x.send(Array.from({ length: 400 }, (_, i) => app('x', 'y', i + 1)));
    await tick();
    assert.ok(received > 120 && received < 280, `received ${received} of 400 at dropRate 0.5`);
    assert.equal(network.stats.dropped + network.stats.delivered, 400);
  });

  it('drops invalid and local-only outgoing messages without throwing', async () => {
    const received: Message[] = [];
    b.onMessage((m) => received.push(m));
    a.send([
      emptyMessage(MessageType.Hup, 'a', 'b', 1),
      emptyMessage(MessageType.Heartbeat, 'someone-else', 'b', 1),
    ]);
    a.send([{ ...emptyMessage(MessageType.Heartbeat, 'a', 'b', 1), term: -3 }]);
    a.send([emptyMessage(MessageType.Heartbeat, 'a', 'b', 1)]);
    await tick();
    assert.equal(received.length, 1);
  });

  it('serves requests, passes handler errors back, and fails fast when unreachable', async () => {
    b.handle('echo', (payload, from) => new Uint8Array([...payload, from.charCodeAt(0)]));
    b.handle('fail', () => {
      throw new Error('not the leader (leader is c)');
    });
    assert.deepStrictEqual(await a.request('b', 'echo', new Uint8Array([1, 2])), new Uint8Array([1, 2, 97]));
    await assert.rejects(a.request('b', 'fail', new Uint8Array()), (err: unknown) => {
      return err instanceof TransportError && err.code === 'remote-error' && /leader is c/.test(err.message);
    });
    await assert.rejects(a.request('b', 'nope', new Uint8Array()), { code: 'no-handler' });
    network.cut('a', 'b');
    await assert.rejects(a.request('b', 'echo', new Uint8Array()), { code: 'unreachable' });
    network.heal();
    b.handle('slow', () => new Promise(() => {}));
    await assert.rejects(a.request('b', 'slow', new Uint8Array(), { timeoutMs: 50 }), { code: 'timeout' });
  });

  it('keeps an address book that can change at runtime', () => {
    a.setMember({ nodeId: 'b', multiaddrs: ['/ip4/127.0.0.1/tcp/1'] });
    a.setMember({ nodeId: 'b', multiaddrs: ['/ip4/127.0.0.1/tcp/2'] });
    a.setMember({ nodeId: 'c', multiaddrs: [] });
    a.removeMember('c');
    assert.deepStrictEqual(a.members(), [{ nodeId: 'b', multiaddrs: ['/ip4/127.0.0.1/tcp/2'] }]);
  });
});
