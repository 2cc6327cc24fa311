// Writes this node appended to its own log while leading, by log index, with
// the term they were appended in. If that index later commits with another
// term, a newer leader overwrote the entry: by Log Matching the write exists
// at no other index, so it will certainly never be applied and its caller
// can be told so at once (instead of waiting for the proposal timeout with
// an "outcome unknown" error).

interface LocalEntry {
  proposalId: string;
  term: number;
}

export class LocalEntries {
  private readonly byIndex = new Map<number, LocalEntry>();

  /** `proposalIds` were just appended, in order, ending at `lastIndex`, in `term`. */
  appended(proposalIds: readonly string[], lastIndex: number, term: number): void {
    const first = lastIndex - proposalIds.length + 1;
    proposalIds.forEach((proposalId, k) => {
      this.byIndex.set(first + k, { proposalId, term });
    });
  }

  /** The entry at `index` committed with `term`: the proposal of ours it replaced, if any. */
  replacedAt(index: number, term: number): string | undefined {
    if (this.byIndex.size === 0) return undefined;
    const own = this.byIndex.get(index);
    if (!own) return undefined;
    this.byIndex.delete(index);
    return own.term === term ? undefined : own.proposalId;
  }

  /** Forgets entries at or below `appliedIndex` (a snapshot skipped them) and those no caller waits for. */
  prune(appliedIndex: number, waiting: (proposalId: string) => boolean): void {
    for (const [index, own] of this.byIndex)
      if (index <= appliedIndex || !waiting(own.proposalId)) this.byIndex.delete(index);
  }

  get size(): number {
    return this.byIndex.size;
  }
}
