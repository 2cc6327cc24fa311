// Free TCP ports on loopback for test and bench servers that are started by
// port number (processes given --listen/--http, nodes given a listen address).
//
// A port from listen(0) comes from the kernel's ephemeral range, which is also
// where every outgoing connection's local port comes from: between the probe
// and the server's own bind, any connection on the machine can take it, and
// the server dies with EADDRINUSE (seen in a full `npm test`). Ports below
// that range are never handed out implicitly, so a probed one stays free
// unless someone binds it by number. Each port is handed out once per process.
import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';

/** Lowest port probed: above the registered ports most daemons use. */
const LOWEST_PORT = 10_000;
const handedOut = new Set<number>();

/** The first port of the kernel's ephemeral range (32768 by default on Linux). */
function ephemeralRangeStart(): number {
  try {
    const first = Number(
      readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0],
    );
    return Number.isInteger(first) && first > 0 ? first : 32_768;
  } catch {
    return 32_768;
  }
}

function listenOnce(port: number, host: string): Promise<number | undefined> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(undefined));
    server.listen(port, host, () => {
      const address = server.address();
      const bound = typeof address === 'object' && address ? address.port : undefined;
      server.close(() => resolve(bound));
    });
  });
}

/** A port on `host` that nothing listens on now, from below the ephemeral range when it leaves room. */
export async function freePort(host = '127.0.0.1'): Promise<number> {
  const highest = ephemeralRangeStart() - 1;
  if (highest - LOWEST_PORT >= 1_000) {
    for (let attempt = 0; attempt < 100; attempt++) {
      const port = LOWEST_PORT + Math.floor(Math.random() * (highest - LOWEST_PORT + 1));
      if (handedOut.has(port)) continue;
      if ((await listenOnce(port, host)) === port) {
        handedOut.add(port);
        return port;
      }
    }
  }
  // No room below the ephemeral range (or all tries taken): the kernel's pick.
  const port = await listenOnce(0, host);
  if (port === undefined) throw new Error(`cannot find a free TCP port on ${host}`);
  handedOut.add(port);
  return port;
}
