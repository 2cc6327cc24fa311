#!/usr/bin/env node
// `npm start`: the README tutorial on this machine. Builds if needed, makes
// three hosts as network namespaces (underlay 192.0.2.0/24), starts one
// `weft agent` on each with the others as peers, then runs the tutorial step
// by step, printing each command and what came back. Tears everything down
// at the end; exits 0 only if every step worked. Needs root (namespaces).
import { rm } from 'node:fs/promises';
import { build } from './build.mjs';
import { setup } from './setup.mjs';

if (process.getuid?.() !== 0) {
  console.error('demo: needs root to create network namespaces (run as root, e.g. sudo npm start)');
  process.exit(1);
}
// Debian tools and npm dependencies (and the native addon), as for `npm test`.
try {
  setup();
} catch (err) {
  console.error(`demo: ${err.message}`);
  process.exit(1);
}
// The native addon (incrementally), tsc and the `weft` CLI bundle (fast start-up).
try {
  build();
} catch (err) {
  console.error(`demo: ${err.message}`);
  process.exit(1);
}

const { startCluster, runPrefix } = await import('../test/dist/src/harness/cluster.js');
const { outsideIp } = await import('../test/dist/src/harness/lab.js');
const { weftRun, httpd, wget, pingOnce, makePageDir } = await import('../test/dist/src/harness/commands.js');

let failures = 0;
let cluster;
const pageDir = await makePageDir('demo', {
  'index.html': '<h1>hello from web on host1</h1>\n',
  'outside.html': 'hello from outside the overlay\n',
});
let outside;

function step(title) {
  console.log(`\n== ${title}`);
}

/** Runs the CLI on a host, prints command and output; `expect` checks the result. */
async function weft(hostIndex, args, expect = (r) => r.code === 0, retryMs = 0) {
  const agent = cluster.agents[hostIndex - 1];
  console.log(`[host${hostIndex}]$ weft ${args.join(' ')}`);
  let r;
  const deadline = Date.now() + retryMs;
  for (;;) {
    r = await agent.weft(args);
    if (expect(r) || Date.now() >= deadline) break;
    await new Promise((res) => setTimeout(res, 500));
  }
  process.stdout.write(r.stdout.replace(/^/gm, '    '));
  if (r.stderr.trim()) process.stdout.write(r.stderr.replace(/^/gm, '    '));
  if (!expect(r)) {
    failures++;
    console.log(`    ✗ unexpected result (exit ${r.code})`);
  } else console.log('    ✓');
  return r;
}

const shutdown = async () => {
  outside?.kill('SIGKILL');
  await cluster?.destroy();
  await rm(pageDir, { recursive: true, force: true });
};
process.on('SIGINT', () => {
  shutdown().finally(() => process.exit(130));
});

try {
  step('three hosts as network namespaces, one weft agent each (peers, no external store)');
  cluster = await startCluster(runPrefix('demo'), { hosts: 3 });
  for (const a of cluster.agents)
    console.log(`    ${a.host.name}  underlay ${a.host.ip}  agent pid ${a.pid}`);
  await weft(1, ['members']);

  step('create an overlay network on host1');
  const created = await weft(1, [
    'network',
    'create',
    '-d',
    'overlay',
    '--subnet',
    '198.18.9.0/24',
    'my-net',
  ]);
  const id = created.stdout.trim();

  step('host2 sees the same network');
  await weft(
    2,
    ['network', 'ls'],
    (r) => r.code === 0 && r.stdout.includes(id.slice(0, 12)) && r.stdout.includes('my-net'),
    10_000,
  );

  step('a web server named "web" on host1');
  await weft(1, weftRun('detach', 'my-net', 'web', httpd(pageDir)));
  await weft(1, ['ps']);

  step('from host2: fetch http://web over the overlay');
  await weft(
    2,
    weftRun('rm', 'my-net', 'client', wget('http://web')),
    (r) => r.code === 0 && r.stdout.includes('hello from web on host1'),
    30_000,
  );

  step('names resolve across hosts: mongo and mongo.my-net');
  await weft(3, weftRun('detach', 'my-net', 'mongo', ['sleep', '600']));
  for (const name of ['mongo', 'mongo.my-net']) {
    await weft(
      2,
      weftRun('rm', 'my-net', 'pinger', pingOnce(name)),
      (r) => r.code === 0 && r.stdout.includes('1 packets received'),
      30_000,
    );
  }

  step(`out of the overlay through the gateway bridge with NAT (an "outside" namespace at ${outsideIp})`);
  outside = cluster.lab.spawnIn(cluster.lab.outsideNetns, httpd(pageDir));
  await weft(
    2,
    weftRun('rm', 'my-net', 'natprobe', wget(`http://${outsideIp}/outside.html`)),
    (r) => r.code === 0 && r.stdout.includes('hello from outside'),
    20_000,
  );

  step('cluster status');
  await weft(2, ['status']);
} catch (err) {
  failures++;
  console.error(`\ndemo: ${err.message}`);
} finally {
  step('tear down');
  await shutdown();
  console.log(failures === 0 ? '\ndemo: every step worked' : `\ndemo: ${failures} step(s) failed`);
  process.exit(failures === 0 ? 0 : 1);
}
