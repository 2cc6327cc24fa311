// Length-prefixed frames (it-length-prefixed varints) over libp2p streams, with
// back-pressure in both directions: the writer waits for 'drain' when the muxer
// says its buffer is full, and the reader pauses the stream (yamux then stops
// granting window) while its consumer is behind.
import type { Stream } from '@libp2p/interface';
import * as lp from 'it-length-prefixed';
import { Uint8ArrayList } from 'uint8arraylist';

/** Bytes a reader buffers before pausing the stream. */
const READ_HIGH_WATER_BYTES = 1024 * 1024;

/** Bytes a writer may leave in a stream's send buffer before it waits. */
export const WRITE_HIGH_WATER_BYTES = 1024 * 1024;

/**
 * Resolves once at most `maxBufferedBytes` wait in the stream's send buffer;
 * rejects if the stream closes or `signal` aborts first.
 *
 * Why not Stream.onDrain(): in libp2p 3.x it keeps a settled promise after the
 * first drain, and 'drain' also fires when the connection drains while this
 * stream's yamux window is still exhausted, so either alone lets the buffer
 * grow without bound. The buffer length is the truth; events only say when to
 * look again.
 */
export function waitForBuffered(
  stream: Stream,
  maxBufferedBytes: number,
  signal?: AbortSignal,
): Promise<void> {
  if (stream.writeBufferLength <= maxBufferedBytes) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const cleanup = () => {
      stream.removeEventListener('drain', onProgress);
      stream.removeEventListener('idle', onProgress);
      stream.removeEventListener('close', onClose);
      signal?.removeEventListener('abort', onAbort);
    };
    const check = () => {
      if (stream.writeBufferLength > maxBufferedBytes) return;
      cleanup();
      resolve();
    };
    // After 'drain' the stream resumes sending in a microtask: look after that.
    const onProgress = () => setImmediate(check);
    const onClose = (event: Event) => {
      cleanup();
      reject((event as Event & { error?: Error }).error ?? new Error('stream closed while waiting to send'));
    };
    const onAbort = () => {
      cleanup();
      reject(signal?.reason);
    };
    if (signal?.aborted) return onAbort();
    stream.addEventListener('drain', onProgress);
    stream.addEventListener('idle', onProgress);
    stream.addEventListener('close', onClose);
    signal?.addEventListener('abort', onAbort);
  });
}

/**
 * Sends length-prefixed frames in one muxer write, then waits while more than
 * maxBufferedBytes are queued behind them. Returns true if it had to wait.
 */
export async function writeFrames(
  stream: Stream,
  frames: readonly Uint8Array[],
  signal?: AbortSignal,
  maxBufferedBytes = WRITE_HIGH_WATER_BYTES,
): Promise<boolean> {
  const data = new Uint8ArrayList();
  for (const frame of frames) data.append(lp.encode.single(frame));
  stream.send(data);
  if (stream.writeBufferLength <= maxBufferedBytes) return false;
  await waitForBuffered(stream, maxBufferedBytes, signal);
  return true;
}

export function writeFrame(
  stream: Stream,
  frame: Uint8Array,
  signal?: AbortSignal,
  maxBufferedBytes = WRITE_HIGH_WATER_BYTES,
): Promise<boolean> {
  return writeFrames(stream, [frame], signal, maxBufferedBytes);
}

async function* chunks(stream: Stream): AsyncGenerator<Uint8Array | Uint8ArrayList> {
  const queue: Array<Uint8Array | Uint8ArrayList> = [];
  let queuedBytes = 0;
  let ended =
    stream.readableEnded ||
    stream.status === 'closed' ||
    stream.status === 'aborted' ||
    stream.status === 'reset';
  let error: Error | undefined;
  let wake: (() => void) | undefined;
  const onMessage = (event: { data: Uint8Array | Uint8ArrayList }) => {
    queue.push(event.data);
    queuedBytes += event.data.byteLength;
    if (queuedBytes >= READ_HIGH_WATER_BYTES && stream.readStatus === 'readable') stream.pause();
    wake?.();
  };
  const onEnd = () => {
    ended = true;
    wake?.();
  };
  const onClose = (event: Event) => {
    error = (event as Event & { error?: Error }).error;
    onEnd();
  };
  stream.addEventListener('message', onMessage);
  stream.addEventListener('end', onEnd);
  stream.addEventListener('close', onClose);
  try {
    for (;;) {
      const chunk = queue.shift();
      if (chunk) {
        queuedBytes -= chunk.byteLength;
        if (queuedBytes < READ_HIGH_WATER_BYTES / 2 && stream.readStatus === 'paused') stream.resume();
        yield chunk;
        continue;
      }
      if (ended) {
        if (error) throw error;
        return;
      }
      await new Promise<void>((resolve) => {
        wake = resolve;
      });
      wake = undefined;
    }
  } finally {
    stream.removeEventListener('message', onMessage);
    stream.removeEventListener('end', onEnd);
    stream.removeEventListener('close', onClose);
  }
}

/** Frames of at most maxFrameBytes each, until the remote closes its end; a larger frame ends the stream with an error. */
export async function* readFrames(stream: Stream, maxFrameBytes: number): AsyncGenerator<Uint8Array> {
  for await (const frame of lp.decode(chunks(stream), { maxDataLength: maxFrameBytes })) {
    yield frame.subarray();
  }
}

/** Reads exactly one frame (request/response protocols); throws if the stream ends first. */
export async function readOneFrame(stream: Stream, maxFrameBytes: number, what: string): Promise<Uint8Array> {
  for await (const frame of readFrames(stream, maxFrameBytes)) return frame;
  throw new Error(`stream ended before the ${what} arrived`);
}
