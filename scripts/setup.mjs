#!/usr/bin/env node
// One set-up for `npm test`, `npm start` and `.ci/run` on a fresh Debian
// machine: the Debian tools the tests and the demo use, then the npm
// dependencies (which also builds the native addon). Idempotent and quick
// when everything is already there. Uses only Node built-ins, since it runs
// before `npm install`.
import { spawnSync } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';

const root = new URL('..', import.meta.url).pathname;

/** Command → Debian package that provides it. */
const debianTools = [
  ['ip', 'iproute2'],
  ['dig', 'dnsutils'],
  ['nft', 'nftables'],
  ['iptables', 'iptables'],
  ['busybox', 'busybox'],
  ['ethtool', 'ethtool'],
  ['nsenter', 'util-linux'],
  ['iperf3', 'iperf3'],
  ['make', 'make'],
  ['g++', 'g++'],
  ['python3', 'python3'],
];

/** Header → Debian package, for what the native addon links against (libmnl: rtnetlink messages). */
const debianHeaders = [['/usr/include/libmnl/libmnl.h', 'libmnl-dev']];

/**
 * Runs a step of a script from the repository root, echoing it first; throws
 * `<label>: \`cmd\` failed (exit N)`. `toStderr` sends the step's output (and
 * the echo) to stderr, for scripts whose stdout carries results.
 */
export function run(cmd, args, { env = process.env, label = 'setup', toStderr = false } = {}) {
  (toStderr ? console.error : console.log)(`$ ${cmd} ${args.join(' ')}`);
  const r = spawnSync(cmd, args, { cwd: root, stdio: toStderr ? ['inherit', 2, 2] : 'inherit', env });
  if (r.status !== 0)
    throw new Error(`${label}: \`${cmd} ${args.join(' ')}\` failed (exit ${r.status ?? r.signal})`);
}

const has = (tool) => spawnSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' }).status === 0;

/** busybox's ping lacks `-M do`, which the MTU tests need: iputils-ping must be the `ping`. */
const hasIputilsPing = () =>
  spawnSync('ping', ['-V'], { encoding: 'utf8' }).stdout?.includes('iputils') ?? false;

export function setup({ quiet = false } = {}) {
  const missing = debianTools.filter(([tool]) => !has(tool)).map(([, pkg]) => pkg);
  for (const [header, pkg] of debianHeaders) if (!existsSync(header)) missing.push(pkg);
  if (!hasIputilsPing()) missing.push('iputils-ping');
  if (missing.length > 0) {
    if (process.getuid?.() !== 0) {
      throw new Error(
        `setup: missing Debian packages ${missing.join(' ')}; run as root or install them first`,
      );
    }
    const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
    run('apt-get', ['update', '-qq'], { env });
    run('apt-get', ['install', '-y', '-qq', ...new Set(missing)], { env });
  }
  // `npm install`, not `npm ci`: the registry mirror here lacks the non-Linux
  // builds of some optional platform packages, so the lock cannot list them
  // and `npm ci` refuses it; `npm install` honours the lock for all it lists.
  const installed = join(root, 'node_modules', '.package-lock.json');
  const stale =
    !existsSync(installed) ||
    statSync(join(root, 'package-lock.json')).mtimeMs > statSync(installed).mtimeMs ||
    !existsSync(join(root, 'packages/agent/native/build/Release/weft_native.node'));
  if (stale) run('npm', ['install', '--no-audit', '--no-fund']);
  else if (!quiet) console.log('setup: Debian tools and npm dependencies are in place');
}

if (import.meta.url === `file://${process.argv[1]}`) {
  try {
    setup();
  } catch (err) {
    console.error(err.message);
    process.exit(1);
  }
}
