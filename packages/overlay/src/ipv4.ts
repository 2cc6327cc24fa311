// IPv4 addresses and CIDR blocks as 32-bit unsigned numbers.
import { invalid } from './errors.js';

export interface Cidr {
  /** Network address as an unsigned 32-bit number. */
  base: number;
  prefixLength: number;
}

const octet = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)$/;

/** Parses dotted-quad IPv4; undefined if malformed. */
export function parseIp(text: string): number | undefined {
  const parts = text.split('.');
  if (parts.length !== 4 || !parts.every((p) => octet.test(p))) return undefined;
  return parts.reduce((acc, p) => acc * 256 + Number(p), 0);
}

export function formatIp(ip: number): string {
  return [ip >>> 24, (ip >>> 16) & 255, (ip >>> 8) & 255, ip & 255].join('.');
}

export function blockSize(prefixLength: number): number {
  return 2 ** (32 - prefixLength);
}

/** First address after the block. */
export function cidrEnd(c: Cidr): number {
  return c.base + blockSize(c.prefixLength);
}

export function formatCidr(c: Cidr): string {
  return `${formatIp(c.base)}/${c.prefixLength}`;
}

/**
 * Parses "a.b.c.d/len" and insists the host bits are zero, like Docker
 * ("198.18.0.5/24" is refused with the correct form in the message).
 */
export function parseCidr(text: string, what: string): Cidr {
  const m = /^([^/]+)\/(\d{1,2})$/.exec(text);
  const ip = m ? parseIp(m[1]) : undefined;
  const prefixLength = m ? Number(m[2]) : Number.NaN;
  if (ip === undefined || !(prefixLength >= 0 && prefixLength <= 32)) {
    if (text.includes(':'))
      throw invalid(`${what} "${text}": IPv6 is not supported, use an IPv4 CIDR such as 198.18.0.0/24`);
    throw invalid(`${what} "${text}" is not a valid IPv4 CIDR (expected a.b.c.d/len, e.g. 198.18.0.0/24)`);
  }
  const size = blockSize(prefixLength);
  const base = Math.floor(ip / size) * size;
  if (base !== ip) {
    throw invalid(`${what} "${text}" has host bits set; did you mean ${formatIp(base)}/${prefixLength}?`);
  }
  return { base, prefixLength };
}

export function containsIp(c: Cidr, ip: number): boolean {
  return ip >= c.base && ip < cidrEnd(c);
}

export function overlaps(a: Cidr, b: Cidr): boolean {
  return a.base < cidrEnd(b) && b.base < cidrEnd(a);
}

/** `inner` lies entirely inside `outer`. */
export function containsCidr(outer: Cidr, inner: Cidr): boolean {
  return inner.base >= outer.base && cidrEnd(inner) <= cidrEnd(outer);
}

/** MAC derived from the IP like Docker: 02:42 + the address's four bytes. */
export function macForIp(ip: number): string {
  const bytes = [0x02, 0x42, ip >>> 24, (ip >>> 16) & 255, (ip >>> 8) & 255, ip & 255];
  return bytes.map((b) => b.toString(16).padStart(2, '0')).join(':');
}
