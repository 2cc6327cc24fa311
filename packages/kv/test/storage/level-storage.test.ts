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
import {
  crc32,
  decodeRecord,
  decodeRun,
  encodeIndexKey,
  encodeRecord,
  encodeRun,
  RecordCorruptError,
} from '../../src/storage/codec.js';
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
  /** The first indexes of the log records on disk (the store must be closed). */
  async function logKeys(): Promise<number[]> {
    const raw = new ClassicLevel<Uint8Array, Uint8Array>(dir, { keyEncoding: 'view', valueEncoding: 'view' });
    const keys: number[] = [];
    for await (const key of raw.sublevel<Uint8Array, Uint8Array>('log', { keyEncoding: 'view' }).keys()) {
      keys.push(new DataView(key.buffer, key.byteOffset).getUint32(4));
    }
    await raw.close();
    return keys;
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
    assert.deepEqual(
      s.entries(1, 3, Infinity).map((e) => [e.index, e.term, text(e)]),
      [
        [1, 1, 'e1t1'],
        [2, 3, 'e2t3'],
      ],
    );
    await s.close();
    // One run per save: the run at 1 stays (its tail superseded), the one at 4 went with the rewrite at 2.
    assert.deepEqual(await logKeys(), [1, 2]);
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
    await s.save({ entries: range(1, 4, 1) });
    await s.save({ entries: range(5, 8, 2) });
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
    // The run of 1..4 is really gone from LevelDB, not only hidden in memory;
    // the run of 5..8 stays (entries 6..8 are live) and was read past 5 above.
    await s.close();
    assert.deepEqual(await logKeys(), [5]);
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
      // Three saves: runs at 1 (1..2), 3 (3) and 4 (4..5).
      await s.save({ entries: range(1, 2, 1) });
      await s.save({ entries: range(3, 3, 1) });
      await s.save({ entries: range(4, 5, 1), hardState: { term: 1, vote: 'n1', commit: 5 } });
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
      await rawPut('log', encodeIndexKey(3), encodeRun([{ term: 1, type: 0, data: new Uint8Array([1]) }]));
      await rawPut('log', encodeIndexKey(4), null);
      await expectRefused(/committed index 5 is beyond the last log entry 3/);
    });

    it('a corrupt record (checksum mismatch) and a missing identity', async () => {
      await populated();
      const good = encodeRun([{ term: 1, type: 0, data: new Uint8Array([1, 2, 3]) }]);
      const bad = good.slice();
      bad[bad.length - 1] ^= 0xff;
      await rawPut('log', encodeIndexKey(3), bad);
      await expectRefused(/log record 3: checksum mismatch/);
      await rawPut('log', encodeIndexKey(3), good);
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

  describe('run records (format 2)', () => {
    it('round-trip terms beyond 32 bits, both entry types and empty data', () => {
      const run = [
        { term: 2 ** 40 + 7, type: EntryType.Normal, data: new Uint8Array([1, 2, 3]) },
        { term: 2 ** 40 + 7, type: EntryType.ConfChange, data: new Uint8Array(0) },
      ];
      const decoded = decodeRun(encodeRun(run), 'run');
      assert.deepEqual(
        decoded.map((e) => [e.term, e.type, [...e.data]]),
        [
          [2 ** 40 + 7, EntryType.Normal, [1, 2, 3]],
          [2 ** 40 + 7, EntryType.ConfChange, []],
        ],
      );
    });

    it('refuse a record whose structure does not add up, naming it', () => {
      // Valid checksums over wrong contents: what a bug, not a flipped bit, would write.
      const withCrc = (payload: number[]): Uint8Array => {
        const out = new Uint8Array(4 + payload.length);
        out.set(payload, 4);
        new DataView(out.buffer).setUint32(0, crc32(out.subarray(4)));
        return out;
      };
      const cases: [number[], RegExp][] = [
        [[0, 0, 0, 0], /log record 9: the run holds no entries/],
        [[0, 0, 0, 1, 0, 0], /entry 0 of 1 is cut off/],
        [
          [0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 5, 1],
          /claims 5 bytes, more than the record has left/,
        ],
        [[0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 9], /1 bytes follow the last entry/],
      ];
      for (const [payload, problem] of cases) {
        assert.throws(
          () => decodeRun(withCrc(payload), 'log record 9'),
          (err: Error) => err instanceof RecordCorruptError && problem.test(err.message),
        );
      }
    });

    it('splits a large save into runs of at most 1 MiB, read back whole', async () => {
      let s = await openStorage();
      const big = (index: number) => ({ ...entry(index, 1), data: new Uint8Array(600_000).fill(index) });
      await s.save({ entries: [big(1), big(2), entry(3, 1), big(4)] });
      s = await reopen(s);
      assert.deepEqual(
        s.entries(1, 5, Infinity).map((e) => [e.index, e.data.length, e.data[0]]),
        [
          [1, 600_000, 1],
          [2, 600_000, 2],
          [3, 4, 101],
          [4, 600_000, 4],
        ],
      );
      await s.close();
      assert.deepEqual(await logKeys(), [1, 2, 4]);
    });

    it('refuses an entry of an unknown type', async () => {
      const s = await openStorage();
      await s.save({ entries: range(1, 2, 1) });
      await s.close();
      const raw = new ClassicLevel<string, Uint8Array>(dir, { valueEncoding: 'view' });
      await raw
        .sublevel<Uint8Array, Uint8Array>('log', { keyEncoding: 'view', valueEncoding: 'view' })
        .put(encodeIndexKey(2), encodeRun([{ term: 1, type: 7, data: new Uint8Array([1]) }]));
      await raw.close();
      await assert.rejects(openStorage(), /log entry 2 has unknown type 7/);
    });
  });

  describe('a store written by a build with format 1 (one record per entry)', () => {
    /** Writes what a format-1 build left: the metadata records and one log record per entry. */
    async function writeFormat1(options: { logStart: number; last: number; commit: number; gapAt?: number }) {
      const raw = new ClassicLevel<string, Uint8Array>(dir, { valueEncoding: 'view' });
      const meta = raw.sublevel<string, Uint8Array>('meta', { valueEncoding: 'view' });
      const log = raw.sublevel<Uint8Array, Uint8Array>('log', { keyEncoding: 'view', valueEncoding: 'view' });
      const { logStart, last, commit } = options;
      await meta.put('format', encodeRecord({ magic: 'weft-kv/raft-storage', version: 1 }));
      await meta.put('identity', encodeRecord({ nodeId: 'n1', clusterId: '', raftId: '' }));
      await meta.put('hardstate', encodeRecord({ term: 2, vote: 'n1', commit }));
      await meta.put(
        'snapshot',
        encodeRecord({
          metadata: { index: logStart, term: logStart > 0 ? 1 : 0, confState: conf(['n1']) },
          data: new Uint8Array([logStart]),
        }),
      );
      await meta.put('logstart', encodeRecord({ index: logStart, term: logStart > 0 ? 1 : 0 }));
      for (let i = logStart + 1; i <= last; i++) {
        if (i === options.gapAt) continue;
        const e = entry(i, i <= 3 ? 1 : 2);
        await log.put(encodeIndexKey(i), encodeRecord({ term: e.term, type: e.type, data: e.data }));
      }
      await raw.close();
    }
    async function formatVersion(): Promise<unknown> {
      const raw = new ClassicLevel<string, Uint8Array>(dir, { valueEncoding: 'view' });
      const bytes = await raw.sublevel<string, Uint8Array>('meta', { valueEncoding: 'view' }).get('format');
      await raw.close();
      return (decodeRecord(bytes!, 'format record') as { version: unknown }).version;
    }

    it('is rewritten as runs at open, atomically, and reads the same', async () => {
      await writeFormat1({ logStart: 2, last: 7, commit: 6 });
      let s = await openStorage();
      const expected = [
        [3, 1, 'e3t1'],
        [4, 2, 'e4t2'],
        [5, 2, 'e5t2'],
        [6, 2, 'e6t2'],
        [7, 2, 'e7t2'],
      ];
      const view = (st: LevelRaftStorage) =>
        st.entries(3, 8, Infinity).map((e) => [e.index, e.term, text(e)]);
      assert.deepEqual(view(s), expected);
      assert.equal(s.term(2), 1);
      assert.deepEqual(s.initialState().hardState, { term: 2, vote: 'n1', commit: 6 });
      s = await reopen(s);
      assert.deepEqual(view(s), expected);
      await s.save({ entries: [entry(6, 3)] }); // a conflicting rewrite in the migrated run
      s = await reopen(s);
      assert.equal(s.lastIndex(), 6);
      assert.equal(s.term(6), 3);
      await s.close();
      assert.deepEqual(await logKeys(), [3, 6]);
      assert.equal(await formatVersion(), 2);
    });

    it('is refused without being rewritten when it is damaged', async () => {
      await writeFormat1({ logStart: 0, last: 5, commit: 5, gapAt: 4 });
      await assert.rejects(openStorage(), /log entries 4\.\.4 are missing/);
      assert.equal(await formatVersion(), 1);
      assert.deepEqual(await logKeys(), [1, 2, 3, 5]);
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
