import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadNativeAddon, nativeAddonPath } from '../../src/dataplane/native.js';
import { parseCpuList } from './userspace-fixture.js';

describe('native addon loader', () => {
  it('loads the addon that npm install built', () => {
    const addon = loadNativeAddon();
    assert.equal(typeof addon.Engine, 'function');
    assert.ok(addon.dropReasons.includes('unknown_vni'));
    assert.match(nativeAddonPath(), /native\/build\/Release\/weft_native\.node$/);
  });

  it('says the addon is not built, and how to build it, when the binary is missing', () => {
    assert.throws(() => loadNativeAddon('/nonexistent/weft_native.node'), /not built.*npm install/);
  });

  it('names the file and the fix when the binary cannot be loaded', () => {
    const dir = mkdtempSync(join(tmpdir(), 'weft-addon-'));
    try {
      const bogus = join(dir, 'weft_native.node');
      writeFileSync(bogus, 'not an ELF file');
      assert.throws(
        () => loadNativeAddon(bogus),
        /cannot load the native addon .*weft_native\.node.*npm rebuild/,
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('rejects bad engine options with a message naming the option', () => {
    const { Engine } = loadNativeAddon();
    assert.throws(
      () => new Engine({ vtep: 'not-an-ip' }),
      /options\.vtep "not-an-ip" is not an IPv4 address/,
    );
    assert.throws(() => new Engine({ vtep: '127.0.0.1', port: 70000 }), /options\.port must be 1\.\.65535/);
    assert.throws(
      () => new Engine({ vtep: '127.0.0.1', threadPriority: 'max' as 'nice' }),
      /threadPriority must be/,
    );
    for (const streamNapUs of [-1, 2.5, 10_000, '200' as unknown as number])
      assert.throws(
        () => new Engine({ vtep: '127.0.0.1', streamNapUs }),
        /options\.streamNapUs must be an integer 0\.\.5000/,
      );
    for (const busyPollUs of [-1, 1.5, 20_000, '100' as unknown as number])
      assert.throws(
        () => new Engine({ vtep: '127.0.0.1', busyPollUs }),
        /options\.busyPollUs must be an integer 0\.\.10000/,
      );
    for (const queues of [-1, 1.5, 65, '2' as unknown as number])
      assert.throws(
        () => new Engine({ vtep: '127.0.0.1', queues }),
        /options\.queues must be an integer 0\.\.64/,
      );
    // An address this host does not have: the bind fails and says what to check.
    assert.throws(
      () => new Engine({ vtep: '192.0.2.250', port: 4789 }),
      /cannot bind the VXLAN socket to 192\.0\.2\.250:4789.*VTEP address configured/,
    );
  });

  it('has a queue and packet thread per CPU by default, steered by CPU, or says why not', () => {
    const { Engine } = loadNativeAddon();
    // What glibc's get_nprocs_conf() counts: the CPUs the kernel may ever
    // bring up (/sys/devices/system/cpu/possible, "0-7" or "0,2-3"), or in
    // older versions the cpuN directories; either is the engine's queue count.
    const possible = parseCpuList(readFileSync('/sys/devices/system/cpu/possible', 'utf8')).length;
    const dirs = readdirSync('/sys/devices/system/cpu').filter((d) => /^cpu\d+$/.test(d)).length;
    const before = loadNativeAddon().liveThreads();
    const engine = new Engine({ vtep: '127.0.0.1', port: 14791 });
    try {
      const t = engine.counters().thread;
      assert.ok(
        [possible, dirs].map((n) => Math.min(n, 64)).includes(t.threads),
        `${t.threads} threads for ${possible} possible CPUs and ${dirs} CPU directories`,
      );
      assert.equal(t.queues.length, t.threads);
      assert.equal(loadNativeAddon().liveThreads() - before, t.threads);
      if (t.threads > 1) {
        // Either steered, or the cause is named (no CAP_BPF, an old kernel).
        if (t.steersByCpu) assert.equal(t.steeringError, null);
        else assert.match(String(t.steeringError), /bpf|BPF|REUSEPORT/);
      }
      // Stream naps by default only where wake-ups cross CPUs.
      assert.equal(t.streamNapUs, t.steersByCpu ? 0 : 200);
      // A second engine on the same address and port is refused, as it is
      // with one socket: the reuse-port group does not let it join.
      assert.throws(
        () => new Engine({ vtep: '127.0.0.1', port: 14791 }),
        /cannot bind the VXLAN socket to 127\.0\.0\.1:14791/,
      );
    } finally {
      engine.close();
    }
    const one = new Engine({ vtep: '127.0.0.1', port: 14791, queues: 1 });
    try {
      const t = one.counters().thread;
      assert.equal(t.threads, 1);
      assert.equal(t.steersByCpu, false);
      assert.equal(t.steeringError, null);
      assert.deepEqual(
        t.queues.map((q) => q.cpu),
        [null],
      );
      assert.equal(t.streamNapUs, 200, 'one queue naps during streams by default');
    } finally {
      one.close();
    }
    // An explicit streamNapUs wins over the automatic choice, either way.
    for (const [queues, streamNapUs] of [
      [1, 0],
      [0, 150],
    ] as const) {
      const e = new Engine({ vtep: '127.0.0.1', port: 14791, queues, streamNapUs });
      try {
        assert.equal(e.counters().thread.streamNapUs, streamNapUs);
      } finally {
        e.close();
      }
    }
  });

  it('rejects unknown VNIs, out-of-range VNIs and bad TAP names', () => {
    const engine = new (loadNativeAddon().Engine)({
      vtep: '127.0.0.1',
      port: 14790,
      threadPriority: 'normal',
    });
    try {
      assert.throws(() => engine.setPeers(5, []), /no network with VNI 5/);
      assert.throws(() => engine.addNetwork(0, 'wtx0'), /VNI 0 is outside 1\.\.16777215/);
      assert.throws(() => engine.addNetwork(5, 'a-name-that-is-too-long'), /TAP name/);
    } finally {
      engine.close();
    }
  });
});
