// Linearizability checker for client histories of a key-value store.
//
// Each key is an independent register (a history is linearizable iff each
// key's sub-history is: locality, Herlihy & Wing), so keys are checked one at
// a time. Per key we run the Wing–Gong search with Lowe's refinements
// ("Testing for linearizability", 2017): a doubly linked list of call/return
// events, operations "lifted" out of the list when linearized, and a cache of
// (set of linearized operations, register state) so that a configuration seen
// once is never explored again. This is the algorithm Porcupine uses.
//
// Indeterminate operations (the client never saw a response: timeout, crash)
// may or may not have taken effect. They have no return event, so they never
// force a backtrack; the search succeeds once every *completed* operation is
// linearized — any indeterminate ones left over are taken not to have happened
// (or to have happened after everything observed, which is the same thing).

export type OpKind = 'read' | 'write' | 'cas';

export interface HistoryOp {
  clientId: number;
  key: string;
  kind: OpKind;
  /** write: new value; cas: new value. */
  value?: string;
  /** cas: expected current value (null = key absent). */
  expected?: string | null;
  /** Virtual time of invocation. */
  call: number;
  /** Virtual time of response; null = indeterminate. */
  ret: number | null;
  /** read: value observed (null = absent). */
  output?: string | null;
  /** cas: whether it succeeded (ignored if ret === null). */
  ok?: boolean;
}

export interface LinearizabilityResult {
  verdict: 'ok' | 'violation' | 'unknown';
  /** The key whose sub-history failed (violation) or ran out of budget (unknown). */
  key?: string;
  detail?: string;
  /** Completed operations examined (indeterminate reads are not counted). */
  opsChecked: number;
}

type Register = string | null;

interface EventNode {
  op: number; // index into the per-key op array
  isCall: boolean;
  time: number;
  match: EventNode | null; // call → its return (null when indeterminate)
  prev: EventNode | null;
  next: EventNode | null;
}

/** Apply `op` to register state `s`; null when the op cannot be linearized in state `s`. */
function step(s: Register, op: HistoryOp): { state: Register } | null {
  const indeterminate = op.ret === null;
  switch (op.kind) {
    case 'read':
      return op.output === s ? { state: s } : null;
    case 'write':
      return { state: op.value ?? null };
    case 'cas': {
      const expected = op.expected ?? null;
      // An indeterminate CAS that failed is indistinguishable from one never linearized.
      if (indeterminate || op.ok) return expected === s ? { state: op.value ?? null } : null;
      return expected === s ? null : { state: s };
    }
  }
}

class BitSet {
  readonly words: Uint32Array;
  constructor(size: number) {
    this.words = new Uint32Array(Math.ceil(size / 32) || 1);
  }
  set(i: number): void {
    this.words[i >>> 5]! |= 1 << (i & 31);
  }
  clear(i: number): void {
    this.words[i >>> 5]! &= ~(1 << (i & 31));
  }
  /** Cheap, exact key for the cache. */
  key(): string {
    let s = '';
    for (const w of this.words) s += w.toString(36) + ',';
    return s;
  }
}

function describe(op: HistoryOp): string {
  const t = `[${op.call}, ${op.ret ?? '∞'}] client ${op.clientId}`;
  switch (op.kind) {
    case 'read':
      return `${t} read → ${JSON.stringify(op.output ?? null)}`;
    case 'write':
      return `${t} write ${JSON.stringify(op.value ?? null)}`;
    case 'cas':
      return `${t} cas ${JSON.stringify(op.expected ?? null)} → ${JSON.stringify(op.value ?? null)} = ${op.ret === null ? '?' : op.ok}`;
  }
}

function checkKey(
  key: string,
  ops: HistoryOp[],
  deadline: number,
): { verdict: 'ok' | 'violation' | 'unknown'; detail?: string } {
  // Build the event list: calls sort before returns at equal times, which
  // treats touching intervals as concurrent (never a false violation).
  const events: EventNode[] = [];
  const calls: EventNode[] = [];
  ops.forEach((op, i) => {
    const call: EventNode = { op: i, isCall: true, time: op.call, match: null, prev: null, next: null };
    calls.push(call);
    events.push(call);
    if (op.ret !== null) {
      if (op.ret < op.call)
        throw new Error(`history op on key ${JSON.stringify(key)} returns before its call: ${describe(op)}`);
      const ret: EventNode = { op: i, isCall: false, time: op.ret, match: null, prev: null, next: null };
      call.match = ret;
      events.push(ret);
    }
  });
  events.sort((a, b) => a.time - b.time || (a.isCall === b.isCall ? a.op - b.op : a.isCall ? -1 : 1));
  const head: EventNode = { op: -1, isCall: false, time: -Infinity, match: null, prev: null, next: null };
  let prev = head;
  for (const e of events) {
    prev.next = e;
    e.prev = prev;
    prev = e;
  }

  const lift = (call: EventNode): void => {
    call.prev!.next = call.next;
    if (call.next) call.next.prev = call.prev;
    const ret = call.match;
    if (ret) {
      ret.prev!.next = ret.next;
      if (ret.next) ret.next.prev = ret.prev;
    }
  };
  const unlift = (call: EventNode): void => {
    const ret = call.match;
    if (ret) {
      ret.prev!.next = ret;
      if (ret.next) ret.next.prev = ret;
    }
    call.prev!.next = call;
    if (call.next) call.next.prev = call;
  };

  let remainingCompleted = ops.filter((o) => o.ret !== null).length;
  const linearized = new BitSet(ops.length);
  const cache = new Set<string>();
  const stack: { call: EventNode; state: Register }[] = [];
  let state: Register = null;
  let entry = head.next;
  let iterations = 0;
  let longestPrefix = 0;
  // The op that blocked the deepest partial linearization: the best hint at the culprit.
  let stuckDepth = -1;
  let stuckOp = '';

  while (remainingCompleted > 0) {
    if (++iterations % 4096 === 0 && Date.now() > deadline)
      return { verdict: 'unknown', detail: `time budget exhausted after ${iterations} steps` };
    if (entry === null) throw new Error('linearizability search ran off the event list (bug)');
    if (entry.isCall) {
      const op = ops[entry.op]!;
      const r = step(state, op);
      if (r !== null) {
        linearized.set(entry.op);
        const cacheKey = linearized.key() + '|' + (r.state === null ? '\u0000' : 'v' + r.state);
        if (!cache.has(cacheKey)) {
          cache.add(cacheKey);
          stack.push({ call: entry, state });
          state = r.state;
          if (op.ret !== null) remainingCompleted--;
          longestPrefix = Math.max(longestPrefix, stack.length);
          lift(entry);
          entry = head.next;
          continue;
        }
        linearized.clear(entry.op);
      }
      entry = entry.next;
    } else {
      // A return whose call has not been linearized: undo the last choice.
      if (stack.length > stuckDepth) {
        stuckDepth = stack.length;
        stuckOp = `${describe(ops[entry.op]!)} in state ${JSON.stringify(state)}`;
      }
      const top = stack.pop();
      if (top === undefined) {
        return {
          verdict: 'violation',
          detail: `no linearization of ${ops.length} ops on key ${JSON.stringify(key)}; after ${longestPrefix} linearized ops, cannot place ${stuckOp}`,
        };
      }
      const topOp = ops[top.call.op]!;
      if (topOp.ret !== null) remainingCompleted++;
      state = top.state;
      linearized.clear(top.call.op);
      unlift(top.call);
      entry = top.call.next;
    }
  }
  return { verdict: 'ok' };
}

/**
 * Check a history of single-key register operations (read / write / cas).
 * Returns 'unknown' when the time budget runs out before a verdict.
 */
export function checkLinearizability(
  ops: HistoryOp[],
  opts: { timeBudgetMs?: number } = {},
): LinearizabilityResult {
  const deadline = Date.now() + (opts.timeBudgetMs ?? 10_000);
  const byKey = new Map<string, HistoryOp[]>();
  let opsChecked = 0;
  for (const op of ops) {
    // An indeterminate read constrains nothing.
    if (op.kind === 'read' && op.ret === null) continue;
    if (op.ret !== null) opsChecked++;
    const list = byKey.get(op.key);
    if (list) list.push(op);
    else byKey.set(op.key, [op]);
  }
  let unknownKey: string | undefined;
  let unknownDetail: string | undefined;
  for (const [key, list] of byKey) {
    const r = checkKey(key, list, deadline);
    if (r.verdict === 'violation') return { verdict: 'violation', key, detail: r.detail, opsChecked };
    if (r.verdict === 'unknown' && unknownKey === undefined) {
      unknownKey = key;
      unknownDetail = r.detail;
    }
  }
  if (unknownKey !== undefined)
    return { verdict: 'unknown', key: unknownKey, detail: unknownDetail, opsChecked };
  return { verdict: 'ok', opsChecked };
}
