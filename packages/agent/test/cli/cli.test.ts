import assert from 'node:assert/strict';
import { ApiServer } from '../../src/api/server.js';
import { type CliIo, runCli } from '../../src/cli/program.js';
import { formatTable } from '../../src/cli/table.js';
import { FakeBackend } from '../api/fake-backend.js';

describe('weft CLI', () => {
  let server: ApiServer;
  let backend: FakeBackend;
  let sandboxRuns: { sandbox: string; command: string[] }[];
  let sandboxExit: number;

  beforeEach(async () => {
    backend = new FakeBackend();
    server = new ApiServer({ listen: '127.0.0.1:0', backend });
    await server.start();
    sandboxRuns = [];
    sandboxExit = 0;
  });
  afterEach(() => server.stop());

  async function weft(...args: string[]): Promise<{ code: number; out: string; err: string }> {
    let out = '';
    let err = '';
    const io: CliIo = {
      stdout: { write: (s: string) => (out += s) },
      stderr: { write: (s: string) => (err += s) },
      env: { WEFT_API: server.address },
      async runInSandbox(sandbox, command) {
        sandboxRuns.push({ sandbox, command });
        return sandboxExit;
      },
    };
    const code = await runCli(args, io);
    return { code, out, err };
  }

  it('network create prints the full ID and network ls shows it in an aligned table', async () => {
    const created = await weft(
      'network',
      'create',
      '-d',
      'overlay',
      '--subnet',
      '198.18.9.0/24',
      '--gateway',
      '198.18.9.1',
      '--ip-range',
      '198.18.9.128/25',
      '--aux-address',
      'router=198.18.9.2',
      '--opt',
      'mtu=1400',
      '--label',
      'team=a',
      'my-net',
    );
    assert.equal(created.code, 0, created.err);
    const id = created.out.trim();
    assert.match(id, /^[0-9a-f]{64}$/);
    const stored = [...backend.networks.values()][0];
    assert.deepEqual(
      {
        subnet: stored?.subnet,
        ipRange: stored?.ipRange,
        aux: stored?.auxAddresses,
        opt: stored?.options,
        label: stored?.labels,
      },
      {
        subnet: '198.18.9.0/24',
        ipRange: '198.18.9.128/25',
        aux: { router: '198.18.9.2' },
        opt: { mtu: '1400' },
        label: { team: 'a' },
      },
    );
    const ls = await weft('network', 'ls');
    const lines = ls.out.trimEnd().split('\n');
    assert.equal(lines.length, 2);
    assert.match(lines[0] as string, /^NETWORK ID\s+NAME\s+DRIVER\s+SUBNET\s+GATEWAY\s+VNI$/);
    assert.ok(lines[1]?.startsWith(id.slice(0, 12)));
    assert.equal(lines[0]?.indexOf('NAME'), lines[1]?.indexOf('my-net'), 'columns are aligned');
    const asJson = JSON.parse((await weft('--format', 'json', 'network', 'ls')).out);
    assert.equal(asJson[0].id, id);
    const inspect = JSON.parse((await weft('network', 'inspect', 'my-net')).out);
    assert.equal(inspect[0].name, 'my-net');
  });

  it('errors are one line on stderr with a non-zero exit code', async () => {
    await weft('network', 'create', 'a');
    const dup = await weft('network', 'create', 'a');
    assert.equal(dup.code, 1);
    assert.equal(dup.out, '');
    assert.match(dup.err, /^Error: network "a" already exists \(id [0-9a-f]{12}\)\n$/);
    const missing = await weft('network', 'rm', 'nope');
    assert.equal(missing.code, 1);
    assert.equal(missing.err, 'Error: network "nope" not found\n');
    const badKv = await weft('network', 'create', '--label', 'novalue', 'b');
    assert.equal(badKv.code, 2);
    assert.match(badKv.err, /label "novalue" is not KEY=VALUE/);
    const usage = await weft('network', 'create');
    assert.equal(usage.code, 2);
    assert.match(usage.err, /missing required argument 'name'/);
    const unknown = await weft('frobnicate');
    assert.equal(unknown.code, 2);
  });

  it('an unreachable agent exits 125 and says how to point the CLI at one', async () => {
    const address = server.address;
    await server.stop();
    const r = await weft('--api', address, 'ps');
    assert.equal(r.code, 125);
    assert.match(r.err, /cannot reach the weft agent at http:\/\/127\.0\.0\.1:\d+ .*WEFT_API/);
    assert.equal(r.err.trim().split('\n').length, 1);
  });

  it('run creates the container, runs the command in its namespace, exits with its status and --rm removes it', async () => {
    await weft('network', 'create', 'my-net');
    sandboxExit = 3;
    const r = await weft(
      'run',
      '--rm',
      '--net',
      'my-net',
      '--name',
      'probe',
      '--',
      'wget',
      '-O-',
      'http://web',
    );
    assert.equal(r.code, 3);
    assert.deepEqual(sandboxRuns, [{ sandbox: 'fake-probe', command: ['wget', '-O-', 'http://web'] }]);
    assert.equal(backend.containers.size, 0, '--rm removed it');

    const d = await weft(
      'run',
      '-d',
      '--network',
      'my-net',
      '--name',
      'web',
      '--alias',
      'www',
      '--alias',
      'w3',
      '--',
      'httpd',
      '-f',
    );
    assert.equal(d.code, 0, d.err);
    assert.equal(d.out, 'web\n');
    assert.deepEqual(backend.containers.get('web')?.endpoints[0]?.aliases, ['www', 'w3']);
    assert.equal(sandboxRuns.length, 1, 'a detached command is run by the agent, not the CLI');

    const ex = await weft('exec', 'web', '--', 'ip', 'addr');
    assert.equal(ex.code, 3);
    assert.deepEqual(sandboxRuns[1], { sandbox: 'fake-web', command: ['ip', 'addr'] });

    const ps = await weft('ps');
    assert.match(
      ps.out,
      /^NAME\s+STATUS\s+CREATED\s+NETWORKS\s+IP ADDRESS\s+COMMAND\nweb\s+running\s+\d+ seconds? ago\s+my-net\s+198\.18\.0\.\d+\s+httpd -f\n$/,
    );

    const conflictingFlags = await weft('run', '-d', '--rm', '--net', 'my-net', '--name', 'x', '--', 'true');
    assert.equal(conflictingFlags.code, 2);
  });

  it('attach, detach and rm manage a container’s networks', async () => {
    await weft('network', 'create', 'a');
    await weft('network', 'create', 'b');
    await weft('run', '--net', 'a', '--name', 'c1');
    const at = await weft('attach', '--net', 'b', '--ip', '198.18.0.77', 'c1');
    assert.equal(at.code, 0, at.err);
    assert.deepEqual(
      backend.containers
        .get('c1')
        ?.endpoints.map((e) => [e.network, e.ip])
        .slice(1),
      [['b', '198.18.0.77']],
    );
    assert.equal((await weft('detach', '--net', 'a', 'c1')).code, 0);
    const again = await weft('detach', '--net', 'a', 'c1');
    assert.equal(again.code, 1);
    assert.match(again.err, /not attached to network "a"/);
    assert.equal((await weft('rm', 'c1')).code, 0);
    assert.equal(backend.containers.size, 0);
  });

  it('members and status', async () => {
    const m = await weft('members');
    assert.match(
      m.out,
      /^NAME\s+ADDRESS\s+ROLE\s+STATUS\s+LEADER\nhost1\s+192\.0\.2\.1\s+voter\s+alive\s+yes\nhost2\s+192\.0\.2\.2\s+voter\s+alive\n$/,
    );
    const s = await weft('status');
    assert.match(s.out, /^Role:\s+voter$/m);
    assert.match(s.out, /^Leader:\s+host1$/m);
    assert.equal(JSON.parse((await weft('--format', 'json', 'status')).out).commitIndex, 42);
  });

  it('formatTable pads every column but the last', () => {
    assert.equal(
      formatTable(
        ['A', 'LONG'],
        [
          ['xyz', 'b'],
          ['q', ''],
        ],
      ),
      'A     LONG\nxyz   b\nq\n',
    );
  });
});
