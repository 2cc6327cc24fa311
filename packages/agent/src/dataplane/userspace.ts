// The `userspace` data plane: per network the plumbing's bridge plus a TAP
// device in it, owned by the native engine (native.ts), which encapsulates
// TAP ⇄ VXLAN/UDP in its own threads. Speaks RFC 7348 like the kernel plane,
// so hosts of either kind share networks. Remote endpoints live in the
// engine's peer tables (MAC → VTEP for forwarding, IP → MAC for local ARP
// replies) and as static bridge FDB entries MAC → TAP, so the bridge never
// floods frames for remote containers to local ports.
//
// The TAP devices are not persistent: they vanish when the engine closes them
// or the agent dies, and reconcile() after a restart recreates them.

import type { Dataplane, DataplaneCounters, LocalEndpoint, NetworkSpec, RemotePeer } from '@weft/overlay';
import { applyNetlinkOps, type NetlinkOp } from '../netlink/rtnetlink.js';
import { assertNetworkId, bridgeName, tapName } from './names.js';
import { loadNativeAddon, type NativeEngine, type NativePeer } from './native.js';
import { Plumbing, type PlumbingOptions, validateNetwork, validatePeer } from './plumbing.js';
import { SerialQueue } from './serial.js';

export const defaultVxlanPort = 4789;

export interface UserspaceDataplaneOptions extends PlumbingOptions {
  /** UDP port of the VXLAN socket; default 4789 (IANA). */
  vxlanPort?: number;
  /**
   * TSO/checksum offload on the TAPs, UDP GSO/GRO on the socket and receive
   * coalescing; default true. false = one packet per frame (slower; for
   * kernels without UDP_GRO or for comparison).
   */
  offloads?: boolean;
  /** Scheduling of the engine's packet threads (see NativeEngineOptions); default "realtime". */
  threadPriority?: 'realtime' | 'nice' | 'normal';
  /** Longest adaptive busy-poll window of the packet threads, µs (see NativeEngineOptions); default 200, 0 = off. */
  busyPollUs?: number;
  /** Queues (packet threads), steered by CPU (see NativeEngineOptions); default 0 = one per CPU. */
  queues?: number;
  /** While a stream flows, a packet thread that carries it naps this long when out of work instead of being woken per frame (see NativeEngineOptions); default automatic: 0 when steered by CPU, 200 µs when not; 0 = off. */
  streamNapUs?: number;
  /** Native addon binary to use instead of the one `npm install` built (benchmarks compare builds). */
  addonPath?: string;
}

interface NetworkState {
  vni: number;
  tap: string;
  /** The network's bridge (the TAP is a port of it). */
  bridge: string;
  /** MAC → peer, what the engine's table holds. */
  peers: Map<string, { vtep: string; ip: string }>;
  /** MACs with a static bridge FDB entry on the TAP. */
  bridgeMacs: Set<string>;
}

/**
 * Engines by host namespace and port. Only one engine can own a host's VXLAN
 * port, so a data plane that starts for a host takes over from an earlier
 * instance in this process that was never stopped — exactly what happens when
 * a restarted agent follows one that died (the kernel closed its socket and
 * TAPs). Tests simulate agent crashes this way.
 */
const enginesByHost = new Map<string, { owner: UserspaceDataplane; engine: NativeEngine }>();

export class UserspaceDataplane implements Dataplane {
  readonly plumbing: Plumbing;
  private readonly port: number;
  private readonly queue = new SerialQueue();
  private engine: NativeEngine | undefined;
  private readonly networks = new Map<string, NetworkState>();

  constructor(readonly options: UserspaceDataplaneOptions) {
    this.plumbing = new Plumbing(options);
    this.port = options.vxlanPort ?? defaultVxlanPort;
  }

  start(): Promise<void> {
    return this.queue.run(() => this.ensureStarted());
  }

  stop(): Promise<void> {
    return this.queue.run(async () => {
      this.closeEngine(); // joins every thread; the TAPs disappear with their descriptors
      this.networks.clear();
      await this.plumbing.teardownHost();
    });
  }

  ensureNetwork(net: NetworkSpec): Promise<void> {
    return this.queue.run(async () => {
      await this.ensureStarted();
      await this.doEnsureNetwork(net);
    });
  }

  removeNetwork(networkId: string): Promise<void> {
    return this.queue.run(async () => {
      assertNetworkId(networkId);
      const state = this.networks.get(networkId);
      if (state !== undefined) this.engine?.removeNetwork(state.vni);
      this.networks.delete(networkId);
      await this.plumbing.removeNetwork(networkId, [tapName(networkId)]);
    });
  }

  attach(ep: LocalEndpoint): Promise<void> {
    return this.queue.run(() => this.plumbing.attach(ep));
  }

  detach(ep: Pick<LocalEndpoint, 'networkId' | 'endpointId' | 'sandbox' | 'ifName'>): Promise<void> {
    return this.queue.run(() => this.plumbing.detach(ep));
  }

  addPeer(peer: RemotePeer): Promise<void> {
    return this.queue.run(async () => {
      validatePeer(peer);
      const state = this.requireNetwork(peer.networkId);
      const wanted = new Map(state.peers);
      // An IP that moved to a new MAC leaves its old MAC behind; drop it.
      for (const [mac, p] of wanted) if (p.ip === peer.ip && mac !== peer.mac) wanted.delete(mac);
      wanted.set(peer.mac, { vtep: peer.vtep, ip: peer.ip });
      await this.applyPeers(state, wanted);
    });
  }

  removePeer(peer: RemotePeer): Promise<void> {
    return this.queue.run(async () => {
      validatePeer(peer);
      const state = this.networks.get(peer.networkId);
      if (state === undefined) return; // network gone: nothing to remove
      // Only if it still points where this peer was: an endpoint that moved
      // to another host (addPeer came first) keeps its new mapping.
      if (state.peers.get(peer.mac)?.vtep !== peer.vtep) return;
      const wanted = new Map(state.peers);
      wanted.delete(peer.mac);
      await this.applyPeers(state, wanted);
    });
  }

  reconcile(state: {
    networks: NetworkSpec[];
    endpoints: LocalEndpoint[];
    peers: RemotePeer[];
  }): Promise<void> {
    return this.queue.run(async () => {
      state.networks.forEach(validateNetwork);
      state.peers.forEach(validatePeer);
      await this.ensureStarted();
      const wantedIds = new Set(state.networks.map((n) => n.id));
      for (const [id, s] of this.networks) {
        if (!wantedIds.has(id)) {
          this.engine!.removeNetwork(s.vni);
          this.networks.delete(id);
        }
      }
      const keep = Plumbing.expectedDevices(state.networks, state.endpoints, (id) => [tapName(id)]);
      await this.plumbing.removeStaleDevices(keep);
      for (const net of state.networks) await this.doEnsureNetwork(net);
      for (const ep of state.endpoints) if (wantedIds.has(ep.networkId)) await this.plumbing.attach(ep);
      await this.plumbing.pruneGatewayVeths();
      for (const net of state.networks) {
        const wanted = new Map<string, { vtep: string; ip: string }>();
        for (const p of state.peers)
          if (p.networkId === net.id) wanted.set(p.mac, { vtep: p.vtep, ip: p.ip });
        await this.applyPeers(this.networks.get(net.id)!, wanted);
      }
    });
  }

  /** Per network: frames encapsulated (tx) and decapsulated (rx), drops by reason. */
  counters(): Promise<DataplaneCounters> {
    return this.queue.run(async () => {
      const out: DataplaneCounters = {};
      if (this.engine === undefined) return out;
      const all = this.engine.counters().networks;
      for (const [id, s] of this.networks) {
        const c = all[String(s.vni)];
        if (c === undefined) continue;
        out[id] = {
          txPackets: c.txPackets,
          txBytes: c.txBytes,
          rxPackets: c.rxPackets,
          rxBytes: c.rxBytes,
          drops: c.drops,
        };
      }
      return out;
    });
  }

  /**
   * Datagrams that belong to no network (short, bad VXLAN flags, unknown VNI),
   * the ARP/flood activity per network, and how the packet threads waited
   * (wake-ups, busy-poll hits): what counters() has no place for.
   */
  engineCounters(): ReturnType<NativeEngine['counters']> | undefined {
    return this.engine?.counters();
  }

  private hostKey(): string {
    return `${this.options.hostNetns ?? ''}|${this.port}`;
  }

  private closeEngine(): void {
    this.engine?.close();
    const entry = enginesByHost.get(this.hostKey());
    if (entry?.owner === this) enginesByHost.delete(this.hostKey());
    this.engine = undefined;
  }

  private async ensureStarted(): Promise<void> {
    await this.plumbing.ensureHost();
    if (this.engine !== undefined) return;
    const addon = loadNativeAddon(this.options.addonPath);
    const previous = enginesByHost.get(this.hostKey());
    if (previous !== undefined) {
      previous.engine.close();
      enginesByHost.delete(this.hostKey());
    }
    const netns = this.options.hostNetns;
    this.engine = new addon.Engine({
      vtep: this.options.vtep,
      port: this.port,
      netnsPath: netns === undefined ? undefined : `/run/netns/${netns}`,
      offloads: this.options.offloads ?? true,
      threadPriority: this.options.threadPriority ?? 'realtime',
      busyPollUs: this.options.busyPollUs,
      queues: this.options.queues,
      streamNapUs: this.options.streamNapUs,
    });
    enginesByHost.set(this.hostKey(), { owner: this, engine: this.engine });
  }

  private async doEnsureNetwork(net: NetworkSpec): Promise<void> {
    validateNetwork(net);
    await this.plumbing.ensureBridge(net);
    const tap = tapName(net.id);
    let state = this.networks.get(net.id);
    let carriedPeers: Map<string, { vtep: string; ip: string }> | undefined;
    const tapGone = state !== undefined && (await this.plumbing.host.link(tap)) === undefined;
    if (state !== undefined && (state.vni !== net.vni || tapGone)) {
      // A VNI cannot change under a TAP, and a TAP someone deleted leaves the
      // engine a dead descriptor: start the network over, keeping its peers.
      this.engine!.removeNetwork(state.vni);
      this.networks.delete(net.id);
      carriedPeers = state.peers;
      state = undefined;
    }
    if (state === undefined) {
      // A TAP by our name that the engine does not hold is a leftover (e.g. made
      // by hand or by another process): replace it.
      if ((await this.plumbing.host.link(tap)) !== undefined) await this.plumbing.deleteLinks([tap]);
      this.engine!.addNetwork(net.vni, tap);
      state = { vni: net.vni, tap, bridge: bridgeName(net.id), peers: new Map(), bridgeMacs: new Set() };
      this.networks.set(net.id, state);
      // A bridge port needs no IPv6 link-local address (the host stays out of
      // the overlay); without one, no address appears seconds after setup.
      await this.plumbing.host.ip(['link', 'set', 'dev', tap, 'addrgenmode', 'none']);
    }
    await this.plumbing.addToBridge(tap, net.id);
    if (carriedPeers !== undefined && carriedPeers.size > 0) await this.applyPeers(state, carriedPeers);
  }

  private requireNetwork(networkId: string): NetworkState {
    const state = this.networks.get(networkId);
    if (state === undefined) {
      throw new Error(
        `network ${networkId.slice(0, 12)} is not set up on this host: call ensureNetwork first`,
      );
    }
    return state;
  }

  /**
   * Publishes the table to the engine (one atomic swap), then syncs the
   * bridge FDB and announces new entries on the bridge (see the kernel data
   * plane's peerEntryOps: a container that asked too early gets its answer).
   */
  private async applyPeers(
    state: NetworkState,
    wanted: Map<string, { vtep: string; ip: string }>,
  ): Promise<void> {
    const table: NativePeer[] = [...wanted].map(([mac, p]) => ({ mac, vtep: p.vtep, ip: p.ip }));
    this.engine!.setPeers(state.vni, table);
    const before = state.peers;
    state.peers = wanted;
    const netns = this.plumbing.options.hostNetns;
    const ops: NetlinkOp[] = [];
    for (const mac of state.bridgeMacs)
      if (!wanted.has(mac)) ops.push({ op: 'fdbDelete', netns, dev: state.tap, mac, where: 'master' });
    for (const mac of wanted.keys())
      if (!state.bridgeMacs.has(mac))
        ops.push({ op: 'fdbReplace', netns, dev: state.tap, mac, where: 'master' });
    for (const [mac, p] of wanted)
      if (before.get(mac)?.ip !== p.ip) ops.push({ op: 'announce', netns, dev: state.bridge, ip: p.ip, mac });
    await applyNetlinkOps(ops);
    state.bridgeMacs = new Set(wanted.keys());
  }
}
