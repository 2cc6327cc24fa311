// On-disk record encoding for the Raft storage: every value is
//   [crc32 of payload: 4 bytes big-endian][payload]
// where the payload is msgpack for the metadata records and a binary run of
// log entries for the log records (encodeRun).
// LevelDB does not verify block checksums on reads by default (and
// classic-level does not expose paranoid checks), so each record carries its
// own checksum: a flipped bit is reported at open instead of being replayed.
import { crc32 as zlibCrc32 } from 'node:zlib';
import { Packr } from 'msgpackr';

// useRecords:false keeps the format plain msgpack (no shared structure
// definitions that would have to be stored alongside the data).
const packr = new Packr({ useRecords: false, mapsAsObjects: true });

/**
 * CRC-32 (IEEE 802.3, zlib's polynomial), computed natively: a byte-at-a-time
 * table loop in JavaScript cost a loaded node ~1% of its CPU on log writes.
 */
export function crc32(bytes: Uint8Array): number {
  return zlibCrc32(bytes);
}

export function encodeRecord(value: unknown): Uint8Array {
  const payload = packr.pack(value);
  const out = new Uint8Array(4 + payload.length);
  new DataView(out.buffer).setUint32(0, crc32(payload));
  out.set(payload, 4);
  return out;
}

export class RecordCorruptError extends Error {
  constructor(what: string, reason: string) {
    super(`${what}: ${reason}`);
    this.name = 'RecordCorruptError';
  }
}

/**
 * Checks a record's length and checksum; returns its payload (after the
 * 4-byte CRC). `what` names the record in the error ("log record 42").
 */
function checkedPayload(bytes: Uint8Array, what: string, minLength: number): Uint8Array {
  if (bytes.length < minLength)
    throw new RecordCorruptError(what, `record is ${bytes.length} bytes, too short`);
  const stored = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint32(0);
  const payload = bytes.subarray(4);
  const actual = crc32(payload);
  if (stored !== actual) {
    throw new RecordCorruptError(
      what,
      `checksum mismatch (stored ${stored.toString(16)}, computed ${actual.toString(16)})`,
    );
  }
  return payload;
}

/** Decodes and checksums one metadata record; `what` names it in the error ("hard state record"). */
export function decodeRecord(bytes: Uint8Array, what: string): unknown {
  const payload = checkedPayload(bytes, what, 5);
  try {
    return packr.unpack(payload);
  } catch (err) {
    throw new RecordCorruptError(what, `cannot decode: ${(err as Error).message}`);
  }
}

/** One log entry as a run record holds it: the index is implicit (the run's first index + position). */
export interface RunEntry {
  term: number;
  type: number;
  data: Uint8Array;
}

/** Bytes a run spends on each entry besides its data: term (8), type (1), data length (4). */
export const RUN_ENTRY_OVERHEAD = 13;
/**
 * A run of consecutive log entries as one record:
 *   [crc32 (4)][count: u32][count x (term: u64, type: u8, length: u32, data)]
 * all big-endian. One record per run instead of one per entry: LevelDB,
 * classic-level and the encoder pay per key, and a loaded member writes
 * ~15-20 entries per save (packages/kv/README.md, "What a save costs").
 */
export function encodeRun(entries: readonly RunEntry[]): Uint8Array {
  let size = 8;
  for (const e of entries) size += RUN_ENTRY_OVERHEAD + e.data.length;
  const out = new Uint8Array(size);
  const view = new DataView(out.buffer);
  view.setUint32(4, entries.length);
  let o = 8;
  for (const e of entries) {
    view.setUint32(o, Math.floor(e.term / 0x100000000));
    view.setUint32(o + 4, e.term >>> 0);
    out[o + 8] = e.type;
    view.setUint32(o + 9, e.data.length);
    out.set(e.data, o + RUN_ENTRY_OVERHEAD);
    o += RUN_ENTRY_OVERHEAD + e.data.length;
  }
  view.setUint32(0, crc32(out.subarray(4)));
  return out;
}

/**
 * Checksums and decodes a run record; `what` names it in errors ("log record
 * 42"). The entries' data are views into `bytes` (one allocation per run).
 */
export function decodeRun(bytes: Uint8Array, what: string): RunEntry[] {
  checkedPayload(bytes, what, 8);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const count = view.getUint32(4);
  if (count === 0) throw new RecordCorruptError(what, 'the run holds no entries');
  const entries: RunEntry[] = [];
  let o = 8;
  for (let k = 0; k < count; k++) {
    if (o + RUN_ENTRY_OVERHEAD > bytes.length) {
      throw new RecordCorruptError(what, `entry ${k} of ${count} is cut off at byte ${o}`);
    }
    const term = view.getUint32(o) * 0x100000000 + view.getUint32(o + 4);
    const length = view.getUint32(o + 9);
    const start = o + RUN_ENTRY_OVERHEAD;
    if (!Number.isSafeInteger(term)) throw new RecordCorruptError(what, `entry ${k} has term ${term}`);
    if (start + length > bytes.length) {
      throw new RecordCorruptError(
        what,
        `entry ${k} of ${count} claims ${length} bytes, more than the record has left`,
      );
    }
    entries.push({ term, type: bytes[o + 8]!, data: bytes.subarray(start, start + length) });
    o = start + length;
  }
  if (o !== bytes.length)
    throw new RecordCorruptError(what, `${bytes.length - o} bytes follow the last entry`);
  return entries;
}

/**
 * Log keys are 8-byte big-endian indexes so that LevelDB's byte order is index
 * order; `prefix` (a sublevel's prefix in the root database) goes in front.
 */
export function encodeIndexKey(index: number, prefix: Uint8Array = NO_PREFIX): Uint8Array {
  const key = new Uint8Array(prefix.length + 8);
  key.set(prefix);
  const view = new DataView(key.buffer);
  view.setUint32(prefix.length, Math.floor(index / 0x100000000));
  view.setUint32(prefix.length + 4, index >>> 0);
  return key;
}

const NO_PREFIX = new Uint8Array(0);

export function decodeIndexKey(key: Uint8Array): number {
  if (key.length !== 8) throw new RecordCorruptError('log key', `key is ${key.length} bytes, expected 8`);
  const view = new DataView(key.buffer, key.byteOffset, key.byteLength);
  return view.getUint32(0) * 0x100000000 + view.getUint32(4);
}
