// One host's agent: the KV replica, the data plane, the overlay manager, the
// local containers, the embedded DNS server and the HTTP API, started in
// that order and stopped in reverse. It is also the API's backend: network
// calls go to the overlay manager, container calls combine a sandbox
// (ContainerRuntime) with overlay endpoints plumbed by the data plane.
import type {
  Dataplane,
  EndpointInfo as OverlayEndpoint,
  NetworkInfo as OverlayNetwork,
} from '@weft/overlay';
import { isOverlayError, type OverlayManager } from '@weft/overlay';
import { ApiServer, type RequestHandler } from '../api/server.js';
import {
  type AgentBackend,
  ApiError,
  badRequest,
  type ContainerAttachRequest,
  type ContainerEndpoint,
  type ContainerInfo,
  type ContainerRunRequest,
  conflict,
  type EndpointInfo,
  type MemberInfo,
  type NetworkCreateRequest,
  type NetworkInfo,
  notFound,
  type StatusInfo,
} from '../api/types.js';
import type { Logger } from '../log/logger.js';
import type { AgentMetrics } from '../metrics/metrics.js';
import { processStartPath } from '../netlink/ip.js';
import { netlinkPath } from '../netlink/rtnetlink.js';
import type { Attachment, ContainerRecord, ContainerRuntime } from './containers.js';
import type { DnsIdentityBook } from './dns-identity.js';
import type { KvNodeComponent } from './kv-component.js';
import type { SandboxGate } from './sandbox-gate.js';
import { Composition, errorMessage, type Startable } from './startable.js';

export interface AgentParts {
  name: string;
  advertise: string;
  dataplaneKind: string;
  /** host:port of the HTTP API. */
  apiListen: string;
  logger: Logger;
  metrics: AgentMetrics;
  /** The local KV replica; absent when the store is something else (unit tests). */
  kv?: KvNodeComponent;
  dataplane: Dataplane;
  overlay: OverlayManager;
  containers: ContainerRuntime;
  dns?: Startable;
  /** Consul-compatible KV handler mounted under /v1/. */
  kvHandler?: RequestHandler;
  /** Maps DNS askers' gateway addresses to their overlay addresses; refreshed on every attach change. */
  dnsIdentity?: DnsIdentityBook;
  /** How long start waits for the store (a quorum of peers) before giving up. */
  storeWaitMs?: number;
  /** Stopped when the agent stops (e.g. the Consul handler's blocked queries). */
  extra?: Startable[];
  /**
   * Gate on the data plane the overlay drives (see sandbox-gate.ts): when
   * given, `run` commits the endpoint while the namespace is being made.
   */
  sandboxGate?: SandboxGate;
}

/** Maps overlay errors to HTTP statuses (see @weft/overlay errors.ts). */
function toApiError(err: unknown): unknown {
  if (err instanceof ApiError) return err;
  if (isOverlayError(err)) {
    const status = {
      invalid: 400,
      'not-found': 404,
      conflict: 409,
      'in-use': 409,
      exhausted: 409,
      unavailable: 503,
    }[err.code];
    return new ApiError(status, err.message, { cause: err });
  }
  const code = (err as { code?: unknown } | null)?.code;
  if (code === 'unavailable' || code === 'closed' || (err as Error)?.name === 'KvUnavailableError') {
    return new ApiError(
      503,
      `the store is unavailable: ${errorMessage(err)}; retry once a leader is elected`,
      { cause: err },
    );
  }
  return err;
}

async function mapped<T>(run: () => T | Promise<T>): Promise<T> {
  try {
    return await run();
  } catch (err) {
    throw toApiError(err);
  }
}

/**
 * Starts a component whose start needs the store, retrying while the store
 * is unavailable: the first agents of a cluster wait for their peers to come
 * up (a quorum) before they can register, as Consul servers do.
 */
class RetryingStart implements Startable {
  private cancelled = false;

  constructor(
    private readonly name: string,
    private readonly inner: Startable,
    private readonly logger: Logger,
    private readonly maxWaitMs: number,
  ) {}

  async start(): Promise<void> {
    this.cancelled = false;
    const deadline = Date.now() + this.maxWaitMs;
    for (let attempt = 1; ; attempt++) {
      try {
        await this.inner.start();
        return;
      } catch (err) {
        const retryable = (toApiError(err) as { status?: number }).status === 503;
        if (this.cancelled)
          throw new Error(`start cancelled while waiting for the store: ${errorMessage(err)}`);
        if (!retryable || Date.now() > deadline) throw err;
        this.logger.info(
          { component: this.name, attempt, err: errorMessage(err) },
          'waiting for the store (a quorum of peers)',
        );
        await new Promise((r) => setTimeout(r, 1_000));
      }
    }
  }

  /** Gives up waiting: the start in progress fails after its current attempt. */
  cancel(): void {
    this.cancelled = true;
  }

  stop(): Promise<void> {
    return this.inner.stop();
  }
}

export class Agent implements AgentBackend, Startable {
  readonly api: ApiServer;
  private readonly overlayStart: RetryingStart;
  private readonly composition: Composition;
  private readonly logger: Logger;

  constructor(private readonly parts: AgentParts) {
    this.logger = parts.logger;
    this.api = new ApiServer({
      listen: parts.apiListen,
      backend: this,
      kvHandler: parts.kvHandler,
      metrics: parts.metrics,
      logger: parts.logger.child({ component: 'api' }),
    });
    const overlay = parts.overlay;
    this.overlayStart = new RetryingStart('overlay', overlay, parts.logger, parts.storeWaitMs ?? 300_000);
    const components = [
      ...(parts.kv ? [{ name: 'kv', component: parts.kv as Startable }] : []),
      { name: 'dataplane', component: parts.dataplane },
      {
        name: 'overlay',
        component: this.overlayStart,
      },
      { name: 'containers', component: parts.containers },
      { name: 'restore', component: { start: () => this.restoreAttachments(), stop: async () => {} } },
      { name: 'dns-identity', component: { start: () => this.refreshDnsIdentity(), stop: async () => {} } },
      ...(parts.dns ? [{ name: 'dns', component: parts.dns }] : []),
      ...(parts.extra ?? []).map((component, i) => ({ name: `extra${i}`, component })),
      { name: 'api', component: this.api },
    ];
    this.composition = new Composition(components, (event, name) =>
      this.logger.debug({ component: name }, event),
    );
    overlay.on('warning', (err) => this.logger.warn({ err: err.message }, 'overlay'));
    overlay.on('host-down', (h) => this.logger.info({ host: h.name }, 'host down'));
    overlay.on('host-up', (h) => this.logger.info({ host: h.name }, 'host up'));
    overlay.on('session-lost', () => this.logger.warn('this host lost its store session; re-registering'));
    parts.metrics.setSources({
      raft: () => {
        if (!parts.kv?.isOpen) return undefined;
        const s = parts.kv.node.status();
        return {
          term: s.term,
          commitIndex: s.commitIndex,
          appliedIndex: s.appliedIndex,
          isLeader: s.role === 'leader',
        };
      },
      peers: () => overlay.hosts().length,
      endpoints: () => {
        const all = overlay.listEndpoints();
        const local = all.filter((e) => e.host === parts.name).length;
        return { local, remote: all.length - local };
      },
      dataplane: () => parts.dataplane.counters(),
    });
  }

  async start(): Promise<void> {
    await this.composition.start();
    // Which paths the native addon serves: a missing or stale addon (built
    // before a pull that added functions) silently means slower fallbacks.
    const paths = { processStart: processStartPath(), netlink: netlinkPath() };
    this.logger.info({ name: this.parts.name, api: this.api.address, ...paths }, 'agent started');
    const forced = process.env.WEFT_SPAWN === 'child_process' || process.env.WEFT_NETLINK === 'ip';
    if (!forced && (paths.processStart !== 'native' || paths.netlink !== 'native')) {
      this.logger.warn(
        paths,
        'the native addon is missing or older than this code: starting commands and wiring containers take the slower fallbacks; rebuild it with `npm run build`',
      );
    }
  }

  /** A signal during start (still waiting for peers): make start() fail soon, stopping what started. */
  cancelStart(): void {
    this.parts.kv?.cancelStart();
    this.overlayStart.cancel();
  }

  /** Stops without leaving: containers and the host's session survive for a restart to pick up. */
  stop(): Promise<void> {
    return this.composition.stop();
  }

  /**
   * Graceful leave (SIGTERM): removes this host's containers and endpoints,
   * destroys the host's session so every other host drops it at once, leaves
   * the Raft configuration (leadership handed over first, a learner promoted
   * in its place), removes the data plane's devices, then stops. The session
   * goes first: once out of the configuration, this node's writes reach no one.
   */
  async leave(): Promise<void> {
    for (const c of this.parts.containers.list()) {
      await this.removeContainer(c.name).catch((err) =>
        this.logger.warn(
          { container: c.name, err: errorMessage(err) },
          'could not remove container while leaving',
        ),
      );
    }
    await this.parts.overlay
      .stop({ leave: true })
      .catch((err) => this.logger.warn({ err: errorMessage(err) }, 'leave failed'));
    await this.parts.kv?.leave();
    await this.composition.stop();
    this.logger.info('left the cluster');
  }

  // ------------------------------------------------------------ networks

  createNetwork(req: NetworkCreateRequest): Promise<NetworkInfo> {
    return mapped(async () => {
      const mtu = req.options?.mtu ?? req.options?.['com.docker.network.driver.mtu'];
      if (mtu !== undefined && !/^\d+$/.test(mtu))
        throw badRequest(`option mtu=${mtu} is not a number of bytes`);
      const internal = req.internal ?? req.options?.internal === 'true';
      const hasSubnet =
        req.subnet !== undefined ||
        req.gateway !== undefined ||
        req.ipRange !== undefined ||
        req.auxAddresses !== undefined;
      if (!req.subnet && hasSubnet) throw badRequest('--gateway, --ip-range and --aux-address need --subnet');
      const net = await this.parts.overlay.createNetwork({
        name: req.name,
        driver: req.driver,
        subnets: hasSubnet
          ? [
              {
                subnet: req.subnet,
                gateway: req.gateway,
                ipRange: req.ipRange,
                auxAddresses: req.auxAddresses,
              },
            ]
          : [],
        options: { internal, ...(mtu !== undefined ? { mtu: Number(mtu) } : {}) },
        labels: req.labels,
      });
      return networkInfo(net, req.options);
    });
  }

  listNetworks(): Promise<NetworkInfo[]> {
    return mapped(() => this.parts.overlay.listNetworks().map((n) => networkInfo(n)));
  }

  inspectNetwork(nameOrId: string): Promise<NetworkInfo> {
    return mapped(() => {
      const d = this.parts.overlay.inspectNetwork(nameOrId);
      return { ...networkInfo(d), endpoints: d.endpoints.map(endpointInfo) };
    });
  }

  removeNetwork(nameOrId: string): Promise<void> {
    return mapped(() => this.parts.overlay.removeNetwork(nameOrId));
  }

  // ------------------------------------------------------------ containers

  runContainer(req: ContainerRunRequest): Promise<ContainerInfo> {
    return mapped(async () => {
      if (this.parts.containers.get(req.name))
        throw conflict(
          `container "${req.name}" already exists on this host; remove it with weft rm ${req.name}`,
        );
      // Fail on a missing network before making a namespace.
      this.parts.overlay.inspectNetwork(req.network);
      // Where a run's time goes, for convergence work (debug level).
      const phasesMs: Record<string, number> = {};
      const attachDetailMs: Record<string, number> = {};
      let mark = performance.now();
      const phase = (name: string) => {
        const now = performance.now();
        phasesMs[name] = Math.round((now - mark) * 10) / 10;
        mark = now;
      };
      const gate = this.parts.sandboxGate;
      if (!gate) {
        await this.parts.containers.create(req.name, req.command ?? []);
        phase('sandbox');
      }
      try {
        if (gate) {
          // Namespace and endpoint at once: the data plane's attach waits for the namespace
          // only (not the container's files). Loopback comes up with the wiring.
          // Debug phases within attach: the namespace made, the container's files written,
          // the endpoint committed and the data plane told (overlay attach), and the wiring.
          const startMs = performance.now();
          const since = (t: number) => Math.round((t - startMs) * 10) / 10;
          let namespaceMade!: (err?: unknown) => void;
          const namespace = new Promise<void>((resolve, reject) => {
            namespaceMade = (err) => (err === undefined ? resolve() : reject(err));
          });
          const made = this.parts.containers.create(req.name, req.command ?? [], {
            loopbackUp: false,
            onNamespace: () => {
              attachDetailMs.namespaceMadeAt = since(performance.now());
              namespaceMade();
            },
          });
          // A create that fails before (or without) the namespace releases the attach with its cause.
          made.then(() => namespaceMade(), namespaceMade);
          const sandbox = this.parts.containers.sandboxName(req.name);
          gate.hold(sandbox, namespace);
          const [m, a] = await Promise.allSettled([
            made.then((r) => {
              attachDetailMs.sandboxMadeAt = since(performance.now());
              return r;
            }),
            this.attachEndpoint({ name: req.name, sandbox }, req, { record: false }).then((r) => {
              attachDetailMs.endpointAttachedAt = since(performance.now());
              return r;
            }),
          ]);
          const wired = gate.takeWiringTimes(sandbox);
          if (wired) {
            attachDetailMs.wiringStartAt = since(wired.startMs);
            attachDetailMs.wiringMs = Math.round((wired.endMs - wired.startMs) * 10) / 10;
          }
          if (m.status === 'rejected') {
            // Nothing of ours exists (the failed attach rolled its endpoint back); keep a leftover from an earlier container.
            if (a.status === 'fulfilled')
              await this.parts.overlay.detach(a.value.networkId, a.value.id).catch(() => {});
            throw m.reason;
          }
          if (a.status === 'rejected') throw a.reason;
          await this.recordAttachments(m.value);
        } else await this.attachEndpoint(this.mustGetContainer(req.name), req);
        phase('attach');
        await this.refreshDnsIdentity();
        phase('dnsIdentity');
        if (req.detach) await this.parts.containers.startCommand(req.name);
        phase('start');
      } catch (err) {
        await this.removeContainer(req.name).catch(() => {});
        throw err;
      }
      const info = await this.containerInfo(this.mustGetContainer(req.name));
      phase('info');
      this.logger.debug({ container: req.name, phasesMs, attachDetailMs }, 'container run');
      return info;
    });
  }

  listContainers(opts: { all?: boolean } = {}): Promise<ContainerInfo[]> {
    return mapped(async () => {
      const all = await Promise.all(this.parts.containers.list().map((r) => this.containerInfo(r)));
      return opts.all ? all : all.filter((c) => c.state !== 'exited');
    });
  }

  inspectContainer(name: string): Promise<ContainerInfo> {
    return mapped(() => this.containerInfo(this.mustGetContainer(name)));
  }

  attachContainer(name: string, req: ContainerAttachRequest): Promise<ContainerInfo> {
    return mapped(async () => {
      const record = this.mustGetContainer(name);
      await this.attachEndpoint(record, req);
      await this.refreshDnsIdentity();
      return this.containerInfo(record);
    });
  }

  detachContainer(name: string, network: string): Promise<ContainerInfo> {
    return mapped(async () => {
      const record = this.mustGetContainer(name);
      const net = this.parts.overlay.inspectNetwork(network);
      const ep = this.endpointsOf(record).find((e) => e.networkId === net.id);
      if (!ep) throw notFound(`container "${name}" is not attached to network "${network}"`);
      await this.parts.overlay.detach(net.id, ep.id);
      await this.recordAttachments(record);
      await this.refreshDnsIdentity();
      return this.containerInfo(record);
    });
  }

  removeContainer(name: string): Promise<void> {
    return mapped(async () => {
      const record = this.mustGetContainer(name);
      for (const ep of this.endpointsOf(record)) await this.parts.overlay.detach(ep.networkId, ep.id);
      await this.parts.containers.remove(name);
      await this.refreshDnsIdentity();
    });
  }

  // ------------------------------------------------------------ cluster

  members(): Promise<MemberInfo[]> {
    return mapped(async () => {
      const hosts = this.parts.overlay.hosts();
      const kvMembers = (await this.parts.kv?.raftMembers()) ?? [];
      const byAddress = new Map(kvMembers.map((m) => [m.address.replace(/:\d+$/, ''), m]));
      const out: MemberInfo[] = hosts.map((h) => {
        const m = byAddress.get(h.advertise);
        byAddress.delete(h.advertise);
        return {
          name: h.name,
          advertise: h.advertise,
          // Not a Raft member: a client. Unless this agent cannot see the configuration (a client without it).
          role: m ? m.role : kvMembers.length > 0 || h.name === this.parts.name ? 'client' : 'unknown',
          alive: true,
          leader: m?.leader ?? false,
        };
      });
      // Raft members with no live host record: their agent is down.
      for (const [address, m] of byAddress) {
        out.push({
          name: m.name || address,
          advertise: address,
          role: m.role,
          alive: false,
          leader: m.leader,
        });
      }
      return out.sort((a, b) => a.name.localeCompare(b.name));
    });
  }

  status(): Promise<StatusInfo> {
    return mapped(async () => {
      const kv = this.parts.kv?.isOpen ? this.parts.kv.node.status() : undefined;
      // A client has no Raft state of its own: the leader is the one the servers name.
      const clientLeader = kv
        ? undefined
        : (await this.parts.kv?.raftMembers().catch(() => undefined))?.find((m) => m.leader);
      const role = !kv
        ? 'client'
        : kv.voters.includes(kv.raftId)
          ? 'voter'
          : kv.learners.includes(kv.raftId)
            ? 'learner'
            : 'unknown';
      // Raft ids are raft addresses; show the leader by its host name when its host is registered.
      const leaderAddress = (kv?.leader ?? clientLeader?.address ?? '').replace(/:\d+$/, '');
      const leaderHost = this.parts.overlay.hosts().find((h) => h.advertise === leaderAddress);
      return {
        name: this.parts.name,
        advertise: this.parts.advertise,
        role,
        leader: leaderHost?.name ?? kv?.leader ?? clientLeader?.name ?? '',
        term: kv?.term ?? 0,
        commitIndex: kv?.commitIndex ?? 0,
        appliedIndex: kv?.appliedIndex ?? 0,
        dataplane: this.parts.dataplaneKind,
        networks: this.parts.overlay.listNetworks().length,
        containers: this.parts.containers.list().length,
        members: this.parts.overlay.hosts().length,
      };
    });
  }

  // ------------------------------------------------------------ internals

  private async refreshDnsIdentity(): Promise<void> {
    await this.parts.dnsIdentity
      ?.refresh()
      .catch((err) =>
        this.logger.warn({ err: errorMessage(err) }, 'could not read gateway addresses for DNS'),
      );
  }

  private mustGetContainer(name: string): ContainerRecord {
    const r = this.parts.containers.get(name);
    if (!r) throw notFound(`container "${name}" not found on host ${this.parts.name}`);
    return r;
  }

  private endpointsOf(record: Pick<ContainerRecord, 'name'>): OverlayEndpoint[] {
    return this.parts.overlay
      .listEndpoints()
      .filter((e) => e.host === this.parts.name && e.container === record.name)
      .sort((a, b) => (a.ifName ?? '').localeCompare(b.ifName ?? '', undefined, { numeric: true }));
  }

  private async attachEndpoint(
    record: Pick<ContainerRecord, 'name' | 'sandbox'>,
    req: ContainerAttachRequest,
    opts: { record: boolean } = { record: true },
  ): Promise<OverlayEndpoint> {
    const existing = this.endpointsOf(record);
    const net = this.parts.overlay.inspectNetwork(req.network);
    if (existing.some((e) => e.networkId === net.id))
      throw conflict(`container "${record.name}" is already attached to network "${net.name}"`);
    const used = new Set(existing.map((e) => e.ifName));
    let n = 0;
    while (used.has(`eth${n}`)) n++;
    const ep = await this.parts.overlay.attach({
      network: net.id,
      name: record.name,
      aliases: req.aliases,
      ip: req.ip,
      container: record.name,
      sandbox: record.sandbox,
      ifName: `eth${n}`,
    });
    if (opts.record) await this.recordAttachments(this.mustGetContainer(record.name));
    return ep;
  }

  /** Persists which networks the container is on, from the overlay's view. */
  private async recordAttachments(record: ContainerRecord): Promise<void> {
    const attachments: Attachment[] = this.endpointsOf(record).map((e) => ({
      networkId: e.networkId,
      ifName: e.ifName ?? 'eth0',
      aliases: e.aliases,
      ip: e.ip,
    }));
    await this.parts.containers.setAttachments(record.name, attachments);
  }

  /**
   * After a restart: attaches each container again to every network it was
   * on whose endpoint is gone (the other hosts reclaimed it while this agent
   * was down), with the same interface name and, if still free, address.
   */
  private async restoreAttachments(): Promise<void> {
    for (const record of this.parts.containers.list()) {
      const present = new Set(this.endpointsOf(record).map((e) => e.networkId));
      for (const a of record.attachments ?? []) {
        if (present.has(a.networkId)) continue;
        const base = {
          network: a.networkId,
          name: record.name,
          aliases: a.aliases,
          container: record.name,
          sandbox: record.sandbox,
          ifName: a.ifName,
        };
        try {
          await this.parts.overlay.attach({ ...base, ip: a.ip }).catch((err) => {
            if (isOverlayError(err, 'conflict')) return this.parts.overlay.attach(base); // address taken meanwhile
            throw err;
          });
          this.logger.info(
            { container: record.name, network: a.networkId },
            'container re-attached after restart',
          );
        } catch (err) {
          this.logger.warn(
            { container: record.name, network: a.networkId, err: errorMessage(err) },
            'could not re-attach container',
          );
        }
      }
      if (record.attachments) await this.recordAttachments(record);
    }
  }

  private async containerInfo(record: ContainerRecord): Promise<ContainerInfo> {
    const { state, exitCode } = await this.parts.containers.state(record);
    const endpoints: ContainerEndpoint[] = this.endpointsOf(record).map((e) => ({
      network: e.networkName,
      networkId: e.networkId,
      endpointId: e.id,
      ifName: e.ifName ?? '',
      ip: e.ip,
      prefixLength: e.prefixLength,
      mac: e.mac,
      gateway: e.gateway,
      aliases: e.aliases,
    }));
    return {
      name: record.name,
      sandbox: record.sandbox,
      host: this.parts.name,
      created: record.created,
      state,
      command: record.command,
      ...(record.pid !== undefined ? { pid: record.pid } : {}),
      ...(exitCode !== undefined ? { exitCode } : {}),
      endpoints,
    };
  }
}

function networkInfo(n: OverlayNetwork, extraOptions: Record<string, string> = {}): NetworkInfo {
  const first = n.ipam.config[0];
  const options: Record<string, string> = { ...extraOptions };
  if (n.options.mtu !== undefined) options.mtu = String(n.options.mtu);
  return {
    id: n.id,
    name: n.name,
    driver: n.driver,
    vni: n.vni,
    subnet: first?.subnet ?? '',
    gateway: first?.gateway ?? '',
    ...(first?.ipRange ? { ipRange: first.ipRange } : {}),
    auxAddresses: first?.auxAddresses ?? {},
    options,
    labels: n.labels,
    internal: n.options.internal,
    created: n.created,
  };
}

function endpointInfo(e: OverlayEndpoint): EndpointInfo {
  return {
    id: e.id,
    networkId: e.networkId,
    network: e.networkName,
    container: e.container ?? e.name,
    host: e.host,
    ip: e.ip,
    prefixLength: e.prefixLength,
    mac: e.mac,
    aliases: e.aliases,
  };
}
