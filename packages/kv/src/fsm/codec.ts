// Commands travel in Raft entries as msgpack (msgpackr). Decoding validates
// every field: entries come from disk and from the network, and a malformed
// one must turn into a clear error, never into a crash of apply() or a
// half-applied state.
import { Packr } from 'msgpackr';
import {
  type Command,
  KV_VERBS,
  type KvOp,
  type KvVerb,
  MAX_FLAGS,
  MAX_TXN_OPS,
  MAX_VALUE_BYTES,
  type SessionBehavior,
  type SessionSpec,
} from './types.js';

/** Bump when the encoding changes incompatibly; decode refuses other versions. */
export const COMMAND_FORMAT_VERSION = 1;

// Plain maps, no record extension: the bytes must not depend on packer state
// (which records a packer has seen), or two replicas could encode differently.
export const packr = new Packr({ useRecords: false, mapsAsObjects: true, moreTypes: false });

export class CommandDecodeError extends Error {
  constructor(message: string) {
    super(`malformed command: ${message}`);
    this.name = 'CommandDecodeError';
  }
}

const kvVerbSet: ReadonlySet<string> = new Set(KV_VERBS);

function opToWire(op: KvOp): Record<string, unknown> {
  return {
    verb: op.verb,
    key: op.key,
    value: op.value,
    flags: op.flags,
    index: op.index,
    session: op.session,
  };
}

export function encodeCommand(cmd: Command): Uint8Array {
  let body: Record<string, unknown>;
  switch (cmd.type) {
    case 'kv':
      body = { op: opToWire(cmd.op), nowMs: cmd.nowMs };
      break;
    case 'txn':
      body = { ops: cmd.ops.map(opToWire), nowMs: cmd.nowMs };
      break;
    case 'session-create':
      body = { session: { ...cmd.session }, nowMs: cmd.nowMs };
      break;
    case 'session-destroy':
    case 'session-renew':
      body = { id: cmd.id, nowMs: cmd.nowMs };
      break;
    case 'tombstone-reap':
      body = { upToIndex: cmd.upToIndex };
      break;
  }
  const raw = { v: COMMAND_FORMAT_VERSION, type: cmd.type, ...body };
  // Validate on the way out too: a proposer must never replicate what every replica would reject.
  commandFromRaw(raw);
  return packr.pack(raw);
}

export function decodeCommand(data: Uint8Array): Command {
  let raw: unknown;
  try {
    raw = packr.unpack(data);
  } catch (err) {
    throw new CommandDecodeError(`not msgpack (${(err as Error).message})`);
  }
  return commandFromRaw(raw);
}

function commandFromRaw(raw: unknown): Command {
  const m = asRecord(raw, 'command');
  if (m.v !== COMMAND_FORMAT_VERSION) {
    throw new CommandDecodeError(
      `format version ${String(m.v)} is not ${COMMAND_FORMAT_VERSION}; upgrade this node`,
    );
  }
  switch (m.type) {
    case 'kv':
      return { type: 'kv', op: decodeOp(m.op, 'op'), nowMs: uint(m.nowMs, 'nowMs') };
    case 'txn': {
      if (!Array.isArray(m.ops)) throw new CommandDecodeError('ops is not an array');
      if (m.ops.length === 0 || m.ops.length > MAX_TXN_OPS) {
        throw new CommandDecodeError(`a transaction needs 1..${MAX_TXN_OPS} operations, got ${m.ops.length}`);
      }
      return {
        type: 'txn',
        ops: m.ops.map((o, i) => decodeOp(o, `ops[${i}]`)),
        nowMs: uint(m.nowMs, 'nowMs'),
      };
    }
    case 'session-create':
      return { type: 'session-create', session: decodeSessionSpec(m.session), nowMs: uint(m.nowMs, 'nowMs') };
    case 'session-destroy':
    case 'session-renew':
      return { type: m.type, id: nonEmptyString(m.id, 'id'), nowMs: uint(m.nowMs, 'nowMs') };
    case 'tombstone-reap':
      return { type: 'tombstone-reap', upToIndex: uint(m.upToIndex, 'upToIndex') };
    default:
      throw new CommandDecodeError(`unknown command type ${JSON.stringify(m.type)}`);
  }
}

function decodeOp(raw: unknown, where: string): KvOp {
  const m = asRecord(raw, where);
  if (typeof m.verb !== 'string' || !kvVerbSet.has(m.verb)) {
    throw new CommandDecodeError(`${where}.verb ${JSON.stringify(m.verb)} is not a KV verb`);
  }
  const value = bytes(m.value, `${where}.value`);
  if (value.length > MAX_VALUE_BYTES) {
    throw new CommandDecodeError(`${where}.value is ${value.length} bytes, more than ${MAX_VALUE_BYTES}`);
  }
  return {
    verb: m.verb as KvVerb,
    key: string(m.key, `${where}.key`),
    value,
    flags: flags(m.flags, `${where}.flags`),
    index: uint(m.index, `${where}.index`),
    session: string(m.session, `${where}.session`),
  };
}

function decodeSessionSpec(raw: unknown): SessionSpec {
  const m = asRecord(raw, 'session');
  if (m.behavior !== 'release' && m.behavior !== 'delete') {
    throw new CommandDecodeError(
      `session.behavior ${JSON.stringify(m.behavior)} is not "release" or "delete"`,
    );
  }
  let nodeChecks: string[] | null = null;
  if (m.nodeChecks !== null && m.nodeChecks !== undefined) {
    if (!Array.isArray(m.nodeChecks)) throw new CommandDecodeError('session.nodeChecks is not an array');
    nodeChecks = m.nodeChecks.map((c, i) => string(c, `session.nodeChecks[${i}]`));
  }
  return {
    id: nonEmptyString(m.id, 'session.id'),
    name: string(m.name, 'session.name'),
    node: string(m.node, 'session.node'),
    lockDelayMs: uint(m.lockDelayMs, 'session.lockDelayMs'),
    behavior: m.behavior as SessionBehavior,
    ttlMs: uint(m.ttlMs, 'session.ttlMs'),
    ttl: string(m.ttl, 'session.ttl'),
    nodeChecks,
  };
}

function asRecord(raw: unknown, where: string): Record<string, unknown> {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw) || raw instanceof Uint8Array) {
    throw new CommandDecodeError(`${where} is not a map`);
  }
  return raw as Record<string, unknown>;
}

function string(raw: unknown, where: string): string {
  if (typeof raw !== 'string') throw new CommandDecodeError(`${where} is not a string`);
  return raw;
}

function nonEmptyString(raw: unknown, where: string): string {
  const s = string(raw, where);
  if (s === '') throw new CommandDecodeError(`${where} is empty`);
  return s;
}

function uint(raw: unknown, where: string): number {
  if (typeof raw !== 'number' || !Number.isSafeInteger(raw) || raw < 0) {
    throw new CommandDecodeError(`${where} is not a non-negative safe integer (${String(raw)})`);
  }
  return raw;
}

function flags(raw: unknown, where: string): bigint {
  let f: bigint;
  if (typeof raw === 'bigint') f = raw;
  else if (typeof raw === 'number' && Number.isSafeInteger(raw)) f = BigInt(raw);
  else throw new CommandDecodeError(`${where} is not an integer`);
  if (f < 0n || f > MAX_FLAGS) throw new CommandDecodeError(`${where} ${f} is outside uint64`);
  return f;
}

function bytes(raw: unknown, where: string): Uint8Array {
  if (!(raw instanceof Uint8Array)) throw new CommandDecodeError(`${where} is not binary`);
  // msgpackr hands out Buffers viewing its decode buffer: copy into a plain Uint8Array the entry owns.
  return new Uint8Array(raw);
}
