// HTTP client for the local agent's API; what the CLI uses. It speaks
// node:http rather than fetch: loading fetch (undici) costs a short-lived CLI
// process 150-200 ms, more than the API call it makes.
import http from 'node:http';
import type {
  ApiErrorBody,
  ContainerAttachRequest,
  ContainerInfo,
  ContainerRunRequest,
  MemberInfo,
  NetworkCreateRequest,
  NetworkInfo,
  StatusInfo,
} from './types.js';

/** A failed API call: `status` 0 means the agent could not be reached at all. */
export class ClientError extends Error {
  constructor(
    readonly status: number,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'ClientError';
  }
}

/** One Consul KV entry as the HTTP API returns it (Value is base64). */
export interface ConsulKvEntry {
  Key: string;
  Value: string | null;
  Flags: number;
  CreateIndex: number;
  ModifyIndex: number;
  LockIndex: number;
  Session?: string;
}

/** An answered request: status and the whole body as text. */
interface Reply {
  ok: boolean;
  status: number;
  text: string;
}

/** One request; rejects only when no answer came (connection refused, reset, timeout). */
async function send(
  url: URL,
  method: string,
  payload: string | undefined,
  contentType: string | undefined,
  timeoutMs: number,
): Promise<Reply> {
  // TLS is loaded only for an https:// API address.
  const transport = url.protocol === 'https:' ? await import('node:https') : http;
  return new Promise((resolve, reject) => {
    const headers: Record<string, string | number> = {};
    if (contentType) headers['content-type'] = contentType;
    if (payload !== undefined) headers['content-length'] = Buffer.byteLength(payload);
    const req = transport.request(url, { method, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', reject);
      res.on('end', () => {
        const status = res.statusCode ?? 0;
        resolve({ ok: status >= 200 && status < 300, status, text: Buffer.concat(chunks).toString('utf8') });
      });
    });
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end(payload);
  });
}

export class AgentClient {
  readonly baseUrl: string;

  constructor(
    address: string,
    private readonly timeoutMs = 60_000,
  ) {
    this.baseUrl =
      address.startsWith('http://') || address.startsWith('https://')
        ? address.replace(/\/$/, '')
        : `http://${address}`;
  }

  private async request(method: string, path: string, body?: unknown, raw?: string): Promise<Reply> {
    let res: Reply;
    try {
      res = await send(
        new URL(`${this.baseUrl}${path}`),
        method,
        body !== undefined ? JSON.stringify(body) : raw,
        body !== undefined ? 'application/json' : undefined,
        this.timeoutMs,
      );
    } catch (err) {
      const cause = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
      throw new ClientError(
        0,
        `cannot reach the weft agent at ${this.baseUrl} (${cause}); is \`weft agent\` running? (set --api or WEFT_API)`,
        {
          cause: err,
        },
      );
    }
    if (!res.ok) {
      const text = res.text;
      let message = text.trim();
      try {
        message = (JSON.parse(text) as ApiErrorBody).error ?? message;
      } catch {
        // Consul-style endpoints answer errors as plain text
      }
      throw new ClientError(res.status, message || `${method} ${path} failed with HTTP ${res.status}`);
    }
    return res;
  }

  private async json<T>(method: string, path: string, body?: unknown): Promise<T> {
    return JSON.parse((await this.request(method, path, body)).text) as T;
  }

  createNetwork(req: NetworkCreateRequest): Promise<NetworkInfo> {
    return this.json('POST', '/v1/weft/networks', req);
  }
  listNetworks(): Promise<NetworkInfo[]> {
    return this.json('GET', '/v1/weft/networks');
  }
  inspectNetwork(name: string): Promise<NetworkInfo> {
    return this.json('GET', `/v1/weft/networks/${encodeURIComponent(name)}`);
  }
  async removeNetwork(name: string): Promise<void> {
    await this.request('DELETE', `/v1/weft/networks/${encodeURIComponent(name)}`);
  }
  runContainer(req: ContainerRunRequest): Promise<ContainerInfo> {
    return this.json('POST', '/v1/weft/containers', req);
  }
  listContainers(all = false): Promise<ContainerInfo[]> {
    return this.json('GET', `/v1/weft/containers${all ? '?all=1' : ''}`);
  }
  inspectContainer(name: string): Promise<ContainerInfo> {
    return this.json('GET', `/v1/weft/containers/${encodeURIComponent(name)}`);
  }
  attachContainer(name: string, req: ContainerAttachRequest): Promise<ContainerInfo> {
    return this.json('POST', `/v1/weft/containers/${encodeURIComponent(name)}/attach`, req);
  }
  detachContainer(name: string, network: string): Promise<ContainerInfo> {
    return this.json('POST', `/v1/weft/containers/${encodeURIComponent(name)}/detach`, { network });
  }
  async removeContainer(name: string): Promise<void> {
    await this.request('DELETE', `/v1/weft/containers/${encodeURIComponent(name)}`);
  }
  members(): Promise<MemberInfo[]> {
    return this.json('GET', '/v1/weft/members');
  }
  status(): Promise<StatusInfo> {
    return this.json('GET', '/v1/weft/status');
  }

  // Consul-compatible KV

  async kvGet(key: string): Promise<ConsulKvEntry | null> {
    try {
      const entries = await this.json<ConsulKvEntry[]>('GET', `/v1/kv/${encodeKey(key)}`);
      return entries[0] ?? null;
    } catch (err) {
      if (err instanceof ClientError && err.status === 404) return null;
      throw err;
    }
  }
  async kvList(prefix: string): Promise<ConsulKvEntry[]> {
    try {
      return await this.json<ConsulKvEntry[]>('GET', `/v1/kv/${encodeKey(prefix)}?recurse=true`);
    } catch (err) {
      if (err instanceof ClientError && err.status === 404) return [];
      throw err;
    }
  }
  async kvPut(key: string, value: string, opts: { cas?: number; flags?: number } = {}): Promise<boolean> {
    const q = new URLSearchParams();
    if (opts.cas !== undefined) q.set('cas', String(opts.cas));
    if (opts.flags !== undefined) q.set('flags', String(opts.flags));
    const qs = q.size > 0 ? `?${q}` : '';
    const res = await this.request('PUT', `/v1/kv/${encodeKey(key)}${qs}`, undefined, value);
    return res.text.trim() === 'true';
  }
  async kvDelete(key: string, opts: { recurse?: boolean } = {}): Promise<boolean> {
    const res = await this.request(
      'DELETE',
      `/v1/kv/${encodeKey(key)}${opts.recurse ? '?recurse=true' : ''}`,
    );
    return res.text.trim() !== 'false';
  }
}

function encodeKey(key: string): string {
  return key.split('/').map(encodeURIComponent).join('/');
}
