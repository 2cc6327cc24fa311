// Names the embedded DNS server answers, built once per local view (never a
// store round trip per query). Visibility follows Docker: a container sees
// the names (container names and aliases) on the networks it is attached to,
// bare or as `name.network`; the asker is identified by its source address.
import { containsIp, parseCidr, parseIp } from './ipv4.js';
import type { EndpointRecord } from './records.js';
import type { ClusterView } from './view.js';

/** Result of a lookup: records, a definite "no such name", or not ours (forward upstream). */
export type DnsLookup<T> = { found: T[] } | 'nxdomain' | undefined;

export interface DnsResolver {
  /** IPv4 addresses for `name` as seen by the container at `clientIp`. */
  lookupName(clientIp: string, name: string): DnsLookup<string>;
  /** Names for `ip` (reverse lookup) as seen by the container at `clientIp`. */
  lookupAddress(clientIp: string, ip: string): DnsLookup<string>;
}

interface NetworkNames {
  id: string;
  name: string;
  /** Lower-case name or alias → addresses, in endpoint order. */
  names: Map<string, string[]>;
  subnets: ReturnType<typeof parseCidr>[];
}

export class DnsTable implements DnsResolver {
  private readonly byIp = new Map<string, EndpointRecord>();
  private readonly networks = new Map<string, NetworkNames>();
  /** Networks of each container (host + container/sandbox), so a container sees all its networks. */
  private readonly containerNetworks = new Map<string, string[]>();

  constructor(view: ClusterView) {
    for (const { record: n } of view.networks.values()) {
      this.networks.set(n.id, {
        id: n.id,
        name: n.name.toLowerCase(),
        names: new Map(),
        subnets: n.ipam.config.map((c) => parseCidr(c.subnet, 'stored subnet')),
      });
    }
    const endpoints = [...view.endpoints.values()]
      .map((e) => e.record)
      .sort((a, b) => (a.created < b.created ? -1 : a.created > b.created ? 1 : 0));
    for (const ep of endpoints) {
      const net = this.networks.get(ep.networkId);
      // Endpoints of dead hosts stop resolving at once, before they are reclaimed.
      if (!net || !view.isLive(ep)) continue;
      this.byIp.set(ep.ip, ep);
      for (const name of new Set([ep.name, ...ep.aliases].map((n) => n.toLowerCase()))) {
        const list = net.names.get(name) ?? [];
        list.push(ep.ip);
        net.names.set(name, list);
      }
      const group = containerKey(ep);
      const nets = this.containerNetworks.get(group) ?? [];
      if (!nets.includes(ep.networkId)) nets.push(ep.networkId);
      this.containerNetworks.set(group, nets);
    }
  }

  lookupName(clientIp: string, qname: string): DnsLookup<string> {
    const nets = this.networksOf(clientIp);
    if (nets.length === 0) return undefined;
    const name = normalize(qname);
    for (const n of nets) {
      const ips = n.names.get(name);
      if (ips) return { found: [...ips] };
    }
    for (const n of nets) {
      if (name.endsWith(`.${n.name}`)) {
        const ips = n.names.get(name.slice(0, -n.name.length - 1));
        return ips ? { found: [...ips] } : 'nxdomain';
      }
    }
    return undefined;
  }

  lookupAddress(clientIp: string, ip: string): DnsLookup<string> {
    const nets = this.networksOf(clientIp);
    const target = this.byIp.get(ip);
    if (target) {
      const n = nets.find((x) => x.id === target.networkId);
      if (n) return { found: [`${target.name}.${n.name}`] };
    }
    const addr = parseIp(ip);
    if (addr !== undefined && nets.some((n) => n.subnets.some((s) => containsIp(s, addr)))) return 'nxdomain';
    return undefined;
  }

  /** The asker's networks, the one it asked from first. */
  private networksOf(clientIp: string): NetworkNames[] {
    const asker = this.byIp.get(clientIp);
    if (!asker) return [];
    const ids = this.containerNetworks.get(containerKey(asker)) ?? [asker.networkId];
    const ordered = [asker.networkId, ...ids.filter((id) => id !== asker.networkId)];
    return ordered.map((id) => this.networks.get(id)).filter((n): n is NetworkNames => !!n);
  }
}

function containerKey(ep: EndpointRecord): string {
  return `${ep.host}\u0000${ep.container ?? ep.sandbox ?? ep.id}`;
}

function normalize(name: string): string {
  return name.toLowerCase().replace(/\.$/, '');
}
