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
  return encodeMessageDirect(message) ?? seal('Message', messageToWire(message));
}

export function decodeMessage(frame: Uint8Array): Message {
  const raw = decodeMessageDirect(frame);
  return readMessage(raw ?? unseal('Message', frame));
}

// ---------------------------------------------------------------- Raft message, direct
//
// Every Raft message crosses this codec once per peer (a leader encodes each
// append twice with two followers). protobufjs plus the validating copy cost
// ~30 µs per 10-entry append to encode and ~15 µs to decode; writing and
// reading the protobuf bytes directly costs a fraction of that. Byte for byte
// what protobufjs writes (a test compares them), so either side may use
// either path. Anything the direct path does not handle plainly (a snapshot,
// a field that would fail validation, an unexpected wire layout) goes the
// protobufjs way, which gives the precise error: the direct path only ever
// answers for messages the slow path would accept identically.

const NO_BYTES = new Uint8Array(0);

function plainU64(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

function plainNodeId(v: unknown): v is string {
  return typeof v === 'string' && v.length > 0 && v.length <= MAX_NODE_ID_LENGTH;
}

// proto3 without `optional`: protobufjs leaves out zero numbers, false, and
// empty strings and bytes; so does this writer. Every field number here is
// below 16, so every tag is one byte.

/** A varint field's size, 0 when it is left out. */
function fieldVarint(n: number): number {
  return n === 0 ? 0 : 1 + varintBytes(n);
}

/** A length-delimited field's size, 0 when it is empty (left out). */
function fieldBytes(length: number): number {
  return length === 0 ? 0 : 1 + varintBytes(length) + length;
}

function entryBytes(e: Entry): number {
  return fieldVarint(e.term) + fieldVarint(e.index) + fieldVarint(e.type) + fieldBytes(e.data.length);
}

function putVarint(out: Buffer, at: number, tag: number, n: number): number {
  if (n === 0) return at;
  out[at++] = tag;
  return writeVarint(out, at, n);
}

function putBytes(out: Buffer, at: number, tag: number, bytes: Uint8Array): number {
  if (bytes.length === 0) return at;
  out[at++] = tag;
  at = writeVarint(out, at, bytes.length);
  out.set(bytes, at);
  return at + bytes.length;
}

function putString(out: Buffer, at: number, tag: number, s: string, byteLength: number): number {
  out[at++] = tag;
  at = writeVarint(out, at, byteLength);
  return at + out.write(s, at, byteLength, 'utf8');
}

/** The encoded frame, or undefined when the message needs the protobufjs path (snapshot, invalid field). */
function encodeMessageDirect(m: Message): Uint8Array | undefined {
  const type = m.type;
  if (
    m.snapshot !== undefined ||
    typeof type !== 'number' ||
    MessageType[type] === undefined ||
    type === MessageType.Snap ||
    LOCAL_MESSAGE_TYPES.has(type) ||
    !plainNodeId(m.from) ||
    !plainNodeId(m.to) ||
    !plainU64(m.term) ||
    !plainU64(m.logTerm) ||
    !plainU64(m.index) ||
    !plainU64(m.commit) ||
    !plainU64(m.rejectHint) ||
    typeof m.reject !== 'boolean' ||
    !(m.context instanceof Uint8Array) ||
    !Array.isArray(m.entries)
  )
    return undefined;
  const fromBytes = Buffer.byteLength(m.from);
  const toBytes = Buffer.byteLength(m.to);
  let size =
    fieldVarint(type) +
    fieldBytes(fromBytes) +
    fieldBytes(toBytes) +
    fieldVarint(m.term) +
    fieldVarint(m.logTerm) +
    fieldVarint(m.index) +
    fieldVarint(m.commit) +
    (m.reject ? 2 : 0) +
    fieldVarint(m.rejectHint) +
    fieldBytes(m.context.length);
  const entries = m.entries;
  for (let i = 0; i < entries.length; i++) {
    const e = entries[i]!;
    if (
      e === null ||
      typeof e !== 'object' ||
      !plainU64(e.term) ||
      !plainU64(e.index) ||
      typeof e.type !== 'number' ||
      EntryType[e.type] === undefined ||
      !(e.data instanceof Uint8Array) ||
      (type === MessageType.App && e.index !== m.index + 1 + i)
    )
      return undefined;
    // An entry is written even when all its fields are defaults (tag and length 0).
    const bytes = entryBytes(e);
    size += 1 + varintBytes(bytes) + bytes;
  }
  // Envelope: version (2 bytes), payload (tag, length, bytes; left out when empty), CRC (5 bytes).
  const payloadAt = size === 0 ? 2 : 3 + varintBytes(size);
  const out = Buffer.allocUnsafe(payloadAt + size + 5);
  out[0] = 0x08;
  out[1] = WIRE_VERSION;
  if (size > 0) {
    out[2] = 0x12;
    writeVarint(out, 3, size);
  }
  let at = putVarint(out, payloadAt, 0x08, type);
  at = putString(out, at, 0x12, m.from, fromBytes);
  at = putString(out, at, 0x1a, m.to, toBytes);
  at = putVarint(out, at, 0x20, m.term);
  at = putVarint(out, at, 0x28, m.logTerm);
  at = putVarint(out, at, 0x30, m.index);
  for (const e of entries) {
    out[at++] = 0x3a;
    at = writeVarint(out, at, entryBytes(e));
    at = putVarint(out, at, 0x08, e.term);
    at = putVarint(out, at, 0x10, e.index);
    at = putVarint(out, at, 0x18, e.type);
    at = putBytes(out, at, 0x22, e.data);
  }
  at = putVarint(out, at, 0x40, m.commit);
  if (m.reject) {
    out[at++] = 0x48;
    out[at++] = 1;
  }
  at = putVarint(out, at, 0x50, m.rejectHint);
  at = putBytes(out, at, 0x62, m.context);
  out[at++] = 0x1d;
  out.writeUInt32LE(crc32(out.subarray(payloadAt, payloadAt + size)) >>> 0, at);
  return out;
}

/** Thrown inside the direct decoder to hand the frame to the protobufjs path. */
const NOT_PLAIN = Symbol('not plain');

class DirectReader {
  at: number;
  constructor(
    readonly buf: Uint8Array,
    start: number,
    readonly end: number,
  ) {
    this.at = start;
  }
  varint(): number {
    let n = 0;
    let scale = 1;
    for (let shift = 0; shift < 56; shift += 7) {
      if (this.at >= this.end) throw NOT_PLAIN;
      const b = this.buf[this.at++]!;
      n += (b & 0x7f) * scale;
      if (b < 0x80) {
        if (!Number.isSafeInteger(n)) throw NOT_PLAIN;
        return n;
      }
      scale *= 0x80;
    }
    throw NOT_PLAIN;
  }
  bytes(): Uint8Array {
    const length = this.varint();
    if (length > this.end - this.at) throw NOT_PLAIN;
    const out = this.buf.subarray(this.at, this.at + length);
    this.at += length;
    return out;
  }
  string(): string {
    const b = this.bytes();
    let ascii = true;
    for (let i = 0; i < b.length && ascii; i++) ascii = b[i]! < 0x80;
    return ascii
      ? String.fromCharCode.apply(null, b as unknown as number[])
      : Buffer.from(b).toString('utf8');
  }
  /** Skips a field the decoder does not know, as protobufjs does (groups are left to it). */
  skip(wireType: number): void {
    if (wireType === 0) this.varint();
    else if (wireType === 1) this.at += 8;
    else if (wireType === 2) this.bytes();
    else if (wireType === 5) this.at += 4;
    else throw NOT_PLAIN;
    if (this.at > this.end) throw NOT_PLAIN;
  }
}

function readDirectEntry(r: DirectReader): Decoded {
  const entry: Decoded = { term: 0, index: 0, type: 0, data: NO_BYTES };
  while (r.at < r.end) {
    const tag = r.varint();
    const field = Math.floor(tag / 8);
    const wire = tag & 7;
    if (field === 1 && wire === 0) entry.term = r.varint();
    else if (field === 2 && wire === 0) entry.index = r.varint();
    else if (field === 3 && wire === 0) entry.type = r.varint();
    else if (field === 4 && wire === 2) entry.data = r.bytes();
    else if (field >= 1 && field <= 4) throw NOT_PLAIN;
    else r.skip(wire);
  }
  return entry;
}

/**
 * The message's fields as protobufjs would decode them (absent fields at
 * their defaults), or undefined for anything else than a well-formed,
 * correctly checksummed frame of plain fields: that goes the protobufjs way.
 */
function decodeMessageDirect(frame: Uint8Array): Decoded | undefined {
  if (!(frame instanceof Uint8Array)) return undefined;
  // Views of a plain Uint8Array: Buffer's subarray() costs several times more.
  const bytes = new Uint8Array(frame.buffer, frame.byteOffset, frame.byteLength);
  try {
    const env = new DirectReader(bytes, 0, bytes.length);
    let version = 0;
    let payload: Uint8Array | undefined;
    let crc: number | undefined;
    while (env.at < env.end) {
      const tag = env.varint();
      if (tag === 0x08) version = env.varint();
      else if (tag === 0x12) payload = env.bytes();
      else if (tag === 0x1d) {
        if (env.at + 4 > env.end) return undefined;
        crc =
          (bytes[env.at]! | (bytes[env.at + 1]! << 8) | (bytes[env.at + 2]! << 16)) +
          bytes[env.at + 3]! * 0x1000000;
        env.at += 4;
      } else return undefined;
    }
    if (version !== WIRE_VERSION || payload === undefined || crc === undefined || crc32(payload) !== crc)
      return undefined;
    const r = new DirectReader(payload, 0, payload.length);
    const raw: Decoded = {
      type: 0,
      from: '',
      to: '',
      term: 0,
      logTerm: 0,
      index: 0,
      entries: [],
      commit: 0,
      reject: false,
      rejectHint: 0,
      context: NO_BYTES,
    };
    const entries = raw.entries as Decoded[];
    while (r.at < r.end) {
      const tag = r.varint();
      switch (tag) {
        case 0x08:
          raw.type = r.varint();
          break;
        case 0x12:
          raw.from = r.string();
          break;
        case 0x1a:
          raw.to = r.string();
          break;
        case 0x20:
          raw.term = r.varint();
          break;
        case 0x28:
          raw.logTerm = r.varint();
          break;
        case 0x30:
          raw.index = r.varint();
          break;
        case 0x3a: {
          const length = r.varint();
          if (length > r.end - r.at) return undefined;
          entries.push(readDirectEntry(new DirectReader(payload, r.at, r.at + length)));
          r.at += length;
          break;
        }
        case 0x40:
          raw.commit = r.varint();
          break;
        case 0x48: {
          const b = r.varint();
          if (b > 1) return undefined;
          raw.reject = b === 1;
          break;
        }
        case 0x50:
          raw.rejectHint = r.varint();
          break;
        case 0x62:
          raw.context = r.bytes();
          break;
        default: {
          const field = Math.floor(tag / 8);
          // A snapshot, or a known field with an unexpected wire type.
          if (field >= 1 && field <= 12) return undefined;
          r.skip(tag & 7);
        }
      }
    }
    // protobufjs reads enums as int32: a larger varint would wrap, not fail.
    if ((raw.type as number) > 0x7fffffff || entries.some((e) => (e.type as number) > 0x7fffffff))
      return undefined;
    return raw;
  } catch (err) {
    if (err === NOT_PLAIN) return undefined;
    throw err;
  }
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
