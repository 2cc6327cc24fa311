// Autopilot: the leader's membership policy (Consul's autopilot, in small).
//
// A pure function from what the leader knows (members, how long since it
// heard from each, how far each has replicated) and the limits to the ONE
// next membership change, if any. node.ts runs it every duty interval on
// the leader and waits for each change to be applied before asking again,
// so changes never overlap. Kept free of I/O and clocks so every rule can
// be unit-tested (test/node/autopilot.test.ts).
//
// Rules, in order:
//  1. A voter unreachable for longer than deadVoterThresholdMs is removed
//     once the cluster has more voters than maxVoters (a replacement was
//     promoted first, rule 2), and only if the voters left still have a
//     quorum of reachable members. The leader never removes itself.
//     With more voters than maxVoters and none dead (a dead voter came back
//     after its replacement was promoted), the voter with the least of the
//     log is demoted to a learner instead, on the same quorum condition.
//  2. A healthy, caught-up learner is promoted while the voters that are not
//     dead number fewer than maxVoters: this fills the voter set up to the
//     limit and replaces a dead voter (promote first, then rule 1 removes
//     the dead one: the cluster never runs with fewer live voters).
//  3. A learner unreachable for longer than deadVoterThresholdMs is removed,
//     freeing its slot (it joins again when it comes back, if there is room).
//
// Before those, members that asked to leave (a graceful shutdown, like
// `consul leave`; see leavingAction): a leaving learner is removed; a leaving
// voter is first replaced by a healthy learner, then removed, as long as the
// voters left keep a quorum of healthy members.
import type { NodeId } from '../raft/types.js';

export interface AutopilotLimits {
  /** Voters the leader fills the configuration up to (Infinity = every caught-up learner is promoted). */
  maxVoters: number;
  /** A member not heard from for longer than this is dead: a voter is replaced, a learner removed. */
  deadVoterThresholdMs: number;
  /** A member heard from within this long is healthy (may be promoted, counts towards a quorum). */
  healthyContactMs: number;
  /** A learner within this many entries of the commit index has caught up. */
  promoteMaxLagEntries: number;
}

export interface MemberHealth {
  /** Milliseconds since the leader last received a message from the member. */
  lastHeardAgoMs: number;
  /** Highest log index known to be replicated on the member. */
  matchIndex: number;
}

export interface AutopilotInput {
  /** The leader running the policy. */
  self: NodeId;
  voters: readonly NodeId[];
  learners: readonly NodeId[];
  /** Health of the other members; a member without an entry counts as dead. */
  health: ReadonlyMap<NodeId, MemberHealth>;
  commitIndex: number;
  limits: AutopilotLimits;
  /** Members that asked to leave and are still asking (they stay healthy until removed). */
  leaving?: ReadonlySet<NodeId>;
}

export type AutopilotAction =
  | { type: 'promote'; id: NodeId; reason: string }
  | { type: 'remove'; id: NodeId; reason: string }
  | { type: 'demote'; id: NodeId; reason: string }
  | { type: 'none' };

export function quorumOf(voterCount: number): number {
  return Math.floor(voterCount / 2) + 1;
}

/** What the rules see of one input: health predicates and the candidates they share. */
function view(input: AutopilotInput) {
  const { self, voters, learners, health, commitIndex, limits } = input;
  const leaving = input.leaving ?? new Set<NodeId>();
  const agoMs = (id: NodeId) => (id === self ? 0 : (health.get(id)?.lastHeardAgoMs ?? Infinity));
  const isDead = (id: NodeId) => agoMs(id) > limits.deadVoterThresholdMs;
  const isHealthy = (id: NodeId) => agoMs(id) <= limits.healthyContactMs;
  // Longest silent first: the one most surely gone.
  const deadestFirst = (ids: readonly NodeId[]) =>
    ids.filter((id) => id !== self && isDead(id)).sort((a, b) => agoMs(b) - agoMs(a) || cmp(a, b));
  const quorumKeptWithout = (id: NodeId) => {
    const remaining = voters.filter((v) => v !== id);
    return remaining.filter(isHealthy).length >= quorumOf(remaining.length);
  };
  // The healthiest caught-up learner that is staying: most of the log, then heard from most recently.
  const promotable = learners
    .filter((id) => id !== self && !leaving.has(id) && isHealthy(id))
    .filter((id) => (health.get(id)?.matchIndex ?? 0) + limits.promoteMaxLagEntries >= commitIndex)
    .sort(
      (a, b) =>
        (health.get(b)?.matchIndex ?? 0) - (health.get(a)?.matchIndex ?? 0) ||
        agoMs(a) - agoMs(b) ||
        cmp(a, b),
    )[0];
  return { leaving, agoMs, isHealthy, deadestFirst, quorumKeptWithout, promotable };
}

/**
 * The next step for members that asked to leave, or undefined when none can
 * be taken (then the ordinary rules run). A leaving learner is removed. A
 * leaving voter is replaced first, when a healthy learner is there and the
 * voters are not above maxVoters, so the cluster keeps its voter count; then
 * removed, if the voters left keep a quorum of healthy members. When they
 * would not, but a dead voter (past the threshold) can go without that
 * problem, the dead voter is removed first: otherwise the leaving voter's
 * shutdown would leave the cluster without a quorum (e.g. 3 voters, one dead,
 * one leaving: the last voter alone carries on). The leader never removes
 * itself here (it hands over leadership before leaving).
 */
function leavingAction(input: AutopilotInput): AutopilotAction | undefined {
  const { self, voters, learners, limits } = input;
  const { leaving, deadestFirst, quorumKeptWithout, promotable } = view(input);
  const learner = learners.find((id) => id !== self && leaving.has(id));
  if (learner !== undefined) return { type: 'remove', id: learner, reason: 'learner is leaving' };
  const voter = voters.filter((id) => id !== self && leaving.has(id)).sort(cmp)[0];
  if (voter === undefined) return undefined;
  if (promotable !== undefined && voters.length <= limits.maxVoters) {
    return { type: 'promote', id: promotable, reason: `replacing leaving voter ${voter}` };
  }
  if (quorumKeptWithout(voter)) return { type: 'remove', id: voter, reason: 'voter is leaving' };
  const dead = deadestFirst(voters).find((id) => !leaving.has(id) && quorumKeptWithout(id));
  if (dead !== undefined) {
    return {
      type: 'remove',
      id: dead,
      reason: `dead voter removed so that leaving voter ${voter} can go without the voters losing their quorum`,
    };
  }
  return undefined;
}

export function nextMembershipAction(input: AutopilotInput): AutopilotAction {
  const leavingStep = leavingAction(input);
  if (leavingStep) return leavingStep;
  const { self, voters, learners, health, limits } = input;
  const { agoMs, deadestFirst, quorumKeptWithout, promotable } = view(input);

  const deadVoters = deadestFirst(voters);
  if (voters.length > limits.maxVoters) {
    const dead = deadVoters.find(quorumKeptWithout);
    if (dead !== undefined) {
      return {
        type: 'remove',
        id: dead,
        reason: `voter not heard from for ${formatMs(agoMs(dead))} (threshold ${limits.deadVoterThresholdMs} ms) and ${voters.length} voters exceed maxVoters ${limits.maxVoters}`,
      };
    }
    if (deadVoters.length === 0) {
      const match = (id: NodeId) => health.get(id)?.matchIndex ?? 0;
      const surplus = voters
        .filter((id) => id !== self)
        .sort((a, b) => match(a) - match(b) || cmp(b, a))
        .find(quorumKeptWithout);
      if (surplus !== undefined) {
        return {
          type: 'demote',
          id: surplus,
          reason: `${voters.length} voters exceed maxVoters ${limits.maxVoters} and none is dead: the one with the least of the log steps back`,
        };
      }
    }
  }

  const liveVoters = voters.length - deadVoters.length;
  if (liveVoters < limits.maxVoters && voters.length <= limits.maxVoters) {
    const candidate = promotable;
    if (candidate !== undefined) {
      return {
        type: 'promote',
        id: candidate,
        reason:
          deadVoters.length > 0
            ? `replacing dead voter ${deadVoters[0]} (${liveVoters} live of maxVoters ${limits.maxVoters})`
            : `${voters.length} voters, fewer than maxVoters ${limits.maxVoters}`,
      };
    }
  }

  const deadLearner = deadestFirst(learners)[0];
  if (deadLearner !== undefined) {
    return {
      type: 'remove',
      id: deadLearner,
      reason: `learner not heard from for ${formatMs(agoMs(deadLearner))} (threshold ${limits.deadVoterThresholdMs} ms): its slot is freed`,
    };
  }
  return { type: 'none' };
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function formatMs(ms: number): string {
  return Number.isFinite(ms) ? `${Math.round(ms)} ms` : 'ever (since this leader took over)';
}

/**
 * Why a new member may not join (it would join as a learner), or undefined
 * when there is room: learner slots free, or voter slots free that the new
 * member would be promoted into once caught up.
 */
export function joinRefusal(
  members: { voters: readonly NodeId[]; learners: readonly NodeId[] },
  limits: { maxVoters: number; maxLearners: number },
): string | undefined {
  const openVoterSlots = Math.max(0, limits.maxVoters - members.voters.length);
  if (members.learners.length < limits.maxLearners + openVoterSlots) return undefined;
  return `the cluster is full: ${members.voters.length} voters (maxVoters ${limits.maxVoters}) and ${members.learners.length} learners (maxLearners ${limits.maxLearners})`;
}
