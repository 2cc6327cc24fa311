import assert from 'node:assert/strict';
import { type Command, decodeCommand, encodeCommand, packr } from '../../src/fsm/index.js';
import { enc, op, sessionSpec } from './helpers.js';

describe('fsm: command encoding', () => {
  it('round-trips every command type, with uint64 flags and binary values exact', () => {
    const cmds: Command[] = [
      {
        type: 'kv',
        op: op('set', 'k', { value: new Uint8Array([0, 1, 255]), flags: (1n << 64n) - 1n }),
        nowMs: 1,
      },
      {
        type: 'txn',
        ops: [op('cas', 'a', { index: 9, value: enc('x') }), op('lock', 'b', { session: 's' })],
        nowMs: 2,
      },
      {
        type: 'session-create',
        session: sessionSpec('id1', { ttlMs: 10_000, ttl: '10s', nodeChecks: ['serfHealth'] }),
        nowMs: 3,
      },
      { type: 'session-destroy', id: 'id1', nowMs: 4 },
      { type: 'session-renew', id: 'id1', nowMs: 1_763_000_000_000 },
      { type: 'tombstone-reap', upToIndex: 77 },
    ];
    for (const cmd of cmds) assert.deepEqual(decodeCommand(encodeCommand(cmd)), cmd);
  });

  it('names the bad field of a malformed command', () => {
    const base = {
      v: 1,
      type: 'kv',
      nowMs: 1,
      op: { verb: 'set', key: 'k', value: new Uint8Array(0), flags: 0, index: 0, session: '' },
    };
    const cases: Array<[unknown, RegExp]> = [
      [{ ...base, op: { ...base.op, verb: 'frobnicate' } }, /op\.verb "frobnicate" is not a KV verb/],
      [{ ...base, op: { ...base.op, key: 5 } }, /op\.key is not a string/],
      [{ ...base, op: { ...base.op, flags: -1 } }, /op\.flags -1 is outside uint64/],
      [{ ...base, op: { ...base.op, index: 1.5 } }, /op\.index is not a non-negative safe integer/],
      [{ ...base, op: { ...base.op, value: new Uint8Array(512 * 1024 + 1) } }, /more than 524288/],
      [{ ...base, nowMs: 'now' }, /nowMs/],
      [{ v: 1, type: 'txn', nowMs: 1, ops: new Array(65).fill(base.op) }, /1\.\.64 operations, got 65/],
      [
        { v: 1, type: 'session-create', nowMs: 1, session: { ...sessionSpec('x'), behavior: 'explode' } },
        /session\.behavior/,
      ],
      [{ v: 1, type: 'session-destroy', nowMs: 1, id: '' }, /id is empty/],
      [{ v: 2, type: 'kv' }, /format version 2/],
      ['just a string', /command is not a map/],
    ];
    for (const [raw, re] of cases) assert.throws(() => decodeCommand(packr.pack(raw)), re);
  });

  it('refuses to encode a command that replicas would reject', () => {
    assert.throws(
      () => encodeCommand({ type: 'kv', op: op('set', 'k', { flags: 1n << 64n }), nowMs: 0 }),
      /outside uint64/,
    );
  });
});
