// A map whose keys are kept in sorted order, for prefix scans (Consul's KV is
// a radix tree). Keys live in a list of sorted blocks of bounded size, so an
// insert or delete moves at most one block's worth of elements (like Python's
// sortedcontainers) instead of shifting one array of every key.
// Order is JavaScript string order (UTF-16 code units). It equals Consul's
// byte order except between BMP characters above U+E000 and astral ones.

/** Blocks split above this many keys; small enough that a splice is cheap. */
const MAX_BLOCK_KEYS = 512;

export class SortedMap<V> {
  /** Non-empty sorted blocks; every key of blocks[i] < every key of blocks[i + 1]. */
  private blocks: string[][] = [];
  private readonly values = new Map<string, V>();

  get size(): number {
    return this.values.size;
  }

  get(key: string): V | undefined {
    return this.values.get(key);
  }

  has(key: string): boolean {
    return this.values.has(key);
  }

  set(key: string, value: V): void {
    if (!this.values.has(key)) this.insertKey(key);
    this.values.set(key, value);
  }

  delete(key: string): boolean {
    if (!this.values.delete(key)) return false;
    const b = this.blockFor(key);
    const block = this.blocks[b] as string[];
    block.splice(lowerBound(block, key), 1);
    if (block.length === 0) this.blocks.splice(b, 1);
    return true;
  }

  /** Entries whose key starts with `prefix`, in key order ('' = all). */
  prefix(prefix: string): Array<[string, V]> {
    const out: Array<[string, V]> = [];
    this.forEachPrefix(prefix, (k, v) => {
      out.push([k, v]);
    });
    return out;
  }

  /** Visit entries under `prefix` in key order without building an array. */
  forEachPrefix(prefix: string, visit: (key: string, value: V) => void): void {
    let b = this.blockFor(prefix);
    if (b >= this.blocks.length) return;
    let i = lowerBound(this.blocks[b] as string[], prefix);
    for (; b < this.blocks.length; b++, i = 0) {
      const block = this.blocks[b] as string[];
      for (; i < block.length; i++) {
        const key = block[i] as string;
        if (!key.startsWith(prefix)) return;
        visit(key, this.values.get(key) as V);
      }
    }
  }

  entries(): Array<[string, V]> {
    return this.prefix('');
  }

  private insertKey(key: string): void {
    if (this.blocks.length === 0) {
      this.blocks.push([key]);
      return;
    }
    const b = Math.min(this.blockFor(key), this.blocks.length - 1);
    const block = this.blocks[b] as string[];
    block.splice(lowerBound(block, key), 0, key);
    if (block.length > MAX_BLOCK_KEYS) {
      this.blocks.splice(b + 1, 0, block.splice(block.length >>> 1));
    }
  }

  /** Index of the first block whose last key is >= key (blocks.length when none). */
  private blockFor(key: string): number {
    let lo = 0;
    let hi = this.blocks.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      const block = this.blocks[mid] as string[];
      if ((block[block.length - 1] as string) < key) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }
}

function lowerBound(keys: string[], key: string): number {
  let lo = 0;
  let hi = keys.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if ((keys[mid] as string) < key) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
