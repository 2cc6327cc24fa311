// Quorum arithmetic for a majority configuration and for a joint one
// (C_old,new: a decision needs a majority in both halves).
import type { NodeId } from './types.js';

export enum VoteResult {
  Pending = 'pending',
  Lost = 'lost',
  Won = 'won',
}

/**
 * The largest index that a majority of `voters` have acknowledged.
 * An empty config returns +Infinity so that it never limits a joint config
 * (min(incoming, outgoing) with an empty outgoing half is the incoming value).
 */
export function majorityCommittedIndex(voters: ReadonlySet<NodeId>, matchOf: (id: NodeId) => number): number {
  if (voters.size === 0) return Number.POSITIVE_INFINITY;
  const acked: number[] = [];
  for (const id of voters) acked.push(matchOf(id));
  acked.sort((a, b) => b - a);
  // Sorted descending, the element at position floor(n/2) is the largest value
  // that at least floor(n/2)+1 voters (a majority) have reached.
  return acked[Math.floor(acked.length / 2)]!;
}

/** Outcome of a vote in one majority config; missing entries are votes not yet received. */
export function majorityVoteResult(
  voters: ReadonlySet<NodeId>,
  votes: ReadonlyMap<NodeId, boolean>,
): VoteResult {
  if (voters.size === 0) return VoteResult.Won; // an empty half of a joint config agrees to everything
  let granted = 0;
  let missing = 0;
  for (const id of voters) {
    const v = votes.get(id);
    if (v === undefined) missing++;
    else if (v) granted++;
  }
  const quorum = Math.floor(voters.size / 2) + 1;
  if (granted >= quorum) return VoteResult.Won;
  if (granted + missing >= quorum) return VoteResult.Pending;
  return VoteResult.Lost;
}

export function jointCommittedIndex(
  incoming: ReadonlySet<NodeId>,
  outgoing: ReadonlySet<NodeId>,
  matchOf: (id: NodeId) => number,
): number {
  return Math.min(majorityCommittedIndex(incoming, matchOf), majorityCommittedIndex(outgoing, matchOf));
}

export function jointVoteResult(
  incoming: ReadonlySet<NodeId>,
  outgoing: ReadonlySet<NodeId>,
  votes: ReadonlyMap<NodeId, boolean>,
): VoteResult {
  const a = majorityVoteResult(incoming, votes);
  const b = majorityVoteResult(outgoing, votes);
  if (a === b) return a;
  if (a === VoteResult.Lost || b === VoteResult.Lost) return VoteResult.Lost;
  return VoteResult.Pending; // one won, the other pending
}
