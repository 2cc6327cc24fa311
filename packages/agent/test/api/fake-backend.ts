// An in-memory AgentBackend for testing the HTTP API and the CLI on their
// own; the real Agent is tested against the overlay in test/agent/.
import { randomBytes } from 'node:crypto';
import {
  type AgentBackend,
  type ContainerAttachRequest,
  type ContainerInfo,
  type ContainerRunRequest,
  conflict,
  type MemberInfo,
  type NetworkCreateRequest,
  type NetworkInfo,
  notFound,
  type StatusInfo,
} from '../../src/api/types.js';

export class FakeBackend implements AgentBackend {
  readonly networks = new Map<string, NetworkInfo>();
  readonly containers = new Map<string, ContainerInfo>();
  private nextHost = 2;

  async createNetwork(req: NetworkCreateRequest): Promise<NetworkInfo> {
    const existing = [...this.networks.values()].find((n) => n.name === req.name);
    if (existing) throw conflict(`network "${req.name}" already exists (id ${existing.id.slice(0, 12)})`);
    const net: NetworkInfo = {
      id: randomBytes(32).toString('hex'),
      name: req.name,
      driver: req.driver ?? 'overlay',
      vni: 256 + this.networks.size,
      subnet: req.subnet ?? '198.18.0.0/24',
      gateway: req.gateway ?? '198.18.0.1',
      ipRange: req.ipRange,
      auxAddresses: req.auxAddresses ?? {},
      options: req.options ?? {},
      labels: req.labels ?? {},
      internal: req.internal ?? false,
      created: new Date().toISOString(),
    };
    this.networks.set(net.id, net);
    return net;
  }
  async listNetworks(): Promise<NetworkInfo[]> {
    return [...this.networks.values()];
  }
  private find(nameOrId: string): NetworkInfo {
    // Like Docker: a name wins over an ID prefix (a random ID may start with another network's name).
    const all = [...this.networks.values()];
    const n = all.find((x) => x.name === nameOrId) ?? all.find((x) => x.id.startsWith(nameOrId));
    if (!n) throw notFound(`network "${nameOrId}" not found`);
    return n;
  }
  async inspectNetwork(nameOrId: string): Promise<NetworkInfo> {
    const n = this.find(nameOrId);
    return { ...n, endpoints: [] };
  }
  async removeNetwork(nameOrId: string): Promise<void> {
    this.networks.delete(this.find(nameOrId).id);
  }
  async runContainer(req: ContainerRunRequest): Promise<ContainerInfo> {
    if (this.containers.has(req.name)) throw conflict(`container "${req.name}" already exists`);
    const c: ContainerInfo = {
      name: req.name,
      sandbox: `fake-${req.name}`,
      host: 'host1',
      created: new Date().toISOString(),
      state: req.detach ? 'running' : 'created',
      command: req.command ?? [],
      endpoints: [],
    };
    this.containers.set(req.name, c);
    return this.attachContainer(req.name, req);
  }
  async listContainers(): Promise<ContainerInfo[]> {
    return [...this.containers.values()];
  }
  async inspectContainer(name: string): Promise<ContainerInfo> {
    const c = this.containers.get(name);
    if (!c) throw notFound(`container "${name}" not found`);
    return c;
  }
  async attachContainer(name: string, req: ContainerAttachRequest): Promise<ContainerInfo> {
    const c = await this.inspectContainer(name);
    const n = this.find(req.network);
    const ip = req.ip ?? `198.18.0.${this.nextHost++}`;
    c.endpoints.push({
      network: n.name,
      networkId: n.id,
      endpointId: randomBytes(32).toString('hex'),
      ifName: `eth${c.endpoints.length}`,
      ip,
      prefixLength: 24,
      mac: '02:42:c6:12:00:02',
      gateway: n.gateway,
      aliases: req.aliases ?? [],
    });
    return c;
  }
  async detachContainer(name: string, network: string): Promise<ContainerInfo> {
    const c = await this.inspectContainer(name);
    const n = this.find(network);
    const before = c.endpoints.length;
    c.endpoints = c.endpoints.filter((e) => e.networkId !== n.id);
    if (c.endpoints.length === before)
      throw notFound(`container "${name}" is not attached to network "${network}"`);
    return c;
  }
  async removeContainer(name: string): Promise<void> {
    await this.inspectContainer(name);
    this.containers.delete(name);
  }
  async members(): Promise<MemberInfo[]> {
    return [
      { name: 'host1', advertise: '192.0.2.1', role: 'voter', alive: true, leader: true },
      { name: 'host2', advertise: '192.0.2.2', role: 'voter', alive: true, leader: false },
    ];
  }
  async status(): Promise<StatusInfo> {
    return {
      name: 'host1',
      advertise: '192.0.2.1',
      role: 'voter',
      leader: 'host1',
      term: 3,
      commitIndex: 42,
      appliedIndex: 42,
      dataplane: 'kernel',
      networks: this.networks.size,
      containers: this.containers.size,
      members: 2,
    };
  }
}
