// The Agent as the API's backend, on the overlay's fakes (in-memory store,
// recording data plane) with real container namespaces: two agents share
// one store like two hosts of a cluster.
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { OverlayManager } from '@weft/overlay';
import { MemoryKvStore } from '@weft/overlay/testing/memory-kvstore';
import { RecordingDataplane } from '@weft/overlay/testing/recording-dataplane';
import pino from 'pino';
import { Agent } from '../../src/agent/agent.js';
import { ContainerRuntime } from '../../src/agent/containers.js';
import { ApiError } from '../../src/api/types.js';
import { type Logger, silentLogger } from '../../src/log/logger.js';
import { AgentMetrics } from '../../src/metrics/metrics.js';
import { listNetns, runCommand } from '../../src/netlink/ip.js';

const isRoot = process.getuid?.() === 0;

describe('Agent on the overlay fakes', function () {
  this.timeout(30_000);
  if (!isRoot) {
    before(function () {
      this.skip();
    });
  }
  const prefix = `wt${process.pid % 1000}ag`;
  let store: MemoryKvStore;
  let dirs: string[];
  let agents: Agent[];
  let dataplanes: RecordingDataplane[];

  /** An agent on the shared store with a recording data plane, not started yet. */
  async function newAgent(
    name: string,
    advertise: string,
    logger: Logger = silentLogger(),
  ): Promise<{ agent: Agent; dataplane: RecordingDataplane }> {
    const dataDir = await mkdtemp(join(tmpdir(), 'weft-agent-'));
    dirs.push(dataDir);
    const dataplane = new RecordingDataplane();
    const overlay = new OverlayManager({ store, dataplane, hostname: name, advertise, peerId: name });
    const agent = new Agent({
      name,
      advertise,
      dataplaneKind: 'recording',
      apiListen: '127.0.0.1:0',
      logger,
      metrics: new AgentMetrics({ defaultMetrics: false }),
      dataplane,
      overlay,
      containers: new ContainerRuntime({
        dataDir,
        sandboxPrefix: `${prefix}-${name}-`,
        resolvConf: () => '',
        logger: silentLogger(),
      }),
    });
    return { agent, dataplane };
  }

  /** A started agent; stopped after each test. */
  async function makeAgent(name: string): Promise<Agent> {
    const { agent, dataplane } = await newAgent(name, `192.0.2.${10 + agents.length}`);
    dataplanes.push(dataplane);
    await agent.start();
    agents.push(agent);
    return agent;
  }

  beforeEach(() => {
    store = new MemoryKvStore();
    dirs = [];
    agents = [];
    dataplanes = [];
  });
  afterEach(async () => {
    for (const a of agents) await a.stop().catch(() => {});
    for (const ns of await listNetns()) {
      if (!ns.startsWith(prefix)) continue;
      await runCommand(['ip', 'netns', 'del', ns]);
      await rm(`/etc/netns/${ns}`, { recursive: true, force: true });
    }
    for (const d of dirs) await rm(d, { recursive: true, force: true });
  });

  it('says in its start log which paths the native addon serves; no fallback warning with a current addon or an asked-for fallback', async () => {
    /** Starts and stops an agent; its log lines at info and above. */
    async function startLog(env: Record<string, string | undefined>): Promise<Record<string, unknown>[]> {
      const saved = { WEFT_NETLINK: process.env.WEFT_NETLINK, WEFT_SPAWN: process.env.WEFT_SPAWN };
      Object.assign(process.env, env);
      for (const [k, v] of Object.entries(env)) if (v === undefined) delete process.env[k];
      const lines: Record<string, unknown>[] = [];
      const sink = new Writable({
        write(chunk, _enc, done) {
          lines.push(JSON.parse(String(chunk)));
          done();
        },
      });
      try {
        const { agent } = await newAgent(`log${agents.length}`, '192.0.2.40', pino({ level: 'info' }, sink));
        agents.push(agent);
        await agent.start();
        return lines;
      } finally {
        for (const [k, v] of Object.entries(saved)) {
          if (v === undefined) delete process.env[k];
          else process.env[k] = v;
        }
      }
    }
    const native = await startLog({ WEFT_NETLINK: undefined, WEFT_SPAWN: undefined });
    const started = native.find((l) => l.msg === 'agent started');
    assert.equal(started?.processStart, 'native', 'the built addon starts commands');
    assert.equal(started?.netlink, 'native', 'the built addon wires containers');
    assert.ok(!native.some((l) => l.level === 40), 'no fallback warning with a current addon');

    const forced = await startLog({ WEFT_NETLINK: 'ip' });
    assert.equal(forced.find((l) => l.msg === 'agent started')?.netlink, 'ip');
    assert.ok(
      !forced.some((l) => l.level === 40),
      'a fallback asked for by WEFT_NETLINK=ip is not warned about',
    );
  });

  it('a network made on one host is seen on the other; a container there is plumbed and named', async () => {
    const h1 = await makeAgent('h1');
    const h2 = await makeAgent('h2');
    const net = await h1.createNetwork({ name: 'my-net', subnet: '198.18.9.0/24', labels: { team: 'a' } });
    assert.equal(net.subnet, '198.18.9.0/24');
    assert.equal(net.gateway, '198.18.9.1');
    const seen = await h2.listNetworks();
    assert.deepEqual(
      seen.map((n) => [n.id, n.name, n.labels.team]),
      [[net.id, 'my-net', 'a']],
    );

    const web = await h2.runContainer({ name: 'web', network: 'my-net', aliases: ['www'] });
    assert.equal(web.state, 'created');
    assert.equal(web.endpoints.length, 1);
    const ep = web.endpoints[0]!;
    assert.equal(ep.ifName, 'eth0');
    assert.match(ep.ip, /^198\.18\.9\.\d+$/);
    assert.ok((await listNetns()).includes(web.sandbox), 'the sandbox namespace exists');
    const plumbed = [...dataplanes[1]!.endpoints.values()];
    assert.deepEqual(
      plumbed.map((e) => [e.sandbox, e.ifName, e.ip]),
      [[web.sandbox, 'eth0', ep.ip]],
    );
    const inspected = await h1.inspectNetwork('my-net');
    assert.deepEqual(
      inspected.endpoints?.map((e) => [e.container, e.host, e.aliases]),
      [['web', 'h2', ['www']]],
    );
  });

  it('attach adds eth1, detach removes it, rm removes the container and its endpoints', async () => {
    const h1 = await makeAgent('h1');
    await h1.createNetwork({ name: 'a', subnet: '198.18.10.0/24' });
    await h1.createNetwork({ name: 'b', subnet: '198.18.11.0/24' });
    await h1.runContainer({ name: 'c', network: 'a' });
    const attached = await h1.attachContainer('c', { network: 'b', ip: '198.18.11.77' });
    assert.deepEqual(
      attached.endpoints.map((e) => [e.network, e.ifName, e.ip.startsWith('198.18.10.') || e.ip]),
      [
        ['a', 'eth0', true],
        ['b', 'eth1', '198.18.11.77'],
      ],
    );
    await assert.rejects(h1.attachContainer('c', { network: 'b' }), /already attached to network "b"/);
    const detached = await h1.detachContainer('c', 'a');
    assert.deepEqual(
      detached.endpoints.map((e) => e.network),
      ['b'],
    );
    await h1.removeContainer('c');
    assert.deepEqual(await h1.listContainers({ all: true }), []);
    assert.deepEqual((await h1.inspectNetwork('b')).endpoints, []);
    assert.deepEqual([...dataplanes[0]!.endpoints.values()], []);
  });

  it('maps overlay errors to HTTP statuses with the overlay’s message', async () => {
    const h1 = await makeAgent('h1');
    await h1.createNetwork({ name: 'n', subnet: '198.18.12.0/24' });
    const status = async (p: Promise<unknown>) => {
      try {
        await p;
        return 0;
      } catch (err) {
        assert.ok(err instanceof ApiError, String(err));
        return err.status;
      }
    };
    assert.equal(await status(h1.createNetwork({ name: 'n', subnet: '198.18.13.0/24' })), 409);
    assert.equal(
      await status(h1.createNetwork({ name: 'm', subnet: '198.18.12.0/25' })),
      409,
      'overlapping subnet',
    );
    assert.equal(await status(h1.createNetwork({ name: 'x', subnet: 'not-a-cidr' })), 400);
    assert.equal(await status(h1.createNetwork({ name: 'y', gateway: '198.18.14.1' })), 400);
    assert.equal(await status(h1.inspectNetwork('nope')), 404);
    assert.equal(await status(h1.runContainer({ name: 'c', network: 'nope' })), 404);
    assert.equal(
      (await listNetns()).filter((n) => n.startsWith(prefix)).length,
      0,
      'no namespace left by a failed run',
    );
    await h1.runContainer({ name: 'c', network: 'n', ip: '198.18.12.9' });
    assert.equal(
      await status(h1.runContainer({ name: 'd', network: 'n', ip: '198.18.12.9' })),
      409,
      'address taken',
    );
    assert.equal(await status(h1.removeNetwork('n')), 409, 'network in use');
    assert.equal(await status(h1.inspectContainer('zzz')), 404);
  });

  it('leave removes local containers and endpoints and deregisters the host at once', async () => {
    const h1 = await makeAgent('h1');
    const h2 = await makeAgent('h2');
    await h1.createNetwork({ name: 'n', subnet: '198.18.15.0/24' });
    const c = await h2.runContainer({ name: 'c', network: 'n' });
    await h2.leave();
    assert.ok(!(await listNetns()).includes(c.sandbox));
    const deadline = Date.now() + 5_000;
    while ((await h1.members()).some((m) => m.name === 'h2') && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 20));
    assert.deepEqual(
      (await h1.members()).map((m) => m.name),
      ['h1'],
    );
    assert.deepEqual((await h1.inspectNetwork('n')).endpoints, []);
  });
  it('waits for the store while it has no quorum, and a cancelled start rolls back what started', async () => {
    store.partition('reject');
    const { agent, dataplane } = await newAgent('lonely', '192.0.2.30');
    const starting = agent.start();
    await new Promise((r) => setTimeout(r, 1_500));
    assert.deepEqual(
      dataplane.calls.map((c) => c.op),
      ['start'],
      'still waiting: the data plane is up, nothing else happened',
    );
    agent.cancelStart();
    await assert.rejects(starting, /starting overlay failed: start cancelled while waiting for the store/);
    assert.deepEqual(
      dataplane.calls.map((c) => c.op),
      ['start', 'stop'],
    );
  });
});
