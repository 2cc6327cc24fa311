// `weft agent --dataplane userspace` end to end, and mixed clusters: one
// kernel host and two hosts whose VXLAN is carried by the native engine
// (TAP ⇄ UDP) instead of the kernel's device. One cluster serves both cases
// to keep the suite short: userspace ⇄ userspace and kernel ⇄ userspace.
import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import type { AgentHandle } from './harness/agents.js';
import { type Cluster, runPrefix, skipUnlessReady, startCluster } from './harness/cluster.js';
import { httpd, makePageDir, weftRun, wget } from './harness/commands.js';

describe('userspace data plane and a mixed kernel/userspace cluster (e2e, namespaces)', function () {
  this.timeout(180_000);
  let cluster: Cluster;
  let pageDir: string;
  let k: AgentHandle;
  let u1: AgentHandle;
  let u2: AgentHandle;

  /** `wget http://<name>` from a fresh container on `from`: what a user would run. (No `-T`: busybox wget crashes on SIGALRM with it.) */
  const fetch = (from: AgentHandle, name: string) =>
    from.weftUntilOk(
      weftRun('rm', 'mixed', `get-${name}-${from.host.name.slice(-2)}`, wget(`http://${name}`)),
      60_000,
    );

  before(async function () {
    skipUnlessReady(this);
    pageDir = await makePageDir('mixed', { 'index.html': 'served over VXLAN\n' });
    cluster = await startCluster(runPrefix('u'), {
      hosts: 3,
      dataplanes: ['kernel', 'userspace', 'userspace'],
    });
    [k, u1, u2] = cluster.agents as [AgentHandle, AgentHandle, AgentHandle];
    await k.mustWeft(['network', 'create', '--subnet', '198.18.40.0/24', 'mixed']);
    await k.mustWeft(weftRun('detach', 'mixed', 'kweb', httpd(pageDir)));
    await u1.mustWeft(weftRun('detach', 'mixed', 'uweb', httpd(pageDir)));
  });
  after(async () => {
    await cluster?.destroy();
    if (pageDir) await rm(pageDir, { recursive: true, force: true });
  });

  it('each host runs the data plane it was started with', async () => {
    const plane = async (a: AgentHandle) =>
      (JSON.parse(await a.mustWeft(['--format', 'json', 'status'])) as { dataplane: string }).dataplane;
    assert.deepEqual(await Promise.all([k, u1, u2].map(plane)), ['kernel', 'userspace', 'userspace']);
    const taps = await cluster.lab.exec(u1.host.netns, ['ip', '-o', 'link', 'show', 'type', 'tun']);
    assert.match(taps.stdout, /: wt-[0-9a-f]{8}[:@]/, 'the userspace host carries the network on a TAP');
    const vx = await cluster.lab.exec(k.host.netns, ['ip', '-o', 'link', 'show', 'type', 'vxlan']);
    assert.match(vx.stdout, /: wx-[0-9a-f]{8}[:@]/, 'the kernel host carries the network on a vxlan device');
  });

  it('containers on two userspace hosts fetch each other’s pages by name', async () => {
    assert.equal(await fetch(u2, 'uweb'), 'served over VXLAN\n');
  });

  it('mixed: a userspace host’s container fetches a page from a kernel host’s container by name, and back', async () => {
    assert.equal(await fetch(u1, 'kweb'), 'served over VXLAN\n');
    assert.equal(await fetch(k, 'uweb'), 'served over VXLAN\n');
  });
});
