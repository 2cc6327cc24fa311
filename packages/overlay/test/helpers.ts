import type { Clock } from '../src/clock.js';
import type { KvEntry } from '../src/kvstore.js';
import { OverlayManager, type OverlayManagerOptions } from '../src/manager.js';
import type { MemoryKvStore } from '../src/testing/memory-kvstore.js';
import { RecordingDataplane } from '../src/testing/recording-dataplane.js';

/** Overlay subnets for tests come from 198.18.0.0/15 (benchmarking range), never private ranges. */
export const testPools = [{ base: '198.18.0.0/15', size: 24 }];

export interface TestHost {
  manager: OverlayManager;
  dataplane: RecordingDataplane;
}

let hostCounter = 0;

export async function startHost(
  store: MemoryKvStore,
  name: string,
  opts: Partial<OverlayManagerOptions> & { clock?: Clock } = {},
): Promise<TestHost> {
  hostCounter++;
  const dataplane = new RecordingDataplane();
  const manager = new OverlayManager({
    store,
    dataplane,
    hostname: name,
    advertise: `192.0.2.${(hostCounter % 250) + 1}`,
    peerId: `peer-${name}`,
    defaultAddressPools: testPools,
    sessionTtlMs: 10_000,
    writeTimeoutMs: 3_000,
    ...opts,
  });
  await manager.start();
  return { manager, dataplane };
}

/** Polls a condition in real time (the control plane is asynchronous); fails with `what` after `timeoutMs`. */
export async function waitFor(cond: () => boolean, what: string, timeoutMs = 3_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for: ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** Store contents as key → value text, to assert that a refused operation changed nothing. */
export function contents(store: MemoryKvStore): Record<string, string> {
  const out: Record<string, string> = {};
  for (const e of store.snapshot() as KvEntry[]) out[e.key] = new TextDecoder().decode(e.value);
  return out;
}

/**
 * The store as seen by a host whose watch can fall behind: between `hold()`
 * and `release()` its watch yields nothing (reads and writes go through), as
 * when a host's replica lags.
 */
export function lateWatch(store: MemoryKvStore): { store: MemoryKvStore; hold(): void; release(): void } {
  let held: Promise<void> | undefined;
  let wake = () => {};
  const watch = async function* (prefix: string, opts?: { index?: number; signal?: AbortSignal }) {
    for await (const ev of store.watch(prefix, opts)) {
      while (held) await held;
      yield ev;
    }
  };
  const proxy = new Proxy(store, {
    get(target, prop) {
      if (prop === 'watch') return watch;
      const v = Reflect.get(target, prop, target) as unknown;
      return typeof v === 'function' ? v.bind(target) : v;
    },
  });
  return {
    store: proxy,
    hold() {
      held ??= new Promise<void>((resolve) => {
        wake = resolve;
      });
    },
    release() {
      held = undefined;
      wake();
    },
  };
}
