// The lab itself: hosts reach each other and the outside namespace over the
// underlay, and destroy() leaves no namespace behind.
import assert from 'node:assert/strict';
import { runPrefix } from './harness/cluster.js';
import { pingOnce } from './harness/commands.js';
import { exec, Lab, outsideIp } from './harness/lab.js';

describe('e2e lab (network namespaces as hosts)', function () {
  this.timeout(60_000);
  let lab: Lab | undefined;

  before(function () {
    if (process.getuid?.() !== 0) this.skip();
  });
  after(async () => {
    await lab?.destroy();
  });

  it('hosts share the 192.0.2.0/24 underlay, reach the outside on-link, and leave nothing behind', async () => {
    const prefix = runPrefix('l');
    lab = await Lab.create(prefix, 2);
    const [h1, h2] = lab.hosts;
    const ping = await lab.exec(h1!.netns, pingOnce(h2!.ip));
    assert.equal(ping.code, 0, ping.stdout + ping.stderr);
    const out = await lab.exec(h2!.netns, pingOnce(outsideIp));
    assert.equal(out.code, 0, out.stdout + out.stderr);
    const noDefault = await lab.exec(h1!.netns, ['ip', 'route', 'show', 'default']);
    assert.equal(noDefault.stdout.trim(), '', 'nothing is routed out of the lab');
    await lab.destroy();
    lab = undefined;
    const left = await exec(['ip', 'netns', 'list']);
    assert.ok(!left.stdout.split('\n').some((l) => l.startsWith(prefix)), left.stdout);
  });
});
