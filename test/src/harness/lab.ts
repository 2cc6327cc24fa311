// A lab of hosts on one machine: each host is a network namespace on a shared
// underlay (192.0.2.0/24) behind a switch namespace, plus an "outside"
// namespace at 198.51.100.1 that stands for the world beyond the overlay.
// Names carry a per-run prefix so concurrent runs never collide; destroy()
// removes every namespace the lab made, and every container namespace whose
// name starts with the prefix.
import { spawn } from 'node:child_process';

export interface LabHost {
  /** Host name, also the `ip netns` name: `<prefix>h<n>`. */
  name: string;
  netns: string;
  /** Underlay address on eth0. */
  ip: string;
}

export interface ExecResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a program and collects its output; never rejects for a non-zero exit. */
export function exec(
  argv: string[],
  opts: { timeoutMs?: number; env?: NodeJS.ProcessEnv; input?: string } = {},
): Promise<ExecResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0] as string, argv.slice(1), {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: opts.env ?? process.env,
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
    child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
    const timer = setTimeout(() => {
      stderr += `\n(killed after ${opts.timeoutMs} ms)`;
      child.kill('SIGKILL');
    }, opts.timeoutMs ?? 30_000);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? (signal ? 128 + 9 : 1), stdout, stderr });
    });
    child.stdin.on('error', () => {}); // a program that exits early closes stdin; its exit code tells why
    child.stdin.end(opts.input ?? '');
  });
}

/** Like exec, but rejects with the command and its stderr when it fails. */
export async function mustExec(argv: string[], opts: { timeoutMs?: number } = {}): Promise<string> {
  const r = await exec(argv, opts);
  if (r.code !== 0)
    throw new Error(`\`${argv.join(' ')}\` exited ${r.code}: ${r.stderr.trim() || r.stdout.trim()}`);
  return r.stdout;
}

export const underlaySubnet = '192.0.2.0/24';
export const outsideIp = '198.51.100.1';

export class Lab {
  readonly hosts: LabHost[] = [];
  readonly switchNetns: string;
  readonly outsideNetns: string;
  private readonly made: string[] = [];

  private constructor(readonly prefix: string) {
    this.switchNetns = `${prefix}sw`;
    this.outsideNetns = `${prefix}out`;
  }

  /** `prefix` must be short (interface names are at most 15 characters) and unique to this run. */
  static async create(prefix: string, hostCount: number): Promise<Lab> {
    if (!/^[a-z][a-z0-9]{1,8}$/.test(prefix))
      throw new Error(`lab prefix "${prefix}" must be 2-9 lowercase letters/digits`);
    const lab = new Lab(prefix);
    try {
      await Lab.removeLeftovers(prefix);
      await lab.addNetns(lab.switchNetns);
      await mustExec(['ip', '-n', lab.switchNetns, 'link', 'add', 'br0', 'type', 'bridge']);
      await mustExec(['ip', '-n', lab.switchNetns, 'link', 'set', 'br0', 'up']);
      for (let i = 1; i <= hostCount; i++) {
        const name = `${prefix}h${i}`;
        const ip = `192.0.2.${10 + i}`;
        await lab.plug(name, `${ip}/24`);
        // The outside network is on the same wire, reached on-link (no default route anywhere).
        await mustExec(['ip', '-n', name, 'route', 'add', '198.51.100.0/24', 'dev', 'eth0']);
        lab.hosts.push({ name, netns: name, ip });
      }
      await lab.plug(lab.outsideNetns, `${outsideIp}/24`);
      await mustExec(['ip', '-n', lab.outsideNetns, 'route', 'add', underlaySubnet, 'dev', 'eth0']);
    } catch (err) {
      await lab.destroy();
      throw err;
    }
    return lab;
  }

  private async addNetns(name: string): Promise<void> {
    await mustExec(['ip', 'netns', 'add', name]);
    this.made.push(name);
    await mustExec(['ip', '-n', name, 'link', 'set', 'lo', 'up']);
  }

  /** A namespace with eth0 (address `cidr`) cabled to the switch. */
  private async plug(netns: string, cidr: string): Promise<void> {
    await this.addNetns(netns);
    const port = `${this.prefix}p${this.made.length}`;
    await mustExec(['ip', 'link', 'add', 'name', `${port}x`, 'type', 'veth', 'peer', 'name', `${port}y`]);
    await mustExec(['ip', 'link', 'set', `${port}x`, 'netns', this.switchNetns]);
    await mustExec(['ip', 'link', 'set', `${port}y`, 'netns', netns]);
    await mustExec(['ip', '-n', this.switchNetns, 'link', 'set', `${port}x`, 'master', 'br0', 'up']);
    await mustExec(['ip', '-n', netns, 'link', 'set', `${port}y`, 'name', 'eth0']);
    await mustExec(['ip', '-n', netns, 'addr', 'add', cidr, 'dev', 'eth0']);
    await mustExec(['ip', '-n', netns, 'link', 'set', 'eth0', 'up']);
    // Checksums computed in software on both ends of the cable, as a real NIC
    // would fill them in: on a veth the kernel otherwise leaves the UDP and the
    // inner TCP checksums of VXLAN packets unset (CHECKSUM_PARTIAL for a NIC
    // that does not exist). A kernel receiver trusts such packets, but a
    // userspace data plane reads them off a UDP socket and hands the inner
    // frame to a TAP, where the container's kernel drops the bad TCP checksum:
    // mixed kernel/userspace clusters then ping but TCP times out.
    await mustExec(['ip', 'netns', 'exec', this.switchNetns, 'ethtool', '-K', `${port}x`, 'tx', 'off']);
    await mustExec(['ip', 'netns', 'exec', netns, 'ethtool', '-K', 'eth0', 'tx', 'off']);
  }

  /** Runs a command inside a namespace (a host, the outside, or a container sandbox). */
  exec(
    netns: string,
    argv: string[],
    opts: { timeoutMs?: number; env?: NodeJS.ProcessEnv } = {},
  ): Promise<ExecResult> {
    return exec(['ip', 'netns', 'exec', netns, ...argv], opts);
  }

  /** Starts a long-running process in a namespace; returns it for later killing. */
  spawnIn(netns: string, argv: string[]) {
    return spawn('ip', ['netns', 'exec', netns, ...argv], { stdio: 'ignore', detached: true });
  }

  async destroy(): Promise<void> {
    await Lab.removeLeftovers(this.prefix);
  }

  /** Deletes every namespace whose name starts with the prefix, killing what runs in it. */
  static async removeLeftovers(prefix: string): Promise<void> {
    const list = await exec(['ip', '-j', 'netns', 'list']);
    const names = list.stdout.trim()
      ? (JSON.parse(list.stdout) as { name: string }[]).map((n) => n.name)
      : [];
    const ours = names.filter((n) => n.startsWith(prefix) || n.startsWith(`weft-${prefix}`));
    for (const ns of ours) {
      const pids = await exec(['ip', 'netns', 'pids', ns]);
      for (const pid of pids.stdout.split('\n').filter((l) => /^\d+$/.test(l))) {
        try {
          process.kill(Number(pid), 'SIGKILL');
        } catch {
          // gone already
        }
      }
    }
    for (const ns of ours) {
      await exec(['ip', 'netns', 'del', ns]);
      await exec(['rm', '-rf', `/etc/netns/${ns}`]);
    }
  }
}
