// Encoding of Raft messages and the transport's own control frames with
// protobufjs (schema: raft.proto, embedded as schema.ts).
//
// Every frame is an Envelope {version, payload, crc32}. Decoding is strict: a
// truncated, corrupted or semantically impossible frame throws WireFormatError
// naming the cause, and never yields a partly filled message. Encoding runs the
// same validation, so a node cannot put a message on the wire that its peers
// would reject.
import { crc32 } from 'node:zlib';
import protobuf from 'protobufjs';
import {
  type ConfState,
  type Entry,
  EntryType,
  type Message,
  MessageType,
  type Snapshot,
} from '../raft/types.js';
import { RAFT_PROTO_SCHEMA } from './schema.js';

/** A frame from the network (or a message handed to the encoder) that is not a valid Raft/transport frame. */
export class WireFormatError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'WireFormatError';
  }
}

export const WIRE_VERSION = 1;
/** Node ids are short printable strings; anything longer on the wire is garbage or abuse. */
export const MAX_NODE_ID_LENGTH = 256;

/**
 * Message types that only ever travel inside one node (timers and transport
 * reports). A peer sending one is faulty or hostile: a remote Hup would start
 * elections at will, so they are refused in both directions.
 */
export const LOCAL_MESSAGE_TYPES: ReadonlySet<MessageType> = new Set([
  MessageType.Hup,
  MessageType.Beat,
  MessageType.Unreachable,
  MessageType.SnapStatus,
  MessageType.CheckQuorum,
]);

const root = protobuf.parse(RAFT_PROTO_SCHEMA, { keepCase: false }).root;
const types = {
  Message: root.lookupType('weft.raft.Message'),
  Envelope: root.lookupType('weft.raft.Envelope'),
  Hello: root.lookupType('weft.raft.Hello'),
  HelloReply: root.lookupType('weft.raft.HelloReply'),
  SnapshotHeader: root.lookupType('weft.raft.SnapshotHeader'),
  SnapshotAck: root.lookupType('weft.raft.SnapshotAck'),
  RpcRequest: root.lookupType('weft.raft.RpcRequest'),
  RpcResponse: root.lookupType('weft.raft.RpcResponse'),
};
type FrameKind = keyof typeof types;

// protobufjs decodes into objects whose absent fields fall back to prototype defaults.
type Decoded = Record<string, unknown>;

// ---------------------------------------------------------------- envelope

function seal(kind: FrameKind, value: Decoded): Uint8Array {
  // Plain objects encode directly (fromObject would only re-copy what validation already checked).
  const payload = types[kind].encode(value).finish();
  return encodeEnvelope(WIRE_VERSION, payload, crc32(payload));
}

/**
 * The Envelope's protobuf bytes, written directly: field 1 (varint version),
 * field 2 (length-delimited payload), field 3 (fixed32 CRC), exactly what
 * protobufjs writes for it (a test compares them). protobufjs took ~6 µs per
 * 2 KiB append to build and copy the envelope, one copy of the payload ~0.3 µs.
 */
export function encodeEnvelope(version: number, payload: Uint8Array, crc: number): Uint8Array {
  // proto3 leaves out a zero version and an empty payload; the CRC field is `optional`: always there.
  const versionBytes = version === 0 ? 0 : 1 + varintBytes(version);
  const payloadBytes = payload.length === 0 ? 0 : 1 + varintBytes(payload.length) + payload.length;
  const out = Buffer.allocUnsafe(versionBytes + payloadBytes + 5);
  let at = 0;
  if (versionBytes > 0) {
    out[at++] = 0x08; // field 1, varint
    at = writeVarint(out, at, version);
  }
  if (payloadBytes > 0) {
    out[at++] = 0x12; // field 2, length-delimited
    at = writeVarint(out, at, payload.length);
    out.set(payload, at);
    at += payload.length;
  }
  out[at++] = 0x1d; // field 3, fixed32
  out.writeUInt32LE(crc >>> 0, at);
  return out;
}

function varintBytes(n: number): number {
  let bytes = 1;
  while (n >= 0x80) {
    n = Math.floor(n / 0x80);
    bytes++;
  }
  return bytes;
}

function writeVarint(out: Buffer, at: number, n: number): number {
  while (n >= 0x80) {
    out[at++] = (n % 0x80) | 0x80;
    n = Math.floor(n / 0x80);
  }
  out[at++] = n;
  return at;
}

function decodeRaw(kind: FrameKind, bytes: Uint8Array): Decoded {
  try {
    return types[kind].decode(bytes) as unknown as Decoded;
  } catch (err) {
    throw new WireFormatError(`malformed ${kind} (${(err as Error).message})`, { cause: err });
  }
}

function unseal(kind: FrameKind, frame: Uint8Array): Decoded {
  if (!(frame instanceof Uint8Array)) throw new WireFormatError(`${kind} frame is not a byte array`);
  if (frame.byteLength === 0) throw new WireFormatError(`empty ${kind} frame`);
  const envelope = decodeRaw('Envelope', frame);
  if (envelope.version !== WIRE_VERSION) {
    throw new WireFormatError(
      `${kind} frame has wire version ${String(envelope.version)}, this node speaks ${WIRE_VERSION} (mixed Weft versions?)`,
    );
  }
  const payload = bytesField(envelope.payload, 'envelope.payload');
  if (!Object.hasOwn(envelope, 'crc32')) throw new WireFormatError(`${kind} frame truncated (no checksum)`);
  const expected = envelope.crc32 as number;
  const actual = crc32(payload);
  if (expected !== actual) {
    throw new WireFormatError(
      `${kind} frame checksum mismatch (got ${hex32(actual)}, frame says ${hex32(expected)}): corrupted or truncated`,
    );
  }
  return decodeRaw(kind, payload);
}

function hex32(n: number): string {
  return `0x${(n >>> 0).toString(16).padStart(8, '0')}`;
}

// ---------------------------------------------------------------- field checks

function fail(field: string, problem: string): never {
  throw new WireFormatError(`invalid Raft message: ${field} ${problem}`);
}

/** uint64 fields arrive as numbers or Long objects; only exact non-negative safe integers pass. */
function u64(value: unknown, field: string): number {
  if (typeof value === 'number') {
    if (!Number.isSafeInteger(value) || value < 0)
      fail(field, `must be a non-negative safe integer, got ${value}`);
    return value;
  }
  if (value !== null && typeof value === 'object' && 'low' in value && 'high' in value) {
    const low = (value as { low: number }).low >>> 0;
    const high = (value as { high: number }).high >>> 0;
    if (high > 0x1fffff) fail(field, 'exceeds 2^53-1 (not representable exactly in JavaScript)');
    return high * 0x1_0000_0000 + low;
  }
  return fail(field, `must be an integer, got ${typeof value}`);
}

function bytesField(value: unknown, field: string): Uint8Array {
  if (value instanceof Uint8Array) {
    // A plain view (not a Buffer) so decoded messages compare equal to what was sent.
    return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  }
  if (Array.isArray(value) && value.length === 0) return new Uint8Array(0); // protobufjs's default
  return fail(field, 'must be bytes');
}

function stringField(value: unknown, field: string, maxLength: number): string {
  if (typeof value !== 'string') fail(field, 'must be a string');
  if (value.length > maxLength) fail(field, `is ${value.length} characters long (at most ${maxLength})`);
  return value;
}

function nodeId(value: unknown, field: string): string {
  const id = stringField(value, field, MAX_NODE_ID_LENGTH);
  if (id.length === 0) fail(field, 'must name a node (empty)');
  return id;
}

function nodeIdList(value: unknown, field: string): string[] {
  if (!Array.isArray(value)) fail(field, 'must be a list of node ids');
  const ids = value.map((v, i) => nodeId(v, `${field}[${i}]`));
  if (new Set(ids).size !== ids.length) fail(field, `lists a node twice (${ids.join(', ')})`);
  return ids;
}

function enumField<T extends number>(value: unknown, field: string, names: Record<number, string>): T {
  if (typeof value !== 'number' || !Number.isInteger(value) || names[value] === undefined) {
    fail(field, `has unknown value ${String(value)}`);
  }
  return value as T;
}

function boolField(value: unknown, field: string): boolean {
  if (typeof value !== 'boolean') fail(field, 'must be a boolean');
  return value;
}

function messageField(value: unknown, field: string): Decoded {
  if (value === null || typeof value !== 'object') fail(field, 'is missing');
  return value as Decoded;
}

// ---------------------------------------------------------------- Raft message

function readEntry(raw: Decoded, field: string): Entry {
  return {
    term: u64(raw.term, `${field}.term`),
    index: u64(raw.index, `${field}.index`),
    type: enumField<EntryType>(raw.type, `${field}.type`, EntryType),
    data: bytesField(raw.data, `${field}.data`),
  };
}

function readConfState(raw: Decoded, field: string): ConfState {
  return {
    voters: nodeIdList(raw.voters, `${field}.voters`),
    learners: nodeIdList(raw.learners, `${field}.learners`),
    votersOutgoing: nodeIdList(raw.votersOutgoing, `${field}.votersOutgoing`),
    learnersNext: nodeIdList(raw.learnersNext, `${field}.learnersNext`),
    autoLeave: boolField(raw.autoLeave, `${field}.autoLeave`),
  };
}

function readSnapshot(raw: Decoded): Snapshot {
  const metadata = messageField(raw.metadata, 'snapshot.metadata');
  return {
    metadata: {
      index: u64(metadata.index, 'snapshot.metadata.index'),
      term: u64(metadata.term, 'snapshot.metadata.term'),
      confState: readConfState(
        messageField(metadata.confState, 'snapshot.metadata.confState'),
        'snapshot.metadata.confState',
      ),
    },
    data: bytesField(raw.data, 'snapshot.data'),
  };
}

/** Reads and checks a message given as a loosely typed object (decoded, or handed to the encoder). */
function readMessage(raw: Decoded): Message {
  const type = enumField<MessageType>(raw.type, 'type', MessageType);
  if (LOCAL_MESSAGE_TYPES.has(type)) {
    fail('type', `${MessageType[type]} is local to a node and never valid on the wire`);
  }
  if (!Array.isArray(raw.entries)) fail('entries', 'must be a list');
  const message: Message = {
    type,
    from: nodeId(raw.from, 'from'),
    to: nodeId(raw.to, 'to'),
    term: u64(raw.term, 'term'),
    logTerm: u64(raw.logTerm, 'logTerm'),
    index: u64(raw.index, 'index'),
    entries: (raw.entries as unknown[]).map((e, i) =>
      readEntry(messageField(e, `entries[${i}]`), `entries[${i}]`),
    ),
    commit: u64(raw.commit, 'commit'),
    reject: boolField(raw.reject, 'reject'),
    rejectHint: u64(raw.rejectHint, 'rejectHint'),
    context: bytesField(raw.context, 'context'),
  };
  const hasSnapshot = raw.snapshot !== undefined && raw.snapshot !== null;
  if (type === MessageType.Snap) {
    if (!hasSnapshot) fail('snapshot', 'is missing from a Snap message');
    message.snapshot = readSnapshot(raw.snapshot as Decoded);
  } else if (hasSnapshot) {
    fail('snapshot', `is only valid in Snap messages, not ${MessageType[type]}`);
  }
  if (type === MessageType.App) {
    // AppendEntries carries a contiguous run right after `index`; anything else would corrupt the log.
    message.entries.forEach((entry, i) => {
      if (entry.index !== message.index + 1 + i) {
        fail(
          `entries[${i}].index`,
          `is ${entry.index}, expected ${message.index + 1 + i} (entries must follow index)`,
        );
      }
    });
  }
  return message;
}

/** Throws WireFormatError if `message` could not cross the wire intact; returns a normalized copy. */
export function validateMessage(message: Message): Message {
  return readMessage(message as unknown as Decoded);
}

function messageToWire(message: Message): Decoded {
  const m = validateMessage(message);
  return {
    ...m,
    snapshot: m.snapshot && {
      metadata: {
        index: m.snapshot.metadata.index,
        term: m.snapshot.metadata.term,
        confState: m.snapshot.metadata.confState,
      },
      data: m.snapshot.data,
    },
  };
}

export function encodeMessage(message: Message): Uint8Array {
  return seal('Message', messageToWire(message));
}

export function decodeMessage(frame: Uint8Array): Message {
  return readMessage(unseal('Message', frame));
}

// ---------------------------------------------------------------- control frames

/** A member as one node tells another in a hello (peer id required: that is how members are found). */
export interface HelloMember {
  nodeId: string;
  peerId: string;
  multiaddrs: string[];
}

export interface Hello {
  /** Cluster name: nodes of different clusters refuse each other. */
  cluster: string;
  nodeId: string;
  /** The sender's libp2p peer id (must equal the authenticated connection's). */
  peerId: string;
  multiaddrs: string[];
  /** The sender's address book. */
  members: HelloMember[];
}

/** Bounds on what one hello may carry (an address book is small; anything larger is garbage). */
const MAX_HELLO_MEMBERS = 1024;
const MAX_MULTIADDRS = 64;
const MAX_MULTIADDR_LENGTH = 1024;

function multiaddrList(value: unknown, field: string): string[] {
  if (!Array.isArray(value)) fail(field, 'must be a list');
  if (value.length > MAX_MULTIADDRS) fail(field, `has ${value.length} addresses (at most ${MAX_MULTIADDRS})`);
  return value.map((a, i) => stringField(a, `${field}[${i}]`, MAX_MULTIADDR_LENGTH));
}

function readHello(raw: Decoded, field: string): Hello {
  if (!Array.isArray(raw.members)) fail(`${field}.members`, 'must be a list');
  if (raw.members.length > MAX_HELLO_MEMBERS)
    fail(`${field}.members`, `has more than ${MAX_HELLO_MEMBERS} entries`);
  return {
    cluster: stringField(raw.cluster, `${field}.cluster`, MAX_NODE_ID_LENGTH),
    nodeId: nodeId(raw.nodeId, `${field}.nodeId`),
    peerId: nodeId(raw.peerId, `${field}.peerId`),
    multiaddrs: multiaddrList(raw.multiaddrs, `${field}.multiaddrs`),
    members: (raw.members as unknown[]).map((m, i) => {
      const member = messageField(m, `${field}.members[${i}]`);
      return {
        nodeId: nodeId(member.nodeId, `${field}.members[${i}].nodeId`),
        peerId: nodeId(member.peerId, `${field}.members[${i}].peerId`),
        multiaddrs: multiaddrList(member.multiaddrs, `${field}.members[${i}].multiaddrs`),
      };
    }),
  };
}

export function encodeHello(hello: Hello): Uint8Array {
  return seal('Hello', readHello(hello as unknown as Decoded, 'hello') as unknown as Decoded);
}

export function decodeHello(frame: Uint8Array): Hello {
  return readHello(unseal('Hello', frame), 'hello');
}

export type HelloReply = { ok: true; hello: Hello } | { ok: false; error: string };

export function encodeHelloReply(reply: HelloReply): Uint8Array {
  return seal('HelloReply', reply.ok ? { ok: true, hello: reply.hello } : { ok: false, error: reply.error });
}

export function decodeHelloReply(frame: Uint8Array): HelloReply {
  const raw = unseal('HelloReply', frame);
  if (boolField(raw.ok, 'helloReply.ok')) {
    return { ok: true, hello: readHello(messageField(raw.hello, 'helloReply.hello'), 'helloReply.hello') };
  }
  return { ok: false, error: stringField(raw.error, 'helloReply.error', 4096) };
}

export interface SnapshotHeader {
  /** The Snap message with snapshot.data empty; the data follows in chunks. */
  message: Message;
  totalBytes: number;
  dataCrc32: number;
}

export function encodeSnapshotHeader(header: SnapshotHeader): Uint8Array {
  return seal('SnapshotHeader', {
    message: messageToWire(header.message),
    totalBytes: header.totalBytes,
    dataCrc32: header.dataCrc32,
  });
}

export function decodeSnapshotHeader(frame: Uint8Array): SnapshotHeader {
  const raw = unseal('SnapshotHeader', frame);
  const message = readMessage(messageField(raw.message, 'snapshotHeader.message'));
  if (message.type !== MessageType.Snap)
    fail('snapshotHeader.message.type', `must be Snap, got ${MessageType[message.type]}`);
  if (message.snapshot!.data.byteLength !== 0)
    fail('snapshotHeader.message.snapshot.data', 'must be empty (data follows in chunks)');
  if (!Object.hasOwn(raw, 'dataCrc32')) fail('snapshotHeader.dataCrc32', 'is missing');
  return {
    message,
    totalBytes: u64(raw.totalBytes, 'snapshotHeader.totalBytes'),
    dataCrc32: raw.dataCrc32 as number,
  };
}

/** Outcome of a transfer (snapshot, RPC) as reported by the receiving side. */
export type Outcome = { ok: true } | { ok: false; error: string };

export function encodeSnapshotAck(ack: Outcome): Uint8Array {
  return seal('SnapshotAck', ack.ok ? { ok: true } : { ok: false, error: ack.error });
}

export function decodeSnapshotAck(frame: Uint8Array): Outcome {
  const raw = unseal('SnapshotAck', frame);
  if (boolField(raw.ok, 'snapshotAck.ok')) return { ok: true };
  return { ok: false, error: stringField(raw.error, 'snapshotAck.error', 4096) };
}

export interface RpcRequest {
  protocol: string;
  payload: Uint8Array;
}

export function encodeRpcRequest(request: RpcRequest): Uint8Array {
  return seal('RpcRequest', { protocol: request.protocol, payload: request.payload });
}

export function decodeRpcRequest(frame: Uint8Array): RpcRequest {
  const raw = unseal('RpcRequest', frame);
  const protocol = stringField(raw.protocol, 'rpcRequest.protocol', 256);
  if (protocol.length === 0) fail('rpcRequest.protocol', 'is empty');
  return { protocol, payload: bytesField(raw.payload, 'rpcRequest.payload') };
}

export type RpcFailureCode = 'no-handler' | 'remote-error';
export type RpcResponse =
  | { ok: true; payload: Uint8Array }
  | { ok: false; error: string; code: RpcFailureCode };

export function encodeRpcResponse(response: RpcResponse): Uint8Array {
  return seal(
    'RpcResponse',
    response.ok
      ? { ok: true, payload: response.payload }
      : { ok: false, error: response.error, code: response.code },
  );
}

export function decodeRpcResponse(frame: Uint8Array): RpcResponse {
  const raw = unseal('RpcResponse', frame);
  if (boolField(raw.ok, 'rpcResponse.ok'))
    return { ok: true, payload: bytesField(raw.payload, 'rpcResponse.payload') };
  const code = stringField(raw.code, 'rpcResponse.code', 64);
  if (code !== 'no-handler' && code !== 'remote-error')
    fail('rpcResponse.code', `has unknown value "${code}"`);
  return { ok: false, error: stringField(raw.error, 'rpcResponse.error', 4096), code };
}

/** CRC-32 used by envelopes and snapshot data (zlib's, so any language can check it). */
export function checksum(data: Uint8Array, previous?: number): number {
  return crc32(data, previous);
}
