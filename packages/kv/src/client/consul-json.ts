// Decoding the Consul HTTP API's JSON into the embedding API's records, and
// encoding transaction operations for /v1/txn. Numbers go through the
// server's own JSON codec, which keeps uint64 Flags exact (JSON.parse would
// round them to doubles).
import {
  decodeStdBase64,
  goJson,
  JsonNumber,
  type JsonValue,
  parseGoDurationMs,
  parseJson,
} from '../api/http-codec.js';
import type { MemberInfo } from '../api/node.js';
import type { DirEntry, KvOp, SessionBehavior, SessionRecord, TxnOpError } from '../fsm/types.js';

/** A session as the HTTP API describes it (the reaper's bookkeeping fields are not sent). */
export type SessionInfo = Omit<SessionRecord, 'renewIndex' | 'renewedAtMs'>;

/** An operation of KvClient.txn / KvNode.txn: unset fields take their zero value. */
export type TxnOpInput = Partial<KvOp> & Pick<KvOp, 'verb' | 'key'>;

/** The server answered something that is not the Consul API's shape. */
export class ResponseFormatError extends Error {
  constructor(what: string, why: string) {
    super(`malformed answer to ${what}: ${why} (is the server a weft-kv member of the same version?)`);
    this.name = 'ResponseFormatError';
  }
}

type JsonObject = { [key: string]: JsonValue };

export function parseBody(what: string, text: string): JsonValue {
  try {
    return parseJson(text);
  } catch (err) {
    throw new ResponseFormatError(what, `not JSON (${(err as Error).message})`);
  }
}

function asObject(what: string, v: JsonValue): JsonObject {
  if (v === null || typeof v !== 'object' || Array.isArray(v) || v instanceof JsonNumber) {
    throw new ResponseFormatError(what, `expected an object, got ${JSON.stringify(v)}`);
  }
  return v;
}

export function asArray(what: string, v: JsonValue): JsonValue[] {
  if (!Array.isArray(v)) throw new ResponseFormatError(what, 'expected an array');
  return v;
}

function uint(what: string, obj: JsonObject, name: string): bigint {
  const v = obj[name];
  if (!(v instanceof JsonNumber) || !/^\d+$/.test(v.text)) {
    throw new ResponseFormatError(what, `${name} is not an unsigned integer`);
  }
  return BigInt(v.text);
}

function index(what: string, obj: JsonObject, name: string): number {
  const v = uint(what, obj, name);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new ResponseFormatError(what, `${name} ${v} is too large`);
  return Number(v);
}

function str(what: string, obj: JsonObject, name: string): string {
  const v = obj[name];
  if (v === undefined || v === null) return '';
  if (typeof v !== 'string') throw new ResponseFormatError(what, `${name} is not a string`);
  return v;
}

export function dirEntryFromJson(what: string, v: JsonValue): DirEntry {
  const o = asObject(what, v);
  const rawValue = o.Value;
  let value: Uint8Array = new Uint8Array(0);
  if (typeof rawValue === 'string') {
    const decoded = decodeStdBase64(rawValue);
    if (!(decoded instanceof Uint8Array)) throw new ResponseFormatError(what, 'Value is not base64');
    value = decoded;
  } else if (rawValue !== null && rawValue !== undefined) {
    throw new ResponseFormatError(what, 'Value is not a base64 string');
  }
  return {
    key: str(what, o, 'Key'),
    value,
    flags: uint(what, o, 'Flags'),
    createIndex: index(what, o, 'CreateIndex'),
    modifyIndex: index(what, o, 'ModifyIndex'),
    lockIndex: index(what, o, 'LockIndex'),
    session: str(what, o, 'Session'),
  };
}

export function sessionFromJson(what: string, v: JsonValue): SessionInfo {
  const o = asObject(what, v);
  const behavior = str(what, o, 'Behavior') || 'release';
  if (behavior !== 'release' && behavior !== 'delete') {
    throw new ResponseFormatError(what, `unknown Behavior ${JSON.stringify(behavior)}`);
  }
  const checks = o.NodeChecks;
  const ttl = str(what, o, 'TTL');
  let ttlMs = 0;
  if (ttl !== '') {
    try {
      ttlMs = Math.ceil(parseGoDurationMs(ttl));
    } catch (err) {
      throw new ResponseFormatError(what, `TTL ${JSON.stringify(ttl)}: ${(err as Error).message}`);
    }
  }
  return {
    id: str(what, o, 'ID'),
    name: str(what, o, 'Name'),
    node: str(what, o, 'Node'),
    // Go's time.Duration: nanoseconds.
    lockDelayMs: Number(uint(what, o, 'LockDelay') / 1_000_000n),
    behavior: behavior as SessionBehavior,
    ttl,
    ttlMs,
    nodeChecks: Array.isArray(checks) ? checks.filter((c): c is string => typeof c === 'string') : null,
    createIndex: index(what, o, 'CreateIndex'),
    modifyIndex: index(what, o, 'ModifyIndex'),
  };
}

/** GET /v1/operator/raft/configuration: Consul's {"Servers": [{ID, Node, Address, Leader, Voter}]}. */
export function membersFromJson(what: string, v: JsonValue): MemberInfo[] {
  const servers = asObject(what, v).Servers;
  return (servers === null || servers === undefined ? [] : asArray(what, servers)).map((raw) => {
    const o = asObject(what, raw);
    return {
      id: str(what, o, 'ID'),
      address: str(what, o, 'Address'),
      name: str(what, o, 'Node'),
      role: o.Voter === true ? 'voter' : 'learner',
      leader: o.Leader === true,
    };
  });
}

/** /v1/txn response rows ({"KV": entry}) and errors ({"OpIndex", "What"}). */
export function txnRowsFromJson(what: string, v: JsonValue): { results: DirEntry[]; errors: TxnOpError[] } {
  const o = asObject(what, v);
  const results = o.Results === null || o.Results === undefined ? [] : asArray(what, o.Results);
  const errors = o.Errors === null || o.Errors === undefined ? [] : asArray(what, o.Errors);
  return {
    results: results.map((row) => dirEntryFromJson(what, asObject(what, row).KV ?? null)),
    errors: errors.map((e) => {
      const err = asObject(what, e);
      return { opIndex: index(what, err, 'OpIndex'), what: str(what, err, 'What') };
    }),
  };
}

/** The /v1/txn body for `ops` (Consul's api.TxnOps): zero values left out, flags exact, values base64. */
export function txnBody(ops: readonly TxnOpInput[]): string {
  return goJson(
    ops.map((op) => ({
      KV: {
        Verb: op.verb,
        Key: op.key,
        Value: op.value !== undefined && op.value.length > 0 ? op.value : undefined,
        Flags: op.flags !== undefined && op.flags !== 0n ? op.flags : undefined,
        Index: op.index !== undefined && op.index !== 0 ? op.index : undefined,
        Session: op.session !== undefined && op.session !== '' ? op.session : undefined,
      },
    })),
  );
}
