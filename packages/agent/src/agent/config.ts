// `weft agent` options, validated once so every component gets clean values
// and a bad flag is one clear error before anything starts.
import { isIPv4 } from 'node:net';
import { parseHostPort } from '../api/server.js';

export type DataplaneKind = 'kernel' | 'userspace';

export interface AgentConfig {
  name: string;
  /** Underlay IPv4 address: Raft transport, VXLAN VTEP. */
  advertise: string;
  /** Advertise addresses of other agents to join. */
  peers: string[];
  dataDir: string;
  dataplane: DataplaneKind;
  clusterKeyFile?: string;
  /** host:port of the HTTP API; loopback only. */
  api: string;
  voters: 3 | 5;
  learners: number;
  /** The KV leader replaces a voter (and drops a learner) it has not heard from for this long. */
  deadVoterThresholdMs: number;
  /** SIGTERM hands over leadership but stays in the Raft configuration (restarts, upgrades). */
  keepRaftMembership: boolean;
  logLevel: string;
  /** TCP port of the Raft transport on the advertise address (peers without :port use it too). */
  raftPort: number;
  /** Subnet of the per-host gateway bridge (NAT out of the overlay); null = none. */
  gatewaySubnet: string | null;
  /** Prefix of container namespace names; namespace names are global on a machine. */
  sandboxPrefix: string;
  /** Host liveness: a host is declared dead this long after its last session renewal. */
  hostTtlMs: number;
  /** Resolvers for names outside the overlay; default the host's resolv.conf. */
  dnsUpstreams?: string[];
}

export const defaultRaftPort = 8300;
export const defaultGatewaySubnet = '172.18.0.0/16';

const hostNamePattern = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;

export function parseAgentConfig(raw: Record<string, unknown>): AgentConfig {
  const str = (k: string) => (raw[k] === undefined ? undefined : String(raw[k]));
  const name = str('name') ?? '';
  if (!hostNamePattern.test(name)) {
    throw new Error(`--name "${name}" is not a valid host name: letters, digits, '_', '.', '-', at most 63`);
  }
  const advertise = str('advertise') ?? '';
  if (!isIPv4(advertise))
    throw new Error(`--advertise "${advertise}" is not an IPv4 address (the host's underlay address)`);
  const peers = (str('peers') ?? '')
    .split(',')
    .map((p) => p.trim())
    .filter((p) => p !== '');
  for (const p of peers) {
    const host = p.includes(':') ? p.slice(0, p.lastIndexOf(':')) : p;
    if (!isIPv4(host)) throw new Error(`--peers entry "${p}" is not an IPv4 address (optionally :port)`);
  }
  const api = str('api') ?? '127.0.0.1:8500';
  const { host: apiHost } = parseHostPort(api, '--api');
  if (!/^127\.|^::1$|^localhost$/.test(apiHost)) {
    throw new Error(
      `--api ${api} is not a loopback address: the API has no authentication, keep it on 127.0.0.1`,
    );
  }
  const voters = Number(str('voters') ?? '3');
  if (voters !== 3 && voters !== 5) throw new Error(`--voters must be 3 or 5, got "${str('voters')}"`);
  const learners = Number(str('learners') ?? '4');
  if (!Number.isInteger(learners) || learners < 0 || learners > 16) {
    throw new Error(`--learners must be an integer from 0 to 16, got "${str('learners')}"`);
  }
  const deadVoterThresholdMs = Number(str('deadVoterThreshold') ?? 10_000);
  if (
    !Number.isInteger(deadVoterThresholdMs) ||
    deadVoterThresholdMs < 1_000 ||
    deadVoterThresholdMs > 3_600_000
  ) {
    throw new Error(
      `--dead-voter-threshold must be milliseconds from 1000 to 3600000, got "${str('deadVoterThreshold')}"`,
    );
  }
  const dataplane = str('dataplane') ?? 'kernel';
  if (dataplane !== 'kernel' && dataplane !== 'userspace') {
    throw new Error(`--dataplane must be kernel or userspace, got "${dataplane}"`);
  }
  const raftPort = Number(str('raftPort') ?? defaultRaftPort);
  if (!Number.isInteger(raftPort) || raftPort < 1 || raftPort > 65535) {
    throw new Error(`--raft-port must be a TCP port (1-65535), got "${str('raftPort')}"`);
  }
  const gw = str('gatewaySubnet') ?? defaultGatewaySubnet;
  let gatewaySubnet: string | null = gw;
  if (gw === 'none') gatewaySubnet = null;
  else {
    const m = /^(\d+\.\d+\.\d+\.\d+)\/(\d+)$/.exec(gw);
    if (!m || !isIPv4(m[1] as string) || Number(m[2]) > 29) {
      throw new Error(`--gateway-subnet "${gw}" must be an IPv4 CIDR of /29 or larger (or "none")`);
    }
  }
  const sandboxPrefix = str('sandboxPrefix') ?? `weft-${name}-`;
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$/.test(sandboxPrefix)) {
    throw new Error(
      `--sandbox-prefix "${sandboxPrefix}" may use letters, digits, '_', '.', '-' (at most 32)`,
    );
  }
  const hostTtlMs = Number(str('hostTtl') ?? 10_000);
  if (!Number.isInteger(hostTtlMs) || hostTtlMs < 1_000 || hostTtlMs > 600_000) {
    throw new Error(`--host-ttl must be milliseconds from 1000 to 600000, got "${str('hostTtl')}"`);
  }
  const upstreamText = str('dnsUpstream');
  const dnsUpstreams =
    upstreamText === undefined
      ? undefined
      : upstreamText
          .split(',')
          .map((u) => u.trim())
          .filter((u) => u !== '');
  return {
    name,
    hostTtlMs,
    dnsUpstreams,
    raftPort,
    gatewaySubnet,
    sandboxPrefix,
    advertise,
    peers,
    dataDir: str('dataDir') ?? '/var/lib/weft',
    dataplane,
    clusterKeyFile: str('clusterKey'),
    api,
    voters,
    learners,
    deadVoterThresholdMs,
    keepRaftMembership: raw.keepRaftMembership === true || raw.keepRaftMembership === 'true',
    logLevel: str('logLevel') ?? 'info',
  };
}
