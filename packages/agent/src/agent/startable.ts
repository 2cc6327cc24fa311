// Components that own resources (sockets, devices, a Raft node) are Startable:
// start and stop are idempotent, and a Composition starts them in order and
// stops them in reverse, so a failure half-way leaves nothing running.

export interface Startable {
  start(): Promise<void>;
  stop(): Promise<void>;
}

export interface NamedComponent {
  name: string;
  component: Startable;
}

export class Composition implements Startable {
  private readonly started: NamedComponent[] = [];
  private running = false;
  private transition: Promise<void> = Promise.resolve();

  constructor(
    private readonly components: NamedComponent[],
    private readonly onEvent: (
      event: 'starting' | 'started' | 'stopping' | 'stopped',
      name: string,
    ) => void = () => {},
  ) {}

  get isRunning(): boolean {
    return this.running;
  }

  /** Starts every component in order; if one fails, stops the ones already started and rethrows. */
  start(): Promise<void> {
    this.transition = this.transition.then(async () => {
      if (this.running) return;
      for (const c of this.components) {
        this.onEvent('starting', c.name);
        try {
          await c.component.start();
        } catch (err) {
          await this.stopStarted();
          throw new Error(`starting ${c.name} failed: ${errorMessage(err)}`, { cause: err });
        }
        this.started.push(c);
        this.onEvent('started', c.name);
      }
      this.running = true;
    });
    return this.transition;
  }

  /** Stops in reverse order; a component that fails to stop does not keep the others running. */
  stop(): Promise<void> {
    this.transition = this.transition.then(async () => {
      if (!this.running && this.started.length === 0) return;
      const errors = await this.stopStarted();
      this.running = false;
      if (errors.length > 0) {
        throw new AggregateError(errors, `stopping failed: ${errors.map(errorMessage).join('; ')}`);
      }
    });
    return this.transition;
  }

  private async stopStarted(): Promise<unknown[]> {
    const errors: unknown[] = [];
    while (this.started.length > 0) {
      const c = this.started.pop() as NamedComponent;
      this.onEvent('stopping', c.name);
      try {
        await c.component.stop();
      } catch (err) {
        errors.push(new Error(`${c.name}: ${errorMessage(err)}`, { cause: err }));
      }
      this.onEvent('stopped', c.name);
    }
    return errors;
  }
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
