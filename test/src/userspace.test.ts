// `weft agent --dataplane userspace` end to end: two hosts whose VXLAN is
// carried by the native engine (TAP ⇄ UDP) instead of the kernel's device.
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type Cluster, preflight, runPrefix, startCluster } from './harness/cluster.js';

describe('userspace data plane on two hosts (e2e, namespaces)', function () {
  this.timeout(180_000);
  let cluster: Cluster;
  let pageDir: string;

  before(async function () {
    const why = preflight();
    if (why) {
      console.log(`      skipped: ${why}`);
      this.skip();
    }
    pageDir = await mkdtemp(join(tmpdir(), 'weft-mixed-'));
    await writeFile(join(pageDir, 'index.html'), 'served over VXLAN\n');
    cluster = await startCluster(runPrefix('u'), { hosts: 2, dataplane: 'userspace' });
  });
  after(async () => {
    await cluster?.destroy();
    if (pageDir) await rm(pageDir, { recursive: true, force: true });
  });

  it('containers on two userspace hosts fetch each other’s pages by name', async () => {
    const [k, u] = cluster.agents as [Cluster['agents'][0], Cluster['agents'][0]];
    assert.equal(JSON.parse(await u.mustWeft(['--format', 'json', 'status'])).dataplane, 'userspace');
    await k.mustWeft(['network', 'create', '--subnet', '198.18.40.0/24', 'mixed']);
    const serve = ['--', 'busybox', 'httpd', '-f', '-p', '80', '-h', pageDir];
    await k.mustWeft(['run', '-d', '--net', 'mixed', '--name', 'kweb', ...serve]);
    await u.mustWeft(['run', '-d', '--net', 'mixed', '--name', 'uweb', ...serve]);
    const taps = await cluster.lab.exec(u.host.netns, ['ip', '-o', 'link', 'show', 'type', 'tun']);
    assert.match(taps.stdout, /: wt-[0-9a-f]{8}[:@]/, 'the userspace host carries the network on a TAP');
    const fetch = (from: typeof k, name: string) =>
      from.weftUntilOk([
        'run',
        '--rm',
        '--net',
        'mixed',
        '--name',
        `get-${name}`,
        '--',
        'busybox',
        'wget',
        '-q',
        '-O-',
        `http://${name}`,
      ]);
    assert.equal(await fetch(u, 'kweb'), 'served over VXLAN\n');
    assert.equal(await fetch(k, 'uweb'), 'served over VXLAN\n');
  });
});
