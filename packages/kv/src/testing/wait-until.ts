// Polling for tests and benches: the systems under test (Raft clusters, child
// processes, overlay managers fed by watches) change state asynchronously, so
// a check is retried until it holds or a deadline passes. One helper, so every
// timeout error reads the same way and names what was awaited.

/** What a probe answers: a value when the awaited state is reached, `undefined` or `false` while it is not. */
export type Probe<T> = T | undefined | false;

export interface WaitUntilOptions {
  /** Pause between two probes. Benches measuring latency poll faster. */
  intervalMs?: number;
  /**
   * Treat a thrown error as "not yet" (a process restarting refuses
   * connections) and name the last one in the timeout error. Off by default:
   * an error then fails the wait at once.
   */
  retryErrors?: boolean;
}

/**
 * Calls `probe` until it answers something other than `undefined` or `false`,
 * and resolves with that answer; rejects naming `what` once `timeoutMs` has
 * passed without one.
 */
export async function waitUntil<T>(
  what: string,
  probe: () => Probe<T> | Promise<Probe<T>>,
  timeoutMs = 10_000,
  { intervalMs = 20, retryErrors = false }: WaitUntilOptions = {},
): Promise<T> {
  const deadline = performance.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const answer = await probe();
      if (answer !== undefined && answer !== false) return answer;
    } catch (err) {
      if (!retryErrors) throw err;
      lastError = err;
    }
    if (performance.now() > deadline) {
      const cause =
        lastError === undefined ? '' : ` (last error: ${(lastError as Error).message ?? lastError})`;
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${cause}`);
    }
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}
