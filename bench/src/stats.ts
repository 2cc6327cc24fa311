// Summary statistics every benchmark reports, defined once so that a p99 or
// a median means the same thing in every JSON line.

/** The arithmetic mean; NaN when there are no samples. */
export function mean(samples: readonly number[]): number {
  return samples.reduce((a, b) => a + b, 0) / samples.length;
}

/** The middle sample (the mean of the two middle ones for an even count); NaN when there are none. */
export function median(samples: readonly number[]): number {
  if (samples.length === 0) return Number.NaN;
  const s = [...samples].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/**
 * The q-quantile (0 ≤ q ≤ 1) of samples already sorted ascending: the sample
 * at rank ⌊q·n⌋ (the largest for q = 1); NaN when there are none. Takes any
 * array-like so the load generator can pass its latencies as a Float64Array
 * sorted in place, without copying millions of samples.
 */
export function percentileOfSorted(sorted: ArrayLike<number>, q: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
}

/** The q-quantile (0 ≤ q ≤ 1) of unsorted samples, as percentileOfSorted defines it. */
export function percentile(samples: readonly number[], q: number): number {
  return percentileOfSorted(
    [...samples].sort((a, b) => a - b),
    q,
  );
}

export interface LatencySummary {
  count: number;
  p50Ms: number;
  p99Ms: number;
  minMs: number;
  maxMs: number;
}

/** Count, p50, p99, min and max of latency samples in ms, to 0.1 ms (all 0 when there are none). */
export function summarizeMs(samplesMs: readonly number[]): LatencySummary {
  const s = [...samplesMs].sort((a, b) => a - b);
  const round = (x: number) => (Number.isNaN(x) ? 0 : Math.round(x * 10) / 10);
  return {
    count: s.length,
    p50Ms: round(percentileOfSorted(s, 0.5)),
    p99Ms: round(percentileOfSorted(s, 0.99)),
    minMs: round(s[0] ?? 0),
    maxMs: round(s[s.length - 1] ?? 0),
  };
}
