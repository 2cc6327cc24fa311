// Back-pressure of the frame helpers over a real libp2p stream: a slow reader
// pauses the stream, yamux stops granting window, and the writer waits.
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Stream } from '@libp2p/interface';
import { multiaddr } from '@multiformats/multiaddr';
import { readFrames, writeFrame } from '../../src/transport/frames.js';
import { Libp2pTransport } from '../../src/transport/libp2p.js';
import { silentLog } from '../../src/transport/transport.js';

describe('length-prefixed frames over libp2p streams', function () {
  this.timeout(30_000);
  const transports: Libp2pTransport[] = [];
  const dirs: string[] = [];

  afterEach(async () => {
    await Promise.allSettled(transports.splice(0).map((t) => t.stop()));
    await Promise.allSettled(dirs.splice(0).map((d) => rm(d, { recursive: true, force: true })));
  });

  async function start(nodeId: string): Promise<Libp2pTransport> {
    const dataDir = await mkdtemp(join(tmpdir(), 'weft-frames-'));
    dirs.push(dataDir);
    const t = new Libp2pTransport({ nodeId, dataDir, listen: ['127.0.0.1:0'], log: silentLog });
    transports.push(t);
    await t.start();
    return t;
  }

  it('a slow reader pauses the stream and the writer waits, with every frame intact and in order', async () => {
    const a = await start('a');
    const b = await start('b');
    const frameBytes = 256 * 1024;
    const frameCount = 48; // 12 MiB: well beyond yamux's window and the reader's high-water mark
    const received: number[] = [];
    let readerPaused = false;
    let done!: () => void;
    const finished = new Promise<void>((resolve) => {
      done = resolve;
    });
    await b.libp2p.handle('/weft-test/slow/1.0.0', async (stream: Stream) => {
      for await (const frame of readFrames(stream, 1024 * 1024)) {
        assert.equal(frame.byteLength, frameBytes);
        assert.ok(frame.every((byte) => byte === frame[0]));
        received.push(frame[0]);
        readerPaused ||= stream.readStatus === 'paused';
        await new Promise((resolve) => setTimeout(resolve, 10)); // a consumer slower than loopback
      }
      done();
    });
    const stream = await a.libp2p.dialProtocol(multiaddr(b.multiaddrs[0]), '/weft-test/slow/1.0.0');
    let writerWaits = 0;
    let maxBufferedBytes = 0;
    for (let i = 0; i < frameCount; i++) {
      if (await writeFrame(stream, new Uint8Array(frameBytes).fill(i), undefined, 1024 * 1024)) writerWaits++;
      maxBufferedBytes = Math.max(maxBufferedBytes, stream.writeBufferLength);
    }
    await stream.close();
    await finished;
    assert.deepStrictEqual(
      received,
      Array.from({ length: frameCount }, (_, i) => i),
    );
    assert.ok(readerPaused, 'the reader never paused the stream');
    assert.ok(writerWaits > 0, 'the writer never waited');
    assert.ok(maxBufferedBytes <= 1024 * 1024, `writer left ${maxBufferedBytes} bytes buffered`);
  });
});
