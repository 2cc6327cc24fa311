import assert from 'node:assert/strict';
import { ApiServer } from '../../src/api/server.js';
import { AgentMetrics } from '../../src/metrics/metrics.js';
import { FakeBackend } from './fake-backend.js';

describe('agent HTTP API', () => {
  let server: ApiServer;
  let backend: FakeBackend;
  let base: string;
  const metrics = new AgentMetrics({ defaultMetrics: false });

  beforeEach(async () => {
    backend = new FakeBackend();
    server = new ApiServer({
      listen: '127.0.0.1:0',
      backend,
      metrics,
      kvHandler: (_req, res) => {
        res.writeHead(200, { 'content-type': 'text/plain' });
        res.end('kv handler');
      },
    });
    await server.start();
    base = `http://${server.address}`;
  });
  afterEach(() => server.stop());

  const call = async (method: string, path: string, body?: string) => {
    const res = await fetch(`${base}${path}`, { method, body });
    const text = await res.text();
    return { status: res.status, text, json: () => JSON.parse(text) };
  };

  it('creates, lists, inspects and removes networks with JSON bodies and status codes', async () => {
    const created = await call(
      'POST',
      '/v1/weft/networks',
      JSON.stringify({ name: 'my-net', subnet: '198.18.9.0/24' }),
    );
    assert.equal(created.status, 201);
    const id = created.json().id as string;
    assert.match(id, /^[0-9a-f]{64}$/);
    const list = await call('GET', '/v1/weft/networks');
    assert.deepEqual(
      list.json().map((n: { name: string }) => n.name),
      ['my-net'],
    );
    const inspected = await call('GET', '/v1/weft/networks/my-net');
    assert.equal(inspected.json().id, id);
    assert.equal((await call('DELETE', '/v1/weft/networks/my-net')).status, 200);
    assert.equal((await call('GET', '/v1/weft/networks/my-net')).status, 404);
  });

  it('answers bad input with 4xx and a message naming the cause', async () => {
    const badJson = await call('POST', '/v1/weft/networks', '{"name":');
    assert.equal(badJson.status, 400);
    assert.match(badJson.json().error, /not valid JSON/);
    const badName = await call('POST', '/v1/weft/networks', JSON.stringify({ name: 'bad name!' }));
    assert.equal(badName.status, 400);
    assert.match(badName.json().error, /invalid network name "bad name!"/);
    const badType = await call('POST', '/v1/weft/networks', JSON.stringify({ name: 'n', labels: { a: 1 } }));
    assert.equal(badType.status, 400);
    assert.match(badType.json().error, /"labels" must be an object of strings/);
    const notObject = await call('POST', '/v1/weft/containers', '[1,2]');
    assert.equal(notObject.status, 400);
    const detachedNoCmd = await call(
      'POST',
      '/v1/weft/containers',
      JSON.stringify({ name: 'c', network: 'n', detach: true }),
    );
    assert.match(detachedNoCmd.json().error, /detached container needs a command/);
    const unknown = await call('GET', '/v1/weft/nothing');
    assert.equal(unknown.status, 404);
    assert.match(unknown.json().error, /no such endpoint: GET \/v1\/weft\/nothing/);
    await call('POST', '/v1/weft/networks', JSON.stringify({ name: 'dup' }));
    const dup = await call('POST', '/v1/weft/networks', JSON.stringify({ name: 'dup' }));
    assert.equal(dup.status, 409);
    assert.match(dup.json().error, /network "dup" already exists/);
    assert.equal(backend.networks.size, 1, 'a rejected request changes nothing');
  });

  it('runs, attaches, detaches and removes containers', async () => {
    await call('POST', '/v1/weft/networks', JSON.stringify({ name: 'a' }));
    await call('POST', '/v1/weft/networks', JSON.stringify({ name: 'b' }));
    const run = await call(
      'POST',
      '/v1/weft/containers',
      JSON.stringify({ name: 'web', network: 'a', aliases: ['www'] }),
    );
    assert.equal(run.status, 201);
    assert.deepEqual(run.json().endpoints[0].aliases, ['www']);
    const attached = await call('POST', '/v1/weft/containers/web/attach', JSON.stringify({ network: 'b' }));
    assert.deepEqual(
      attached.json().endpoints.map((e: { network: string }) => e.network),
      ['a', 'b'],
    );
    const detached = await call('POST', '/v1/weft/containers/web/detach', JSON.stringify({ network: 'a' }));
    assert.deepEqual(
      detached.json().endpoints.map((e: { network: string }) => e.network),
      ['b'],
    );
    assert.equal((await call('GET', '/v1/weft/containers')).json().length, 1);
    assert.equal((await call('DELETE', '/v1/weft/containers/web')).status, 200);
    assert.equal((await call('GET', '/v1/weft/containers/web')).status, 404);
  });

  it('serves members, status, Prometheus metrics, and hands /v1/kv to the KV handler', async () => {
    assert.equal((await call('GET', '/v1/weft/members')).json().length, 2);
    assert.equal((await call('GET', '/v1/weft/status')).json().role, 'voter');
    metrics.setSources({ raft: () => ({ term: 7, commitIndex: 12, appliedIndex: 11, isLeader: true }) });
    const m = await call('GET', '/metrics');
    assert.equal(m.status, 200);
    assert.match(m.text, /^weft_raft_term 7$/m);
    assert.match(m.text, /^weft_raft_applied_index 11$/m);
    assert.equal((await call('GET', '/v1/kv/foo')).text, 'kv handler');
  });

  it('start and stop are idempotent and a busy port is a clear error', async () => {
    await server.start();
    const other = new ApiServer({ listen: server.address, backend });
    await assert.rejects(other.start(), /cannot listen on 127\.0\.0\.1:\d+: .*EADDRINUSE/);
    await server.stop();
    await server.stop();
  });
});
