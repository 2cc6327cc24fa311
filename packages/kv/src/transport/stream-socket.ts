// A libp2p stream as a Node Duplex that node:http accepts as its socket, on
// both ends of the HTTP tunnel (api/http-tunnel.ts serves it, client/ dials
// it). node:http calls a few net.Socket methods beyond the Duplex API
// (setTimeout for keep-alive expiry, ref/unref, setKeepAlive, setNoDelay);
// they are implemented here with the same meaning.
//
// Back-pressure both ways: a write waits while the muxer holds more than
// WRITE_HIGH_WATER_BYTES for this stream; when the reader is behind, the
// stream is paused (yamux stops granting window) until Node reads again.
import { Duplex } from 'node:stream';
import type { Stream } from '@libp2p/interface';
import type { Uint8ArrayList } from 'uint8arraylist';
import { WRITE_HIGH_WATER_BYTES, waitForBuffered } from './frames.js';

export interface StreamSocketInfo {
  /** Shown where node:http shows a peer address (logs, req.socket.remoteAddress). */
  remoteAddress?: string;
  remotePort?: number;
}

export class StreamSocket extends Duplex {
  readonly remoteAddress: string | undefined;
  readonly remotePort: number | undefined;
  /** net.Socket's idle timeout in ms (0 = none), as node:http reads and sets it. */
  timeout = 0;
  private idleTimer: NodeJS.Timeout | undefined;
  private lastActivityMs = Date.now();
  private refed = true;

  constructor(
    readonly stream: Stream,
    info: StreamSocketInfo = {},
  ) {
    // Like the sockets of a node:http server: the two directions end separately.
    super({ allowHalfOpen: true });
    this.remoteAddress = info.remoteAddress;
    this.remotePort = info.remotePort;
    stream.addEventListener('message', (event) => {
      this.touch();
      const data = event.data as Uint8Array | Uint8ArrayList;
      const bytes = data instanceof Uint8Array ? data : data.subarray();
      if (!this.push(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength))) {
        if (stream.readStatus === 'readable') stream.pause();
      }
    });
    stream.addEventListener('remoteCloseWrite', () => this.push(null));
    stream.addEventListener('close', (event) => {
      const error = (event as Event & { error?: Error }).error;
      if (error) {
        this.destroy(error);
      } else {
        this.push(null);
        if (!this.writableFinished) this.destroy();
      }
    });
  }

  override _read(): void {
    if (this.stream.readStatus === 'paused') this.stream.resume();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.send(chunk, callback);
  }

  /** node:http corks a message's head and body: they leave as one muxer frame. */
  override _writev(
    chunks: Array<{ chunk: Buffer; encoding: BufferEncoding }>,
    callback: (error?: Error | null) => void,
  ): void {
    this.send(Buffer.concat(chunks.map((c) => c.chunk)), callback);
  }

  private send(data: Buffer, callback: (error?: Error | null) => void): void {
    this.touch();
    try {
      this.stream.send(data);
    } catch (err) {
      callback(err as Error);
      return;
    }
    if (this.stream.writeBufferLength <= WRITE_HIGH_WATER_BYTES) {
      callback();
      return;
    }
    waitForBuffered(this.stream, WRITE_HIGH_WATER_BYTES).then(() => callback(), callback);
  }

  override _final(callback: (error?: Error | null) => void): void {
    // Half-close: the peer reads to the end, and may still answer.
    this.stream.close().then(
      () => callback(),
      (err: Error) => callback(err),
    );
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    clearTimeout(this.idleTimer);
    this.idleTimer = undefined;
    if (this.stream.status === 'open' || this.stream.status === 'closing') {
      // Anything not sent cleanly by now is abandoned: reset so the peer does not wait.
      this.stream.abort(error ?? new Error('socket destroyed'));
    }
    callback(error);
  }

  /** net.Socket#setTimeout: emit 'timeout' after `ms` without reads or writes (0 = never). */
  setTimeout(ms: number, onTimeout?: () => void): this {
    this.timeout = ms;
    if (onTimeout) this.once('timeout', onTimeout);
    clearTimeout(this.idleTimer);
    this.idleTimer = undefined;
    if (ms > 0 && !this.destroyed) this.armIdleTimer(ms);
    return this;
  }

  private armIdleTimer(delayMs: number): void {
    this.idleTimer = setTimeout(() => {
      this.idleTimer = undefined;
      if (this.timeout <= 0 || this.destroyed) return;
      const idleMs = Date.now() - this.lastActivityMs;
      if (idleMs >= this.timeout) this.emit('timeout');
      else this.armIdleTimer(this.timeout - idleMs);
    }, delayMs);
    if (!this.refed) this.idleTimer.unref();
  }

  private touch(): void {
    this.lastActivityMs = Date.now();
  }

  /** net.Socket#ref / unref: only the idle timer holds the event loop here (the libp2p node owns the connection). */
  ref(): this {
    this.refed = true;
    this.idleTimer?.ref();
    return this;
  }

  unref(): this {
    this.refed = false;
    this.idleTimer?.unref();
    return this;
  }

  /** TCP options mean nothing on a multiplexed stream (yamux pings keep the connection alive). */
  setKeepAlive(_enable?: boolean, _initialDelayMs?: number): this {
    return this;
  }

  setNoDelay(_noDelay?: boolean): this {
    return this;
  }
}
