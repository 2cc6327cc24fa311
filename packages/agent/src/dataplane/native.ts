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
   * round of work a packet thread keeps polling (as an ordinary thread,
   * yielding) instead of sleeping, for a window that adapts between 0 and
   * this: it grows while answers come back that quickly (a round trip then
   * needs one thread wake-up less) and shrinks to 0 otherwise, so an idle
   * data plane uses no CPU. 0 = always sleep.
   */
  busyPollUs?: number;
  /**
   * Queues, each with its own packet thread, 0..64; default 0 = one per CPU.
   * As a NIC with RSS: each queue has a socket of a SO_REUSEPORT group on the
   * VTEP address and a queue of every network's (multi-queue) TAP, and every
   * packet is steered to the queue of the CPU it shows up on (the CPU that
   * received the datagram, the CPU whose process sent the frame), whose
   * thread is bound to that CPU. So a packet thread is always woken from its
   * own CPU, never by an inter-processor interrupt (on a VM: resuming an idle
   * virtual CPU, 75–200 µs). A TCP flow stays on the queue of the CPU that
   * sent its first frame, so its segments (sent from its writer's CPU and
   * from its ACKs' softirq) are never reordered. TAP steering is a small eBPF
   * program with a flow map (needs CAP_BPF; without it the TAP's flow hash
   * picks queues, see NativeThreadStats.steeringError). 1 = one thread on
   * any CPU, no steering.
   */
  queues?: number;
  /**
   * 0..5000 µs, 0 = never; by default automatic: 0 while packets are steered
   * by CPU, 200 when they are not (`queues: 1`, or steering unavailable).
   * While a stream flows (within 1 ms of a round of its own that moved more
   * than 16 KB), a packet thread that runs out of work sleeps this long on a
   * timer and then takes everything that arrived meanwhile in one round,
   * instead of being woken for every frame: interrupt moderation, as a
   * NIC's rx-usecs. It pays where a wake-up crosses CPUs (an
   * inter-processor interrupt); steered by CPU a queue's wake-ups come from
   * its own CPU (a context switch), which costs less than the nap's timer
   * interrupt. Small exchanges that run alongside a stream wait up to this
   * long per engine on their path.
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
  /** The stream nap in effect, µs: the streamNapUs option, or the automatic choice (0 when steered by CPU, 200 when not). */
  streamNapUs: number;
  /** Rounds of work that busy polling found (a wake-up saved). */
  busyPollHits: number;
  /** The adaptive busy-poll window as last updated, µs (0..busyPollUs). */
  busyPollWindowUs: number;
  /** Packet threads, one per queue. */
  threads: number;
  /** Whether packets go to the queue of the CPU they show up on (several queues and the steering programs in place). */
  steersByCpu: boolean;
  /** Why they do not although there are several queues (e.g. no CAP_BPF); null otherwise. */
  steeringError: string | null;
  /** Per queue, in queue order (queue i serves CPU i): its thread's CPU (null = any) and rounds of work. */
  queues: { cpu: number | null; rounds: number; wakeups: number }[];
}

export interface NativeEngine {
  /** Creates the multi-queue TAP device (IFF_VNET_HDR) for the VNI and adds each queue to its packet thread's poll set. Idempotent. */
  addNetwork(vni: number, tapName: string): void;
  /** Closes the TAP (the device disappears) once every packet thread is done with it. Idempotent. */
  removeNetwork(vni: number): void;
  /** Replaces the network's MAC → VTEP / IP → MAC table atomically, traffic keeps flowing. */
  setPeers(vni: number, peers: NativePeer[]): void;
  /** Per VNI, engine-wide drops (datagrams that belong to no network), and the packet threads' waiting and queues. */
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
