// Random command streams: two replicas applying the same log must agree byte for byte,
// also when one of them is rebuilt from a snapshot half-way (as a lagging follower is).
import assert from 'node:assert/strict';
import { type Command, encodeCommand, KV_VERBS, KvStateMachine } from '../../src/fsm/index.js';
import { seededFloats } from '../../src/raft/rand.js';
import { op, sessionSpec } from './helpers.js';

function randomLog(seed: number, length: number): Uint8Array[] {
  const rand = seededFloats(seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)] as T;
  const keys = ['a', 'a/1', 'a/2', 'b/x', 'b/y/z', 'c'];
  const sessions = ['s1', 's2', 's3'];
  let nowMs = 1_000;
  const randomOp = () =>
    op(pick(KV_VERBS), pick(keys), {
      value: new Uint8Array([Math.floor(rand() * 4)]),
      flags: BigInt(Math.floor(rand() * 3)) << 60n,
      index: Math.floor(rand() * length),
      session: pick(sessions),
    });
  const log: Uint8Array[] = [];
  for (let i = 0; i < length; i++) {
    nowMs += Math.floor(rand() * 3000);
    const r = rand();
    let cmd: Command;
    if (r < 0.45) cmd = { type: 'kv', op: randomOp(), nowMs };
    else if (r < 0.65)
      cmd = { type: 'txn', ops: Array.from({ length: 1 + Math.floor(rand() * 4) }, randomOp), nowMs };
    else if (r < 0.75) {
      const spec = sessionSpec(pick(sessions), {
        behavior: rand() < 0.5 ? 'release' : 'delete',
        lockDelayMs: pick([0, 1000, 5000]),
      });
      cmd = { type: 'session-create', session: spec, nowMs };
    } else if (r < 0.85) cmd = { type: 'session-destroy', id: pick(sessions), nowMs };
    else if (r < 0.92) cmd = { type: 'session-renew', id: pick(sessions), nowMs };
    else if (r < 0.96) cmd = { type: 'tombstone-reap', upToIndex: Math.floor(rand() * i) };
    else {
      log.push(new Uint8Array([0x92, Math.floor(rand() * 256)])); // malformed entry
      continue;
    }
    log.push(encodeCommand(cmd));
  }
  return log;
}

function checkInvariants(fsm: KvStateMachine): void {
  const sessions = new Set(fsm.sessions().value.map((s) => s.id));
  for (const e of fsm.list('').value) {
    if (e.session !== '')
      assert.ok(sessions.has(e.session), `key ${e.key} locked by dead session ${e.session}`);
    assert.ok(e.createIndex <= e.modifyIndex, `key ${e.key}: CreateIndex after ModifyIndex`);
    assert.ok(e.modifyIndex <= fsm.appliedIndex);
  }
  assert.ok(fsm.kvIndex <= fsm.appliedIndex);
}

describe('fsm: randomized replicas', () => {
  for (const seed of [1, 2, 3, 4, 5, 6, 7, 8]) {
    it(`seed ${seed}: replicas agree byte for byte, with and without a mid-log snapshot`, () => {
      const log = randomLog(seed, 400);
      const a = new KvStateMachine();
      let b = new KvStateMachine();
      const half = log.length >> 1;
      log.forEach((entry, i) => {
        a.apply(i + 1, entry);
        b.apply(i + 1, entry);
        if (i + 1 === half) {
          const restored = new KvStateMachine();
          restored.restore(b.snapshot());
          b = restored;
        }
        if (i % 50 === 0) checkInvariants(a);
      });
      checkInvariants(a);
      assert.ok(Buffer.from(a.snapshot()).equals(Buffer.from(b.snapshot())), 'replicas diverged');
      assert.ok(a.list('').value.length > 0 || a.kvIndex > 0, 'the workload did something');
    });
  }
});
