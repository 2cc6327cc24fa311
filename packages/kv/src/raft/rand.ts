// Seeded pseudo-random numbers. The Raft core never calls Math.random: every
// random choice (the randomized election timeout) comes from an injected
// RandomSource, so a simulation run is reproducible from its seed.

/** The only randomness the Raft core consumes. */
export interface RandomSource {
  /** A uniformly distributed integer in [0, n). n must be a positive integer. */
  intn(n: number): number;
}

/**
 * xoshiro128** (Blackman & Vigna), 32-bit state words, seeded through
 * splitmix32 so that nearby seeds give unrelated streams.
 */
export class SeededRandom implements RandomSource {
  private s0: number;
  private s1: number;
  private s2: number;
  private s3: number;

  constructor(seed: number) {
    if (!Number.isFinite(seed)) throw new TypeError(`seed must be a finite number, got ${seed}`);
    let x = (seed >>> 0) ^ (Math.floor(seed / 0x100000000) >>> 0);
    const next = (): number => {
      // splitmix32
      x = (x + 0x9e3779b9) >>> 0;
      let z = x;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.s0 = next();
    this.s1 = next();
    this.s2 = next();
    this.s3 = next();
    if ((this.s0 | this.s1 | this.s2 | this.s3) === 0) this.s0 = 1; // all-zero state is a fixed point
  }

  /** A uniformly distributed unsigned 32-bit integer. */
  nextUint32(): number {
    const result = Math.imul(rotl(Math.imul(this.s1, 5) >>> 0, 7), 9) >>> 0;
    const t = (this.s1 << 9) >>> 0;
    this.s2 = (this.s2 ^ this.s0) >>> 0;
    this.s3 = (this.s3 ^ this.s1) >>> 0;
    this.s1 = (this.s1 ^ this.s2) >>> 0;
    this.s0 = (this.s0 ^ this.s3) >>> 0;
    this.s2 = (this.s2 ^ t) >>> 0;
    this.s3 = rotl(this.s3, 11);
    return result;
  }

  /** A float in [0, 1) with 32 bits of randomness. */
  float(): number {
    return this.nextUint32() / 0x100000000;
  }

  intn(n: number): number {
    if (!Number.isInteger(n) || n <= 0) throw new RangeError(`intn needs a positive integer bound, got ${n}`);
    return Math.floor(this.float() * n);
  }

  /** True with probability p. */
  chance(p: number): boolean {
    return this.float() < p;
  }

  /** A uniformly chosen element of a non-empty array. */
  pick<T>(items: readonly T[]): T {
    if (items.length === 0) throw new RangeError('pick from an empty array');
    return items[this.intn(items.length)]!;
  }

  /** An independent generator derived from this one (for a sub-component). */
  fork(): SeededRandom {
    return new SeededRandom(this.nextUint32() * 0x100000000 + this.nextUint32());
  }
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}

/**
 * Floats in [0, 1) from a SeededRandom, shaped like Math.random: for test
 * generators and fuzzers, so a failing case replays from its seed.
 */
export function seededFloats(seed: number): () => number {
  const random = new SeededRandom(seed);
  return () => random.float();
}
