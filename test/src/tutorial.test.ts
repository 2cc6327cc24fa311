// The tutorial from the README, run for real: three hosts (network
// namespaces on 192.0.2.0/24), one `weft agent` each started with the others
// as peers, no external store; an overlay network made on host1 is usable
// everywhere, containers find each other by name, and reach the outside
// through the per-host gateway bridge with NAT.
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { rm } from 'node:fs/promises';
import { eventually } from './harness/agents.js';
import { type Cluster, runPrefix, skipUnlessReady, startCluster } from './harness/cluster.js';
import { httpd, makePageDir, pingOnce, weftRun, wget } from './harness/commands.js';
import { outsideIp } from './harness/lab.js';

describe('tutorial: three hosts, one overlay network (e2e, namespaces)', function () {
  this.timeout(180_000);
  let cluster: Cluster;
  let pageDir: string;
  let outsideServer: ChildProcess | undefined;

  before(async function () {
    skipUnlessReady(this);
    pageDir = await makePageDir('tutorial', {
      'index.html': 'hello from web on host1\n',
      'outside.html': 'hello from outside\n',
    });
    cluster = await startCluster(runPrefix('t'), { hosts: 3 });
  });

  after(async () => {
    outsideServer?.kill('SIGKILL');
    await cluster?.destroy();
    if (pageDir) await rm(pageDir, { recursive: true, force: true });
  });

  const host = (i: number) => cluster.agents[i - 1]!;

  it('all three agents are members of one cluster with a leader', async () => {
    const members = JSON.parse(await host(2).mustWeft(['--format', 'json', 'members'])) as {
      name: string;
      alive: boolean;
      leader: boolean;
    }[];
    assert.deepEqual(members.map((m) => m.name).sort(), cluster.lab.hosts.map((h) => h.name).sort());
    assert.ok(members.every((m) => m.alive));
    assert.equal(members.filter((m) => m.leader).length, 1);
  });

  it('the replicated KV store is one store: put on host1, get on host3 (Consul-compatible API)', async () => {
    const put = await host(1).mustWeft(['kv', 'put', 'tutorial/greeting', 'hello weft']);
    assert.equal(put, 'Success! Data written to: tutorial/greeting\n');
    assert.equal(await host(3).mustWeft(['kv', 'get', 'tutorial/greeting']), 'hello weft\n');
    assert.match(
      await host(2).mustWeft(['kv', 'ls', 'tutorial/']),
      /^KEY\s+VALUE\s+MODIFY INDEX\ntutorial\/greeting\s+hello weft\s+\d+\n$/,
    );
    await host(2).mustWeft(['kv', 'rm', 'tutorial/greeting']);
    const missing = await host(1).weft(['kv', 'get', 'tutorial/greeting']);
    assert.equal(missing.code, 1);
    assert.equal(missing.stderr, 'Error: key "tutorial/greeting" not found\n');
  });

  it('each agent serves Prometheus metrics on its API address', async () => {
    const r = await cluster.lab.exec(host(1).host.netns, wget('http://127.0.0.1:8500/metrics'));
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^weft_raft_term [1-9]\d*$/m);
    assert.match(r.stdout, /^weft_raft_applied_index [1-9]\d*$/m);
    assert.match(r.stdout, /^weft_peers 3$/m);
    assert.match(r.stdout, /^weft_kv_operations_total\{op="(get|put|list)",outcome="ok"\} [1-9]\d*$/m);
  });

  it('a network created on host1 is listed on host2 with the same ID', async () => {
    const id = (
      await host(1).mustWeft(['network', 'create', '-d', 'overlay', '--subnet', '198.18.9.0/24', 'my-net'])
    ).trim();
    assert.match(id, /^[0-9a-f]{64}$/);
    const row = await eventually('my-net on host2', async () => {
      const ls = await host(2).mustWeft(['network', 'ls']);
      return ls.split('\n').find((l) => /\bmy-net\b/.test(l));
    });
    assert.ok(row.startsWith(id.slice(0, 12)), `host2 shows ${row}, host1 created ${id}`);
    const inspected = JSON.parse(await host(3).mustWeft(['network', 'inspect', 'my-net']));
    assert.equal(inspected[0].id, id);
    assert.equal(inspected[0].subnet, '198.18.9.0/24');
    const dup = await host(2).weft(['network', 'create', '--subnet', '198.18.10.0/24', 'my-net']);
    assert.equal(dup.code, 1);
    assert.match(dup.stderr, /^Error: .*my-net.*already exists/);
  });

  it('from host2, `weft run --rm --net my-net -- wget -O- http://web` prints the page served on host1', async () => {
    await host(1).mustWeft(weftRun('detach', 'my-net', 'web', httpd(pageDir)));
    const ps = JSON.parse(await host(1).mustWeft(['--format', 'json', 'ps'])) as {
      name: string;
      state: string;
      endpoints: { ip: string }[];
    }[];
    const web = ps.find((c) => c.name === 'web');
    assert.equal(web?.state, 'running');
    assert.match(web?.endpoints[0]?.ip ?? '', /^198\.18\.9\.\d+$/);
    const page = await host(2).weftUntilOk(weftRun('rm', 'my-net', 'client', wget('http://web')), 30_000);
    assert.equal(page, 'hello from web on host1\n');
    const left = JSON.parse(await host(2).mustWeft(['--format', 'json', 'ps', '--all'])) as unknown[];
    assert.equal(left.length, 0, '--rm removed the client container');
  });

  it('names resolve across hosts as mongo and mongo.my-net', async () => {
    await host(3).mustWeft(weftRun('detach', 'my-net', 'mongo', ['sleep', '600']));
    const mongo = JSON.parse(await host(3).mustWeft(['--format', 'json', 'ps'])).find(
      (c: { name: string }) => c.name === 'mongo',
    ) as { endpoints: { ip: string }[] };
    const mongoIp = mongo.endpoints[0]!.ip;
    for (const name of ['mongo', 'mongo.my-net']) {
      const out = await host(2).weftUntilOk(weftRun('rm', 'my-net', 'resolver', pingOnce(name)), 30_000);
      assert.match(
        out,
        new RegExp(`PING ${name.replace('.', '\\.')} \\(${mongoIp.replace(/\./g, '\\.')}\\)`),
      );
      assert.match(out, /1 packets received/);
    }
  });

  it('a container reaches an address outside the overlay through the gateway bridge with NAT', async () => {
    outsideServer = cluster.lab.spawnIn(cluster.lab.outsideNetns, httpd(pageDir));
    const page = await host(2).weftUntilOk(
      weftRun('rm', 'my-net', 'natprobe', wget(`http://${outsideIp}/outside.html`)),
      20_000,
    );
    assert.equal(page, 'hello from outside\n');
  });
  it('SIGTERM leaves gracefully: containers and devices removed, the others drop the host at once; it can rejoin', async () => {
    const h3 = host(3);
    const code = await h3.kill('SIGTERM');
    assert.equal(code, 0, h3.logTail());
    const devices = await cluster.lab.exec(h3.host.netns, ['ip', '-o', 'link', 'show']);
    assert.doesNotMatch(
      devices.stdout,
      /wb-|wx-|wv|wg[0-9a-f]|weft_gwbridge/,
      'no weft device left on the host',
    );
    const netns = await cluster.lab.exec(h3.host.netns, ['ip', 'netns', 'list']);
    assert.doesNotMatch(
      netns.stdout,
      new RegExp(`weft-${h3.host.name}-mongo`),
      'the container namespace is gone',
    );
    // Well within the host TTL: the session was destroyed, not left to expire.
    const inspected = JSON.parse(await host(1).mustWeft(['network', 'inspect', 'my-net']));
    assert.ok(!inspected[0].endpoints.some((e: { host: string }) => e.host === h3.host.name));
    const members = JSON.parse(await host(1).mustWeft(['--format', 'json', 'members'])) as {
      name: string;
      alive: boolean;
    }[];
    assert.equal(members.find((m) => m.name === h3.host.name)?.alive ?? false, false);
    h3.start();
    await h3.waitReady(90_000);
    const nets = await h3.mustWeft(['network', 'ls']);
    assert.match(nets, /my-net/);
  });
});
