// The agent's HTTP API on loopback: the weft JSON API under /v1/weft/,
// Prometheus metrics at /metrics, and everything else under /v1/ handed to
// the Consul-compatible KV handler of @weft/kv.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Startable } from '../agent/startable.js';
import type { Logger } from '../log/logger.js';
import {
  type AgentBackend,
  ApiError,
  badRequest,
  type ContainerAttachRequest,
  type ContainerRunRequest,
  type NetworkCreateRequest,
  notFound,
} from './types.js';

export type RequestHandler = (req: IncomingMessage, res: ServerResponse) => void | Promise<void>;

export interface ApiServerOptions {
  /** host:port; port 0 picks a free one (see `address`). */
  listen: string;
  backend: AgentBackend;
  /** Consul-compatible KV API (/v1/kv, /v1/txn, /v1/session, /v1/status/...). */
  kvHandler?: RequestHandler;
  metrics?: { render(): Promise<string>; contentType: string };
  logger?: Logger;
}

const maxBodyBytes = 1 << 20;
const namePattern = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;

export function parseHostPort(value: string, what: string): { host: string; port: number } {
  const m = /^(\[[0-9a-fA-F:.]+\]|[^:]+):(\d{1,5})$/.exec(value);
  const port = m ? Number(m[2]) : Number.NaN;
  if (!m || port > 65535) throw new Error(`${what} "${value}" is not host:port (e.g. 127.0.0.1:8500)`);
  return { host: (m[1] as string).replace(/^\[|\]$/g, ''), port };
}

export class ApiServer implements Startable {
  private server?: Server;
  private boundAddress?: { host: string; port: number };

  constructor(private readonly opts: ApiServerOptions) {}

  /** The address actually bound (after start), e.g. to learn a port chosen by the kernel. */
  get address(): string {
    if (!this.boundAddress) throw new Error('API server is not started');
    return `${this.boundAddress.host}:${this.boundAddress.port}`;
  }

  async start(): Promise<void> {
    if (this.server) return;
    const { host, port } = parseHostPort(this.opts.listen, 'API address');
    const server = createServer((req, res) => {
      this.handle(req, res).catch((err) => this.fail(res, err));
    });
    // Blocking KV queries hold a request open for minutes; don't cut them.
    server.requestTimeout = 0;
    server.keepAliveTimeout = 5000;
    await new Promise<void>((resolve, reject) => {
      const onError = (err: Error) =>
        reject(new Error(`cannot listen on ${this.opts.listen}: ${err.message}`, { cause: err }));
      server.once('error', onError);
      server.listen(port, host, () => {
        server.off('error', onError);
        resolve();
      });
    });
    const a = server.address() as AddressInfo;
    this.boundAddress = { host, port: a.port };
    this.server = server;
    this.opts.logger?.info({ address: this.address }, 'HTTP API listening');
  }

  async stop(): Promise<void> {
    const server = this.server;
    if (!server) return;
    this.server = undefined;
    await new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    });
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://agent');
    const method = req.method ?? 'GET';
    const path = url.pathname;
    if (path === '/metrics' && this.opts.metrics) {
      if (method !== 'GET') throw new ApiError(405, `method ${method} not allowed on /metrics`);
      const text = await this.opts.metrics.render();
      res.writeHead(200, { 'content-type': this.opts.metrics.contentType });
      res.end(text);
      return;
    }
    if (path.startsWith('/v1/weft/')) {
      const result = await this.route(
        method,
        path.slice('/v1/weft/'.length).split('/').map(decodeURIComponent),
        url,
        req,
      );
      const status = method === 'POST' && result !== undefined ? 201 : 200;
      this.json(res, status, result ?? {});
      return;
    }
    if (path.startsWith('/v1/') && this.opts.kvHandler) {
      await this.opts.kvHandler(req, res);
      return;
    }
    throw notFound(`no such endpoint: ${method} ${path}`);
  }

  private async route(method: string, parts: string[], url: URL, req: IncomingMessage): Promise<unknown> {
    const b = this.opts.backend;
    const [resource, id, action] = parts;
    const key = `${method} ${resource}${id !== undefined ? '/:id' : ''}${action !== undefined ? `/${action}` : ''}`;
    switch (key) {
      case 'GET networks':
        return b.listNetworks();
      case 'POST networks':
        return b.createNetwork(validateNetworkCreate(await readJson(req)));
      case 'GET networks/:id':
        return b.inspectNetwork(requireName(id, 'network'));
      case 'DELETE networks/:id':
        await b.removeNetwork(requireName(id, 'network'));
        return undefined;
      case 'GET containers':
        return b.listContainers({ all: url.searchParams.has('all') });
      case 'POST containers':
        return b.runContainer(validateRun(await readJson(req)));
      case 'GET containers/:id':
        return b.inspectContainer(requireName(id, 'container'));
      case 'DELETE containers/:id':
        await b.removeContainer(requireName(id, 'container'));
        return undefined;
      case 'POST containers/:id/attach':
        return b.attachContainer(requireName(id, 'container'), validateAttach(await readJson(req)));
      case 'POST containers/:id/detach': {
        const body = objectBody(await readJson(req));
        return b.detachContainer(requireName(id, 'container'), requireName(body.network, 'network'));
      }
      case 'GET members':
        return b.members();
      case 'GET status':
        return b.status();
      default:
        throw notFound(`no such endpoint: ${method} /v1/weft/${parts.join('/')}`);
    }
  }

  private json(res: ServerResponse, status: number, body: unknown): void {
    const text = `${JSON.stringify(body)}\n`;
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
    res.end(text);
  }

  private fail(res: ServerResponse, err: unknown): void {
    const status = err instanceof ApiError ? err.status : 500;
    const message = err instanceof Error ? err.message : String(err);
    if (status >= 500) this.opts.logger?.error({ err }, 'API request failed');
    if (res.headersSent) {
      res.destroy();
      return;
    }
    this.json(res, status, { error: message });
  }
}

async function readJson(req: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > maxBodyBytes) throw new ApiError(413, `request body is larger than ${maxBodyBytes} bytes`);
    chunks.push(chunk as Buffer);
  }
  const text = Buffer.concat(chunks).toString('utf8');
  if (text.trim() === '') return {};
  try {
    return JSON.parse(text);
  } catch (err) {
    throw badRequest(`request body is not valid JSON: ${(err as Error).message}`);
  }
}

function objectBody(body: unknown): Record<string, unknown> {
  if (typeof body !== 'object' || body === null || Array.isArray(body))
    throw badRequest('request body must be a JSON object');
  return body as Record<string, unknown>;
}

function requireName(value: unknown, what: string): string {
  if (typeof value !== 'string' || value === '') throw badRequest(`${what} name is missing`);
  if (!namePattern.test(value)) {
    throw badRequest(
      `invalid ${what} name "${value}": use letters, digits, '_', '.', '-' (at most 63, starting with a letter or digit)`,
    );
  }
  return value;
}

function optionalString(body: Record<string, unknown>, field: string): string | undefined {
  const v = body[field];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string') throw badRequest(`"${field}" must be a string`);
  return v;
}

function optionalStringMap(body: Record<string, unknown>, field: string): Record<string, string> | undefined {
  const v = body[field];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'object' || Array.isArray(v) || Object.values(v).some((x) => typeof x !== 'string')) {
    throw badRequest(`"${field}" must be an object of strings`);
  }
  return v as Record<string, string>;
}

function optionalStringList(body: Record<string, unknown>, field: string): string[] | undefined {
  const v = body[field];
  if (v === undefined || v === null) return undefined;
  if (!Array.isArray(v) || v.some((x) => typeof x !== 'string'))
    throw badRequest(`"${field}" must be a list of strings`);
  return v as string[];
}

export function validateNetworkCreate(raw: unknown): NetworkCreateRequest {
  const body = objectBody(raw);
  const internal = body.internal;
  if (internal !== undefined && typeof internal !== 'boolean')
    throw badRequest('"internal" must be true or false');
  return {
    name: requireName(body.name, 'network'),
    driver: optionalString(body, 'driver'),
    subnet: optionalString(body, 'subnet'),
    gateway: optionalString(body, 'gateway'),
    ipRange: optionalString(body, 'ipRange'),
    auxAddresses: optionalStringMap(body, 'auxAddresses'),
    options: optionalStringMap(body, 'options'),
    labels: optionalStringMap(body, 'labels'),
    internal: internal as boolean | undefined,
  };
}

function validateAttach(raw: unknown): ContainerAttachRequest {
  const body = objectBody(raw);
  const aliases = optionalStringList(body, 'aliases');
  for (const a of aliases ?? []) requireName(a, 'alias');
  return { network: requireName(body.network, 'network'), aliases, ip: optionalString(body, 'ip') };
}

function validateRun(raw: unknown): ContainerRunRequest {
  const body = objectBody(raw);
  const attach = validateAttach(body);
  const detach = body.detach;
  if (detach !== undefined && typeof detach !== 'boolean') throw badRequest('"detach" must be true or false');
  const command = optionalStringList(body, 'command');
  if (detach && (!command || command.length === 0)) throw badRequest('a detached container needs a command');
  return {
    ...attach,
    name: requireName(body.name, 'container'),
    command,
    detach: detach as boolean | undefined,
  };
}
