import { ManualClock } from '../src/clock.js';
import { kvStoreComplianceSuite } from '../src/testing/kvstore-compliance.js';
import { MemoryKvStore } from '../src/testing/memory-kvstore.js';

kvStoreComplianceSuite('MemoryKvStore (manual clock)', async () => {
  const clock = new ManualClock();
  const store = new MemoryKvStore({ clock });
  return { store, advanceTimeMs: (ms) => clock.advance(ms), close: async () => store.close() };
});

kvStoreComplianceSuite(
  'MemoryKvStore (real time)',
  async () => {
    const store = new MemoryKvStore();
    return { store, close: async () => store.close() };
  },
  { sessionTtlMs: 300, expirySlackMs: 500 },
);
