// Graceful leave over the real transport (libp2p on loopback, LevelDB on
// disk): a leaving voter is replaced by a learner and removed, a leaving
// leader hands over first, two of three voters leaving at once leave the
// third working alone, and a member that left joins again when reopened.
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KvNode, type KvNodeOptions } from '../../src/api/node.js';
import { KvMembershipFullError } from '../../src/api/node-errors.js';
import { freePort } from '../../src/testing/free-port.js';
import { waitUntil } from '../../src/testing/wait-until.js';
import { dec, enc } from './robustness-cluster.js';

describe('KvNode.leave over libp2p', function () {
  this.timeout(90_000);
  let root: string;
  const open = new Map<string, KvNode>();
  let addrs: string[];
  // Long: only leaves change the membership, never the dead-member rules (unless a test says so).
  let deadVoterThresholdMs = 60_000;

  const options = (address: string, extra: Partial<KvNodeOptions> = {}): KvNodeOptions => ({
    dataDir: join(root, address.replace(/[:.]/g, '_')),
    id: `n${addrs.indexOf(address)}`,
    listen: address,
    tickMs: 20,
    proposalTimeoutMs: 3_000,
    maxVoters: 3,
    maxLearners: 1,
    deadVoterThresholdMs,
    ...extra,
  });
  const node = (i: number) => open.get(addrs[i]!)!;
  const addresses = (i: number) => addrs[i]!;
  const leaderOf = () =>
    waitUntil('a leader', () => [...open.values()].find((n) => n.status().role === 'leader'));
  const membership = (n: KvNode) => {
    const s = n.status();
    return { voters: [...s.voters].sort(), learners: [...s.learners].sort() };
  };
  async function close(i: number): Promise<void> {
    await node(i).close();
    open.delete(addrs[i]!);
  }

  /** Three voters (0-2) and, with `learner`, a fourth member that joins as a learner. */
  async function start(count: 3 | 4): Promise<void> {
    addrs = await Promise.all(Array.from({ length: count }, async () => `127.0.0.1:${await freePort()}`));
    const voters = addrs.slice(0, 3);
    for (const n of await Promise.all(voters.map((a) => KvNode.open(options(a, { peers: voters })))))
      open.set(n.raftId, n);
    await leaderOf();
    if (count === 4) {
      const learner = await KvNode.open(options(addrs[3]!, { join: voters }));
      open.set(learner.raftId, learner);
      await waitUntil('the learner to join', () => membership(node(0)).learners.length === 1 || undefined);
    }
  }

  beforeEach(async () => {
    deadVoterThresholdMs = 60_000;
    root = await mkdtemp(join(tmpdir(), 'weft-kv-leave-'));
  });
  afterEach(async () => {
    await Promise.all([...open.values()].map((n) => n.close()));
    open.clear();
    await rm(root, { recursive: true, force: true });
  });

  it('a leaving follower is replaced by the learner, then removed; reopened, it joins again', async () => {
    await start(4);
    const leader = await leaderOf();
    const i = [0, 1, 2].find((j) => node(j) !== leader)!;
    const gone = addrs[i]!;
    assert.deepEqual(await node(i).leave(), { left: true });
    assert.deepEqual(membership(leader), {
      voters: [...addrs.filter((a) => a !== gone)].sort(),
      learners: [],
    });
    assert.ok(!node(i).status().voters.includes(gone), 'the leaving node applied its own removal');
    await close(i);
    assert.equal(await leader.put('k', enc('after the leave')), true);

    // Reopened from its data directory: it knows it was removed and joins again, as a learner.
    const back = await KvNode.open(options(gone));
    open.set(gone, back);
    assert.deepEqual(membership(leader).learners, [gone]);
    await waitUntil(
      'the rejoined node to catch up',
      async () => dec((await back.get('k', { stale: true }))?.value) === 'after the leave' || undefined,
    );
  });

  it('a leaving leader hands leadership over, then is removed; writes go on', async () => {
    await start(4);
    const leader = await leaderOf();
    const i = [0, 1, 2].find((j) => node(j) === leader)!;
    assert.deepEqual(await leader.leave(), { left: true });
    const next = await waitUntil('another leader', () =>
      [...open.values()].find((n) => n !== leader && n.status().role === 'leader'),
    );
    assert.equal(membership(next).voters.length, 3, 'the learner took the voter slot');
    assert.ok(!membership(next).voters.includes(addrs[i]!));
    await close(i);
    assert.equal(await next.put('k', enc('v')), true);
  });

  it('two of three voters leaving at once: the third carries on alone', async () => {
    await start(3);
    const leader = await leaderOf();
    const leaving = [0, 1, 2].filter((j) => node(j) !== leader);
    const results = await Promise.all(leaving.map((j) => node(j).leave()));
    assert.deepEqual(results, [{ left: true }, { left: true }]);
    assert.deepEqual(membership(leader), { voters: [leader.raftId], learners: [] });
    for (const j of leaving) await close(j);
    assert.equal(await leader.put('k', enc('alone')), true);
  });

  it('all three voters leaving at once: two are removed, the last stays the only voter, holding the data', async () => {
    await start(3);
    const leader = await leaderOf();
    assert.equal(await leader.put('k', enc('kept')), true);
    const results = await Promise.all([0, 1, 2].map((j) => node(j).leave()));
    assert.equal(results.filter((r) => r.left).length, 2, JSON.stringify(results));
    const last = [0, 1, 2].find((j) => !results[j]!.left)!;
    assert.match(results[last]!.reason ?? '', /only member/);
    assert.deepEqual(membership(node(last)), { voters: [addresses(last)], learners: [] });
    assert.equal(dec((await node(last).get('k'))?.value), 'kept');
  });

  it('one voter dead, another leaving: the dead one is removed first, and the last carries on alone', async () => {
    deadVoterThresholdMs = 1_000;
    await start(3);
    const leader = await leaderOf();
    const [dead, leaving] = [0, 1, 2].filter((j) => node(j) !== leader) as [number, number];
    await close(dead);
    await new Promise((r) => setTimeout(r, 1_500)); // past the threshold; no learner to replace it
    assert.equal(membership(leader).voters.length, 3, 'a dead voter without a replacement stays');
    assert.deepEqual(await node(leaving).leave(), { left: true });
    assert.deepEqual(membership(leader), { voters: [leader.raftId], learners: [] });
    await close(leaving);
    assert.equal(await leader.put('k', enc('alone')), true);
  });

  it('reopened when every slot was taken meanwhile, a member that left is refused as full', async () => {
    await start(4);
    const leader = await leaderOf();
    const i = [0, 1, 2].find((j) => node(j) !== leader)!;
    assert.deepEqual(await node(i).leave(), { left: true });
    await close(i);
    // A new member takes the learner slot the promotion freed.
    const extra = `127.0.0.1:${await freePort()}`;
    const newcomer = await KvNode.open({
      ...options(extra, { join: [leader.raftId] }),
      dataDir: join(root, 'newcomer'),
      id: 'newcomer',
    });
    open.set(extra, newcomer);
    await assert.rejects(KvNode.open(options(addrs[i]!)), KvMembershipFullError);
  });
});
