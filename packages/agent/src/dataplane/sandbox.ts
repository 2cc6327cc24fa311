// Container network namespaces ("sandboxes"): named `ip netns` namespaces, so
// that `ip netns exec <name> <command>` runs a container's process in them and
// the data plane can find them by name after a restart.

import { existsSync } from 'node:fs';
import { CommandError, NetlinkError, NetnsShell, runCommand } from '../netlink/ip.js';
import { applyNetlinkOps, createNetns } from '../netlink/rtnetlink.js';

/** Where `ip netns` keeps its named namespaces (bind mounts), as iproute2 does. */
const netnsRunDir = '/run/netns';

const sandboxNamePattern = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

/** Checks an `ip netns` name; `what` names it in the error (e.g. "hostNetns"). */
export function assertNetnsName(name: string, what = 'sandbox (netns) name'): void {
  if (!sandboxNamePattern.test(name)) {
    throw new Error(
      `invalid ${what} "${name}": use 1-64 characters from A-Z a-z 0-9 _ . - starting with a letter or digit`,
    );
  }
}

export function assertSandboxName(name: string): void {
  assertNetnsName(name);
}

/**
 * Looks for the name under /run/netns: no `ip netns list`, which opens every
 * namespace on the machine. A synchronous stat of a tmpfs entry (microseconds)
 * rather than an asynchronous one, which waits its turn in libuv's thread
 * pool behind file writes, LevelDB and commands.
 */
export async function sandboxExists(name: string): Promise<boolean> {
  assertSandboxName(name);
  return existsSync(`${netnsRunDir}/${name}`);
}

/**
 * Creates the namespace (if missing), with loopback up unless `loopbackUp`
 * is false (the caller brings it up with other changes). Idempotent. Native
 * rtnetlink when the addon has it (no process), else `ip netns add`; either
 * way an `ip netns` namespace that `ip netns del` removes.
 */
export async function createSandbox(name: string, opts: { loopbackUp?: boolean } = {}): Promise<void> {
  assertSandboxName(name);
  const loopbackUp = opts.loopbackUp ?? true;
  if (!(await sandboxExists(name))) {
    try {
      await createNetns(name, { loopbackUp });
      return;
    } catch (e) {
      // Lost a race with another creator: that is the state we wanted.
      const exists =
        (e instanceof CommandError && /File exists/.test(e.stderr)) ||
        (e instanceof NetlinkError && e.code === 'EEXIST');
      if (!exists) throw e;
    }
  }
  if (loopbackUp) await applyNetlinkOps([{ op: 'linkSet', netns: name, name: 'lo', up: true }]);
}

/**
 * Deletes the namespace; the kernel then destroys every veth end in it, so the
 * host side of the container's veths disappears too. Idempotent.
 */
export async function deleteSandbox(name: string): Promise<void> {
  assertSandboxName(name);
  try {
    await runCommand(['ip', 'netns', 'delete', name]);
  } catch (e) {
    if (e instanceof CommandError && /No such file|not found/i.test(e.stderr)) return;
    throw e;
  }
}

/** Runs a command inside the sandbox and resolves with its stdout; rejects with CommandError. */
export function execInSandbox(name: string, argv: string[], opts: { input?: string } = {}): Promise<string> {
  assertSandboxName(name);
  return new NetnsShell(name).exec(argv, opts);
}
