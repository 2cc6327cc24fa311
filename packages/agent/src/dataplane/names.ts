// Deterministic device names. A restarted agent recomputes the same names from
// the same network and endpoint ids, so it finds and reconciles what it made
// before instead of creating duplicates. Linux caps names at 15 characters.
//
//   wb-<net8>      the network's bridge (both data planes)
//   wx-<net8>      the network's kernel vxlan device
//   wt-<net8>      the network's TAP device (userspace data plane)
//   wv<hash12>     host side of an endpoint's veth (hash of network id + endpoint id)
//   wg<hash12>     host side of a sandbox's veth into the gateway bridge (hash of sandbox name)
//   weft_gwbridge  the per-host gateway bridge (NAT out of the overlay)

import { createHash } from 'node:crypto';

export const maxIfNameLength = 15;
export const gatewayBridgeName = 'weft_gwbridge';
/** Name of the gateway veth inside a container's namespace. */
export const sandboxGatewayIfName = 'weftgw0';
/** Weft's nftables table (family ip) in every namespace it configures. */
export const nftTableName = 'weft';

const networkIdPattern = /^[0-9a-f]{64}$/;

export function assertNetworkId(networkId: string): void {
  if (!networkIdPattern.test(networkId)) {
    throw new Error(`invalid network id "${networkId}": expected 64 lowercase hex characters`);
  }
}

function shortNetworkId(networkId: string): string {
  assertNetworkId(networkId);
  return networkId.slice(0, 8);
}

function hash12(...parts: string[]): string {
  return createHash('sha256').update(parts.join('\0')).digest('hex').slice(0, 12);
}

export function bridgeName(networkId: string): string {
  return `wb-${shortNetworkId(networkId)}`;
}

export function vxlanName(networkId: string): string {
  return `wx-${shortNetworkId(networkId)}`;
}

export function tapName(networkId: string): string {
  return `wt-${shortNetworkId(networkId)}`;
}

export function endpointVethName(networkId: string, endpointId: string): string {
  if (endpointId === '') throw new Error('endpoint id must not be empty');
  return `wv${hash12(networkId, endpointId)}`;
}

export function gatewayVethName(sandbox: string): string {
  if (sandbox === '') throw new Error('sandbox (netns name) must not be empty');
  return `wg${hash12(sandbox)}`;
}

export type WeftDeviceKind = 'bridge' | 'vxlan' | 'tap' | 'endpoint-veth' | 'gateway-veth' | 'gateway-bridge';

const kindPatterns: [WeftDeviceKind, RegExp][] = [
  ['bridge', /^wb-[0-9a-f]{8}$/],
  ['vxlan', /^wx-[0-9a-f]{8}$/],
  ['tap', /^wt-[0-9a-f]{8}$/],
  ['endpoint-veth', /^wv[0-9a-f]{12}$/],
  ['gateway-veth', /^wg[0-9a-f]{12}$/],
  ['gateway-bridge', /^weft_gwbridge$/],
];

/** Which Weft device this name is, or undefined for anything not made by Weft. */
export function weftDeviceKind(ifName: string): WeftDeviceKind | undefined {
  for (const [kind, pattern] of kindPatterns) if (pattern.test(ifName)) return kind;
  return undefined;
}

/** Docker's convention: 02:42 followed by the four bytes of the IPv4 address. */
export function macForIp(ip: string): string {
  const bytes = parseIpv4(ip);
  return ['02', '42', ...bytes.map((b) => b.toString(16).padStart(2, '0'))].join(':');
}

export function parseIpv4(ip: string): number[] {
  const parts = ip.split('.');
  const bytes = parts.map((p) => (/^\d{1,3}$/.test(p) ? Number(p) : Number.NaN));
  if (bytes.length !== 4 || bytes.some((b) => Number.isNaN(b) || b > 255)) {
    throw new Error(`invalid IPv4 address "${ip}"`);
  }
  return bytes;
}

export function ipv4ToInt(ip: string): number {
  const [a, b, c, d] = parseIpv4(ip);
  return ((a! << 24) | (b! << 16) | (c! << 8) | d!) >>> 0;
}

export function intToIpv4(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

/** Parses "a.b.c.d/len" into network address (as int) and prefix length. */
export function parseCidr(cidr: string): { network: number; prefixLength: number } {
  const [ip, len, ...rest] = cidr.split('/');
  const prefixLength = Number(len);
  if (rest.length > 0 || ip === undefined || !/^\d{1,2}$/.test(len ?? '') || prefixLength > 32) {
    throw new Error(`invalid IPv4 CIDR "${cidr}": expected a.b.c.d/len`);
  }
  const mask = prefixLength === 0 ? 0 : (0xffffffff << (32 - prefixLength)) >>> 0;
  return { network: (ipv4ToInt(ip) & mask) >>> 0, prefixLength };
}
