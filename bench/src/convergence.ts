// Convergence of the overlay, measured on namespace hosts with real agents:
//   attach: from `weft run -d` on host A until a ping from a container on
//           host B to the new container succeeds (p50/p99 over N attaches);
//           this includes Node's start-up of the CLI (cliStartMs, measured
//           alone) and the ping (iputils, one probe every 10 ms, run by a
//           shell already inside host B's pinger container). The CLI runs
//           as users run it, packages/agent/bin/weft, started as a shell
//           starts it (posix_spawn, no fork of this process);
//   controlPlane: from the start of the API call (POST /v1/weft/containers,
//           made by a client already running in host A) until host B's
//           kernel FDB holds the new container's MAC toward A (seen by
//           `bridge monitor fdb`), and the API call's own duration;
//   failure: from kill -9 of host C's agent until C's endpoints are gone
//           from every other host's peer table (the API's endpoint view and
//           the kernel FDB toward C's VTEP).
// Prints one JSON object. Usage: node bench/dist/src/convergence.js [--attaches 50]
import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { commandRunners, processStartPath } from '@weft/agent/netlink/ip';
import { enterHost, eventually, weftCommand } from '@weft/e2e/harness/agents';
import { type Cluster, preflight, runPrefix, startCluster } from '@weft/e2e/harness/cluster';
import { benchArgs } from './args.js';
import { summarizeMs } from './stats.js';

interface ContainerJson {
  name: string;
  sandbox: string;
  endpoints: { ip: string; network: string }[];
}

async function main(): Promise<void> {
  const args = benchArgs('usage: npm run bench:convergence -- [--attaches 50]', {
    attaches: { type: 'string', default: '50' },
  });
  const attaches = Number(args.attaches);
  if (!Number.isInteger(attaches) || attaches < 1 || attaches > 200)
    throw new Error(`--attaches must be an integer in 1..200, got ${JSON.stringify(args.attaches)}`);
  const why = preflight();
  if (why) throw new Error(why);

  const cluster: Cluster = await startCluster(runPrefix('b'), {
    hosts: 3,
    // Each run's phases are logged at debug level (see runPhases).
    extraArgs: ['--log-level', 'debug'],
  });
  try {
    const [a, b, c] = cluster.agents as [Cluster['agents'][0], Cluster['agents'][0], Cluster['agents'][0]];
    await a.mustWeft(['network', 'create', '--subnet', '198.18.20.0/24', 'bench-net']);
    const pinger = JSON.parse(
      await eventually('the pinger container on host B', async () => {
        const r = await b.weft(runDetached('pinger'));
        return r.code === 0 ? r.stdout : undefined;
      }),
    ) as ContainerJson;

    const attach = new AttachSeries();
    const prober = new PingProber(pinger.sandbox);
    try {
      for (let i = 0; i < attaches; i++) attach.add(await attachThenPing(a, prober, `c${i}`));
    } finally {
      prober.close();
    }
    const agentPhases = runPhases(a, attaches);

    // Node's start-up of the CLI alone (a command that does not call the API).
    const cliStart: number[] = [];
    for (let i = 0; i < Math.min(attaches, 20); i++) {
      const t = performance.now();
      await timedWeft(a, ['--help']);
      cliStart.push(performance.now() - t);
    }

    // The control plane alone: API call on A → B's FDB entry toward A.
    const control = await measureControlPlane(a, b, attaches);

    // Host C holds a few endpoints, then dies without a word.
    for (let i = 0; i < 3; i++)
      await c.mustWeft(['run', '-d', '--net', 'bench-net', '--name', `victim${i}`, '--', 'sleep', '3600']);
    const vtep = c.host.ip;
    const survivors = [a, b];
    await eventually(
      'victims visible everywhere',
      async () => {
        for (const s of survivors) if (!(await hostEndpointsVisible(s, c.host.name, vtep))) return undefined;
        return true;
      },
      30_000,
      100,
    );
    // Polled every 20 ms through API clients already running on the
    // survivors (a CLI per poll would add its start-up to every sample).
    const clients = survivors.map((s) => new HostApiClient(s));
    const goneMs: Record<string, number> = {};
    try {
      for (const cl of clients) await cl.call('GET', '/v1/weft/status');
      const t0 = performance.now();
      await c.kill('SIGKILL');
      await Promise.all(
        survivors.map(async (s, i) => {
          const client = clients[i] as HostApiClient;
          await eventually(
            `host C's endpoints gone on ${s.host.name}`,
            async () => {
              const r = await client.call('GET', '/v1/weft/networks/bench-net');
              const eps = (r.body as { endpoints?: { host: string }[] } | null)?.endpoints;
              if (r.status !== 200 || !eps || eps.some((e) => e.host === c.host.name)) return undefined;
              return (await fdbHasVtep(s, vtep)) ? undefined : true;
            },
            120_000,
            20,
          );
          goneMs[s.host.name] = Math.round(performance.now() - t0);
        }),
      );
    } finally {
      for (const cl of clients) cl.close();
    }
    const result = {
      bench: 'convergence',
      hosts: 3,
      dataplane: 'kernel',
      attachToPing: attach.summary(),
      agentRunPhasesMs: agentPhases,
      cliStartMs: summarizeMs(cliStart),
      controlPlane: {
        apiCallMs: summarizeMs(control.apiMs),
        apiStartToPeerFdbMs: summarizeMs(control.fdbMs),
      },
      deadHostEndpointsGoneMs: { perHost: goneMs, max: Math.max(...Object.values(goneMs)) },
    };
    process.stdout.write(`${JSON.stringify(result)}\n`);
  } finally {
    await cluster.destroy();
  }
}

/** attachToPing samples and their two parts: `weft run -d` (Node start-up + API call), then the ping loop. */
class AttachSeries {
  private readonly totalMs: number[] = [];
  private readonly cliMs: number[] = [];
  private readonly pingMs: number[] = [];

  add(sample: { cliMs: number; pingMs: number }): void {
    this.totalMs.push(sample.cliMs + sample.pingMs);
    this.cliMs.push(sample.cliMs);
    this.pingMs.push(sample.pingMs);
  }

  summary() {
    return {
      ...summarizeMs(this.totalMs),
      cliRun: summarizeMs(this.cliMs),
      ping: summarizeMs(this.pingMs),
      // In order: the first is host A's first container on the network, which also makes the network's bridge and VXLAN device there.
      samplesMs: this.totalMs.map((ms) => Math.round(ms)),
    };
  }
}

/**
 * The agent's own time per `weft run` by phase (its debug log's `container
 * run` lines, the last `count` of them; `attach.*At` are times since the
 * attach phase began, `attach.wiringMs` the data plane's part): p50/p99 over the run, and the first
 * and last thirds' p50s side by side (does a phase grow as the host fills up?).
 */
function runPhases(agent: Cluster['agents'][0], count: number): Record<string, unknown> {
  const runs: Record<string, number>[] = [];
  for (const line of agent.logTail(1_000_000).split('\n')) {
    if (!line.includes('"container run"')) continue;
    try {
      const logged = JSON.parse(line) as {
        phasesMs?: Record<string, number>;
        attachDetailMs?: Record<string, number>;
      };
      const phases = logged.phasesMs;
      if (phases) {
        const total = Object.values(phases).reduce((x, y) => x + y, 0);
        const detail = Object.entries(logged.attachDetailMs ?? {}).map(([k, v]) => [`attach.${k}`, v]);
        runs.push({ ...phases, total, ...Object.fromEntries(detail) });
      }
    } catch {
      // not one of ours
    }
  }
  const last = runs.slice(-count);
  if (last.length === 0) return { note: 'no `container run` debug lines (agent log level above debug?)' };
  const third = Math.max(1, Math.floor(last.length / 3));
  const out: Record<string, unknown> = {};
  for (const name of Object.keys(last[0] as Record<string, number>)) {
    const values = (rs: Record<string, number>[]) => rs.map((r) => r[name] ?? 0);
    const all = summarizeMs(values(last));
    out[name] = {
      p50: all.p50Ms,
      p99: all.p99Ms,
      first: values(last.slice(0, 1))[0],
      p50FirstThird: summarizeMs(values(last.slice(1, third + 1))).p50Ms,
      p50LastThird: summarizeMs(values(last.slice(-third))).p50Ms,
    };
  }
  return out;
}

/** `weft run -d` of a new container on host A, then pings from host B's pinger until it answers. */
async function attachThenPing(
  a: Cluster['agents'][0],
  prober: PingProber,
  name: string,
): Promise<{ cliMs: number; pingMs: number }> {
  const t0 = performance.now();
  const info = JSON.parse(await timedWeft(a, runDetached(name))) as ContainerJson;
  const ip = info.endpoints[0]?.ip as string;
  const tPing = performance.now();
  while (!(await prober.ping(ip))) {
    if (performance.now() - t0 > 60_000)
      throw new Error(`${name} (${ip}) unreachable from host B after 60 s`);
  }
  return { cliMs: tPing - t0, pingMs: performance.now() - tPing };
}

/**
 * The CLI on a host for a timed sample, started the way a shell starts a
 * command: posix_spawn from the addon. Node's child_process forks this whole
 * process first, which took 5-20 ms a sample here (more as the bench grows),
 * none of it Weft's. child_process without the addon.
 */
function timedWeft(agent: Cluster['agents'][0], args: string[]): Promise<string> {
  if (processStartPath() !== 'native') return agent.mustWeft(args, 30_000);
  return commandRunners.native([...enterHost(agent.host.netns), weftCommand, ...args]);
}

/**
 * A shell in host B's pinger container that runs one `ping` per address it
 * is given: a probe every 10 ms until the first answer (at most 5 s), then
 * "ok" or "fail". One shell for the whole series, so a sample holds the
 * ping itself, not `ip netns exec` (a mount namespace, /etc/netns binds)
 * and a fork of this big Node process, which took 8-10 ms per sample.
 */
class PingProber {
  private readonly child: ChildProcessWithoutNullStreams;
  private readonly answers: AsyncIterator<string>;

  constructor(sandbox: string) {
    const script = `while read -r ip; do
      if ping -n -q -c 1 -i 0.01 -w 5 "$ip" >/dev/null 2>&1; then echo ok; else echo fail; fi
    done`;
    this.child = spawn('ip', [
      'netns',
      'exec',
      sandbox,
      'sh',
      '-c',
      script,
    ]) as ChildProcessWithoutNullStreams;
    this.answers = createInterface({ input: this.child.stdout })[Symbol.asyncIterator]();
  }

  /** Whether `ip` answered within the ping's 5 s. */
  async ping(ip: string): Promise<boolean> {
    this.child.stdin.write(`${ip}\n`);
    const next = await this.answers.next();
    if (next.done) throw new Error('the pinger shell in host B exited');
    return next.value === 'ok';
  }

  close(): void {
    this.child.kill('SIGKILL');
  }
}

/** `weft run -d` of a long-running container named `name` on the bench's network, its answer as JSON. */
function runDetached(name: string): string[] {
  return ['--format', 'json', 'run', '-d', '--net', 'bench-net', '--name', name, '--', 'sleep', '3600'];
}

/** Wall-clock milliseconds with sub-millisecond precision, comparable across processes. */
const wallMs = () => performance.timeOrigin + performance.now();

interface ApiReply {
  t0: number;
  t1: number;
  status: number;
  body: unknown;
}

/**
 * A Node process inside a host's namespace that calls that host's HTTP API
 * on request, so calls are timed without a CLI's start-up. One request at a
 * time: `call` sends a line, the process answers with the call's wall-clock
 * times and the reply.
 */
class HostApiClient {
  private readonly child: ChildProcessWithoutNullStreams;
  private readonly replies: AsyncIterator<string>;
  private queue: Promise<unknown> = Promise.resolve();

  constructor(agent: Cluster['agents'][0]) {
    const source = `
      const rl = require('node:readline').createInterface({ input: process.stdin });
      const now = () => performance.timeOrigin + performance.now();
      rl.on('line', async (line) => {
        const { method, path, body } = JSON.parse(line);
        const t0 = now();
        let status = 0, reply = null;
        try {
          const res = await fetch('http://127.0.0.1:8500' + path, {
            method, headers: { 'content-type': 'application/json' },
            body: body === undefined ? undefined : JSON.stringify(body),
          });
          status = res.status;
          reply = await res.json().catch(() => null);
        } catch (e) { reply = String(e); }
        process.stdout.write(JSON.stringify({ t0, t1: now(), status, body: reply }) + '\\n');
      });`;
    const [cmd, ...args] = enterHost(agent.host.netns);
    this.child = spawn(cmd as string, [
      ...args,
      process.execPath,
      '-e',
      source,
    ]) as ChildProcessWithoutNullStreams;
    this.replies = createInterface({ input: this.child.stdout })[Symbol.asyncIterator]();
  }

  call(method: string, path: string, body?: unknown): Promise<ApiReply> {
    const run = this.queue.then(async () => {
      this.child.stdin.write(`${JSON.stringify({ method, path, body })}\n`);
      const next = await this.replies.next();
      if (next.done) throw new Error('the API client process exited');
      return JSON.parse(next.value) as ApiReply;
    });
    this.queue = run.catch(() => undefined);
    return run;
  }

  close(): void {
    this.child.kill('SIGKILL');
  }
}

/** Streams `bridge monitor fdb` of a host; remembers when each MAC first pointed at `vtep`. */
function watchFdb(agent: Cluster['agents'][0], vtep: string) {
  const seen = new Map<string, number>();
  const waiters = new Map<string, () => void>();
  const monitor = spawn('ip', ['netns', 'exec', agent.host.netns, 'bridge', 'monitor', 'fdb']);
  createInterface({ input: monitor.stdout }).on('line', (line) => {
    const t = wallMs();
    const m = /^([0-9a-f:]{17}) dev \S+ dst (\S+) /.exec(line);
    if (!m || m[2] !== vtep) return;
    const mac = m[1] as string;
    if (!seen.has(mac)) seen.set(mac, t);
    waiters.get(mac)?.();
  });
  return {
    /** Wall-clock time the MAC first appeared toward the VTEP (waits up to 30 s). */
    async seenAt(mac: string): Promise<number> {
      if (!seen.has(mac)) {
        await new Promise<void>((resolve, reject) => {
          const timer = setTimeout(
            () => reject(new Error(`${mac} never reached ${agent.host.name}'s FDB within 30 s`)),
            30_000,
          );
          waiters.set(mac, () => {
            clearTimeout(timer);
            resolve();
          });
        });
        waiters.delete(mac);
      }
      return seen.get(mac) as number;
    },
    close: () => monitor.kill('SIGKILL'),
  };
}

/**
 * Runs `attaches` containers on host A through the HTTP API (no CLI
 * start-up), and times each until host B's kernel FDB maps the container's
 * MAC to A's VTEP.
 */
async function measureControlPlane(
  a: Cluster['agents'][0],
  b: Cluster['agents'][0],
  attaches: number,
): Promise<{ apiMs: number[]; fdbMs: number[] }> {
  const fdb = watchFdb(b, a.host.ip);
  const client = new HostApiClient(a);
  try {
    await client.call('GET', '/v1/weft/status'); // the client has loaded
    const apiMs: number[] = [];
    const fdbMs: number[] = [];
    for (let i = 0; i < attaches; i++) {
      const reply = await client.call('POST', '/v1/weft/containers', {
        name: `api${i}`,
        network: 'bench-net',
        command: ['sleep', '3600'],
        detach: true,
      });
      if (reply.status !== 200 && reply.status !== 201)
        throw new Error(`API run of api${i} failed with HTTP ${reply.status}: ${JSON.stringify(reply.body)}`);
      const mac = (reply.body as { endpoints: { mac: string }[] }).endpoints[0]?.mac as string;
      apiMs.push(reply.t1 - reply.t0);
      fdbMs.push((await fdb.seenAt(mac)) - reply.t0);
    }
    return { apiMs, fdbMs };
  } finally {
    client.close();
    fdb.close();
  }
}

/** True while host `agent` still sees endpoints of `deadHost` in the API or FDB entries toward its VTEP. */
async function hostEndpointsVisible(
  agent: Cluster['agents'][0],
  deadHost: string,
  vtep: string,
): Promise<boolean> {
  const net = JSON.parse(await agent.mustWeft(['network', 'inspect', 'bench-net'])) as {
    endpoints?: { host: string }[];
  }[];
  const inApi = (net[0]?.endpoints ?? []).some((e) => e.host === deadHost);
  return inApi || (await fdbHasVtep(agent, vtep));
}

/** True while the host's FDB maps some container MAC to `vtep`. */
async function fdbHasVtep(agent: Cluster['agents'][0], vtep: string): Promise<boolean> {
  const fdb = await agent.lab.exec(agent.host.netns, ['bridge', 'fdb', 'show']);
  return fdb.stdout.split('\n').some((l) => l.includes(`dst ${vtep} `) && !l.startsWith('00:00:00:00:00:00'));
}

main().catch((err) => {
  process.stderr.write(`convergence: ${(err as Error).message}\n`);
  process.exit(1);
});
