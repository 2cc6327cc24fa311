// Child process for the kill -9 recovery test: opens the storage, then writes
// synced batches (appends, conflicting rewrites, snapshots + compaction) in a
// loop forever. Before each write it prints the state the write will produce
// ("begin"), after the write resolves the state that is now durable ("ack").
// The parent SIGKILLs it at a random moment and checks the reopened store.

import { seededFloats } from '../../src/raft/rand.js';
import { type Entry, EntryType } from '../../src/raft/types.js';
import { LevelRaftStorage } from '../../src/storage/level-storage.js';
import { logDigest, type WriterState, writerState } from './crash-digest.js';

const [dir, seedText] = process.argv.slice(2);
if (!dir || !seedText) throw new Error('usage: crash-writer DIR SEED');
// Reproducible from the seed the parent prints on failure.
const random = seededFloats(Number(seedText));
const pick = (n: number) => Math.floor(random() * n);

function entryData(index: number, term: number): Uint8Array {
  return new TextEncoder().encode(`${index}/${term}/${'x'.repeat(pick(200))}`);
}

const storage = await LevelRaftStorage.open({ dir, nodeId: 'crash-node', clusterId: 'crash-cluster' });
process.stdout.write(`ready ${JSON.stringify(writerState(storage, 0))}\n`);
for (let seq = 1; ; seq++) {
  const hs = storage.hardState();
  const last = storage.lastIndex();
  const roll = random();
  if (roll < 0.08 && hs.commit > storage.snapshot().metadata.index) {
    // Snapshot then compaction: two writes, each announced, so a kill between
    // them is a legal state too.
    const snapshotted = { ...writerState(storage, seq), snapshotIndex: hs.commit };
    process.stdout.write(`begin ${JSON.stringify(snapshotted)}\n`);
    await storage.createSnapshot(
      hs.commit,
      { voters: ['crash-node'], learners: [], votersOutgoing: [], learnersNext: [], autoLeave: false },
      new Uint8Array([seq & 0xff]),
    );
    process.stdout.write(`ack ${JSON.stringify(writerState(storage, seq))}\n`);
    seq++;
    const compacted = {
      ...writerState(storage, seq),
      first: hs.commit + 1,
      digest: logDigest(storage, [], hs.commit + 1),
    };
    process.stdout.write(`begin ${JSON.stringify(compacted)}\n`);
    await storage.compact(hs.commit);
    process.stdout.write(`ack ${JSON.stringify(writerState(storage, seq))}\n`);
    continue;
  }
  let term = hs.term;
  let from = last + 1;
  if (roll < 0.2 && last > hs.commit) {
    // A new leader overwrites an uncommitted suffix.
    term += 1;
    from = hs.commit + 1 + pick(last - hs.commit);
  } else if (term === 0) {
    term = 1;
  }
  const count = 1 + pick(20);
  const entries: Entry[] = [];
  for (let i = 0; i < count; i++)
    entries.push({ index: from + i, term, type: EntryType.Normal, data: entryData(from + i, term) });
  const newLast = from + count - 1;
  const commit = Math.max(hs.commit, Math.min(newLast, hs.commit + pick(count + 5)));
  // Predict the result so the parent can accept either side of a torn write.
  const predicted: WriterState = {
    seq,
    first: storage.firstIndex(),
    last: newLast,
    term,
    commit,
    snapshotIndex: storage.snapshot().metadata.index,
    digest: logDigest(storage, entries),
  };
  process.stdout.write(`begin ${JSON.stringify(predicted)}\n`);
  await storage.save({ entries, hardState: { term, vote: 'crash-node', commit } });
  process.stdout.write(`ack ${JSON.stringify(writerState(storage, seq))}\n`);
}
