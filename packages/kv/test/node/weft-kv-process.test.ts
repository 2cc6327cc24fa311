// `weft-kv serve` as a user runs it: real processes, real LevelDB data
// directories, libp2p on loopback, checked through the Consul HTTP API.
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ProcessCluster, type ProcessNode, waitForProcesses } from './process-cluster.js';

type Cluster = ProcessCluster;

describe('weft-kv serve (real processes on loopback)', function () {
  // Bounded: each wait below has its own limit; process start-up dominates.
  this.timeout(180_000);
  let cluster: Cluster | undefined;

  afterEach(async () => {
    await cluster?.cleanup();
    cluster = undefined;
  });

  async function startAll(c: Cluster): Promise<void> {
    await Promise.all(c.nodes.map((n) => c.start(n)));
  }

  async function everyNodeHas(
    c: Cluster,
    nodes: ProcessNode[],
    prefix: string,
    expected: string[],
  ): Promise<void> {
    const want = [...expected].sort();
    for (const node of nodes) {
      await waitForProcesses(
        `${node.name} to hold all ${want.length} acknowledged keys under ${prefix}`,
        async () => {
          const keys = (await c.keys(node, prefix, 'stale')).sort();
          return want.every((k) => keys.includes(k)) ? true : undefined;
        },
        30_000,
      );
    }
  }

  it('forms a 3-node cluster once a quorum is up and replicates writes (private network key)', async () => {
    cluster = await ProcessCluster.create(3, [], { clusterKey: true });
    const [n1, n2, n3] = cluster.nodes as [ProcessNode, ProcessNode, ProcessNode];
    // Two of three (a quorum) are enough to form the cluster and accept writes.
    await Promise.all([cluster.start(n1), cluster.start(n2)]);
    await cluster.agreedLeader();
    assert.equal(await cluster.put(n2, 'app/config', 'v1'), true);
    assert.equal(await cluster.get(n1, 'app/config'), 'v1');
    await cluster.start(n3);
    await waitForProcesses('n3 to catch up', async () =>
      (await cluster!.get(n3, 'app/config', 'stale')) === 'v1' ? true : undefined,
    );
    assert.equal(await cluster.put(n3, 'app/other', 'v2'), true, 'a follower accepts writes (forwarded)');
    for (const n of [n1, n2, n3])
      assert.equal(await cluster.get(n, 'app/other'), 'v2', `${n.name} reads it linearizably`);
    assert.deepEqual((await cluster.peers(n1)).sort(), [n1.raft, n2.raft, n3.raft].sort());
  });

  it('keeps every acknowledged write across kill -9 of the leader and restarts', async () => {
    cluster = await ProcessCluster.create(3);
    const c = cluster;
    await startAll(c);
    const leader = await c.agreedLeader();
    const acked: string[] = [];
    let stop = false;
    let failures = 0;
    // One writer per node, as clients spread over the cluster would be.
    const writers = c.nodes.map(async (node, w) => {
      for (let i = 0; !stop && i < 10_000; i++) {
        if (!node.child) {
          await new Promise((r) => setTimeout(r, 50));
          continue;
        }
        const key = `w/${w}-${i}`;
        try {
          if (await c.put(node, key, String(i))) acked.push(key);
        } catch {
          failures++; // not acknowledged: may or may not be there
          await new Promise((r) => setTimeout(r, 100));
        }
      }
    });
    await waitForProcesses('some writes before the kill', () => (acked.length >= 20 ? true : undefined));
    await c.kill(leader);
    const atKill = acked.length;
    await waitForProcesses(
      'writes to resume after the leader died',
      () => (acked.length >= atKill + 20 ? true : undefined),
      30_000,
    );
    stop = true;
    await Promise.all(writers);
    // Restart the old leader from its data directory with the same command.
    await c.start(leader);
    await c.agreedLeader();
    await everyNodeHas(c, c.nodes, 'w/', acked);
    // And the cluster as a whole survives a full restart.
    for (const n of c.nodes) await c.kill(n);
    await startAll(c);
    await c.agreedLeader();
    await everyNodeHas(c, c.nodes, 'w/', acked);
    assert.ok(
      acked.length >= 40,
      `acknowledged ${acked.length} writes (${failures} failed during the failover)`,
    );
  });

  it('answers ?consistent reads everywhere; after kill -9 of the leader the new one reads every acknowledged write', async () => {
    cluster = await ProcessCluster.create(3);
    const c = cluster;
    await startAll(c);
    const leader = await c.agreedLeader();
    // Each write is read back, linearizably, from every node right after its acknowledgement.
    const acked: string[] = [];
    for (let i = 0; i < 10; i++) {
      const key = `lin/${i}`;
      assert.equal(await c.put(c.nodes[i % 3]!, key, `v${i}`), true);
      acked.push(key);
      for (const n of c.nodes) assert.equal(await c.get(n, key), `v${i}`, `${n.name} read ${key}`);
    }
    await c.kill(leader);
    const survivors = c.nodes.filter((n) => n !== leader);
    const next = await c.agreedLeader();
    assert.notEqual(next, leader);
    // The new leader's first consistent reads already see every write acknowledged before the kill.
    const keys = (await c.keys(next, 'lin/', 'consistent')).sort();
    assert.deepEqual(keys, [...acked].sort());
    for (const key of acked) assert.equal(await c.get(next, key), `v${key.slice(4)}`);
    // And it goes on: each new write is seen by consistent reads on both survivors.
    for (let i = 10; i < 20; i++) {
      const key = `lin/${i}`;
      assert.equal(await c.put(survivors[i % 2]!, key, `v${i}`), true);
      for (const n of survivors) assert.equal(await c.get(n, key), `v${i}`, `${n.name} read ${key}`);
    }
  });

  it('catches up a follower restarted after compaction by snapshot', async () => {
    cluster = await ProcessCluster.create(3, ['--snapshot-entries', '20']);
    const c = cluster;
    await startAll(c);
    const leader = await c.agreedLeader();
    const follower = c.nodes.find((n) => n !== leader)!;
    await c.kill(follower);
    const keys: string[] = [];
    for (let i = 0; i < 60; i++) {
      assert.equal(await c.put(leader, `s/${i}`, String(i)), true);
      keys.push(`s/${i}`);
    }
    await c.start(follower);
    await everyNodeHas(c, [follower], 's/', keys);
    assert.match(
      follower.stderr,
      /installed snapshot from the leader/,
      'the follower caught up through a snapshot',
    );
    assert.equal(await c.get(follower, 's/59'), '59');
  });

  it('joins a node as a learner and promotes it to voter once caught up', async () => {
    cluster = await ProcessCluster.create(3);
    const c = cluster;
    await startAll(c);
    const leader = await c.agreedLeader();
    for (let i = 0; i < 10; i++) await c.put(leader, `j/${i}`, String(i));
    const joiner = await c.addNode('n4', ['--join', c.nodes[0]!.raft]);
    await c.start(joiner);
    await waitForProcesses(
      'n4 to become a voter',
      async () => ((await c.peers(leader)).includes(joiner.raft) ? true : undefined),
      30_000,
    );
    assert.equal(await c.get(joiner, 'j/9'), '9');
    assert.equal(await c.put(joiner, 'j/from-n4', 'x'), true);
    assert.equal(await c.get(leader, 'j/from-n4'), 'x');
    // Restarting the joined node uses its data directory; --join is not needed again.
    await c.kill(joiner);
    joiner.args = joiner.args.filter((a, i, all) => a !== '--join' && all[i - 1] !== '--join');
    await c.start(joiner);
    await waitForProcesses('n4 to serve after restart', async () =>
      (await c.get(joiner, 'j/from-n4', 'stale')) === 'x' ? true : undefined,
    );
  });

  it('the weft-kv command runs Node with single-threaded GC in its own process, plus WEFT_KV_NODE_FLAGS', async function () {
    // The launcher is what users run; the tests from the sources use plain Node.
    if (import.meta.url.endsWith('.ts')) this.skip();
    cluster = await ProcessCluster.create(2);
    const [plain, tuned] = cluster.nodes;
    tuned!.env = { WEFT_KV_NODE_FLAGS: '--no-single-threaded-gc --stack-size=2000' };
    await startAll(cluster);
    // exec: the PID the caller got (pid files, kill -9) is Node's, not a shell's.
    const argv = async (n: ProcessNode) =>
      (await readFile(`/proc/${n.child!.pid}/cmdline`, 'utf8')).split('\0').filter(Boolean);
    const plainArgv = await argv(plain!);
    const tunedArgv = await argv(tuned!);
    assert.match(plainArgv[0]!, /(^|\/)node$/, plainArgv.join(' '));
    assert.deepEqual(plainArgv.slice(1, 2), ['--single-threaded-gc'], plainArgv.join(' '));
    assert.match(plainArgv[2]!, /\/dist\/src\/bin\/weft-kv\.js$/);
    assert.deepEqual(plainArgv.slice(3), plain!.args);
    assert.deepEqual(
      tunedArgv.slice(1, 4),
      ['--single-threaded-gc', '--no-single-threaded-gc', '--stack-size=2000'],
      tunedArgv.join(' '),
    );
    // Both serve: the two form a cluster and take a write.
    await cluster.agreedLeader();
    assert.equal(await cluster.put(tuned!, 'launcher/k', 'v'), true);
    assert.equal(await cluster.get(plain!, 'launcher/k'), 'v');
  });

  it('the operator endpoints and `weft-kv operator raft` transfer leadership and remove a dead member; bad requests change nothing', async () => {
    cluster = await ProcessCluster.create(3);
    const c = cluster;
    await startAll(c);
    const call = async (node: ProcessNode, method: string, path: string) => {
      const res = await fetch(`http://${node.http}${path}`, { method, signal: AbortSignal.timeout(15_000) });
      return { status: res.status, body: await res.text() };
    };
    const leader = await c.agreedLeader();
    const [f1, f2] = c.nodes.filter((n) => n !== leader) as [ProcessNode, ProcessNode];

    // Asked of a follower, for another follower: it leads once the answer comes.
    const moved = await call(f2, 'POST', `/v1/operator/raft/transfer-leader?id=${f1.raft}`);
    assert.deepEqual(moved, { status: 200, body: '{"Success":true}' });
    assert.equal((await c.agreedLeader()).name, f1.name);
    // Without ?id: some other voter.
    assert.equal((await call(f1, 'POST', '/v1/operator/raft/transfer-leader')).status, 200);
    assert.notEqual((await c.agreedLeader()).name, f1.name);

    // Refused with Consul's messages (or a message naming the problem), and nothing changes.
    const refusals: Array<[string, string, number, RegExp]> = [
      [
        'DELETE',
        '/v1/operator/raft/peer',
        400,
        /^Must specify either \?id with the server's ID or \?address/,
      ],
      ['DELETE', `/v1/operator/raft/peer?id=${f1.raft}&address=${f1.raft}`, 400, /^Must specify only one of/],
      [
        'DELETE',
        '/v1/operator/raft/peer?address=nonsense',
        400,
        /Invalid \?address: invalid address "nonsense"/,
      ],
      [
        'DELETE',
        '/v1/operator/raft/peer?address=127.0.0.1:1',
        400,
        /cannot remove 127\.0\.0\.1:1: not a member/,
      ],
      ['GET', `/v1/operator/raft/peer?address=${f1.raft}`, 405, /method GET not allowed \(allowed: DELETE\)/],
      ['POST', '/v1/operator/raft/transfer-leader?id=127.0.0.1:1', 400, /not a voter/],
    ];
    for (const [method, path, status, body] of refusals) {
      const res = await call(f2, method, path);
      assert.equal(res.status, status, `${method} ${path}: ${res.body}`);
      assert.match(res.body, body, `${method} ${path}`);
    }
    assert.deepEqual((await c.peers(f2)).sort(), c.nodes.map((n) => n.raft).sort());

    // A member that died for good: removed, the other two carry on as a cluster of two.
    const dead = c.nodes.find((n) => n !== leader)!;
    const [a, b] = c.nodes.filter((n) => n !== dead) as [ProcessNode, ProcessNode];
    await c.kill(dead);
    await c.agreedLeader();
    const removed = await call(a, 'DELETE', `/v1/operator/raft/peer?address=${dead.raft}`);
    assert.deepEqual(removed, { status: 200, body: '' });
    // 200 means applied at the member asked (a); the other learns of it with the next commit index.
    assert.deepEqual((await c.peers(a)).sort(), [a.raft, b.raft].sort());
    const peersOfB = await waitForProcesses(`${b.name} to apply the removal`, async () => {
      const peers = await c.peers(b);
      return peers.length === 2 ? peers : undefined;
    });
    assert.deepEqual(peersOfB.sort(), [a.raft, b.raft].sort());
    assert.equal(await c.put(b, 'after/removal', 'v'), true);
    assert.equal(await c.get(a, 'after/removal'), 'v');

    // The same through `weft-kv operator raft ...`, as an operator types it.
    const cli = (...args: string[]) =>
      ProcessCluster.run(['operator', 'raft', ...args, '--http-addr', b.http]);
    const moved2 = await cli('transfer-leader', '--id', a.raft);
    assert.equal(moved2.code, 0, moved2.stderr);
    assert.equal(moved2.stdout, `Leadership transferred; the leader is ${a.raft}\n`);
    const listed = await cli('list-peers');
    assert.equal(listed.code, 0, listed.stderr);
    const rows = listed.stdout.trim().split('\n');
    assert.match(rows[0]!, /^Node +ID +Address +State +Voter$/);
    assert.deepEqual(
      rows
        .slice(1)
        .map((r) => r.split(/ +/))
        .sort((x, y) => x[0]!.localeCompare(y[0]!)),
      [a, b]
        .map((n) => [n.name, n.raft, n.raft, n === a ? 'leader' : 'follower', 'true'])
        .sort((x, y) => x[0]!.localeCompare(y[0]!)),
    );
    const notMember = await cli('remove-peer', '--address', '127.0.0.1:9');
    assert.equal(notMember.code, 1);
    assert.match(notMember.stderr, /HTTP 400: cannot remove 127\.0\.0\.1:9: not a member/);
    const unreachable = await ProcessCluster.run([
      'operator',
      'raft',
      'list-peers',
      '--http-addr',
      dead.http,
    ]);
    assert.equal(unreachable.code, 1);
    assert.match(
      unreachable.stderr,
      new RegExp(`cannot reach the weft-kv HTTP API at ${dead.http} \\(ECONNREFUSED\\)`),
    );
  });

  it('with --leave-on-terminate SIGTERM takes a member out of the cluster, without it the member stays; back, it rejoins', async () => {
    cluster = await ProcessCluster.create(3);
    const c = cluster;
    const [leaver, stayer, other] = c.nodes as [ProcessNode, ProcessNode, ProcessNode];
    leaver.args.push('--leave-on-terminate');
    await startAll(c);
    await c.agreedLeader();
    const terminate = async (n: ProcessNode) => {
      const child = n.child!;
      const code = new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
      child.kill('SIGTERM');
      assert.equal(await code, 0, `${n.name} exit status: ${n.stderr}`);
    };
    const voters = (n: ProcessNode) => c.peers(n).then((p) => p.sort());
    await terminate(stayer);
    assert.deepEqual(
      await voters(other),
      c.nodes.map((n) => n.raft).sort(),
      'a plain SIGTERM does not leave',
    );
    await c.start(stayer);
    await terminate(leaver);
    assert.deepEqual(await voters(other), [stayer.raft, other.raft].sort(), 'the leaver is out');
    // A write that races the leaver's leadership hand-off may come back as
    // indeterminate (503, "leadership moved"): a client retries it, and so does this.
    assert.equal(
      await waitForProcesses('a write after the leave', () => c.put(stayer, 'after/leave', 'v')),
      true,
    );
    // Started again from its data directory, it joins as a learner and is promoted.
    await c.start(leaver);
    await waitForProcesses('the leaver to be a voter again', async () =>
      (await voters(other)).length === 3 ? true : undefined,
    );
    assert.equal(await c.get(leaver, 'after/leave', 'consistent'), 'v');
  });

  it('fails fast with a clear message on bad command-line input', async () => {
    cluster = await ProcessCluster.create(1);
    const dir = join(cluster.rootDir, 'd');
    const base = ['serve', '--id', 'x', '--data-dir', dir];
    const [badListen, badKey, fileDir] = await Promise.all([
      ProcessCluster.run([...base, '--listen', 'nonsense']),
      ProcessCluster.run([
        ...base,
        '--listen',
        '127.0.0.1:1',
        '--cluster-key',
        join(cluster.rootDir, 'missing.key'),
      ]),
      (async () => {
        await writeFile(join(cluster!.rootDir, 'plain-file'), 'x');
        return ProcessCluster.run([
          'serve',
          '--id',
          'x',
          '--data-dir',
          join(cluster!.rootDir, 'plain-file'),
          '--listen',
          '127.0.0.1:1',
        ]);
      })(),
    ]);
    assert.notEqual(badListen.code, 0);
    assert.match(badListen.stderr, /invalid address "nonsense": no port/);
    assert.notEqual(badKey.code, 0);
    assert.match(badKey.stderr, /--cluster-key .*missing\.key: ENOENT/);
    assert.notEqual(fileDir.code, 0);
    assert.match(fileDir.stderr, /plain-file.*is a file, not a directory/);
  });

  it('refuses a data directory that belongs to another node', async () => {
    cluster = await ProcessCluster.create(1);
    const c = cluster;
    const [n1] = c.nodes as [ProcessNode];
    await c.start(n1);
    await c.kill(n1);
    const impostor = { ...n1, args: n1.args.map((a) => (a === 'n1' ? 'n9' : a)) };
    await assert.rejects(c.start(impostor), /belongs to node "n1", not "n9"/);
  });
});
