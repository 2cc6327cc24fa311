// `weft agent`: builds the real components from the flags, runs them until
// a signal, and leaves the cluster gracefully on SIGTERM / SIGINT.
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ConsulHttpServer } from '@weft/kv/api/http';
import { KvNode } from '@weft/kv/api/node';
import { DnsServer, OverlayManager } from '@weft/overlay';
import { KernelDataplane } from '../dataplane/kernel.js';
import { intToIpv4, parseCidr } from '../dataplane/names.js';
import { UserspaceDataplane } from '../dataplane/userspace.js';
import { proxyConsulRequest } from '../kv-adapter/client-store.js';
import { KvNodeStore } from '../kv-adapter/kvnode-store.js';
import { createLogger, type Logger } from '../log/logger.js';
import { AgentMetrics } from '../metrics/metrics.js';
import { Agent } from './agent.js';
import { type AgentConfig, parseAgentConfig } from './config.js';
import { ContainerRuntime } from './containers.js';
import { DnsIdentityBook } from './dns-identity.js';
import { openKvClientStore } from './kv-client-store.js';
import { type KvClientFactory, KvNodeComponent } from './kv-component.js';
import { planKvBootstrap, sortAddresses } from './kv-role.js';
import { SandboxGate } from './sandbox-gate.js';
import type { Startable } from './startable.js';

/** A stable identity for this agent's data directory: a restart with it takes its host name back. */
async function agentId(dataDir: string): Promise<string> {
  const path = join(dataDir, 'agent-id');
  try {
    const id = (await readFile(path, 'utf8')).trim();
    if (!/^[0-9a-f]{32}$/.test(id))
      throw new Error(`${path} is damaged (expected 32 hex digits); remove it to get a new identity`);
    return id;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    const id = randomBytes(16).toString('hex');
    await writeFile(path, `${id}\n`);
    return id;
  }
}

/** The bridge's own address: the first one in the gateway subnet (the plumbing's convention). */
function gatewayBridgeIp(subnet: string): string {
  return intToIpv4(parseCidr(subnet).network + 1);
}

/**
 * A session expires this many TTLs after its last renewal (Consul: 2). The
 * host registry is what it is for, and --host-ttl promises "dead after this
 * long": with Consul's 2 a killed host lingered up to 2×TTL plus the reclaim.
 * 1.25 still never expires a session before its TTL, and a live host, which
 * renews every TTL/3, has almost four tries (and a second of slack at the
 * tests' 4 s TTL) before it would lose it.
 */
export const hostSessionGraceMultiplier = 1.25;

export interface AgentHooks {
  /** Client mode's store (an agent beyond the voter and learner limits); without it such an agent refuses to start. */
  openKvClient?: KvClientFactory;
  /** The KV node stopped on its own (storage failure, or removed from a full cluster). */
  onKvFatal?: (err: Error) => void;
}

/**
 * This agent's part in the KV store (kv-role.ts): a voter or learner
 * replica, or a client. Exported for tests, which run it without the rest.
 */
export function createKvComponent(
  config: AgentConfig,
  deps: { clusterKey?: Uint8Array; logger: Logger; hooks?: AgentHooks },
): KvNodeComponent {
  const { clusterKey, hooks = {} } = deps;
  const kvLogger = deps.logger;
  const withPort = (a: string) => (a.includes(':') ? a : `${a}:${config.raftPort}`);
  // Read only for a new data directory; a restart resumes its role (kv-role.ts).
  const self = withPort(config.advertise);
  const peers = config.peers.map(withPort);
  const plan = planKvBootstrap(self, peers, config.voters);
  const kv = new KvNodeComponent(
    {
      dataDir: join(config.dataDir, 'kv'),
      id: config.name,
      listen: self,
      ...(plan.bootstrap ? { peers: plan.initialVoters } : { join: plan.joinThrough }),
      maxVoters: config.voters,
      maxLearners: config.learners,
      deadVoterThresholdMs: config.deadVoterThresholdMs,
      ...(clusterKey ? { clusterKey } : {}),
      sessionTtlGraceMultiplier: hostSessionGraceMultiplier,
      log: {
        debug: (f, m) => kvLogger.debug(f, m),
        info: (f, m) => kvLogger.info(f, m),
        warn: (f, m) => kvLogger.warn(f, m),
        error: (f, m) => kvLogger.error(f, m),
      },
    },
    (o) => KvNode.open(o),
    kvLogger,
    {
      dataDir: config.dataDir,
      servers: plan.bootstrap ? plan.initialVoters : plan.joinThrough,
      allAddresses: sortAddresses([self, ...peers]),
      keepMembershipOnLeave: config.keepRaftMembership,
      ...(hooks.openKvClient ? { openClient: hooks.openKvClient } : {}),
    },
  );
  if (hooks.onKvFatal) kv.onFatal(hooks.onKvFatal);
  return kv;
}

export async function buildAgent(
  config: AgentConfig,
  logger = createLogger({ level: config.logLevel, name: config.name }),
  hooks: AgentHooks = { openKvClient: openKvClientStore },
): Promise<Agent> {
  await mkdir(config.dataDir, { recursive: true });
  const metrics = new AgentMetrics();
  const peerId = await agentId(config.dataDir);
  const clusterKey = config.clusterKeyFile
    ? new Uint8Array(await readFile(config.clusterKeyFile))
    : undefined;
  const kv = createKvComponent(config, { clusterKey, logger: logger.child({ component: 'kv' }), hooks });
  const store = new KvNodeStore(kv, metrics);
  const plumbing = { vtep: config.advertise, gatewaySubnet: config.gatewaySubnet };
  const dataplane: KernelDataplane | UserspaceDataplane =
    config.dataplane === 'kernel' ? new KernelDataplane(plumbing) : new UserspaceDataplane(plumbing);
  const sandboxGate = new SandboxGate();
  const overlay = new OverlayManager({
    store,
    dataplane: sandboxGate.wrap(dataplane),
    hostname: config.name,
    advertise: config.advertise,
    peerId,
    sessionTtlMs: config.hostTtlMs,
  });
  const raftPort = config.raftPort;
  kv.setLiveAddresses(() => overlay.hosts().map((h) => `${h.advertise}:${raftPort}`));
  const localEndpoints = () => overlay.listEndpoints().filter((e) => e.host === config.name);
  const dnsIdentity = new DnsIdentityBook(() => dataplane.plumbing.knownGatewayVeths(), localEndpoints);
  const dnsIp = config.gatewaySubnet ? gatewayBridgeIp(config.gatewaySubnet) : undefined;
  const containers = new ContainerRuntime({
    dataDir: config.dataDir,
    sandboxPrefix: config.sandboxPrefix,
    // Single-label names (web, mongo) and name.network are answered by the agent's DNS server.
    resolvConf: () => (dnsIp ? `nameserver ${dnsIp}\noptions ndots:0\n` : ''),
    logger: logger.child({ component: 'containers' }),
  });
  let dns: Startable | undefined;
  if (dnsIp) {
    const server = new DnsServer({
      resolver: () => dnsIdentity.wrap(overlay.dnsTable()),
      address: dnsIp,
      port: 53,
      ...(config.dnsUpstreams ? { upstreams: config.dnsUpstreams } : {}),
    });
    dns = {
      start: async () => {
        await server.start();
      },
      stop: () => server.stop(),
    };
  }
  // The Consul API needs the open node, which exists only once the agent has started.
  let consul: ConsulHttpServer | undefined;
  const consulComponent: Startable = {
    start: async () => {},
    stop: async () => {
      await consul?.close();
      consul = undefined;
    },
  };
  return new Agent({
    name: config.name,
    advertise: config.advertise,
    dataplaneKind: config.dataplane,
    apiListen: config.api,
    logger,
    metrics,
    kv,
    dataplane,
    overlay,
    containers,
    dns,
    dnsIdentity,
    kvHandler: (req, res) => {
      const client = kv.clientStore;
      if (client?.request) {
        // No local replica: the Consul API is served by a server, through the client.
        void proxyConsulRequest({ request: client.request.bind(client) }, req, res);
        return;
      }
      if (kv.kvRole === 'client') {
        // No local replica to serve the Consul API from (a client agent reaches the servers through its store).
        res.writeHead(503, { 'content-type': 'text/plain' });
        res.end(
          `this agent runs as a client of the KV store (no local replica); use the API of an agent that is a voter or learner (Raft members: ${kv.servers.join(', ')})\n`,
        );
        return;
      }
      consul ??= new ConsulHttpServer(kv.node, { sessionTtlMinMs: 1_000 });
      consul.handler(req, res);
    },
    extra: [consulComponent],
    sandboxGate,
  });
}

export async function runAgentProcess(raw: Record<string, unknown>): Promise<number> {
  let config: AgentConfig;
  try {
    config = parseAgentConfig(raw);
  } catch (err) {
    process.stderr.write(`Error: ${(err as Error).message}\n`);
    return 2;
  }
  const logger = createLogger({ level: config.logLevel, name: config.name });
  let agent: Agent;
  let onKvFatal = (_err: Error) => {};
  try {
    agent = await buildAgent(config, logger, {
      openKvClient: openKvClientStore,
      onKvFatal: (err) => onKvFatal(err),
    });
  } catch (err) {
    logger.error({ err }, 'agent could not be built');
    process.stderr.write(`Error: ${(err as Error).message}\n`);
    return 1;
  }
  return new Promise<number>((resolve) => {
    let started = false;
    let leaving = false;
    const leave = () =>
      agent.leave().then(
        () => resolve(0),
        (err) => {
          logger.error({ err }, 'leave failed');
          resolve(1);
        },
      );
    // Registered before start: a signal while waiting for peers cancels the start instead of killing the process.
    const onSignal = (signal: NodeJS.Signals) => {
      if (leaving) return;
      leaving = true;
      logger.info({ signal, started }, started ? 'leaving the cluster' : 'stopping before the agent started');
      if (started) void leave();
      else agent.cancelStart();
    };
    process.once('SIGTERM', onSignal);
    process.once('SIGINT', onSignal);
    // Without its KV node the agent cannot keep its state: it leaves and exits non-zero, for its supervisor to restart it.
    onKvFatal = (err) => {
      if (leaving) return;
      leaving = true;
      logger.error({ err: err.message }, 'the KV node stopped; the agent exits');
      process.stderr.write(`Error: ${err.message}\n`);
      void agent.leave().then(
        () => resolve(1),
        () => resolve(1),
      );
    };
    agent.start().then(
      () => {
        started = true;
        if (leaving) void leave();
      },
      (err) => {
        if (leaving) return resolve(0);
        logger.error({ err }, 'agent failed to start');
        process.stderr.write(`Error: ${(err as Error).message}\n`);
        resolve(1);
      },
    );
  });
}
