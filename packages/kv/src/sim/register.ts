// The simulator's replicated state machine: one register per key, written,
// compare-and-set and read by clients. Commands carry a unique op id, and a
// command already applied is not applied again (a proposal may be appended
// twice when the network duplicates it).

const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder();

export type RegisterCommand =
  | { op: string; kind: 'write'; key: string; value: string }
  | { op: string; kind: 'cas'; key: string; expected: string | null; value: string };

export function encodeCommand(c: RegisterCommand): Uint8Array {
  return textEncoder.encode(JSON.stringify(c));
}

export function decodeCommand(data: Uint8Array): RegisterCommand {
  return JSON.parse(textDecoder.decode(data)) as RegisterCommand;
}

export class RegisterMachine {
  /** Last applied log index. */
  appliedIndex = 0;
  readonly values = new Map<string, string>();
  /** op id -> result (true for writes; success for CAS). */
  readonly results = new Map<string, boolean>();

  apply(index: number, c: RegisterCommand): void {
    this.appliedIndex = index;
    if (this.results.has(c.op)) return; // duplicate proposal: already applied
    if (c.kind === 'write') {
      this.values.set(c.key, c.value);
      this.results.set(c.op, true);
    } else {
      const ok = (this.values.get(c.key) ?? null) === c.expected;
      if (ok) this.values.set(c.key, c.value);
      this.results.set(c.op, ok);
    }
  }

  get(key: string): string | null {
    return this.values.get(key) ?? null;
  }

  serialize(): Uint8Array {
    return textEncoder.encode(
      JSON.stringify({ i: this.appliedIndex, v: [...this.values].sort(), r: [...this.results].sort() }),
    );
  }

  /** A state machine restored from snapshot data (empty data: the initial empty state). */
  static fromSnapshot(data: Uint8Array, index: number): RegisterMachine {
    const m = new RegisterMachine();
    m.appliedIndex = index;
    if (data.byteLength === 0) return m;
    const raw = JSON.parse(textDecoder.decode(data)) as {
      i: number;
      v: [string, string][];
      r: [string, boolean][];
    };
    for (const [k, v] of raw.v) m.values.set(k, v);
    for (const [k, v] of raw.r) m.results.set(k, v);
    return m;
  }

  /** A canonical fingerprint of the state (for comparing replicas). */
  fingerprint(): string {
    return JSON.stringify({ v: [...this.values].sort(), r: [...this.results].sort() });
  }
}
