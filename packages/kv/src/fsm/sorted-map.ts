// A map whose keys are kept in sorted order, for prefix scans (Consul's KV is a
// radix tree; a sorted array of keys with binary search gives the same
// ordering and contiguous prefix ranges at the sizes Weft stores).
// Order is JavaScript string order (UTF-16 code units). It equals Consul's
// byte order except between BMP characters above U+E000 and astral ones.

export class SortedMap<V> {
  private readonly keys: string[] = [];
  private readonly values = new Map<string, V>();

  get size(): number {
    return this.keys.length;
  }

  get(key: string): V | undefined {
    return this.values.get(key);
  }

  has(key: string): boolean {
    return this.values.has(key);
  }

  set(key: string, value: V): void {
    if (!this.values.has(key)) this.keys.splice(this.lowerBound(key), 0, key);
    this.values.set(key, value);
  }

  delete(key: string): boolean {
    if (!this.values.delete(key)) return false;
    this.keys.splice(this.lowerBound(key), 1);
    return true;
  }

  /** Entries whose key starts with `prefix`, in key order ('' = all). */
  *prefix(prefix: string): IterableIterator<[string, V]> {
    for (let i = this.lowerBound(prefix); i < this.keys.length; i++) {
      const key = this.keys[i] as string;
      if (!key.startsWith(prefix)) return;
      yield [key, this.values.get(key) as V];
    }
  }

  entries(): IterableIterator<[string, V]> {
    return this.prefix('');
  }

  private lowerBound(key: string): number {
    let lo = 0;
    let hi = this.keys.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if ((this.keys[mid] as string) < key) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }
}
