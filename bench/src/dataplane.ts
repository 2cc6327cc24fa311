// Data-plane throughput and latency, container -> container across two
// namespace hosts joined by a veth underlay (MTU 1500), for each variant:
//   underlay     no overlay: containers routed over the underlay (the ceiling)
//   kernel       Linux VXLAN devices (KernelDataplane)
//   userspace    the native addon engine with TSO/GSO/GRO (UserspaceDataplane)
//   userspace-nooffload   the same engine, one packet per frame (optional)
//   userspace-nopoll      the same engine without busy polling (optional)
//   userspace-1queue      the same engine with one queue: one packet thread on any CPU,
//                         no steering by CPU (queues 1; optional)
//   userspace-nap         the same engine napping 200 us when out of work during streams
//                         instead of being woken per frame (streamNapUs 200, which the
//                         engine picks by itself only where packets are not steered by CPU;
//                         optional)
//   userspace-nice        the same engine as an ordinary nice -10 thread, not SCHED_FIFO
//                         (threadPriority 'nice'; optional)
//   userspace-baseline    another build of the addon, given by --baseline-addon
//                         PATH (e.g. main's, to measure a change in one run)
// Every variant has its own pair of hosts, all built up front; each round
// measures every variant in turn (rotating the order), so background load on
// this shared machine hits all variants alike. iperf3 -t <seconds> with 1 and
// 4 streams, and ping RTT. Prints one JSON line per variant: medians over
// rounds, and the ratio to kernel VXLAN of the same run.
//
// RTT is measured twice. `rtt`: ping(8) one variant after the other (with
// the engines' CPU use and wake-ups per ping). `rtt-alternating`: one
// process (bench/pinger/alternate-ping.c, built with cc) sends one echo
// request to each variant's server in turn, so every ping of one variant
// has a ping of each other variant next to it in time and a drifting
// machine moves all alike. Sends are --ping-interval / variants apart, so
// each variant's own pings are --ping-interval apart, as with ping(8) (its
// path idles that long; the machine as a whole does not). Per round the variant's mean and p50
// minus kernel VXLAN's of that same run; the medians of those differences
// over rounds are reported.
//
// The userspace engines run in this process: their threads' CPU time (from
// /proc/self/task/*/schedstat, threads named weft-*) is reported while every
// variant is idle and while each variant is pinged, i.e. what busy-polling
// costs, and per KB carried by the single stream and by the four
// (engineCpuNsPerKb1Stream, engineCpuNsPerKb4Streams).
//
// Usage: npm run bench:dataplane [-- --seconds 5 --rounds 3 --variants underlay,kernel,userspace
//        --measure throughput,rtt,rtt-alternating,loaded-rtt --pings 50 --baseline-addon PATH --busy-poll-us N
//        --stream-nap-us N --ping-interval S --congestion NAME]   (busy-poll N for every userspace
//        variant but userspace-nopoll, stream-nap N for userspace and userspace-1queue: against userspace-baseline
//        with the same build, or against another invocation, it compares two settings; NAME is the
//        streams' TCP congestion control, iperf3 -C, by default the containers' own)
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { KernelDataplane } from '@weft/agent/dataplane/kernel';
import { macForIp } from '@weft/agent/dataplane/names';
import { UserspaceDataplane } from '@weft/agent/dataplane/userspace';
import { NetnsShell, runCommand } from '@weft/agent/netlink/ip';
import type { Dataplane, LocalEndpoint, NetworkSpec } from '@weft/overlay';
import { benchArgs } from './args.js';
import { mean, median, percentile } from './stats.js';

type Variant =
  | 'underlay'
  | 'kernel'
  | 'userspace'
  | 'userspace-nooffload'
  | 'userspace-nopoll'
  | 'userspace-1queue'
  | 'userspace-nap'
  | 'userspace-nice'
  | 'userspace-baseline';

type Measure = 'throughput' | 'rtt' | 'rtt-alternating' | 'loaded-rtt';
const measures: Measure[] = ['throughput', 'rtt', 'rtt-alternating', 'loaded-rtt'];

/** Seconds between pings unless --ping-interval says otherwise (ping -i). */
const defaultPingIntervalS = 0.02;

interface Args {
  seconds: number;
  rounds: number;
  variants: Variant[];
  measure: Measure[];
  pings: number;
  baselineAddon: string | undefined;
  busyPollUs: number | undefined;
  streamNapUs: number | undefined;
  /** Seconds between the pings of --measure rtt: how long the path idles before each one. */
  pingInterval: number;
  /** TCP congestion control of the iperf3 streams (-C); undefined = the containers' default. */
  congestion: string | undefined;
}

const usage = `usage: npm run bench:dataplane -- [--seconds 5] [--rounds 3]
  [--variants underlay,kernel,userspace[,userspace-nooffload,userspace-nopoll,userspace-1queue,
              userspace-nap,userspace-nice,userspace-baseline]]
  [--measure throughput,rtt,rtt-alternating[,loaded-rtt]] [--pings 50] [--ping-interval 0.02]
  [--baseline-addon PATH] [--busy-poll-us N] [--stream-nap-us N] [--congestion cubic|bbr|...]`;

function parseArgs(): Args {
  const opts = benchArgs(usage, {
    seconds: { type: 'string' },
    rounds: { type: 'string' },
    variants: { type: 'string' },
    measure: { type: 'string' },
    pings: { type: 'string' },
    'baseline-addon': { type: 'string' },
    'busy-poll-us': { type: 'string' },
    'stream-nap-us': { type: 'string' },
    'ping-interval': { type: 'string' },
    congestion: { type: 'string' },
  });
  const seconds = Number(opts.seconds ?? 5);
  const rounds = Number(opts.rounds ?? 3);
  const variants = (opts.variants ?? 'underlay,kernel,userspace').split(',') as Variant[];
  const known: Variant[] = [
    'underlay',
    'kernel',
    'userspace',
    'userspace-nooffload',
    'userspace-nopoll',
    'userspace-1queue',
    'userspace-nap',
    'userspace-nice',
    'userspace-baseline',
  ];
  for (const v of variants)
    if (!known.includes(v)) throw new Error(`unknown variant "${v}"; known: ${known.join(', ')}`);
  if (!variants.includes('kernel'))
    throw new Error('the kernel variant is the baseline: include it in --variants');
  if (!(seconds >= 1 && seconds <= 30)) throw new Error('--seconds must be 1..30');
  if (!(rounds >= 1 && rounds <= 10)) throw new Error('--rounds must be 1..10');
  const measure = (opts.measure ?? 'throughput,rtt,rtt-alternating').split(',') as Measure[];
  for (const m of measure)
    if (!measures.includes(m)) throw new Error(`unknown --measure "${m}"; known: ${measures.join(', ')}`);
  const pings = Number(opts.pings ?? 50);
  if (!(Number.isInteger(pings) && pings >= 5 && pings <= 1000)) throw new Error('--pings must be 5..1000');
  const baselineAddon = opts['baseline-addon'];
  if (baselineAddon !== undefined && !variants.includes('userspace-baseline'))
    variants.push('userspace-baseline');
  if (variants.includes('userspace-baseline') && baselineAddon === undefined)
    throw new Error('the userspace-baseline variant needs --baseline-addon PATH (a weft_native.node)');
  const busyPollText = opts['busy-poll-us'];
  const busyPollUs = busyPollText === undefined ? undefined : Number(busyPollText);
  if (busyPollUs !== undefined && !(Number.isInteger(busyPollUs) && busyPollUs >= 0 && busyPollUs <= 10000))
    throw new Error('--busy-poll-us must be 0..10000');
  const napText = opts['stream-nap-us'];
  const streamNapUs = napText === undefined ? undefined : Number(napText);
  if (
    streamNapUs !== undefined &&
    !(Number.isInteger(streamNapUs) && streamNapUs >= 0 && streamNapUs <= 5000)
  )
    throw new Error('--stream-nap-us must be 0..5000');
  const pingInterval = Number(opts['ping-interval'] ?? defaultPingIntervalS);
  // iputils ping refuses < 2 ms to non-root users; > 1 s makes a round of pings take minutes
  if (!(pingInterval >= 0.002 && pingInterval <= 1))
    throw new Error('--ping-interval must be 0.002..1 (seconds)');
  const congestion = opts.congestion;
  if (congestion !== undefined) {
    const available = readFileSync('/proc/sys/net/ipv4/tcp_available_congestion_control', 'utf8')
      .trim()
      .split(/\s+/);
    if (!available.includes(congestion))
      throw new Error(
        `--congestion "${congestion}" is not available on this kernel (available: ${available.join(', ')}; ` +
          `another may need its module loaded: modprobe tcp_${congestion})`,
      );
  }
  return {
    seconds,
    rounds,
    variants,
    measure,
    pings,
    baselineAddon,
    busyPollUs,
    streamNapUs,
    pingInterval,
    congestion,
  };
}

interface Pair {
  variant: Variant;
  hosts: [string, string];
  containers: [string, string];
  /** Address of the server container (containers[1]). */
  serverIp: string;
  dataplanes: Dataplane[];
}

const prefix = `wb${process.pid % 1000}${randomBytes(2).toString('hex')}`;
const namespaces: string[] = [];
const tempDirs: string[] = [];

async function addNetns(name: string): Promise<NetnsShell> {
  await runCommand(['ip', 'netns', 'add', name]);
  namespaces.push(name);
  const sh = new NetnsShell(name);
  await sh.ip(['link', 'set', 'lo', 'up']);
  return sh;
}

async function buildPair(variant: Variant, index: number, args: Args): Promise<Pair> {
  const hosts: [string, string] = [`${prefix}-${index}a`, `${prefix}-${index}b`];
  const containers: [string, string] = [`${prefix}-${index}ca`, `${prefix}-${index}cb`];
  const vteps = ['192.0.2.1', '192.0.2.2'];
  const [ha, hb] = [await addNetns(hosts[0]), await addNetns(hosts[1])];
  await Promise.all(containers.map(addNetns));
  // The underlay: one veth between the hosts, default offloads (as a NIC).
  await ha.ip(['link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', hosts[1]]);
  await ha.ipBatch([`address add ${vteps[0]}/24 dev eth0`, 'link set eth0 up']);
  await hb.ipBatch([`address add ${vteps[1]}/24 dev eth0`, 'link set eth0 up']);
  const pair: Pair = { variant, hosts, containers, serverIp: '', dataplanes: [] };

  if (variant === 'underlay') {
    // Containers routed through their hosts: 198.18.1.0/24 behind a, 198.18.2.0/24 behind b.
    for (const [i, sh] of [ha, hb].entries()) {
      const net = `198.18.${i + 1}`;
      await sh.ip(['link', 'add', 'c0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', containers[i]!]);
      await sh.ipBatch([
        `address add ${net}.1/24 dev c0`,
        'link set c0 up',
        `route add 198.18.${2 - i}.0/24 via ${vteps[1 - i]}`,
      ]);
      await sh.exec(['sysctl', '-q', '-w', 'net.ipv4.ip_forward=1']);
      await new NetnsShell(containers[i]).ipBatch([
        `address add ${net}.2/24 dev eth0`,
        'link set eth0 up',
        `route add default via ${net}.1`,
      ]);
    }
    pair.serverIp = '198.18.2.2';
    return pair;
  }

  const network: NetworkSpec = {
    id: randomBytes(32).toString('hex'),
    name: 'bench',
    vni: 4242,
    subnets: [{ subnet: '198.18.0.0/24', gateway: '198.18.0.1' }],
    internal: true,
  };
  const endpoints: LocalEndpoint[] = containers.map((sandbox, i) => {
    const ip = `198.18.0.${2 + i}`;
    return {
      networkId: network.id,
      endpointId: `ep${i}`,
      sandbox,
      ifName: 'eth0',
      ip,
      prefixLength: 24,
      mac: macForIp(ip),
      gateway: '198.18.0.1',
    };
  });
  for (const [i, host] of hosts.entries()) {
    const options = { vtep: vteps[i]!, hostNetns: host, gatewaySubnet: null };
    const dp: Dataplane =
      variant === 'kernel'
        ? new KernelDataplane(options)
        : new UserspaceDataplane({
            ...options,
            offloads: variant !== 'userspace-nooffload',
            busyPollUs: variant === 'userspace-nopoll' ? 0 : args.busyPollUs,
            queues: variant === 'userspace-1queue' ? 1 : undefined,
            streamNapUs:
              variant === 'userspace-nap'
                ? 200
                : variant === 'userspace' || variant === 'userspace-1queue'
                  ? args.streamNapUs
                  : undefined,
            threadPriority: variant === 'userspace-nice' ? 'nice' : undefined,
            addonPath: variant === 'userspace-baseline' ? args.baselineAddon : undefined,
          });
    pair.dataplanes.push(dp);
    await dp.start();
    await dp.ensureNetwork(network);
    await dp.attach(endpoints[i]!);
  }
  for (const [i, dp] of pair.dataplanes.entries()) {
    const remote = endpoints[1 - i]!;
    await dp.addPeer({
      networkId: network.id,
      endpointId: remote.endpointId,
      ip: remote.ip,
      mac: remote.mac,
      vtep: vteps[1 - i]!,
    });
  }
  pair.serverIp = endpoints[1]!.ip;
  return pair;
}

/** The TCP congestion control a container's connections get by default (per network namespace). */
function containerCongestionControl(netns: string): string {
  const r = spawnSync('ip', ['netns', 'exec', netns, 'cat', '/proc/sys/net/ipv4/tcp_congestion_control'], {
    encoding: 'utf8',
  });
  if (r.status !== 0) throw new Error(`cannot read the congestion control of ${netns}: ${r.stderr.trim()}`);
  return r.stdout.trim();
}

/** Children still running (iperf3, ping, the pinger): killed by cleanup() on a signal. */
const children = new Set<ChildProcess>();

/** spawn(), remembering the child until it exits. */
function track(child: ChildProcess): ChildProcess {
  children.add(child);
  child.once('close', () => children.delete(child));
  return child;
}

function netnsExec(netns: string, argv: string[]): ChildProcess {
  // `ip netns exec` execs the command, so the child is iperf3 or ping itself.
  return track(spawn('ip', ['netns', 'exec', netns, ...argv], { stdio: ['ignore', 'pipe', 'pipe'] }));
}

function collect(
  child: ChildProcess,
  timeoutMs: number,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (b: Buffer) => (stdout += b));
    child.stderr!.on('data', (b: Buffer) => (stderr += b));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** Gbit/s received by an iperf3 server in containers[1] from a client in containers[0]. */
async function iperf(
  pair: Pair,
  streams: number,
  seconds: number,
  congestion: string | undefined,
): Promise<number> {
  const server = netnsExec(pair.containers[1], ['iperf3', '-s', '-1', '-p', '5201', '--forceflush']);
  const serverDone = collect(server, (seconds + 20) * 1000);
  try {
    await new Promise<void>((resolve, reject) => {
      let out = '';
      server.stdout!.on('data', (b: Buffer) => {
        out += b;
        if (out.includes('listening')) resolve();
      });
      server.on('close', () => reject(new Error(`iperf3 server in ${pair.containers[1]} exited early`)));
    });
    const client = await collect(
      netnsExec(pair.containers[0], [
        'iperf3',
        '-c',
        pair.serverIp,
        '-p',
        '5201',
        '-t',
        String(seconds),
        '-P',
        String(streams),
        ...(congestion === undefined ? [] : ['-C', congestion]),
        '-J',
      ]),
      (seconds + 20) * 1000,
    );
    const report = JSON.parse(client.stdout) as {
      end?: { sum_received?: { bits_per_second: number } };
      error?: string;
    };
    if (report.end?.sum_received === undefined)
      throw new Error(`iperf3 failed (${pair.variant}): ${report.error ?? client.stderr}`);
    return report.end.sum_received.bits_per_second / 1e9;
  } finally {
    server.kill('SIGKILL');
    await serverDone;
  }
}

/** Mean and median RTT in ms over `count` pings `intervalS` apart, and every ping's. */
async function pingRtt(
  pair: Pair,
  count: number,
  intervalS = defaultPingIntervalS,
): Promise<{ meanMs: number; p50Ms: number; eachMs: number[] }> {
  const r = await collect(
    netnsExec(pair.containers[0], [
      'ping',
      '-n',
      '-c',
      String(count),
      '-i',
      String(intervalS),
      pair.serverIp,
    ]),
    count * intervalS * 1000 + 20_000,
  );
  const m = /= [\d.]+\/([\d.]+)\//.exec(r.stdout);
  const each = [...r.stdout.matchAll(/time=([\d.]+) ms/g)].map((x) => Number(x[1]));
  if (m === null || each.length === 0)
    throw new Error(`ping failed (${pair.variant}): ${r.stdout}${r.stderr}`);
  return { meanMs: Number(m[1]), p50Ms: median(each), eachMs: each };
}

/** Builds bench/pinger/alternate-ping.c into a temporary directory; returns the binary's path. */
function buildAlternatePing(): string {
  const source = fileURLToPath(new URL('../../pinger/alternate-ping.c', import.meta.url));
  const dir = mkdtempSync(join(tmpdir(), 'weft-bench-'));
  tempDirs.push(dir);
  const binary = join(dir, 'alternate-ping');
  const r = spawnSync('cc', ['-O2', '-o', binary, source], { encoding: 'utf8' });
  if (r.error || r.status !== 0)
    throw new Error(`cannot build ${source} (needs a C compiler, cc): ${r.error?.message ?? r.stderr}`);
  return binary;
}

/** One alternate-ping run over every pair, each pinged every intervalS: each variant's RTTs (ms). */
async function alternatingRtt(
  binary: string,
  pairs: Pair[],
  count: number,
  intervalS: number,
): Promise<Map<Variant, { rttMs: number[]; lost: number }>> {
  const argv = [String(count), String(Math.round((intervalS * 1e6) / pairs.length))];
  for (const p of pairs) argv.push(p.containers[0], p.serverIp);
  const r = await collect(
    track(spawn(binary, argv, { stdio: ['ignore', 'pipe', 'pipe'] })),
    count * (intervalS * 1000 + pairs.length * 1000) + 20_000,
  );
  if (r.code !== 0) throw new Error(`alternate-ping failed (exit ${r.code}): ${r.stderr}`);
  const out = new Map<Variant, { rttMs: number[]; lost: number }>();
  for (const line of r.stdout.trim().split('\n')) {
    const t = JSON.parse(line) as { netns: string; lost: number; rttMs: number[] };
    const pair = pairs.find((p) => p.containers[0] === t.netns)!;
    if (t.rttMs.length === 0) throw new Error(`alternate-ping: no answer from ${pair.variant}'s server`);
    out.set(pair.variant, { rttMs: t.rttMs, lost: t.lost });
  }
  return out;
}

/** CPU time (ns) used so far by this process's native packet threads (named weft-*). */
function engineCpuNs(): number {
  let total = 0;
  for (const tid of readdirSync('/proc/self/task')) {
    try {
      if (!readFileSync(`/proc/self/task/${tid}/comm`, 'utf8').startsWith('weft-')) continue;
      total += Number(readFileSync(`/proc/self/task/${tid}/schedstat`, 'utf8').split(' ')[0]);
    } catch {
      // the thread ended meanwhile
    }
  }
  return total;
}

/** Packet-thread wake-ups and busy-poll hits so far, summed over the pair's userspace hosts. */
function threadStats(pair: Pair): { wakeups: number; busyPollHits: number } {
  const sum = { wakeups: 0, busyPollHits: 0 };
  for (const dp of pair.dataplanes) {
    if (!(dp instanceof UserspaceDataplane)) continue;
    const t = dp.engineCounters()?.thread;
    if (t === undefined) continue; // a baseline build without thread stats
    sum.wakeups += t.wakeups;
    sum.busyPollHits += t.busyPollHits;
  }
  return sum;
}

/** Runs fn and returns its result and the packet threads' CPU use meanwhile, in % of one core. */
async function withEngineCpu<T>(fn: () => Promise<T>): Promise<{ value: T; cpuPct: number }> {
  const cpu0 = engineCpuNs();
  const t0 = process.hrtime.bigint();
  const value = await fn();
  const wallNs = Number(process.hrtime.bigint() - t0);
  return { value, cpuPct: ((engineCpuNs() - cpu0) / wallNs) * 100 };
}

const round3 = (x: number) => Math.round(x * 1000) / 1000;

async function cleanup(pairs: Pair[]): Promise<void> {
  // An iperf3 client whose server's namespace is deleted under it spins at
  // 100% CPU (iperf3 3.12) and would skew whatever runs next.
  for (const child of children) child.kill('SIGKILL');
  for (const p of pairs) for (const dp of p.dataplanes) await dp.stop().catch(() => {});
  for (const ns of namespaces.splice(0).reverse())
    await runCommand(['ip', 'netns', 'delete', ns]).catch(() => {});
  for (const dir of tempDirs.splice(0)) rmSync(dir, { recursive: true, force: true });
}

async function main(): Promise<void> {
  const args = parseArgs();
  if (process.getuid?.() !== 0) throw new Error('the data-plane bench needs root (network namespaces)');
  const pairs: Pair[] = [];
  const onSignal = () => {
    void cleanup(pairs).finally(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    // This machine may be shared: the load says how far to trust absolute numbers.
    const loadBefore = loadavg()[0]!;
    const alternatePing = args.measure.includes('rtt-alternating') ? buildAlternatePing() : undefined;
    for (const [i, v] of args.variants.entries()) pairs.push(await buildPair(v, i, args));
    // What the streams run: TCP's congestion control moves absolute figures
    // (on the development VM BBR's pacing timers halved the kernel's single
    // stream against CUBIC), so every line says which one it was.
    const congestionControl = args.congestion ?? containerCongestionControl(pairs[0]!.containers[0]);
    const results = new Map<
      Variant,
      {
        gbps1: number[];
        gbps4: number[];
        rttMs: number[];
        rttP50Ms: number[];
        rttEachMs: number[];
        pingCpuPct: number[];
        cpuNsPerKb1Stream: number[];
        cpuNsPerKb4Streams: number[];
        loadedRttP50Ms: number[];
        wakeupsPerPing: number[];
        busyPollHitsPerPing: number[];
        /** rtt-alternating, per round: mean and p50, and both minus kernel VXLAN's of that run. */
        altMeanMs: number[];
        altP50Ms: number[];
        altMeanDeltaMs: number[];
        altP50DeltaMs: number[];
        altEachMs: number[];
        altLost: number;
      }
    >();
    for (const p of pairs) {
      results.set(p.variant, {
        gbps1: [],
        gbps4: [],
        rttMs: [],
        rttP50Ms: [],
        rttEachMs: [],
        pingCpuPct: [],
        cpuNsPerKb1Stream: [],
        cpuNsPerKb4Streams: [],
        loadedRttP50Ms: [],
        wakeupsPerPing: [],
        busyPollHitsPerPing: [],
        altMeanMs: [],
        altP50Ms: [],
        altMeanDeltaMs: [],
        altP50DeltaMs: [],
        altEachMs: [],
        altLost: 0,
      });
      await pingRtt(p, 10); // warm-up: ARP, caches, busy-poll windows
    }
    // Every data plane idle: what the packet threads cost when nothing flows.
    const idle = await withEngineCpu(() => new Promise((r) => setTimeout(r, 2000)));
    for (let round = 0; round < args.rounds; round++) {
      const order = pairs.map((_, i) => pairs[(i + round) % pairs.length]!);
      for (const p of order) {
        const r = results.get(p.variant)!;
        if (args.measure.includes('throughput')) {
          // Gbit/s, and the engines' CPU per KB carried: steadier than Gbit/s
          // on a loaded machine (it does not count time the threads waited for a core).
          const streamsRun = async (streams: number, gbpsOut: number[], nsPerKbOut: number[]) => {
            const cpu0 = engineCpuNs();
            const gbps = await iperf(p, streams, args.seconds, args.congestion);
            gbpsOut.push(gbps);
            const kb = (gbps * 1e9 * args.seconds) / 8 / 1000;
            if (p.variant.startsWith('userspace')) nsPerKbOut.push((engineCpuNs() - cpu0) / kb);
          };
          await streamsRun(1, r.gbps1, r.cpuNsPerKb1Stream);
          await streamsRun(4, r.gbps4, r.cpuNsPerKb4Streams);
        }
        if (args.measure.includes('loaded-rtt')) {
          // Pings next to one iperf3 stream (from 1 s in, 20 ms apart, until
          // 0.5 s before it ends): what a small exchange waits behind a stream.
          const count = Math.max(5, Math.floor((args.seconds - 1.5) / defaultPingIntervalS));
          const stream = iperf(p, 1, args.seconds, args.congestion);
          await new Promise((resolve) => setTimeout(resolve, 1000));
          const pinged = await pingRtt(p, count);
          await stream;
          r.loadedRttP50Ms.push(pinged.p50Ms);
        }
        if (args.measure.includes('rtt')) {
          const before = threadStats(p);
          const { value, cpuPct } = await withEngineCpu(() => pingRtt(p, args.pings, args.pingInterval));
          const after = threadStats(p);
          r.rttMs.push(value.meanMs);
          r.rttP50Ms.push(value.p50Ms);
          r.rttEachMs.push(...value.eachMs);
          r.pingCpuPct.push(cpuPct);
          r.wakeupsPerPing.push((after.wakeups - before.wakeups) / args.pings);
          r.busyPollHitsPerPing.push((after.busyPollHits - before.busyPollHits) / args.pings);
        }
      }
      if (alternatePing !== undefined) {
        const each = await alternatingRtt(alternatePing, pairs, args.pings, args.pingInterval);
        const k = each.get('kernel')!.rttMs;
        for (const [variant, { rttMs: xs, lost }] of each) {
          const r = results.get(variant)!;
          r.altLost += lost;
          r.altMeanMs.push(mean(xs));
          r.altP50Ms.push(median(xs));
          r.altMeanDeltaMs.push(mean(xs) - mean(k));
          r.altP50DeltaMs.push(median(xs) - median(k));
          r.altEachMs.push(...xs);
        }
      }
    }
    const kernel = results.get('kernel')!;
    const k1 = median(kernel.gbps1);
    const k4 = median(kernel.gbps4);
    const kRtt = median(kernel.rttMs);
    const kRttP50 = median(kernel.rttP50Ms);
    const medianOrNull = (xs: number[]) => (xs.length === 0 ? null : round3(median(xs)));
    const ratio = (xs: number[], k: number) => (xs.length === 0 ? null : round3(median(xs) / k));
    for (const p of pairs) {
      const r = results.get(p.variant)!;
      const line = {
        bench: 'dataplane',
        variant: p.variant,
        seconds: args.seconds,
        rounds: args.rounds,
        pingIntervalS: args.pingInterval,
        congestionControl,
        gbps1Stream: medianOrNull(r.gbps1),
        gbps4Streams: medianOrNull(r.gbps4),
        rttMs: medianOrNull(r.rttMs),
        ratioToKernel1Stream: ratio(r.gbps1, k1),
        ratioToKernel4Streams: ratio(r.gbps4, k4),
        rttDeltaToKernelMs: r.rttMs.length === 0 ? null : round3(median(r.rttMs) - kRtt),
        // Median of single pings: robust against the outliers a loaded machine adds to the mean.
        rttP50Ms: medianOrNull(r.rttP50Ms),
        rttP50DeltaToKernelMs: r.rttP50Ms.length === 0 ? null : round3(median(r.rttP50Ms) - kRttP50),
        // 99th percentile of every ping of every round: the tail a loaded machine adds.
        rttP99Ms: r.rttEachMs.length === 0 ? null : round3(percentile(r.rttEachMs, 0.99)),
        // Both hosts' packet threads, per ping (request + reply); 0 for kernel and underlay.
        wakeupsPerPing: medianOrNull(r.wakeupsPerPing),
        busyPollHitsPerPing: medianOrNull(r.busyPollHitsPerPing),
        // Native packet threads of every engine in this process, % of one core.
        engineCpuPct: { allIdle: round3(idle.cpuPct), whilePingingThis: medianOrNull(r.pingCpuPct) },
        // --measure rtt-alternating: medians over rounds (see the top of this file).
        rttAlternating:
          r.altMeanMs.length === 0
            ? null
            : {
                meanMs: medianOrNull(r.altMeanMs),
                p50Ms: medianOrNull(r.altP50Ms),
                p99Ms: round3(percentile(r.altEachMs, 0.99)),
                meanDeltaToKernelMs: medianOrNull(r.altMeanDeltaMs),
                p50DeltaToKernelMs: medianOrNull(r.altP50DeltaMs),
                lost: r.altLost,
              },
        // Ping p50 while one stream runs (--measure loaded-rtt).
        rttNextToStreamP50Ms: medianOrNull(r.loadedRttP50Ms),
        // Both hosts' packet threads' CPU time per KB of the 1-stream run (userspace variants).
        engineCpuNsPerKb1Stream: medianOrNull(r.cpuNsPerKb1Stream),
        engineCpuNsPerKb4Streams: medianOrNull(r.cpuNsPerKb4Streams),
        loadAverage1m: { before: round3(loadBefore), after: round3(loadavg()[0]!) },
        samples: {
          gbps1Stream: r.gbps1.map(round3),
          gbps4Streams: r.gbps4.map(round3),
          rttMs: r.rttMs.map(round3),
        },
      };
      console.log(JSON.stringify(line));
    }
  } finally {
    await cleanup(pairs);
  }
}

main().catch((e) => {
  console.error(`bench:dataplane failed: ${(e as Error).message}`);
  process.exit(1);
});
