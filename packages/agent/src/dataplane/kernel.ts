// The `kernel` data plane: per network the plumbing's bridge plus a Linux
// vxlan device (id = VNI, UDP 4789, no learning, ARP proxy) in it. Remote
// endpoints are static entries:
//   FDB on the vxlan device   MAC → remote VTEP   (where to send the frame)
//   FDB on the bridge         MAC → vxlan port    (so the bridge does not flood)
//   neighbour on the vxlan    IP → MAC            (ARP answered locally, `proxy`)
// so no multicast, flooding or learning ever crosses the underlay.

import type { Dataplane, DataplaneCounters, LocalEndpoint, NetworkSpec, RemotePeer } from '@weft/overlay';
import { type BridgeFdb, CommandError, type IpLink, type IpNeigh } from '../netlink/ip.js';
import { vxlanName } from './names.js';
import { Plumbing, type PlumbingOptions, throwIfFailed, validateNetwork, validatePeer } from './plumbing.js';
import { SerialQueue } from './serial.js';

export const vxlanPort = 4789;

export interface KernelDataplaneOptions extends PlumbingOptions {
  /** UDP destination port of the VXLAN devices; default 4789 (IANA). */
  vxlanPort?: number;
}

/** Remote entries on one network's vxlan device, as the kernel has them or as they should be. */
interface PeerTable {
  /** vxlan FDB (self): where to send frames for a MAC. */
  vtepByMac: Map<string, string>;
  /** Bridge FDB (master, static): MACs the bridge sends to the vxlan port instead of flooding. */
  bridgeMacs: Set<string>;
  /** vxlan neighbour entries: answers to ARP requests. */
  macByIp: Map<string, string>;
}

function tableOf(peers: RemotePeer[]): PeerTable {
  const t: PeerTable = { vtepByMac: new Map(), bridgeMacs: new Set(), macByIp: new Map() };
  for (const p of peers) {
    t.vtepByMac.set(p.mac, p.vtep);
    t.bridgeMacs.add(p.mac);
    t.macByIp.set(p.ip, p.mac);
  }
  return t;
}

export class KernelDataplane implements Dataplane {
  readonly plumbing: Plumbing;
  private readonly port: number;
  private readonly queue = new SerialQueue();

  constructor(readonly options: KernelDataplaneOptions) {
    this.plumbing = new Plumbing(options);
    this.port = options.vxlanPort ?? vxlanPort;
  }

  start(): Promise<void> {
    return this.queue.run(() => this.plumbing.ensureHost());
  }

  stop(): Promise<void> {
    return this.queue.run(() => this.plumbing.teardownHost());
  }

  ensureNetwork(net: NetworkSpec): Promise<void> {
    return this.queue.run(() => this.doEnsureNetwork(net));
  }

  removeNetwork(networkId: string): Promise<void> {
    return this.queue.run(() => this.plumbing.removeNetwork(networkId, [vxlanName(networkId)]));
  }

  attach(ep: LocalEndpoint): Promise<void> {
    return this.queue.run(() => this.plumbing.attach(ep));
  }

  detach(ep: Pick<LocalEndpoint, 'networkId' | 'endpointId' | 'sandbox' | 'ifName'>): Promise<void> {
    return this.queue.run(() => this.plumbing.detach(ep));
  }

  /** O(1) in the number of peers: reads only this IP's neighbour entry, then replaces. */
  addPeer(peer: RemotePeer): Promise<void> {
    return this.queue.run(async () => {
      validatePeer(peer);
      const vx = vxlanName(peer.networkId);
      // An IP that moved to a new MAC leaves its old MAC's FDB entries behind; drop them.
      let oldMac: string | undefined;
      try {
        oldMac = await this.neighbourMac(vx, peer.ip);
      } catch (e) {
        // The lookup doubles as the check that the network is set up (one process less).
        if (e instanceof CommandError && /Cannot find device|does not exist/.test(e.stderr)) {
          throw new Error(
            `network ${peer.networkId.slice(0, 12)} is not set up on this host: call ensureNetwork first`,
          );
        }
        throw e;
      }
      if (oldMac !== undefined && oldMac !== peer.mac) await this.deleteFdbEntries(vx, oldMac);
      await this.plumbing.host.bridgeBatch([
        `fdb replace ${peer.mac} dev ${vx} dst ${peer.vtep} self permanent`,
        `fdb replace ${peer.mac} dev ${vx} master static`,
      ]);
      await this.plumbing.host.ip(
        `neigh replace ${peer.ip} lladdr ${peer.mac} dev ${vx} nud permanent`.split(' '),
      );
    });
  }

  removePeer(peer: RemotePeer): Promise<void> {
    return this.queue.run(async () => {
      validatePeer(peer);
      const vx = vxlanName(peer.networkId);
      if ((await this.plumbing.host.link(vx)) === undefined) return; // network gone: nothing to remove
      // Only entries that still point where this peer was: if the endpoint has
      // since moved to another host (addPeer came first), that mapping stays.
      const [self] = await this.fdbGet(vx, peer.mac);
      if (self !== undefined && self.dst !== peer.vtep) return;
      await this.deleteFdbEntries(vx, peer.mac);
      if ((await this.neighbourMac(vx, peer.ip)) === peer.mac) {
        await this.plumbing.host.ip(['neigh', 'del', peer.ip, 'dev', vx]);
      }
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
      await this.plumbing.ensureHost();
      const keep = Plumbing.expectedDevices(state.networks, state.endpoints, (id) => [vxlanName(id)]);
      await this.plumbing.removeStaleDevices(keep);
      const failures: Error[] = [];
      const ready: NetworkSpec[] = [];
      for (const net of state.networks) {
        try {
          await this.doEnsureNetwork(net);
          ready.push(net);
        } catch (e) {
          failures.push(
            new Error(`network ${net.name} (${net.id.slice(0, 12)}): ${(e as Error).message}`, { cause: e }),
          );
        }
      }
      const readyIds = new Set(ready.map((n) => n.id));
      failures.push(
        ...(await this.plumbing.attachEach(state.endpoints.filter((ep) => readyIds.has(ep.networkId)))),
      );
      await this.plumbing.pruneGatewayVeths();
      for (const net of ready) {
        const current = await this.readPeerTable(net.id);
        await this.writePeerTable(
          net.id,
          current,
          tableOf(state.peers.filter((p) => p.networkId === net.id)),
        );
      }
      throwIfFailed(failures);
    });
  }

  /** Per network, the vxlan device's counters (encapsulated = tx, decapsulated = rx). */
  counters(): Promise<DataplaneCounters> {
    return this.queue.run(async () => {
      const out: DataplaneCounters = {};
      const vxlans = await this.plumbing.host.ipJson<IpLink>(['-s', 'link', 'show', 'type', 'vxlan']);
      const byName = new Map(vxlans.map((l) => [l.ifname, l]));
      for (const networkId of await this.plumbing.networkIds()) {
        const s = byName.get(vxlanName(networkId))?.stats64;
        if (s === undefined) continue;
        out[networkId] = {
          txPackets: s.tx.packets,
          txBytes: s.tx.bytes,
          rxPackets: s.rx.packets,
          rxBytes: s.rx.bytes,
          drops: {
            rxDropped: s.rx.dropped,
            txDropped: s.tx.dropped,
            rxErrors: s.rx.errors,
            txErrors: s.tx.errors,
          },
        };
      }
      return out;
    });
  }

  private async doEnsureNetwork(net: NetworkSpec): Promise<void> {
    validateNetwork(net);
    await this.plumbing.ensureBridge(net);
    const name = vxlanName(net.id);
    const existing = await this.plumbing.host.link(name);
    const data = existing?.linkinfo?.info_data;
    const matches =
      existing?.linkinfo?.info_kind === 'vxlan' &&
      data?.id === net.vni &&
      data?.port === this.port &&
      data?.local === this.options.vtep &&
      data?.learning === false &&
      data?.proxy === true;
    if (existing !== undefined && !matches) {
      // Settings of a vxlan device cannot be changed in place: recreate it (its FDB goes with it).
      await this.plumbing.host.ip(['link', 'delete', 'dev', name]);
    }
    if (!matches) {
      await this.plumbing.host.ip(
        ['link', 'add', name, 'type', 'vxlan', 'id', String(net.vni), 'dstport', String(this.port)].concat([
          'local',
          this.options.vtep,
          'nolearning',
          'proxy',
        ]),
      );
    }
    await this.plumbing.addToBridge(name, net.id);
  }

  private async neighbourMac(vx: string, ip: string): Promise<string | undefined> {
    const [n] = await this.plumbing.host.ipJson<IpNeigh>(['neigh', 'show', ip, 'dev', vx]);
    return n?.lladdr;
  }

  /** The vxlan FDB entry for a MAC (empty if none). */
  private async fdbGet(vx: string, mac: string): Promise<BridgeFdb[]> {
    try {
      return await this.plumbing.host.bridgeJson<BridgeFdb>(['fdb', 'get', mac, 'dev', vx, 'self']);
    } catch (e) {
      if (e instanceof CommandError && /not found/i.test(e.stderr)) return [];
      throw e;
    }
  }

  /** Deletes the MAC's vxlan and bridge FDB entries, each if present. */
  private async deleteFdbEntries(vx: string, mac: string): Promise<void> {
    for (const where of ['self', 'master']) {
      try {
        await this.plumbing.host.bridge(['fdb', 'del', mac, 'dev', vx, where]);
      } catch (e) {
        if (!(e instanceof CommandError && /No such file|not found/i.test(e.stderr))) throw e;
      }
    }
  }

  /** The remote entries currently programmed for the network. */
  private async readPeerTable(networkId: string): Promise<PeerTable> {
    const dev = vxlanName(networkId);
    const t: PeerTable = { vtepByMac: new Map(), bridgeMacs: new Set(), macByIp: new Map() };
    for (const f of await this.plumbing.host.bridgeJson<BridgeFdb>(['fdb', 'show', 'dev', dev])) {
      if (f.flags?.includes('self') && f.dst !== undefined && f.mac !== '00:00:00:00:00:00') {
        t.vtepByMac.set(f.mac, f.dst);
      } else if (f.master !== undefined && f.state === 'static') {
        t.bridgeMacs.add(f.mac); // "permanent" master entries are the port's own MAC: not ours
      }
    }
    for (const n of await this.plumbing.host.ipJson<IpNeigh>(['neigh', 'show', 'dev', dev])) {
      if (n.lladdr !== undefined) t.macByIp.set(n.dst, n.lladdr);
    }
    return t;
  }

  /**
   * Turns `current` into `wanted` with one bridge and one ip process. Deletes
   * only entries that exist (iproute2 aborts a batch at a failed delete).
   */
  private async writePeerTable(networkId: string, current: PeerTable, wanted: PeerTable): Promise<void> {
    const vx = vxlanName(networkId);
    const fdb: string[] = [];
    const neigh: string[] = [];
    for (const [mac] of current.vtepByMac)
      if (!wanted.vtepByMac.has(mac)) fdb.push(`fdb del ${mac} dev ${vx} self`);
    for (const mac of current.bridgeMacs)
      if (!wanted.bridgeMacs.has(mac)) fdb.push(`fdb del ${mac} dev ${vx} master`);
    for (const [mac, vtep] of wanted.vtepByMac) {
      if (current.vtepByMac.get(mac) !== vtep)
        fdb.push(`fdb replace ${mac} dev ${vx} dst ${vtep} self permanent`);
    }
    for (const mac of wanted.bridgeMacs) {
      if (!current.bridgeMacs.has(mac)) fdb.push(`fdb replace ${mac} dev ${vx} master static`);
    }
    for (const [ip] of current.macByIp) if (!wanted.macByIp.has(ip)) neigh.push(`neigh del ${ip} dev ${vx}`);
    for (const [ip, mac] of wanted.macByIp) {
      if (current.macByIp.get(ip) !== mac)
        neigh.push(`neigh replace ${ip} lladdr ${mac} dev ${vx} nud permanent`);
    }
    await this.plumbing.host.bridgeBatch(fdb);
    await this.plumbing.host.ipBatch(neigh);
  }
}
