// The `kernel` data plane: per network the plumbing's bridge plus a Linux
// vxlan device (id = VNI, UDP 4789, no learning, ARP proxy) in it. Remote
// endpoints are static entries:
//   FDB on the vxlan device   MAC → remote VTEP   (where to send the frame)
//   FDB on the bridge         MAC → vxlan port    (so the bridge does not flood)
//   neighbour on the vxlan    IP → MAC            (ARP answered locally, `proxy`)
// so no multicast, flooding or learning ever crosses the underlay. They are
// written over rtnetlink (applyNetlinkOps: the addon, or iproute2 batches
// without it) and read back with iproute2's JSON listings.

import type { Dataplane, DataplaneCounters, LocalEndpoint, NetworkSpec, RemotePeer } from '@weft/overlay';
import { type BridgeFdb, type IpLink, type IpNeigh, isMissingDevice, isMissingEntry } from '../netlink/ip.js';
import { applyNetlinkOps, type NetlinkOp } from '../netlink/rtnetlink.js';
import { bridgeName, vxlanName } from './names.js';
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

interface PendingPeer {
  peer: RemotePeer;
  resolve: () => void;
  reject: (err: unknown) => void;
}

interface PeerBatch {
  kind: 'add' | 'remove';
  entries: PendingPeer[];
}

/**
 * A remote endpoint's three entries on its network's vxlan device (where its
 * MAC lives, that the bridge sends it there, its ARP answer), then an ARP
 * announcement of it on the network's bridge: a local container that asked
 * for the address before this host knew it (its ARP request went
 * unanswered) would otherwise wait for its next ARP try, a second later.
 */
function peerEntryOps(networkId: string, mac: string, vtep: string, ip: string): NetlinkOp[] {
  const dev = vxlanName(networkId);
  return [
    { op: 'fdbReplace', dev, mac, where: 'self', dst: vtep },
    { op: 'fdbReplace', dev, mac, where: 'master' },
    { op: 'neighReplace', dev, ip, mac },
    { op: 'announce', dev: bridgeName(networkId), ip, mac },
  ];
}

function groupBy<T>(items: T[], key: (item: T) => string): Map<string, T[]> {
  const out = new Map<string, T[]>();
  for (const item of items) {
    const k = key(item);
    const list = out.get(k);
    if (list) list.push(item);
    else out.set(k, [item]);
  }
  return out;
}

/** A missing vxlan device means the network was never set up here: say so. */
function notSetUp(networkId: string, err: unknown): unknown {
  return isMissingDevice(err)
    ? new Error(`network ${networkId.slice(0, 12)} is not set up on this host: call ensureNetwork first`)
    : err;
}

export class KernelDataplane implements Dataplane {
  readonly plumbing: Plumbing;
  private readonly port: number;
  private readonly queue = new SerialQueue();
  /**
   * Per network, the neighbour entries (IP → MAC) on its vxlan device as this
   * data plane last listed or wrote them; absent while unknown. Lets addPeer
   * skip reading the entry it replaces (a process on the path from a remote
   * attach to reachability). Reconcile lists again, repairing any drift.
   */
  private readonly knownNeighbours = new Map<string, Map<string, string>>();
  /** Peer changes not yet written, while no other call came after them (see addPeer). */
  private openPeerBatch: PeerBatch | undefined;

  constructor(readonly options: KernelDataplaneOptions) {
    this.plumbing = new Plumbing(options);
    this.port = options.vxlanPort ?? vxlanPort;
  }

  start(): Promise<void> {
    return this.run(() => this.plumbing.ensureHost());
  }

  stop(): Promise<void> {
    return this.run(() => this.plumbing.teardownHost());
  }

  ensureNetwork(net: NetworkSpec): Promise<void> {
    return this.run(async () => {
      await this.doEnsureNetwork(net);
    });
  }

  removeNetwork(networkId: string): Promise<void> {
    return this.run(async () => {
      this.knownNeighbours.delete(networkId);
      await this.plumbing.removeNetwork(networkId, [vxlanName(networkId)]);
    });
  }

  attach(ep: LocalEndpoint): Promise<void> {
    return this.run(() => this.plumbing.attach(ep));
  }

  detach(ep: Pick<LocalEndpoint, 'networkId' | 'endpointId' | 'sandbox' | 'ifName'>): Promise<void> {
    return this.run(() => this.plumbing.detach(ep));
  }

  /**
   * Adds that arrive together (the overlay issues a sync's adds at once) are
   * written together: one `bridge` and one `ip` process for all of them, side
   * by side. A network whose neighbour table this data plane does not know is
   * listed first (which doubles as the check that it is set up). O(1) per
   * peer in the number of peers already programmed.
   */
  addPeer(peer: RemotePeer): Promise<void> {
    return this.batchPeer('add', peer);
  }

  /**
   * Removes only entries that still point where the peer was: if the
   * endpoint has since moved to another host (addPeer came first), that
   * mapping stays. Removals that arrive together (a dead host's endpoints)
   * are written together, like adds, after one listing per network.
   */
  removePeer(peer: RemotePeer): Promise<void> {
    return this.batchPeer('remove', peer);
  }

  /** Joins the open batch of the same kind, or opens one that runs on the queue in turn. */
  private batchPeer(kind: PeerBatch['kind'], peer: RemotePeer): Promise<void> {
    try {
      validatePeer(peer);
    } catch (e) {
      return Promise.reject(e);
    }
    return new Promise((resolve, reject) => {
      let batch = this.openPeerBatch;
      if (batch?.kind !== kind) {
        const opened: PeerBatch = { kind, entries: [] };
        batch = opened;
        this.openPeerBatch = opened;
        void this.queue.run(async () => {
          if (this.openPeerBatch === opened) this.openPeerBatch = undefined;
          await (kind === 'add' ? this.writePeers(opened.entries) : this.erasePeers(opened.entries));
        });
      }
      batch.entries.push({ peer, resolve, reject });
    });
  }

  /** Any other call closes the open batch of peer changes, so calls still take effect in call order. */
  private run<T>(op: () => Promise<T>): Promise<T> {
    this.openPeerBatch = undefined;
    return this.queue.run(op);
  }

  private async erasePeers(batch: PendingPeer[]): Promise<void> {
    const ops: NetlinkOp[] = [];
    const done: PendingPeer[] = [];
    for (const [networkId, entries] of groupBy(batch, (e) => e.peer.networkId)) {
      const vx = vxlanName(networkId);
      let current: PeerTable;
      try {
        current = await this.readPeerTable(networkId);
      } catch (e) {
        if (isMissingDevice(e)) {
          for (const entry of entries) entry.resolve(); // network gone: nothing to remove
          continue;
        }
        for (const entry of entries) entry.reject(e);
        continue;
      }
      for (const entry of entries) {
        const { mac, ip, vtep } = entry.peer;
        done.push(entry);
        const dst = current.vtepByMac.get(mac);
        if (dst !== undefined && dst !== vtep) continue;
        if (dst !== undefined) ops.push({ op: 'fdbDelete', dev: vx, mac, where: 'self' });
        if (current.bridgeMacs.has(mac)) ops.push({ op: 'fdbDelete', dev: vx, mac, where: 'master' });
        if (current.macByIp.get(ip) === mac) {
          ops.push({ op: 'neighDelete', dev: vx, ip });
          current.macByIp.delete(ip);
        }
      }
      this.knownNeighbours.set(networkId, current.macByIp);
    }
    try {
      await this.applyInHost(ops);
    } catch (err) {
      for (const e of done) this.knownNeighbours.delete(e.peer.networkId);
      for (const e of done) e.reject(err);
      return;
    }
    for (const e of done) e.resolve();
  }

  private async writePeers(batch: PendingPeer[]): Promise<void> {
    const ready: PendingPeer[] = [];
    for (const [networkId, entries] of groupBy(batch, (e) => e.peer.networkId)) {
      if (!this.knownNeighbours.has(networkId)) {
        try {
          this.knownNeighbours.set(networkId, await this.readNeighbours(vxlanName(networkId)));
        } catch (e) {
          for (const entry of entries) entry.reject(notSetUp(networkId, e));
          continue;
        }
      }
      ready.push(...entries);
    }
    try {
      for (const { peer } of ready) {
        // An IP that moved to a new MAC leaves its old MAC's FDB entries behind; drop them.
        const oldMac = this.knownNeighbours.get(peer.networkId)?.get(peer.ip);
        if (oldMac !== undefined && oldMac !== peer.mac)
          await this.deleteFdbEntries(vxlanName(peer.networkId), oldMac);
      }
      await this.writePeerEntries(ready.map((e) => e.peer));
      for (const e of ready) e.resolve();
    } catch {
      // Something in the batch failed: one peer at a time, so each caller learns its own outcome.
      for (const e of ready) {
        this.knownNeighbours.delete(e.peer.networkId);
        await this.writePeerEntries([e.peer]).then(e.resolve, (err) =>
          e.reject(notSetUp(e.peer.networkId, err)),
        );
      }
    }
  }

  /** FDB and neighbour entries of the peers, in one netlink batch (see applyNetlinkOps). */
  private async writePeerEntries(peers: RemotePeer[]): Promise<void> {
    const ops = peers.flatMap((p) => peerEntryOps(p.networkId, p.mac, p.vtep, p.ip));
    try {
      await this.applyInHost(ops);
    } catch (err) {
      for (const p of peers) this.knownNeighbours.delete(p.networkId);
      throw err;
    }
    for (const p of peers) this.knownNeighbours.get(p.networkId)?.set(p.ip, p.mac);
  }

  /** The vxlan device's neighbour entries (IP → MAC); fails if there is no such device. */
  private async readNeighbours(vx: string): Promise<Map<string, string>> {
    const out = new Map<string, string>();
    for (const n of await this.plumbing.host.ipJson<IpNeigh>(['neigh', 'show', 'dev', vx]))
      if (n.lladdr !== undefined) out.set(n.dst, n.lladdr);
    return out;
  }

  reconcile(state: {
    networks: NetworkSpec[];
    endpoints: LocalEndpoint[];
    peers: RemotePeer[];
  }): Promise<void> {
    return this.run(async () => {
      state.networks.forEach(validateNetwork);
      state.peers.forEach(validatePeer);
      await this.plumbing.ensureHost();
      const keep = Plumbing.expectedDevices(state.networks, state.endpoints, (id) => [vxlanName(id)]);
      await this.plumbing.removeStaleDevices(keep);
      const failures: Error[] = [];
      const ready: NetworkSpec[] = [];
      const created = new Set<string>(); // new vxlan devices: nothing to list
      for (const net of state.networks) {
        try {
          if (await this.doEnsureNetwork(net)) created.add(net.id);
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
        const current = created.has(net.id) ? tableOf([]) : await this.readPeerTable(net.id);
        const wanted = tableOf(state.peers.filter((p) => p.networkId === net.id));
        this.knownNeighbours.delete(net.id);
        await this.writePeerTable(net.id, current, wanted);
        this.knownNeighbours.set(net.id, new Map(wanted.macByIp));
      }
      throwIfFailed(failures);
    });
  }

  /** Per network, the vxlan device's counters (encapsulated = tx, decapsulated = rx). */
  counters(): Promise<DataplaneCounters> {
    return this.run(async () => {
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

  /** Makes the network's bridge and vxlan device as they should be; true when the vxlan device was (re)made. */
  private async doEnsureNetwork(net: NetworkSpec): Promise<boolean> {
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
      this.knownNeighbours.set(net.id, new Map()); // a new device has no entries
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
    return !matches;
  }

  /** Applies FDB and neighbour changes in the host namespace (where the vxlan devices are). */
  private applyInHost(ops: NetlinkOp[]): Promise<void> {
    const netns = this.plumbing.options.hostNetns;
    return applyNetlinkOps(netns === undefined ? ops : ops.map((op) => ({ ...op, netns })));
  }

  /** Deletes the MAC's vxlan and bridge FDB entries, each if present. */
  private async deleteFdbEntries(vx: string, mac: string): Promise<void> {
    for (const where of ['self', 'master'] as const) {
      await this.applyInHost([{ op: 'fdbDelete', dev: vx, mac, where }]).catch((e) => {
        if (!isMissingEntry(e)) throw e;
      });
    }
  }

  /** The remote entries currently programmed for the network (two listings side by side). */
  private async readPeerTable(networkId: string): Promise<PeerTable> {
    const dev = vxlanName(networkId);
    const t: PeerTable = { vtepByMac: new Map(), bridgeMacs: new Set(), macByIp: new Map() };
    const [fdb, neigh] = await Promise.all([
      this.plumbing.host.bridgeJson<BridgeFdb>(['fdb', 'show', 'dev', dev]),
      this.plumbing.host.ipJson<IpNeigh>(['neigh', 'show', 'dev', dev]),
    ]);
    for (const f of fdb) {
      if (f.flags?.includes('self') && f.dst !== undefined && f.mac !== '00:00:00:00:00:00') {
        t.vtepByMac.set(f.mac, f.dst);
      } else if (f.master !== undefined && f.state === 'static') {
        t.bridgeMacs.add(f.mac); // "permanent" master entries are the port's own MAC: not ours
      }
    }
    for (const n of neigh) if (n.lladdr !== undefined) t.macByIp.set(n.dst, n.lladdr);
    return t;
  }

  /**
   * Turns `current` into `wanted` in one netlink batch. Deletes only entries
   * that exist (a failed delete stops the batch).
   */
  private async writePeerTable(networkId: string, current: PeerTable, wanted: PeerTable): Promise<void> {
    const dev = vxlanName(networkId);
    const ops: NetlinkOp[] = [];
    for (const [mac] of current.vtepByMac)
      if (!wanted.vtepByMac.has(mac)) ops.push({ op: 'fdbDelete', dev, mac, where: 'self' });
    for (const mac of current.bridgeMacs)
      if (!wanted.bridgeMacs.has(mac)) ops.push({ op: 'fdbDelete', dev, mac, where: 'master' });
    for (const [mac, vtep] of wanted.vtepByMac) {
      if (current.vtepByMac.get(mac) !== vtep)
        ops.push({ op: 'fdbReplace', dev, mac, where: 'self', dst: vtep });
    }
    for (const mac of wanted.bridgeMacs) {
      if (!current.bridgeMacs.has(mac)) ops.push({ op: 'fdbReplace', dev, mac, where: 'master' });
    }
    for (const [ip] of current.macByIp) if (!wanted.macByIp.has(ip)) ops.push({ op: 'neighDelete', dev, ip });
    for (const [ip, mac] of wanted.macByIp) {
      if (current.macByIp.get(ip) !== mac)
        ops.push(
          { op: 'neighReplace', dev, ip, mac },
          { op: 'announce', dev: bridgeName(networkId), ip, mac },
        );
    }
    await this.applyInHost(ops);
  }
}
