// Which part an agent plays in the KV store (Consul's server/client split):
// the first `--voters` agents are Raft voters, the next ones learners up to
// `--learners`, any further one a client of the store. Every agent is given
// the same peers, so every agent computes the same initial voters from the
// sorted set {own address} ∪ peers without talking to anyone; the others join
// through them, and the cluster's leader says whether a learner slot is left
// (KvMembershipFullError when not).
import { readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

export type KvRole = 'voter' | 'learner' | 'client';

/** Numeric order of "a.b.c.d:port" (a string sort would put 192.0.2.10 before 192.0.2.9). */
function addressKey(address: string): [number, number] {
  const colon = address.lastIndexOf(':');
  const ip = address
    .slice(0, colon)
    .split('.')
    .reduce((n, octet) => n * 256 + Number(octet), 0);
  return [ip, Number(address.slice(colon + 1))];
}

export function sortAddresses(addresses: Iterable<string>): string[] {
  return [...new Set(addresses)].sort((a, b) => {
    const [ipA, portA] = addressKey(a);
    const [ipB, portB] = addressKey(b);
    return ipA - ipB || portA - portB;
  });
}

export interface KvBootstrapPlan {
  /** The Raft addresses that form the cluster when it is first created. */
  initialVoters: string[];
  /** This agent is one of them: it bootstraps with them; otherwise it joins through `joinThrough`. */
  bootstrap: boolean;
  /** Members to ask for a learner slot, the initial voters first (empty when bootstrapping). */
  joinThrough: string[];
}

/**
 * The plan for a new data directory. `self` and `peers` are Raft addresses
 * (host:port); `voters` is --voters.
 */
export function planKvBootstrap(self: string, peers: readonly string[], voters: number): KvBootstrapPlan {
  const all = sortAddresses([self, ...peers]);
  const initialVoters = all.slice(0, voters);
  const bootstrap = initialVoters.includes(self);
  const others = all.filter((a) => a !== self);
  return {
    initialVoters,
    bootstrap,
    // The initial voters may since have been replaced (autopilot): any member can pass a join on to the leader.
    joinThrough: bootstrap ? [] : [...initialVoters, ...others.filter((a) => !initialVoters.includes(a))],
  };
}

const CLIENT_ROLE_FILE = 'kv-role';

/**
 * Whether this data directory belongs to an agent that runs as a client. A
 * voter's or learner's role lives in the replicated configuration; a client
 * has no KV state, so its role is recorded here: a restart keeps it instead of
 * asking the cluster for a slot again. Remove the file to try again.
 */
export async function isRecordedClient(dataDir: string): Promise<boolean> {
  try {
    const text = (await readFile(join(dataDir, CLIENT_ROLE_FILE), 'utf8')).trim();
    if (text !== 'client')
      throw new Error(
        `${join(dataDir, CLIENT_ROLE_FILE)} holds "${text.slice(0, 40)}", not "client"; remove it to let the agent ask the cluster for a role again`,
      );
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
}

export async function recordClientRole(dataDir: string): Promise<void> {
  await writeFile(join(dataDir, CLIENT_ROLE_FILE), 'client\n');
}

/** The agent took a voter or learner slot after all: its next start resumes from its KV state. */
export async function forgetClientRole(dataDir: string): Promise<void> {
  await rm(join(dataDir, CLIENT_ROLE_FILE), { force: true });
}

/**
 * Which client (0 = first) asks for a free slot: the clients are the agents'
 * addresses (`all`: the live hosts, or every agent's --advertise and peers)
 * outside the Raft configuration, in address order. The first asks at once,
 * the next one a check later, and so on, so a freed slot does not bring every
 * client at once.
 */
export function clientRank(self: string, all: readonly string[], members: readonly string[]): number {
  const inRaft = new Set(members);
  const clients = sortAddresses(all).filter((a) => !inRaft.has(a));
  return Math.max(0, clients.indexOf(self));
}
