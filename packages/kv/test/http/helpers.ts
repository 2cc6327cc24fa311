// A LocalBackend behind a real ConsulHttpServer on a loopback port, and a raw HTTP client
// that sends paths byte-for-byte (fetch would normalise them).
import { request } from 'node:http';
import { ConsulHttpServer, type ConsulHttpServerOptions } from '../../src/api/http.js';
import { LocalBackend, type LocalBackendOptions } from '../../src/api/local-backend.js';

export interface RawResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
  text: string;
}

export interface TestServer {
  backend: LocalBackend;
  server: ConsulHttpServer;
  port: number;
  call(
    method: string,
    path: string,
    body?: string | Uint8Array,
    headers?: Record<string, string>,
  ): Promise<RawResponse>;
  close(): Promise<void>;
}

export async function startServer(
  opts: { backend?: LocalBackendOptions; http?: ConsulHttpServerOptions } = {},
): Promise<TestServer> {
  const backend = new LocalBackend(opts.backend);
  const server = new ConsulHttpServer(backend, { host: '127.0.0.1', port: 0, ...opts.http });
  const { port } = await server.listen();
  const call = (
    method: string,
    path: string,
    body?: string | Uint8Array,
    headers: Record<string, string> = {},
  ) =>
    new Promise<RawResponse>((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port, method, path, headers, agent: false }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const buf = Buffer.concat(chunks);
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body: buf,
            text: buf.toString('utf8'),
          });
        });
        res.on('error', reject);
      });
      req.on('error', reject);
      req.end(body);
    });
  return {
    backend,
    server,
    port,
    call,
    close: async () => {
      backend.close();
      await server.close();
    },
  };
}
