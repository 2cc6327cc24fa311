// Runs async operations one at a time, in call order. Data plane methods read
// the kernel's state, decide, then change it; two of them interleaving (say an
// attach and a reconcile) could each see the other's half-made devices.

export class SerialQueue {
  private tail: Promise<unknown> = Promise.resolve();

  run<T>(op: () => Promise<T>): Promise<T> {
    const result = this.tail.then(op, op);
    // The queue goes on after a failure; the caller still sees the rejection.
    this.tail = result.catch(() => {});
    return result;
  }
}
