import assert from 'node:assert/strict';
import { Composition, type Startable } from '../../src/agent/startable.js';

class Recorder implements Startable {
  running = false;
  constructor(
    private readonly name: string,
    private readonly log: string[],
    private readonly failStart = false,
  ) {}
  async start() {
    if (this.failStart) throw new Error(`${this.name} cannot bind`);
    if (this.running) return;
    this.running = true;
    this.log.push(`start ${this.name}`);
  }
  async stop() {
    if (!this.running) return;
    this.running = false;
    this.log.push(`stop ${this.name}`);
  }
}

describe('Composition', () => {
  it('starts in order, stops in reverse, and both are idempotent', async () => {
    const log: string[] = [];
    const c = new Composition(
      ['kv', 'overlay', 'api'].map((n) => ({ name: n, component: new Recorder(n, log) })),
    );
    await Promise.all([c.start(), c.start()]);
    await c.stop();
    await c.stop();
    assert.deepEqual(log, ['start kv', 'start overlay', 'start api', 'stop api', 'stop overlay', 'stop kv']);
  });

  it('a failing start stops what already started and names the component', async () => {
    const log: string[] = [];
    const parts = [new Recorder('kv', log), new Recorder('overlay', log), new Recorder('dns', log, true)];
    const c = new Composition(
      parts.map((p, i) => ({ name: ['kv', 'overlay', 'dns'][i] as string, component: p })),
    );
    await assert.rejects(c.start(), /starting dns failed: dns cannot bind/);
    assert.deepEqual(log, ['start kv', 'start overlay', 'stop overlay', 'stop kv']);
    assert.equal(c.isRunning, false);
  });

  it('a component that fails to stop does not keep the others running', async () => {
    const log: string[] = [];
    const bad: Startable = {
      start: async () => {},
      stop: async () => Promise.reject(new Error('device busy')),
    };
    const c = new Composition([
      { name: 'kv', component: new Recorder('kv', log) },
      { name: 'dataplane', component: bad },
    ]);
    await c.start();
    await assert.rejects(c.stop(), /dataplane: device busy/);
    assert.deepEqual(log, ['start kv', 'stop kv']);
  });
});
