// The one place where Weft talks to the kernel's network configuration.
//
// We drive iproute2 (`ip`, `bridge`) in JSON mode rather than a netlink
// library: the only maintained npm binding (`netlink`) is a native addon with
// an install script and no way to open its socket in another network
// namespace, while `ip -n <netns>` does exactly that — and tests run many
// "hosts" as namespaces in one process. Bulk changes (FDB and neighbour
// entries) go through `-batch` so one process applies hundreds of them.
// Commands that have no `-n` flag (nft, sysctl, ethtool) run under
// `ip netns exec`.

import { spawn } from 'node:child_process';
import { constants as osConstants } from 'node:os';
import { loadNativeAddon, type NativeAddon } from '../dataplane/native.js';

/** A command that exited non-zero; `stderr` is what the tool said. */
export class CommandError extends Error {
  constructor(
    readonly command: string[],
    readonly exitCode: number | null,
    readonly stderr: string,
  ) {
    super(`\`${command.join(' ')}\` failed (exit ${exitCode}): ${stderr.trim() || '(no output)'}`);
    this.name = 'CommandError';
  }
}

/** A change the kernel refused (the native path of netlink/rtnetlink.ts); `code` is the errno name (ENODEV, EEXIST…). */
export class NetlinkError extends Error {
  constructor(
    message: string,
    readonly code: string,
    readonly errno: number,
    /** What was being done, e.g. "create veth wv12ab (peer eth0 in netns c1)". */
    readonly operation: string,
    readonly device: string,
    /** The namespace it was done in; "" = the agent's own. */
    readonly netns: string,
  ) {
    super(message);
    this.name = 'NetlinkError';
  }
}

/**
 * Whether `err` says the device (or namespace) it was pointed at does not
 * exist: iproute2's words, or ENODEV from the native path.
 */
export function isMissingDevice(err: unknown): err is CommandError | NetlinkError {
  return (
    (err instanceof CommandError && /Cannot find device|does not exist/.test(err.stderr)) ||
    (err instanceof NetlinkError && err.code === 'ENODEV')
  );
}

/**
 * Whether `err` says the FDB or neighbour entry a delete named does not exist:
 * iproute2's words, or ENOENT from the native path.
 */
export function isMissingEntry(err: unknown): err is CommandError | NetlinkError {
  return (
    (err instanceof CommandError && /No such file|not found/i.test(err.stderr)) ||
    (err instanceof NetlinkError && err.code === 'ENOENT')
  );
}

/** Output cap per command: a full FDB dump of a large network is a few MB. */
const maxOutputBytes = 64 * 1024 * 1024;

export interface RunOptions {
  /** Written to the command's standard input, then closed. */
  input?: string;
}

type NativeRun = NonNullable<NativeAddon['runCommand']>;
type NativeRunResult = Awaited<ReturnType<NativeRun>>;

let nativeAddon: NativeAddon | null | undefined;

/**
 * The addon for starting processes: posix_spawn (vfork-like), where
 * child_process.spawn forks the whole agent on its event loop (5-20 ms of a
 * large process, several times per container). Null without the addon (not
 * built, another platform) or with WEFT_SPAWN=child_process: then Node's own.
 * Whether this kernel has pidfds (for spawnDetached) is asked once, here.
 */
function processAddon(): NativeAddon | null {
  if (nativeAddon !== undefined) return nativeAddon;
  nativeAddon = null;
  if (process.env.WEFT_SPAWN !== 'child_process') {
    try {
      nativeAddon = loadNativeAddon();
      detachedSupported = Boolean(nativeAddon.spawnDetached && nativeAddon.spawnDetachedSupported?.());
    } catch {
      // no addon: child_process it is
    }
  }
  return nativeAddon;
}

let detachedSupported = false;

/** The addon's runCommand (on a worker thread), or null: see processAddon. */
function nativeRunner(): NativeRun | null {
  return processAddon()?.runCommand ?? null;
}

/** The environment a started command gets: the agent's own, as child_process passes it. */
function childEnv(): string[] {
  return Object.entries(process.env).map(([k, v]) => `${k}=${v}`);
}

function spawnFailed(argv: string[], e: NodeJS.ErrnoException): CommandError {
  const hint =
    e.code === 'ENOENT' ? ` (is ${argv[0]} installed? Debian package: iproute2/nftables/ethtool)` : '';
  return new CommandError(argv, null, `${e.message}${hint}`);
}

/**
 * Native runs wait on libuv's thread pool (4 threads by default), which file
 * I/O and LevelDB share: at most this many commands hold a thread at once
 * (a hung `ip` must not stall the store); more go through child_process.
 */
const maxNativeRunsInFlight = 2;
let nativeRunsInFlight = 0;

/** Runs a command and resolves with its standard output; rejects with CommandError. */
export async function runCommand(argv: string[], opts: RunOptions = {}): Promise<string> {
  const run = nativeRunner();
  if (run === null || nativeRunsInFlight >= maxNativeRunsInFlight) return runWithChildProcess(argv, opts);
  nativeRunsInFlight++;
  try {
    return await runWithNative(run, argv, opts);
  } finally {
    nativeRunsInFlight--;
  }
}

/** How this process starts commands: the addon's posix_spawn, or Node's child_process (no addon, or WEFT_SPAWN=child_process). */
export function processStartPath(): 'native' | 'child_process' {
  return nativeRunner() === null ? 'child_process' : 'native';
}

/** Both ways of running a command, for the tests that hold them to one contract. */
export const commandRunners = {
  native: (argv: string[], opts: RunOptions = {}): Promise<string> => {
    const run = nativeRunner();
    if (run === null) throw new Error('the native addon (with runCommand) is not available');
    return runWithNative(run, argv, opts);
  },
  childProcess: (argv: string[], opts: RunOptions = {}): Promise<string> => runWithChildProcess(argv, opts),
};

async function runWithNative(run: NativeRun, argv: string[], opts: RunOptions): Promise<string> {
  let r: NativeRunResult;
  try {
    r = await run(argv, childEnv(), Buffer.from(opts.input ?? ''), maxOutputBytes);
  } catch (e) {
    throw spawnFailed(argv, e as NodeJS.ErrnoException);
  }
  if (r.outputTruncated)
    throw new CommandError(argv, r.exitCode, `output larger than ${maxOutputBytes} bytes`);
  if (r.exitCode === 0) return r.stdout.toString('utf8');
  throw new CommandError(argv, r.exitCode, r.stderr.toString('utf8'));
}

function runWithChildProcess(argv: string[], opts: RunOptions): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0]!, argv.slice(1), { stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let outBytes = 0;
    child.stdout.on('data', (b: Buffer) => {
      outBytes += b.length;
      if (outBytes > maxOutputBytes) child.kill('SIGKILL');
      else out.push(b);
    });
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.on('error', (e: NodeJS.ErrnoException) => reject(spawnFailed(argv, e)));
    child.on('close', (code) => {
      if (outBytes > maxOutputBytes) {
        reject(new CommandError(argv, code, `output larger than ${maxOutputBytes} bytes`));
      } else if (code === 0) {
        resolve(Buffer.concat(out).toString('utf8'));
      } else {
        reject(new CommandError(argv, code, Buffer.concat(err).toString('utf8')));
      }
    });
    child.stdin.on('error', () => {}); // a tool that exits early closes stdin; its exit code tells why
    child.stdin.end(opts.input ?? '');
  });
}

/**
 * Starts a long-running program (a container's command) in a session of its
 * own, stdin from /dev/null, stdout and stderr to `outputFd`; resolves with
 * its pid once it runs. `onExit` gets its exit code (128 + signal number if a
 * signal ended it). It does not keep the agent's process alive. With the
 * native addon the agent is not forked (see runCommand).
 */
export function startDetached(
  argv: string[],
  outputFd: number,
  onExit: (exitCode: number) => void,
): Promise<number> {
  const addon = processAddon();
  if (addon?.spawnDetached && detachedSupported) {
    try {
      return Promise.resolve(
        addon.spawnDetached(argv, childEnv(), outputFd, (code, signal) => onExit(code ?? 128 + signal)),
      );
    } catch (e) {
      return Promise.reject(new Error(`cannot start ${argv.join(' ')}: ${(e as Error).message}`));
    }
  }
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0]!, argv.slice(1), { detached: true, stdio: ['ignore', outputFd, outputFd] });
    child.once('spawn', () => {
      child.once('exit', (code, signal) =>
        onExit(code ?? 128 + (signal ? (osConstants.signals[signal] ?? 15) : 15)),
      );
      child.unref();
      resolve(child.pid as number);
    });
    child.once('error', (err) => reject(new Error(`cannot start ${argv.join(' ')}: ${err.message}`)));
  });
}

/** One link as `ip -j -d link show` reports it (only the fields Weft reads). */
export interface IpLink {
  ifindex: number;
  ifname: string;
  flags: string[];
  mtu: number;
  operstate?: string;
  address?: string;
  master?: string;
  ifalias?: string;
  link?: string;
  link_index?: number;
  link_netnsid?: number;
  linkinfo?: {
    info_kind?: string;
    info_data?: Record<string, unknown>;
    info_slave_kind?: string;
    info_slave_data?: Record<string, unknown>;
  };
  stats64?: {
    rx: { bytes: number; packets: number; errors: number; dropped: number };
    tx: { bytes: number; packets: number; errors: number; dropped: number };
  };
}

export interface IpAddrInfo {
  family: 'inet' | 'inet6';
  local: string;
  prefixlen: number;
}

export interface IpAddr extends IpLink {
  addr_info: IpAddrInfo[];
}

export interface IpRoute {
  dst: string;
  gateway?: string;
  dev?: string;
  prefsrc?: string;
  protocol?: string;
  scope?: string;
}

export interface IpNeigh {
  dst: string;
  dev?: string;
  lladdr?: string;
  state?: string[];
}

export interface BridgeFdb {
  mac: string;
  ifname?: string;
  dst?: string;
  master?: string;
  flags?: string[];
  state?: string;
  vlan?: number;
}

/**
 * iproute2 and friends run inside one network namespace (`netns`, an `ip netns`
 * name) or in the caller's own namespace (`netns` undefined).
 */
export class NetnsShell {
  constructor(readonly netns?: string) {}

  /** `ip [-n netns] args…`, resolves with stdout. */
  ip(args: string[]): Promise<string> {
    return runCommand(['ip', ...this.nsFlag(), ...args]);
  }

  /** `ip -j …` parsed; an empty answer (nothing matched) is `[]`. */
  async ipJson<T>(args: string[]): Promise<T[]> {
    return parseJsonList<T>(await this.ip(['-j', ...args]), ['ip', ...args]);
  }

  /** Many `ip` commands in one process; stops at the first failing line. */
  async ipBatch(lines: string[]): Promise<void> {
    if (lines.length === 0) return;
    await runCommand(['ip', ...this.nsFlag(), '-batch', '-'], { input: lines.join('\n') + '\n' });
  }

  bridge(args: string[]): Promise<string> {
    return runCommand(['bridge', ...this.nsFlag(), ...args]);
  }

  async bridgeJson<T>(args: string[]): Promise<T[]> {
    return parseJsonList<T>(await this.bridge(['-j', ...args]), ['bridge', ...args]);
  }

  async bridgeBatch(lines: string[]): Promise<void> {
    if (lines.length === 0) return;
    await runCommand(['bridge', ...this.nsFlag(), '-batch', '-'], { input: lines.join('\n') + '\n' });
  }

  /** Any other program (nft, sysctl, ethtool, ping…) inside the namespace. */
  exec(argv: string[], opts: RunOptions = {}): Promise<string> {
    const prefix = this.netns === undefined ? [] : ['ip', 'netns', 'exec', this.netns];
    return runCommand([...prefix, ...argv], opts);
  }

  /** The link, or undefined if there is no link by that name. */
  async link(name: string): Promise<IpLink | undefined> {
    try {
      const links = await this.ipJson<IpLink>(['-d', 'link', 'show', 'dev', name]);
      return links[0];
    } catch (e) {
      if (isMissingDevice(e)) return undefined;
      throw e;
    }
  }

  links(): Promise<IpLink[]> {
    return this.ipJson<IpLink>(['-d', 'link', 'show']);
  }

  addresses(): Promise<IpAddr[]> {
    return this.ipJson<IpAddr>(['addr', 'show']);
  }

  /** Reads a sysctl (dotted name) in this namespace. */
  async sysctl(name: string): Promise<string> {
    return (await this.exec(['sysctl', '-n', name])).trim();
  }

  async setSysctl(name: string, value: string): Promise<void> {
    await this.exec(['sysctl', '-q', '-w', `${name}=${value}`]);
  }

  private nsFlag(): string[] {
    return this.netns === undefined ? [] : ['-n', this.netns];
  }
}

function parseJsonList<T>(text: string, what: string[]): T[] {
  const trimmed = text.trim();
  if (trimmed === '') return [];
  try {
    const parsed = JSON.parse(trimmed) as unknown;
    return Array.isArray(parsed) ? (parsed as T[]) : [parsed as T];
  } catch (e) {
    throw new Error(`could not parse JSON from \`${what.join(' ')}\`: ${(e as Error).message}`);
  }
}

/** `ip netns` names live in /run/netns; list them. */
export async function listNetns(): Promise<string[]> {
  const list = await runCommand(['ip', '-j', 'netns', 'list']);
  return parseJsonList<{ name: string }>(list, ['ip', 'netns', 'list']).map((n) => n.name);
}
