import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LevelRaftStorage } from '../../src/storage/level-storage.js';
import { type WriterState, writerState } from './crash-digest.js';
import { spawnScript } from './spawn-script.js';

const ROUNDS = 10;

/** Runs the writer until it has acknowledged something, then SIGKILLs it after a random delay. */
async function runAndKill(
  dir: string,
  seed: number,
  killAfterMs: number,
): Promise<{ acked: WriterState[]; begun: WriterState[]; stderr: string }> {
  const child: ChildProcess = spawnScript(import.meta.url, './crash-writer.js', [dir, String(seed)]);
  const acked: WriterState[] = [];
  const begun: WriterState[] = [];
  let stderr = '';
  let buffer = '';
  let exited = false;
  child.stderr!.on('data', (d) => {
    stderr += d;
  });
  const exit = new Promise<void>((resolve) =>
    child.on('exit', () => {
      exited = true;
      resolve();
    }),
  );
  let ready: () => void;
  const readyPromise = new Promise<void>((resolve) => {
    ready = resolve;
  });
  child.stdout!.on('data', (chunk) => {
    buffer += chunk;
    for (let nl = buffer.indexOf('\n'); nl >= 0; nl = buffer.indexOf('\n')) {
      const line = buffer.slice(0, nl);
      buffer = buffer.slice(nl + 1);
      const [kind, json] = [line.slice(0, line.indexOf(' ')), line.slice(line.indexOf(' ') + 1)];
      const state = JSON.parse(json) as WriterState;
      if (kind === 'ready') {
        acked.push(state);
        ready();
      } else if (kind === 'ack') acked.push(state);
      else if (kind === 'begin') begun.push(state);
    }
  });
  try {
    await Promise.race([readyPromise, exit, new Promise((r) => setTimeout(r, 20000))]);
    if (!exited) {
      await new Promise((r) => setTimeout(r, killAfterMs));
      child.kill('SIGKILL');
    }
    await exit;
  } finally {
    if (!exited) child.kill('SIGKILL');
  }
  // Lines still buffered were written before the kill; a torn last line is ignored.
  return { acked, begun, stderr };
}

describe('LevelRaftStorage crash recovery (kill -9 of a real writer process)', function () {
  this.timeout(120_000);
  let root: string;
  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), 'weft-crash-'));
  });
  afterEach(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it(`keeps every acknowledged write and a consistent log over ${ROUNDS} random SIGKILLs`, async () => {
    const dir = join(root, 'raft');
    const baseSeed = Date.now() >>> 0;
    let totalAcks = 0;
    let previous: WriterState | undefined;
    for (let round = 0; round < ROUNDS; round++) {
      const seed = (baseSeed + round * 7919) >>> 0 || 1;
      const killAfterMs = 20 + Math.floor(Math.random() * 250);
      const { acked, begun, stderr } = await runAndKill(dir, seed, killAfterMs);
      const context = `round ${round}, seed ${seed}, killed after ${killAfterMs} ms`;
      assert.ok(acked.length > 0, `${context}: writer never became ready: ${stderr}`);
      if (previous) {
        const first = acked[0]!;
        assert.deepEqual(
          { ...first, seq: 0 },
          { ...previous, seq: 0 },
          `${context}: the writer reopened a different state`,
        );
      }
      totalAcks += acked.length - 1;
      const lastAck = acked.at(-1)!;
      const inFlight = begun.find((b) => b.seq === lastAck.seq + 1);

      const s = await LevelRaftStorage.open({ dir, nodeId: 'crash-node', clusterId: 'crash-cluster' });
      try {
        const found = writerState(s, 0);
        // Durable state is exactly the last acknowledged one, or the one whose
        // synced write was in flight at the kill (atomic: all or nothing).
        const matches = (w: WriterState | undefined) =>
          w !== undefined && JSON.stringify({ ...w, seq: 0 }) === JSON.stringify(found);
        assert.ok(
          matches(lastAck) || matches(inFlight),
          `${context}: reopened ${JSON.stringify(found)}, last ack ${JSON.stringify(lastAck)}, in flight ${JSON.stringify(inFlight)}`,
        );
        // Every entry holds what was written for its index and term.
        for (const e of s.entries(s.firstIndex(), s.lastIndex() + 1, Number.POSITIVE_INFINITY)) {
          const [index, term] = new TextDecoder().decode(e.data).split('/');
          assert.equal(Number(index), e.index, `${context}: entry ${e.index} holds data of ${index}`);
          assert.equal(Number(term), e.term, `${context}: entry ${e.index} holds data of term ${term}`);
        }
        previous = found;
      } finally {
        await s.close();
      }
    }
    assert.ok(totalAcks >= ROUNDS, `writers acknowledged only ${totalAcks} writes in ${ROUNDS} rounds`);
  });
});
