// The `weft` command line: a docker-like CLI over the local agent's HTTP API
// (found with --api or WEFT_API), plus `weft agent`, which runs the agent.
// Exit codes: 0 success, 1 the operation failed, 2 bad usage, 125 the agent
// could not be reached; `run`/`exec` exit with the command's own status.
import { spawn } from 'node:child_process';
import { Command, CommanderError, Option } from 'commander';
import { AgentClient, ClientError } from '../api/client.js';
import type { ContainerInfo, NetworkInfo } from '../api/types.js';
import { age, formatTable, shortId } from './table.js';

export const defaultApiAddress = '127.0.0.1:8500';

export interface CliIo {
  stdout: { write(s: string): unknown };
  stderr: { write(s: string): unknown };
  env: NodeJS.ProcessEnv;
  /** Runs a command in a container's namespace; resolves with its exit status. Replaceable in tests. */
  runInSandbox(sandbox: string, command: string[]): Promise<number>;
  /** `weft agent`: runs until stopped; resolves with the exit status. */
  runAgent?(opts: Record<string, unknown>): Promise<number>;
}

/** Thrown by actions to end with a given status and one line on stderr. */
class CliExit extends Error {
  constructor(
    readonly code: number,
    message: string,
  ) {
    super(message);
  }
}

export const processIo: CliIo = {
  stdout: process.stdout,
  stderr: process.stderr,
  env: process.env,
  runInSandbox(sandbox, command) {
    return new Promise((resolve, reject) => {
      const child = spawn('ip', ['netns', 'exec', sandbox, ...command], { stdio: 'inherit' });
      const forward = (sig: NodeJS.Signals) => child.kill(sig);
      process.on('SIGINT', forward);
      process.on('SIGTERM', forward);
      child.once('error', (err) => reject(new Error(`cannot run ${command[0]}: ${err.message}`)));
      child.once('exit', (code, signal) => {
        process.off('SIGINT', forward);
        process.off('SIGTERM', forward);
        resolve(code ?? 128 + (signal ? signalNumber(signal) : 0));
      });
    });
  },
};

function signalNumber(signal: NodeJS.Signals): number {
  const table: Partial<Record<NodeJS.Signals, number>> = { SIGHUP: 1, SIGINT: 2, SIGKILL: 9, SIGTERM: 15 };
  return table[signal] ?? 1;
}

function collectKeyValue(what: string) {
  return (value: string, previous: Record<string, string> = {}) => {
    const eq = value.indexOf('=');
    if (eq <= 0) throw new CliExit(2, `${what} "${value}" is not KEY=VALUE`);
    return { ...previous, [value.slice(0, eq)]: value.slice(eq + 1) };
  };
}

const collectList = (value: string, previous: string[] = []) => [...previous, value];

export async function runCli(argv: string[], io: CliIo = processIo): Promise<number> {
  let exitCode = 0;
  const program = new Command('weft');
  program
    .description('Multi-host overlay networking with a built-in replicated store')
    .option(
      '--api <address>',
      'address of the local agent API (env WEFT_API)',
      io.env.WEFT_API ?? defaultApiAddress,
    )
    .addOption(new Option('--format <format>', 'output format').choices(['table', 'json']).default('table'))
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride()
    .configureOutput({
      writeOut: (s) => io.stdout.write(s),
      writeErr: (s) => io.stderr.write(s),
    });

  const client = () => new AgentClient(program.opts().api as string);
  const json = () => program.opts().format === 'json';
  const print = (s: string): void => {
    io.stdout.write(s);
  };
  const printJson = (v: unknown): void => print(`${JSON.stringify(v, null, 2)}\n`);

  program
    .command('agent')
    .description('run the weft agent on this host (KV node, overlay, data plane, DNS, HTTP API)')
    .requiredOption('--name <name>', 'this host name, unique in the cluster')
    .requiredOption('--advertise <address>', 'underlay address other hosts reach this one at')
    .option('--peers <addresses>', 'comma-separated advertise addresses of other agents', '')
    .option('--data-dir <dir>', 'where the KV store and agent state live', '/var/lib/weft')
    .addOption(
      new Option('--dataplane <kind>', 'VXLAN data plane').choices(['kernel', 'userspace']).default('kernel'),
    )
    .option('--cluster-key <file>', 'pre-shared key file for the private cluster network')
    .option('--api <address>', 'where the HTTP API listens (loopback)', defaultApiAddress)
    .option(
      '--voters <n>',
      'Raft voters (3 or 5): the first N agents of the sorted --peers + --advertise',
      '3',
    )
    .option(
      '--learners <n>',
      'Raft learners beyond the voters; further agents run as clients of the store',
      '4',
    )
    .option(
      '--dead-voter-threshold <ms>',
      'the KV leader replaces a voter silent this long by a learner',
      '10000',
    )
    .option(
      '--keep-raft-membership',
      'on SIGTERM stay a Raft voter or learner (for a restart or upgrade); by default the agent leaves the configuration',
    )
    .option('--raft-port <port>', 'TCP port of the Raft transport', '8300')
    .option(
      '--gateway-subnet <cidr>',
      'subnet of the per-host gateway bridge with NAT, or "none"',
      '172.18.0.0/16',
    )
    .option('--sandbox-prefix <prefix>', 'prefix of container namespace names (default weft-<name>-)')
    .option(
      '--host-ttl <ms>',
      'declare a silent host dead after this long (its session expires after 1.25× without renewal)',
      '10000',
    )
    .option(
      '--dns-upstream <addresses>',
      'resolvers for names outside the overlay (default: /etc/resolv.conf)',
    )
    .option('--log-level <level>', 'pino log level', 'info')
    .action(async (opts: Record<string, unknown>) => {
      if (!io.runAgent) throw new CliExit(1, 'this build cannot run an agent');
      exitCode = await io.runAgent(opts);
    });

  const network = program.command('network').description('manage overlay networks');
  network
    .command('create')
    .description('create an overlay network (visible on every host)')
    .argument('<name>')
    .option('-d, --driver <driver>', 'network driver', 'overlay')
    .option('--subnet <cidr>', 'subnet, e.g. 198.18.9.0/24')
    .option('--gateway <ip>', 'gateway address in the subnet')
    .option('--ip-range <cidr>', 'allocate container addresses from this sub-range')
    .option(
      '--aux-address <name=ip>',
      'address IPAM must not hand out (repeatable)',
      collectKeyValue('aux address'),
    )
    .option('-o, --opt <key=value>', 'driver option (repeatable)', collectKeyValue('option'))
    .option('--label <key=value>', 'label (repeatable)', collectKeyValue('label'))
    .option('--internal', 'no gateway bridge / NAT to the outside')
    .action(async (name: string, o: Record<string, unknown>) => {
      const net = await client().createNetwork({
        name,
        driver: o.driver as string,
        subnet: o.subnet as string | undefined,
        gateway: o.gateway as string | undefined,
        ipRange: o.ipRange as string | undefined,
        auxAddresses: o.auxAddress as Record<string, string> | undefined,
        options: o.opt as Record<string, string> | undefined,
        labels: o.label as Record<string, string> | undefined,
        internal: o.internal === true ? true : undefined,
      });
      if (json()) printJson(net);
      else print(`${net.id}\n`);
    });
  network
    .command('ls')
    .alias('list')
    .description('list networks')
    .option('-q, --quiet', 'only IDs')
    .action(async (o: { quiet?: boolean }) => {
      const nets = await client().listNetworks();
      if (json()) return printJson(nets);
      if (o.quiet) return print(nets.map((n) => `${shortId(n.id)}\n`).join(''));
      print(formatNetworks(nets));
    });
  network
    .command('inspect')
    .description('show networks in detail (JSON)')
    .argument('<name...>')
    .action(async (names: string[]) => {
      const c = client();
      printJson(await Promise.all(names.map((n) => c.inspectNetwork(n))));
    });
  network
    .command('rm')
    .alias('remove')
    .description('remove networks')
    .argument('<name...>')
    .action(async (names: string[]) => {
      const c = client();
      for (const n of names) {
        await c.removeNetwork(n);
        print(`${n}\n`);
      }
    });

  program
    .command('run')
    .description('create a container (network namespace) on a network and run a command in it')
    .requiredOption('--net, --network <network>', 'network to attach to')
    .requiredOption('--name <name>', 'container name (resolvable on the network)')
    .option('--alias <alias>', 'extra DNS name on the network (repeatable)', collectList)
    .option('--ip <ip>', 'fixed address in the network')
    .option('-d, --detach', 'run the command in the background, kept by the agent')
    .option('--rm', 'remove the container when the command exits')
    .argument('[command...]', 'command to run (after --)')
    .action(async (command: string[], o: Record<string, unknown>) => {
      const detach = o.detach === true;
      if (detach && o.rm) throw new CliExit(2, '--rm and -d cannot be combined');
      if (detach && command.length === 0) throw new CliExit(2, 'weft run -d needs a command');
      const c = client();
      const info = await c.runContainer({
        name: o.name as string,
        network: o.network as string,
        aliases: o.alias as string[] | undefined,
        ip: o.ip as string | undefined,
        command,
        detach,
      });
      if (detach || command.length === 0) {
        if (json()) printJson(info);
        else print(`${info.name}\n`);
        return;
      }
      try {
        exitCode = await io.runInSandbox(info.sandbox, command);
      } finally {
        if (o.rm) await c.removeContainer(info.name);
      }
    });

  program
    .command('exec')
    .description('run a command in an existing container')
    .argument('<container>')
    .argument('<command...>')
    .action(async (name: string, command: string[]) => {
      const info = await client().inspectContainer(name);
      exitCode = await io.runInSandbox(info.sandbox, command);
    });

  program
    .command('attach')
    .description('connect a container to another network')
    .argument('<container>')
    .requiredOption('--net, --network <network>', 'network to attach to')
    .option('--alias <alias>', 'extra DNS name on the network (repeatable)', collectList)
    .option('--ip <ip>', 'fixed address in the network')
    .action(async (name: string, o: Record<string, unknown>) => {
      const info = await client().attachContainer(name, {
        network: o.network as string,
        aliases: o.alias as string[] | undefined,
        ip: o.ip as string | undefined,
      });
      if (json()) printJson(info);
      else print(`${info.name}\n`);
    });

  program
    .command('detach')
    .description('disconnect a container from a network')
    .argument('<container>')
    .requiredOption('--net, --network <network>', 'network to detach from')
    .action(async (name: string, o: Record<string, unknown>) => {
      const info = await client().detachContainer(name, o.network as string);
      if (json()) printJson(info);
      else print(`${info.name}\n`);
    });

  program
    .command('rm')
    .description('remove containers (stops their command, detaches every network)')
    .argument('<container...>')
    .action(async (names: string[]) => {
      const c = client();
      for (const n of names) {
        await c.removeContainer(n);
        print(`${n}\n`);
      }
    });

  program
    .command('ps')
    .description('list containers on this host')
    .option('-a, --all', 'also containers whose command has exited')
    .action(async (o: { all?: boolean }) => {
      const list = await client().listContainers(o.all === true);
      if (json()) return printJson(list);
      print(formatContainers(list));
    });

  const kv = program.command('kv').description('read and write the replicated key-value store');
  kv.command('get')
    .argument('<key>')
    .action(async (key: string) => {
      const e = await client().kvGet(key);
      if (!e) throw new CliExit(1, `key "${key}" not found`);
      if (json()) return printJson(e);
      print(`${decodeValue(e.Value)}\n`);
    });
  kv.command('put')
    .argument('<key>')
    .argument('<value>')
    .option('--cas <index>', 'only if the key is at this ModifyIndex (0 = create only)')
    .option('--flags <n>', 'opaque flags')
    .action(async (key: string, value: string, o: { cas?: string; flags?: string }) => {
      const cas = o.cas !== undefined ? parseNonNegative(o.cas, '--cas') : undefined;
      const flags = o.flags !== undefined ? parseNonNegative(o.flags, '--flags') : undefined;
      const ok = await client().kvPut(key, value, { cas, flags });
      if (!ok) throw new CliExit(1, `key "${key}" was not written: check-and-set index ${cas} did not match`);
      if (json()) printJson({ key, written: true });
      else print(`Success! Data written to: ${key}\n`);
    });
  kv.command('ls')
    .argument('[prefix]', 'key prefix', '')
    .action(async (prefix: string) => {
      const entries = await client().kvList(prefix);
      if (json()) return printJson(entries);
      print(
        formatTable(
          ['KEY', 'VALUE', 'MODIFY INDEX'],
          entries.map((e) => [e.Key, truncate(decodeValue(e.Value), 60), String(e.ModifyIndex)]),
        ),
      );
    });
  kv.command('rm')
    .argument('<key>')
    .option('-r, --recurse', 'every key with this prefix')
    .action(async (key: string, o: { recurse?: boolean }) => {
      await client().kvDelete(key, { recurse: o.recurse === true });
      if (json()) printJson({ key, deleted: true });
      else print(`Success! Deleted key${o.recurse ? 's under' : ''}: ${key}\n`);
    });

  program
    .command('members')
    .description('hosts in the cluster')
    .action(async () => {
      const members = await client().members();
      if (json()) return printJson(members);
      print(
        formatTable(
          ['NAME', 'ADDRESS', 'ROLE', 'STATUS', 'LEADER'],
          members.map((m) => [
            m.name,
            m.advertise,
            m.role,
            m.alive ? 'alive' : 'failed',
            m.leader ? 'yes' : '',
          ]),
        ),
      );
    });

  program
    .command('status')
    .description('this agent and its view of the store')
    .action(async () => {
      const s = await client().status();
      if (json()) return printJson(s);
      const rows: [string, string][] = [
        ['Name', s.name],
        ['Advertise', s.advertise],
        ['Role', s.role],
        ['Leader', s.leader || '(none)'],
        ['Term', String(s.term)],
        ['Commit index', String(s.commitIndex)],
        ['Applied index', String(s.appliedIndex)],
        ['Data plane', s.dataplane],
        ['Members', String(s.members)],
        ['Networks', String(s.networks)],
        ['Containers', String(s.containers)],
      ];
      print(rows.map(([k, v]) => `${`${k}:`.padEnd(15)}${v}\n`).join(''));
    });

  try {
    await program.parseAsync(argv, { from: 'user' });
    return exitCode;
  } catch (err) {
    if (err instanceof CommanderError) {
      // help and version print and succeed; usage errors were already printed
      return err.exitCode === 0 ? 0 : 2;
    }
    if (err instanceof CliExit) {
      io.stderr.write(`Error: ${err.message}\n`);
      return err.code;
    }
    if (err instanceof ClientError) {
      io.stderr.write(`Error: ${err.message}\n`);
      return err.status === 0 ? 125 : 1;
    }
    io.stderr.write(`Error: ${err instanceof Error ? err.message : String(err)}\n`);
    return 1;
  }
}

function formatNetworks(nets: NetworkInfo[]): string {
  return formatTable(
    ['NETWORK ID', 'NAME', 'DRIVER', 'SUBNET', 'GATEWAY', 'VNI'],
    nets.map((n) => [shortId(n.id), n.name, n.driver, n.subnet, n.gateway, String(n.vni)]),
  );
}

function formatContainers(list: ContainerInfo[]): string {
  return formatTable(
    ['NAME', 'STATUS', 'CREATED', 'NETWORKS', 'IP ADDRESS', 'COMMAND'],
    list.map((c) => [
      c.name,
      c.state === 'exited' ? `exited (${c.exitCode ?? '?'})` : c.state,
      age(c.created),
      c.endpoints.map((e) => e.network).join(','),
      c.endpoints.map((e) => e.ip).join(','),
      truncate(c.command.join(' '), 30),
    ]),
  );
}

function decodeValue(value: string | null): string {
  return value === null ? '' : Buffer.from(value, 'base64').toString('utf8');
}

function truncate(s: string, max: number): string {
  return s.length > max ? `${s.slice(0, max - 1)}…` : s;
}

function parseNonNegative(value: string, what: string): number {
  if (!/^\d+$/.test(value)) throw new CliExit(2, `${what} must be a non-negative integer, got "${value}"`);
  return Number(value);
}
