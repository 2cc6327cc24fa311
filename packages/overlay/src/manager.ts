// The overlay control plane of one host: networks, IPAM, endpoints, the host
// registry with liveness, the peer table, and the name table DNS serves from.
//
// State lives only in the KvStore. Writes are transactions guarded by
// create-only keys and index checks, so any number of hosts may race.
// Reads come from a local view rebuilt from one watch (blocking query) on the
// whole prefix; the data plane is driven from that view.
import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { type Clock, systemClock, type TimerHandle } from './clock.js';
import type { Dataplane, LocalEndpoint, NetworkSpec, RemotePeer } from './dataplane.js';
import { DataplaneSync, type DesiredDataplane, type SyncResult } from './dataplane-sync.js';
import { DnsTable } from './dns-table.js';
import { invalid, isOverlayError, OverlayError } from './errors.js';
import {
  type AddressPool,
  defaultAddressPools,
  type IpamSubnetRequest,
  NetworkAddressSpace,
  planSubnets,
  validatePools,
} from './ipam.js';
import { formatIp, macForIp, parseIp } from './ipv4.js';
import type { KvStore, TxnOp, WatchEvent } from './kvstore.js';
import {
  decodeJson,
  decodeText,
  defaultKeyPrefix,
  type EndpointRecord,
  encodeJson,
  encodeText,
  type HostRecord,
  hostnamePattern,
  Keys,
  type NetworkOptions,
  type NetworkRecord,
  namePattern,
} from './records.js';
import { ClusterView, resolveEndpoint, resolveNetwork, type Stored } from './view.js';

export interface OverlayManagerOptions {
  store: KvStore;
  /** Omit to run the control plane only (no devices programmed). */
  dataplane?: Dataplane;
  /** Unique in the cluster; a second host with a taken name is refused. */
  hostname: string;
  /** Address other agents reach this host's agent on. */
  advertise: string;
  /** Underlay address for VXLAN; defaults to `advertise`. */
  vtep?: string;
  /** The agent's libp2p peer ID: a restarted agent with the same peer ID takes its hostname back. */
  peerId: string;
  /** Host liveness: the host is declared dead this long after its last renewal. Default 10 s. */
  sessionTtlMs?: number;
  /** Bound on every write (including retries); past it the write fails with code 'unavailable'. Default 5 s. */
  writeTimeoutMs?: number;
  /** Pools that networks created without a subnet are carved from. Default Docker's overlay pool 10.0.0.0/8 (/24s). */
  defaultAddressPools?: AddressPool[];
  /** VNIs handed to networks, lowest free first. Default 4096 … 16777215. */
  vniRange?: { first: number; last: number };
  /** Key prefix; default `weft/v1/`. */
  keyPrefix?: string;
  clock?: Clock;
}

export interface NetworkCreateRequest {
  name: string;
  /** Only `overlay`. */
  driver?: string;
  /** Zero or more subnets; none = one chosen from the default pools. */
  subnets?: IpamSubnetRequest[];
  options?: Partial<NetworkOptions>;
  labels?: Record<string, string>;
}

export interface AttachRequest {
  /** Network ID, name or ID prefix. */
  network: string;
  /** Endpoint (container) name, unique in the network; resolvable by DNS. */
  name: string;
  aliases?: string[];
  /** Fixed address; refused if taken or outside the network. */
  ip?: string;
  /** Container ID: endpoints of one container share DNS visibility across its networks. */
  container?: string;
  /** Network namespace and interface name: when given, the data plane plumbs the endpoint. */
  sandbox?: string;
  ifName?: string;
}

export interface EndpointInfo extends EndpointRecord {
  networkName: string;
  prefixLength: number;
  gateway: string;
}

export type NetworkInfo = Omit<NetworkRecord, 'removing'>;

export interface NetworkDetails extends NetworkInfo {
  endpoints: EndpointInfo[];
}

export interface HostInfo extends HostRecord {}

export interface OverlayEvents {
  'network-created': [NetworkInfo];
  'network-removed': [NetworkInfo];
  'endpoint-added': [EndpointInfo];
  'endpoint-removed': [EndpointInfo];
  'host-up': [HostInfo];
  'host-down': [HostInfo];
  'peer-added': [RemotePeer];
  'peer-removed': [RemotePeer];
  /** This host's session expired (store unreachable for a TTL); its endpoints are reclaimed, it re-registers. */
  'session-lost': [{ session: string }];
  /** Endpoints of dead hosts this host removed from the store. */
  reclaimed: [EndpointRecord[]];
  /** Something went wrong in the background (watch, renewal, data plane); the manager retries. */
  warning: [Error];
}

const maxWriteAttempts = 64;

/** What an attach decides from: the network as stored, who holds the name, which addresses are taken. */
interface AttachState {
  net: Stored<NetworkRecord>;
  /** Endpoint ID holding the requested name in the network, if any. */
  nameHolder: string | undefined;
  taken: Set<number>;
}

/** Endpoints per reclaim transaction: 6 ops each plus host checks, under Consul's 64. */
const reclaimBatch = 8;

/**
 * Delete `key` only if it still has ModifyIndex `index`, and fail the
 * transaction if it is gone. Consul's delete-cas alone succeeds on a missing
 * key, so two hosts racing to reclaim or remove the same thing would both
 * "win"; the check-index makes exactly one of them succeed.
 */
function deleteIfUnchanged(key: string, index: number): TxnOp[] {
  return [
    { verb: 'check-index', key, index },
    { verb: 'delete-cas', key, index },
  ];
}
const maxBackoffMs = 5_000;

export class OverlayManager extends EventEmitter<OverlayEvents> {
  readonly hostname: string;
  readonly advertise: string;
  readonly vtep: string;
  readonly peerId: string;
  private readonly store: KvStore;
  private readonly keys: Keys;
  private readonly clock: Clock;
  private readonly sessionTtlMs: number;
  private readonly writeTimeoutMs: number;
  private readonly pools: AddressPool[];
  private readonly vniRange: { first: number; last: number };
  private readonly dpSync?: DataplaneSync;

  private sessionId?: string;
  private view = ClusterView.empty();
  private dnsTableCache?: { index: number; table: DnsTable };
  private running = false;
  private watchAbort?: AbortController;
  private watchDone?: Promise<void>;
  private renewTimer?: TimerHandle;
  private retryTimer?: ReturnType<typeof setTimeout>;
  private syncedIndex = 0;
  private indexWaiters: { index: number; resolve: (r: SyncResult | undefined) => void }[] = [];
  private lastSync?: SyncResult;
  private reclaimRunning = false;
  private reclaimAgain = false;
  /** Addresses local attaches are trying right now, so concurrent local attaches don't collide. */
  private readonly inFlightIps = new Set<string>();

  constructor(opts: OverlayManagerOptions) {
    super();
    if (!hostnamePattern.test(opts.hostname)) {
      throw invalid(
        `hostname "${opts.hostname}" is not valid (letters, digits, '.', '-'; at most 253 characters)`,
      );
    }
    if (parseIp(opts.advertise) === undefined)
      throw invalid(`advertise address "${opts.advertise}" is not an IPv4 address`);
    if (opts.vtep !== undefined && parseIp(opts.vtep) === undefined)
      throw invalid(`VTEP address "${opts.vtep}" is not an IPv4 address`);
    if (!opts.peerId) throw invalid('peerId is required');
    this.hostname = opts.hostname;
    this.advertise = opts.advertise;
    this.vtep = opts.vtep ?? opts.advertise;
    this.peerId = opts.peerId;
    this.store = opts.store;
    this.keys = new Keys(opts.keyPrefix ?? defaultKeyPrefix);
    this.clock = opts.clock ?? systemClock;
    this.sessionTtlMs = opts.sessionTtlMs ?? 10_000;
    this.writeTimeoutMs = opts.writeTimeoutMs ?? 5_000;
    this.pools = opts.defaultAddressPools ?? [...defaultAddressPools];
    validatePools(this.pools);
    this.vniRange = opts.vniRange ?? { first: 4096, last: 16_777_215 };
    if (
      !(
        this.vniRange.first >= 1 &&
        this.vniRange.last <= 16_777_215 &&
        this.vniRange.first <= this.vniRange.last
      )
    ) {
      throw invalid(`VNI range ${this.vniRange.first}-${this.vniRange.last} must lie within 1-16777215`);
    }
    if (!(this.sessionTtlMs > 0 && this.writeTimeoutMs > 0))
      throw invalid('sessionTtlMs and writeTimeoutMs must be positive');
    if (opts.dataplane) this.dpSync = new DataplaneSync(opts.dataplane);
  }

  /** The store session holding this host's record (undefined before start). */
  get session(): string | undefined {
    return this.sessionId;
  }

  // ---------------------------------------------------------------- lifecycle

  /**
   * Registers the host, starts renewing its session, starts watching the
   * store, and waits for the first listing (which is handed to the data
   * plane as a full reconcile).
   */
  async start(): Promise<void> {
    if (this.running) return;
    await this.registerHost();
    this.running = true;
    this.scheduleRenewal();
    this.watchAbort = new AbortController();
    const firstListing = this.waitForSync(1, this.writeTimeoutMs);
    this.watchDone = this.watchLoop(this.watchAbort.signal);
    await firstListing;
  }

  /**
   * Stops watching and renewing. The session is left to expire (a restart
   * within the TTL adopts it and keeps the endpoints) unless `leave` is set,
   * in which case it is destroyed and other hosts reclaim this host's
   * endpoints at once. Devices are left to the data plane's own stop().
   */
  async stop(opts: { leave?: boolean } = {}): Promise<void> {
    if (!this.running) return;
    this.running = false;
    if (this.renewTimer) this.clock.clearTimeout(this.renewTimer);
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.watchAbort?.abort();
    await this.watchDone;
    await this.dpSync?.drain();
    for (const w of this.indexWaiters) w.resolve(undefined);
    this.indexWaiters = [];
    if (opts.leave && this.sessionId) {
      const session = this.sessionId;
      await this.write(`leave the cluster as host "${this.hostname}"`, () =>
        this.store.destroySession(session),
      );
      this.sessionId = undefined;
    }
  }

  // ---------------------------------------------------------------- hosts

  /**
   * Claims `hosts/<hostname>` under a TTL session. Refused (conflict) when a
   * live host with another peer ID holds the name. A restart of the same
   * peer adopts its still-live session, so its endpoints survive.
   */
  async registerHost(): Promise<HostInfo> {
    return this.write(`register host "${this.hostname}"`, async () => {
      const key = this.keys.host(this.hostname);
      for (let attempt = 0; attempt < maxWriteAttempts; attempt++) {
        const existing = await this.store.get(key);
        const held = existing ? decodeJson<HostRecord>(existing) : undefined;
        if (existing?.session && held && held.peerId !== this.peerId) {
          throw new OverlayError(
            'conflict',
            `hostname "${this.hostname}" is already registered by another host (peer ${held.peerId}, advertise ${held.advertise}); start this agent with a different hostname`,
          );
        }
        let session: string;
        if (
          existing?.session &&
          (existing.session === this.sessionId || (await this.store.renewSession(existing.session)))
        ) {
          session = existing.session; // same peer restarted within the TTL: keep its session and endpoints
        } else {
          session = await this.store.createSession({
            name: `weft host ${this.hostname}`,
            ttlMs: this.sessionTtlMs,
            behavior: 'delete',
            lockDelayMs: 0,
          });
        }
        const record: HostRecord = {
          name: this.hostname,
          advertise: this.advertise,
          vtep: this.vtep,
          peerId: this.peerId,
          session,
        };
        if (await this.store.put(key, encodeJson(record), { acquire: session })) {
          this.sessionId = session;
          return { ...record };
        }
        if (session !== existing?.session) await this.store.destroySession(session);
      }
      throw new OverlayError(
        'unavailable',
        `could not register host "${this.hostname}": its key kept changing; retry`,
      );
    });
  }

  /** Live hosts, from the local view. */
  hosts(): HostInfo[] {
    return [...this.view.hosts.values()].map((h) => ({ ...h.record })).sort((a, b) => cmp(a.name, b.name));
  }

  // ---------------------------------------------------------------- networks

  async createNetwork(req: NetworkCreateRequest): Promise<NetworkInfo> {
    const { name } = req;
    if (typeof name !== 'string' || !namePattern.test(name)) {
      throw invalid(
        `network name "${name}" is not valid: use letters, digits, '_', '.', '-' (start with a letter or digit, at most 63 characters)`,
      );
    }
    const driver = req.driver ?? 'overlay';
    if (driver !== 'overlay')
      throw invalid(`network driver "${driver}" is not supported; Weft provides "overlay"`);
    const options = validateOptions(req.options ?? {});
    const labels = validateLabels(req.labels ?? {});
    const subnetRequests = req.subnets ?? [];
    if (!Array.isArray(subnetRequests)) throw invalid('subnets must be a list');

    return this.write(`create network "${name}"`, async (deadline) => {
      for (let attempt = 0; attempt < maxWriteAttempts; attempt++) {
        deadline.throwIfAborted();
        const [epoch, nameEntry, networkEntries, vniEntries] = await Promise.all([
          this.store.get(this.keys.networkEpoch()),
          this.store.get(this.keys.networkName(name)),
          this.store.list(this.keys.networksPrefix()),
          this.store.list(`${this.keys.prefix}vni/`),
        ]);
        if (nameEntry) {
          throw new OverlayError(
            'conflict',
            `network "${name}" already exists (id ${decodeText(nameEntry)}); pick another name`,
          );
        }
        const networks = networkEntries
          .map((e) => decodeJson<NetworkRecord>(e))
          .filter((n): n is NetworkRecord => !!n);
        const existing = networks.flatMap((n) =>
          n.ipam.config.map((c) => ({ networkName: n.name, subnet: c.subnet })),
        );
        const config = planSubnets(subnetRequests, existing, this.pools);
        const usedVnis = new Set([
          ...networks.map((n) => n.vni),
          ...vniEntries.map((e) => Number(e.key.slice(e.key.lastIndexOf('/') + 1))),
        ]);
        const vni = this.freeVni(usedVnis);
        const record: NetworkRecord = {
          id: randomId(),
          name,
          driver: 'overlay',
          vni,
          ipam: { driver: 'default', config },
          options,
          labels,
          created: new Date(this.clock.now()).toISOString(),
        };
        const epochValue = epoch ? Number(decodeText(epoch)) + 1 : 1;
        deadline.throwIfAborted();
        const r = await this.store.txn([
          {
            verb: 'cas',
            key: this.keys.networkEpoch(),
            value: encodeText(String(epochValue)),
            index: epoch?.modifyIndex ?? 0,
          },
          { verb: 'cas', key: this.keys.networkName(name), value: encodeText(record.id), index: 0 },
          { verb: 'cas', key: this.keys.vni(vni), value: encodeText(record.id), index: 0 },
          { verb: 'cas', key: this.keys.network(record.id), value: encodeJson(record), index: 0 },
        ]);
        if (r.ok) {
          await this.waitForSync(r.index, this.writeTimeoutMs);
          return networkInfo(record);
        }
        // Another network was created or removed meanwhile: re-read, re-check, re-plan.
      }
      throw new OverlayError(
        'unavailable',
        `could not create network "${name}": networks kept changing for ${maxWriteAttempts} attempts; retry`,
      );
    });
  }

  /** From the local view. */
  listNetworks(): NetworkInfo[] {
    return [...this.view.networks.values()]
      .map((n) => networkInfo(n.record))
      .sort((a, b) => cmp(a.name, b.name));
  }

  /** By ID, name or unique ID prefix, from the local view. */
  inspectNetwork(ref: string): NetworkDetails {
    const n = this.view.findNetwork(ref);
    return { ...networkInfo(n), endpoints: this.view.endpointsOf(n.id).map((e) => this.endpointInfo(e, n)) };
  }

  /** Refused (in-use) while endpoints are attached, naming them. */
  async removeNetwork(ref: string): Promise<void> {
    await this.write(`remove network "${ref}"`, async (deadline) => {
      for (let attempt = 0; attempt < maxWriteAttempts; attempt++) {
        deadline.throwIfAborted();
        const net = await this.freshNetwork(ref);
        const key = this.keys.network(net.record.id);
        await this.refuseIfInUse(net.record);
        let marked = net;
        if (!net.record.removing) {
          // Mark first: attaches check the network's index, so none can slip in after the endpoint check below.
          const rec: NetworkRecord = { ...net.record, removing: true };
          if (!(await this.store.put(key, encodeJson(rec), { cas: net.modifyIndex }))) continue;
          const e = await this.store.get(key);
          if (!e) continue;
          marked = { record: rec, key, modifyIndex: e.modifyIndex };
          try {
            await this.refuseIfInUse(rec);
          } catch (err) {
            await this.store.put(key, encodeJson(net.record), { cas: marked.modifyIndex });
            throw err;
          }
        }
        const [nameEntry, vniEntry] = await Promise.all([
          this.store.get(this.keys.networkName(net.record.name)),
          this.store.get(this.keys.vni(net.record.vni)),
        ]);
        const ops: TxnOp[] = [...deleteIfUnchanged(key, marked.modifyIndex)];
        if (nameEntry && decodeText(nameEntry) === net.record.id)
          ops.push(...deleteIfUnchanged(nameEntry.key, nameEntry.modifyIndex));
        if (vniEntry && decodeText(vniEntry) === net.record.id)
          ops.push(...deleteIfUnchanged(vniEntry.key, vniEntry.modifyIndex));
        ops.push({ verb: 'delete-tree', key: this.keys.ipamPrefix(net.record.id) });
        ops.push({ verb: 'delete-tree', key: this.keys.endpointNamesPrefix(net.record.id) });
        const r = await this.store.txn(ops);
        if (r.ok) {
          await this.waitForSync(r.index, this.writeTimeoutMs);
          return;
        }
      }
      throw new OverlayError('unavailable', `could not remove network "${ref}": it kept changing; retry`);
    });
  }

  // ---------------------------------------------------------------- endpoints

  /**
   * Allocates an address and writes endpoint, address and name keys in one
   * transaction; then, when `sandbox`/`ifName` are given, waits for the data
   * plane to plumb it (rolled back if that fails).
   */
  async attach(req: AttachRequest): Promise<EndpointInfo> {
    const aliases = req.aliases ?? [];
    if (typeof req.name !== 'string' || !namePattern.test(req.name)) {
      throw invalid(
        `endpoint name "${req.name}" is not valid: use letters, digits, '_', '.', '-' (at most 63 characters)`,
      );
    }
    for (const a of aliases)
      if (typeof a !== 'string' || !namePattern.test(a)) throw invalid(`alias "${a}" is not a valid name`);
    if ((req.sandbox === undefined) !== (req.ifName === undefined))
      throw invalid('sandbox and ifName must be given together');
    if (req.ip !== undefined && parseIp(req.ip) === undefined)
      throw invalid(`requested IP "${req.ip}" is not a valid IPv4 address`);

    const { record, index, network } = await this.write(
      `attach "${req.name}" to network "${req.network}"`,
      async (deadline) => {
        const skip = new Set<string>();
        /** Set once another host took the address a fresh read offered: pick at random from then on. */
        let contended = false;
        for (let attempt = 0; attempt < maxWriteAttempts; attempt++) {
          deadline.throwIfAborted();
          const session = this.sessionId;
          if (!session)
            throw new OverlayError(
              'unavailable',
              `host "${this.hostname}" is not registered in the store; start the overlay manager first`,
            );
          // First try from the local view alone: no read round trip. The
          // transaction's conditions (network unchanged, name and address
          // unused) catch a stale view; then every later try reads afresh.
          const local = attempt === 0 ? this.attachStateInView(req) : undefined;
          const { net, nameHolder, taken } = local ?? (await this.freshAttachState(req));
          const n = net.record;
          if (n.removing)
            throw new OverlayError(
              'conflict',
              `network "${n.name}" is being removed; attach to another network`,
            );
          const space = new NetworkAddressSpace(n.name, n.ipam.config);
          if (nameHolder !== undefined) {
            throw new OverlayError(
              'conflict',
              `endpoint name "${req.name}" is already in use in network "${n.name}" (endpoint ${nameHolder})`,
            );
          }
          let ip: number;
          if (req.ip !== undefined) {
            ip = space.checkRequested(req.ip);
            if (taken.has(ip))
              throw new OverlayError('conflict', `IP ${req.ip} is already in use in network "${n.name}"`);
          } else {
            for (const s of [...skip, ...this.inFlightIps]) {
              const [netId, text] = splitOnce(s);
              if (netId === n.id) taken.add(parseIp(text) as number);
            }
            const free = space.freeAddresses(taken, 32);
            if (free.length === 0) {
              if (local !== undefined) continue; // the view may be behind: read before calling it full
              if (this.inFlightIps.size > 0 && attempt < maxWriteAttempts - 1) {
                await sleep(5); // other local attaches may fail and give theirs back
                continue;
              }
              throw space.exhaustedError();
            }
            // Lowest free first (Docker-like); after a collision with another host, spread out.
            ip = contended ? free[Math.floor(Math.random() * free.length)] : free[0];
          }
          const ipText = formatIp(ip);
          const inFlight = `${n.id}/${ipText}`;
          this.inFlightIps.add(inFlight);
          try {
            const rec: EndpointRecord = {
              id: randomId(),
              networkId: n.id,
              name: req.name,
              aliases: [...aliases],
              ip: ipText,
              mac: macForIp(ip),
              host: this.hostname,
              hostSession: session,
              ...(req.container !== undefined ? { container: req.container } : {}),
              ...(req.sandbox !== undefined ? { sandbox: req.sandbox, ifName: req.ifName } : {}),
              created: new Date(this.clock.now()).toISOString(),
            };
            deadline.throwIfAborted();
            // Wire the container while the transaction commits (undone below if it does not).
            const ahead =
              rec.sandbox !== undefined && rec.ifName !== undefined && this.dpSync
                ? this.localEndpoint({ ...rec, sandbox: rec.sandbox, ifName: rec.ifName }, n)
                : undefined;
            if (ahead) void this.dpSync?.attachAhead(ahead).catch(() => undefined);
            let committed = false;
            try {
              const r = await this.store.txn([
                { verb: 'check-index', key: net.key, index: net.modifyIndex },
                { verb: 'check-session', key: this.keys.host(this.hostname), session },
                {
                  verb: 'cas',
                  key: this.keys.endpointName(n.id, req.name),
                  value: encodeText(rec.id),
                  index: 0,
                },
                { verb: 'cas', key: this.keys.ipam(n.id, ipText), value: encodeText(rec.id), index: 0 },
                { verb: 'cas', key: this.keys.endpoint(n.id, rec.id), value: encodeJson(rec), index: 0 },
              ]);
              if (r.ok && deadline.aborted) {
                // Committed after the caller was told it failed: undo, or the address would leak.
                await this.deleteEndpoint(rec);
                deadline.throwIfAborted();
              }
              if (r.ok) {
                committed = true;
                return { record: rec, index: r.index, network: n };
              }
              const failed = new Set(r.errors.map((e) => e.opIndex));
              if (failed.has(1)) {
                throw new OverlayError(
                  'unavailable',
                  `host "${this.hostname}" lost its store session (it was unreachable for longer than ${this.sessionTtlMs} ms); it re-registers, retry the attach`,
                );
              }
              if (failed.has(3)) {
                if (req.ip !== undefined)
                  throw new OverlayError('conflict', `IP ${req.ip} is already in use in network "${n.name}"`);
                skip.add(inFlight);
                if (local === undefined) contended = true; // a stale view's collision is not contention
              }
            } finally {
              // Before a retry wires the same interface name with another address.
              if (ahead && !committed) await this.dpSync?.detachAhead(ahead).catch(() => undefined);
            }
          } finally {
            this.inFlightIps.delete(inFlight);
          }
        }
        throw new OverlayError(
          'unavailable',
          `could not attach "${req.name}" to network "${req.network}": too much contention (${maxWriteAttempts} attempts); retry`,
        );
      },
    );

    const sync = await this.waitForSync(index, this.writeTimeoutMs);
    if (record.sandbox !== undefined && this.dpSync) {
      const failure =
        sync?.failures.get(`endpoint:${record.id}`) ?? sync?.failures.get(`network:${record.networkId}`);
      if (failure || !sync) {
        await this.deleteEndpoint(record).catch(() => undefined);
        const why = failure
          ? failure.message
          : `the local view did not catch up within ${this.writeTimeoutMs} ms`;
        throw new OverlayError(
          'unavailable',
          `data plane could not attach "${record.name}" to network "${network.name}": ${why}; the endpoint was removed again`,
          {
            cause: failure,
          },
        );
      }
    }
    return this.endpointInfo(record, network);
  }

  /** Removes endpoint, address and name in one transaction. Endpoint by ID, name or ID prefix. */
  async detach(networkRef: string, endpointRef: string): Promise<void> {
    await this.write(`detach "${endpointRef}" from network "${networkRef}"`, async () => {
      const net = await this.freshNetwork(networkRef);
      const entries = await this.store.list(this.keys.endpointsPrefix(net.record.id));
      const eps = entries.map((e) => decodeJson<EndpointRecord>(e)).filter((e): e is EndpointRecord => !!e);
      const ep = resolveEndpoint(eps, endpointRef, net.record.name);
      const index = await this.deleteEndpoint(ep);
      if (index !== undefined) await this.waitForSync(index, this.writeTimeoutMs);
    });
  }

  /** From the local view; all networks when `networkRef` is omitted. */
  listEndpoints(networkRef?: string): EndpointInfo[] {
    const nets =
      networkRef === undefined
        ? [...this.view.networks.values()].map((n) => n.record)
        : [this.view.findNetwork(networkRef)];
    return nets.flatMap((n) => this.view.endpointsOf(n.id).map((e) => this.endpointInfo(e, n)));
  }

  /** Remote endpoints of live hosts, per network (the peer table), from the local view. */
  peers(networkId?: string): RemotePeer[] {
    return this.peersIn(this.view, networkId);
  }

  private peersIn(view: ClusterView, networkId?: string): RemotePeer[] {
    const out: RemotePeer[] = [];
    for (const { record: ep } of view.endpoints.values()) {
      if (ep.host === this.hostname || !view.isLive(ep)) continue;
      if (networkId !== undefined && ep.networkId !== networkId) continue;
      const host = view.hosts.get(ep.host);
      if (host)
        out.push({
          networkId: ep.networkId,
          endpointId: ep.id,
          ip: ep.ip,
          mac: ep.mac,
          vtep: host.record.vtep,
        });
    }
    return out.sort((a, b) => cmp(a.networkId + a.ip, b.networkId + b.ip));
  }

  /** The name table the DNS server answers from; always the latest local view. */
  dnsTable(): DnsTable {
    const v = this.view;
    if (this.dnsTableCache?.index !== v.index || !this.dnsTableCache)
      this.dnsTableCache = { index: v.index, table: new DnsTable(v) };
    return this.dnsTableCache.table;
  }

  /** Store index the local view reflects. */
  viewIndex(): number {
    return this.view.index;
  }

  // ---------------------------------------------------------------- internals

  private endpointInfo(e: EndpointRecord, n: NetworkRecord): EndpointInfo {
    const sub = new NetworkAddressSpace(n.name, n.ipam.config).subnetOf(parseIp(e.ip) ?? 0);
    return {
      ...e,
      aliases: [...e.aliases],
      networkName: n.name,
      prefixLength: sub?.prefixLength ?? 32,
      gateway: sub?.gateway ?? '',
    };
  }

  private freeVni(used: Set<number>): number {
    for (let vni = this.vniRange.first; vni <= this.vniRange.last; vni++) if (!used.has(vni)) return vni;
    throw new OverlayError(
      'exhausted',
      `no free VNI left in ${this.vniRange.first}-${this.vniRange.last}; remove unused networks`,
    );
  }

  /** The network's ID as the local view resolves `ref`, or undefined. */
  private networkIdInView(ref: string): string | undefined {
    try {
      return this.view.findNetwork(ref).id;
    } catch {
      return undefined;
    }
  }

  /**
   * What an attach needs to know, from the local view; undefined when the
   * view would refuse it (network unknown or being removed, name or the
   * requested address taken): only a fresh read may refuse, and words the
   * error.
   */
  private attachStateInView(req: AttachRequest): AttachState | undefined {
    const id = this.networkIdInView(req.network);
    const net = id === undefined ? undefined : this.view.networks.get(id);
    if (net === undefined || net.record.removing) return undefined;
    if (this.view.endpointNames.has(`${net.record.id}/${req.name}`)) return undefined;
    const prefix = `${net.record.id}/`;
    const taken = new Set<number>();
    for (const key of this.view.ipam.keys())
      if (key.startsWith(prefix)) taken.add(parseIp(key.slice(prefix.length)) as number);
    if (req.ip !== undefined && taken.has(parseIp(req.ip) as number)) return undefined;
    return { net, nameHolder: undefined, taken };
  }

  /**
   * What an attach needs to know, read from the store (linearizable). The
   * network's ID from the local view lets its name and address reads go out
   * with the network's fresh read (one read round, not two); if the view was
   * wrong, they are read again for the right ID.
   */
  private async freshAttachState(req: AttachRequest): Promise<AttachState> {
    const guessedId = this.networkIdInView(req.network);
    const readsFor = (id: string) =>
      Promise.all([
        this.store.get(this.keys.endpointName(id, req.name)),
        this.store.list(this.keys.ipamPrefix(id)),
      ]);
    const early = guessedId === undefined ? undefined : readsFor(guessedId);
    early?.catch(() => {}); // awaited below unless the guess was wrong
    const net = await this.freshNetwork(req.network);
    const [nameEntry, ipamEntries] = await (early && guessedId === net.record.id
      ? early
      : readsFor(net.record.id));
    return {
      net,
      nameHolder: nameEntry ? decodeText(nameEntry) : undefined,
      taken: new Set(ipamEntries.map((e) => parseIp(e.key.slice(e.key.lastIndexOf('/') + 1)) as number)),
    };
  }

  private async freshNetwork(ref: string): Promise<Stored<NetworkRecord>> {
    const entries = await this.store.list(this.keys.networksPrefix());
    const stored = entries
      .map((e) => ({ record: decodeJson<NetworkRecord>(e), key: e.key, modifyIndex: e.modifyIndex }))
      .filter((s): s is Stored<NetworkRecord> => !!s.record);
    const n = resolveNetwork(
      stored.map((s) => s.record),
      ref,
    );
    return stored.find((s) => s.record.id === n.id) as Stored<NetworkRecord>;
  }

  private async refuseIfInUse(n: NetworkRecord): Promise<void> {
    const entries = await this.store.list(this.keys.endpointsPrefix(n.id));
    const eps = entries.map((e) => decodeJson<EndpointRecord>(e)).filter((e): e is EndpointRecord => !!e);
    if (eps.length === 0) return;
    eps.sort((x, y) => cmp(x.name, y.name));
    const shown = eps.slice(0, 10).map((e) => `${e.name} (host ${e.host}, ${e.ip})`);
    const more = eps.length > shown.length ? ` and ${eps.length - shown.length} more` : '';
    throw new OverlayError(
      'in-use',
      `network "${n.name}" has active endpoints: ${shown.join(', ')}${more}; detach them first`,
    );
  }

  /** One transaction: endpoint, its address and its name, each only if unchanged. Undefined if already gone. */
  private async deleteEndpoint(ep: EndpointRecord): Promise<number | undefined> {
    for (let attempt = 0; attempt < maxWriteAttempts; attempt++) {
      const [epEntry, ipEntry, nameEntry] = await Promise.all([
        this.store.get(this.keys.endpoint(ep.networkId, ep.id)),
        this.store.get(this.keys.ipam(ep.networkId, ep.ip)),
        this.store.get(this.keys.endpointName(ep.networkId, ep.name)),
      ]);
      if (!epEntry) return undefined;
      const ops: TxnOp[] = [...deleteIfUnchanged(epEntry.key, epEntry.modifyIndex)];
      if (ipEntry && decodeText(ipEntry) === ep.id)
        ops.push(...deleteIfUnchanged(ipEntry.key, ipEntry.modifyIndex));
      if (nameEntry && decodeText(nameEntry) === ep.id)
        ops.push(...deleteIfUnchanged(nameEntry.key, nameEntry.modifyIndex));
      const r = await this.store.txn(ops);
      if (r.ok) return r.index;
    }
    throw new OverlayError('unavailable', `could not remove endpoint "${ep.name}": it kept changing; retry`);
  }

  /**
   * Runs a store operation under the write deadline. Store failures and
   * timeouts become OverlayError('unavailable'). Past the deadline `fn` must
   * not start new writes (it gets an aborted signal); a write already sent
   * may still commit later (as with any replicated store), which is why
   * attach undoes an endpoint that commits after its caller was told no.
   */
  private async write<T>(what: string, fn: (deadline: AbortSignal) => Promise<T>): Promise<T> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const expired = new AbortController();
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        expired.abort();
        reject(
          new OverlayError(
            'unavailable',
            `could not ${what}: the store did not answer within ${this.writeTimeoutMs} ms (no quorum or leader?); check \`weft status\` and retry`,
          ),
        );
      }, this.writeTimeoutMs);
    });
    const op = fn(expired.signal);
    op.catch(() => undefined); // a late failure after the deadline must not go unhandled
    try {
      return await Promise.race([op, deadline]);
    } catch (e) {
      if (isOverlayError(e)) throw e;
      const msg = e instanceof Error ? e.message : String(e);
      throw new OverlayError('unavailable', `could not ${what}: store error: ${msg}`, { cause: e });
    } finally {
      clearTimeout(timer);
    }
  }

  private scheduleRenewal(): void {
    if (!this.running) return;
    this.renewTimer = this.clock.setTimeout(
      () => void this.renew(),
      Math.max(1, Math.floor(this.sessionTtlMs / 3)),
    );
  }

  private async renew(): Promise<void> {
    const session = this.sessionId;
    try {
      if (session && (await this.withTimeout(this.store.renewSession(session), this.sessionTtlMs / 3)))
        return;
      if (!this.running) return;
      if (session) this.emit('session-lost', { session });
      this.sessionId = undefined;
      await this.registerHost();
    } catch (e) {
      this.warn(
        new Error(`renewing the store session of host "${this.hostname}" failed: ${errorText(e)}; retrying`, {
          cause: e,
        }),
      );
    } finally {
      this.scheduleRenewal();
    }
  }

  private async withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      return await Promise.race([
        p,
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error(`no answer within ${Math.round(ms)} ms`)), ms);
        }),
      ]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** One blocking-query watch of the whole prefix; re-established (with a full reconcile) when it breaks. */
  private async watchLoop(signal: AbortSignal): Promise<void> {
    let backoffMs = 50;
    while (!signal.aborted) {
      let full = true;
      try {
        for await (const ev of this.store.watch(this.keys.prefix, { signal })) {
          if (signal.aborted) break;
          this.onListing(ev, full);
          full = false;
          backoffMs = 50;
        }
        if (!signal.aborted) throw new Error('watch ended');
      } catch (e) {
        if (signal.aborted) break;
        this.warn(
          new Error(
            `watching the store failed: ${errorText(e)}; re-watching in ${backoffMs} ms (local state is kept)`,
            { cause: e },
          ),
        );
        await sleep(backoffMs);
        backoffMs = Math.min(backoffMs * 2, maxBackoffMs);
      }
    }
  }

  private onListing(ev: WatchEvent, full: boolean): void {
    const prev = this.view;
    const view = ClusterView.build(this.keys, ev.index, ev.entries, prev);
    this.view = view;
    if (view.malformedKeys.length > 0 && !sameList(prev.malformedKeys, view.malformedKeys)) {
      this.warn(new Error(`ignoring malformed records in the store: ${view.malformedKeys.join(', ')}`));
    }
    this.emitChanges(prev, view);
    this.applyToDataplane(view, full);
    void this.reclaim();
  }

  private emitChanges(prev: ClusterView, next: ClusterView): void {
    for (const [name, h] of prev.hosts)
      if (next.hosts.get(name)?.record.session !== h.record.session) this.emit('host-down', { ...h.record });
    for (const [name, h] of next.hosts)
      if (prev.hosts.get(name)?.record.session !== h.record.session) this.emit('host-up', { ...h.record });
    for (const [id, n] of next.networks)
      if (!prev.networks.has(id)) this.emit('network-created', networkInfo(n.record));
    for (const [id, e] of next.endpoints) {
      const n = next.networks.get(e.record.networkId);
      if (!prev.endpoints.has(id) && n) this.emit('endpoint-added', this.endpointInfo(e.record, n.record));
    }
    for (const [id, e] of prev.endpoints) {
      const n = prev.networks.get(e.record.networkId);
      if (!next.endpoints.has(id) && n) this.emit('endpoint-removed', this.endpointInfo(e.record, n.record));
    }
    for (const [id, n] of prev.networks)
      if (!next.networks.has(id)) this.emit('network-removed', networkInfo(n.record));
  }

  /**
   * What this host's data plane should hold: every network's host devices
   * (made as soon as the network exists, so a host's first container on it
   * does not wait for its bridge and VXLAN device; removed with the network),
   * its own endpoints, and the live remote endpoints on the networks it has
   * endpoints on (peer tables stay proportional to what the host uses).
   */
  private desired(view: ClusterView): DesiredDataplane {
    const endpoints: LocalEndpoint[] = [];
    const joined = new Set<string>();
    for (const { record: ep } of view.endpoints.values()) {
      if (
        ep.host !== this.hostname ||
        ep.hostSession !== this.sessionId ||
        ep.sandbox === undefined ||
        ep.ifName === undefined
      )
        continue;
      const n = view.networks.get(ep.networkId)?.record;
      if (!n) continue;
      endpoints.push(this.localEndpoint(ep as EndpointRecord & { sandbox: string; ifName: string }, n));
      joined.add(n.id);
    }
    const networks: NetworkSpec[] = [...view.networks.values()].map(({ record: n }) => ({
      id: n.id,
      name: n.name,
      vni: n.vni,
      subnets: n.ipam.config.map((c) => ({ subnet: c.subnet, gateway: c.gateway })),
      ...(n.options.mtu !== undefined ? { mtu: n.options.mtu } : {}),
      internal: n.options.internal,
    }));
    const peers = this.peersIn(view).filter((p) => joined.has(p.networkId));
    return { networks, endpoints, peers };
  }

  /** A local endpoint as the data plane gets it (one shape for the sync and attachAhead: they are compared). */
  private localEndpoint(
    ep: EndpointRecord & { sandbox: string; ifName: string },
    n: NetworkRecord,
  ): LocalEndpoint {
    const info = this.endpointInfo(ep, n);
    return {
      networkId: n.id,
      endpointId: ep.id,
      sandbox: ep.sandbox,
      ifName: ep.ifName,
      ip: ep.ip,
      prefixLength: info.prefixLength,
      mac: ep.mac,
      gateway: info.gateway,
    };
  }

  private applyToDataplane(view: ClusterView, full: boolean): void {
    const done = (result: SyncResult | undefined) => {
      this.syncedIndex = Math.max(this.syncedIndex, view.index, 1);
      if (result) this.lastSync = result;
      const ready = this.indexWaiters.filter((w) => w.index <= this.syncedIndex);
      this.indexWaiters = this.indexWaiters.filter((w) => w.index > this.syncedIndex);
      for (const w of ready) w.resolve(result ?? this.lastSync ?? emptySync());
    };
    if (!this.dpSync) {
      done(undefined);
      return;
    }
    const dpSync = this.dpSync;
    void dpSync.sync(this.desired(view), { full }).then((result) => {
      for (const p of result.peersRemoved) this.emit('peer-removed', p);
      for (const p of result.peersAdded) this.emit('peer-added', p);
      for (const [what, err] of result.failures)
        this.warn(new Error(`data plane: ${what}: ${err.message}; will retry`, { cause: err }));
      if (result.failures.size > 0) this.scheduleDataplaneRetry();
      done(result);
    });
  }

  /** Failed data-plane calls are repeated (diffs against what was applied) until they succeed. */
  private scheduleDataplaneRetry(): void {
    if (this.retryTimer || !this.running) return;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      if (this.running) this.applyToDataplane(this.view, false);
    }, 1_000);
    this.retryTimer.unref?.();
  }

  /** Resolves with the sync result once the view has reached `index` and the data plane has been told, or undefined after `timeoutMs`. */
  private waitForSync(index: number, timeoutMs: number): Promise<SyncResult | undefined> {
    if (this.syncedIndex >= index) return Promise.resolve(this.lastSync ?? emptySync());
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.indexWaiters = this.indexWaiters.filter((w) => w !== waiter);
        resolve(undefined);
      }, timeoutMs);
      const waiter = {
        index,
        resolve: (r: SyncResult | undefined) => {
          clearTimeout(timer);
          resolve(r);
        },
      };
      this.indexWaiters.push(waiter);
    });
  }

  /**
   * Removes endpoints (and their addresses and names) of hosts whose session
   * is gone. Every host may run this at once: each delete is conditional on
   * the index it saw and on the dead host still being dead, so the first
   * transaction wins and the others fail harmlessly.
   */
  private async reclaim(): Promise<void> {
    if (this.reclaimRunning) {
      this.reclaimAgain = true;
      return;
    }
    this.reclaimRunning = true;
    try {
      do {
        this.reclaimAgain = false;
        const view = this.view;
        const orphans = view.orphans();
        for (let i = 0; i < orphans.length && this.running; i += reclaimBatch) {
          const batch = orphans.slice(i, i + reclaimBatch);
          const ops: TxnOp[] = [];
          for (const host of new Set(batch.map((o) => o.record.host))) {
            const h = view.hosts.get(host);
            ops.push(
              h
                ? { verb: 'check-index', key: h.key, index: h.modifyIndex }
                : { verb: 'check-not-exists', key: this.keys.host(host) },
            );
          }
          for (const o of batch) {
            const ep = o.record;
            ops.push(...deleteIfUnchanged(o.key, o.modifyIndex));
            const ip = view.ipam.get(`${ep.networkId}/${ep.ip}`);
            if (ip?.value === ep.id) ops.push(...deleteIfUnchanged(ip.key, ip.modifyIndex));
            const nm = view.endpointNames.get(`${ep.networkId}/${ep.name}`);
            if (nm?.value === ep.id) ops.push(...deleteIfUnchanged(nm.key, nm.modifyIndex));
          }
          const r = await this.write(`reclaim endpoints of dead hosts`, () => this.store.txn(ops));
          if (r.ok)
            this.emit(
              'reclaimed',
              batch.map((o) => o.record),
            );
          // On failure another host was faster or the host came back: the next listing decides again.
        }
      } while (this.reclaimAgain && this.running);
    } catch (e) {
      this.warn(
        new Error(
          `reclaiming endpoints of dead hosts failed: ${errorText(e)}; will retry on the next change`,
          { cause: e },
        ),
      );
    } finally {
      this.reclaimRunning = false;
    }
  }

  private warn(e: Error): void {
    if (this.listenerCount('warning') > 0) this.emit('warning', e);
  }
}

function validateOptions(o: Partial<NetworkOptions> & Record<string, unknown>): NetworkOptions {
  for (const k of Object.keys(o)) {
    if (!['mtu', 'internal', 'attachable'].includes(k))
      throw invalid(`unknown network option "${k}" (known: mtu, internal, attachable)`);
  }
  if (o.mtu !== undefined && !(Number.isInteger(o.mtu) && o.mtu >= 68 && o.mtu <= 65535)) {
    throw invalid(`mtu ${String(o.mtu)} must be an integer between 68 and 65535`);
  }
  for (const k of ['internal', 'attachable'] as const) {
    if (o[k] !== undefined && typeof o[k] !== 'boolean') throw invalid(`option ${k} must be true or false`);
  }
  return {
    ...(o.mtu !== undefined ? { mtu: o.mtu } : {}),
    internal: o.internal ?? false,
    attachable: o.attachable ?? false,
  };
}

function validateLabels(labels: Record<string, string>): Record<string, string> {
  if (labels === null || typeof labels !== 'object') throw invalid('labels must be an object of strings');
  for (const [k, v] of Object.entries(labels)) {
    if (!k || typeof v !== 'string')
      throw invalid(`label "${k}" must have a non-empty key and a string value`);
  }
  return { ...labels };
}

function networkInfo(n: NetworkRecord): NetworkInfo {
  const { removing: _removing, ...rest } = n;
  return structuredClone(rest);
}

function randomId(): string {
  return randomBytes(32).toString('hex');
}

function splitOnce(s: string): [string, string] {
  const i = s.indexOf('/');
  return [s.slice(0, i), s.slice(i + 1)];
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function sameList(a: string[], b: string[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

function emptySync(): SyncResult {
  return { failures: new Map(), peersAdded: [], peersRemoved: [] };
}
