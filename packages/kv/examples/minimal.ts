// One member of a cluster inside an app (one per host in production). With
// no PEERS it forms a cluster of one. Run: node --import tsx examples/minimal.ts
import { KvNode, KvNodeUnavailableError } from '@weft/kv';
import type { DirEntry } from '@weft/kv/fsm/types';

const node: KvNode = await KvNode.open({
  dataDir: process.env.DATA_DIR ?? '/tmp/weft-kv-minimal',
  id: process.env.NODE_NAME ?? 'app-1',
  listen: process.env.LISTEN ?? '127.0.0.1:7101', // this member's identity: keep it stable
  peers: process.env.PEERS?.split(',') ?? [], // the other initial members' listen addresses
  http: '127.0.0.1:0', // optional Consul HTTP API (0 = any free port)
});
const bytes = (s: string) => new TextEncoder().encode(s);
const text = (e: DirEntry | null) => (e ? new TextDecoder().decode(e.value) : null);

try {
  await node.waitForLeader();
  await node.put('config/mode', bytes('blue'));
  const mode: DirEntry | null = await node.get('config/mode'); // linearizable
  console.log('mode', text(mode), 'at index', mode?.modifyIndex, 'http', node.httpAddress());

  // Optimistic update: succeeds only if nobody wrote since we read.
  const swapped: boolean = await node.cas('config/mode', bytes('green'), mode?.modifyIndex ?? 0);
  console.log('cas', swapped, text(await node.get('config/mode', { stale: true })));

  // A lock belongs to a session, which ends unless renewed (renewSession) within ttlMs.
  const session: string = await node.createSession({ name: 'leader-election', ttlMs: 10_000 });
  const leader: boolean = await node.put('service/leader', bytes(node.name), { acquire: session });
  const members = node.members().map((m) => `${m.id}=${m.role}`);
  console.log('lock', leader, 'members', members.join(' '));
  // Release before destroying: a lock lost by destroy or expiry blocks acquirers for lockDelayMs.
  await node.put('service/leader', bytes(node.name), { release: session });
  await node.destroySession(session);

  // Watch a prefix: the listing now, then again after every change under it.
  const stop = new AbortController();
  let events = 0;
  for await (const { index, entries } of node.watchPrefix('config/', { signal: stop.signal })) {
    console.log('watch', index, entries.map((e) => `${e.key}=${text(e)}`).join(' '));
    if (++events === 1) await node.put('config/started', bytes(new Date().toISOString()));
    else stop.abort();
  }
} catch (err) {
  // No quorum within proposalTimeoutMs; a timed-out write may still be applied later.
  if (err instanceof KvNodeUnavailableError) console.error('cluster unavailable:', err.message);
  throw err;
} finally {
  await node.close();
}
