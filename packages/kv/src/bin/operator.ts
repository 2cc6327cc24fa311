// `weft-kv operator raft ...`: Consul's `consul operator raft` commands over
// a member's HTTP API (list-peers, remove-peer, transfer-leader), for a
// weft-kv cluster's operator. Like Consul's CLI, the member to ask is
// --http-addr, or WEFT_KV_HTTP_ADDR, or 127.0.0.1:8500.
import { Command } from 'commander';
import { parseJson } from '../api/http-codec.js';
import { membersFromJson } from '../client/consul-json.js';

/** A member's answer that is not 2xx, or no answer: the message says which member and why. */
export class OperatorError extends Error {}

async function call(httpAddr: string, method: string, path: string): Promise<string> {
  const url = `http://${httpAddr}${path}`;
  let res: Response;
  try {
    res = await fetch(url, { method, signal: AbortSignal.timeout(30_000) });
  } catch (err) {
    const cause = (err as { cause?: { code?: string; message?: string } }).cause;
    throw new OperatorError(
      `cannot reach the weft-kv HTTP API at ${httpAddr} (${cause?.code ?? cause?.message ?? (err as Error).message}); is --http-addr a member's --http address?`,
    );
  }
  const body = await res.text();
  if (!res.ok)
    throw new OperatorError(`${method} ${path} at ${httpAddr}: HTTP ${res.status}: ${body.trim()}`);
  return body;
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows
    .map((r) =>
      r
        .map((cell, i) => cell.padEnd(widths[i]!))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

/** The `operator` command tree; `httpAddress` parses and checks --http-addr. */
export function operatorCommand(httpAddress: (value: string) => string): Command {
  const defaultAddr = process.env.WEFT_KV_HTTP_ADDR ?? '127.0.0.1:8500';
  const addrOption = [
    '--http-addr <host:port>',
    'HTTP API of the member to ask (default: $WEFT_KV_HTTP_ADDR, else 127.0.0.1:8500)',
    httpAddress,
    defaultAddr,
  ] as const;
  const raft = new Command('raft').description("inspect and change the cluster's Raft configuration");
  raft
    .command('list-peers')
    .description('the members: name, Raft address, state, voter or learner')
    .option(...addrOption)
    .action(async (opts: { httpAddr: string }) => {
      const path = '/v1/operator/raft/configuration';
      const members = membersFromJson(`GET ${path}`, parseJson(await call(opts.httpAddr, 'GET', path)));
      const rows = [['Node', 'ID', 'Address', 'State', 'Voter']];
      for (const m of members)
        rows.push([
          m.name || '(unknown)',
          m.id,
          m.address,
          m.leader ? 'leader' : 'follower',
          String(m.role === 'voter'),
        ]);
      process.stdout.write(`${table(rows)}\n`);
    });
  raft
    .command('remove-peer')
    .description(
      'remove a member, e.g. one whose machine is gone for good (it stops counting for the quorum)',
    )
    .requiredOption('--address <host:port>', "the member's Raft address (as list-peers shows it)")
    .option(...addrOption)
    .action(async (opts: { address: string; httpAddr: string }) => {
      await call(
        opts.httpAddr,
        'DELETE',
        `/v1/operator/raft/peer?address=${encodeURIComponent(opts.address)}`,
      );
      process.stdout.write(`Removed peer with address "${opts.address}"\n`);
    });
  raft
    .command('transfer-leader')
    .description('hand leadership to the voter --id, or to another voter; waits until it leads')
    .option('--id <host:port>', "the new leader's Raft address (default: another voter)")
    .option(...addrOption)
    .action(async (opts: { id?: string; httpAddr: string }) => {
      const query = opts.id === undefined ? '' : `?id=${encodeURIComponent(opts.id)}`;
      await call(opts.httpAddr, 'POST', `/v1/operator/raft/transfer-leader${query}`);
      const leader = JSON.parse(await call(opts.httpAddr, 'GET', '/v1/status/leader')) as string;
      process.stdout.write(`Leadership transferred; the leader is ${leader}\n`);
    });
  return new Command('operator')
    .description("operate a running cluster through a member's HTTP API")
    .addCommand(raft);
}
