// Container network namespaces ("sandboxes"): named `ip netns` namespaces, so
// that `ip netns exec <name> <command>` runs a container's process in them and
// the data plane can find them by name after a restart.

import { access } from 'node:fs/promises';
import { CommandError, NetnsShell, runCommand } from '../netlink/ip.js';

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

/** Looks for the name under /run/netns: no `ip netns list`, which opens every namespace on the machine. */
export async function sandboxExists(name: string): Promise<boolean> {
  assertSandboxName(name);
  try {
    await access(`${netnsRunDir}/${name}`);
    return true;
  } catch {
    return false;
  }
}

/** Creates the namespace (if missing) with loopback up. Idempotent. */
export async function createSandbox(name: string): Promise<void> {
  assertSandboxName(name);
  if (!(await sandboxExists(name))) {
    try {
      // One `ip` from Node instead of two (each spawn from the agent's large
      // process costs more than the fork `ip netns exec` makes in there).
      await new NetnsShell().ipBatch([`netns add ${name}`, `netns exec ${name} ip link set lo up`]);
      return;
    } catch (e) {
      // Lost a race with another creator: that is the state we wanted.
      if (!(e instanceof CommandError && /File exists/.test(e.stderr))) throw e;
    }
  }
  await new NetnsShell(name).ip(['link', 'set', 'lo', 'up']);
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
