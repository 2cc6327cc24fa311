import assert from 'node:assert/strict';
import { SortedMap } from '../../src/fsm/sorted-map.js';
import { seededFloats } from '../../src/raft/rand.js';

describe('fsm: SortedMap', () => {
  it('matches a sorted reference under random inserts, overwrites and deletes (many block splits)', () => {
    const rand = seededFloats(42);
    const m = new SortedMap<number>();
    const ref = new Map<string, number>();
    for (let step = 0; step < 20_000; step++) {
      const key = `k/${Math.floor(rand() * 3000)}/${Math.floor(rand() * 3)}`;
      if (rand() < 0.3) assert.equal(m.delete(key), ref.delete(key));
      else {
        m.set(key, step);
        ref.set(key, step);
      }
    }
    const sorted = [...ref.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    assert.equal(m.size, ref.size);
    assert.deepEqual(m.entries(), sorted);
    for (const prefix of ['k/1', 'k/29', 'k/2999/', 'k/', 'x', '']) {
      assert.deepEqual(
        m.prefix(prefix),
        sorted.filter(([k]) => k.startsWith(prefix)),
        `prefix ${prefix}`,
      );
    }
  });

  it('handles the empty map and prefixes past the last key', () => {
    const m = new SortedMap<string>();
    assert.deepEqual(m.prefix(''), []);
    m.set('a', '1');
    assert.deepEqual(m.prefix('b'), []);
    assert.equal(m.delete('a'), true);
    assert.equal(m.delete('a'), false);
    assert.deepEqual(m.entries(), []);
  });
});
