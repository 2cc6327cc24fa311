// Real libp2p nodes on 127.0.0.1 with random ports, each with its own data dir.
import assert from 'node:assert/strict';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as lp from 'it-length-prefixed';
import { EntryType, emptyConfState, emptyMessage, type Message, MessageType } from '../../src/raft/types.js';
import { waitUntil } from '../../src/testing/wait-until.js';
import { decodeSnapshotAck, encodeMessage, encodeSnapshotHeader } from '../../src/transport/codec.js';
import { generateClusterKey, IDENTITY_KEY_FILE } from '../../src/transport/identity.js';
import { Libp2pTransport, type Libp2pTransportOptions, PROTOCOLS } from '../../src/transport/libp2p.js';
import {
  type SnapshotStatus,
  silentLog,
  TransportError,
  type TransportLog,
} from '../../src/transport/transport.js';

function heartbeat(from: string, to: string, commit: number): Message {
  return {
    ...emptyMessage(MessageType.Heartbeat, from, to, 3),
    commit,
    context: new Uint8Array([commit & 0xff]),
  };
}

/** WEFT_DEBUG=1 prints every node's transport log to stderr. */
function testLog(nodeId: string): TransportLog {
  if (!process.env.WEFT_DEBUG) return silentLog;
  const print = (level: string) => (fields: object, message: string) =>
    process.stderr.write(`[${nodeId}] ${level} ${message} ${JSON.stringify(fields)}\n`);
  return { debug: print('debug'), info: print('info'), warn: print('warn'), error: print('error') };
}

/** A log that keeps errors so tests can check what an operator would read. */
function capturingLog(): TransportLog & { errors: string[] } {
  const errors: string[] = [];
  return { ...silentLog, errors, error: (_fields, message) => errors.push(message) };
}

function tcpPort(transport: Libp2pTransport): number {
  const address = transport.multiaddrs.find((a) => a.startsWith('/ip4/127.0.0.1/tcp/'));
  assert.ok(address, `no loopback address in ${transport.multiaddrs.join(', ')}`);
  return Number(address.split('/')[4]);
}

describe('Libp2pTransport (3 nodes on 127.0.0.1)', function () {
  this.timeout(30_000);
  const started: Libp2pTransport[] = [];
  const dirs: string[] = [];

  async function dataDir(): Promise<string> {
    const dir = await mkdtemp(join(tmpdir(), 'weft-transport-'));
    dirs.push(dir);
    return dir;
  }

  async function node(
    nodeId: string,
    options: Partial<Libp2pTransportOptions> = {},
    beforeStart?: (transport: Libp2pTransport) => void,
  ): Promise<{ transport: Libp2pTransport; received: Message[] }> {
    const transport = new Libp2pTransport({
      nodeId,
      dataDir: options.dataDir ?? (await dataDir()),
      listen: ['127.0.0.1:0'],
      log: testLog(nodeId),
      dialTimeoutMs: 3000,
      bootstrapRetryMs: 100,
      ...options,
    });
    const received: Message[] = [];
    transport.onMessage((m) => received.push(m));
    started.push(transport);
    beforeStart?.(transport);
    await transport.start();
    return { transport, received };
  }

  /** Resends like Raft does until the receiver has it (messages to an unreachable peer are dropped). */
  async function sendUntilReceived(
    from: Libp2pTransport,
    message: Message,
    received: Message[],
    timeoutMs = 15_000,
  ): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!received.some((m) => m.commit === message.commit && m.from === message.from)) {
      if (Date.now() > deadline) throw new Error(`message ${message.from}→${message.to} never arrived`);
      from.send([message]);
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  }

  afterEach(async () => {
    await Promise.allSettled(started.splice(0).map((t) => t.stop()));
    await Promise.allSettled(dirs.splice(0).map((d) => rm(d, { recursive: true, force: true })));
  });

  it('learns NodeIds from host:port peers and delivers messages both ways', async () => {
    const updates: string[] = [];
    const a = await node('a', {}, (t) => t.onMemberUpdate((m) => updates.push(`${m.nodeId}=${m.peerId}`)));
    const peers = [`127.0.0.1:${tcpPort(a.transport)}`];
    const b = await node('b', { peers });
    const c = await node('c', { peers });
    await waitUntil('a learns b and c by hello', () => a.transport.members().length === 2);
    assert.deepStrictEqual(updates.sort(), [`b=${b.transport.peerId}`, `c=${c.transport.peerId}`]);
    assert.deepStrictEqual(
      a.transport
        .members()
        .map((m) => [m.nodeId, m.peerId])
        .sort(),
      [
        ['b', b.transport.peerId],
        ['c', c.transport.peerId],
      ],
    );
    // c never dialed b; it learned b's peer id from a's address book.
    await waitUntil('c learns b from a', () => c.transport.members().some((m) => m.nodeId === 'b'));

    a.transport.send([heartbeat('a', 'b', 1), heartbeat('a', 'c', 2)]);
    b.transport.send([heartbeat('b', 'a', 3)]);
    c.transport.send([heartbeat('c', 'b', 4)]);
    await waitUntil(
      'all four messages arrive',
      () => a.received.length + b.received.length + c.received.length === 4,
    );
    assert.deepStrictEqual(b.received.map((m) => [m.from, m.commit]).sort(), [
      ['a', 1],
      ['c', 4],
    ]);
    assert.deepStrictEqual(a.received[0], heartbeat('b', 'a', 3));
    assert.deepStrictEqual(c.received[0], heartbeat('a', 'c', 2));

    // Many messages keep their order on the long-lived stream.
    const batch = Array.from({ length: 500 }, (_, i) => ({
      ...emptyMessage(MessageType.App, 'a', 'b', 3),
      index: i,
      entries: [{ term: 3, index: i + 1, type: EntryType.Normal, data: new Uint8Array(100).fill(i & 0xff) }],
    }));
    a.transport.send(batch);
    await waitUntil('500 appends arrive', () => b.received.length === 502);
    assert.deepStrictEqual(
      b.received.slice(2).map((m) => m.index),
      batch.map((m) => m.index),
    );
  });

  it('works with address-only members set before and after the handshake (KvNode style)', async () => {
    // Reserve ports by starting once; NodeIds are the canonical raft addresses like KvNode's.
    const aDir = await dataDir();
    const bDir = await dataDir();
    const probeA = await node('probe-a', { dataDir: aDir });
    const probeB = await node('probe-b', { dataDir: bDir });
    const aAddress = `127.0.0.1:${tcpPort(probeA.transport)}`;
    const bAddress = `127.0.0.1:${tcpPort(probeB.transport)}`;
    await probeA.transport.stop();
    await probeB.transport.stop();

    const a = await node(aAddress, { dataDir: aDir, listen: [aAddress], peers: [bAddress] }, (t) =>
      t.setMember({ nodeId: bAddress, multiaddrs: [bAddress] }),
    );
    const b = await node(bAddress, { dataDir: bDir, listen: [bAddress], peers: [aAddress] });
    await waitUntil('a learns b’s peer id', () => a.transport.members()[0]?.peerId === b.transport.peerId);
    // Setting the member again without a peer id (as KvNode does on every config change) keeps the learned one.
    a.transport.setMember({ nodeId: bAddress, multiaddrs: [bAddress] });
    assert.equal(a.transport.members()[0].peerId, b.transport.peerId);
    b.transport.setMember({ nodeId: aAddress, multiaddrs: [aAddress] });
    a.transport.send([heartbeat(aAddress, bAddress, 1)]);
    b.transport.send([heartbeat(bAddress, aAddress, 2)]);
    await waitUntil('both directions', () => a.received.length === 1 && b.received.length === 1);
    assert.equal(
      await b.transport
        .request(aAddress, 'missing', new Uint8Array())
        .catch((err: TransportError) => err.code),
      'no-handler',
    );
  });

  it('fails to start with a clear error when the port is taken', async () => {
    const a = await node('a');
    const port = tcpPort(a.transport);
    const clash = new Libp2pTransport({
      nodeId: 'b',
      dataDir: await dataDir(),
      listen: [`127.0.0.1:${port}`],
      log: silentLog,
    });
    await assert.rejects(clash.start(), (err: unknown) => {
      return err instanceof TransportError && err.message.includes(`cannot listen on 127.0.0.1:${port}`);
    });
    await clash.stop(); // still fine to call
    assert.throws(
      () => new Libp2pTransport({ nodeId: 'c', dataDir: '/nonexistent', listen: ['nowhere'] }),
      /not host:port/,
    );
    assert.throws(
      () =>
        new Libp2pTransport({
          nodeId: 'c',
          dataDir: '/nonexistent',
          listen: ['127.0.0.1:0'],
          clusterKey: 'abc',
        }),
      /cluster key: expected 64 hexadecimal digits/,
    );
  });

  it('keeps the peer id across restarts (identity key file, mode 0600)', async () => {
    const dir = await dataDir();
    const first = await node('a', { dataDir: dir });
    const peerId = first.transport.peerId;
    await first.transport.stop();
    await first.transport.stop(); // idempotent
    const mode = (await stat(join(dir, IDENTITY_KEY_FILE))).mode & 0o777;
    assert.equal(mode, 0o600);
    const second = await node('a', { dataDir: dir });
    assert.equal(second.transport.peerId, peerId);
  });

  it('streams a large snapshot in chunks with back-pressure and reports the outcome', async () => {
    const a = await node('a');
    const b = await node('b', { peers: [`127.0.0.1:${tcpPort(a.transport)}`] });
    await waitUntil('hello', () => a.transport.members().length === 1);
    const statuses: Array<[string, SnapshotStatus]> = [];
    a.transport.onSnapshotStatus((id, status) => statuses.push([id, status]));

    const bytes = 24 * 1024 * 1024;
    const data = new Uint8Array(bytes);
    for (let i = 0; i < bytes; i += 4096) data[i] = (i / 4096) & 0xff;
    const snapshot: Message = {
      ...emptyMessage(MessageType.Snap, 'a', 'b', 7),
      snapshot: {
        metadata: { index: 900, term: 7, confState: { ...emptyConfState(), voters: ['a', 'b'] } },
        data,
      },
    };
    a.transport.send([snapshot]);
    // Raft traffic keeps flowing on its own stream meanwhile.
    a.transport.send([heartbeat('a', 'b', 11)]);
    await waitUntil('snapshot status', () => statuses.length === 1, 20_000);
    assert.deepStrictEqual(statuses, [['b', 'finished']]);
    const got = b.received.find((m) => m.type === MessageType.Snap);
    assert.ok(got?.snapshot);
    assert.deepStrictEqual(got.snapshot.metadata, snapshot.snapshot!.metadata);
    assert.equal(
      Buffer.compare(Buffer.from(got.snapshot.data), Buffer.from(data)),
      0,
      'snapshot data differs',
    );
    assert.ok(b.received.some((m) => m.commit === 11));

    assert.equal(a.transport.stats.snapshotChunksSent, bytes / (256 * 1024));
    assert.ok(a.transport.stats.snapshotDrainWaits > 0, 'sender never waited for the receiver');
    // Back-pressure: at most about two chunks ever sat in the sender's buffer, not the whole snapshot.
    assert.ok(
      a.transport.stats.snapshotMaxBufferedBytes <= 2 * 256 * 1024 + 64,
      `sender buffered ${a.transport.stats.snapshotMaxBufferedBytes} bytes`,
    );
    assert.equal(b.transport.stats.snapshotsReceived, 1);
  });

  it('bounds each peer queue: overflow is dropped and reported, the rest arrives in order', async () => {
    const a = await node('a', { maxQueuedMessagesPerPeer: 10 });
    const b = await node('b');
    a.transport.setMember({ nodeId: 'b', multiaddrs: [`127.0.0.1:${tcpPort(b.transport)}`] });
    const unreachable: string[] = [];
    a.transport.onUnreachable((id) => unreachable.push(id));
    // One synchronous batch: the connection is still being dialed, so only 10 fit in the queue.
    a.transport.send(Array.from({ length: 100 }, (_, i) => heartbeat('a', 'b', i + 1)));
    assert.equal(unreachable.length, 90);
    assert.equal(a.transport.stats.messagesDropped, 90);
    await waitUntil('the queued 10 arrive', () => b.received.length === 10);
    assert.deepStrictEqual(
      b.received.map((m) => m.commit),
      [1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
    );
  });

  it('reports unreachable members without blocking, and reaches them once they are up', async () => {
    const a = await node('a');
    const unreachable: string[] = [];
    a.transport.onUnreachable((id) => unreachable.push(id));
    const bDir = await dataDir();
    // Learn b's identity and port, then take it down.
    const first = await node('b', { dataDir: bDir, listen: ['127.0.0.1:0'] });
    const port = tcpPort(first.transport);
    const bPeerId = first.transport.peerId;
    await first.transport.stop();
    a.transport.setMember({ nodeId: 'b', peerId: bPeerId, multiaddrs: [`127.0.0.1:${port}`] });
    a.transport.send([heartbeat('a', 'b', 1)]);
    await waitUntil('b reported unreachable', () => unreachable.includes('b'));

    const b = await node('b', { dataDir: bDir, listen: [`127.0.0.1:${port}`] });
    await sendUntilReceived(a.transport, heartbeat('a', 'b', 2), b.received);
  });

  it('refuses oversized and truncated snapshots; nothing partial is delivered', async () => {
    const a = await node('a');
    const b = await node('b', { peers: [`127.0.0.1:${tcpPort(a.transport)}`], maxSnapshotBytes: 100_000 });
    await waitUntil('hello', () => a.transport.members().length === 1);
    const statuses: Array<[string, SnapshotStatus]> = [];
    a.transport.onSnapshotStatus((id, status) => statuses.push([id, status]));
    const snap = (bytes: number): Message => ({
      ...emptyMessage(MessageType.Snap, 'a', 'b', 2),
      snapshot: { metadata: { index: 5, term: 2, confState: emptyConfState() }, data: new Uint8Array(bytes) },
    });
    a.transport.send([snap(200_000)]);
    await waitUntil('status', () => statuses.length === 1);
    assert.deepStrictEqual(statuses, [['b', 'failed']]);

    // A raw sender that announces 50 000 bytes and stops after 1 000.
    const stream = await a.transport.libp2p.dialProtocol(b.transport.libp2p.peerId, PROTOCOLS.snapshot);
    const header = encodeSnapshotHeader({ message: snap(0), totalBytes: 50_000, dataCrc32: 0 });
    stream.send(lp.encode.single(header));
    stream.send(lp.encode.single(new Uint8Array(1000)));
    await stream.close();
    const ack = decodeSnapshotAck((await lp.decode(stream).next()).value!.subarray());
    assert.deepStrictEqual(ack, { ok: false, error: 'truncated: got 1000 of 50000 bytes' });
    assert.equal(
      b.received.filter((m) => m.type === MessageType.Snap).length,
      0,
      'no snapshot may reach the node',
    );
  });

  it('reports a snapshot failed after snapshotTimeoutMs when the receiver takes it all and never acks', async () => {
    // The timeout covered the dial and the writes but not the wait for the ack:
    // a receiver that stalls there (hung, or cut off without a reset) left the
    // send, and the core's snapshot status, pending for as long as the connection lived.
    const a = await node('a', { snapshotTimeoutMs: 500 });
    await node('b', { peers: [`127.0.0.1:${tcpPort(a.transport)}`] }, (t) => {
      // Reads the snapshot to its end, then never answers.
      (
        t as unknown as { onSnapshotStream: (stream: AsyncIterable<unknown>) => Promise<void> }
      ).onSnapshotStream = async (stream) => {
        for await (const _ of lp.decode(stream as Parameters<typeof lp.decode>[0])) {
          // discarded
        }
        await new Promise(() => {});
      };
    });
    await waitUntil('hello', () => a.transport.members().length === 1);
    const statuses: Array<[string, SnapshotStatus]> = [];
    a.transport.onSnapshotStatus((id, status) => statuses.push([id, status]));
    a.transport.send([
      {
        ...emptyMessage(MessageType.Snap, 'a', 'b', 1),
        snapshot: { metadata: { index: 1, term: 1, confState: emptyConfState() }, data: new Uint8Array(10) },
      },
    ]);
    await waitUntil('snapshot failure reported', () => statuses.length === 1, 5_000);
    assert.deepStrictEqual(statuses, [['b', 'failed']]);
  });

  it('reports a snapshot to an unreachable node as failed', async () => {
    const a = await node('a');
    const statuses: Array<[string, SnapshotStatus]> = [];
    a.transport.onSnapshotStatus((id, status) => statuses.push([id, status]));
    a.transport.setMember({ nodeId: 'gone', multiaddrs: ['127.0.0.1:1'] });
    a.transport.send([
      {
        ...emptyMessage(MessageType.Snap, 'a', 'gone', 1),
        snapshot: { metadata: { index: 1, term: 1, confState: emptyConfState() }, data: new Uint8Array(10) },
      },
    ]);
    await waitUntil('snapshot failure reported', () => statuses.length === 1);
    assert.deepStrictEqual(statuses, [['gone', 'failed']]);
  });

  it('a peer forgotten by removeMember can talk again: its connections close, and a new one says hello', async () => {
    // A member removed from the configuration and restarted at once said hello
    // before the others forgot it; forgotten, its open connection was refused
    // for good ("say hello first"), so it never learned it had been removed.
    const a = await node('a');
    const b = await node('b', { peers: [`127.0.0.1:${tcpPort(a.transport)}`] });
    await waitUntil(
      'hello both ways',
      () => a.transport.members().length === 1 && b.transport.members().some((m) => m.nodeId === 'a'),
    );
    a.transport.handle('kv/info', (_payload, from) => new TextEncoder().encode(`hi ${from}`));
    assert.equal(
      new TextDecoder().decode(await b.transport.request('a', 'kv/info', new Uint8Array())),
      'hi b',
    );
    a.transport.removeMember('b');
    assert.deepStrictEqual(a.transport.members(), []);
    let lastError = '';
    const answer = await waitUntil(
      'b to be answered again',
      async () => {
        try {
          return new TextDecoder().decode(await b.transport.request('a', 'kv/info', new Uint8Array()));
        } catch (err) {
          lastError = (err as Error).message;
          await new Promise((r) => setTimeout(r, 100));
          return undefined;
        }
      },
      5_000,
    ).catch((err: Error) => assert.fail(`${err.message}; last error: ${lastError}`));
    assert.equal(answer, 'hi b');
    assert.deepStrictEqual(
      a.transport.members().map((m) => m.nodeId),
      ['b'],
      'b is admitted again by its hello',
    );
  });

  it('answers requests, and reports missing handlers and handler errors', async () => {
    const a = await node('a');
    const b = await node('b', { peers: [`127.0.0.1:${tcpPort(a.transport)}`] });
    await waitUntil('hello', () => b.transport.members().length === 1);
    a.transport.handle(
      'kv/forward',
      (payload, from) => new Uint8Array([...payload, ...new TextEncoder().encode(from)]),
    );
    a.transport.handle('kv/fails', () => {
      throw new Error('not the leader; try node c');
    });
    assert.deepStrictEqual(
      await b.transport.request('a', 'kv/forward', new Uint8Array([1, 2])),
      new Uint8Array([1, 2, 98]),
    );
    // Many at once, as a follower forwarding a burst of proposals does.
    const replies = await Promise.all(
      Array.from({ length: 300 }, (_, i) =>
        b.transport.request('a', 'kv/forward', new Uint8Array([i & 0xff])),
      ),
    );
    assert.deepStrictEqual(
      replies,
      replies.map((_, i) => new Uint8Array([i & 0xff, 98])),
    );
    await assert.rejects(b.transport.request('a', 'kv/none', new Uint8Array()), { code: 'no-handler' });
    await assert.rejects(b.transport.request('a', 'kv/fails', new Uint8Array()), (err: unknown) => {
      return err instanceof TransportError && err.code === 'remote-error' && /try node c/.test(err.message);
    });
    await assert.rejects(b.transport.request('nobody', 'kv/forward', new Uint8Array()), {
      code: 'unknown-member',
    });
    // a → b works over the connection b dialed (b's hello told a who it is).
    b.transport.handle('ping', () => new Uint8Array([42]));
    assert.deepStrictEqual(await a.transport.request('b', 'ping', new Uint8Array()), new Uint8Array([42]));
  });

  it('refuses a peer that claims a NodeId held by another peer id, with a clear log', async () => {
    const log = capturingLog();
    const a = await node('a', { log });
    const peers = [`127.0.0.1:${tcpPort(a.transport)}`];
    const b = await node('b', { peers });
    await waitUntil('b known', () => a.transport.members().length === 1);
    const impostorLog = capturingLog();
    const impostor = await node('b', { peers, log: impostorLog });
    await waitUntil('refusal logged', () => log.errors.length > 0);
    assert.match(log.errors[0], new RegExp(`node id "b" belongs to peer ${b.transport.peerId}`));
    assert.match(log.errors[0], new RegExp(`peer ${impostor.transport.peerId}`));
    await waitUntil('impostor logs the refusal', () => impostorLog.errors.length > 0);
    assert.match(impostorLog.errors[0], /refused our hello/);
    assert.deepStrictEqual(
      a.transport.members().map((m) => m.peerId),
      [b.transport.peerId],
    );
    assert.equal(a.transport.stats.hellosRejected, 1);
  });

  it('with a cluster key, nodes without it (or with another) cannot connect', async () => {
    const key = generateClusterKey();
    const a = await node('a', { clusterKey: key });
    const peers = [`127.0.0.1:${tcpPort(a.transport)}`];
    const b = await node('b', { clusterKey: key, peers });
    const other = await node('x', { clusterKey: generateClusterKey(), peers });
    const none = await node('y', { peers });
    await waitUntil('b (same key) joins', () => a.transport.members().some((m) => m.nodeId === 'b'));
    b.transport.send([heartbeat('b', 'a', 5)]);
    await waitUntil('b reaches a', () => a.received.length === 1);

    for (const outsider of [other.transport, none.transport]) {
      outsider.setMember({ nodeId: 'a', multiaddrs: peers });
      await assert.rejects(outsider.request('a', 'anything', new Uint8Array(), { timeoutMs: 5000 }), {
        code: 'unreachable',
      });
    }
    assert.deepStrictEqual(
      a.transport.members().map((m) => m.nodeId),
      ['b'],
    );
    assert.equal(a.transport.stats.hellosRejected, 0, 'outsiders must fail before any Weft protocol');
    assert.equal(a.transport.libp2p.getConnections().length, 1, 'only b holds a connection to a');
  });

  it('finds a member by peer id through the DHT from one bootstrap peer', async () => {
    const a = await node('a');
    const peers = [`127.0.0.1:${tcpPort(a.transport)}`];
    const b = await node('b', { peers });
    await waitUntil('b said hello to a', () => a.transport.members().length === 1);
    // c knows b only by peer id (as a KvNode would from the Raft membership), never an address:
    // its own entry wins over what a's hello tells, so only the DHT can say where b is.
    const c = await node('c', { peers }, (t) =>
      t.setMember({ nodeId: 'b', peerId: b.transport.peerId, multiaddrs: [] }),
    );
    await sendUntilReceived(c.transport, heartbeat('c', 'b', 9), b.received);
  });

  it('finds a member again after it restarts on a new port', async () => {
    const a = await node('a');
    const peers = [`127.0.0.1:${tcpPort(a.transport)}`];
    const b = await node('b', { peers });
    const cDir = await dataDir();
    const c1 = await node('c', { peers, dataDir: cDir });
    await waitUntil('a knows b and c', () => a.transport.members().length === 2);
    // c dials b (it learned b from a's address book); c's hello gives b c's current address.
    await sendUntilReceived(c1.transport, heartbeat('c', 'b', 1), b.received);
    assert.ok(b.transport.members().find((m) => m.nodeId === 'c')?.multiaddrs.length);
    const oldPort = tcpPort(c1.transport);
    const cPeerId = c1.transport.peerId;
    await c1.transport.stop();

    const c2 = await node('c', { peers, dataDir: cDir });
    assert.equal(c2.transport.peerId, cPeerId);
    assert.notEqual(tcpPort(c2.transport), oldPort);
    // b still has c's old address; it must find c's new one by peer id.
    await sendUntilReceived(b.transport, heartbeat('b', 'c', 2), c2.received);
    assert.ok(b.transport.stats.peerLookups >= 1, 'b asked the DHT for c');
    assert.ok(
      b.transport
        .members()
        .find((m) => m.nodeId === 'c')
        ?.multiaddrs.some((m) => m.includes(`/tcp/${tcpPort(c2.transport)}`)) ||
        b.transport.libp2p
          .getConnections()
          .some((conn) => conn.remoteAddr.toString().includes(`/tcp/${tcpPort(c2.transport)}`)),
      'b reaches c at its new port',
    );
  });

  it('drops malformed and forged frames from a peer without harm', async () => {
    const a = await node('a');
    const b = await node('b', { peers: [`127.0.0.1:${tcpPort(a.transport)}`] });
    await waitUntil('hello', () => a.transport.members().length === 1);
    // Write raw frames on b's connection, bypassing b's encoder.
    const stream = await b.transport.libp2p.dialProtocol(a.transport.libp2p.peerId, PROTOCOLS.raft);
    stream.send(lp.encode.single(new Uint8Array([1, 2, 3, 4, 5])));
    stream.send(lp.encode.single(encodeMessage(heartbeat('c', 'a', 1)))); // b pretending to be c
    stream.send(lp.encode.single(encodeMessage(heartbeat('b', 'a', 2))));
    await waitUntil('the valid frame arrives', () => a.received.length === 1);
    assert.equal(a.received[0].commit, 2);
    assert.equal(a.transport.stats.malformedFrames, 2);
    // An oversized length prefix ends that stream but not the node.
    stream.send(new Uint8Array([0xff, 0xff, 0xff, 0xff, 0x7f]));
    // Garbage on the other protocols is refused too.
    for (const protocol of [PROTOCOLS.hello, PROTOCOLS.snapshot, PROTOCOLS.rpc]) {
      const garbage = await b.transport.libp2p.dialProtocol(a.transport.libp2p.peerId, protocol);
      garbage.send(lp.encode.single(new Uint8Array(64).fill(0xa5)));
      await garbage.close();
    }
    b.transport.send([heartbeat('b', 'a', 3)]);
    await waitUntil('a still receives', () => a.received.length === 2);
    assert.deepStrictEqual(
      await b.transport.request('a', 'missing', new Uint8Array()).catch((err: TransportError) => err.code),
      'no-handler',
    );
  });
});
