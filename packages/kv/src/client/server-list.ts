// Which server a KvClient talks to, after Consul's client-side router
// (agent/router/manager.go): every client starts from its own shuffle of the
// servers so load spreads, sticks to the first one while it works, moves a
// server that failed to the back of the line, and reshuffles now and then so
// clients that all failed over to the same server spread out again once the
// others are back.

export class ServerList {
  private order: string[];

  /** `seeds` are the configured servers; they stay in the list whatever the cluster reports. */
  constructor(
    private readonly seeds: readonly string[],
    private readonly random: () => number = Math.random,
  ) {
    if (seeds.length === 0) throw new Error('a KV client needs at least one server address');
    this.order = shuffle([...new Set(seeds)], random);
  }

  /** The server to use now. */
  preferred(): string {
    return this.order[0]!;
  }

  /** Every known server, in the order to try them. */
  all(): string[] {
    return [...this.order];
  }

  /**
   * `server` failed: if it is still the preferred one, the next takes its
   * place and it goes last. (Several requests failing on the same server
   * move it once, not once each.)
   */
  noteFailure(server: string): void {
    if (this.order[0] !== server || this.order.length < 2) return;
    this.order = [...this.order.slice(1), server];
  }

  /** A fresh shuffle (spreading clients over the servers again). */
  rebalance(): void {
    this.order = shuffle(this.order, this.random);
  }

  /**
   * The servers the cluster reports now (its voters): new ones are added at
   * the back; ones it no longer reports are dropped unless configured.
   */
  update(reported: readonly string[]): void {
    const keep = new Set([...this.seeds, ...reported]);
    const next = this.order.filter((s) => keep.has(s));
    for (const s of reported) if (!next.includes(s)) next.push(s);
    this.order = next;
  }
}

function shuffle<T>(items: T[], random: () => number): T[] {
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}
