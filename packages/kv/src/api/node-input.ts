// Checks of the embedding API's arguments, the same rules the Consul HTTP API
// applies (api/http.ts), so a key or session the API accepts is one an HTTP
// client can read and renew, and bad input fails before anything is proposed.
import type { CreateSessionOptions } from './node.js';
import { KvInputError } from './node-errors.js';

/** Consul's structs.SessionTTLMax (24 h); the HTTP API refuses longer TTLs too. */
export const MAX_SESSION_TTL_MS = 24 * 3600 * 1000;

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/**
 * A key (or, with `prefix`, a key prefix, which may be empty): a string that
 * is valid Unicode (it is stored as UTF-8) and does not begin with '/'.
 * Reads may name the empty key (it is never stored, so they find nothing;
 * callers use get(prefix) as a read barrier); writes may not.
 */
export function checkKey(
  key: unknown,
  what: 'key' | 'prefix',
  call: string,
  allowEmpty: boolean = what === 'prefix',
): string {
  if (typeof key !== 'string')
    throw new KvInputError(`${call}: the ${what} must be a string, got ${describe(key)}`);
  if (key === '' && !allowEmpty) throw new KvInputError(`${call}: missing key name (the key is empty)`);
  if (key.startsWith('/'))
    throw new KvInputError(
      `${call}: invalid ${what} ${JSON.stringify(key)}: it must not begin with a '/' (write "${key.replace(/^\/+/, '')}")`,
    );
  if (LONE_SURROGATE.test(key))
    throw new KvInputError(
      `${call}: invalid ${what} ${JSON.stringify(key)}: not valid Unicode (a lone surrogate)`,
    );
  return key;
}

/** Session options: whole milliseconds, TTL 0 (none) up to 24 h, a known behavior. */
export function checkSessionOptions(options: CreateSessionOptions): void {
  const ms = (name: 'ttlMs' | 'lockDelayMs', max: number) => {
    const v = options[name];
    if (v === undefined) return;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > max)
      throw new KvInputError(
        `create session: invalid ${name} ${describe(v)}: must be a whole number of milliseconds in 0..${max}` +
          (name === 'ttlMs' ? ' (0 = no TTL; 24 h at most, as Consul)' : ''),
      );
  };
  ms('ttlMs', MAX_SESSION_TTL_MS);
  ms('lockDelayMs', Number.MAX_SAFE_INTEGER);
  if (options.behavior !== undefined && options.behavior !== 'release' && options.behavior !== 'delete')
    throw new KvInputError(
      `create session: invalid behavior ${describe(options.behavior)}: must be "release" or "delete"`,
    );
  for (const name of ['name', 'node'] as const) {
    const v = options[name];
    if (v !== undefined && typeof v !== 'string')
      throw new KvInputError(`create session: ${name} must be a string, got ${describe(v)}`);
  }
}

function describe(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v);
  if (typeof v === 'bigint') return `${v}n`;
  return typeof v === 'number' || v === null || v === undefined ? String(v) : typeof v;
}
