// KvClient against real clusters: in-process KvNodes on LevelDB and libp2p
// (opened without an HTTP listener: the tunnel needs none), and `weft-kv
// serve` processes killed with SIGKILL while a client uses them.
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KvNode } from '../../src/api/node.js';
import { KvInputError } from '../../src/api/node-errors.js';
import { KvClientUnavailableError } from '../../src/client/errors.js';
import { KvClient } from '../../src/client/kv-client.js';
import { MAX_VALUE_BYTES } from '../../src/fsm/types.js';
import { freePort } from '../../src/testing/free-port.js';
import { ProcessCluster, waitForProcesses } from '../node/process-cluster.js';

const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array | undefined) => (b ? new TextDecoder().decode(b) : undefined);

describe('KvClient on an in-process 3-node cluster (no HTTP listener)', function () {
  this.timeout(60_000);
  let root: string;
  let nodes: KvNode[] = [];
  let addresses: string[] = [];
  let client: KvClient | undefined;

  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'weft-kv-client-'));
    addresses = [];
    for (let i = 0; i < 3; i++) addresses.push(`127.0.0.1:${await freePort()}`);
    nodes = await Promise.all(
      addresses.map((listen, i) =>
        KvNode.open({ dataDir: join(root, `n${i}`), id: `n${i}`, listen, peers: addresses }),
      ),
    );
    await Promise.all(nodes.map((n) => n.waitForLeader(20_000)));
    client = await KvClient.connect({ servers: addresses, name: 'host-9' });
  });
  after(async () => {
    await client?.close();
    await Promise.allSettled(nodes.map((n) => n.close()));
    await rm(root, { recursive: true, force: true });
  });

  it('the nodes serve no TCP HTTP, yet the client reads and writes what members see', async () => {
    assert.equal(nodes[0]!.httpAddress(), undefined);
    const c = client!;
    assert.equal(await c.put('app/a', enc('one'), { flags: 0xffff_ffff_ffff_ffffn }), true);
    const viaNode = await nodes[2]!.get('app/a');
    assert.equal(dec(viaNode?.value), 'one');
    await nodes[1]!.put('app/b', enc('two'));
    const a = await c.get('app/a');
    assert.equal(a?.flags, 0xffff_ffff_ffff_ffffn);
    assert.equal(a?.modifyIndex, viaNode?.modifyIndex);
    assert.deepEqual(
      (await c.list('app/')).map((e) => [e.key, dec(e.value)]),
      [
        ['app/a', 'one'],
        ['app/b', 'two'],
      ],
    );
    assert.deepEqual(await c.keys('app/'), ['app/a', 'app/b']);
    assert.equal(await c.get('app/missing'), null);
    assert.equal(await c.cas('app/a', enc('x'), a!.modifyIndex + 100), false);
    assert.equal(await c.cas('app/a', enc('x'), a!.modifyIndex), true);
    assert.equal(await c.delete('app/', { recurse: true }), true);
    assert.deepEqual(await nodes[0]!.list('app/'), []);
  });

  it('carries the largest value both ways intact, and refuses one byte more naming the limit', async () => {
    const c = client!;
    const big = new Uint8Array(MAX_VALUE_BYTES);
    for (let i = 0; i < big.length; i++) big[i] = (i * 7919) % 251;
    assert.equal(await c.put('big/v', big), true);
    const back = await c.get('big/v');
    assert.equal(Buffer.compare(Buffer.from(back!.value), Buffer.from(big)), 0);
    await Promise.all(Array.from({ length: 8 }, (_, i) => c.put(`big/${i}`, big)));
    assert.equal((await c.list('big/')).length, 9);
    await assert.rejects(c.put('big/over', new Uint8Array(MAX_VALUE_BYTES + 1)), /too large/);
    await c.delete('big/', { recurse: true });
  });

  it('txn returns the index it was applied at; a failed one names the op', async () => {
    const c = client!;
    const ok = await c.txn([
      { verb: 'set', key: 't/a', value: enc('A') },
      { verb: 'get', key: 't/a' },
    ]);
    assert.equal(ok.ok, true);
    assert.equal(ok.index, (await nodes[0]!.get('t/a'))?.modifyIndex);
    const failed = await c.txn([
      { verb: 'set', key: 't/b', value: enc('B') },
      { verb: 'check-not-exists', key: 't/a' },
    ]);
    assert.equal(failed.ok, false);
    if (!failed.ok)
      assert.deepEqual(
        failed.errors.map((e) => e.opIndex),
        [1],
      );
    assert.equal(await nodes[1]!.get('t/b'), null);
  });

  it('sessions record the client node name and accept TTLs under Consul 10 s minimum', async () => {
    const c = client!;
    const id = await c.createSession({ name: 'lease', ttlMs: 1_500, behavior: 'delete', lockDelayMs: 0 });
    const record = await nodes[0]!.session(id);
    assert.equal(record?.node, 'host-9');
    assert.equal(record?.ttlMs, 1_500);
    assert.equal(await c.put('lock/x', enc('me'), { acquire: id }), true);
    assert.equal((await c.get('lock/x'))?.session, id);
    assert.equal((await c.renewSession(id))?.id, id);
    await c.destroySession(id);
    assert.equal(await c.get('lock/x'), null);
    assert.equal(await c.renewSession(id), null);
    await assert.rejects(c.put('lock/x', enc('me'), { acquire: id }), KvInputError);
  });

  it('refuses bad input before sending, naming it', async () => {
    const c = client!;
    await assert.rejects(c.put('/abs', enc('x')), /must not begin with a '\/'/);
    await assert.rejects(c.createSession({ ttlMs: -1 }), KvInputError);
    await assert.rejects(
      c.txn(Array.from({ length: 65 }, (_, i) => ({ verb: 'set' as const, key: `k${i}` }))),
      /at most 64/,
    );
    await assert.rejects(KvClient.connect({ servers: [] }), KvInputError);
    await assert.rejects(KvClient.connect({ servers: ['nohost'] }), /invalid address "nohost"/);
  });

  it('a client of another cluster name uses no server of this one, and says why', async () => {
    await assert.rejects(
      KvClient.connect({ servers: addresses, cluster: 'other', connectTimeoutMs: 500 }),
      (err: Error) =>
        err instanceof KvClientUnavailableError &&
        /it is a member of cluster "weft", this client's is "other"/.test(err.message),
    );
  });

  it('a raw request reaches any Consul route; the watch sees changes made on members', async () => {
    const c = client!;
    const leader = await c.request('GET', '/v1/status/leader');
    assert.equal(leader.status, 200);
    assert.ok(addresses.includes(JSON.parse(leader.body.toString())));
    assert.deepEqual((await c.members()).map((m) => `${m.name}:${m.role}`).sort(), [
      'n0:voter',
      'n1:voter',
      'n2:voter',
    ]);
    const missing = await c.request('GET', '/v1/nope');
    assert.equal(missing.status, 404);
    const ac = new AbortController();
    const seen: string[][] = [];
    const watching = (async () => {
      for await (const ev of c.watchPrefix('w/', { signal: ac.signal })) {
        seen.push(ev.entries.map((e) => e.key));
        if (seen.length === 3) ac.abort();
      }
    })();
    await waitForProcesses('the watch to start', () => (seen.length === 1 ? true : undefined));
    await nodes[2]!.put('w/1', enc('1'));
    await waitForProcesses('the first change', () => (seen.length === 2 ? true : undefined));
    await nodes[0]!.put('w/2', enc('2'));
    await watching;
    assert.deepEqual(seen, [[], ['w/1'], ['w/1', 'w/2']]);
  });
});

describe('KvClient fails over when its server is killed (weft-kv serve processes, cluster key)', function () {
  this.timeout(120_000);
  let cluster: ProcessCluster;
  let client: KvClient | undefined;
  let clusterKey: string;

  before(async () => {
    cluster = await ProcessCluster.create(3, [], { clusterKey: true });
    await Promise.all(cluster.nodes.map((n) => cluster.start(n)));
    await cluster.agreedLeader();
    clusterKey = await readFile(join(cluster.rootDir, 'cluster.key'), 'utf8');
  });
  after(async () => {
    await client?.close();
    await cluster?.cleanup();
  });

  it('a client without the cluster key, or with another, cannot connect', async () => {
    const servers = cluster.nodes.map((n) => n.raft);
    await assert.rejects(
      KvClient.connect({ servers, connectTimeoutMs: 1_000, dialTimeoutMs: 500 }),
      (err: Error) => err instanceof KvClientUnavailableError && /no server answered/.test(err.message),
    );
    await assert.rejects(
      KvClient.connect({ servers, clusterKey: 'ab'.repeat(32), connectTimeoutMs: 1_000, dialTimeoutMs: 500 }),
      KvClientUnavailableError,
    );
  });

  it('kill -9 of the server in use: the request in flight fails naming it, the next ones and the watch go on through another', async () => {
    client = await KvClient.connect({
      servers: cluster.nodes.map((n) => n.raft),
      clusterKey,
      refreshServersIntervalMs: 0,
    });
    const c = client;
    assert.equal(await c.put('f/before', enc('1')), true);
    const victimAddress = c.currentServer();
    const victim = cluster.nodes.find((n) => n.raft === victimAddress)!;

    const ac = new AbortController();
    const seen: string[][] = [];
    const watching = (async () => {
      for await (const ev of c.watchPrefix('f/', { signal: ac.signal }))
        seen.push(ev.entries.map((e) => e.key));
    })();
    await waitForProcesses('the watch to list f/before', () => (seen.length === 1 ? true : undefined));

    // A blocking query held by the victim: it is in flight when the server dies.
    const index = (await c.getIndexed('f/before')).index;
    const inFlight = c.request('GET', `/v1/kv/f/before?index=${index}&wait=60s`);
    const inFlightOutcome = inFlight.then(
      () => assert.fail('the request held by a killed server cannot succeed'),
      (err: unknown) => err,
    );
    await new Promise((r) => setTimeout(r, 200));
    await cluster.kill(victim);

    const err = await inFlightOutcome;
    assert.ok(err instanceof KvClientUnavailableError, String(err));
    assert.equal(err.inFlight, true);
    assert.match(err.message, new RegExp(`server ${victimAddress.replace(/\./g, '\\.')} took the request`));

    // The next requests go to a live server (a new leader may still be in election).
    await waitForProcesses(
      'a write through another server',
      async () => ((await c.put('f/after', enc('2'))) ? true : undefined),
      30_000,
    );
    assert.notEqual(c.currentServer(), victimAddress);
    assert.equal(dec((await c.get('f/after'))?.value), '2');
    await waitForProcesses('the watch to see f/after', () =>
      seen.some((keys) => keys.includes('f/after')) ? true : undefined,
    );
    ac.abort();
    await watching;
    assert.deepEqual(seen.at(-1), ['f/after', 'f/before']);
  });
});
