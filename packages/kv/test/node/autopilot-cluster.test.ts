// Voter/learner limits and the autopilot with real `weft-kv serve` processes
// (LevelDB on disk, libp2p on loopback), observed through the Consul HTTP API.
import assert from 'node:assert/strict';
import { ProcessCluster, type ProcessNode, waitForProcesses } from './process-cluster.js';

interface RaftServer {
  ID: string;
  Node: string;
  Voter: boolean;
  Leader: boolean;
}

async function configuration(node: ProcessNode): Promise<RaftServer[]> {
  const res = await fetch(`http://${node.http}/v1/operator/raft/configuration`, {
    signal: AbortSignal.timeout(5_000),
  });
  if (res.status !== 200) throw new Error(`configuration on ${node.name}: HTTP ${res.status}`);
  return ((await res.json()) as { Servers: RaftServer[] }).Servers;
}

/** "n1:voter" strings, sorted: what an operator reads off the configuration. */
async function roles(node: ProcessNode): Promise<string[]> {
  return (await configuration(node)).map((s) => `${s.Node || s.ID}:${s.Voter ? 'voter' : 'learner'}`).sort();
}

describe('autopilot: weft-kv processes with maxVoters 3, maxLearners 1', function () {
  this.timeout(120_000);
  let cluster: ProcessCluster | undefined;
  afterEach(async () => {
    await cluster?.cleanup();
    cluster = undefined;
  });

  it('fills 3 voters and 1 learner, refuses the next join as full, and replaces a killed voter', async () => {
    const limits = ['--max-voters', '3', '--max-learners', '1', '--dead-voter-threshold-ms', '1500'];
    const c = await ProcessCluster.create(3, limits);
    cluster = c;
    const [n1, n2, n3] = c.nodes as [ProcessNode, ProcessNode, ProcessNode];
    await Promise.all([n1, n2, n3].map((n) => c.start(n)));
    await c.agreedLeader();
    const seeds = [n1, n2, n3].map((n) => n.raft).join(',');

    const n4 = await c.addNode('n4', ['--join', seeds, ...limits]);
    await c.start(n4);
    await waitForProcesses('n4 to be a learner', async () => {
      const r = await roles(n1);
      return r.includes('n4:learner') ? r : undefined;
    });
    // Caught up, yet not promoted: the voters are at their limit.
    await new Promise((r) => setTimeout(r, 1_000));
    assert.deepEqual(await roles(n1), ['n1:voter', 'n2:voter', 'n3:voter', 'n4:learner']);

    // A fifth member has no slot: a typed refusal naming the limits, distinct exit status.
    const n5 = await c.addNode('n5', ['--join', seeds, ...limits]);
    const refused = await ProcessCluster.run(n5.args);
    assert.equal(refused.code, 3, refused.stderr);
    assert.match(
      refused.stderr,
      /KvMembershipFullError: .*3 voters \(maxVoters 3\) and 1 learners \(maxLearners 1\)/,
    );

    // Writes keep going while the leader is killed -9 and replaced.
    const acknowledged: string[] = [];
    let killed: ProcessNode | undefined;
    let writing = true;
    const writer = (async () => {
      for (let i = 0; writing; i++) {
        const via = [n1, n2, n3, n4].filter((n) => n.child)[i % 4] ?? n4;
        try {
          if (await c.put(via, `w/${i}`, `v${i}`)) acknowledged.push(`w/${i}`);
        } catch {
          await new Promise((r) => setTimeout(r, 50)); // no leader for a moment: retried with the next key
        }
      }
    })();
    try {
      await waitForProcesses('a few writes', () => (acknowledged.length >= 5 ? true : undefined));
      const leader = await c.agreedLeader();
      assert.notEqual(leader, n4, 'a learner never leads');
      killed = leader;
      await c.kill(leader);
      const survivor = [n1, n2, n3].find((n) => n !== leader)!;
      const replaced = await waitForProcesses(
        `the learner to replace ${leader.name}`,
        async () => {
          const servers = await configuration(survivor);
          const gone = !servers.some((x) => x.ID === leader.raft);
          return gone && servers.some((x) => x.Node === 'n4' && x.Voter) ? await roles(survivor) : undefined;
        },
        30_000,
      );
      assert.equal(replaced.length, 3, `three voters, no learner: ${replaced.join(', ')}`);
      const before = acknowledged.length;
      await waitForProcesses('writes after the replacement', () =>
        acknowledged.length >= before + 5 ? true : undefined,
      );
    } finally {
      writing = false;
      await writer;
    }
    assert.ok(killed);
    const removed = killed;
    // n4's promotion freed the learner slot: n5, refused before, now joins.
    await c.start(n5);
    await waitForProcesses('n5 to be a learner', async () =>
      (await roles(n4)).includes('n5:learner') ? true : undefined,
    );

    // The removed voter restarts from its data directory: it finds out from its
    // peers that it was removed, asks to join again, and the cluster is full:
    // it stops with the typed error (exit status 3) instead of lingering.
    await c.start(removed);
    const exited = await new Promise<number | null>((resolve) => removed.child!.once('exit', resolve));
    removed.child = undefined;
    assert.equal(exited, 3, removed.stderr);
    assert.match(removed.stderr, /KvMembershipFullError: .*the cluster is full/);

    // A learner killed -9 and silent past the threshold is removed, freeing its slot...
    await c.kill(n5);
    await waitForProcesses(
      'the dead learner n5 to be removed',
      async () => (!(await configuration(n4)).some((x) => x.ID === n5.raft) ? true : undefined),
      30_000,
    );
    // ...and the removed voter, started again, joins as a learner with its data.
    await c.start(removed);
    await waitForProcesses(
      `${removed.name} to be back as a learner`,
      async () => ((await roles(n4)).includes(`${removed.name}:learner`) ? true : undefined),
      30_000,
    );
    const live = c.running();
    assert.equal(live.length, 4);
    const want = [...acknowledged].sort();
    for (const node of live) {
      await waitForProcesses(`${node.name} to hold all ${want.length} acknowledged writes`, async () => {
        const keys = await c.keys(node, 'w/', 'stale');
        return want.every((k) => keys.includes(k)) ? true : undefined;
      });
    }
  });
});
