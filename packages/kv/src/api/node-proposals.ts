// How a proposal finds its way back to the caller: the node wraps each FSM
// command in an envelope carrying a proposal id unique to this process
// (random boot id + sequence), and when any replica applies the entry, the
// node that proposed it recognises the id and settles the caller's promise
// with the FSM's result. Entries proposed by an earlier run of the same node
// carry another boot id and are applied without anyone waiting on them.
import { randomBytes } from 'node:crypto';
import { Packr } from 'msgpackr';

const ENVELOPE_VERSION = 1;
const packr = new Packr({ useRecords: false, mapsAsObjects: true });

export interface Envelope {
  proposalId: string;
  payload: Uint8Array;
}

export function encodeEnvelope(envelope: Envelope): Uint8Array {
  return packr.pack([ENVELOPE_VERSION, envelope.proposalId, envelope.payload]);
}

/** undefined when `data` is not an envelope (then the bytes go to the FSM as they are, and it rejects them). */
export function decodeEnvelope(data: Uint8Array): Envelope | undefined {
  try {
    const raw = packr.unpack(data) as unknown;
    if (!Array.isArray(raw) || raw.length !== 3 || raw[0] !== ENVELOPE_VERSION) return undefined;
    const [, proposalId, payload] = raw as [number, unknown, unknown];
    if (typeof proposalId !== 'string' || !(payload instanceof Uint8Array)) return undefined;
    return { proposalId, payload };
  } catch {
    return undefined;
  }
}

export class ProposalIds {
  private readonly bootId = randomBytes(6).toString('hex');
  private seq = 0;
  next(): string {
    this.seq += 1;
    return `${this.bootId}.${this.seq}`;
  }
}

interface Waiter<T> {
  resolve(value: T): void;
  reject(err: Error): void;
  timer: NodeJS.Timeout;
}

/** Promises waiting for an id to come back, each with its own deadline. */
export class PendingTable<T> {
  private readonly waiters = new Map<string, Waiter<T>>();

  /** Waits for `id`; after `timeoutMs` rejects with what `onTimeout` builds. */
  wait(id: string, timeoutMs: number, onTimeout: () => Error): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters.delete(id);
        reject(onTimeout());
      }, timeoutMs);
      this.waiters.set(id, { resolve, reject, timer });
    });
  }

  has(id: string): boolean {
    return this.waiters.has(id);
  }

  resolve(id: string, value: T): boolean {
    const w = this.waiters.get(id);
    if (!w) return false;
    this.waiters.delete(id);
    clearTimeout(w.timer);
    w.resolve(value);
    return true;
  }

  reject(id: string, err: Error): void {
    const w = this.waiters.get(id);
    if (!w) return;
    this.waiters.delete(id);
    clearTimeout(w.timer);
    w.reject(err);
  }

  rejectAll(err: Error): void {
    for (const id of Array.from(this.waiters.keys())) this.reject(id, err);
  }

  get size(): number {
    return this.waiters.size;
  }
}
