import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ContainerRuntime } from '../../src/agent/containers.js';
import { silentLogger } from '../../src/log/logger.js';
import { listNetns, runCommand } from '../../src/netlink/ip.js';

const isRoot = process.getuid?.() === 0;

describe('ContainerRuntime (real network namespaces)', () => {
  if (!isRoot) {
    before(function () {
      this.skip();
    });
  }
  const prefix = `wt${process.pid % 1000}cr-`;
  let dataDir: string;
  const make = () =>
    new ContainerRuntime({
      dataDir,
      sandboxPrefix: prefix,
      resolvConf: () => 'nameserver 198.18.0.1\n',
      logger: silentLogger(),
    });

  beforeEach(async () => {
    dataDir = await mkdtemp(join(tmpdir(), 'weft-containers-'));
  });
  afterEach(async () => {
    for (const ns of await listNetns()) {
      if (ns.startsWith(prefix)) {
        const pids = await runCommand(['ip', 'netns', 'pids', ns]);
        for (const pid of pids.split('\n').filter(Boolean)) process.kill(Number(pid), 'SIGKILL');
        await runCommand(['ip', 'netns', 'del', ns]);
        await rm(`/etc/netns/${ns}`, { recursive: true, force: true });
      }
    }
    await rm(dataDir, { recursive: true, force: true });
  });

  it('creates a namespace with loopback and resolv.conf, runs a background command, survives a restart, removes everything', async () => {
    const rt = make();
    await rt.start();
    const c = await rt.create('web', ['sleep', '30']);
    assert.equal(c.sandbox, `${prefix}web`);
    assert.ok((await listNetns()).includes(c.sandbox));
    const resolv = await runCommand(['ip', 'netns', 'exec', c.sandbox, 'cat', '/etc/resolv.conf']);
    assert.equal(resolv, 'nameserver 198.18.0.1\n');
    const lo = await runCommand(['ip', '-n', c.sandbox, '-j', 'link', 'show', 'lo']);
    assert.match(lo, /"operstate":"UNKNOWN"|LOOPBACK,UP/);
    assert.deepEqual(await rt.state(c), { state: 'created' });
    await rt.startCommand('web');
    assert.equal((await rt.state(c)).state, 'running');
    await assert.rejects(rt.create('web', []), /container "web" already exists/);

    // An agent killed and started again finds the container and its process.
    const again = make();
    await again.start();
    const found = again.get('web');
    assert.ok(found);
    assert.equal((await again.state(found)).state, 'running');
    await again.remove('web');
    assert.ok(!(await listNetns()).includes(c.sandbox));
    assert.equal(again.list().length, 0);
    const saved = JSON.parse(await readFile(join(dataDir, 'containers.json'), 'utf8'));
    assert.deepEqual(saved.containers, []);
  });

  it('refuses a damaged state file without overwriting it', async () => {
    await writeFile(join(dataDir, 'containers.json'), '{"version":1,"contain');
    await assert.rejects(make().start(), /containers\.json is damaged .*move it away/);
    assert.equal(await readFile(join(dataDir, 'containers.json'), 'utf8'), '{"version":1,"contain');
  });
});
