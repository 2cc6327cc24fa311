// Graceful leave on real agents in namespace hosts, with --voters 3
// --learners 1 and five hosts (three voters, a learner, a client): SIGTERM
// of the KV leader's agent removes it from the Raft configuration at once
// (not after the dead-voter threshold), the learner takes its voter slot and
// the client the learner slot; writes keep working; restarted, the agent
// that left finds every slot taken and runs as a client.
import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import { type AgentHandle, eventually } from './harness/agents.js';
import { type Cluster, runPrefix, skipUnlessReady, startCluster } from './harness/cluster.js';
import { httpd, makePageDir, weftRun, wget } from './harness/commands.js';

interface MemberJson {
  name: string;
  role: string;
  alive: boolean;
  leader: boolean;
}

describe('graceful leave: five agents, --voters 3 --learners 1 (e2e, namespaces)', function () {
  this.timeout(240_000);
  let cluster: Cluster;
  let pageDir: string;

  before(async function () {
    skipUnlessReady(this);
    pageDir = await makePageDir('leave', { 'index.html': 'served across the switch\n' });
    cluster = await startCluster(runPrefix('v'), {
      hosts: 5,
      // Far away: every membership change seen here comes from the leave, not from the autopilot's dead-voter rule.
      extraArgs: ['--voters', '3', '--learners', '1', '--dead-voter-threshold', '600000'],
    });
  });
  after(async () => {
    await cluster?.destroy();
    if (pageDir) await rm(pageDir, { recursive: true, force: true });
  });

  const ipKey = (ip: string) => ip.split('.').reduce((n, o) => n * 256 + Number(o), 0);
  const byAddress = () => [...cluster.agents].sort((a, b) => ipKey(a.host.ip) - ipKey(b.host.ip));
  const roleOf = (list: MemberJson[], name: string) => list.find((m) => m.name === name)?.role;

  it('SIGTERM of the leader: it is removed, the learner is a voter, the client a learner; restarted, it is a client', async () => {
    const agents = byAddress();
    const names = agents.map((a) => a.host.name);
    const members = async (i: number) =>
      JSON.parse(await agents[i]!.mustWeft(['--format', 'json', 'members'])) as MemberJson[];
    const start = await eventually('every host registered with its role', async () => {
      const l = await members(4);
      return names.every((n) => l.some((m) => m.name === n && m.alive)) ? l : undefined;
    });
    // The three lowest addresses are voters; of the other two, the first to join took the learner slot.
    assert.deepEqual(
      names.slice(0, 3).map((n) => roleOf(start, n)),
      ['voter', 'voter', 'voter'],
    );
    assert.deepEqual(
      names
        .slice(3)
        .map((n) => roleOf(start, n))
        .sort(),
      ['client', 'learner'],
    );
    const victim = agents.find((a) => a.host.name === start.find((m) => m.leader)?.name)!;
    const withRole = (role: string) => agents.find((a) => roleOf(start, a.host.name) === role)!;
    const [learner, client] = [withRole('learner'), withRole('client')];
    // A container on the client host, to be served on across its switch from client to replica.
    await client.mustWeft(['network', 'create', '--subnet', '198.18.43.0/24', 'v-web']);
    await client.mustWeft(weftRun('detach', 'v-web', 'vweb', httpd(pageDir)));

    assert.equal(await victim.kill('SIGTERM'), 0, victim.logTail());
    const after = await eventually(
      'the learner to be a voter and the client a learner',
      async () => {
        const l = await members(agents.indexOf(learner));
        return roleOf(l, learner.host.name) === 'voter' && roleOf(l, client.host.name) === 'learner'
          ? l
          : undefined;
      },
      30_000,
    );
    // Gone from the configuration and from the hosts: not listed at all (a dead voter would be, not alive).
    assert.equal(roleOf(after, victim.host.name), undefined, JSON.stringify(after));
    assert.equal(after.filter((m) => m.role === 'voter' && m.alive).length, 3);
    // The configuration lists it as soon as it joined; the agent switches its store once caught up.
    await eventually('the client host to serve from its replica', async () => {
      const s = JSON.parse(await client.mustWeft(['--format', 'json', 'status'])) as { role: string };
      return s.role === 'learner' || undefined;
    });
    await client.mustWeft(['network', 'create', '--subnet', '198.18.41.0/24', 'v-net']);
    assert.match(await learner.mustWeft(['network', 'ls']), /v-net/);
    // Its container stayed registered and reachable by name.
    const page = await learner.weftUntilOk(weftRun('rm', 'v-web', 'vget', wget('http://vweb')), 30_000);
    assert.equal(page, 'served across the switch\n');
    assert.match(await client.mustWeft(['ps']), /vweb/);

    // Restarted with the same name and data directory: every slot is taken, so it runs as a client.
    victim.start();
    await victim.waitReady(90_000);
    const back = JSON.parse(await victim.mustWeft(['--format', 'json', 'status'])) as { role: string };
    assert.equal(back.role, 'client');
    assert.match(await victim.mustWeft(['network', 'ls']), /v-net/);
  });
});

describe('graceful leave: two of three voters stopped at once (e2e, namespaces)', function () {
  this.timeout(240_000);
  let cluster: Cluster;

  before(async function () {
    skipUnlessReady(this);
    cluster = await startCluster(runPrefix('w'), {
      hosts: 3,
      extraArgs: ['--voters', '3', '--dead-voter-threshold', '600000'],
    });
  });
  after(async () => {
    await cluster?.destroy();
  });

  it('both leave one after the other, the third carries on alone; restarted, both are voters again', async () => {
    const [stay, ...leaving] = cluster.agents as [AgentHandle, AgentHandle, AgentHandle];
    await eventually('a leader', async () => {
      const s = JSON.parse(await stay.mustWeft(['--format', 'json', 'status'])) as { leader: string };
      return s.leader !== '' || undefined;
    });
    // Both at once (one of them may lead): neither may leave the third without a quorum.
    const codes = await Promise.all(leaving.map((a) => a.kill('SIGTERM')));
    assert.deepEqual(codes, [0, 0], leaving.map((a) => a.logTail()).join('\n'));
    // Both removed from the configuration before they exited; their host records go with the watch.
    await eventually('the third alone, leading', async () => {
      const l = JSON.parse(await stay.mustWeft(['--format', 'json', 'members'])) as MemberJson[];
      return (
        l.map((m) => `${m.name}:${m.role}:${m.leader}`).join() === `${stay.host.name}:voter:true` || undefined
      );
    });
    await stay.mustWeft(['network', 'create', '--subnet', '198.18.42.0/24', 'w-net']);

    // Back with their data directories: they join as learners and are promoted into the free voter slots.
    for (const a of leaving) a.start();
    await Promise.all(leaving.map((a) => a.waitReady(90_000)));
    const again = await eventually(
      'three voters again',
      async () => {
        const l = JSON.parse(await stay.mustWeft(['--format', 'json', 'members'])) as MemberJson[];
        return l.filter((m) => m.role === 'voter' && m.alive).length === 3 ? l : undefined;
      },
      60_000,
    );
    assert.equal(again.length, 3);
    assert.match(await leaving[0].mustWeft(['network', 'ls']), /w-net/);
  });
});
