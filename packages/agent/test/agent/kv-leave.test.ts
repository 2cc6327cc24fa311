// Graceful leave and client agents taking freed slots, on five agents' KV
// components as `weft agent` builds them (real KvNodes: LevelDB on disk,
// libp2p on loopback; the client a real KvClient) with --voters 3
// --learners 1: a voter leaves → the learner is a voter, the client a
// learner; the agent that left, restarted, finds the cluster full and runs
// as a client.
import assert from 'node:assert/strict';
import { access, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { waitUntil } from '@weft/kv/testing/wait-until';
import type { KvNodeComponent } from '../../src/agent/kv-component.js';
import { loopbackKvAgents } from './kv-agents.js';

const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array | undefined) => (b ? new TextDecoder().decode(b) : undefined);
const exists = (path: string) =>
  access(path).then(
    () => true,
    () => false,
  );

describe('KV leave and refill: five agents with --voters 3 --learners 1 (real KV nodes)', function () {
  this.timeout(90_000);
  let root: string;
  const running = new Set<KvNodeComponent>();

  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), 'weft-kv-leave-'));
  });
  afterEach(async () => {
    await Promise.all([...running].map((c) => c.stop()));
    running.clear();
    await rm(root, { recursive: true, force: true });
  });

  /** Three voters, then the learner, then the client (in that order, so each gets that role). */
  async function startFive() {
    const { addresses, component } = await loopbackKvAgents(root, 5, { voters: 3, learners: 1 });
    const agents = [0, 1, 2, 3, 4].map((i) => component(i, { clientMode: true }));
    await Promise.all(agents.slice(0, 3).map((a) => a.start()));
    await agents[3]!.start();
    await agents[4]!.start();
    for (const a of agents) running.add(a);
    return { addresses, component, agents };
  }

  it('a voter leaves: the learner becomes a voter, the client a learner; restarted, the one that left is a client', async () => {
    const { addresses, component, agents } = await startFive();
    assert.deepEqual(
      agents.map((a) => a.kvRole),
      ['voter', 'voter', 'voter', 'learner', 'client'],
    );
    await agents[4]!.put('leave/before', enc('1'));

    // The leader leaves: the hardest case (it hands leadership over first).
    const leaving = await waitUntil('a leader', () =>
      agents.slice(0, 3).find((a) => a.node.status().role === 'leader'),
    );
    const gone = addresses[agents.indexOf(leaving)]!;
    await leaving.leave();
    await leaving.stop();
    running.delete(leaving);

    const stay = agents.filter((a) => a !== leaving);
    const roles = () => {
      const s = stay[0]!.node.status();
      return { voters: [...s.voters].sort(), learners: [...s.learners].sort() };
    };
    // Applied by the leader and the one that left before leave() returns; by the others a moment later.
    await waitUntil('the others to apply the removal', () => !roles().voters.includes(gone) || undefined);
    assert.deepEqual(
      roles().voters,
      [addresses[3]!, ...addresses.slice(0, 3).filter((a) => a !== gone)].sort(),
    );
    // The client takes the learner slot the promotion freed (it checks every 2 s).
    await waitUntil(
      'the client to become a learner',
      () => agents[4]!.kvRole === 'learner' || undefined,
      20_000,
    );
    assert.deepEqual(roles().learners, [addresses[4]!]);
    assert.equal(await exists(join(root, 'h4', 'kv-role')), false, 'its client role is forgotten');
    // It serves the store from its own replica now, caught up.
    assert.equal(dec((await agents[4]!.get('leave/before', { stale: true }))?.value), '1');
    assert.equal(await agents[4]!.put('leave/after', enc('2')), true);

    // The agent that left, restarted from its data directory: every slot is taken, so it is a client.
    const back = component(agents.indexOf(leaving), { clientMode: true });
    await back.start();
    running.add(back);
    assert.equal(back.kvRole, 'client');
    assert.equal(await exists(join(root, `h${agents.indexOf(leaving)}`, 'kv-role')), true);
    assert.equal(dec((await back.get('leave/after'))?.value), '2');
  });

  it('a learner leaves: a client takes its slot; restarted while a slot is free, the one that left joins again', async () => {
    const { addresses, component, agents } = await startFive();
    assert.equal(agents[4]!.kvRole, 'client');

    await agents[3]!.leave();
    await agents[3]!.stop();
    running.delete(agents[3]!);
    await waitUntil(
      'the client to become a learner',
      () => agents[4]!.kvRole === 'learner' || undefined,
      20_000,
    );

    // A voter leaves with no learner to spare... the new learner is promoted in its place.
    await agents[2]!.leave();
    await agents[2]!.stop();
    running.delete(agents[2]!);
    const voters = () => [...agents[0]!.node.status().voters].sort();
    const expected = [addresses[0]!, addresses[1]!, addresses[4]!].sort();
    await waitUntil('agent 0 to apply the promotion and the removal', () =>
      voters().join() === expected.join() ? true : undefined,
    );

    // The learner that left comes back while the learner slot is free: it joins again with its data.
    const back = component(3, { clientMode: true });
    await back.start();
    running.add(back);
    assert.equal(back.kvRole, 'learner');
  });
});

describe('KV leave with --keep-raft-membership (real KV nodes)', function () {
  this.timeout(60_000);
  let root: string;
  const running = new Set<KvNodeComponent>();
  afterEach(async () => {
    await Promise.all([...running].map((c) => c.stop()));
    running.clear();
    await rm(root, { recursive: true, force: true });
  });

  it('a leader that keeps its membership hands leadership over and stays a voter; restarted, it is a voter', async () => {
    root = await mkdtemp(join(tmpdir(), 'weft-kv-keep-'));
    const { addresses, component } = await loopbackKvAgents(root, 3, { voters: 3, learners: 1 });
    const agents = [0, 1, 2].map((i) => component(i, { keepRaftMembership: true }));
    await Promise.all(agents.map((a) => a.start()));
    for (const a of agents) running.add(a);
    const leader = await waitUntil('a leader', () => agents.find((a) => a.node.status().role === 'leader'));
    const i = agents.indexOf(leader);
    await leader.leave();
    const other = agents.find((a) => a !== leader)!;
    assert.notEqual(other.node.status().leader, addresses[i], 'leadership moved');
    await leader.stop();
    running.delete(leader);
    assert.ok(other.node.status().voters.includes(addresses[i]!), 'still a voter');
    const back = component(i, { keepRaftMembership: true });
    await back.start();
    running.add(back);
    assert.equal(back.kvRole, 'voter');
  });
});
