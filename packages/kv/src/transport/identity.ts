// A node's libp2p identity and the cluster's pre-shared key.
//
// The private key lives in the data dir (mode 0600) so the peer id, which other
// members record, survives restarts. The cluster key is libp2p's pnet "v1 PSK"
// text; nodes without the same key cannot complete even the transport handshake.
import { chmod, mkdir, open, readFile, rename, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf } from '@libp2p/crypto/keys';
import type { PrivateKey } from '@libp2p/interface';

export const IDENTITY_KEY_FILE = 'libp2p-identity.key';

/** Loads the node's private key from `dataDir`, creating one (Ed25519) on first start. */
export async function loadOrCreatePrivateKey(dataDir: string): Promise<PrivateKey> {
  const path = join(dataDir, IDENTITY_KEY_FILE);
  let bytes: Uint8Array | undefined;
  try {
    bytes = await readFile(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
      throw new Error(`cannot read the node identity key ${path}: ${(err as Error).message}`, { cause: err });
    }
  }
  if (bytes) {
    const mode = (await stat(path)).mode & 0o777;
    if ((mode & 0o077) !== 0) await chmod(path, 0o600); // a private key readable by others is a leak waiting to happen
    try {
      return privateKeyFromProtobuf(bytes);
    } catch (err) {
      throw new Error(
        `node identity key ${path} is corrupt (${(err as Error).message}); restore it from a backup, ` +
          'or delete it to give this node a new peer id (the cluster then sees a new member: remove the old one)',
        { cause: err },
      );
    }
  }
  await mkdir(dataDir, { recursive: true });
  const key = await generateKeyPair('Ed25519');
  // Write-then-rename with fsync so a crash never leaves a half-written key behind.
  const tmp = `${path}.tmp-${process.pid}`;
  const file = await open(tmp, 'w', 0o600);
  try {
    await file.writeFile(privateKeyToProtobuf(key));
    await file.sync();
  } finally {
    await file.close();
  }
  await rename(tmp, path);
  return key;
}

const PSK_HEADER = '/key/swarm/psk/1.0.0/\n/base16/\n';

/** A new random cluster key, as text to store in a file and give to every node. */
export function generateClusterKey(): string {
  const bytes = new Uint8Array(32);
  crypto.getRandomValues(bytes);
  return PSK_HEADER + Buffer.from(bytes).toString('hex');
}

/**
 * Accepts the pnet v1 text or just the 64 hex digits; returns the bytes
 * @libp2p/pnet expects. Throws naming what is wrong.
 */
export function parseClusterKey(key: string | Uint8Array): Uint8Array {
  const text = (typeof key === 'string' ? key : new TextDecoder().decode(key)).trim();
  const lines = text.split(/\r?\n/);
  const hex = lines.length === 1 ? lines[0] : lines.length === 3 ? lines[2] : undefined;
  if (lines.length === 3 && (lines[0] !== '/key/swarm/psk/1.0.0/' || lines[1] !== '/base16/')) {
    throw new Error(
      'cluster key: expected "/key/swarm/psk/1.0.0/" and "/base16/" header lines (pnet v1 format)',
    );
  }
  if (hex === undefined || !/^[0-9a-fA-F]{64}$/.test(hex)) {
    throw new Error(
      'cluster key: expected 64 hexadecimal digits (32 bytes), optionally after the pnet v1 header',
    );
  }
  return new TextEncoder().encode(PSK_HEADER + hex.toLowerCase());
}

/**
 * Turns a user's peer address into a multiaddr string: "host:port",
 * "[v6]:port" or an existing multiaddr ("/ip4/…").
 */
export function toMultiaddrString(address: string): string {
  const trimmed = address.trim();
  if (trimmed.startsWith('/')) return trimmed;
  const match = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(trimmed);
  const port = match ? Number(match[3]) : Number.NaN;
  if (!match || port < 0 || port > 65535) {
    throw new Error(`peer address "${address}" is not host:port, [ipv6]:port or a multiaddr`);
  }
  if (match[1] !== undefined) return `/ip6/${match[1]}/tcp/${port}`;
  const host = match[2];
  if (/^\d{1,3}(\.\d{1,3}){3}$/.test(host)) return `/ip4/${host}/tcp/${port}`;
  return `/dns/${host}/tcp/${port}`;
}
