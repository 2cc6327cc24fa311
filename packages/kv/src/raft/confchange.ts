// Membership changes: computing the next configuration from the current one
// and a ConfChange, and the wire/log encoding of ConfChange entries.
//
// Two ways to change membership:
//  - simple: at most one voter added or removed (learners may change freely);
//    the leader accepts the next change only after this one has been applied
//    (see Raft.stepLeader), so consecutive configs always share a majority.
//  - joint consensus: C_old -> C_old,new (decisions need a majority of both)
//    -> C_new, for arbitrary changes. Left automatically (autoLeave) or by an
//    explicit empty ConfChange.
import { invariant, RaftInvariantError } from './errors.js';
import { cloneMembership, isJoint, type MembershipConfig, type Progress } from './progress.js';
import {
  type ConfChange,
  type ConfChangeSingle,
  ConfChangeTransition,
  ConfChangeType,
  type ConfState,
  type NodeId,
} from './types.js';

/** A conf change that cannot be applied to the current configuration (not a core bug). */
export class ConfChangeError extends Error {
  constructor(message: string) {
    super(`conf change rejected: ${message}`);
    this.name = 'ConfChangeError';
  }
}

/** A ConfChange with no changes: leaves a joint configuration. */
export function leaveJointConfChange(): ConfChange {
  return { transition: ConfChangeTransition.Auto, changes: [], context: new Uint8Array(0) };
}

/** Whether `cc` asks to leave a joint config (etcd's LeaveJoint()). */
export function isLeaveJoint(cc: ConfChange): boolean {
  return cc.changes.length === 0 && cc.transition === ConfChangeTransition.Auto;
}

/** Whether `cc` is applied through a joint configuration; and if so, whether it is left automatically. */
export function entersJoint(cc: ConfChange): { joint: boolean; autoLeave: boolean } {
  if (cc.transition !== ConfChangeTransition.Auto || cc.changes.length > 1) {
    return { joint: true, autoLeave: cc.transition !== ConfChangeTransition.JointExplicit };
  }
  return { joint: false, autoLeave: false };
}

export interface ConfigAndProgress {
  config: MembershipConfig;
  progress: Map<NodeId, Progress>;
}

type NewProgress = (next: number, isLearner: boolean) => Progress;

/**
 * Computes the configuration after `cc` without touching the inputs.
 * `lastIndex` seeds the Progress of new members; `newProgress` builds one.
 */
export function applyConfChangeTo(
  current: ConfigAndProgress,
  cc: ConfChange,
  lastIndex: number,
  newProgress: NewProgress,
): ConfigAndProgress {
  const cfg = cloneMembership(current.config);
  // Progress objects are shared with the current config; any that change are
  // replaced by copies, so a dry run (leader validating a proposal) changes nothing.
  const prs = new Map(current.progress);
  if (isLeaveJoint(cc)) {
    if (!isJoint(cfg)) return { config: cfg, progress: prs }; // nothing to leave: a no-op, as etcd does
    leaveJoint(cfg, prs);
  } else {
    const { joint, autoLeave } = entersJoint(cc);
    if (isJoint(cfg)) {
      throw new ConfChangeError(
        'the configuration is joint; leave it (empty ConfChange) before changing it again',
      );
    }
    if (joint) {
      if (cfg.incoming.size === 0) throw new ConfChangeError('cannot enter a joint config from zero voters');
      cfg.outgoing = new Set(cfg.incoming);
      applyChanges(cfg, prs, cc.changes, lastIndex, newProgress);
      cfg.autoLeave = autoLeave;
    } else {
      const before = new Set(cfg.incoming);
      applyChanges(cfg, prs, cc.changes, lastIndex, newProgress);
      let changed = 0;
      for (const id of before) if (!cfg.incoming.has(id)) changed++;
      for (const id of cfg.incoming) if (!before.has(id)) changed++;
      if (changed > 1) {
        throw new ConfChangeError(
          'more than one voter changed without a joint config; use a joint transition',
        );
      }
    }
  }
  checkMembershipInvariants(cfg, prs);
  return { config: cfg, progress: prs };
}

function leaveJoint(cfg: MembershipConfig, prs: Map<NodeId, Progress>): void {
  for (const id of cfg.learnersNext) {
    cfg.learners.add(id);
    const pr = prs.get(id);
    invariant(pr, `learnerNext ${id} has no progress`);
    prs.set(id, pr.withLearner(true));
  }
  cfg.learnersNext.clear();
  for (const id of cfg.outgoing) {
    if (!cfg.incoming.has(id) && !cfg.learners.has(id)) prs.delete(id);
  }
  cfg.outgoing.clear();
  cfg.autoLeave = false;
}

function applyChanges(
  cfg: MembershipConfig,
  prs: Map<NodeId, Progress>,
  changes: ConfChangeSingle[],
  lastIndex: number,
  newProgress: NewProgress,
): void {
  for (const ch of changes) {
    if (ch.nodeId === '') throw new ConfChangeError('a change names no node (empty nodeId)');
    switch (ch.type) {
      case ConfChangeType.AddVoter: {
        const pr = prs.get(ch.nodeId);
        prs.set(ch.nodeId, pr ? pr.withLearner(false) : newProgress(lastIndex + 1, false));
        cfg.learners.delete(ch.nodeId);
        cfg.learnersNext.delete(ch.nodeId);
        cfg.incoming.add(ch.nodeId);
        break;
      }
      case ConfChangeType.AddLearner: {
        const pr = prs.get(ch.nodeId);
        if (pr?.isLearner) break;
        cfg.incoming.delete(ch.nodeId);
        cfg.learners.delete(ch.nodeId);
        cfg.learnersNext.delete(ch.nodeId);
        // A voter of the outgoing half stays a voter until the joint config is left.
        if (cfg.outgoing.has(ch.nodeId)) {
          cfg.learnersNext.add(ch.nodeId);
          if (!pr) prs.set(ch.nodeId, newProgress(lastIndex + 1, false));
        } else {
          prs.set(ch.nodeId, pr ? pr.withLearner(true) : newProgress(lastIndex + 1, true));
          cfg.learners.add(ch.nodeId);
        }
        break;
      }
      case ConfChangeType.RemoveNode:
        cfg.incoming.delete(ch.nodeId);
        cfg.learners.delete(ch.nodeId);
        cfg.learnersNext.delete(ch.nodeId);
        if (!cfg.outgoing.has(ch.nodeId)) prs.delete(ch.nodeId);
        break;
      default:
        throw new ConfChangeError(`unknown change type ${String(ch.type)} for ${ch.nodeId}`);
    }
  }
  if (cfg.incoming.size === 0) throw new ConfChangeError('the change would remove every voter');
}

/** Throws RaftInvariantError if the config and progress map disagree. */
export function checkMembershipInvariants(cfg: MembershipConfig, prs: Map<NodeId, Progress>): void {
  const all = new Set<NodeId>([...cfg.incoming, ...cfg.outgoing, ...cfg.learners, ...cfg.learnersNext]);
  for (const id of all) invariant(prs.has(id), `member ${id} has no progress`);
  for (const id of prs.keys()) invariant(all.has(id), `progress for ${id}, who is not a member`);
  for (const id of cfg.learners) {
    invariant(!cfg.incoming.has(id) && !cfg.outgoing.has(id), `${id} is both learner and voter`);
    invariant(prs.get(id)!.isLearner, `learner ${id} has progress not marked learner`);
  }
  for (const id of cfg.learnersNext) {
    invariant(cfg.outgoing.has(id), `learnerNext ${id} is not an outgoing voter`);
    invariant(!cfg.learners.has(id), `${id} is both learner and learnerNext`);
  }
  for (const id of [...cfg.incoming, ...cfg.outgoing]) {
    invariant(!prs.get(id)!.isLearner, `voter ${id} has progress marked learner`);
  }
  if (!isJoint(cfg)) {
    invariant(cfg.learnersNext.size === 0, 'learnersNext outside a joint config');
    invariant(!cfg.autoLeave, 'autoLeave outside a joint config');
  }
}

/** Builds the configuration recorded in a snapshot or in storage. */
export function restoreMembership(
  cs: ConfState,
  lastIndex: number,
  newProgress: NewProgress,
): ConfigAndProgress {
  const cfg: MembershipConfig = {
    incoming: new Set(cs.voters),
    outgoing: new Set(cs.votersOutgoing),
    learners: new Set(cs.learners),
    learnersNext: new Set(cs.learnersNext),
    autoLeave: cs.autoLeave,
  };
  const prs = new Map<NodeId, Progress>();
  for (const id of [...cs.voters, ...cs.votersOutgoing, ...cs.learnersNext]) {
    if (!prs.has(id)) prs.set(id, newProgress(lastIndex + 1, false));
  }
  for (const id of cs.learners) {
    if (prs.has(id)) throw new RaftInvariantError(`conf state lists ${id} as both voter and learner`);
    prs.set(id, newProgress(lastIndex + 1, true));
  }
  checkMembershipInvariants(cfg, prs);
  return { config: cfg, progress: prs };
}

// --- encoding of ConfChange entry data ---------------------------------------
// JSON with a version tag: small, self-describing, and easy to read in traces.
// Entry data is opaque to the transport (it is carried as bytes).

const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder('utf-8', { fatal: true });

interface EncodedConfChangeV1 {
  v: 1;
  t: number;
  c: [number, string][];
  x: string; // context, base64
}

export function encodeConfChange(cc: ConfChange): Uint8Array {
  const enc: EncodedConfChangeV1 = {
    v: 1,
    t: cc.transition,
    c: cc.changes.map((ch) => [ch.type, ch.nodeId]),
    x: Buffer.from(cc.context).toString('base64'),
  };
  return textEncoder.encode(JSON.stringify(enc));
}

/** Decodes ConfChange entry data; throws ConfChangeError naming what is wrong. */
export function decodeConfChange(data: Uint8Array): ConfChange {
  let raw: unknown;
  try {
    raw = JSON.parse(textDecoder.decode(data));
  } catch (err) {
    throw new ConfChangeError(`entry data is not an encoded ConfChange (${(err as Error).message})`);
  }
  const r = raw as Partial<EncodedConfChangeV1>;
  if (r === null || typeof r !== 'object' || r.v !== 1) {
    throw new ConfChangeError('entry data has no supported ConfChange version (expected v=1)');
  }
  if (!Object.values(ConfChangeTransition).includes(r.t as number)) {
    throw new ConfChangeError(`unknown ConfChange transition ${String(r.t)}`);
  }
  if (!Array.isArray(r.c)) throw new ConfChangeError('ConfChange changes must be an array');
  const changes: ConfChangeSingle[] = r.c.map((pair) => {
    if (
      !Array.isArray(pair) ||
      typeof pair[1] !== 'string' ||
      !Object.values(ConfChangeType).includes(pair[0])
    ) {
      throw new ConfChangeError(`malformed ConfChange change ${JSON.stringify(pair)}`);
    }
    return { type: pair[0] as ConfChangeType, nodeId: pair[1] };
  });
  return {
    transition: r.t as ConfChangeTransition,
    changes,
    context: new Uint8Array(Buffer.from(typeof r.x === 'string' ? r.x : '', 'base64')),
  };
}

export function describeConfChange(cc: ConfChange): string {
  if (isLeaveJoint(cc)) return 'leave-joint';
  const parts = cc.changes.map((ch) => {
    const verb =
      ch.type === ConfChangeType.AddVoter ? 'v' : ch.type === ConfChangeType.AddLearner ? 'l' : 'r';
    return `${verb}${ch.nodeId}`;
  });
  const tr = ['', ' joint-implicit', ' joint-explicit'][cc.transition] ?? '';
  return parts.join(' ') + tr;
}
