// The engine's Internet checksum (vectorised where the CPU has AVX2) against
// RFC 1071 computed the plain way, on the lengths and alignments the packet
// path produces: odd lengths, starts at odd addresses, sizes around the
// vector block and threshold, and whole 64 KB super-frames.
import assert from 'node:assert/strict';
import { seededFloats } from '@weft/kv/raft/rand';
import { loadNativeAddon } from '../../src/dataplane/native.js';

function referenceChecksum(data: Buffer): number {
  let sum = 0;
  for (let i = 0; i + 1 < data.length; i += 2) sum += (data[i]! << 8) | data[i + 1]!;
  if (data.length % 2 === 1) sum += data[data.length - 1]! << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + Math.floor(sum / 0x10000);
  const c = ~sum & 0xffff;
  return c === 0 ? 0xffff : c;
}

describe('native Internet checksum', () => {
  const { internetChecksum } = loadNativeAddon();
  const seed = Number(process.env.WEFT_FUZZ_SEED ?? Date.now() % 2 ** 31);
  const rand = seededFloats(seed);

  it(`matches RFC 1071 on random bytes of every awkward length and alignment (seed ${seed})`, () => {
    const backing = Buffer.alloc(70_000 + 64);
    for (let i = 0; i < backing.length; i++) backing[i] = Math.floor(rand() * 256);
    const lengths = [
      0, 1, 2, 3, 63, 64, 65, 127, 255, 256, 257, 319, 320, 1386, 1460, 9000, 65_535, 65_536, 70_000,
    ];
    for (let i = 0; i < 40; i++) lengths.push(Math.floor(rand() * 70_000));
    for (const length of lengths) {
      for (const offset of [0, 1, 3, 8, 33]) {
        const data = backing.subarray(offset, offset + length);
        assert.equal(internetChecksum(data), referenceChecksum(data), `length ${length} at offset ${offset}`);
      }
    }
  });

  it('carries correctly when every word is 0xffff (the sums that overflow lanes soonest)', () => {
    for (const length of [64, 256, 4096, 65_536]) {
      const data = Buffer.alloc(length, 0xff);
      assert.equal(internetChecksum(data), referenceChecksum(data), `length ${length}`);
    }
    // Bytes whose complemented sum is 0 are sent as 0xffff (0 means "no checksum" in UDP).
    const allOnes = Buffer.alloc(512);
    allOnes.writeUInt16BE(0xffff, 300);
    assert.equal(internetChecksum(allOnes), 0xffff);
  });
});
