#!/usr/bin/env node
// @ts-check
// Embedding @weft/kv in an application: three members of one cluster in this
// process, each with its own LevelDB data directory and its own libp2p
// listener on loopback (exactly what three processes or three hosts would
// do), then every part of the API once. Run after `npm run build`:
//
//   node packages/kv/examples/embed.mjs [DATA_DIR]
//
// DATA_DIR (default: a new temporary directory, removed at the end) receives
// one sub-directory per member. Every step prints one line; a step that does
// not behave as documented throws, and the process exits with status 1.
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KvNode } from '@weft/kv';

const text = new TextEncoder();
const utf8 = new TextDecoder();
/** @param {Uint8Array | undefined} bytes */
const str = (bytes) => (bytes ? utf8.decode(bytes) : undefined);

/** @param {string} name @param {string} what */
function step(name, what) {
  process.stdout.write(`${name.padEnd(12)} ${what}\n`);
}

/** A free TCP port on loopback (the OS picks it; we close and reuse it). */
function freePort() {
  return /** @type {Promise<number>} */ (
    new Promise((resolve, reject) => {
      const server = createServer();
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => {
        const address = server.address();
        server.close(() => resolve(typeof address === 'object' && address ? address.port : 0));
      });
    })
  );
}

const givenDir = process.argv[2];
const root = givenDir ?? (await mkdtemp(join(tmpdir(), 'weft-kv-example-')));
const ports = await Promise.all([freePort(), freePort(), freePort(), freePort()]);
const raftAddresses = ports.map((port) => `127.0.0.1:${port}`);
const initial = raftAddresses.slice(0, 3);

/** @type {KvNode[]} */
const open = [];
try {
  // 1. Open three members. Each lists the other two as peers: every member
  //    computes the same initial configuration, so the cluster forms as soon
  //    as two of them (a quorum) are up. Member 1 also serves the Consul HTTP API.
  const nodes = await Promise.all(
    initial.map((listen, i) =>
      KvNode.open({
        dataDir: join(root, `n${i + 1}`),
        id: `n${i + 1}`,
        listen,
        peers: initial.filter((p) => p !== listen),
        cluster: 'example',
        ...(i === 0 ? { http: '127.0.0.1:0' } : {}),
      }),
    ),
  );
  open.push(...nodes);
  const [n1, n2, n3] = /** @type {[KvNode, KvNode, KvNode]} */ (nodes);
  const leaderId = await n1.waitForLeader(15_000);
  step('open', `3 members on ${initial.join(', ')}; leader ${leaderId}`);

  // 2. Writes go through any member (followers forward to the leader); a
  //    default read is linearizable from any member.
  assert.equal(await n2.put('app/config', text.encode('v1')), true);
  const read = await n3.get('app/config');
  assert.equal(str(read?.value), 'v1');
  step(
    'put/get',
    `put app/config=v1 on n2, read "${str(read?.value)}" on n3 (ModifyIndex ${read?.modifyIndex})`,
  );

  // The same data over the Consul HTTP API of member 1.
  const viaHttp = await fetch(`http://${n1.httpAddress()}/v1/kv/app/config?raw`).then((r) => r.text());
  assert.equal(viaHttp, 'v1');
  step('http', `GET http://${n1.httpAddress()}/v1/kv/app/config?raw -> "${viaHttp}"`);

  // 3. Check-and-set: 0 = create only; otherwise the ModifyIndex you read.
  const created = await n1.cas('app/counter', text.encode('1'), 0);
  const counter = await n1.get('app/counter');
  const staleCas = await n2.cas('app/counter', text.encode('99'), (counter?.modifyIndex ?? 0) - 1);
  const freshCas = await n2.cas('app/counter', text.encode('2'), counter?.modifyIndex ?? 0);
  assert.deepEqual([created, staleCas, freshCas], [true, false, true]);
  assert.equal(str((await n3.get('app/counter'))?.value), '2');
  step('cas', `create-only=${created}, stale index=${staleCas}, current index=${freshCas}; app/counter=2`);

  // 4. Transactions: all operations or none (Consul /v1/txn verbs, at most 64).
  const moved = await n1.txn([
    { verb: 'check-index', key: 'app/counter', index: (await n1.get('app/counter'))?.modifyIndex ?? 0 },
    { verb: 'set', key: 'app/counter', value: text.encode('3') },
    { verb: 'set', key: 'app/audit', value: text.encode('counter 2 -> 3') },
  ]);
  assert.equal(moved.ok, true);
  const refused = await n1.txn([
    { verb: 'set', key: 'app/counter', value: text.encode('4') },
    { verb: 'check-not-exists', key: 'app/audit' },
  ]);
  assert.equal(refused.ok, false);
  assert.equal(str((await n2.get('app/counter'))?.value), '3', 'the refused transaction changed nothing');
  const refusedWhy = refused.ok ? '' : refused.errors.map((e) => `op ${e.opIndex}: ${e.what}`).join('; ');
  step('txn', `committed 3 ops at index ${moved.index}; refused one (${refusedWhy}); app/counter=3`);

  // 5. Watch a prefix as an async iterator: the current listing first, then
  //    one event per change. Served from n3's own applied state.
  const stopWatch = new AbortController();
  /** @type {string[][]} */
  const seen = [];
  const watching = (async () => {
    for await (const event of n3.watchPrefix('jobs/', { signal: stopWatch.signal })) {
      seen.push(event.entries.map((e) => `${e.key}=${str(e.value)}`));
      if (event.entries.length === 2) stopWatch.abort();
    }
  })();
  while (seen.length === 0) await new Promise((r) => setTimeout(r, 10));
  await n1.put('jobs/1', text.encode('build'));
  await n2.put('jobs/2', text.encode('test'));
  await watching;
  assert.deepEqual(seen.at(-1), ['jobs/1=build', 'jobs/2=test']);
  step('watch', `n3 saw ${seen.map((s) => `[${s.join(' ')}]`).join(' -> ')}`);

  // 6. Sessions and locks: a key acquired by a session is held until that
  //    session releases it or ends (TTL expiry or destroy).
  const alice = await n1.createSession({ name: 'alice', ttlMs: 15_000 });
  const bob = await n2.createSession({ name: 'bob', ttlMs: 15_000 });
  const aliceGot = await n1.put('locks/deploy', text.encode('alice'), { acquire: alice });
  const bobBlocked = await n2.put('locks/deploy', text.encode('bob'), { acquire: bob });
  const holder = (await n3.get('locks/deploy'))?.session;
  assert.deepEqual([aliceGot, bobBlocked, holder], [true, false, alice]);
  await n1.put('locks/deploy', text.encode('alice'), { release: alice });
  const bobGot = await n2.put('locks/deploy', text.encode('bob'), { acquire: bob });
  assert.equal(bobGot, true);
  const renewed = await n2.renewSession(bob);
  assert.equal(renewed?.name, 'bob');
  const sessionNames = (await n3.sessions()).map((s) => s.name).sort();
  assert.deepEqual(sessionNames, ['alice', 'bob']);
  await n1.destroySession(alice);
  await n2.destroySession(bob);
  const afterDestroy = await n3.get('locks/deploy');
  assert.equal(afterDestroy?.session, '', "destroying bob's session released its lock");
  step(
    'lock',
    `alice acquired=${aliceGot}, bob blocked=${!bobBlocked}; after release bob acquired=${bobGot}; sessions [${sessionNames.join(', ')}] destroyed, lock free`,
  );

  // 7. Membership: a new member joins through any member (added as a
  //    learner, promoted to voter once caught up); removeMember takes it out.
  const n4 = await KvNode.open({
    dataDir: join(root, 'n4'),
    id: 'n4',
    listen: /** @type {string} */ (raftAddresses[3]),
    join: n1.raftId,
    cluster: 'example',
  });
  open.push(n4);
  const deadline = Date.now() + 20_000;
  while (!n1.members().some((m) => m.id === n4.raftId && m.role === 'voter')) {
    if (Date.now() > deadline)
      throw new Error(`n4 was not promoted to voter: ${JSON.stringify(n1.members())}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.equal(str((await n4.get('app/counter'))?.value), '3', 'the new member has the data');
  const members = await n1.membersWithNames();
  step('join', `n4 joined and was promoted: ${members.map((m) => `${m.name}(${m.role})`).join(' ')}`);
  await n1.removeMember(n4.raftId);
  await n4.close();
  open.pop();
  assert.equal(n1.members().length, 3);
  step('remove', `n4 removed; voters ${n1.status().voters.join(', ')}`);

  // 8. Leadership transfer to a chosen voter (e.g. before maintenance of the leader).
  const leader = /** @type {KvNode} */ (nodes.find((n) => n.status().role === 'leader'));
  const target = /** @type {KvNode} */ (nodes.find((n) => n !== leader));
  await leader.transferLeadership(target.raftId);
  assert.equal(target.status().role, 'leader');
  assert.equal(await leader.put('app/after-transfer', text.encode('ok')), true);
  step('transfer', `leadership ${leader.name} -> ${target.name}; writes still accepted`);

  // 9. Close: stops the HTTP server, the loop, the transport, then LevelDB.
  await Promise.all(nodes.map((n) => n.close()));
  open.length = 0;
  step('close', `all members closed; data in ${root}${givenDir ? '' : ' (temporary: removed now)'}`);
} finally {
  await Promise.all(open.map((n) => n.close().catch(() => {})));
  if (!givenDir) await rm(root, { recursive: true, force: true });
}
