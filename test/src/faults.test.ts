// Faults on real agents in namespace hosts: an agent killed with -9 while
// the others go on, the KV leader killed under live container traffic, and
// a dead host's containers vanishing from everyone's DNS and peer table.
import assert from 'node:assert/strict';
import type { AgentHandle } from './harness/agents.js';
import { eventually } from './harness/agents.js';
import { type Cluster, runPrefix, skipUnlessReady, startCluster } from './harness/cluster.js';
import { pingOnce, weftRun } from './harness/commands.js';

interface StatusJson {
  name: string;
  role: string;
  leader: string;
  term: number;
}
interface NetworkJson {
  id: string;
  name: string;
  endpoints?: { host: string; container: string; ip: string }[];
}
interface ContainerJson {
  name: string;
  sandbox: string;
  endpoints: { ip: string }[];
}

describe('faults: kill -9, leader loss, dead hosts (e2e, namespaces)', function () {
  this.timeout(240_000);
  let cluster: Cluster;

  before(async function () {
    skipUnlessReady(this);
    cluster = await startCluster(runPrefix('f'), { hosts: 3 });
    await cluster.agents[0]!.mustWeft(['network', 'create', '--subnet', '198.18.30.0/24', 'f-net']);
  });
  after(async () => {
    await cluster?.destroy();
  });

  const status = async (a: AgentHandle) =>
    JSON.parse(await a.mustWeft(['--format', 'json', 'status'])) as StatusJson;
  const live = () => cluster.agents.filter((a) => a.running);
  async function leaderAgent(): Promise<AgentHandle> {
    return eventually('a leader', async () => {
      const s = await status(live()[0]!);
      return cluster.agents.find((a) => a.running && a.host.name === s.leader);
    });
  }
  async function restart(a: AgentHandle): Promise<void> {
    a.start();
    await a.waitReady(90_000);
  }
  const container = async (a: AgentHandle, name: string) =>
    (JSON.parse(await a.mustWeft(['--format', 'json', 'ps'])) as ContainerJson[]).find(
      (c) => c.name === name,
    ) as ContainerJson;

  it('kill -9 of an agent without containers: the others still create networks; on restart it has all state', async () => {
    const leader = await leaderAgent();
    const victim = cluster.agents.find((a) => a !== leader) as AgentHandle;
    const before = JSON.parse(await victim.mustWeft(['--format', 'json', 'network', 'ls'])) as NetworkJson[];
    await victim.kill('SIGKILL');
    const survivor = cluster.agents.find((a) => a.running && a !== leader) as AgentHandle;
    const id = (
      await survivor.mustWeft(['network', 'create', '--subnet', '198.18.31.0/24', 'while-down'])
    ).trim();
    const ls = await leader.mustWeft(['network', 'ls']);
    assert.match(ls, /while-down/);

    await restart(victim);
    const after = await eventually('while-down on the restarted host', async () => {
      const nets = JSON.parse(await victim.mustWeft(['--format', 'json', 'network', 'ls'])) as NetworkJson[];
      return nets.some((n) => n.id === id) ? nets : undefined;
    });
    for (const n of before)
      assert.ok(
        after.some((m) => m.id === n.id && m.name === n.name),
        `network ${n.name} survived the restart`,
      );
    const members = JSON.parse(await victim.mustWeft(['--format', 'json', 'members'])) as {
      alive: boolean;
    }[];
    assert.equal(members.filter((m) => m.alive).length, 3);

    // Every host holds each network's bridge and VXLAN device, containers there or not (a first
    // container then only wires itself): made on restart for the network created meanwhile,
    // exactly once each, and removed with the network.
    const devicesOf = async (netId: string) => {
      const links = (await cluster.lab.exec(victim.host.netns, ['ip', '-o', 'link', 'show'])).stdout;
      const short = netId.slice(0, 8);
      return {
        bridge: (links.match(new RegExp(`: wb-${short}[:@]`, 'g')) ?? []).length,
        vxlan: (links.match(new RegExp(`: wx-${short}[:@]`, 'g')) ?? []).length,
      };
    };
    for (const n of after) {
      await eventually(`${n.name}'s devices on the restarted host`, async () => {
        const have = await devicesOf(n.id);
        return have.bridge === 1 && have.vxlan === 1 ? true : undefined;
      });
    }
    await survivor.mustWeft(['network', 'rm', 'while-down']);
    await eventually('while-down devices removed', async () => {
      const have = await devicesOf(id);
      return have.bridge === 0 && have.vxlan === 0 ? true : undefined;
    });
    assert.deepEqual(await devicesOf(after.find((n) => n.name === 'f-net')!.id), { bridge: 1, vxlan: 1 });
  });

  it('kill -9 of the KV leader: container traffic keeps flowing; attaches work again after re-election', async () => {
    const leader = await leaderAgent();
    const [p, q] = cluster.agents.filter((a) => a !== leader) as [AgentHandle, AgentHandle];
    await p.mustWeft(weftRun('detach', 'f-net', 'steady', ['sleep', '600']));
    await q.mustWeft(weftRun('detach', 'f-net', 'talker', ['sleep', '600']));
    const target = (await container(p, 'steady')).endpoints[0]!.ip;
    const talker = await container(q, 'talker');
    await eventually('talker reaches steady', async () => {
      const r = await cluster.lab.exec(talker.sandbox, ['busybox', 'ping', '-c', '1', '-W', '1', target]);
      return r.code === 0 ? true : undefined;
    });

    // 40 pings over 8 s, with the leader killed one second in.
    const pinging = cluster.lab.exec(
      talker.sandbox,
      ['busybox', 'ping', '-c', '40', '-i', '0.2', '-W', '1', target],
      {
        timeoutMs: 30_000,
      },
    );
    await new Promise((r) => setTimeout(r, 1_000));
    await leader.kill('SIGKILL');
    const ping = await pinging;
    const received = Number(/(\d+) (?:packets )?received/.exec(ping.stdout)?.[1] ?? -1);
    assert.equal(
      received,
      40,
      `every ping answered while the control plane lost its leader:\n${ping.stdout}`,
    );

    const newLeader = await eventually('a new leader among the survivors', async () => {
      const s = await status(p);
      return s.leader && s.leader !== leader.host.name ? s.leader : undefined;
    });
    assert.ok([p.host.name, q.host.name].includes(newLeader));
    const page = await q.weftUntilOk(weftRun('rm', 'f-net', 'late', pingOnce('steady')), 30_000);
    assert.match(page, /1 packets received/);
    await restart(leader);
  });

  it("a dead host's containers disappear from every other host's DNS and peer table", async () => {
    const [victim, ...others] = cluster.agents as [AgentHandle, ...AgentHandle[]];
    await victim.mustWeft(weftRun('detach', 'f-net', 'doomed', ['sleep', '600']));
    const observer = others[0] as AgentHandle;
    await observer.mustWeft(weftRun('detach', 'f-net', 'observer', ['sleep', '600']));
    const obs = await container(observer, 'observer');
    const resolves = async () =>
      (await cluster.lab.exec(obs.sandbox, ['busybox', 'nslookup', 'doomed'])).stdout;
    await eventually('doomed resolvable from another host', async () =>
      (await resolves()).match(/Address: 198\.18\.30\.\d+/) ? true : undefined,
    );

    await victim.kill('SIGKILL');
    for (const o of others) {
      await eventually(
        `${victim.host.name}'s endpoints gone from ${o.host.name}`,
        async () => {
          const net = (JSON.parse(await o.mustWeft(['network', 'inspect', 'f-net'])) as NetworkJson[])[0];
          const inApi = (net?.endpoints ?? []).some((e) => e.host === victim.host.name);
          const fdb = await cluster.lab.exec(o.host.netns, ['bridge', 'fdb', 'show']);
          const inFdb = fdb.stdout.split('\n').some((l) => l.includes(`dst ${victim.host.ip} `));
          return !inApi && !inFdb ? true : undefined;
        },
        60_000,
        250,
      );
    }
    const answer = await resolves();
    assert.doesNotMatch(answer, /Address: 198\.18\.30\.\d+/, `doomed no longer resolves:\n${answer}`);
  });
  it('kill -9 and restart of a host with a container: attached again, reachable by name, no duplicate devices', async () => {
    const [, keeperHost, asker] = cluster.agents as [AgentHandle, AgentHandle, AgentHandle];
    for (const a of cluster.agents) if (!a.running) await restart(a); // a quorum must outlive the kill
    await keeperHost.mustWeft(weftRun('detach', 'f-net', 'keeper', ['sleep', '600']));
    const before = await container(keeperHost, 'keeper');
    /** Host-side veths: one per endpoint (wv…) and one per container with endpoints (wg…). */
    const vethCounts = async () => {
      const links = (await cluster.lab.exec(keeperHost.host.netns, ['ip', '-o', 'link', 'show'])).stdout;
      return {
        endpoint: (links.match(/: wv[0-9a-f]{12}@/g) ?? []).length,
        gateway: (links.match(/: wg[0-9a-f]{12}@/g) ?? []).length,
      };
    };
    const expectedVeths = async () => {
      const all = JSON.parse(
        await keeperHost.mustWeft(['--format', 'json', 'ps', '--all']),
      ) as ContainerJson[];
      return {
        endpoint: all.reduce((n, c) => n + c.endpoints.length, 0),
        gateway: all.filter((c) => c.endpoints.length > 0).length,
      };
    };

    const endpointsBefore = await expectedVeths();
    await keeperHost.kill('SIGKILL');
    // Wait until the others have reclaimed its endpoints (its session expired).
    await eventually(
      'keeper reclaimed',
      async () => {
        const net = (JSON.parse(await asker.mustWeft(['network', 'inspect', 'f-net'])) as NetworkJson[])[0];
        return (net?.endpoints ?? []).some((e) => e.container === 'keeper') ? undefined : true;
      },
      60_000,
      250,
    );
    await restart(keeperHost);
    const after = await eventually('keeper attached again', async () => {
      const c = await container(keeperHost, 'keeper');
      return c && c.endpoints.length === 1 ? c : undefined;
    });
    assert.equal(after.sandbox, before.sandbox, 'same container namespace');
    // Every container is back with exactly one veth per endpoint: reconcile made no duplicates.
    await eventually('one veth per endpoint', async () => {
      const [have, want] = [await vethCounts(), await expectedVeths()];
      if (have.endpoint !== want.endpoint || have.gateway !== want.gateway) {
        throw new Error(
          `veths ${JSON.stringify(have)}, endpoints ${JSON.stringify(want)}\n${keeperHost.logTail(20)}`,
        );
      }
      return true;
    });
    assert.deepEqual(await expectedVeths(), endpointsBefore, 'every container on the host is attached again');
    const out = await asker.weftUntilOk(weftRun('rm', 'f-net', 'probe', pingOnce('keeper')), 30_000);
    assert.match(out, new RegExp(`\\(${after.endpoints[0]!.ip.replace(/\./g, '\\.')}\\)`));
  });
});
