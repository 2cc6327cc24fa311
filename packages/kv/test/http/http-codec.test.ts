import assert from 'node:assert/strict';
import {
  decodeStdBase64,
  formatGoDurationMs,
  goJson,
  JsonNumber,
  parseGoDurationNs,
  parseJson,
  parseUint64,
} from '../../src/api/http-codec.js';

describe('http codec: Go-compatible text formats', () => {
  it('parses Go durations like time.ParseDuration', () => {
    const cases: Array<[string, number]> = [
      ['0', 0],
      ['5s', 5e9],
      ['1.5s', 1.5e9],
      ['.5s', 0.5e9],
      ['300ms', 300e6],
      ['2us', 2000],
      ['2µs', 2000],
      ['1h30m', 5400e9],
      ['1h0m0s', 3600e9],
      ['-1s', -1e9],
      ['10ns', 10],
    ];
    for (const [text, ns] of cases) assert.equal(parseGoDurationNs(text), ns, text);
    for (const [text, why] of [
      ['5', /missing unit/],
      ['1s2', /missing unit/],
      ['5y', /unknown unit "y"/],
      ['', /invalid duration/],
      ['s', /invalid duration/],
      ['1..5s', /unknown unit/],
    ] as const) {
      assert.throws(() => parseGoDurationNs(text), why, text);
    }
  });

  it('formats durations like Go Duration.String()', () => {
    assert.equal(formatGoDurationMs(10_000), '10s');
    assert.equal(formatGoDurationMs(86_400_000), '24h0m0s');
    assert.equal(formatGoDurationMs(90_000), '1m30s');
    assert.equal(formatGoDurationMs(1_500), '1.5s');
    assert.equal(formatGoDurationMs(500), '500ms');
    assert.equal(formatGoDurationMs(0), '0s');
  });

  it('parses JSON keeping integers exact, and names the offset of a syntax error', () => {
    const v = parseJson('{"Flags": 18446744073709551615, "a": [true, null, "x\\u00e9"]}') as Record<
      string,
      unknown
    >;
    assert.ok(v.Flags instanceof JsonNumber);
    assert.equal((v.Flags as JsonNumber).text, '18446744073709551615');
    assert.deepEqual(v.a, [true, null, 'xé']);
    assert.throws(() => parseJson('{"a" 1}'), /expected ':' at offset 5/);
    assert.throws(() => parseJson('[1,]'), /invalid character "]" at offset 3/);
    assert.throws(() => parseJson('"\u0001"'), /control character/);
    assert.throws(() => parseJson('{"a":"\\q"}'), /invalid escape/);
    assert.throws(() => parseJson('['.repeat(100)), /nesting deeper than 64/);
  });

  it('writes JSON like Go encoding/json', () => {
    assert.equal(
      goJson({ A: 1, B: null, C: undefined, D: 'x<y>&z\u2028' }),
      '{"A":1,"B":null,"D":"x\\u003cy\\u003e\\u0026z\\u2028"}',
    );
    assert.equal(goJson([18446744073709551615n, new Uint8Array([1, 2, 3])]), '[18446744073709551615,"AQID"]');
    assert.equal(goJson({ A: [], B: {} }, true), '{\n    "A": [],\n    "B": {}\n}\n');
  });

  it('accepts only exact uint64 decimals and strict padded base64', () => {
    assert.equal(parseUint64('0'), 0n);
    assert.equal(parseUint64('18446744073709551615'), 18446744073709551615n);
    for (const bad of ['', '-1', '+1', '1e3', ' 1', '18446744073709551616', '0x10']) {
      assert.equal(parseUint64(bad), undefined, bad);
    }
    assert.deepEqual(decodeStdBase64('YWJj'), new Uint8Array([97, 98, 99]));
    assert.deepEqual(decodeStdBase64(''), new Uint8Array(0));
    assert.deepEqual(decodeStdBase64('YQ=='), new Uint8Array([97]));
    assert.deepEqual(decodeStdBase64('YQ'), { badOffset: 0 });
    assert.deepEqual(decodeStdBase64('YQ=a'), { badOffset: 2 });
    assert.deepEqual(decodeStdBase64('Y_Q='), { badOffset: 1 });
  });
});
