// Raft member identity. A member's Raft id is its canonical raft listen
// address ("127.0.0.1:7001"), like etcd deriving member ids from peer URLs:
// every initial member can compute the same initial configuration from the
// same --peers list without first talking to anyone, so a cluster forms as
// soon as a quorum is up, and a member's address is always known from the
// configuration alone. The human name (--id) travels as metadata.
import { isIP } from 'node:net';

export class AddressError extends Error {
  constructor(input: string, problem: string) {
    super(`invalid address ${JSON.stringify(input)}: ${problem} (expected HOST:PORT, e.g. 127.0.0.1:7001)`);
    this.name = 'AddressError';
  }
}

export interface HostPort {
  host: string;
  port: number;
}

/**
 * Parses "host:port" or "[v6]:port"; the host must be an IP literal or
 * "localhost". Port 0 ("any free port") only with allowAnyPort.
 */
export function parseHostPort(input: string, options: { allowAnyPort?: boolean } = {}): HostPort {
  const text = input.trim();
  let host: string;
  let portText: string;
  const v6 = /^\[([^\]]+)\]:(\d+)$/.exec(text);
  if (v6) {
    host = v6[1]!;
    portText = v6[2]!;
  } else {
    const colon = text.lastIndexOf(':');
    if (colon <= 0) throw new AddressError(input, 'no port');
    host = text.slice(0, colon);
    portText = text.slice(colon + 1);
  }
  if (!/^\d+$/.test(portText))
    throw new AddressError(input, `port ${JSON.stringify(portText)} is not a number`);
  const port = Number(portText);
  const min = options.allowAnyPort ? 0 : 1;
  if (port < min || port > 65535) throw new AddressError(input, `port ${port} is out of range ${min}..65535`);
  if (host === 'localhost') host = '127.0.0.1';
  if (isIP(host) === 0) throw new AddressError(input, `host ${JSON.stringify(host)} is not an IP address`);
  return { host, port };
}

/** The canonical text form, used as the Raft id. */
export function formatHostPort({ host, port }: HostPort): string {
  return isIP(host) === 6 ? `[${host}]:${port}` : `${host}:${port}`;
}

/** Canonical Raft id of the member listening on `address`. */
export function raftIdOf(address: string): string {
  return formatHostPort(parseHostPort(address));
}

/** libp2p TCP multiaddr of a raft address. */
export function multiaddrOf(address: string): string {
  const { host, port } = parseHostPort(address);
  return `/${isIP(host) === 6 ? 'ip6' : 'ip4'}/${host}/tcp/${port}`;
}
