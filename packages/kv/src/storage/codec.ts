// On-disk record encoding for the Raft storage: every value is
//   [crc32 of payload: 4 bytes big-endian][msgpack payload]
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

/** Decodes and checksums one record; `what` names it in the error ("log entry 42"). */
export function decodeRecord(bytes: Uint8Array, what: string): unknown {
  if (bytes.length < 5) throw new RecordCorruptError(what, `record is ${bytes.length} bytes, too short`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const stored = view.getUint32(0);
  const payload = bytes.subarray(4);
  const actual = crc32(payload);
  if (stored !== actual) {
    throw new RecordCorruptError(
      what,
      `checksum mismatch (stored ${stored.toString(16)}, computed ${actual.toString(16)})`,
    );
  }
  try {
    return packr.unpack(payload);
  } catch (err) {
    throw new RecordCorruptError(what, `cannot decode: ${(err as Error).message}`);
  }
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
