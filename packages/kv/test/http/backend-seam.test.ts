// What the HTTP layer asks of its backend: the consistency mode it passes, how it reports a
// cluster that cannot answer, and that keys travel unchanged.
import assert from 'node:assert/strict';
import type { AppliedCommand, Consistency, ReadView } from '../../src/api/backend.js';
import { ConsulHttpServer } from '../../src/api/http.js';
import { LocalBackend } from '../../src/api/local-backend.js';
import type { Command } from '../../src/fsm/types.js';
import { startServer } from './helpers.js';

class UnavailableError extends Error {
  readonly code = 'unavailable';
}

/** A LocalBackend that records read modes and can be switched to "no quorum". */
class ProbeBackend extends LocalBackend {
  readonly reads: Consistency[] = [];
  down = false;
  override async read(consistency: Consistency): Promise<ReadView> {
    this.reads.push(consistency);
    if (this.down)
      throw new UnavailableError('no leader known for 5000 ms: check that a quorum of peers is up');
    return super.read(consistency);
  }
  override async apply(command: Command): Promise<AppliedCommand> {
    if (this.down) throw new UnavailableError('write not committed within 5000 ms (no quorum)');
    return super.apply(command);
  }
}

describe('http: the KvBackend seam', () => {
  it('passes ?consistent / ?stale / default through to backend.read', async () => {
    const backend = new ProbeBackend();
    const server = new ConsulHttpServer(backend);
    const { port } = await server.listen();
    try {
      await fetch(`http://127.0.0.1:${port}/v1/kv/x?consistent`);
      await fetch(`http://127.0.0.1:${port}/v1/kv/x?stale`);
      await fetch(`http://127.0.0.1:${port}/v1/kv/x`);
      await fetch(`http://127.0.0.1:${port}/v1/session/list?consistent`);
      assert.deepEqual(backend.reads, ['consistent', 'stale', 'default', 'consistent']);
    } finally {
      await server.close();
    }
  });

  it('an unavailable cluster is a 503 naming the cause, for reads and writes', async () => {
    const backend = new ProbeBackend();
    const server = new ConsulHttpServer(backend);
    const { port } = await server.listen();
    try {
      backend.down = true;
      const r = await fetch(`http://127.0.0.1:${port}/v1/kv/x`);
      assert.equal(r.status, 503);
      assert.match(await r.text(), /no leader known for 5000 ms/);
      const w = await fetch(`http://127.0.0.1:${port}/v1/kv/x`, { method: 'PUT', body: 'v' });
      assert.equal(w.status, 503);
      assert.match(await w.text(), /no quorum/);
      backend.down = false;
      assert.equal((await fetch(`http://127.0.0.1:${port}/v1/kv/x`)).status, 404, 'nothing was written');
    } finally {
      await server.close();
    }
  });

  it('keys with spaces, unicode, %, + and ? travel unchanged', async () => {
    const s = await startServer();
    try {
      for (const key of ['a b', 'ünï/cødé', 'emoji/🚀', 'pct%41', 'plus+sign', 'q?mark', 'trailing/']) {
        const path = `/v1/kv/${key.split('/').map(encodeURIComponent).join('/')}`;
        assert.equal((await s.call('PUT', path, key)).text, 'true', key);
        const got = JSON.parse((await s.call('GET', path)).text)[0];
        assert.equal(got.Key, key);
        assert.equal(Buffer.from(got.Value, 'base64').toString(), key);
      }
      assert.equal(s.backend.fsm.list('').value.length, 7);
    } finally {
      await s.close();
    }
  });
});
