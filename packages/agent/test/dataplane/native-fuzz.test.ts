// Fuzzing the native engine: random and half-valid datagrams on its real UDP
// port and through the receive path, random frames with random virtio-net
// headers through the send path. Peers point back at the engine itself, so
// whatever the send path makes is parsed again by the receive path. The
// process must survive, count what it dropped, and still work afterwards.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { seededFloats } from '@weft/kv/raft/rand';
import { loadNativeAddon, type NativeEngine } from '../../src/dataplane/native.js';
import { createSandbox, deleteSandbox } from '../../src/dataplane/sandbox.js';
import { runIn, uniquePrefix } from '../../src/dataplane/testing/topology.js';
import { NetnsShell } from '../../src/netlink/ip.js';
import { skipUnlessNetns } from './userspace-fixture.js';

const vni = 77;
const peerMac = '02:42:c6:12:00:63';
const peerIp = '198.18.0.99';

function ethernet(rand: () => number, dst: number[], etherType: number, payloadBytes: number): Buffer {
  const f = Buffer.alloc(14 + payloadBytes);
  Buffer.from(dst).copy(f, 0);
  f.set([0x02, 0x42, 0xc6, 0x12, 0x00, 0x0a], 6);
  f.writeUInt16BE(etherType, 12);
  for (let i = 14; i < f.length; i++) f[i] = Math.floor(rand() * 256);
  return f;
}

/** A plausible IPv4/TCP frame (headers valid or nearly), random elsewhere. */
function tcpFrame(rand: () => number, payloadBytes: number): Buffer {
  const dst = [0x02, 0x42, 0xc6, 0x12, 0x00, 0x63];
  const f = ethernet(rand, dst, 0x0800, 20 + 20 + payloadBytes);
  f[14] = rand() < 0.9 ? 0x45 : Math.floor(rand() * 256);
  f.writeUInt16BE(rand() < 0.8 ? 40 + payloadBytes : Math.floor(rand() * 65536), 16);
  f[20] = rand() < 0.8 ? 0x40 : Math.floor(rand() * 256);
  f[21] = 0;
  f[23] = rand() < 0.9 ? 6 : 17;
  f[14 + 20 + 12] = rand() < 0.8 ? 0x50 : Math.floor(rand() * 256);
  return f;
}

function vnetHeader(rand: () => number, frameBytes: number): Buffer {
  const h = Buffer.alloc(10);
  const pick = rand();
  if (pick < 0.3) return h; // plain frame
  if (pick < 0.6) {
    // TSO, mostly sane numbers
    h[0] = rand() < 0.8 ? 1 : Math.floor(rand() * 256);
    h[1] = [1, 4, 3, 0x81, 5, Math.floor(rand() * 256)][Math.floor(rand() * 6)]!;
    h.writeUInt16LE(54, 2);
    h.writeUInt16LE(rand() < 0.7 ? 1 + Math.floor(rand() * 1500) : Math.floor(rand() * 65536), 4);
    h.writeUInt16LE(rand() < 0.8 ? 34 : Math.floor(rand() * 65536), 6);
    h.writeUInt16LE(rand() < 0.8 ? 16 : Math.floor(rand() * 65536), 8);
    return h;
  }
  if (pick < 0.8) {
    // checksum offload with random offsets, sometimes past the end
    h[0] = 1;
    h.writeUInt16LE(Math.floor(rand() * (frameBytes + 10)), 6);
    h.writeUInt16LE(Math.floor(rand() * 64), 8);
    return h;
  }
  return Buffer.from(Array.from({ length: 10 }, () => Math.floor(rand() * 256)));
}

function vxlan(vniValue: number, flags = 0x08): Buffer {
  const h = Buffer.alloc(8);
  h[0] = flags;
  h.writeUIntBE(vniValue, 4, 3);
  return h;
}

describe('native engine fuzzing', function () {
  this.timeout(120_000);
  let netns = '';
  let engine: NativeEngine | undefined;
  const seed = Number(process.env.WEFT_FUZZ_SEED ?? Math.floor(Math.random() * 2 ** 31));

  before(async function () {
    skipUnlessNetns(this);
    console.log(`      fuzz seed ${seed} (replay with WEFT_FUZZ_SEED=${seed})`);
    netns = `${uniquePrefix()}-fz`;
    await createSandbox(netns);
    const addon = loadNativeAddon();
    engine = new addon.Engine({
      vtep: '127.0.0.1',
      netnsPath: `/run/netns/${netns}`,
      threadPriority: 'normal',
    });
    engine.addNetwork(vni, 'wtfuzz0');
    await new NetnsShell(netns).ip(['link', 'set', 'wtfuzz0', 'up']);
    // Frames for the peer go to this very engine, so sent datagrams are parsed again.
    engine.setPeers(vni, [{ mac: peerMac, vtep: '127.0.0.1', ip: peerIp }]);
  });

  after(async () => {
    engine?.close();
    if (netns !== '') await deleteSandbox(netns);
  });

  it('survives random frames with random virtio-net headers on the send path', () => {
    const rand = seededFloats(seed);
    for (let i = 0; i < 20_000; i++) {
      const kind = rand();
      let frame: Buffer;
      if (kind < 0.4) frame = tcpFrame(rand, Math.floor(rand() * (rand() < 0.2 ? 65000 : 3000)));
      else if (kind < 0.5)
        frame = ethernet(rand, [0xff, 0xff, 0xff, 0xff, 0xff, 0xff], 0x0806, Math.floor(rand() * 60));
      else if (kind < 0.6)
        frame = randomBytes(Math.floor(rand() * 30)); // short
      else
        frame = ethernet(
          rand,
          [0x02, 0x42, 0xc6, 0x12, 0x00, rand() < 0.5 ? 0x63 : 0x64],
          Math.floor(rand() * 65536),
          Math.floor(rand() * 2000),
        );
      engine!.injectTapFrame(vni, Buffer.concat([vnetHeader(rand, frame.length), frame]));
    }
    const c = engine!.counters().networks[String(vni)]!;
    assert.ok(c.drops.short_frame! > 0, JSON.stringify(c));
    assert.ok(c.drops.bad_offload_header! > 0, JSON.stringify(c));
    assert.ok(c.drops.unknown_destination! > 0, JSON.stringify(c));
    assert.ok(c.txPackets > 0, 'nothing valid was sent');
  });

  it('survives random datagrams and GRO batches on the receive path', () => {
    const rand = seededFloats(seed + 1);
    for (let i = 0; i < 20_000; i++) {
      const kind = rand();
      let d: Buffer;
      if (kind < 0.3) d = randomBytes(Math.floor(rand() * 100));
      else if (kind < 0.5)
        d = Buffer.concat([
          vxlan(
            rand() < 0.5 ? vni : Math.floor(rand() * 2 ** 24),
            rand() < 0.7 ? 8 : Math.floor(rand() * 256),
          ),
          randomBytes(Math.floor(rand() * 1500)),
        ]);
      else d = Buffer.concat([vxlan(vni), tcpFrame(rand, Math.floor(rand() * 1400))]);
      // Sometimes a GRO batch: the same datagram repeated, cut at a random segment size.
      const segment = rand() < 0.2 ? 1 + Math.floor(rand() * d.length) : 0;
      engine!.injectDatagram(rand() < 0.2 ? Buffer.concat([d, d, d]) : d, segment);
    }
    const h = engine!.counters().host;
    assert.ok(
      h.drops.short_datagram! > 0 && h.drops.bad_vxlan_flags! > 0 && h.drops.unknown_vni! > 0,
      JSON.stringify(h),
    );
  });

  it('survives random datagrams on its real UDP port', async () => {
    const before = engine!.counters().host.drops;
    const senderJs =
      "const s=require('dgram').createSocket('udp4');const c=require('crypto');let n=0;" +
      'const send=()=>{if(n>=3000){s.close();return}n++;' +
      'const r=Math.random();let b;' +
      'if(r<0.4)b=c.randomBytes(Math.floor(Math.random()*120));' +
      `else{b=c.randomBytes(8+Math.floor(Math.random()*1500));b[0]=Math.random()<0.5?8:b[0];b.writeUIntBE(Math.random()<0.5?${vni}:b.readUIntBE(4,3),4,3);b[7]=Math.random()<0.8?0:b[7]}` +
      "s.send(b,4789,'127.0.0.1',send)};send()";
    const r = await runIn(netns, [process.execPath, '-e', senderJs], 30_000);
    assert.equal(r.exitCode, 0, r.stderr);
    // Datagrams are handled asynchronously by the receive thread.
    const deadline = Date.now() + 5000;
    let after = engine!.counters().host.drops;
    while (Date.now() < deadline && after.short_datagram! - before.short_datagram! === 0) {
      await new Promise((res) => setTimeout(res, 50));
      after = engine!.counters().host.drops;
    }
    assert.ok(after.short_datagram! > before.short_datagram!, 'the receive thread counted no short datagram');
  });

  it('still answers ARP and forwards after all that (and after a rejected peer table)', async () => {
    assert.throws(() => engine!.setPeers(vni, [{ mac: 'zz:42', vtep: '127.0.0.1' }]), /MAC "zz:42"/);
    assert.throws(
      () => engine!.setPeers(vni, [{ mac: peerMac, vtep: '127.0.0.1', ip: '198.18.0.256' }]),
      /peer ip/,
    );
    const before = engine!.counters().networks[String(vni)]!;
    const arp = Buffer.alloc(14 + 28);
    arp.fill(0xff, 0, 6);
    arp.set([0x02, 0x42, 0xc6, 0x12, 0x00, 0x0a], 6);
    arp.writeUInt16BE(0x0806, 12);
    arp.writeUInt16BE(1, 14);
    arp.writeUInt16BE(0x0800, 16);
    arp[18] = 6;
    arp[19] = 4;
    arp.writeUInt16BE(1, 20);
    arp.set([0x02, 0x42, 0xc6, 0x12, 0x00, 0x0a], 22);
    arp.set([198, 18, 0, 10], 28);
    arp.set([198, 18, 0, 99], 38);
    engine!.injectTapFrame(vni, Buffer.concat([Buffer.alloc(10), arp]));
    const frame = tcpFrame(seededFloats(1), 100);
    engine!.injectTapFrame(vni, Buffer.concat([Buffer.alloc(10), frame]));
    const after = engine!.counters().networks[String(vni)]!;
    assert.equal(after.arpReplies, before.arpReplies + 1);
    assert.equal(after.txPackets, before.txPackets + 1);
  });
});
