import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadNativeAddon, nativeAddonPath } from '../../src/dataplane/native.js';

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
    assert.throws(
      () => new Engine({ vtep: '127.0.0.1', followWakerCpu: 'yes' as unknown as boolean }),
      /options\.followWakerCpu must be a boolean/,
    );
    // An address this host does not have: the bind fails and says what to check.
    assert.throws(
      () => new Engine({ vtep: '192.0.2.250', port: 4789 }),
      /cannot bind the VXLAN socket to 192\.0\.2\.250:4789.*VTEP address configured/,
    );
  });

  it("follows its wakers' CPUs only when asked, and says why it cannot", () => {
    const { Engine } = loadNativeAddon();
    const off = new Engine({ vtep: '127.0.0.1', port: 14791, followWakerCpu: false });
    try {
      const t = off.counters().thread;
      assert.equal(t.followsWakerCpu, false);
      assert.equal(t.followWakerCpuError, null);
      assert.equal(t.cpu, null);
    } finally {
      off.close();
    }
    const on = new Engine({ vtep: '127.0.0.1', port: 14791 });
    try {
      const t = on.counters().thread;
      // Either it follows, or it names the cause (one CPU, no CAP_BPF, an old kernel).
      if (t.followsWakerCpu) assert.equal(t.followWakerCpuError, null);
      else assert.match(String(t.followWakerCpuError), /CPU|bpf|BPF/);
    } finally {
      on.close();
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
