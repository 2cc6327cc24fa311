import assert from 'node:assert/strict';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ClassicLevel } from 'classic-level';
import {
  CompactedError,
  type ConfState,
  type Entry,
  EntryType,
  emptyConfState,
  UnavailableError,
} from '../../src/raft/types.js';
import { crc32, encodeIndexKey, encodeRecord } from '../../src/storage/codec.js';
import { LevelRaftStorage, StorageOpenError } from '../../src/storage/level-storage.js';

function entry(index: number, term: number, text = `e${index}t${term}`): Entry {
  return { index, term, type: EntryType.Normal, data: new TextEncoder().encode(text) };
}
function range(lo: number, hi: number, term: number): Entry[] {
  const out: Entry[] = [];
  for (let i = lo; i <= hi; i++) out.push(entry(i, term));
  return out;
}
const text = (e: Entry) => new TextDecoder().decode(e.data);
const conf = (voters: string[]): ConfState => ({ ...emptyConfState(), voters });

describe('LevelRaftStorage', () => {
  let root: string;
  let dir: string;
  const open: LevelRaftStorage[] = [];
  async function openStorage(nodeId = 'n1', clusterId?: string, at = dir): Promise<LevelRaftStorage> {
    const s = await LevelRaftStorage.open({ dir: at, nodeId, ...(clusterId ? { clusterId } : {}) });
    open.push(s);
    return s;
  }
  async function reopen(s: LevelRaftStorage): Promise<LevelRaftStorage> {
    await s.close();
    return openStorage(s.identity.nodeId);
  }

  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), 'weft-storage-'));
    dir = join(root, 'raft');
  });
  afterEach(async () => {
    for (const s of open.splice(0)) await s.close();
    await rm(root, { recursive: true, force: true });
  });

  it('starts empty in a new directory and round-trips hard state across reopen', async () => {
    let s = await openStorage();
    assert.equal(s.created, true);
    assert.equal(s.firstIndex(), 1);
    assert.equal(s.lastIndex(), 0);
    assert.equal(s.term(0), 0);
    assert.deepEqual(s.initialState().hardState, { term: 0, vote: '', commit: 0 });
    await s.save({ hardState: { term: 5, vote: 'n2', commit: 0 } });
    await s.save({ entries: range(1, 3, 5), hardState: { term: 5, vote: 'n2', commit: 2 } });
    s = await reopen(s);
    assert.equal(s.created, false);
    assert.deepEqual(s.initialState().hardState, { term: 5, vote: 'n2', commit: 2 });
    assert.equal(s.lastIndex(), 3);
    assert.deepEqual(s.entries(1, 4, Infinity).map(text), ['e1t5', 'e2t5', 'e3t5']);
    assert.equal(s.stats.batches, 0, 'stats count this open only');
  });

  it('truncates a conflicting suffix, also across reopen', async () => {
    let s = await openStorage();
    await s.save({ entries: range(1, 6, 1) });
    await s.save({ entries: [entry(4, 2), entry(5, 2)] }); // replaces 4..6, drops 6
    assert.equal(s.lastIndex(), 5);
    assert.deepEqual(
      s.entries(3, 6, Infinity).map((e) => [e.index, e.term]),
      [
        [3, 1],
        [4, 2],
        [5, 2],
      ],
    );
    s = await reopen(s);
    assert.equal(s.lastIndex(), 5);
    assert.equal(s.term(5), 2);
    assert.throws(() => s.term(6), UnavailableError);
    await s.save({ entries: [entry(2, 3)] });
    s = await reopen(s);
    assert.equal(s.lastIndex(), 2);
    assert.equal(s.term(2), 3);
  });

  it('refuses to append past the end of the log (a gap)', async () => {
    const s = await openStorage();
    await s.save({ entries: range(1, 2, 1) });
    await assert.rejects(s.save({ entries: [entry(4, 1)] }), /gap/);
    assert.equal(s.lastIndex(), 2, 'a refused save changes nothing');
    await s.save({ entries: [entry(3, 1)] }); // later writes still work
    assert.equal(s.lastIndex(), 3);
  });

  it('serves entries(lo, hi, maxBytes) with CompactedError and UnavailableError', async () => {
    const s = await openStorage();
    await s.save({ entries: range(1, 10, 1) });
    assert.deepEqual(
      s.entries(2, 5, Infinity).map((e) => e.index),
      [2, 3, 4],
    );
    assert.equal(s.entries(3, 3, Infinity).length, 0);
    // Each entry counts its payload (4 bytes) plus the core's 16-byte header estimate.
    assert.equal(s.entries(1, 11, 40).length, 2);
    assert.equal(s.entries(1, 11, 1).length, 1, 'at least one entry even over maxBytes');
    assert.throws(() => s.entries(5, 12, Infinity), UnavailableError);
    assert.throws(() => s.entries(0, 2, Infinity), CompactedError);
    await s.createSnapshot(6, conf(['n1']), new Uint8Array([9]));
    await s.compact(6);
    assert.equal(s.firstIndex(), 7);
    assert.throws(() => s.entries(6, 8, Infinity), CompactedError);
    assert.throws(() => s.term(5), CompactedError);
    assert.equal(s.term(6), 1, 'the term of the compaction point stays known');
    assert.deepEqual(
      s.entries(7, 11, Infinity).map((e) => e.index),
      [7, 8, 9, 10],
    );
  });

  it('compacts only what a snapshot covers and keeps it after reopen', async () => {
    let s = await openStorage();
    await s.save({ entries: [...range(1, 4, 1), ...range(5, 8, 2)] });
    await assert.rejects(s.compact(3), /latest snapshot is at 0/);
    const snap = await s.createSnapshot(5, conf(['n1', 'n2', 'n3']), new Uint8Array([1, 2, 3]));
    assert.deepEqual(snap.metadata, { index: 5, term: 2, confState: conf(['n1', 'n2', 'n3']) });
    await assert.rejects(s.compact(6), /latest snapshot is at 5/);
    await s.compact(4); // keep a little behind the snapshot
    assert.equal(s.firstIndex(), 5);
    await s.compact(5);
    await s.compact(2); // older point: no-op
    s = await reopen(s);
    assert.equal(s.firstIndex(), 6);
    assert.equal(s.lastIndex(), 8);
    assert.equal(s.term(5), 2);
    assert.deepEqual(s.snapshot().metadata.index, 5);
    assert.deepEqual([...s.snapshot().data], [1, 2, 3]);
    assert.deepEqual(s.initialState().confState.voters, ['n1', 'n2', 'n3']);
    // Deleted keys are really gone from LevelDB, not only hidden in memory.
    await s.close();
    const raw = new ClassicLevel<Uint8Array, Uint8Array>(dir, { keyEncoding: 'view', valueEncoding: 'view' });
    const logKeys: number[] = [];
    for await (const key of raw.sublevel<Uint8Array, Uint8Array>('log', { keyEncoding: 'view' }).keys()) {
      logKeys.push(new DataView(key.buffer, key.byteOffset).getUint32(4));
    }
    await raw.close();
    assert.deepEqual(logKeys, [6, 7, 8]);
  });

  it('a snapshot records a commit index at least its own (the node writes commit-only changes lazily)', async () => {
    let s = await openStorage();
    await s.save({ hardState: { term: 2, vote: 'n1', commit: 3 }, entries: range(1, 8, 2) });
    await s.createSnapshot(6, conf(['n1']), new Uint8Array([6]));
    s = await reopen(s);
    assert.deepEqual(s.initialState().hardState, { term: 2, vote: 'n1', commit: 6 });
    // A stored commit index beyond the snapshot stays as it is.
    await s.save({ hardState: { term: 2, vote: 'n1', commit: 8 } });
    await s.createSnapshot(7, conf(['n1']), new Uint8Array([7]));
    s = await reopen(s);
    assert.equal(s.initialState().hardState.commit, 8);
  });

  it('installs a received snapshot: replaces the log, and later entries append after it', async () => {
    let s = await openStorage();
    await s.save({ entries: range(1, 5, 1) });
    await s.save({
      snapshot: {
        metadata: { index: 20, term: 3, confState: conf(['n1', 'n2']) },
        data: new Uint8Array([7]),
      },
      hardState: { term: 3, vote: '', commit: 20 },
    });
    assert.equal(s.firstIndex(), 21);
    assert.equal(s.lastIndex(), 20);
    assert.equal(s.term(20), 3);
    await s.save({ entries: range(21, 22, 3), hardState: { term: 3, vote: '', commit: 22 } });
    s = await reopen(s);
    assert.equal(s.firstIndex(), 21);
    assert.equal(s.lastIndex(), 22);
    assert.equal(s.snapshot().metadata.index, 20);
    assert.deepEqual(s.initialState().hardState, { term: 3, vote: '', commit: 22 });
    await assert.rejects(
      s.save({ snapshot: { metadata: { index: 10, term: 3, confState: conf([]) }, data: new Uint8Array() } }),
      /not newer/,
    );
  });

  it('bootstraps a new store with the initial voters, and only a new store', async () => {
    let s = await openStorage();
    await s.bootstrap(['n3', 'n1', 'n2']);
    s = await reopen(s);
    assert.deepEqual(s.initialState().confState.voters, ['n1', 'n2', 'n3']);
    assert.equal(s.snapshot().metadata.index, 1);
    assert.equal(s.firstIndex(), 2);
    assert.equal(s.initialState().hardState.commit, 1);
    await assert.rejects(s.bootstrap(['n1']), /already holds state/);
  });

  describe('refuses a damaged or foreign data directory', () => {
    async function expectRefused(problem: RegExp, nodeId = 'n1', clusterId?: string): Promise<void> {
      await assert.rejects(openStorage(nodeId, clusterId), (err: Error) => {
        assert.ok(err instanceof StorageOpenError, `expected StorageOpenError, got ${err}`);
        assert.ok(err.message.includes(dir), `message names the directory: ${err.message}`);
        assert.match(err.message, problem);
        return true;
      });
    }
    async function populated(): Promise<void> {
      const s = await LevelRaftStorage.open({ dir, nodeId: 'n1', clusterId: 'c1', raftId: '127.0.0.1:7001' });
      await s.save({ entries: range(1, 5, 1), hardState: { term: 1, vote: 'n1', commit: 5 } });
      await s.close();
    }
    async function rawPut(
      sublevel: string,
      key: string | Uint8Array,
      value: Uint8Array | null,
    ): Promise<void> {
      const raw = new ClassicLevel<string, Uint8Array>(dir, { valueEncoding: 'view' });
      const sub = raw.sublevel<string | Uint8Array, Uint8Array>(sublevel, {
        keyEncoding: typeof key === 'string' ? 'utf8' : 'view',
        valueEncoding: 'view',
      });
      if (value === null) await sub.del(key);
      else await sub.put(key, value);
      await raw.close();
    }

    it('of another node, another cluster or another Raft member', async () => {
      await populated();
      await expectRefused(/belongs to node "n1", not "n2"/, 'n2');
      await expectRefused(/belongs to cluster "c1", not "c2"/, 'n1', 'c2');
      await assert.rejects(
        LevelRaftStorage.open({ dir, nodeId: 'n1', raftId: '127.0.0.1:9' }),
        /holds the state of Raft member 127\.0\.0\.1:7001, not 127\.0\.0\.1:9/,
      );
      const s = await openStorage('n1', 'c1');
      assert.equal(s.lastIndex(), 5, 'refusals left the data intact');
    });

    it('a path that is a file, or a directory of other files', async () => {
      await writeFile(dir, 'not a database');
      await expectRefused(/is a file, not a directory/);
      await rm(dir);
      await import('node:fs/promises').then((fs) => fs.mkdir(dir));
      await writeFile(join(dir, 'notes.txt'), 'hello');
      await expectRefused(/not a LevelDB database \(no CURRENT file\)/);
      assert.deepEqual(await readdir(dir), ['notes.txt'], 'nothing was created over the files');
    });

    it('a LevelDB database of another program', async () => {
      const raw = new ClassicLevel(dir);
      await raw.put('user:1', 'alice');
      await raw.close();
      await expectRefused(/no weft-kv format record/);
    });

    it('a wrong magic or a future format version', async () => {
      await populated();
      await rawPut('meta', 'format', encodeRecord({ magic: 'something-else', version: 1 }));
      await expectRefused(/wrong magic "something-else"/);
      await rawPut('meta', 'format', encodeRecord({ magic: 'weft-kv/raft-storage', version: 99 }));
      await expectRefused(/format version 99 is not supported/);
    });

    it('missing entries (a gap, or committed entries absent)', async () => {
      await populated();
      await rawPut('log', encodeIndexKey(3), null);
      await expectRefused(/log entries 3\.\.3 are missing/);
      await rawPut('log', encodeIndexKey(3), encodeRecord({ term: 1, type: 0, data: new Uint8Array([1]) }));
      await rawPut('log', encodeIndexKey(5), null);
      await expectRefused(/committed index 5 is beyond the last log entry 4/);
    });

    it('a corrupt record (checksum mismatch) and a missing identity', async () => {
      await populated();
      const good = encodeRecord({ term: 1, type: 0, data: new Uint8Array([1, 2, 3]) });
      const bad = good.slice();
      bad[bad.length - 1] ^= 0xff;
      await rawPut('log', encodeIndexKey(2), bad);
      await expectRefused(/log entry 2: checksum mismatch/);
      await rawPut('log', encodeIndexKey(2), good);
      await rawPut('meta', 'identity', null);
      await expectRefused(/identity record is missing/);
    });

    it('a damaged LevelDB (CURRENT points nowhere)', async () => {
      await populated();
      const current = await readFile(join(dir, 'CURRENT'), 'utf8');
      await writeFile(join(dir, 'CURRENT'), current.replace(/\d+/, '999999'));
      await expectRefused(/LevelDB cannot open it/);
    });

    it('a directory already open by another process (lock held)', async () => {
      const first = await openStorage();
      await assert.rejects(LevelRaftStorage.open({ dir, nodeId: 'n1' }), /locked|cannot open/);
      assert.equal(first.lastIndex(), 0);
    });
  });

  it('shares one synced batch per save however many entries it carries', async () => {
    const s = await openStorage();
    await s.save({ entries: range(1, 100, 1), hardState: { term: 1, vote: 'n1', commit: 0 } });
    assert.equal(s.stats.syncedBatches, 1);
    assert.equal(s.stats.entriesWritten, 100);
    // Saves issued concurrently are applied in order.
    await Promise.all([s.save({ entries: [entry(101, 1)] }), s.save({ entries: [entry(102, 1)] })]);
    assert.equal(s.lastIndex(), 102);
  });

  it('checksums records with standard CRC-32, so stores written by earlier builds still open', () => {
    // The CRC-32 check value (IEEE 802.3 / zlib), and the checksum in front of a record.
    assert.equal(crc32(new TextEncoder().encode('123456789')), 0xcbf43926);
    const record = encodeRecord({ term: 3, type: 0, data: new Uint8Array([1, 2]) });
    assert.equal(Buffer.from(record).readUInt32BE(0), crc32(record.subarray(4)));
  });
});
