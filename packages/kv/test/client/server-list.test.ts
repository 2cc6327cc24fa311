import assert from 'node:assert/strict';
import { ServerList } from '../../src/client/server-list.js';

/** A deterministic stand-in for Math.random. */
function seeded(seed: number): () => number {
  let x = seed;
  return () => {
    x = (x * 1103515245 + 12345) % 2 ** 31;
    return x / 2 ** 31;
  };
}

describe('ServerList (which server a KvClient uses)', () => {
  it('clients start from different shuffles, so load spreads', () => {
    const servers = ['a:1', 'b:1', 'c:1'];
    const firsts = new Set(
      Array.from({ length: 30 }, (_, i) => new ServerList(servers, seeded(i + 1)).preferred()),
    );
    assert.deepEqual([...firsts].sort(), servers);
  });

  it('a failed server goes last once, however many requests saw it fail', () => {
    const list = new ServerList(['a:1', 'b:1', 'c:1'], () => 0.99); // no swaps: order as given
    assert.deepEqual(list.all(), ['a:1', 'b:1', 'c:1']);
    list.noteFailure('a:1');
    list.noteFailure('a:1'); // a second request that was already on a:1
    assert.deepEqual(list.all(), ['b:1', 'c:1', 'a:1']);
    list.noteFailure('c:1'); // not the preferred one: no change
    assert.equal(list.preferred(), 'b:1');
  });

  it('learns reported servers, drops unreported learned ones, keeps configured ones', () => {
    const list = new ServerList(['a:1'], () => 0.99);
    list.update(['a:1', 'b:1', 'c:1']);
    assert.deepEqual(list.all(), ['a:1', 'b:1', 'c:1']);
    list.update(['b:1', 'd:1']);
    assert.deepEqual(list.all(), ['a:1', 'b:1', 'd:1']);
    assert.throws(() => new ServerList([]), /at least one server/);
  });
});
