// Small builders for FSM tests: each test drives a real KvStateMachine through encoded commands.
import {
  type ApplyResult,
  type Command,
  encodeCommand,
  type KvOp,
  KvStateMachine,
  type KvVerb,
  type SessionSpec,
} from '../../src/fsm/index.js';

export const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
export const dec = (b: Uint8Array): string => new TextDecoder().decode(b);

export function op(verb: KvVerb, key: string, fields: Partial<Omit<KvOp, 'verb' | 'key'>> = {}): KvOp {
  return {
    verb,
    key,
    value: fields.value ?? new Uint8Array(0),
    flags: fields.flags ?? 0n,
    index: fields.index ?? 0,
    session: fields.session ?? '',
  };
}

export function sessionSpec(id: string, fields: Partial<SessionSpec> = {}): SessionSpec {
  return {
    id,
    name: fields.name ?? '',
    node: fields.node ?? 'n1',
    lockDelayMs: fields.lockDelayMs ?? 0,
    behavior: fields.behavior ?? 'release',
    ttlMs: fields.ttlMs ?? 0,
    ttl: fields.ttl ?? '',
    nodeChecks: fields.nodeChecks ?? null,
  };
}

/** An FSM plus a Raft-index counter; every call goes through encodeCommand/apply like a real entry. */
export class Harness {
  readonly fsm = new KvStateMachine();
  index = 0;
  nowMs = 1_000_000;

  run(cmd: Command): ApplyResult {
    this.index += 1;
    return this.fsm.apply(this.index, encodeCommand(cmd));
  }

  kv(verb: KvVerb, key: string, fields: Partial<Omit<KvOp, 'verb' | 'key'>> = {}): ApplyResult {
    return this.run({ type: 'kv', op: op(verb, key, fields), nowMs: this.nowMs });
  }

  set(key: string, value: string, fields: Partial<Omit<KvOp, 'verb' | 'key' | 'value'>> = {}): ApplyResult {
    return this.kv('set', key, { ...fields, value: enc(value) });
  }

  txn(ops: KvOp[]): ApplyResult {
    return this.run({ type: 'txn', ops, nowMs: this.nowMs });
  }

  createSession(id: string, fields: Partial<SessionSpec> = {}): ApplyResult {
    return this.run({ type: 'session-create', session: sessionSpec(id, fields), nowMs: this.nowMs });
  }

  destroySession(id: string): ApplyResult {
    return this.run({ type: 'session-destroy', id, nowMs: this.nowMs });
  }
}
