// Fewer, larger TCP writes for libp2p connections (profiled: socket writes
// were the largest single CPU cost of a loaded leader).
//
// 1. @libp2p/tcp writes every chunk it is handed with its own socket.write(),
//    and noise hands it two chunks per frame (2-byte length, ciphertext): with
//    yamux on top, a Raft batch cost two write(2) calls per frame, and every
//    frame of a turn (appends to one peer, heartbeats, window updates) its own
//    pair. coalescingTcp() corks each connection's socket for the rest of the
//    current tick on the first write, so everything written in one turn leaves
//    in one writev(2). Data waits for process.nextTick at most: no delay a
//    peer could see.
// 2. js-yamux answers every data frame with a window update, doubling the
//    frames on the wire. go-yamux (and the yamux spec's intent) sends one only
//    once half of the receive window is used; limitWindowUpdates() makes
//    js-yamux do the same. A sender never stalls: it can use the whole window,
//    and the update is sent by the time half of it is consumed.
// 3. @libp2p/utils' LengthPrefixedDecoder (noise uses it for every frame it
//    decrypts) learns that its buffer holds no further frame by catching the
//    RangeError its length decoder throws: once per received chunk, each
//    throw capturing a stack (~8 µs; profiled: ~2.5% of a loaded node's
//    CPU). decodeWithoutThrowing() answers "no length yet" for an empty buffer
//    without throwing; partial lengths still take the old path.

import type { Socket } from 'node:net';
import { StreamState, YamuxStream } from '@chainsafe/libp2p-yamux/stream';
import type {
  MultiaddrConnection,
  Transport,
  Upgrader,
  UpgraderOptions,
  UpgraderWithoutEncryptionOptions,
} from '@libp2p/interface';
import { LengthPrefixedDecoder } from '@libp2p/utils';

/** Wraps a TCP transport factory so that every connection it makes coalesces its writes per tick. */
export function coalescingTcp<C>(factory: (components: C) => Transport): (components: C) => Transport {
  return (components: C) => {
    const transport = factory(components);
    const dial = transport.dial.bind(transport);
    const createListener = transport.createListener.bind(transport);
    transport.dial = (ma, options) =>
      dial(ma, { ...options, upgrader: coalescingUpgrader(options.upgrader) });
    transport.createListener = (options) =>
      createListener({ ...options, upgrader: coalescingUpgrader(options.upgrader) });
    return transport;
  };
}

function coalescingUpgrader(upgrader: Upgrader): Upgrader {
  return {
    upgradeOutbound: ((
      maConn: MultiaddrConnection,
      opts: UpgraderOptions | UpgraderWithoutEncryptionOptions,
    ) =>
      upgrader.upgradeOutbound(corkPerTick(maConn), opts as UpgraderOptions)) as Upgrader['upgradeOutbound'],
    upgradeInbound: ((
      maConn: MultiaddrConnection,
      opts: UpgraderOptions | UpgraderWithoutEncryptionOptions,
    ) => upgrader.upgradeInbound(corkPerTick(maConn), opts as UpgraderOptions)) as Upgrader['upgradeInbound'],
    createInboundAbortSignal: (signal) => upgrader.createInboundAbortSignal(signal),
    getStreamMuxers: () => upgrader.getStreamMuxers(),
    getConnectionEncrypters: () => upgrader.getConnectionEncrypters(),
  };
}

interface SendingConnection {
  socket?: Socket;
  sendData(data: unknown): { sentBytes: number; canSendMore: boolean };
}

/** The connection's socket is corked from its first write in a tick until the tick ends. */
export function corkPerTick(maConn: MultiaddrConnection): MultiaddrConnection {
  const conn = maConn as unknown as SendingConnection;
  const socket = conn.socket;
  // Only a connection of @libp2p/tcp exposes its socket; anything else is left as it is.
  if (!socket || typeof socket.cork !== 'function' || typeof conn.sendData !== 'function') return maConn;
  const sendData = conn.sendData.bind(conn);
  let corked = false;
  const uncork = () => {
    corked = false;
    if (!socket.destroyed) socket.uncork();
  };
  conn.sendData = (data) => {
    if (!corked && !socket.destroyed) {
      corked = true;
      socket.cork();
      process.nextTick(uncork);
    }
    return sendData(data);
  };
  return maConn;
}

interface YamuxStreamInternals {
  state: StreamState;
  recvWindow: number;
  recvWindowCapacity: number;
}

let windowUpdatesLimited = false;

/** Makes js-yamux streams send a window update only once half of their receive window is used. Idempotent. */
export function limitWindowUpdates(): void {
  if (windowUpdatesLimited) return;
  windowUpdatesLimited = true;
  const proto = YamuxStream.prototype as unknown as { sendWindowUpdate(): void };
  const sendWindowUpdate = proto.sendWindowUpdate;
  if (typeof sendWindowUpdate !== 'function') return; // another yamux build: leave it alone
  proto.sendWindowUpdate = function (this: YamuxStreamInternals & { sendWindowUpdate(): void }) {
    // Opening/accepting (SYN/ACK flags) always goes through; so does resuming a
    // paused stream whose sender may be out of window.
    if (this.state === StreamState.Established && this.recvWindowCapacity > this.recvWindow / 2) return;
    sendWindowUpdate.call(this);
  };
}

interface DecoderInternals {
  lengthDecoder: (data: { byteLength: number }) => number;
  encodingLength: (length: number) => number;
}

const quietLengthDecoder = Symbol('weft.quietLengthDecoder');
let decodeWithoutThrowingInstalled = false;

/** Makes LengthPrefixedDecoder stop at an empty buffer without a thrown RangeError (item 3 above). Idempotent. */
export function decodeWithoutThrowing(): void {
  if (decodeWithoutThrowingInstalled) return;
  decodeWithoutThrowingInstalled = true;
  const proto = LengthPrefixedDecoder.prototype as unknown as {
    decode(this: DecoderInternals, buf: unknown): Generator<unknown>;
  };
  const decode = proto.decode;
  if (typeof decode !== 'function') return; // another @libp2p/utils build: leave it alone
  proto.decode = function (this: DecoderInternals & { [quietLengthDecoder]?: true }, buf: unknown) {
    // Length 0 makes decode() wait for more data (a frame of encodingLength(0) bytes is not there yet);
    // only sound when that is at least one byte, which every length prefix is.
    if (!this[quietLengthDecoder] && this.encodingLength(0) > 0) {
      const lengthDecoder = this.lengthDecoder;
      this.lengthDecoder = (data) => (data.byteLength === 0 ? 0 : lengthDecoder(data));
      this[quietLengthDecoder] = true;
    }
    return decode.call(this, buf);
  };
}
