// Linearizable reads waiting for a ReadIndex answer, grouped in rounds.
//
// Every read waiting when a round starts goes with it (one ReadIndex request,
// one heartbeat exchange at the leader, for any number of reads). Up to
// maxInFlight rounds may be out at once: reads that arrive while a round is
// out start the next one at once instead of waiting for the answer, so a read
// waits about one round trip, not one and a half (the node starts at most one
// round per event-loop turn, so concurrent reads still share rounds). A round not
// answered within retryMs is issued again as a new round with a new context,
// and so is the round in flight when the leader changes: the request or its
// answer may have been lost. The superseded round stays listening, though:
// its answer, if it comes late, is as valid as the new one's (the leader
// confirmed its leadership after the reads began), so whichever answer comes
// first settles a read. Dropping late answers would starve reads whenever
// answers take longer than retryMs (a loaded machine): each answer would
// arrive just after its round was replaced.

export interface ReadWaiter {
  resolve(): void;
  reject(err: Error): void;
  /** Date.now() after which the read fails. */
  deadline: number;
  /** Set once an answer covers this read (or it failed): no other round or expiry touches it. */
  claimed?: boolean;
}

interface Round {
  waiters: ReadWaiter[];
  sentAtMs: number;
  /** Issued again (timeout, leader change): still listened to, but no longer counted as in flight. */
  superseded: boolean;
}

export class ReadIndexRounds {
  private pending: ReadWaiter[] = [];
  /** Rounds sent and not answered, by request context (hex), oldest first. */
  private readonly rounds = new Map<string, Round>();
  /** Rounds in `rounds` not superseded. */
  private inFlight = 0;

  constructor(
    private readonly retryMs: number,
    private readonly maxInFlight = 1,
  ) {}

  add(waiter: ReadWaiter): void {
    this.pending.push(waiter);
  }

  /** Reads for a new round, if one should start now (some are waiting and fewer than maxInFlight rounds are out). */
  takeNextRound(): ReadWaiter[] | undefined {
    if (this.inFlight >= this.maxInFlight) return undefined; // they go with the next round, once one is answered
    const waiters = this.pending.filter((w) => !w.claimed);
    this.pending = [];
    return waiters.length > 0 ? waiters : undefined;
  }

  /** The round of `waiters` was handed to Raft with request context `ctxHex`. */
  started(ctxHex: string, waiters: ReadWaiter[], nowMs: number): void {
    this.rounds.set(ctxHex, { waiters, sentAtMs: nowMs, superseded: false });
    this.inFlight++;
  }

  /** The round could not start (no leader): its reads wait for the next attempt. */
  notStarted(waiters: ReadWaiter[]): void {
    this.pending.push(...waiters);
  }

  /**
   * The answer to round `ctxHex`: the reads it covers, now claimed (to be
   * resolved once the state machine reaches the read index). Undefined for an
   * unknown context.
   */
  answered(ctxHex: string): ReadWaiter[] | undefined {
    const round = this.rounds.get(ctxHex);
    if (!round) return undefined;
    this.forget(ctxHex, round);
    const covered = round.waiters.filter((w) => !w.claimed);
    for (const w of covered) w.claimed = true;
    return covered;
  }

  /** Rounds in flight for longer than retryMs are issued again. */
  retryIfOverdue(nowMs: number): void {
    for (const round of this.rounds.values())
      if (!round.superseded && nowMs - round.sentAtMs > this.retryMs) this.supersede(round);
  }

  /** Their requests or answers may be lost (leader changed): the reads of every round in flight go again in the next round. */
  supersedeCurrent(): void {
    for (const round of this.rounds.values()) if (!round.superseded) this.supersede(round);
  }

  private supersede(round: Round): void {
    round.superseded = true;
    this.inFlight--;
    this.pending.push(...round.waiters.filter((w) => !w.claimed));
  }

  private forget(ctxHex: string, round: Round): void {
    this.rounds.delete(ctxHex);
    if (!round.superseded) this.inFlight--;
  }

  /** Fails the reads past their deadline; forgets rounds with no read left to serve. */
  expire(nowMs: number, timeoutError: () => Error): void {
    const keep = (w: ReadWaiter): boolean => {
      if (w.claimed) return false;
      if (w.deadline > nowMs) return true;
      w.claimed = true;
      w.reject(timeoutError());
      return false;
    };
    this.pending = this.pending.filter(keep);
    for (const [ctx, round] of this.rounds) {
      round.waiters = round.waiters.filter(keep);
      if (round.waiters.length > 0) continue;
      this.forget(ctx, round); // nothing left to serve: new reads need not wait for it
    }
  }

  rejectAll(err: Error): void {
    for (const w of [...this.pending, ...[...this.rounds.values()].flatMap((r) => r.waiters)]) {
      if (w.claimed) continue;
      w.claimed = true;
      w.reject(err);
    }
    this.pending = [];
    this.rounds.clear();
    this.inFlight = 0;
  }

  /** Rounds kept (current and superseded); bounded by the read deadline over retryMs. */
  get roundCount(): number {
    return this.rounds.size;
  }
}
