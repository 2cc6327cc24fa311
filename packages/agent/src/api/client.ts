// HTTP client for the local agent's API; what the CLI uses.
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

  private async request(method: string, path: string, body?: unknown, raw?: string): Promise<Response> {
    let res: Response;
    try {
      res = await fetch(`${this.baseUrl}${path}`, {
        method,
        headers: body !== undefined ? { 'content-type': 'application/json' } : undefined,
        body: body !== undefined ? JSON.stringify(body) : raw,
        signal: AbortSignal.timeout(this.timeoutMs),
      });
    } catch (err) {
      const inner = (err as { cause?: { code?: string; message?: string } }).cause;
      const cause = inner?.code ?? inner?.message ?? (err as Error).message;
      throw new ClientError(
        0,
        `cannot reach the weft agent at ${this.baseUrl} (${cause}); is \`weft agent\` running? (set --api or WEFT_API)`,
        {
          cause: err,
        },
      );
    }
    if (!res.ok) {
      const text = await res.text();
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
    return (await (await this.request(method, path, body)).json()) as T;
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
    return (await res.text()).trim() === 'true';
  }
  async kvDelete(key: string, opts: { recurse?: boolean } = {}): Promise<boolean> {
    const res = await this.request(
      'DELETE',
      `/v1/kv/${encodeKey(key)}${opts.recurse ? '?recurse=true' : ''}`,
    );
    return (await res.text()).trim() !== 'false';
  }
}

function encodeKey(key: string): string {
  return key.split('/').map(encodeURIComponent).join('/');
}
