// The README's embedding examples as a user runs them, after `npm run build`:
// `node examples/embed.mjs DIR` in its own process (real LevelDB directories,
// libp2p on loopback) must show every step working, and the data it reports
// must really be in DIR: the test reopens the three members from their
// directories and reads it back. examples/minimal.ts runs twice on one
// directory (through tsx), must appear verbatim in the README, and both
// examples must type-check against the package's declarations.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { KvNode } from '../../src/api/node.js';
import { freePort } from '../../src/testing/free-port.js';

/** packages/kv, found from this file whether it runs from test/ (tsx) or dist/test/. */
function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const manifest = join(dir, 'package.json');
    if (existsSync(manifest) && JSON.parse(readFileSync(manifest, 'utf8')).name === '@weft/kv') return dir;
    const parent = dirname(dir);
    if (parent === dir) throw new Error('packages/kv/package.json not found above this test');
    dir = parent;
  }
}

/** Runs `node ARGS` to completion; SIGKILLed after timeoutMs (reported, not hung). */
async function runNode(
  args: string[],
  cwd: string,
  timeoutMs: number,
  env: NodeJS.ProcessEnv = process.env,
): Promise<{ code: number | null; stdout: string; stderr: string; killed: boolean }> {
  const child = spawn(process.execPath, args, { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => {
    stdout += d;
  });
  child.stderr.on('data', (d) => {
    stderr += d;
  });
  let killed = false;
  const timer = setTimeout(() => {
    killed = true;
    child.kill('SIGKILL');
  }, timeoutMs);
  const code = await new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
  clearTimeout(timer);
  return { code, stdout, stderr, killed };
}

const dec = (b: Uint8Array | undefined) => (b ? new TextDecoder().decode(b) : undefined);

describe('examples/ (the README embedding examples, run as a user runs them)', function () {
  // Bounded: the child is killed after 90 s; the reopen check has its own limits.
  this.timeout(150_000);
  const root = packageRoot();
  let dataDir = '';
  const reopened: KvNode[] = [];

  beforeEach(async () => {
    dataDir = await mkdtemp(join(tmpdir(), 'weft-kv-example-test-'));
  });
  afterEach(async () => {
    await Promise.all(reopened.map((n) => n.close().catch(() => {})));
    reopened.length = 0;
    await rm(dataDir, { recursive: true, force: true });
  });

  it('runs every step of the API, and what it wrote is durable in its data directory', async () => {
    const example = join(root, 'examples', 'embed.mjs');
    assert.ok(
      existsSync(join(root, 'dist', 'src', 'index.js')),
      'dist/src/index.js is missing: build first (npm run build)',
    );
    const run = await runNode([example, dataDir], root, 90_000);
    const context = `exit ${run.code}${run.killed ? ' (killed after 90 s)' : ''}\nstdout:\n${run.stdout}\nstderr:\n${run.stderr}`;
    assert.equal(run.code, 0, context);

    // One line per step: "<step> <what happened>".
    const steps = new Map<string, string>();
    for (const line of run.stdout.split('\n')) {
      const m = /^(\S+)\s+(.*)$/.exec(line);
      if (m) steps.set(m[1]!, m[2]!);
    }
    const says = (step: string, pattern: RegExp): RegExpExecArray => {
      const text = steps.get(step);
      assert.ok(text !== undefined, `step "${step}" missing\n${context}`);
      const m = pattern.exec(text);
      assert.ok(m, `step "${step}" says ${JSON.stringify(text)}, expected ${pattern}\n${context}`);
      return m;
    };

    const addr = '127\\.0\\.0\\.1:\\d+';
    const open = says('open', new RegExp(`^3 members on (${addr}), (${addr}), (${addr}); leader (${addr})$`));
    const members = [open[1]!, open[2]!, open[3]!];
    assert.ok(members.includes(open[4]!), 'the leader is one of the three members');
    says('put/get', /read "v1" on n3/);
    says('http', /^GET http:\/\/127\.0\.0\.1:\d+\/v1\/kv\/app\/config\?raw -> "v1"$/);
    says('cas', /^create-only=true, stale index=false, current index=true; app\/counter=2$/);
    says('txn', /^committed 3 ops at index \d+; refused one \(op 1: .*app\/audit.*\); app\/counter=3$/);
    // Changes may coalesce into fewer events; the first is the (empty) listing, the last has both.
    says('watch', /^n3 saw \[\] -> .*\[jobs\/1=build jobs\/2=test\]$/);
    says('lock', /^alice acquired=true, bob blocked=true; after release bob acquired=true; .* lock free$/);
    const join4 = says('join', /^n4 joined and was promoted: (.*)$/);
    assert.deepEqual(
      join4[1]!.split(' ').sort(),
      ['n1(voter)', 'n2(voter)', 'n3(voter)', 'n4(voter)'],
      'four named voters after the join',
    );
    const removed = says('remove', /^n4 removed; voters (.*)$/);
    assert.deepEqual(removed[1]!.split(', ').sort(), [...members].sort());
    const transfer = says('transfer', /^leadership (n\d) -> (n\d); writes still accepted$/);
    assert.notEqual(transfer[1], transfer[2]);
    says('close', /^all members closed; data in /);

    // What the example reported is on disk: reopen the three members (same
    // addresses: a member's address is its identity) and read it back.
    const nodes = await Promise.all(
      members.map((listen, i) =>
        KvNode.open({ dataDir: join(dataDir, `n${i + 1}`), id: `n${i + 1}`, listen, cluster: 'example' }),
      ),
    );
    reopened.push(...nodes);
    const [n1, n2, n3] = nodes as [KvNode, KvNode, KvNode];
    await n1.waitForLeader(20_000);
    assert.equal(dec((await n1.get('app/config'))?.value), 'v1');
    assert.equal(dec((await n2.get('app/counter'))?.value), '3');
    assert.equal(dec((await n3.get('app/audit'))?.value), 'counter 2 -> 3');
    assert.deepEqual(
      (await n1.list('jobs/')).map((e) => `${e.key}=${dec(e.value)}`),
      ['jobs/1=build', 'jobs/2=test'],
    );
    const lock = await n2.get('locks/deploy');
    assert.equal(dec(lock?.value), 'bob');
    assert.equal(lock?.session, '', 'the lock was released when its session was destroyed');
    assert.deepEqual(await n3.sessions(), [], 'both sessions were destroyed');
    assert.equal(dec((await n3.get('app/after-transfer'))?.value), 'ok');
    assert.deepEqual(n1.status().voters.sort(), [...members].sort(), 'n4 stays removed');
  });

  it('runs examples/minimal.ts (one member, a cluster of one) twice on the same data directory', async () => {
    const example = join(root, 'examples', 'minimal.ts');
    const env = {
      ...process.env,
      DATA_DIR: join(dataDir, 'app-1'),
      LISTEN: `127.0.0.1:${await freePort()}`,
      // tsx keeps its compile cache under the temp directory: this test's own, removed after it.
      TMPDIR: dataDir,
    };
    for (const round of [1, 2]) {
      const run = await runNode(['--import', 'tsx', example], root, 60_000, env);
      const context = `round ${round}: exit ${run.code}\nstdout:\n${run.stdout}\nstderr:\n${run.stderr}`;
      assert.equal(run.code, 0, context);
      assert.match(run.stdout, /^mode blue at index \d+ http 127\.0\.0\.1:\d+$/m, context);
      assert.match(run.stdout, /^cas true green$/m, context);
      assert.match(run.stdout, /^lock true members 127\.0\.0\.1:\d+=voter$/m, context);
      const watch = [...run.stdout.matchAll(/^watch (\d+) (.*)$/gm)];
      assert.equal(watch.length, 2, context);
      assert.ok(Number(watch[1]![1]) > Number(watch[0]![1]), `the second event is newer\n${context}`);
      assert.match(watch[1]![2]!, /config\/started=\d{4}-/, context);
    }
  });

  it('the README shows examples/minimal.ts verbatim', () => {
    const readme = readFileSync(join(root, 'README.md'), 'utf8');
    const example = readFileSync(join(root, 'examples', 'minimal.ts'), 'utf8');
    assert.ok(
      readme.includes(`\`\`\`ts\n${example}\`\`\``),
      'README.md must contain examples/minimal.ts in a ```ts block, unchanged: copy it again',
    );
  });

  it('type-checks against the package declarations (examples/tsconfig.json)', async () => {
    const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
    const run = await runNode([tsc, '-p', join(root, 'examples')], root, 90_000);
    assert.equal(run.code, 0, `tsc -p examples failed:\n${run.stdout}${run.stderr}`);
  });
});
