// Hands the desired per-host state to a Dataplane as ordered, idempotent
// add/remove calls, remembering what was applied. A full listing (after a
// restart or a lost watch) goes through Dataplane.reconcile instead, so
// anything missed in between is repaired (anti-entropy). Failed calls are
// not marked applied, so the next sync repeats them.
import type { Dataplane, LocalEndpoint, NetworkSpec, RemotePeer } from './dataplane.js';

export interface DesiredDataplane {
  networks: NetworkSpec[];
  endpoints: LocalEndpoint[];
  peers: RemotePeer[];
}

export interface SyncResult {
  /** Calls that failed, by `network:<id>` / `endpoint:<id>` / `peer:<id>` / `reconcile`. */
  failures: Map<string, Error>;
  peersAdded: RemotePeer[];
  peersRemoved: RemotePeer[];
}

const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);

export class DataplaneSync {
  private readonly networks = new Map<string, NetworkSpec>();
  private readonly endpoints = new Map<string, LocalEndpoint>();
  private readonly peers = new Map<string, RemotePeer>();
  /** Endpoints attached ahead of a commit that no synced view has shown yet (see attachAhead). */
  private readonly ahead = new Set<string>();
  /** Serializes every call into the data plane, so events are applied in order. */
  private tail: Promise<unknown> = Promise.resolve();

  constructor(private readonly dataplane: Dataplane) {}

  /** Peers currently programmed into the data plane. */
  appliedPeers(): RemotePeer[] {
    return [...this.peers.values()];
  }

  sync(desired: DesiredDataplane, opts: { full: boolean }): Promise<SyncResult> {
    return this.enqueue(() => (opts.full ? this.reconcile(desired) : this.diff(desired)));
  }

  /**
   * Attaches a local endpoint ahead of its commit: the caller knows its
   * address and MAC before the store does, so the wiring runs while the
   * transaction commits instead of after. Queued with the other calls and
   * recorded as applied on success, so the sync that follows the commit does
   * not repeat it. If the commit fails, the caller undoes it (detachAhead); a
   * failure here is left to that sync, which attaches and reports as usual.
   * Only on a network already applied here.
   */
  attachAhead(ep: LocalEndpoint): Promise<void> {
    // Until the store's view has it, a sync from an older view must not take it down.
    this.ahead.add(ep.endpointId);
    return this.enqueue(async () => {
      if (this.endpoints.has(ep.endpointId) || !this.networks.has(ep.networkId)) return;
      await this.dataplane.attach(ep);
      this.endpoints.set(ep.endpointId, ep);
    });
  }

  /**
   * Undoes attachAhead for an endpoint whose commit failed: detached even if
   * the attach failed halfway (detach is idempotent; the endpoint's ID was
   * never committed, so nothing else uses it).
   */
  detachAhead(ep: LocalEndpoint): Promise<void> {
    return this.enqueue(async () => {
      this.ahead.delete(ep.endpointId);
      const applied = this.endpoints.get(ep.endpointId);
      if (applied !== undefined && !same(applied, ep)) return;
      const { networkId, endpointId, sandbox, ifName } = ep;
      await this.dataplane.detach({ networkId, endpointId, sandbox, ifName });
      this.endpoints.delete(ep.endpointId);
    });
  }

  /** Runs `fn` after every call queued before it: one data-plane change at a time, in call order. */
  private enqueue<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.tail.then(fn);
    this.tail = run.catch(() => undefined);
    return run;
  }

  /** Waits until every queued call has run. */
  async drain(): Promise<void> {
    await this.tail;
  }

  private async reconcile(desired: DesiredDataplane): Promise<SyncResult> {
    const result: SyncResult = { failures: new Map(), peersAdded: [], peersRemoved: [] };
    try {
      await this.dataplane.reconcile(desired);
    } catch (e) {
      result.failures.set('reconcile', asError(e));
      // Unknown device state: forget it, so the next sync re-adds everything.
      this.networks.clear();
      this.endpoints.clear();
      this.peers.clear();
      return result;
    }
    const oldPeers = new Map(this.peers);
    this.ahead.clear(); // reconcile made the devices match the listing: nothing is ahead of it any more
    this.networks.clear();
    this.endpoints.clear();
    this.peers.clear();
    for (const n of desired.networks) this.networks.set(n.id, n);
    for (const ep of desired.endpoints) this.endpoints.set(ep.endpointId, ep);
    for (const p of desired.peers) {
      this.peers.set(p.endpointId, p);
      if (!same(oldPeers.get(p.endpointId), p)) result.peersAdded.push(p);
      oldPeers.delete(p.endpointId);
    }
    result.peersRemoved.push(...oldPeers.values());
    return result;
  }

  private async diff(desired: DesiredDataplane): Promise<SyncResult> {
    const result: SyncResult = { failures: new Map(), peersAdded: [], peersRemoved: [] };
    const call = async (key: string, fn: () => Promise<void>): Promise<boolean> => {
      try {
        await fn();
        return true;
      } catch (e) {
        result.failures.set(key, asError(e));
        return false;
      }
    };
    const wantNets = new Map(desired.networks.map((n) => [n.id, n]));
    const wantEps = new Map(desired.endpoints.map((e) => [e.endpointId, e]));
    const wantPeers = new Map(desired.peers.map((p) => [p.endpointId, p]));

    // Removals first (peers, then local endpoints, then networks), so a
    // changed item is taken down before its replacement goes up.
    // Peer removals are independent of each other: issued together (a dead
    // host's endpoints go in one batch where the data plane can).
    const removals = [...this.peers].filter(([id, p]) => !same(wantPeers.get(id), p));
    const removed = await Promise.all(
      removals.map(([id, p]) => call(`peer:${id}`, () => this.dataplane.removePeer(p))),
    );
    removals.forEach(([id, p], i) => {
      if (!removed[i]) return;
      this.peers.delete(id);
      result.peersRemoved.push(p);
    });
    for (const id of wantEps.keys()) this.ahead.delete(id);
    for (const [id, ep] of [...this.endpoints]) {
      if (same(wantEps.get(id), ep) || this.ahead.has(id)) continue;
      const { networkId, endpointId, sandbox, ifName } = ep;
      if (
        await call(`endpoint:${id}`, () => this.dataplane.detach({ networkId, endpointId, sandbox, ifName }))
      ) {
        this.endpoints.delete(id);
      }
    }
    for (const [id] of [...this.networks]) {
      if (wantNets.has(id)) continue;
      if (await call(`network:${id}`, () => this.dataplane.removeNetwork(id))) this.networks.delete(id);
    }
    for (const [id, n] of wantNets) {
      if (same(this.networks.get(id), n)) continue;
      if (await call(`network:${id}`, () => this.dataplane.ensureNetwork(n))) this.networks.set(id, n);
    }
    for (const [id, ep] of wantEps) {
      if (this.endpoints.has(id) || !this.networks.has(ep.networkId)) continue;
      if (await call(`endpoint:${id}`, () => this.dataplane.attach(ep))) this.endpoints.set(id, ep);
    }
    // Adds are independent of each other (removals went first): issue them
    // together, so a data plane can write them in one batch — a host joining
    // a network learns all its peers at once.
    const adds = [...wantPeers].filter(([id, p]) => !this.peers.has(id) && this.networks.has(p.networkId));
    const added = await Promise.all(
      adds.map(([id, p]) => call(`peer:${id}`, () => this.dataplane.addPeer(p))),
    );
    adds.forEach(([id, p], i) => {
      if (!added[i]) return;
      this.peers.set(id, p);
      result.peersAdded.push(p);
    });
    return result;
  }
}

function asError(e: unknown): Error {
  return e instanceof Error ? e : new Error(String(e));
}
