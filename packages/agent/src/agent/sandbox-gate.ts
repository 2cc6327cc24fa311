// Lets `weft run` commit a container's endpoint to the store while its
// network namespace is still being made: other hosts learn the endpoint one
// namespace creation sooner. The data plane the overlay
// drives is wrapped so that attaching into a namespace that is still being
// made waits for it, and fails with the cause if making it failed (the
// overlay then rolls the endpoint back).
import type { Dataplane, LocalEndpoint } from '@weft/overlay';

/** When the data plane's attach into a held sandbox started and ended (performance.now() ms). */
export interface WiringTimes {
  startMs: number;
  endMs: number;
}

export class SandboxGate {
  private readonly pending = new Map<string, Promise<void>>();
  /** Wiring times of held sandboxes, until taken (see takeWiringTimes); for run's debug phases. */
  private readonly wiring = new Map<string, WiringTimes>();

  /** Attaches into `sandbox` wait until `ready` settles (and fail if it rejects). */
  hold(sandbox: string, ready: Promise<unknown>): void {
    const settled = ready.then(
      () => undefined,
      (err: unknown) => {
        throw new Error(
          `container namespace ${sandbox} could not be made: ${(err as Error)?.message ?? err}`,
          {
            cause: err,
          },
        );
      },
    );
    settled.catch(() => {}); // awaited by attach when it comes; never unhandled
    this.pending.set(sandbox, settled);
    void settled
      .catch(() => {})
      .finally(() => {
        if (this.pending.get(sandbox) === settled) this.pending.delete(sandbox);
      });
  }

  private async ready(sandbox: string): Promise<void> {
    await this.pending.get(sandbox);
  }

  /** When the data plane wired the sandbox held last (undefined if it did not); forgets it. */
  takeWiringTimes(sandbox: string): WiringTimes | undefined {
    const t = this.wiring.get(sandbox);
    this.wiring.delete(sandbox);
    return t;
  }

  /** `dataplane` with attach and reconcile gated on namespaces still being made. */
  wrap(dataplane: Dataplane): Dataplane {
    return {
      start: () => dataplane.start(),
      stop: () => dataplane.stop(),
      ensureNetwork: (net) => dataplane.ensureNetwork(net),
      removeNetwork: (id) => dataplane.removeNetwork(id),
      attach: async (ep: LocalEndpoint) => {
        const held = this.pending.has(ep.sandbox);
        await this.ready(ep.sandbox);
        const startMs = performance.now();
        await dataplane.attach(ep);
        if (held) this.wiring.set(ep.sandbox, { startMs, endMs: performance.now() });
      },
      detach: (ep) => dataplane.detach(ep),
      addPeer: (peer) => dataplane.addPeer(peer),
      removePeer: (peer) => dataplane.removePeer(peer),
      reconcile: async (state) => {
        // A namespace that failed is the attach's problem (it rolls back); reconcile only waits.
        await Promise.all(state.endpoints.map((ep) => this.ready(ep.sandbox).catch(() => {})));
        await dataplane.reconcile(state);
      },
      counters: () => dataplane.counters(),
    };
  }
}
