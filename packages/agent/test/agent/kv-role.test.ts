// Which part each agent plays in the KV store: the plan every agent computes
// alone, then five agents' KV components as `weft agent` builds them (real
// KvNodes: LevelDB on disk, libp2p on loopback; the client a real KvClient)
// with --voters 3 --learners 1.
import assert from 'node:assert/strict';
import { access, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { waitUntil } from '@weft/kv/testing/wait-until';
import type { KvNodeComponent } from '../../src/agent/kv-component.js';
import { clientRank, planKvBootstrap, sortAddresses } from '../../src/agent/kv-role.js';
import { loopbackKvAgents } from './kv-agents.js';

describe('KV roles: the bootstrap plan', () => {
  it('every agent computes the same initial voters from its own address and the same peers', () => {
    const all = ['192.0.2.10:8300', '192.0.2.9:8300', '192.0.2.11:8300', '192.0.2.2:8300', '192.0.2.30:8300'];
    const plans = all.map((self) =>
      planKvBootstrap(
        self,
        all.filter((a) => a !== self),
        3,
      ),
    );
    for (const p of plans)
      assert.deepEqual(p.initialVoters, ['192.0.2.2:8300', '192.0.2.9:8300', '192.0.2.10:8300']);
    assert.deepEqual(
      plans.map((p) => p.bootstrap),
      [true, true, false, true, false],
    );
    // Agents outside the voters join through them first, then through anyone else known.
    assert.deepEqual(plans[2]!.joinThrough, [
      '192.0.2.2:8300',
      '192.0.2.9:8300',
      '192.0.2.10:8300',
      '192.0.2.30:8300',
    ]);
    assert.deepEqual(plans[0]!.joinThrough, []);
  });

  it('with fewer agents than --voters, every agent is an initial voter', () => {
    const p = planKvBootstrap('192.0.2.5:8300', ['192.0.2.4:8300'], 5);
    assert.deepEqual(p.initialVoters, ['192.0.2.4:8300', '192.0.2.5:8300']);
    assert.equal(p.bootstrap, true);
  });

  it('ranks clients (agents outside the Raft configuration) by address: the first takes a free slot first', () => {
    const all = ['192.0.2.10:8300', '192.0.2.9:8300', '192.0.2.2:8300', '192.0.2.30:8300', '192.0.2.4:8300'];
    const members = ['192.0.2.2:8300', '192.0.2.4:8300', '192.0.2.10:8300'];
    assert.equal(clientRank('192.0.2.9:8300', all, members), 0);
    assert.equal(clientRank('192.0.2.30:8300', all, members), 1);
    // A client missing from the list (e.g. another --raft-port) does not wait for anyone.
    assert.equal(clientRank('192.0.2.99:8300', all, members), 0);
  });

  it('orders by address, then port, and drops duplicates (an agent listed in its own --peers)', () => {
    assert.deepEqual(sortAddresses(['127.0.0.1:9000', '127.0.0.1:800', '10.0.0.1:1', '127.0.0.1:800']), [
      '10.0.0.1:1',
      '127.0.0.1:800',
      '127.0.0.1:9000',
    ]);
  });
});

describe('KV roles: five agents with --voters 3 --learners 1 (real KV nodes)', function () {
  this.timeout(90_000);
  let root: string;
  const running: KvNodeComponent[] = [];

  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), 'weft-kv-roles-'));
  });
  afterEach(async () => {
    await Promise.all(running.splice(0).map((c) => c.stop()));
    await rm(root, { recursive: true, force: true });
  });

  it('the first three (sorted) are voters, the fourth a learner, the fifth a client; restarts keep the roles', async () => {
    // Each agent lists every other one, in its own order.
    const { addresses, component: agent } = await loopbackKvAgents(root, 5, {
      voters: 3,
      learners: 1,
      reversePeers: true,
    });
    const component = (i: number, clientMode: boolean) => agent(i, { clientMode });

    const agents = [0, 1, 2, 3, 4].map((i) => component(i, false));
    // The voters form the cluster on their own; the others join through them.
    await Promise.all(agents.slice(0, 3).map((a) => a.start()));
    running.push(...agents.slice(0, 3));
    await agents[3]!.start();
    running.push(agents[3]!);
    assert.deepEqual(
      agents.slice(0, 4).map((a) => a.kvRole),
      ['voter', 'voter', 'voter', 'learner'],
    );
    assert.deepEqual(agents[0]!.node.status().voters.sort(), addresses.slice(0, 3).sort());
    await agents[0]!.put('roles/probe', new TextEncoder().encode('x'));

    // No slot for the fifth: without client mode it refuses to start, saying why.
    await assert.rejects(agents[4]!.start(), (err: Error) => {
      assert.match(err.message, /must run as a client of the KV store/);
      assert.match(err.message, /3 voters \(maxVoters 3\) and 1 learners \(maxLearners 1\)/);
      return true;
    });
    await access(join(root, 'h4', 'kv-role'));

    // With client mode it runs as a client of the members, and a restart does not ask for a slot again.
    const client = component(4, true);
    await client.start();
    running.push(client);
    assert.equal(client.kvRole, 'client');
    assert.equal(client.isOpen, false);
    assert.deepEqual(client.servers, addresses.slice(0, 4));
    assert.equal(new TextDecoder().decode((await client.get('roles/probe'))?.value), 'x');
    // It sees the members' roles through a server (what `weft members` shows on a client host).
    const seen = (await client.raftMembers())?.map((m) => `${m.address}:${m.role}`).sort();
    assert.deepEqual(
      seen,
      [...addresses.slice(0, 3).map((a) => `${a}:voter`), `${addresses[3]}:learner`].sort(),
    );

    // A learner restarted from its data directory is still a learner (not re-bootstrapped, not re-joined).
    await agents[3]!.stop();
    running.splice(running.indexOf(agents[3]!), 1);
    const learnerAgain = component(3, false);
    await learnerAgain.start();
    running.push(learnerAgain);
    assert.equal(learnerAgain.kvRole, 'learner');
    await waitUntil(
      'the restarted learner to catch up',
      () =>
        learnerAgain.node.status().appliedIndex >= agents[0]!.node.status().commitIndex ? true : undefined,
      20_000,
    );
    assert.equal(
      new TextDecoder().decode((await learnerAgain.get('roles/probe', { stale: true }))?.value),
      'x',
    );
  });

  it('a learner removed while down, whose slot was taken, stops on restart with the typed error and records the client role', async () => {
    const { addresses, component: agent } = await loopbackKvAgents(root, 5, { voters: 3, learners: 1 });
    const component = (i: number) => agent(i);
    const agents = [0, 1, 2].map(component);
    await Promise.all(agents.map((a) => a.start()));
    running.push(...agents);
    const learner = component(3);
    await learner.start();
    assert.equal(learner.kvRole, 'learner');
    await agents[0]!.put('roles/probe', new TextEncoder().encode('x'));
    // Caught up, so its data directory holds the cluster's state (a still-empty one would just join anew).
    await waitUntil(
      'the learner to catch up',
      () => (learner.node.status().appliedIndex >= agents[0]!.node.status().commitIndex ? true : undefined),
      20_000,
    );
    await learner.stop();
    // While it is down the leader drops it (as the autopilot does with a silent learner) and another agent takes the slot.
    const leader = await waitUntil(
      'a leader',
      () => agents.find((a) => a.node.status().role === 'leader'),
      20_000,
    );
    await leader.node.removeMember(addresses[3]!);
    const newcomer = component(4);
    await newcomer.start();
    running.push(newcomer);
    assert.equal(newcomer.kvRole, 'learner');

    const again = component(3);
    let fatal: Error | undefined;
    again.onFatal((e) => {
      fatal = e;
    });
    await again.start(); // its data directory says learner: it opens, then finds out
    running.push(again);
    const err = await waitUntil('the restarted learner to stop with a fatal error', () => fatal, 20_000);
    assert.equal((err as { code?: string }).code, 'membership-full');
    assert.match(err.message, /3 voters \(maxVoters 3\) and 1 learners \(maxLearners 1\)/);
    await waitUntil(
      'the client role to be recorded',
      async () => {
        try {
          await access(join(root, 'h3', 'kv-role'));
          return true;
        } catch {
          return undefined;
        }
      },
      20_000,
    );
  });
});
