// An agent beyond the voter and learner limits runs as a client of the KV
// store, with the real client mode (kv-client-store.ts: a KvClient over the
// members' libp2p): four agents' KV components as `weft agent` builds them
// with --voters 3 --learners 0 (real KvNodes: LevelDB on disk, libp2p on
// loopback). The client's store and its Consul API proxy reach the members.
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer as createHttpServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { KvNodeComponent } from '../../src/agent/kv-component.js';
import { proxyConsulRequest } from '../../src/kv-adapter/client-store.js';
import { loopbackKvAgents } from './kv-agents.js';

describe('KV roles: the fourth agent with --voters 3 --learners 0 is a client (real client mode)', function () {
  this.timeout(90_000);
  let root: string;
  const running: KvNodeComponent[] = [];
  let proxy: Server | undefined;

  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'weft-kv-client-role-'));
  });
  after(async () => {
    await new Promise<void>((resolve) => (proxy ? proxy.close(() => resolve()) : resolve()));
    await Promise.all(running.splice(0).map((c) => c.stop()));
    await rm(root, { recursive: true, force: true });
  });

  it('its store and its Consul API reach the members; its sessions carry its name', async () => {
    const { addresses, component } = await loopbackKvAgents(root, 4, { voters: 3, learners: 0 });
    const agents = [0, 1, 2, 3].map((i) => component(i, { clientMode: true }));
    await Promise.all(agents.slice(0, 3).map((a) => a.start()));
    running.push(...agents.slice(0, 3));
    const client = agents[3]!;
    await client.start();
    running.push(client);
    assert.equal(client.kvRole, 'client');
    assert.equal(client.isOpen, false);
    assert.deepEqual(agents[0]!.node.status().voters.sort(), addresses.slice(0, 3).sort());
    // `weft members` on the client shows the members' roles, asked from a server.
    const members = (await client.raftMembers()) ?? [];
    assert.deepEqual(members.map((m) => `${m.name}=${m.role}`).sort(), ['h0=voter', 'h1=voter', 'h2=voter']);
    assert.equal(members.filter((m) => m.leader).length, 1);

    // The overlay's calls (KvNodeLike) go to the members.
    assert.equal(await client.put('roles/from-client', new TextEncoder().encode('c')), true);
    const seen = await agents[1]!.node.get('roles/from-client');
    assert.equal(new TextDecoder().decode(seen?.value), 'c');
    const session = await client.createSession({ ttlMs: 4_000 });
    assert.equal((await agents[2]!.node.session(session))?.node, 'h3');
    await client.destroySession(session);

    // The agent's /v1/ API on a client host: served by a member through the client.
    const store = client.clientStore;
    assert.ok(store?.request, 'a client agent store passes Consul requests on');
    const requester = { request: store.request.bind(store) };
    proxy = createHttpServer((req, res) => void proxyConsulRequest(requester, req, res));
    await new Promise<void>((resolve) => proxy!.listen(0, '127.0.0.1', resolve));
    const base = `http://127.0.0.1:${(proxy.address() as { port: number }).port}`;
    const put = await fetch(`${base}/v1/kv/roles/via-proxy`, { method: 'PUT', body: 'p' });
    assert.equal(await put.text(), 'true');
    assert.equal(new TextDecoder().decode((await agents[0]!.node.get('roles/via-proxy'))?.value), 'p');
    const got = await fetch(`${base}/v1/kv/roles/via-proxy?raw`);
    assert.equal(got.status, 200);
    assert.equal(await got.text(), 'p');
    assert.ok(Number(got.headers.get('x-consul-index')) > 0);
    const missing = await fetch(`${base}/v1/kv/roles/none`);
    assert.equal(missing.status, 404);
    const bad = await fetch(`${base}/v1/kv/roles/x?cas=nope`, { method: 'PUT', body: 'x' });
    assert.equal(bad.status, 400);
    assert.match(await bad.text(), /cas/);
  });
});
