// Loads the userspace data plane's native addon (packages/agent/native, built
// by `npm install` through node-gyp). Only this file knows where the binary is.

import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export interface NativeEngineOptions {
  /** This host's VTEP (underlay IPv4) address; the UDP socket binds to it. */
  vtep: string;
  /** UDP port; default 4789. */
  port?: number;
  /** Open the socket and TAP devices in this network namespace (e.g. /run/netns/NAME). */
  netnsPath?: string;
  /** TAP TSO/checksum offload, UDP GSO/GRO and receive coalescing; default true. */
  offloads?: boolean;
  /**
   * Scheduling of the packet threads; default "realtime": SCHED_FIFO 1 (the
   * closest a thread gets to the softirq context the kernel's VXLAN runs in),
   * falling back to nice -10 without the privilege. "nice" = nice -10 only,
   * "normal" = inherit.
   */
  threadPriority?: 'realtime' | 'nice' | 'normal';
  /**
   * Longest busy-poll window in microseconds, 0..10000; default 200. After a
   * round of work the packet thread keeps polling (as an ordinary thread,
   * yielding) instead of sleeping, for a window that adapts between 0 and
   * this: it grows while answers come back that quickly (a round trip then
   * needs one thread wake-up less) and shrinks to 0 otherwise, so an idle
   * data plane uses no CPU. 0 = always sleep.
   */
  busyPollUs?: number;
  /**
   * Default true: while traffic is sparse (the thread slept ≥ 1 ms before a
   * request), the packet thread confines itself to the CPU of whoever woke
   * it (the container that sent into a TAP, or the CPU that received a
   * request from the underlay), so the next wake-up happens on the waker's
   * CPU instead of by an inter-processor interrupt (on a VM: resuming an
   * idle virtual CPU). Any bulk round or busy spell releases it to every
   * allowed CPU. Uses a tiny eBPF program (needs CAP_BPF; silently off
   * without) and makes TAPs multi-queue (2 queues). false = never change the
   * thread's CPU affinity.
   */
  followWakerCpu?: boolean;
  /**
   * Default 200, 0..5000 µs; 0 = never. While a stream flows (within 1 ms of
   * a round that moved more than 16 KB), the packet thread that runs out of
   * work sleeps this long on a timer and then takes everything that arrived
   * meanwhile in one round, instead of being woken for every frame (an
   * inter-processor interrupt and a context switch each): interrupt
   * moderation, as a NIC's rx-usecs. Small exchanges that run alongside a
   * stream wait up to this long per engine on their path.
   */
  streamNapUs?: number;
}

export interface NativePeer {
  mac: string;
  vtep: string;
  /** Answered locally to ARP requests when given. */
  ip?: string;
}

export interface NativeCounters {
  txPackets: number;
  txBytes: number;
  rxPackets: number;
  rxBytes: number;
  arpReplies: number;
  flooded: number;
  /** TSO super-frames read from the TAP and segmented (offloads on). */
  txSuperFrames: number;
  /** TAP writes carrying several coalesced TCP segments (offloads on). */
  rxCoalescedFrames: number;
  drops: Record<string, number>;
}

export interface NativeThreadStats {
  /** Rounds of work that began with a wake-up from a blocking wait. */
  wakeups: number;
  /** Busy-poll spells begun (after a light round that sent to the underlay, not within 1 ms of bulk traffic). */
  busyPolls: number;
  /** Naps taken while a stream flowed (streamNapUs). */
  naps: number;
  /** Rounds of work that busy polling found (a wake-up saved). */
  busyPollHits: number;
  /** The adaptive busy-poll window as last updated, µs (0..busyPollUs). */
  busyPollWindowUs: number;
  /** Times the thread confined itself to its waker's CPU (followWakerCpu): once the same other CPU woke it twice in a row, as it next blocks with no answer outstanding. */
  cpuMoves: number;
  /** Times bulk traffic or a busy spell released it to every allowed CPU. */
  cpuReleases: number;
  /** Whether the thread follows its wakers' CPUs (followWakerCpu asked for and available). */
  followsWakerCpu: boolean;
  /** Why it does not although followWakerCpu asked for it (e.g. no CAP_BPF); null otherwise. */
  followWakerCpuError: string | null;
  /** The CPU the thread is confined to now; null = every allowed CPU. */
  cpu: number | null;
}

export interface NativeEngine {
  /** Creates the TAP device (IFF_VNET_HDR) for the VNI and adds it to the packet thread's poll set. Idempotent. */
  addNetwork(vni: number, tapName: string): void;
  /** Closes the TAP (the device disappears) once the packet thread is done with it. Idempotent. */
  removeNetwork(vni: number): void;
  /** Replaces the network's MAC → VTEP / IP → MAC table atomically, traffic keeps flowing. */
  setPeers(vni: number, peers: NativePeer[]): void;
  /** Per VNI, engine-wide drops (datagrams that belong to no network), and the packet thread's waiting. */
  counters(): { networks: Record<string, NativeCounters>; host: NativeCounters; thread: NativeThreadStats };
  /** Stops every thread and closes every descriptor. Idempotent. */
  close(): void;
  /** Test hook: runs the send path on virtio-net header + Ethernet frame. */
  injectTapFrame(vni: number, frame: Buffer): void;
  /** Test hook: runs the receive path on one UDP payload (GRO segments of segmentBytes). */
  injectDatagram(payload: Buffer, segmentBytes?: number): void;
}

export interface NativeAddon {
  Engine: new (options: NativeEngineOptions) => NativeEngine;
  /** Native threads currently running, over all engines in this process. */
  liveThreads(): number;
  dropReasons: string[];
  /** Test hook: the Internet checksum (RFC 1071) the engine stores for these bytes, big-endian; 0 is sent as 0xffff. */
  internetChecksum(data: Buffer): number;
  /** Runs a short command off the event loop (native/src/spawn.cc; netlink/ip.ts's runCommand uses it). */
  runCommand?: (
    argv: string[],
    env: string[],
    input: Buffer,
    maxOutputBytes: number,
  ) => Promise<{
    exitCode: number | null;
    signal: number;
    stdout: Buffer;
    stderr: Buffer;
    outputTruncated: boolean;
  }>;
  /** Starts a long-running program detached, without forking the agent (native/src/spawn.cc); returns its pid. */
  spawnDetached?: (
    argv: string[],
    env: string[],
    outputFd: number,
    onExit: (exitCode: number | null, signal: number) => void,
  ) => number;
  /** Whether spawnDetached can watch exits here (pidfds, Linux 5.3+). */
  spawnDetachedSupported?: () => boolean;
}

/** The @weft/agent package root, from src/ (tsx) or dist/src/ (compiled). */
function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 5; i++) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg) && JSON.parse(readFileSync(pkg, 'utf8')).name === '@weft/agent') return dir;
    dir = dirname(dir);
  }
  throw new Error('cannot find the @weft/agent package root to load the native addon from');
}

const loaded = new Map<string, NativeAddon>();

export function nativeAddonPath(): string {
  return (
    process.env.WEFT_NATIVE_ADDON ?? join(packageRoot(), 'native', 'build', 'Release', 'weft_native.node')
  );
}

/** The addon (default: the one `npm install` built), or a clear error saying how to build it. */
export function loadNativeAddon(path = nativeAddonPath()): NativeAddon {
  const cached = loaded.get(path);
  if (cached !== undefined) return cached;
  if (!existsSync(path)) {
    throw new Error(
      `the userspace data plane's native addon is not built (no ${path}). ` +
        'Build it with `npm install` at the repository root (or `npm rebuild -w @weft/agent`); ' +
        'it needs g++, make and python3. Or use the kernel data plane.',
    );
  }
  let addon: NativeAddon;
  try {
    addon = createRequire(import.meta.url)(path) as NativeAddon;
  } catch (e) {
    throw new Error(
      `cannot load the native addon ${path}: ${(e as Error).message}. ` +
        'It was probably built for another Node version or platform: rebuild with `npm rebuild -w @weft/agent`.',
    );
  }
  loaded.set(path, addon);
  return addon;
}
