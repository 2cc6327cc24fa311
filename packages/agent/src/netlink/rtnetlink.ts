// Link, address, route, FDB and neighbour changes as data (NetlinkOp),
// applied either over rtnetlink by the native addon (native/src/netlink.cc:
// libmnl on a libuv worker thread, no process started) or by `ip -batch` and
// `bridge -batch` (iproute2), which is the fallback: without the addon, or
// with WEFT_NETLINK=ip. Both paths take the same list and stop at the first
// failing change.
//
// Why not everything native: listings (`ip -j -d link show`) stay with iproute2,
// whose JSON we already parse; what is native is what `weft run` waits for.

import { loadNativeAddon } from '../dataplane/native.js';
import { NetlinkError, NetnsShell } from './ip.js';

/**
 * One change. `netns` is the `ip netns` name it applies in; undefined = the
 * agent's own namespace.
 */
export type NetlinkOp =
  /** A veth pair whose peer is made directly in `peerNetns` (so its name never collides here). */
  | {
      op: 'vethAdd';
      netns?: string;
      name: string;
      mtu?: number;
      peerName: string;
      peerMac?: string;
      peerMtu?: number;
      peerNetns: string;
    }
  /** Changes of an existing link; `addrGenModeNone` is applied first (no IPv6 link-local address once up). */
  | {
      op: 'linkSet';
      netns?: string;
      name: string;
      mtu?: number;
      alias?: string;
      master?: string;
      up?: boolean;
      addrGenModeNone?: boolean;
    }
  /** Options of a link as a port of its bridge (it must be in the bridge already). */
  | { op: 'bridgePortSet'; netns?: string; name: string; isolated: boolean }
  | { op: 'addrReplace' | 'addrDelete'; netns?: string; dev: string; ip: string; prefixLength: number }
  | { op: 'routeReplaceDefault'; netns?: string; dev: string; gateway: string }
  | { op: 'linkDelete'; netns?: string; name: string }
  /**
   * An FDB entry on `dev`: `self` in the device's own table (a vxlan device:
   * frames for `mac` go to the VTEP `dst`; permanent), `master` in its
   * bridge's (static: the bridge sends `mac` to this port instead of flooding).
   */
  | { op: 'fdbReplace'; netns?: string; dev: string; mac: string; where: 'self'; dst: string }
  | { op: 'fdbReplace'; netns?: string; dev: string; mac: string; where: 'master' }
  | { op: 'fdbDelete'; netns?: string; dev: string; mac: string; where: 'self' | 'master' }
  /** A permanent neighbour (ARP) entry `ip` → `mac` on `dev`. */
  | { op: 'neighReplace'; netns?: string; dev: string; ip: string; mac: string }
  | { op: 'neighDelete'; netns?: string; dev: string; ip: string }
  /**
   * An ARP announcement of `ip` at `mac`, broadcast out of `dev` (raw frame,
   * RFC 5227): a host waiting for that address's ARP answer takes it at once.
   * Best effort: it never fails the list (a missing device, a missing
   * CAP_NET_RAW, a link that is down). Native only: the iproute2 path skips
   * it (nothing there sends ARP from another host's MAC).
   */
  | { op: 'announce'; netns?: string; dev: string; ip: string; mac: string };

interface NetlinkAddon {
  netlinkApply(ops: NetlinkOp[]): Promise<void>;
  netnsCreate(name: string, loopbackUp: boolean): Promise<void>;
}

let addon: NetlinkAddon | null | undefined;

/**
 * The addon's rtnetlink functions, or null: WEFT_NETLINK=ip (read on every
 * call, so tests can run both paths in one process), or no addon built.
 */
export function nativeNetlink(): NetlinkAddon | null {
  if (process.env.WEFT_NETLINK === 'ip') return null;
  if (addon === undefined) {
    addon = null;
    try {
      const loaded = loadNativeAddon() as unknown as Partial<NetlinkAddon>;
      if (typeof loaded.netlinkApply === 'function' && typeof loaded.netnsCreate === 'function') {
        addon = loaded as NetlinkAddon;
      }
    } catch {
      // no addon: iproute2 it is
    }
  }
  return addon;
}

/** Which path changes go through now. */
export function netlinkPath(): 'native' | 'ip' {
  return nativeNetlink() === null ? 'ip' : 'native';
}

function fromAddon(e: unknown): unknown {
  const x = e as Partial<NetlinkError> & Error;
  if (typeof x?.code !== 'string' || typeof x.operation !== 'string') return e; // argument errors
  return new NetlinkError(x.message, x.code, x.errno ?? 0, x.operation, x.device ?? '', x.netns ?? '');
}

/** Which iproute2 program makes the change in the fallback: FDB entries are `bridge`'s. */
function toolOf(op: NetlinkOp): 'ip' | 'bridge' {
  return op.op === 'fdbReplace' || op.op === 'fdbDelete' ? 'bridge' : 'ip';
}

/** The `ip -batch` (or, for FDB entries, `bridge -batch`) line of one change, without its namespace: the batch runs in it. */
export function ipBatchLine(op: NetlinkOp): string {
  switch (op.op) {
    case 'vethAdd':
      return [
        `link add ${op.name}`,
        ...(op.mtu === undefined ? [] : [`mtu ${op.mtu}`]),
        `type veth peer name ${op.peerName}`,
        ...(op.peerMac === undefined ? [] : [`address ${op.peerMac}`]),
        ...(op.peerMtu === undefined ? [] : [`mtu ${op.peerMtu}`]),
        `netns ${op.peerNetns}`,
      ].join(' ');
    case 'linkSet': {
      const parts = [`link set dev ${op.name}`];
      if (op.mtu !== undefined) parts.push(`mtu ${op.mtu}`);
      if (op.alias !== undefined) parts.push(`alias "${op.alias}"`);
      if (op.master !== undefined) parts.push(`master ${op.master}`);
      if (op.up !== undefined) parts.push(op.up ? 'up' : 'down');
      const line = parts.join(' ');
      return op.addrGenModeNone ? `link set dev ${op.name} addrgenmode none\n${line}` : line;
    }
    case 'bridgePortSet':
      return `link set dev ${op.name} type bridge_slave isolated ${op.isolated ? 'on' : 'off'}`;
    case 'addrReplace':
      return `address replace ${op.ip}/${op.prefixLength} dev ${op.dev}`;
    case 'addrDelete':
      return `address delete ${op.ip}/${op.prefixLength} dev ${op.dev}`;
    case 'routeReplaceDefault':
      return `route replace default via ${op.gateway} dev ${op.dev}`;
    case 'linkDelete':
      return `link delete dev ${op.name}`;
    case 'fdbReplace':
      return op.where === 'self'
        ? `fdb replace ${op.mac} dev ${op.dev} dst ${op.dst} self permanent`
        : `fdb replace ${op.mac} dev ${op.dev} master static`;
    case 'fdbDelete':
      return `fdb del ${op.mac} dev ${op.dev} ${op.where}`;
    case 'neighReplace':
      return `neigh replace ${op.ip} lladdr ${op.mac} dev ${op.dev} nud permanent`;
    case 'neighDelete':
      return `neigh del ${op.ip} dev ${op.dev}`;
    case 'announce':
      throw new Error('an ARP announcement has no iproute2 equivalent (applyNetlinkOps skips it there)');
  }
}

/** The lines of several changes, for one `ip -batch` in their namespace. */
export function ipBatchLines(ops: NetlinkOp[]): string[] {
  return ops.flatMap((op) => ipBatchLine(op).split('\n'));
}

/**
 * Applies the changes in order and stops at the first failure: natively
 * (NetlinkError) or with one `ip -batch` / `bridge -batch` per run of changes
 * for the same program in the same namespace (CommandError).
 */
export async function applyNetlinkOps(ops: NetlinkOp[]): Promise<void> {
  if (ops.length === 0) return;
  const native = nativeNetlink();
  if (native !== null) {
    try {
      await native.netlinkApply(ops);
    } catch (e) {
      throw fromAddon(e);
    }
    return;
  }
  ops = ops.filter((op) => op.op !== 'announce');
  let start = 0;
  while (start < ops.length) {
    let end = start + 1;
    const first = ops[start]!;
    while (end < ops.length && ops[end]!.netns === first.netns && toolOf(ops[end]!) === toolOf(first)) end++;
    const shell = new NetnsShell(first.netns);
    const lines = ipBatchLines(ops.slice(start, end));
    await (toolOf(first) === 'bridge' ? shell.bridgeBatch(lines) : shell.ipBatch(lines));
    start = end;
  }
}

/**
 * Makes the `ip netns` namespace (loopback up if asked) as `ip netns add`
 * would, natively when it can. An existing name rejects (NetlinkError with
 * code EEXIST, or CommandError saying "File exists").
 */
export async function createNetns(name: string, opts: { loopbackUp: boolean }): Promise<void> {
  const native = nativeNetlink();
  if (native !== null) {
    try {
      await native.netnsCreate(name, opts.loopbackUp);
    } catch (e) {
      throw fromAddon(e);
    }
    return;
  }
  // One `ip` from Node instead of two (`netns exec` forks that small process, not the agent).
  await new NetnsShell().ipBatch([
    `netns add ${name}`,
    ...(opts.loopbackUp ? [`netns exec ${name} ip link set lo up`] : []),
  ]);
}
