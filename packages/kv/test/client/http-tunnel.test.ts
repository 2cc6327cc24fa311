// The HTTP tunnel served by a KvNode to anyone holding the cluster key: bad
// bytes on a stream get an HTTP error and the node keeps serving.
import '../../src/transport/polyfill.js';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Duplex, PassThrough } from 'node:stream';
import { noise } from '@chainsafe/libp2p-noise';
import { yamux } from '@chainsafe/libp2p-yamux';
import type { Connection } from '@libp2p/interface';
import { preSharedKey } from '@libp2p/pnet';
import { tcp } from '@libp2p/tcp';
import { multiaddr } from '@multiformats/multiaddr';
import { createLibp2p, type Libp2p } from 'libp2p';
import { ConsulHttpServer } from '../../src/api/http.js';
import { KV_HTTP_PROTOCOL } from '../../src/api/http-tunnel.js';
import { LocalBackend } from '../../src/api/local-backend.js';
import { KvNode } from '../../src/api/node.js';
import { multiaddrOf } from '../../src/api/node-address.js';
import { KvClient } from '../../src/client/kv-client.js';
import { freePort } from '../../src/testing/free-port.js';
import { parseClusterKey } from '../../src/transport/identity.js';
import { quietLogger } from '../../src/transport/libp2p.js';

const CLUSTER_KEY = '5c'.repeat(32);

/** Sends `bytes` on a fresh tunnel stream and returns everything the server wrote back before closing. */
async function exchangeRaw(connection: Connection, bytes: Uint8Array): Promise<string> {
  const stream = await connection.newStream(KV_HTTP_PROTOCOL, { signal: AbortSignal.timeout(5_000) });
  const chunks: Buffer[] = [];
  const done = new Promise<void>((resolve) => {
    stream.addEventListener('message', (event) => {
      const data = event.data;
      chunks.push(Buffer.from(data instanceof Uint8Array ? data : data.subarray()));
    });
    stream.addEventListener('remoteCloseWrite', () => resolve());
    stream.addEventListener('close', () => resolve());
  });
  stream.send(bytes);
  await Promise.race([done, new Promise((r) => setTimeout(r, 10_000))]);
  stream.abort(new Error('test done'));
  return Buffer.concat(chunks).toString('latin1');
}

describe('HTTP tunnel: bad input', function () {
  this.timeout(60_000);
  let root: string;
  let node: KvNode | undefined;
  let dialer: Libp2p | undefined;
  let listen: string;
  let connection: Connection | undefined;
  /**
   * One connection for the whole test: a dial by address alone opens a new
   * one each time, and libp2p refuses more than 5 inbound connections per
   * second from one host (inboundConnectionThreshold).
   */
  async function connect(): Promise<Connection> {
    if (connection?.status !== 'open') {
      connection = await dialer!.dial(multiaddr(multiaddrOf(listen)), { signal: AbortSignal.timeout(5_000) });
    }
    return connection;
  }

  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'weft-kv-tunnel-'));
    listen = `127.0.0.1:${await freePort()}`;
    node = await KvNode.open({ dataDir: join(root, 'n1'), id: 'n1', listen, clusterKey: CLUSTER_KEY });
    await node.waitForLeader(20_000);
    connection = undefined;
    dialer = await createLibp2p({
      logger: quietLogger(),
      transports: [tcp()],
      connectionEncrypters: [noise()],
      streamMuxers: [yamux()],
      connectionProtector: preSharedKey({ psk: parseClusterKey(CLUSTER_KEY) }),
    });
  });
  after(async () => {
    await dialer?.stop();
    await node?.close();
    await rm(root, { recursive: true, force: true });
  });

  it('garbage bytes get 400 naming the parse error; oversized headers get 431; the node keeps serving', async () => {
    await node!.put('keep/me', new TextEncoder().encode('v'));
    const garbage = await exchangeRaw(await connect(), new Uint8Array([0, 255, 1, 13, 10, 13, 10, 7, 7]));
    assert.match(garbage, /^HTTP\/1\.1 400 Bad Request\r\n/);
    assert.match(garbage, /malformed HTTP request \(HPE_/);

    const hugeHeader = `GET /v1/kv/keep/me HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(64 * 1024)}\r\n\r\n`;
    const tooLarge = await exchangeRaw(await connect(), new TextEncoder().encode(hugeHeader));
    assert.match(tooLarge, /^HTTP\/1\.1 431 Request Header Fields Too Large\r\n/);

    const badPath = await exchangeRaw(
      await connect(),
      new TextEncoder().encode('GET /v1/kv/%ZZ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'),
    );
    assert.match(badPath, /^HTTP\/1\.1 400 /);
    assert.match(badPath, /bad %-escape/);

    // A well-formed request on the same tunnel still works, and the data is intact.
    const ok = await exchangeRaw(
      await connect(),
      new TextEncoder().encode('GET /v1/kv/keep/me?raw HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'),
    );
    assert.match(ok, /^HTTP\/1\.1 200 OK\r\n/);
    assert.match(ok, /\r\n\r\nv$/);
    const client = await KvClient.connect({ servers: [listen], clusterKey: CLUSTER_KEY });
    try {
      assert.equal(new TextDecoder().decode((await client.get('keep/me'))?.value), 'v');
    } finally {
      await client.close();
    }
  });

  it('a stream cut off mid-request leaves the node serving', async () => {
    const stream = await (await connect()).newStream(KV_HTTP_PROTOCOL);
    stream.send(
      new TextEncoder().encode('PUT /v1/kv/half HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc'),
    );
    await new Promise((r) => setTimeout(r, 100));
    stream.abort(new Error('gone'));
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(await node!.get('half'), null, 'a body cut short is not written');
    assert.equal(await node!.put('after', new Uint8Array([1])), true);
  });
});

describe('ConsulHttpServer.acceptConnection: a connection that never completes its first request', () => {
  function duplexPair(): [Duplex, Duplex] {
    const toServer = new PassThrough();
    const toClient = new PassThrough();
    return [
      Duplex.from({ readable: toClient, writable: toServer }),
      Duplex.from({ readable: toServer, writable: toClient }),
    ];
  }

  it('is closed after firstRequestTimeoutMs; one that sent its request is answered and kept', async () => {
    const server = new ConsulHttpServer(new LocalBackend());
    try {
      const [slowClient, slowServerSide] = duplexPair();
      slowClient.on('error', () => {}); // the pair reports its destruction as an AbortError
      const slowClosed = new Promise<number>((resolve) => {
        const start = Date.now();
        slowServerSide.once('close', () => resolve(Date.now() - start));
      });
      server.acceptConnection(slowServerSide, { firstRequestTimeoutMs: 200 });
      slowClient.write('GET /v1/kv/a HTTP/1.1\r\nHost: x\r\n'); // headers never end
      const closedAfterMs = await Promise.race([
        slowClosed,
        new Promise<number>((r) => setTimeout(() => r(-1), 5_000)),
      ]);
      assert.ok(closedAfterMs >= 150, `closed after ${closedAfterMs} ms`);

      const [client, serverSide] = duplexPair();
      client.on('error', () => {});
      let closed = false;
      serverSide.once('close', () => {
        closed = true;
      });
      server.acceptConnection(serverSide, { firstRequestTimeoutMs: 200 });
      const answer = new Promise<string>((resolve) => {
        let text = '';
        client.on('data', (d: Buffer) => {
          text += d.toString();
          if (text.includes('\r\n\r\n')) resolve(text);
        });
      });
      client.write('GET /v1/status/leader HTTP/1.1\r\nHost: x\r\n\r\n');
      assert.match(await answer, /^HTTP\/1\.1 200 OK/);
      await new Promise((r) => setTimeout(r, 400));
      assert.equal(
        closed,
        false,
        'a connection that delivered a request is not cut at the first-request deadline',
      );
      serverSide.destroy();
    } finally {
      await server.close();
    }
  });
});
