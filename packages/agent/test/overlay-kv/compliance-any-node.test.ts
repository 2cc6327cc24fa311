// The overlay's KvStore compliance suite on a real 3-node cluster with every
// call going to the next node in turn (leader or follower): a write through
// one node, then a read, renewal, lock or watch through another, as happens
// when hosts share state. ../agent/kvnode-store.test.ts runs the suite
// through a single follower; this checks that what one node acknowledged is
// what every other node answers.

import { type LoopbackCluster, openLoopbackCluster } from '@weft/kv/testing/loopback-cluster';
import type { KvStore } from '@weft/overlay';
import { kvStoreComplianceSuite } from '@weft/overlay/testing/kvstore-compliance';
import { KvNodeStore } from '../../src/kv-adapter/kvnode-store.js';

/** A KvStore that sends each call to the next of several stores. */
function roundRobin(stores: KvStore[]): KvStore {
  let next = 0;
  const pick = () => stores[next++ % stores.length] as KvStore;
  return {
    get: (key, opts) => pick().get(key, opts),
    list: (prefix, opts) => pick().list(prefix, opts),
    put: (key, value, opts) => pick().put(key, value, opts),
    delete: (key, opts) => pick().delete(key, opts),
    txn: (ops) => pick().txn(ops),
    createSession: (opts) => pick().createSession(opts),
    renewSession: (id) => pick().renewSession(id),
    destroySession: (id) => pick().destroySession(id),
    watch: (prefix, opts) => pick().watch(prefix, opts),
  };
}

describe('KvNodeStore on a real 3-node KvNode cluster, each call through the next node', function () {
  this.timeout(120_000);
  let cluster: LoopbackCluster | undefined;
  before(async () => {
    cluster = await openLoopbackCluster(3);
  });
  after(async () => {
    await cluster?.close();
  });
  kvStoreComplianceSuite(
    'KvNodeStore (3 nodes, round robin)',
    async () => ({
      store: roundRobin((cluster?.nodes ?? []).map((n) => new KvNodeStore(n))),
      close: async () => {},
    }),
    { sessionTtlMs: 1_000, expirySlackMs: 2_000 },
  );
});
