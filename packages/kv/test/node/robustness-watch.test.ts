// watchKey: one key's changes as an async iterator, on any replica.
import assert from 'node:assert/strict';
import type { KeyWatchEvent } from '../../src/api/node.js';
import { dec, enc, RobustCluster } from './robustness-cluster.js';

/** Pulls events from an iterator one at a time, with a bound on each wait. */
function puller(iterable: AsyncIterable<KeyWatchEvent>) {
  const it = iterable[Symbol.asyncIterator]();
  let waiting: Promise<IteratorResult<KeyWatchEvent>> | undefined;
  return {
    async next(timeoutMs = 5_000): Promise<KeyWatchEvent | 'done' | 'nothing'> {
      waiting ??= it.next();
      const r = await Promise.race([
        waiting,
        new Promise<'nothing'>((resolve) => setTimeout(() => resolve('nothing'), timeoutMs)),
      ]);
      if (r === 'nothing') return r;
      waiting = undefined;
      return r.done ? 'done' : r.value;
    },
  };
}

describe('KvNode.watchKey', function () {
  this.timeout(30_000);
  let cluster: RobustCluster | undefined;
  afterEach(async () => {
    await cluster?.destroy();
    cluster = undefined;
  });

  it('yields the entry now, on each write and delete of the key, not for other keys, and ends on abort', async () => {
    cluster = await RobustCluster.create(['127.0.0.1:17161', '127.0.0.1:17162', '127.0.0.1:17163']);
    await cluster.startAll();
    const leader = await cluster.leader();
    const follower = await cluster.followerOf(leader);
    const abort = new AbortController();
    const events = puller(follower.watchKey('w/k', { signal: abort.signal }));

    const first = await events.next();
    assert.ok(first !== 'done' && first !== 'nothing');
    assert.equal(first.entry, null, 'absent at first');
    await leader.put('w/other', enc('x'));
    assert.equal(await events.next(300), 'nothing', 'a write to another key does not wake it');

    await leader.put('w/k', enc('1'));
    const created = await events.next();
    assert.ok(created !== 'done' && created !== 'nothing');
    assert.equal(dec(created.entry?.value), '1');
    assert.equal(created.index, created.entry?.modifyIndex);

    await leader.put('w/k', enc('2'));
    const updated = await events.next();
    assert.ok(updated !== 'done' && updated !== 'nothing');
    assert.equal(dec(updated.entry?.value), '2');
    assert.ok(updated.index > created.index);

    await leader.delete('w/k');
    const deleted = await events.next();
    assert.ok(deleted !== 'done' && deleted !== 'nothing');
    assert.equal(deleted.entry, null);

    abort.abort();
    assert.equal(await events.next(), 'done', 'abort ends the iteration');
  });

  it('with an index, waits for the next change after it (a blocking query)', async () => {
    cluster = await RobustCluster.create(['127.0.0.1:17171']);
    const [node] = await cluster.startAll();
    await cluster.leader();
    await node!.put('w/k', enc('a'));
    const { index } = (await node!.getIndexed('w/k'))!;
    const abort = new AbortController();
    const events = puller(node!.watchKey('w/k', { index, signal: abort.signal }));
    assert.equal(await events.next(300), 'nothing', 'nothing new after the index yet');
    await node!.put('w/k', enc('b'));
    const next = await events.next();
    assert.ok(next !== 'done' && next !== 'nothing');
    assert.equal(dec(next.entry?.value), 'b');
    abort.abort();
    await node!.close();
    assert.equal(await events.next(), 'done');
  });
});
