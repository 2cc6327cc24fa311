// Write coalescing for libp2p's TCP connections and js-yamux's window-update
// policy (transport/wire-batching.ts). End-to-end flow under back-pressure is
// covered by frames.test.ts (real libp2p, 12 MiB through a paused reader).
import assert from 'node:assert/strict';
import { once } from 'node:events';
import net from 'node:net';
import { StreamState, YamuxStream } from '@chainsafe/libp2p-yamux/stream';
import type { MultiaddrConnection } from '@libp2p/interface';
import { LengthPrefixedDecoder } from '@libp2p/utils';
import { corkPerTick, decodeWithoutThrowing, limitWindowUpdates } from '../../src/transport/wire-batching.js';

describe('wire batching', () => {
  describe('corkPerTick', () => {
    let server: net.Server | undefined;
    const sockets: net.Socket[] = [];

    afterEach(async () => {
      for (const s of sockets.splice(0)) s.destroy();
      if (server) await new Promise((resolve) => server!.close(resolve));
      server = undefined;
    });

    async function socketPair(): Promise<{ client: net.Socket; accepted: net.Socket }> {
      server = net.createServer();
      server.listen(0, '127.0.0.1');
      await once(server, 'listening');
      const { port } = server.address() as net.AddressInfo;
      const acceptedP = once(server, 'connection');
      const client = net.connect(port, '127.0.0.1');
      await once(client, 'connect');
      const [accepted] = (await acceptedP) as [net.Socket];
      sockets.push(client, accepted);
      return { client, accepted };
    }

    /** What @libp2p/tcp's connection does: one socket.write per chunk it is handed. */
    function tcpLikeConnection(socket: net.Socket) {
      return {
        socket,
        sendData(chunks: Uint8Array[]) {
          let canSendMore = true;
          let sentBytes = 0;
          for (const c of chunks) {
            sentBytes += c.byteLength;
            canSendMore = socket.write(c);
          }
          return { sentBytes, canSendMore };
        },
      };
    }

    it('holds every write of one tick and flushes them together, in order, at the end of the tick', async () => {
      const { client, accepted } = await socketPair();
      const conn = tcpLikeConnection(client);
      corkPerTick(conn as unknown as MultiaddrConnection);
      const frames = Array.from({ length: 3 }, (_, i) => [Buffer.from([0, 5]), Buffer.alloc(5, 0x61 + i)]);
      for (const f of frames) conn.sendData(f);
      // Nothing has reached the kernel yet: all 21 bytes wait in the corked socket.
      assert.equal(client.writableCorked, 1);
      assert.equal(client.writableLength, 21);
      const received: Buffer[] = [];
      accepted.on('data', (d: Buffer) => received.push(d));
      await new Promise((resolve) => process.nextTick(resolve));
      assert.equal(client.writableCorked, 0, 'uncorked once the tick ended');
      const expected = Buffer.concat(frames.flat());
      while (Buffer.concat(received).length < expected.length) await once(accepted, 'data');
      assert.deepEqual(Buffer.concat(received), expected);
      // The next tick corks again.
      conn.sendData([Buffer.from('x')]);
      assert.equal(client.writableCorked, 1);
    });

    it('leaves a connection without a socket as it is', () => {
      const sendData = () => ({ sentBytes: 0, canSendMore: true });
      const conn = { sendData };
      corkPerTick(conn as unknown as MultiaddrConnection);
      assert.equal(conn.sendData, sendData);
    });

    it('does not cork a destroyed socket', async () => {
      const { client } = await socketPair();
      const conn = tcpLikeConnection(client);
      corkPerTick(conn as unknown as MultiaddrConnection);
      client.destroy();
      client.on('error', () => {}); // writing after destroy errors asynchronously
      conn.sendData([Buffer.from('late')]);
      assert.equal(client.writableCorked, 0);
    });
  });

  describe('limitWindowUpdates', () => {
    const WINDOW = 256 * 1024;
    function fakeStream(state: StreamState, capacity: number) {
      const frames: Array<{ type: number; flag: number; length: number }> = [];
      const stream = Object.assign(Object.create(YamuxStream.prototype), {
        state,
        recvWindow: WINDOW,
        recvWindowCapacity: capacity,
        maxStreamWindowSize: WINDOW,
        epochStart: Date.now(),
        streamId: 1,
        getRTT: () => -1,
        sendFrame: (f: { type: number; flag: number; length: number }) => frames.push(f),
      });
      return { stream: stream as { sendWindowUpdate(): void; recvWindowCapacity: number }, frames };
    }

    before(() => limitWindowUpdates());

    it('sends no update while more than half of the receive window is left', () => {
      const { stream, frames } = fakeStream(StreamState.Established, WINDOW - 1000);
      stream.sendWindowUpdate();
      assert.equal(frames.length, 0);
    });

    it('restores the full window once half of it is used', () => {
      const { stream, frames } = fakeStream(StreamState.Established, WINDOW / 2 - 1);
      stream.sendWindowUpdate();
      assert.equal(frames.length, 1);
      assert.equal(frames[0]!.length, WINDOW / 2 + 1);
      assert.equal(stream.recvWindowCapacity, WINDOW);
    });

    it('still acknowledges a new stream at once (SYN/ACK flags)', () => {
      const { stream, frames } = fakeStream(StreamState.SYNReceived, WINDOW);
      stream.sendWindowUpdate();
      assert.equal(frames.length, 1);
      assert.notEqual(frames[0]!.flag, 0);
    });
  });

  describe('decodeWithoutThrowing', () => {
    before(() => decodeWithoutThrowing());

    /** Noise's frame length: 2 bytes big-endian, RangeError when fewer are buffered. */
    function noiseLikeDecoder() {
      const stats = { emptyThrows: 0 };
      const decoder = new LengthPrefixedDecoder({
        lengthDecoder: (data) => {
          if (data.byteLength < 2) {
            if (data.byteLength === 0) stats.emptyThrows++;
            throw new RangeError('Could not decode int16BE');
          }
          const byte = (k: number) => (data instanceof Uint8Array ? data[k]! : data.get(k));
          return (byte(0) << 8) | byte(1);
        },
        encodingLength: () => 2,
      });
      return { decoder, stats };
    }

    it('yields the same frames for every way of cutting the stream, without throwing at an empty buffer', () => {
      const payloads = [new Uint8Array([1, 2, 3]), new Uint8Array(300).fill(7), new Uint8Array([9])];
      const wire = Buffer.concat(
        payloads.map((p) => Buffer.concat([Buffer.from([p.length >> 8, p.length & 0xff]), p])),
      );
      for (let cut1 = 0; cut1 <= wire.length; cut1 += 1) {
        const cut2 = Math.min(wire.length, cut1 + 150);
        const { decoder, stats } = noiseLikeDecoder();
        const frames: number[][] = [];
        for (const chunk of [wire.subarray(0, cut1), wire.subarray(cut1, cut2), wire.subarray(cut2)]) {
          for (const f of decoder.decode(chunk)) frames.push([...f.subarray()]);
        }
        assert.deepEqual(
          frames,
          payloads.map((p) => [...p]),
          `cut at ${cut1}/${cut2}`,
        );
        assert.equal(stats.emptyThrows, 0, 'the length decoder was asked to throw for an empty buffer');
      }
    });
  });
});
