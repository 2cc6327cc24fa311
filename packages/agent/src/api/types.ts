// The agent's JSON API, shared by the HTTP server and the CLI's client.
// Paths live under /v1/weft/ beside the Consul-compatible /v1/kv/ API.

export interface NetworkCreateRequest {
  name: string;
  /** Only "overlay" exists; kept so `-d overlay` round-trips like Docker. */
  driver?: string;
  subnet?: string;
  gateway?: string;
  ipRange?: string;
  /** Addresses IPAM must never hand out, by name (Docker's --aux-address). */
  auxAddresses?: Record<string, string>;
  options?: Record<string, string>;
  labels?: Record<string, string>;
  internal?: boolean;
}

export interface EndpointInfo {
  id: string;
  networkId: string;
  network: string;
  container: string;
  host: string;
  ip: string;
  prefixLength: number;
  mac: string;
  aliases: string[];
}

export interface NetworkInfo {
  id: string;
  name: string;
  driver: string;
  vni: number;
  subnet: string;
  gateway: string;
  ipRange?: string;
  auxAddresses: Record<string, string>;
  options: Record<string, string>;
  labels: Record<string, string>;
  internal: boolean;
  created: string;
  /** Present on inspect: every endpoint of the network, on every host. */
  endpoints?: EndpointInfo[];
}

export interface ContainerRunRequest {
  name: string;
  network: string;
  aliases?: string[];
  ip?: string;
  /** With detach: the agent runs it in the background and keeps its output in the data dir. */
  command?: string[];
  detach?: boolean;
}

export interface ContainerAttachRequest {
  network: string;
  aliases?: string[];
  ip?: string;
}

export type ContainerState = 'running' | 'created' | 'exited';

export interface ContainerEndpoint {
  network: string;
  networkId: string;
  endpointId: string;
  ifName: string;
  ip: string;
  prefixLength: number;
  mac: string;
  gateway: string;
  aliases: string[];
}

export interface ContainerInfo {
  name: string;
  /** The container's network namespace (`ip netns` name); run things in it with `ip netns exec`. */
  sandbox: string;
  host: string;
  created: string;
  state: ContainerState;
  command: string[];
  pid?: number;
  exitCode?: number;
  endpoints: ContainerEndpoint[];
}

export type MemberRole = 'voter' | 'learner' | 'client';

export interface MemberInfo {
  name: string;
  advertise: string;
  role: MemberRole | 'unknown';
  alive: boolean;
  leader: boolean;
}

export interface StatusInfo {
  name: string;
  advertise: string;
  role: MemberRole | 'unknown';
  leader: string;
  term: number;
  commitIndex: number;
  appliedIndex: number;
  dataplane: string;
  networks: number;
  containers: number;
  members: number;
}

/** Body of every non-2xx JSON response. */
export interface ApiErrorBody {
  error: string;
}

/** An error the HTTP layer turns into a status code and a one-line message. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'ApiError';
  }
}

export const badRequest = (msg: string) => new ApiError(400, msg);
export const notFound = (msg: string) => new ApiError(404, msg);
export const conflict = (msg: string) => new ApiError(409, msg);
export const unavailable = (msg: string, cause?: unknown) => new ApiError(503, msg, { cause });

/** What the HTTP API asks of the agent; the Agent implements it, tests may fake it. */
export interface AgentBackend {
  createNetwork(req: NetworkCreateRequest): Promise<NetworkInfo>;
  listNetworks(): Promise<NetworkInfo[]>;
  inspectNetwork(nameOrId: string): Promise<NetworkInfo>;
  removeNetwork(nameOrId: string): Promise<void>;
  runContainer(req: ContainerRunRequest): Promise<ContainerInfo>;
  listContainers(opts?: { all?: boolean }): Promise<ContainerInfo[]>;
  inspectContainer(name: string): Promise<ContainerInfo>;
  attachContainer(name: string, req: ContainerAttachRequest): Promise<ContainerInfo>;
  detachContainer(name: string, network: string): Promise<ContainerInfo>;
  removeContainer(name: string): Promise<void>;
  members(): Promise<MemberInfo[]>;
  status(): Promise<StatusInfo>;
}
