// Blocking-query watches as async iterators: the loop that KvNode.watchPrefix
// and KvNode.watchKey share. Served from the node's applied state, so a watch
// keeps going across leader changes; it ends when its signal aborts or the
// node closes.
import type { Indexed } from '../fsm/state-machine.js';
import type { Watch, WatchTarget } from '../fsm/types.js';

export interface WatchSource {
  watch(target: WatchTarget): Watch;
  /** Resolves when the node closes. */
  readonly closed: Promise<void>;
  isClosing(): boolean;
}

export interface WatchLoopOptions {
  /** Yield only once the target's index differs from this (a blocking query's ?index). */
  index?: number;
  signal?: AbortSignal;
}

/**
 * Yields `read()` now (or once its index differs from `options.index`), then
 * each time the index moves and `worthYielding` says the value changed for
 * the caller.
 */
export async function* watchLoop<T>(
  source: WatchSource,
  target: WatchTarget,
  read: () => Indexed<T>,
  options: WatchLoopOptions,
  worthYielding: (value: T, previous: T | undefined) => boolean = () => true,
): AsyncGenerator<Indexed<T>> {
  // -1: nothing yielded yet, so the current state goes out at once.
  let last = options.index ?? -1;
  let previous: T | undefined;
  const signal = options.signal;
  while (!source.isClosing() && !signal?.aborted) {
    // Register before reading, so a change between the read and the wait is not missed.
    const w = source.watch(target);
    const current = read();
    if (current.index !== last) {
      last = current.index;
      if (worthYielding(current.value, previous)) {
        w.cancel();
        previous = current.value;
        yield current;
        continue;
      }
    }
    let onAbort: (() => void) | undefined;
    await Promise.race([
      w.changed,
      source.closed,
      new Promise<void>((resolve) => {
        onAbort = resolve;
        signal?.addEventListener('abort', onAbort, { once: true });
      }),
    ]);
    if (onAbort) signal?.removeEventListener('abort', onAbort);
    w.cancel();
  }
}
