// Consul's server/client split on real agents in namespace hosts: with
// --voters 3 --learners 0, the fourth agent replicates nothing and uses the
// store through the servers (a KvClient over the cluster's libp2p). It
// registers, creates networks, serves `weft kv`, runs containers that
// containers on other hosts reach by name, and keeps working after the KV
// leader is killed -9.
import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import { eventually } from './harness/agents.js';
import { type Cluster, runPrefix, skipUnlessReady, startCluster } from './harness/cluster.js';
import { httpd, makePageDir, weftRun, wget } from './harness/commands.js';

interface MemberJson {
  name: string;
  role: string;
  alive: boolean;
  leader: boolean;
}

describe('KV client agent: four agents, --voters 3 --learners 0 (e2e, namespaces)', function () {
  this.timeout(240_000);
  let cluster: Cluster;
  let pageDir: string;

  before(async function () {
    skipUnlessReady(this);
    pageDir = await makePageDir('client', { 'index.html': 'served from the client host\n' });
    cluster = await startCluster(runPrefix('c'), {
      hosts: 4,
      extraArgs: ['--voters', '3', '--learners', '0', '--dead-voter-threshold', '600000'],
    });
  });
  after(async () => {
    await cluster?.destroy();
    if (pageDir) await rm(pageDir, { recursive: true, force: true });
  });

  const ipKey = (ip: string) => ip.split('.').reduce((n, o) => n * 256 + Number(o), 0);
  const byAddress = () => [...cluster.agents].sort((a, b) => ipKey(a.host.ip) - ipKey(b.host.ip));
  const members = async (agentIndex: number) =>
    JSON.parse(await byAddress()[agentIndex]!.mustWeft(['--format', 'json', 'members'])) as MemberJson[];

  it('the fourth agent is a client: status and members say so, and it works like the others', async () => {
    const agents = byAddress();
    const client = agents[3]!;
    const status = JSON.parse(await client.mustWeft(['--format', 'json', 'status'])) as {
      role: string;
      leader: string;
    };
    assert.equal(status.role, 'client');
    assert.ok(
      agents.slice(0, 3).some((a) => a.host.name === status.leader),
      `the client names a voter as leader (${status.leader})`,
    );
    const list = await eventually('every host registered', async () => {
      const l = await members(3);
      return l.length === 4 ? l : undefined;
    });
    assert.deepEqual(
      agents.map((a) => list.find((m) => m.name === a.host.name)?.role),
      ['voter', 'voter', 'voter', 'client'],
    );

    await client.mustWeft(['network', 'create', '--subnet', '198.18.41.0/24', 'c-net']);
    assert.match(await agents[0]!.mustWeft(['network', 'ls']), /c-net/);
    // `weft kv` on the client host goes to a server through the client.
    await client.mustWeft(['kv', 'put', 'demo/greeting', 'hello']);
    assert.equal((await agents[1]!.mustWeft(['kv', 'get', 'demo/greeting'])).trim(), 'hello');
    await agents[2]!.mustWeft(['kv', 'put', 'demo/reply', 'hi']);
    assert.equal((await client.mustWeft(['kv', 'get', 'demo/reply'])).trim(), 'hi');
  });

  it('a container on the client host serves a container on a voter host, by name', async () => {
    const agents = byAddress();
    const client = agents[3]!;
    await client.mustWeft(weftRun('detach', 'c-net', 'cweb', httpd(pageDir)));
    const page = await agents[0]!.weftUntilOk(weftRun('rm', 'c-net', 'cget', wget('http://cweb')), 30_000);
    assert.equal(page, 'served from the client host\n');
    await client.mustWeft(['rm', 'cweb']);
  });

  it('kill -9 of the KV leader: the client host stays registered and creates networks through another server', async () => {
    const agents = byAddress();
    const client = agents[3]!;
    const leaderName = (await members(3)).find((m) => m.leader)!.name;
    const victim = agents.find((a) => a.host.name === leaderName)!;
    await victim.kill('SIGKILL');
    await client.weftUntilOk(['network', 'create', '--subnet', '198.18.42.0/24', 'c-net2'], 60_000);
    const other = agents.find((a) => a !== victim && a !== client)!;
    await eventually(
      'c-net2 on a surviving server',
      async () => ((await other.mustWeft(['network', 'ls'])).includes('c-net2') ? true : undefined),
      30_000,
    );
    // Longer than the host TTL (4 s): the client's session renewals reach a server.
    await new Promise((r) => setTimeout(r, 6_000));
    const list = JSON.parse(await other.mustWeft(['--format', 'json', 'members'])) as MemberJson[];
    assert.equal(list.find((m) => m.name === client.host.name)?.alive, true);
    assert.equal(list.find((m) => m.name === client.host.name)?.role, 'client');
  });
});
