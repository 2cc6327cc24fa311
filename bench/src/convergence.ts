// Convergence of the overlay, measured on namespace hosts with real agents:
//   attach: from `weft run -d` on host A until a ping from a container on
//           host B to the new container succeeds (p50/p99 over N attaches);
//   failure: from kill -9 of host C's agent until C's endpoints are gone
//           from every other host's peer table (the API's endpoint view and
//           the kernel FDB toward C's VTEP).
// Prints one JSON object. Usage: node bench/dist/src/convergence.js [--attaches 50]
import { eventually } from '@weft/e2e/harness/agents';
import { type Cluster, preflight, runPrefix, startCluster } from '@weft/e2e/harness/cluster';

interface Summary {
  count: number;
  p50Ms: number;
  p99Ms: number;
  minMs: number;
  maxMs: number;
}

function summarize(samples: number[]): Summary {
  const s = [...samples].sort((a, b) => a - b);
  const pick = (q: number) => s[Math.min(s.length - 1, Math.ceil(q * s.length) - 1)] as number;
  const round = (x: number) => Math.round(x * 10) / 10;
  return {
    count: s.length,
    p50Ms: round(pick(0.5)),
    p99Ms: round(pick(0.99)),
    minMs: round(s[0] ?? 0),
    maxMs: round(s[s.length - 1] ?? 0),
  };
}

interface ContainerJson {
  name: string;
  sandbox: string;
  endpoints: { ip: string; network: string }[];
}

async function main(): Promise<void> {
  const argIndex = process.argv.indexOf('--attaches');
  const attaches = argIndex > 0 ? Number(process.argv[argIndex + 1]) : 50;
  if (!Number.isInteger(attaches) || attaches < 1 || attaches > 200)
    throw new Error('--attaches must be 1..200');
  const why = preflight();
  if (why) throw new Error(why);

  const cluster: Cluster = await startCluster(runPrefix('b'), { hosts: 3 });
  try {
    const [a, b, c] = cluster.agents as [Cluster['agents'][0], Cluster['agents'][0], Cluster['agents'][0]];
    await a.mustWeft(['network', 'create', '--subnet', '198.18.20.0/24', 'bench-net']);
    const pinger = JSON.parse(
      await eventually('the pinger container on host B', async () => {
        const r = await b.weft([
          '--format',
          'json',
          'run',
          '-d',
          '--net',
          'bench-net',
          '--name',
          'pinger',
          '--',
          'sleep',
          '3600',
        ]);
        return r.code === 0 ? r.stdout : undefined;
      }),
    ) as ContainerJson;

    const attachMs: number[] = [];
    for (let i = 0; i < attaches; i++) {
      const t0 = performance.now();
      const info = JSON.parse(
        await a.mustWeft([
          '--format',
          'json',
          'run',
          '-d',
          '--net',
          'bench-net',
          '--name',
          `c${i}`,
          '--',
          'sleep',
          '3600',
        ]),
      ) as ContainerJson;
      const ip = info.endpoints[0]?.ip as string;
      for (;;) {
        const r = await cluster.lab.exec(pinger.sandbox, ['busybox', 'ping', '-c', '1', '-W', '1', ip], {
          timeoutMs: 5_000,
        });
        if (r.code === 0) break;
        if (performance.now() - t0 > 60_000)
          throw new Error(`c${i} (${ip}) unreachable from host B after 60 s`);
      }
      attachMs.push(performance.now() - t0);
    }

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
    const t0 = performance.now();
    await c.kill('SIGKILL');
    const goneMs: Record<string, number> = {};
    await Promise.all(
      survivors.map(async (s) => {
        await eventually(
          `host C's endpoints gone on ${s.host.name}`,
          async () => ((await hostEndpointsVisible(s, c.host.name, vtep)) ? undefined : true),
          120_000,
          100,
        );
        goneMs[s.host.name] = Math.round(performance.now() - t0);
      }),
    );
    const result = {
      bench: 'convergence',
      hosts: 3,
      dataplane: 'kernel',
      attachToPing: summarize(attachMs),
      deadHostEndpointsGoneMs: { perHost: goneMs, max: Math.max(...Object.values(goneMs)) },
    };
    process.stdout.write(`${JSON.stringify(result)}\n`);
  } finally {
    await cluster.destroy();
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
  const fdb = await agent.lab.exec(agent.host.netns, ['bridge', 'fdb', 'show']);
  const inFdb = fdb.stdout
    .split('\n')
    .some((l) => l.includes(`dst ${vtep} `) && !l.startsWith('00:00:00:00:00:00'));
  return inApi || inFdb;
}

main().catch((err) => {
  process.stderr.write(`convergence: ${(err as Error).message}\n`);
  process.exit(1);
});
