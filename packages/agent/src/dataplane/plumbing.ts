// Container plumbing shared by the kernel and the userspace data planes:
//
//  - per network, a bridge `wb-<net8>` in the host namespace (no IP address on
//    it: the host stays out of the overlay, and overlapping subnets of
//    different networks cannot collide in the host's routing table);
//  - per endpoint, a veth `wv<hash>` on that bridge whose other end is the
//    container's interface (ep.ifName) in its sandbox netns, with the
//    endpoint's IP, MAC and the overlay MTU;
//  - per host, the gateway bridge `weft_gwbridge` with NAT (nftables table
//    `ip weft`), and per sandbox that is on a non-internal network, a veth
//    `wg<hash>` into it carrying the sandbox's default route.
//
// What each device is for is written into its link alias (IFLA_IFALIAS), so a
// restarted agent can read back which endpoint, sandbox and gateway address a
// device belongs to without any state file. Callers serialize calls (see
// SerialQueue): the methods read, decide, then change.

import { rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { LocalEndpoint, NetworkSpec, RemotePeer } from '@weft/overlay';
import {
  CommandError,
  type IpAddr,
  type IpLink,
  isMissingDevice,
  NetlinkError,
  NetnsShell,
} from '../netlink/ip.js';
import { applyNetlinkOps, ipBatchLines, type NetlinkOp, nativeNetlink } from '../netlink/rtnetlink.js';
import {
  assertNetworkId,
  bridgeName,
  endpointVethName,
  gatewayBridgeName,
  gatewayVethName,
  intToIpv4,
  ipv4ToInt,
  macForIp,
  maxIfNameLength,
  nftTableName,
  parseCidr,
  parseIpv4,
  sandboxGatewayIfName,
  weftDeviceKind,
} from './names.js';
import { assertNetnsName, assertSandboxName } from './sandbox.js';

/** VXLAN over IPv4 adds 50 bytes: outer Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8. */
export const vxlanOverheadBytes = 50;

export interface PlumbingOptions {
  /** This host's underlay (VTEP) IPv4 address; must be configured on an interface in the host netns. */
  vtep: string;
  /**
   * `ip netns` name of the namespace that plays "the host" (bridges, vxlan,
   * gateway, NAT live there). Undefined = the agent's own namespace. Tests run
   * several hosts on one machine this way.
   */
  hostNetns?: string;
  /** Underlay MTU; default: the MTU of the interface that holds `vtep`. */
  underlayMtu?: number;
  /**
   * Subnet of the per-host gateway bridge that gives containers on
   * non-internal networks a NATed default route (Docker's docker_gwbridge uses
   * 172.18.0.0/16). null = no gateway bridge, no NAT, no default routes.
   */
  gatewaySubnet: string | null;
}

/** What a network's bridge alias records. */
export interface BridgeInfo {
  networkId: string;
  vni: number;
  internal: boolean;
  mtu: number;
}

/** What an endpoint veth's alias records. */
export interface EndpointVethInfo {
  ifName: string; // host-side veth
  networkId: string;
  endpointId: string;
  sandbox: string;
  containerIfName: string;
}

/** What a gateway veth's alias records. */
export interface GatewayVethInfo {
  ifName: string;
  sandbox: string;
  ip: string;
}

const endpointIdPattern = /^[A-Za-z0-9_.:-]{1,128}$/;
const macPattern = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;

function formatAlias(kind: string, fields: Record<string, string | number>): string {
  return [kind, ...Object.entries(fields).map(([k, v]) => `${k}=${v}`)].join(' ');
}

function parseAlias(alias: string | undefined, kind: string): Record<string, string> | undefined {
  if (alias === undefined) return undefined;
  const [head, ...rest] = alias.split(' ');
  if (head !== kind) return undefined;
  const fields: Record<string, string> = {};
  for (const token of rest) {
    const eq = token.indexOf('=');
    if (eq > 0) fields[token.slice(0, eq)] = token.slice(eq + 1);
  }
  return fields;
}

export function validateEndpoint(ep: LocalEndpoint): void {
  assertNetworkId(ep.networkId);
  assertSandboxName(ep.sandbox);
  if (!endpointIdPattern.test(ep.endpointId)) {
    throw new Error(`invalid endpoint id "${ep.endpointId}": use 1-128 characters from A-Z a-z 0-9 _ . : -`);
  }
  if (!/^[A-Za-z0-9_.-]+$/.test(ep.ifName) || ep.ifName.length > maxIfNameLength) {
    throw new Error(
      `invalid interface name "${ep.ifName}" for endpoint ${ep.endpointId}: 1-15 characters, no / or spaces`,
    );
  }
  if (ep.ifName === sandboxGatewayIfName) {
    throw new Error(`interface name "${ep.ifName}" is reserved for Weft's gateway interface; choose another`);
  }
  parseIpv4(ep.ip);
  if (!Number.isInteger(ep.prefixLength) || ep.prefixLength < 1 || ep.prefixLength > 32) {
    throw new Error(`invalid prefix length ${ep.prefixLength} for endpoint ${ep.endpointId}: expected 1..32`);
  }
  if (!macPattern.test(ep.mac)) {
    throw new Error(
      `invalid MAC "${ep.mac}" for endpoint ${ep.endpointId}: expected lowercase xx:xx:xx:xx:xx:xx`,
    );
  }
}

/** A remote endpoint as both data planes need it: network id, IPv4 addresses, lowercase MAC. */
export function validatePeer(peer: RemotePeer): void {
  assertNetworkId(peer.networkId);
  parseIpv4(peer.ip);
  parseIpv4(peer.vtep);
  if (!macPattern.test(peer.mac)) {
    throw new Error(
      `invalid MAC "${peer.mac}" for peer endpoint ${peer.endpointId}: expected lowercase xx:xx:xx:xx:xx:xx`,
    );
  }
}

export function validateNetwork(net: NetworkSpec): void {
  assertNetworkId(net.id);
  if (!Number.isInteger(net.vni) || net.vni < 1 || net.vni > 16777215) {
    throw new Error(`invalid VNI ${net.vni} for network "${net.name}": expected 1..16777215`);
  }
  if (net.mtu !== undefined && (!Number.isInteger(net.mtu) || net.mtu < 576 || net.mtu > 65535)) {
    throw new Error(`invalid MTU ${net.mtu} for network "${net.name}": expected 576..65535`);
  }
  for (const s of net.subnets) {
    parseCidr(s.subnet);
    parseIpv4(s.gateway);
  }
}

/** Weft's devices in the host namespace as one listing shows them. */
interface HostView {
  names: Set<string>;
  bridges: Map<string, BridgeInfo>;
  endpointVeths: (EndpointVethInfo & { alias: string })[];
  gatewayVeths: GatewayVethInfo[];
}

/**
 * What this Plumbing last listed in the host namespace, kept up to date with
 * what it made and deleted since. It lets attach skip the listing (a process
 * whose output grows with every container); whatever it gets wrong makes the
 * optimistic attach fail and the listing path run, except one thing it must
 * not miss: a gateway veth made by someone else (its address could be given
 * twice). Hence one Plumbing per host namespace, as the agent has.
 */
type KnownDevices = Pick<HostView, 'names' | 'bridges'> & {
  /** By host-side veth name. */
  gatewayVeths: Map<string, GatewayVethInfo>;
};

/**
 * Exactly one IPv4 address on an interface: `ip`/`prefixLength` replaces what
 * else `current` (the interface as last listed) has.
 */
function oneAddressOps(
  netns: string | undefined,
  current: IpAddr | undefined,
  ifName: string,
  ip: string,
  prefixLength: number,
): NetlinkOp[] {
  const stale: NetlinkOp[] = (current?.addr_info ?? [])
    .filter((a) => a.family === 'inet' && !(a.local === ip && a.prefixlen === prefixLength))
    .map((a) => ({ op: 'addrDelete', netns, dev: ifName, ip: a.local, prefixLength: a.prefixlen }));
  return [...stale, { op: 'addrReplace', netns, dev: ifName, ip, prefixLength }];
}

/** The interface's address, MTU (if given), up: a container's side of a veth. */
function containerSideOps(
  netns: string,
  current: IpAddr | undefined,
  ifName: string,
  address: { ip: string; prefixLength: number },
  mtu: number | undefined,
): NetlinkOp[] {
  return [
    ...oneAddressOps(netns, current, ifName, address.ip, address.prefixLength),
    { op: 'linkSet', netns, name: ifName, mtu, up: true },
  ];
}

/** Link settings that bringUp applies. */
interface LinkSettings {
  mtu?: number;
  alias?: string;
  master?: string;
}

/**
 * Deletes a link that may be gone already: the kernel removes a veth some
 * time after its peer's namespace was deleted, and deleting one end removes
 * the other.
 */
async function deleteLinkIfPresent(netns: string | undefined, name: string): Promise<void> {
  await applyNetlinkOps([{ op: 'linkDelete', netns, name }]).catch((e) => {
    if (!isMissingDevice(e)) throw e;
  });
}

/** Loopback up in the sandbox (a new namespace has it down). */
function loopbackUpOp(sandbox: string): NetlinkOp {
  return { op: 'linkSet', netns: sandbox, name: 'lo', up: true };
}

/** The gateway bridge's own address (first host of the subnet): containers' default gateway, a home for host services such as DNS. */
export function gatewayBridgeAddress(gatewaySubnet: string): string {
  return intToIpv4(parseCidr(gatewaySubnet).network + 1);
}

export class Plumbing {
  readonly host: NetnsShell;
  private underlayMtuCache: number | undefined;
  private ipv6Enabled: boolean | undefined;
  /** Undefined until the first listing of the host namespace. */
  private known: KnownDevices | undefined;
  /** Counter for unique names of attach's batch files. */
  private batchFiles = 0;
  private readonly gateway: { bridgeIp: string; prefixLength: number; first: number; last: number } | null;

  constructor(readonly options: PlumbingOptions) {
    parseIpv4(options.vtep);
    if (options.hostNetns !== undefined) assertNetnsName(options.hostNetns, 'hostNetns');
    this.host = new NetnsShell(options.hostNetns);
    this.underlayMtuCache = options.underlayMtu;
    if (options.gatewaySubnet === null) {
      this.gateway = null;
    } else {
      const { network, prefixLength } = parseCidr(options.gatewaySubnet);
      if (prefixLength > 29) {
        throw new Error(`gateway subnet ${options.gatewaySubnet} is too small: use /29 or larger`);
      }
      const broadcast = (network | (0xffffffff >>> prefixLength)) >>> 0;
      // .1 is the bridge (the containers' default gateway); containers get .2 upward.
      this.gateway = {
        bridgeIp: gatewayBridgeAddress(options.gatewaySubnet),
        prefixLength,
        first: network + 2,
        last: broadcast - 1,
      };
    }
  }

  /** The underlay MTU: the option, or the MTU of the interface that holds the VTEP address. */
  async underlayMtu(): Promise<number> {
    if (this.underlayMtuCache !== undefined) return this.underlayMtuCache;
    const addrs = await this.host.addresses();
    const owner = addrs.find((l) =>
      l.addr_info.some((a) => a.family === 'inet' && a.local === this.options.vtep),
    );
    if (owner === undefined) {
      throw new Error(
        `VTEP address ${this.options.vtep} is not configured on any interface in ${this.nsLabel()}; ` +
          'configure it or pass the right --vtep (or underlayMtu to skip detection)',
      );
    }
    this.underlayMtuCache = owner.mtu;
    return owner.mtu;
  }

  /** The network's MTU option, else underlay MTU − 50. */
  async overlayMtu(net: Pick<NetworkSpec, 'mtu'>): Promise<number> {
    return net.mtu ?? (await this.underlayMtu()) - vxlanOverheadBytes;
  }

  /** IP forwarding, gateway bridge and the NAT table. Idempotent. */
  async ensureHost(): Promise<void> {
    await this.underlayMtu(); // fail early on a wrong VTEP
    if (this.gateway === null) return;
    if ((await this.host.sysctl('net.ipv4.ip_forward')) !== '1') {
      await this.host.setSysctl('net.ipv4.ip_forward', '1');
    }
    if ((await this.host.link(gatewayBridgeName)) === undefined) {
      await this.host.ip(['link', 'add', gatewayBridgeName, 'type', 'bridge']);
    }
    // An address from an earlier gatewaySubnet would keep routing the old subnet here.
    const [current] = await this.host.ipJson<IpAddr>(['addr', 'show', 'dev', gatewayBridgeName]);
    const { bridgeIp, prefixLength } = this.gateway;
    await applyNetlinkOps(
      oneAddressOps(this.options.hostNetns, current, gatewayBridgeName, bridgeIp, prefixLength),
    );
    await this.bringUp(gatewayBridgeName, {});
    await this.applyNatTable();
  }

  /**
   * One nft transaction: create-if-missing, delete, recreate — so the table
   * always ends exactly as written here, whatever a previous version left.
   */
  private async applyNatTable(): Promise<void> {
    const subnet = this.options.gatewaySubnet!;
    const gw = gatewayBridgeName;
    const ruleset = [
      `table ip ${nftTableName} {}`,
      `delete table ip ${nftTableName}`,
      `table ip ${nftTableName} {`,
      '  chain postrouting {',
      '    type nat hook postrouting priority srcnat; policy accept;',
      `    ip saddr ${subnet} oifname != "${gw}" masquerade`,
      '  }',
      '  chain forward {',
      '    type filter hook forward priority filter; policy accept;',
      `    iifname "${gw}" oifname != "${gw}" accept`,
      // The outside may answer containers but not open connections to them.
      `    oifname "${gw}" ct state established,related accept`,
      `    oifname "${gw}" drop`,
      '  }',
      '}',
    ].join('\n');
    await this.host.exec(['nft', '-f', '-'], { input: ruleset + '\n' });
  }

  /** Removes every Weft device in the host namespace and the NAT table. Idempotent. */
  async teardownHost(): Promise<void> {
    const links = await this.weftLinks();
    // Veths first: deleting them also removes the container ends.
    const order = ['endpoint-veth', 'gateway-veth', 'vxlan', 'tap', 'bridge', 'gateway-bridge'];
    links.sort((a, b) => order.indexOf(weftDeviceKind(a.ifname)!) - order.indexOf(weftDeviceKind(b.ifname)!));
    await this.deleteLinks(links.map((l) => l.ifname));
    try {
      await this.host.exec(['nft', '-f', '-'], {
        input: `table ip ${nftTableName} {}\ndelete table ip ${nftTableName}\n`,
      });
    } catch (e) {
      // Without a gateway no table was ever made; a host without nft may then stop cleanly.
      const missingNft = e instanceof CommandError && (e.exitCode === null || /No such file/.test(e.stderr));
      if (!(this.gateway === null && missingNft)) throw e;
    }
  }

  /** Every link in the host namespace whose name Weft would have made. */
  async weftLinks(): Promise<IpLink[]> {
    return (await this.host.links()).filter((l) => weftDeviceKind(l.ifname) !== undefined);
  }

  /** Deletes the links (ignoring ones already gone) in one ip process. */
  async deleteLinks(names: string[]): Promise<void> {
    if (names.length === 0) return;
    for (let attempt = 1; ; attempt++) {
      const present = new Set((await this.host.links()).map((l) => l.ifname));
      try {
        await applyNetlinkOps(
          names
            .filter((n) => present.has(n))
            .map((n) => ({ op: 'linkDelete', netns: this.options.hostNetns, name: n })),
        );
        this.forget(names);
        return;
      } catch (e) {
        this.known = undefined; // some of them may be gone: list again before trusting it
        // A veth vanishes by itself when its container's namespace is deleted; if one went
        // between listing and deleting, the batch stopped there: list again, once.
        const vanished = isMissingDevice(e);
        if (!vanished || attempt >= 2) throw e;
      }
    }
  }

  /** Creates or updates the network's bridge; returns its name. */
  async ensureBridge(net: NetworkSpec): Promise<string> {
    validateNetwork(net);
    const name = bridgeName(net.id);
    const mtu = await this.overlayMtu(net);
    const existing = await this.host.link(name);
    if (existing !== undefined && existing.linkinfo?.info_kind !== 'bridge') {
      await this.host.ip(['link', 'delete', 'dev', name]); // a foreign kind under our name: replace it
    }
    if (existing === undefined || existing.linkinfo?.info_kind !== 'bridge') {
      await this.host.ip(['link', 'add', name, 'type', 'bridge']);
    }
    const alias = formatAlias('weft-net', { id: net.id, vni: net.vni, internal: net.internal ? 1 : 0, mtu });
    await this.bringUp(name, { mtu, alias });
    if (this.known) {
      this.known.names.add(name);
      this.known.bridges.set(net.id, { networkId: net.id, vni: net.vni, internal: net.internal, mtu });
    }
    return name;
  }

  /**
   * Applies link settings and sets the host-side device up, without IPv6
   * addresses: these are layer-2 devices, and a link-local address would make
   * the host chatter (router solicitations, MLD) into the overlay.
   */
  private async bringUp(ifName: string, settings: LinkSettings): Promise<void> {
    await this.ipv6Known();
    await applyNetlinkOps(this.upOps(ifName, settings));
  }

  /** The changes of bringUp (ipv6Known must have run), then the bridge port's isolation if given. */
  private upOps(ifName: string, settings: LinkSettings, isolatedPort?: boolean): NetlinkOp[] {
    const netns = this.options.hostNetns;
    return [
      { op: 'linkSet', netns, name: ifName, ...settings, up: true, addrGenModeNone: this.ipv6Enabled },
      // Port settings apply only once the device is in its bridge: a second message.
      ...(isolatedPort === undefined
        ? []
        : [{ op: 'bridgePortSet', netns, name: ifName, isolated: isolatedPort } as const]),
    ];
  }

  /** Whether IPv6 is on in the host namespace (read once): devices then need addrgenmode none. */
  private async ipv6Known(): Promise<void> {
    if (this.ipv6Enabled !== undefined) return;
    const disabled = await this.host
      .exec(['cat', '/proc/sys/net/ipv6/conf/all/disable_ipv6'])
      .catch(() => '1');
    this.ipv6Enabled = disabled.trim() === '0';
  }

  /** What the network's bridge says about the network, or undefined if there is no bridge. */
  async bridgeInfo(networkId: string): Promise<BridgeInfo | undefined> {
    const link = await this.host.link(bridgeName(networkId));
    const f = parseAlias(link?.ifalias, 'weft-net');
    if (f === undefined || f.id !== networkId) return undefined;
    return { networkId, vni: Number(f.vni), internal: f.internal === '1', mtu: Number(f.mtu) };
  }

  /** Ids of the networks whose bridges exist in the host namespace. */
  async networkIds(): Promise<string[]> {
    const ids: string[] = [];
    for (const l of await this.weftLinks()) {
      const f = weftDeviceKind(l.ifname) === 'bridge' ? parseAlias(l.ifalias, 'weft-net') : undefined;
      if (f?.id !== undefined && bridgeName(f.id) === l.ifname) ids.push(f.id);
    }
    return ids;
  }

  /** Puts a device (the vxlan or TAP) into the network's bridge with the overlay MTU, up. */
  async addToBridge(ifName: string, networkId: string): Promise<void> {
    const info = await this.requireBridge(networkId);
    await this.bringUp(ifName, { mtu: info.mtu, master: bridgeName(networkId) });
  }

  private async requireBridge(networkId: string): Promise<BridgeInfo> {
    const info = await this.bridgeInfo(networkId);
    if (info === undefined) {
      throw new Error(
        `network ${networkId.slice(0, 12)} is not set up on this host: call ensureNetwork first`,
      );
    }
    return info;
  }

  /**
   * Removes the network's endpoints (their veths), then `networkDevices`
   * (vxlan/TAP) and the bridge; drops gateway veths of sandboxes left with no
   * non-internal endpoint. Idempotent.
   */
  async removeNetwork(networkId: string, networkDevices: string[]): Promise<void> {
    assertNetworkId(networkId);
    const veths = (await this.endpointVeths()).filter((v) => v.networkId === networkId);
    await this.deleteLinks([...veths.map((v) => v.ifName), ...networkDevices, bridgeName(networkId)]);
    await this.pruneGatewayVeths();
  }

  /** Endpoint veths (host side) with what their aliases record. */
  async endpointVeths(): Promise<EndpointVethInfo[]> {
    return (await this.hostView()).endpointVeths;
  }

  async gatewayVeths(): Promise<GatewayVethInfo[]> {
    return (await this.hostView()).gatewayVeths;
  }

  /** Weft's devices in the host namespace, read back from one `ip -d link show`. */
  private async hostView(): Promise<HostView> {
    const view: HostView = { names: new Set(), bridges: new Map(), endpointVeths: [], gatewayVeths: [] };
    for (const l of await this.host.links()) {
      view.names.add(l.ifname);
      const kind = weftDeviceKind(l.ifname);
      if (kind === 'bridge') {
        const f = parseAlias(l.ifalias, 'weft-net');
        if (f?.id !== undefined && bridgeName(f.id) === l.ifname) {
          view.bridges.set(f.id, {
            networkId: f.id,
            vni: Number(f.vni),
            internal: f.internal === '1',
            mtu: Number(f.mtu),
          });
        }
      } else if (kind === 'endpoint-veth') {
        const f = parseAlias(l.ifalias, 'weft-ep');
        if (f?.net === undefined || f.ep === undefined || f.sandbox === undefined || f.if === undefined)
          continue;
        view.endpointVeths.push({
          ifName: l.ifname,
          networkId: f.net,
          endpointId: f.ep,
          sandbox: f.sandbox,
          containerIfName: f.if,
          alias: l.ifalias!,
        });
      } else if (kind === 'gateway-veth') {
        const f = parseAlias(l.ifalias, 'weft-gw');
        if (f?.sandbox === undefined || f.ip === undefined || !/^\d+\.\d+\.\d+\.\d+$/.test(f.ip)) continue;
        view.gatewayVeths.push({ ifName: l.ifname, sandbox: f.sandbox, ip: f.ip });
      }
    }
    this.known = {
      names: new Set(view.names),
      bridges: new Map(view.bridges),
      gatewayVeths: new Map(view.gatewayVeths.map((g) => [g.ifName, g])),
    };
    return view;
  }

  /** Drops deleted devices from what this Plumbing knows. */
  private forget(names: string[]): void {
    if (!this.known) return;
    for (const n of names) {
      this.known.names.delete(n);
      this.known.gatewayVeths.delete(n);
      for (const [id, b] of this.known.bridges)
        if (bridgeName(b.networkId) === n) this.known.bridges.delete(id);
    }
  }

  /**
   * Gateway veths (host side) with their sandboxes and addresses, from what
   * this Plumbing knows without listing when it can (see KnownDevices).
   */
  async knownGatewayVeths(): Promise<GatewayVethInfo[]> {
    if (this.known) return [...this.known.gatewayVeths.values()];
    return this.gatewayVeths();
  }

  /** The sandbox's interfaces with their addresses; a clear error if the namespace is missing. */
  private async sandboxView(sandboxName: string): Promise<Map<string, IpAddr>> {
    try {
      const links = await new NetnsShell(sandboxName).ipJson<IpAddr>(['-d', 'addr', 'show']);
      return new Map(links.map((l) => [l.ifname, l]));
    } catch (e) {
      if (e instanceof CommandError && /Cannot open network namespace|No such file/.test(e.stderr)) {
        throw new Error(`sandbox netns "${sandboxName}" does not exist: create it first (ip netns add)`);
      }
      throw e;
    }
  }

  /**
   * Connects the container: veth into the network's bridge, its IP/MAC/MTU in
   * the sandbox, and (non-internal network) the gateway veth and default route.
   * Idempotent; repairs a half-configured endpoint. Reads the host and the
   * sandbox once each and writes each in one batch where it can (every `ip`
   * run is a process).
   */
  async attach(ep: LocalEndpoint): Promise<void> {
    validateEndpoint(ep);
    await this.ipv6Known();
    if (this.gateway !== null) await this.underlayMtu(); // the gateway veth's MTU
    if (await this.attachFresh(ep)) return;
    await this.attachByListing(ep);
  }

  /**
   * The common case in one `ip` process (and a fork of it), with no
   * listing: a new endpoint into a sandbox with no Weft interface yet, on a
   * network whose bridge this Plumbing knows. Returns false, having changed
   * nothing that attachByListing cannot take over, when any of that is not so
   * (a device by that name exists, the sandbox is missing, …): the caller
   * then lists and repairs.
   */
  private async attachFresh(ep: LocalEndpoint): Promise<boolean> {
    const known = this.known;
    const net = known?.bridges.get(ep.networkId);
    if (known === undefined || net === undefined) return false;
    const veth = endpointVethName(ep.networkId, ep.endpointId);
    const withGateway = !net.internal && this.gateway !== null;
    const gwVeth = gatewayVethName(ep.sandbox);
    if (known.names.has(veth) || (withGateway && known.names.has(gwVeth))) return false;
    let gw: GatewayVethInfo | undefined;
    if (withGateway) {
      const ip = this.freeGatewayIp([...known.gatewayVeths.values()]);
      if (ip === undefined) return false; // perhaps only stale entries: list
      gw = { ifName: gwVeth, sandbox: ep.sandbox, ip };
    }
    const hostOps = [this.endpointVethAddOp(ep, net.mtu), ...this.endpointVethUpOps(ep, net.mtu)];
    const sandboxOps = this.containerInterfaceOps(ep, undefined, net.mtu);
    if (gw) {
      hostOps.push(...this.gatewayVethOps(gw, true));
      sandboxOps.push(...this.sandboxGatewayOps(ep.sandbox, undefined, gw.ip));
    }
    sandboxOps.push(loopbackUpOp(ep.sandbox));
    try {
      await this.applyHostThenSandbox(hostOps, ep.sandbox, sandboxOps);
      this.remember(veth, gw);
      return true;
    } catch (e) {
      if (e instanceof CommandError || e instanceof NetlinkError) return false;
      throw e;
    }
  }

  /**
   * Host changes, then the sandbox's. Natively that is one call on a worker
   * thread; with iproute2, the sandbox's lines go to an `ip -batch` that the
   * host's `ip` runs in the sandbox (`netns exec`, a fork of a small
   * process): one process spawned from the agent, whose large heap makes
   * every spawn dear.
   */
  private async applyHostThenSandbox(hostOps: NetlinkOp[], sandbox: string, sandboxOps: NetlinkOp[]) {
    if (nativeNetlink() !== null) return applyNetlinkOps([...hostOps, ...sandboxOps]);
    const file = join(tmpdir(), `weft-attach-${process.pid}-${++this.batchFiles}`);
    try {
      await writeFile(file, `${ipBatchLines(sandboxOps).join('\n')}\n`);
      await this.host.ipBatch([...ipBatchLines(hostOps), `netns exec ${sandbox} ip -batch "${file}"`]);
    } finally {
      await rm(file, { force: true });
    }
  }

  /** The listing path of attach: reads the host and the sandbox, then makes or repairs what is missing. */
  private async attachByListing(ep: LocalEndpoint): Promise<void> {
    const host = await this.hostView();
    const net = host.bridges.get(ep.networkId);
    if (net === undefined) {
      throw new Error(
        `network ${ep.networkId.slice(0, 12)} is not set up on this host: call ensureNetwork first`,
      );
    }
    const veth = endpointVethName(ep.networkId, ep.endpointId);
    let inside = await this.sandboxView(ep.sandbox);
    const alias = this.endpointAlias(ep);
    const ours =
      host.endpointVeths.some((v) => v.ifName === veth && v.alias === alias) &&
      inside.get(ep.ifName)?.address === ep.mac;
    const hostOps: NetlinkOp[] = [];
    if (!ours) {
      if (host.names.has(veth)) {
        // Half-made, or the endpoint moved: start over (this also removes the container end).
        await deleteLinkIfPresent(this.options.hostNetns, veth);
        inside = await this.sandboxView(ep.sandbox);
      }
      if (inside.has(ep.ifName)) {
        throw new Error(
          `sandbox ${ep.sandbox} already has an interface ${ep.ifName} not made by Weft for endpoint ` +
            `${ep.endpointId}; choose another interface name or remove it`,
        );
      }
      hostOps.push(this.endpointVethAddOp(ep, net.mtu));
      inside.delete(ep.ifName); // fresh: no addresses to clean up
    }
    hostOps.push(...this.endpointVethUpOps(ep, net.mtu));
    const sandboxOps = this.containerInterfaceOps(ep, inside.get(ep.ifName), net.mtu);
    let gw: GatewayVethInfo | undefined;
    if (!net.internal && this.gateway !== null) {
      const g = await this.prepareGatewayVeth(ep.sandbox, host, inside);
      gw = g.info;
      hostOps.push(...this.gatewayVethOps(gw, g.create));
      sandboxOps.push(...this.sandboxGatewayOps(ep.sandbox, inside.get(sandboxGatewayIfName), gw.ip));
    }
    await applyNetlinkOps(hostOps);
    this.remember(veth, gw);
    await applyNetlinkOps([...sandboxOps, loopbackUpOp(ep.sandbox)]);
  }

  /**
   * Attaches each endpoint, going on past failures: one container whose
   * namespace is gone must not leave the others unwired. Returns the
   * failures; the caller finishes its work, then calls throwIfFailed.
   */
  async attachEach(endpoints: LocalEndpoint[]): Promise<Error[]> {
    const failures: Error[] = [];
    for (const ep of endpoints) {
      try {
        await this.attach(ep);
      } catch (e) {
        failures.push(
          new Error(`endpoint ${ep.endpointId} (sandbox ${ep.sandbox}): ${(e as Error).message}`, {
            cause: e,
          }),
        );
      }
    }
    return failures;
  }

  /** Removes the endpoint's veth (and the sandbox's gateway veth if no longer needed). Idempotent. */
  async detach(ep: Pick<LocalEndpoint, 'networkId' | 'endpointId' | 'sandbox' | 'ifName'>): Promise<void> {
    assertNetworkId(ep.networkId);
    await this.deleteLinks([endpointVethName(ep.networkId, ep.endpointId)]);
    await this.pruneGatewayVeths();
  }

  /** Records devices just made in what this Plumbing knows. */
  private remember(endpointVeth: string, gw: GatewayVethInfo | undefined): void {
    if (!this.known) return;
    this.known.names.add(endpointVeth);
    if (gw) {
      this.known.names.add(gw.ifName);
      this.known.gatewayVeths.set(gw.ifName, gw);
    }
  }

  private endpointAlias(ep: LocalEndpoint): string {
    return formatAlias('weft-ep', {
      net: ep.networkId,
      ep: ep.endpointId,
      sandbox: ep.sandbox,
      if: ep.ifName,
    });
  }

  /**
   * The endpoint's veth pair. The container end is created directly in the
   * sandbox, so container names (eth0…) never collide in the host namespace.
   */
  private endpointVethAddOp(ep: LocalEndpoint, mtu: number): NetlinkOp {
    return this.vethIntoSandboxOp(
      endpointVethName(ep.networkId, ep.endpointId),
      ep.sandbox,
      ep.ifName,
      ep.mac,
      mtu,
    );
  }

  /** A veth pair from the host namespace into `sandbox` (peer named `peerName` with `peerMac`), both ends at `mtu`. */
  private vethIntoSandboxOp(
    name: string,
    sandbox: string,
    peerName: string,
    peerMac: string,
    mtu: number,
  ): NetlinkOp {
    return {
      op: 'vethAdd',
      netns: this.options.hostNetns,
      name,
      mtu,
      peerName,
      peerMac,
      peerMtu: mtu,
      peerNetns: sandbox,
    };
  }

  private endpointVethUpOps(ep: LocalEndpoint, mtu: number): NetlinkOp[] {
    return this.upOps(endpointVethName(ep.networkId, ep.endpointId), {
      mtu,
      alias: this.endpointAlias(ep),
      master: bridgeName(ep.networkId),
    });
  }

  /** The container's interface in its sandbox: its address, MTU, up. */
  private containerInterfaceOps(ep: LocalEndpoint, current: IpAddr | undefined, mtu: number): NetlinkOp[] {
    return containerSideOps(
      ep.sandbox,
      current,
      ep.ifName,
      { ip: ep.ip, prefixLength: ep.prefixLength },
      mtu,
    );
  }

  /**
   * Host-side lines of a sandbox's gateway veth: made (with `create`), in the
   * gateway bridge, up, isolated (ports reach the bridge, the host and NAT,
   * but not each other: containers of different networks must not meet on
   * the gateway bridge).
   */
  private gatewayVethOps(gw: GatewayVethInfo, create: boolean): NetlinkOp[] {
    const mtu = this.underlayMtuCache!; // known: ensureHost ran before any attach
    const add = this.vethIntoSandboxOp(gw.ifName, gw.sandbox, sandboxGatewayIfName, macForIp(gw.ip), mtu);
    const alias = create ? formatAlias('weft-gw', { sandbox: gw.sandbox, ip: gw.ip }) : undefined;
    return [...(create ? [add] : []), ...this.upOps(gw.ifName, { alias, master: gatewayBridgeName }, true)];
  }

  /** Sandbox-side changes of the gateway veth: its address and the default route. */
  private sandboxGatewayOps(sandbox: string, current: IpAddr | undefined, ip: string): NetlinkOp[] {
    const gw = this.gateway!;
    return [
      ...containerSideOps(
        sandbox,
        current,
        sandboxGatewayIfName,
        { ip, prefixLength: gw.prefixLength },
        undefined,
      ),
      { op: 'routeReplaceDefault', netns: sandbox, dev: sandboxGatewayIfName, gateway: gw.bridgeIp },
    ];
  }

  /**
   * The sandbox's gateway veth as it should be: the existing one if usable,
   * else a new address (broken leftovers are deleted here) to make it with.
   */
  private async prepareGatewayVeth(
    sandboxName: string,
    host: HostView,
    inside: Map<string, IpAddr>,
  ): Promise<{ info: GatewayVethInfo; create: boolean }> {
    const veth = gatewayVethName(sandboxName);
    const existing = host.gatewayVeths.find((g) => g.ifName === veth);
    if (
      existing !== undefined &&
      existing.sandbox === sandboxName &&
      inside.has(sandboxGatewayIfName) &&
      this.inGatewaySubnet(existing.ip)
    ) {
      return { info: existing, create: false };
    }
    if (host.names.has(veth)) await deleteLinkIfPresent(this.options.hostNetns, veth);
    if (inside.has(sandboxGatewayIfName)) {
      // Usually gone with its host side just now; if it belonged to another pair, remove it.
      await deleteLinkIfPresent(sandboxName, sandboxGatewayIfName);
    }
    inside.delete(sandboxGatewayIfName);
    const ip = this.freeGatewayIp(host.gatewayVeths.filter((g) => g.ifName !== veth));
    if (ip === undefined) {
      throw new Error(
        `gateway subnet ${this.options.gatewaySubnet} is full (${host.gatewayVeths.length} containers); configure a larger gatewaySubnet`,
      );
    }
    return { info: { ifName: veth, sandbox: sandboxName, ip }, create: true };
  }

  /** Whether an address recorded on a gateway veth belongs to the configured subnet (it changes with the config). */
  private inGatewaySubnet(ip: string): boolean {
    const n = ipv4ToInt(ip);
    return n >= this.gateway!.first && n <= this.gateway!.last;
  }

  /** Lowest address of the gateway subnet no gateway veth in `inUse` records, or undefined if none is left. */
  private freeGatewayIp(inUse: GatewayVethInfo[]): string | undefined {
    const gw = this.gateway!;
    const used = new Set(inUse.map((g) => ipv4ToInt(g.ip)));
    for (let n = gw.first; n <= gw.last; n++) if (!used.has(n)) return intToIpv4(n);
    return undefined;
  }

  /** Deletes gateway veths whose sandbox has no endpoint on a non-internal network left. */
  async pruneGatewayVeths(): Promise<void> {
    const host = await this.hostView();
    const needed = new Set<string>();
    if (this.gateway !== null) {
      for (const v of host.endpointVeths) {
        // An endpoint whose bridge is gone counts as internal: nothing routes through it.
        if (host.bridges.get(v.networkId)?.internal === false) needed.add(v.sandbox);
      }
    }
    await this.deleteLinks(host.gatewayVeths.filter((g) => !needed.has(g.sandbox)).map((g) => g.ifName));
  }

  /**
   * Deletes every Weft device not in `keep` (stale networks, endpoints and
   * gateway veths after a restart) and gateway veths no sandbox needs.
   */
  async removeStaleDevices(keep: Set<string>): Promise<string[]> {
    if (this.gateway !== null) keep.add(gatewayBridgeName);
    const stale = (await this.weftLinks()).map((l) => l.ifname).filter((n) => !keep.has(n));
    await this.deleteLinks(stale);
    return stale;
  }

  /** The device names a state needs besides per-network extras (vxlan/TAP) and gateway veths. */
  static expectedDevices(
    networks: NetworkSpec[],
    endpoints: LocalEndpoint[],
    perNetwork: (networkId: string) => string[],
  ): Set<string> {
    const keep = new Set<string>();
    const internal = new Map(networks.map((n) => [n.id, n.internal]));
    for (const n of networks) {
      keep.add(bridgeName(n.id));
      for (const d of perNetwork(n.id)) keep.add(d);
    }
    for (const e of endpoints) {
      if (!internal.has(e.networkId)) continue; // an endpoint of a network not in the state is stale
      keep.add(endpointVethName(e.networkId, e.endpointId));
      if (internal.get(e.networkId) === false) keep.add(gatewayVethName(e.sandbox));
    }
    return keep;
  }

  private nsLabel(): string {
    return this.options.hostNetns === undefined
      ? "the agent's network namespace"
      : `netns ${this.options.hostNetns}`;
  }
}

/** Throws one error listing every failure of a reconcile that otherwise went through. */
export function throwIfFailed(failures: Error[], what = 'reconcile'): void {
  if (failures.length === 0) return;
  throw new AggregateError(
    failures,
    `${what} finished with ${failures.length} failure(s); everything else was applied: ` +
      failures.map((f) => f.message).join('; '),
  );
}
