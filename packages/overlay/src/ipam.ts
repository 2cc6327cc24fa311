// IP address management: subnet validation and automatic choice from the
// default address pools, and address selection inside a network. Which
// addresses are taken lives in the store (ipam/<network>/<ip>, create-only),
// so this module is pure: it plans, the manager commits.
import { invalid, OverlayError } from './errors.js';
import {
  blockSize,
  type Cidr,
  cidrEnd,
  containsCidr,
  containsIp,
  formatCidr,
  formatIp,
  overlaps,
  parseCidr,
  parseIp,
} from './ipv4.js';

/** A block carved into subnets of `size` bits for networks created without a subnet (Docker's default-address-pools). */
export interface AddressPool {
  base: string;
  size: number;
}

/** Docker's default for overlay (swarm-scope) networks. Tests always pass their own pools. */
export const defaultAddressPools: readonly AddressPool[] = [{ base: '10.0.0.0/8', size: 24 }];

export interface IpamSubnetRequest {
  subnet?: string;
  gateway?: string;
  ipRange?: string;
  /** Addresses kept out of allocation, by name (Docker's --aux-address name=ip). */
  auxAddresses?: Record<string, string>;
}

/** A validated subnet as stored in the network record. */
export interface IpamSubnet {
  subnet: string;
  gateway: string;
  ipRange?: string;
  auxAddresses: Record<string, string>;
}

export interface ExistingSubnet {
  networkName: string;
  subnet: string;
}

/** At most this many aux addresses per network: they live in the network record, and a record is one key. */
const maxAuxAddresses = 256;

export function validatePools(pools: readonly AddressPool[]): Cidr[] {
  return pools.map((p, i) => {
    const c = parseCidr(p.base, `default address pool #${i + 1}`);
    if (!Number.isInteger(p.size) || p.size < c.prefixLength || p.size > 30) {
      throw invalid(
        `default address pool ${p.base}: size ${p.size} must be an integer between ${c.prefixLength} and 30`,
      );
    }
    return c;
  });
}

/**
 * Validates the requested subnets (or picks one from the pools when none is
 * given) so that no subnet overlaps another, in this network or any other.
 */
export function planSubnets(
  requests: readonly IpamSubnetRequest[],
  existing: readonly ExistingSubnet[],
  pools: readonly AddressPool[],
): IpamSubnet[] {
  const taken = existing.map((e) => ({ ...e, cidr: parseCidr(e.subnet, 'stored subnet') }));
  const out: IpamSubnet[] = [];
  const check = (cidr: Cidr, text: string) => {
    for (const t of taken) {
      if (overlaps(cidr, t.cidr)) {
        const whose = t.networkName
          ? `subnet ${t.subnet} of network "${t.networkName}"`
          : `subnet ${t.subnet} of this request`;
        throw new OverlayError('conflict', `subnet ${text} overlaps ${whose}; choose a free range`);
      }
    }
  };
  if (requests.length === 0) requests = [{}];
  for (const req of requests) {
    let cidr: Cidr;
    if (req.subnet === undefined) {
      if (req.gateway !== undefined || req.ipRange !== undefined || req.auxAddresses !== undefined) {
        throw invalid('gateway, ip-range and aux-addresses need an explicit subnet');
      }
      cidr = pickFromPools(
        pools,
        taken.map((t) => t.cidr),
      );
    } else {
      cidr = parseCidr(req.subnet, 'subnet');
      if (cidr.prefixLength > 30)
        throw invalid(`subnet ${req.subnet} is too small: a network needs at least a /30`);
      check(cidr, req.subnet);
    }
    const subnetText = formatCidr(cidr);
    const network = cidr.base;
    const broadcast = cidrEnd(cidr) - 1;
    const insideUsable = (ip: number) => containsIp(cidr, ip) && ip !== network && ip !== broadcast;

    let gateway = network + 1;
    if (req.gateway !== undefined) {
      const gw = parseIp(req.gateway);
      if (gw === undefined) throw invalid(`gateway "${req.gateway}" is not a valid IPv4 address`);
      if (!insideUsable(gw)) {
        throw invalid(`gateway ${req.gateway} is not a usable address of subnet ${subnetText}`);
      }
      gateway = gw;
    }
    let ipRange: Cidr | undefined;
    if (req.ipRange !== undefined) {
      ipRange = parseCidr(req.ipRange, 'ip-range');
      if (!containsCidr(cidr, ipRange))
        throw invalid(`ip-range ${req.ipRange} is not inside subnet ${subnetText}`);
    }
    const aux: Record<string, string> = {};
    const auxEntries = Object.entries(req.auxAddresses ?? {});
    if (auxEntries.length > maxAuxAddresses)
      throw invalid(`at most ${maxAuxAddresses} aux-addresses per subnet`);
    const seen = new Set<number>([gateway]);
    for (const [name, text] of auxEntries) {
      const ip = parseIp(text);
      if (ip === undefined) throw invalid(`aux-address ${name}=${text} is not a valid IPv4 address`);
      if (!insideUsable(ip))
        throw invalid(`aux-address ${name}=${text} is not a usable address of subnet ${subnetText}`);
      if (seen.has(ip))
        throw invalid(`aux-address ${name}=${text} is already the gateway or another aux-address`);
      seen.add(ip);
      aux[name] = formatIp(ip);
    }
    out.push({
      subnet: subnetText,
      gateway: formatIp(gateway),
      ...(ipRange ? { ipRange: formatCidr(ipRange) } : {}),
      auxAddresses: aux,
    });
    taken.push({ networkName: '', subnet: subnetText, cidr });
  }
  return out;
}

function pickFromPools(pools: readonly AddressPool[], taken: Cidr[]): Cidr {
  const bases = validatePools(pools);
  for (let i = 0; i < bases.length; i++) {
    const size = blockSize(pools[i].size);
    const end = cidrEnd(bases[i]);
    for (let base = bases[i].base; base < end; ) {
      const candidate = { base, prefixLength: pools[i].size };
      // Skip past whatever overlaps, instead of stepping one block at a time through a big network.
      const hit = taken.find((t) => overlaps(candidate, t));
      if (!hit) return candidate;
      base = Math.max(base + size, Math.ceil(cidrEnd(hit) / size) * size);
    }
  }
  const list = pools.map((p) => `${p.base} (/${p.size})`).join(', ');
  throw new OverlayError(
    'exhausted',
    `no free subnet left in the default address pools ${list}; pass --subnet or configure more pools`,
  );
}

/** Address selection inside one network. */
export class NetworkAddressSpace {
  private readonly subnets: { cidr: Cidr; range: Cidr; reserved: Set<number>; gateway: number }[];

  constructor(
    readonly networkName: string,
    subnets: readonly IpamSubnet[],
  ) {
    this.subnets = subnets.map((s) => {
      const cidr = parseCidr(s.subnet, 'stored subnet');
      const gateway = parseIp(s.gateway) as number;
      const reserved = new Set<number>([cidr.base, cidrEnd(cidr) - 1, gateway]);
      for (const ip of Object.values(s.auxAddresses)) reserved.add(parseIp(ip) as number);
      return { cidr, range: s.ipRange ? parseCidr(s.ipRange, 'stored ip-range') : cidr, reserved, gateway };
    });
  }

  /** Subnet info for an address of this network. */
  subnetOf(ip: number): { prefixLength: number; gateway: string } | undefined {
    const s = this.subnets.find((x) => containsIp(x.cidr, ip));
    return s ? { prefixLength: s.cidr.prefixLength, gateway: formatIp(s.gateway) } : undefined;
  }

  /** Throws unless `text` is an address this network may hand out. */
  checkRequested(text: string): number {
    const ip = parseIp(text);
    if (ip === undefined) throw invalid(`requested IP "${text}" is not a valid IPv4 address`);
    const s = this.subnets.find((x) => containsIp(x.cidr, ip));
    if (!s) {
      const list = this.subnets.map((x) => formatCidr(x.cidr)).join(', ');
      throw invalid(`requested IP ${text} is not in network "${this.networkName}" (subnets ${list})`);
    }
    if (s.reserved.has(ip)) {
      throw new OverlayError(
        'conflict',
        `requested IP ${text} is reserved in network "${this.networkName}" (network, broadcast, gateway or aux address)`,
      );
    }
    return ip;
  }

  /**
   * Up to `count` free addresses in allocation order (subnets in order, ip-range
   * first to last), skipping `taken`.
   */
  freeAddresses(taken: ReadonlySet<number>, count: number): number[] {
    const out: number[] = [];
    for (const s of this.subnets) {
      const end = cidrEnd(s.range);
      for (let ip = s.range.base; ip < end && out.length < count; ip++) {
        if (!s.reserved.has(ip) && !taken.has(ip)) out.push(ip);
      }
      if (out.length >= count) break;
    }
    return out;
  }

  exhaustedError(): OverlayError {
    const list = this.subnets.map((x) => formatCidr(x.range)).join(', ');
    return new OverlayError(
      'exhausted',
      `no free IP address left in network "${this.networkName}" (${list}); detach endpoints or add a subnet`,
    );
  }
}
