// Text formats of the Consul HTTP API, written the way Consul's Go code
// writes them: JSON as encoding/json marshals it (HTML-safe escapes, exact
// uint64s, MarshalIndent for ?pretty), Go duration strings, and a JSON
// reader that keeps integers exact (JSON.parse would round Flags above 2^53).

/** A JSON number kept as its source text, so uint64 values survive parsing. */
export class JsonNumber {
  constructor(readonly text: string) {}
}

export type JsonValue = null | boolean | string | JsonNumber | JsonValue[] | { [key: string]: JsonValue };

export class JsonSyntaxError extends Error {}

/** Parse JSON text; numbers come back as JsonNumber. Throws JsonSyntaxError naming the offset. */
export function parseJson(text: string): JsonValue {
  let pos = 0;
  const fail = (what: string): never => {
    throw new JsonSyntaxError(`${what} at offset ${pos}`);
  };
  const ws = () => {
    while (pos < text.length && ' \t\n\r'.includes(text[pos] as string)) pos++;
  };
  const value = (depth: number): JsonValue => {
    if (depth > 64) fail('nesting deeper than 64');
    ws();
    const c = text[pos];
    if (c === '{') {
      pos++;
      const obj: { [key: string]: JsonValue } = {};
      ws();
      if (text[pos] === '}') {
        pos++;
        return obj;
      }
      for (;;) {
        ws();
        if (text[pos] !== '"') fail('expected a string key');
        const key = string();
        ws();
        if (text[pos] !== ':') fail("expected ':'");
        pos++;
        obj[key] = value(depth + 1);
        ws();
        if (text[pos] === ',') pos++;
        else if (text[pos] === '}') {
          pos++;
          return obj;
        } else fail("expected ',' or '}'");
      }
    }
    if (c === '[') {
      pos++;
      const arr: JsonValue[] = [];
      ws();
      if (text[pos] === ']') {
        pos++;
        return arr;
      }
      for (;;) {
        arr.push(value(depth + 1));
        ws();
        if (text[pos] === ',') pos++;
        else if (text[pos] === ']') {
          pos++;
          return arr;
        } else fail("expected ',' or ']'");
      }
    }
    if (c === '"') return string();
    for (const [word, v] of [
      ['true', true],
      ['false', false],
      ['null', null],
    ] as const) {
      if (text.startsWith(word, pos)) {
        pos += word.length;
        return v;
      }
    }
    const m = /^-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?/.exec(text.slice(pos, pos + 400));
    if (!m)
      return c === undefined
        ? fail('unexpected end of input')
        : fail(`invalid character ${JSON.stringify(c)}`);
    pos += m[0].length;
    return new JsonNumber(m[0]);
  };
  const string = (): string => {
    const start = pos;
    pos++;
    while (pos < text.length && text[pos] !== '"') {
      const ch = text.charCodeAt(pos);
      if (ch < 0x20) fail('control character in string');
      pos += text[pos] === '\\' ? 2 : 1;
    }
    if (pos >= text.length) fail('unterminated string');
    pos++;
    try {
      return JSON.parse(text.slice(start, pos)) as string;
    } catch {
      pos = start;
      return fail('invalid escape in string');
    }
  };
  const v = value(0);
  ws();
  if (pos !== text.length) fail('unexpected data after the value');
  return v;
}

/** Go's json.Marshal escaping: like JSON.stringify plus \u003c \u003e \u0026 \u2028 \u2029. */
function goString(s: string): string {
  return JSON.stringify(s).replace(
    /[<>&\u2028\u2029]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`,
  );
}

/** Values the writer accepts: bigint for exact uint64 output, Uint8Array as base64 (Go []byte), null. */
export type GoJson =
  | null
  | boolean
  | number
  | bigint
  | string
  | Uint8Array
  | GoJson[]
  | { [key: string]: GoJson | undefined };

/**
 * Serialize like Go's json.Marshal (compact) or json.MarshalIndent(v, "", "    ")
 * plus a newline (Consul's ?pretty). Object keys keep insertion order (Go: struct
 * field order); undefined members are omitted (Go: omitempty).
 */
export function goJson(value: GoJson, pretty = false): string {
  const out = write(value, pretty ? '\n' : '');
  return pretty ? `${out}\n` : out;
}

function write(v: GoJson, nl: string): string {
  if (v === null) return 'null';
  if (typeof v === 'boolean' || typeof v === 'bigint') return String(v);
  if (typeof v === 'number') {
    if (!Number.isFinite(v)) throw new Error(`cannot encode ${v} as JSON`);
    return String(v);
  }
  if (typeof v === 'string') return goString(v);
  if (v instanceof Uint8Array)
    return `"${Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString('base64')}"`;
  const inner = nl === '' ? '' : `${nl}    `;
  const sep = nl === '' ? ',' : `,${inner}`;
  if (Array.isArray(v)) {
    if (v.length === 0) return '[]';
    return `[${inner}${v.map((x) => write(x, inner)).join(sep)}${nl}]`;
  }
  const members = Object.entries(v).filter(([, x]) => x !== undefined) as Array<[string, GoJson]>;
  if (members.length === 0) return '{}';
  const colon = nl === '' ? ':' : ': ';
  return `{${inner}${members.map(([k, x]) => `${goString(k)}${colon}${write(x, inner)}`).join(sep)}${nl}}`;
}

const NS_PER_MS = 1_000_000;
const unitNs: Record<string, number> = {
  ns: 1,
  us: 1e3,
  µs: 1e3,
  μs: 1e3,
  ms: 1e6,
  s: 1e9,
  m: 60e9,
  h: 3600e9,
};

/** Go's time.ParseDuration ("300ms", "1.5h", "2h45m"); returns nanoseconds. Throws naming the input. */
export function parseGoDurationNs(input: string): number {
  const bad = (why: string): never => {
    throw new Error(`time: ${why} in duration ${JSON.stringify(input)}`);
  };
  let s = input;
  let sign = 1;
  if (s.startsWith('-') || s.startsWith('+')) {
    if (s[0] === '-') sign = -1;
    s = s.slice(1);
  }
  if (s === '0') return 0;
  if (s === '') bad('invalid duration');
  let total = 0;
  while (s !== '') {
    const m = /^(\d*)(?:\.(\d*))?/.exec(s);
    const whole = m?.[1] ?? '';
    const frac = m?.[2];
    if (whole === '' && (frac === undefined || frac === '')) bad('invalid duration');
    s = s.slice((m as RegExpExecArray)[0].length);
    const unit = /^(ns|us|µs|μs|ms|s|m|h)/.exec(s)?.[1];
    if (unit === undefined)
      bad(s === '' ? 'missing unit' : `unknown unit ${JSON.stringify(s.replace(/[\d.].*$/, ''))}`);
    s = s.slice((unit as string).length);
    total += Number(`${whole || '0'}.${frac || '0'}`) * (unitNs[unit as string] as number);
  }
  if (total > Number.MAX_SAFE_INTEGER) bad('invalid duration (overflow)');
  return sign * Math.round(total);
}

export function parseGoDurationMs(input: string): number {
  return parseGoDurationNs(input) / NS_PER_MS;
}

/** Go's time.Duration.String() for a whole number of milliseconds ("10s", "24h0m0s", "1m30s", "500ms"). */
export function formatGoDurationMs(ms: number): string {
  if (ms === 0) return '0s';
  const sign = ms < 0 ? '-' : '';
  let rest = Math.abs(ms);
  if (rest < 1000) return `${sign}${rest}ms`;
  const h = Math.floor(rest / 3_600_000);
  rest -= h * 3_600_000;
  const m = Math.floor(rest / 60_000);
  rest -= m * 60_000;
  const s = `${rest / 1000}s`;
  if (h > 0) return `${sign}${h}h${m}m${s}`;
  if (m > 0) return `${sign}${m}m${s}`;
  return `${sign}${s}`;
}

/** Go's strconv.ParseUint(s, 10, 64), exact. Returns undefined when s is not one. */
export function parseUint64(s: string): bigint | undefined {
  if (!/^\d{1,20}$/.test(s)) return undefined;
  const v = BigInt(s);
  return v < 1n << 64n ? v : undefined;
}

/** Strict standard base64 with padding (Go's base64.StdEncoding); returns the offending offset on error. */
export function decodeStdBase64(s: string): Uint8Array | { badOffset: number } {
  const bad = /[^A-Za-z0-9+/=]/.exec(s);
  if (bad) return { badOffset: bad.index };
  const pad = s.indexOf('=');
  if (pad !== -1 && (!/^={1,2}$/.test(s.slice(pad)) || s.length % 4 !== 0)) return { badOffset: pad };
  if (s.length % 4 !== 0) return { badOffset: s.length - (s.length % 4) };
  return new Uint8Array(Buffer.from(s, 'base64'));
}
