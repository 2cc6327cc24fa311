import assert from 'node:assert/strict';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { seededFloats } from '../../src/raft/rand.js';
import { EntryType, emptyConfState, type Message, MessageType } from '../../src/raft/types.js';
import {
  decodeHello,
  decodeHelloReply,
  decodeMessage,
  decodeRpcRequest,
  decodeRpcResponse,
  decodeSnapshotAck,
  decodeSnapshotHeader,
  encodeEnvelope,
  encodeHello,
  encodeHelloReply,
  encodeMessage,
  encodeRpcRequest,
  encodeRpcResponse,
  encodeSnapshotAck,
  encodeSnapshotHeader,
  LOCAL_MESSAGE_TYPES,
  WireFormatError,
} from '../../src/transport/codec.js';
import { RAFT_PROTO_SCHEMA } from '../../src/transport/schema.js';

function randomBytes(rand: () => number, length: number): Uint8Array {
  const out = new Uint8Array(length);
  for (let i = 0; i < length; i++) out[i] = Math.floor(rand() * 256);
  return out;
}

function fullMessage(): Message {
  return {
    type: MessageType.Snap,
    from: 'n1',
    to: 'node-two',
    term: 2 ** 40 + 7,
    logTerm: 5,
    index: Number.MAX_SAFE_INTEGER - 1,
    entries: [
      { term: 3, index: 10, type: EntryType.Normal, data: new Uint8Array([1, 2, 3]) },
      { term: 4, index: 11, type: EntryType.ConfChange, data: new Uint8Array(0) },
    ],
    commit: 9,
    reject: true,
    rejectHint: 8,
    snapshot: {
      metadata: {
        index: 1234,
        term: 3,
        confState: {
          voters: ['n1', 'n2', 'n3'],
          learners: ['n4'],
          votersOutgoing: ['n1', 'n5'],
          learnersNext: ['n5'],
          autoLeave: true,
        },
      },
      data: new Uint8Array([9, 8, 7, 0, 255]),
    },
    context: new TextEncoder().encode('read-ctx-1'),
  };
}

function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json'))) dir = dirname(dir);
  return dir;
}

/** The content schema.ts must have for a given raft.proto. */
function renderSchemaModule(proto: string): string {
  const escaped = proto.replace(/\\/g, '\\\\').replace(/`/g, '\\`').replace(/\$\{/g, '\\${');
  return (
    '// Generated from raft.proto (WEFT_UPDATE_PROTO_SCHEMA=1 when running test/transport/codec.test). Do not edit.\n' +
    '// Embedded so the compiled package needs no .proto file at run time (tsc does not copy it).\n' +
    `export const RAFT_PROTO_SCHEMA = \`${escaped}\`;\n`
  );
}

describe('transport codec', () => {
  it('embeds exactly the schema of raft.proto', () => {
    const root = packageRoot();
    const proto = readFileSync(join(root, 'src/transport/raft.proto'), 'utf8');
    if (process.env.WEFT_UPDATE_PROTO_SCHEMA === '1') {
      writeFileSync(join(root, 'src/transport/schema.ts'), renderSchemaModule(proto));
      return;
    }
    assert.equal(
      RAFT_PROTO_SCHEMA,
      proto,
      'src/transport/schema.ts is stale: rerun this test with WEFT_UPDATE_PROTO_SCHEMA=1',
    );
    assert.equal(readFileSync(join(root, 'src/transport/schema.ts'), 'utf8'), renderSchemaModule(proto));
  });

  it('round-trips every field of a message exactly', () => {
    const message = fullMessage();
    assert.deepStrictEqual(decodeMessage(encodeMessage(message)), message);
  });

  it('round-trips every wire message type, with defaults and without a snapshot', () => {
    for (const value of Object.values(MessageType)) {
      if (typeof value !== 'number' || LOCAL_MESSAGE_TYPES.has(value)) continue;
      const message: Message = {
        ...fullMessage(),
        type: value,
        snapshot: undefined,
        entries:
          value === MessageType.App
            ? [{ term: 1, index: 1, type: EntryType.Normal, data: new Uint8Array(0) }]
            : [],
        index: 0,
      };
      if (value === MessageType.Snap)
        message.snapshot = {
          metadata: { index: 0, term: 0, confState: emptyConfState() },
          data: new Uint8Array(0),
        };
      else delete message.snapshot;
      assert.deepStrictEqual(decodeMessage(encodeMessage(message)), message, MessageType[value]);
    }
  });

  it('refuses local-only message types in both directions', () => {
    for (const type of LOCAL_MESSAGE_TYPES) {
      const message = { ...fullMessage(), type, snapshot: undefined };
      assert.throws(() => encodeMessage(message), /local to a node/);
    }
  });

  it('refuses impossible messages when encoding (names the field)', () => {
    const cases: Array<[Partial<Message>, RegExp]> = [
      [{ from: '' }, /from must name a node/],
      [{ term: -1 }, /term must be a non-negative safe integer/],
      [{ commit: 1.5 }, /commit must be a non-negative safe integer/],
      [{ index: 2 ** 53 }, /index must be a non-negative safe integer/],
      [{ snapshot: undefined }, /snapshot is missing from a Snap message/],
      [{ type: 99 as MessageType }, /type has unknown value 99/],
      [{ type: MessageType.App, index: 3, snapshot: undefined }, /entries\[0\]\.index is 10, expected 4/],
      [{ type: MessageType.Vote }, /snapshot is only valid in Snap messages/],
    ];
    for (const [patch, pattern] of cases) {
      assert.throws(
        () => encodeMessage({ ...fullMessage(), ...patch }),
        (err: unknown) => err instanceof WireFormatError && pattern.test(err.message),
        String(pattern),
      );
    }
  });

  /** An append (no snapshot: the direct encoder's case) with entries and fields of `rand`'s choosing. */
  function randomPlainMessage(rand: () => number): Message {
    const types = Object.values(MessageType).filter(
      (v): v is MessageType => typeof v === 'number' && !LOCAL_MESSAGE_TYPES.has(v) && v !== MessageType.Snap,
    );
    const type = types[Math.floor(rand() * types.length)]!;
    const big = () =>
      [0, 1, 127, 128, 16_383, 16_384, 2 ** 32, Number.MAX_SAFE_INTEGER][Math.floor(rand() * 8)]!;
    const index = Math.floor(rand() * 2 ** 40);
    const entryCount = Math.floor(rand() * 4);
    return {
      type,
      from: ['n1', 'nœud-ü', 'x'.repeat(256)][Math.floor(rand() * 3)]!,
      to: 'node-two',
      term: big(),
      logTerm: big(),
      index,
      entries: Array.from({ length: entryCount }, (_, i) => ({
        term: big(),
        index: type === MessageType.App ? index + 1 + i : big(),
        type: rand() < 0.5 ? EntryType.Normal : EntryType.ConfChange,
        data: randomBytes(rand, [0, 1, 200, 20_000][Math.floor(rand() * 4)]!),
      })),
      commit: big(),
      reject: rand() < 0.5,
      rejectHint: big(),
      context: randomBytes(rand, Math.floor(rand() * 3) * 8),
    };
  }

  it('writes messages without a snapshot byte for byte as protobufjs does', async () => {
    const protobuf = (await import('protobufjs')).default;
    const { crc32 } = await import('node:zlib');
    const root = protobuf.parse(RAFT_PROTO_SCHEMA).root;
    const messageType = root.lookupType('weft.raft.Message');
    const rand = seededFloats(0x5eed);
    for (let i = 0; i < 300; i++) {
      const message = randomPlainMessage(rand);
      const payload = messageType.encode(message).finish();
      const expected = encodeEnvelope(1, payload, crc32(payload));
      const frame = encodeMessage(message);
      assert.ok(Buffer.from(frame).equals(Buffer.from(expected)), `case ${i}: ${MessageType[message.type]}`);
      assert.deepStrictEqual(decodeMessage(frame), message, `case ${i}`);
    }
  });

  it('decodes what any protobuf writer may send: fields out of order, repeated, unknown', async () => {
    const protobuf = (await import('protobufjs')).default;
    const { crc32 } = await import('node:zlib');
    const w = protobuf.Writer.create();
    w.uint32(0x62).bytes(new Uint8Array([7])); // context first
    w.uint32(0x3a)
      .fork()
      .uint32(0x22)
      .bytes(new Uint8Array([1, 2]))
      .uint32(0x10)
      .uint64(6)
      .ldelim(); // entry, data before index, term absent
    w.uint32(0x08).int32(MessageType.App);
    w.uint32(0x1a).string('b');
    w.uint32(0x78).uint64(99); // field 15: unknown, skipped
    w.uint32(0x12).string('a');
    w.uint32(0x30).uint64(4); // index, then repeated: the last one counts
    w.uint32(0x30).uint64(5);
    w.uint32(0x48).bool(true);
    const payload = w.finish();
    assert.deepStrictEqual(decodeMessage(encodeEnvelope(1, payload, crc32(payload))), {
      type: MessageType.App,
      from: 'a',
      to: 'b',
      term: 0,
      logTerm: 0,
      index: 5,
      entries: [{ term: 0, index: 6, type: EntryType.Normal, data: new Uint8Array([1, 2]) }],
      commit: 0,
      reject: true,
      rejectHint: 0,
      context: new Uint8Array([7]),
    });
  });

  it('rejects every truncation and single-bit corruption of an append', () => {
    const frame = encodeMessage({
      ...fullMessage(),
      type: MessageType.App,
      index: 9,
      snapshot: undefined,
      entries: [
        { term: 3, index: 10, type: EntryType.Normal, data: new Uint8Array([1, 2, 3]) },
        { term: 4, index: 11, type: EntryType.ConfChange, data: new Uint8Array(0) },
      ],
    });
    for (let length = 0; length < frame.byteLength; length++) {
      assert.throws(
        () => decodeMessage(frame.subarray(0, length)),
        WireFormatError,
        `truncated to ${length}`,
      );
    }
    for (let bit = 0; bit < frame.byteLength * 8; bit++) {
      const corrupted = frame.slice();
      corrupted[bit >> 3] ^= 1 << (bit & 7);
      assert.throws(() => decodeMessage(corrupted), WireFormatError, `bit ${bit} flipped`);
    }
  });

  it('rejects every truncation of a valid frame', () => {
    const frame = encodeMessage(fullMessage());
    for (let length = 0; length < frame.byteLength; length++) {
      assert.throws(
        () => decodeMessage(frame.subarray(0, length)),
        WireFormatError,
        `truncated to ${length}`,
      );
    }
  });

  it('rejects every single-bit corruption of a valid frame', () => {
    const frame = encodeMessage(fullMessage());
    for (let bit = 0; bit < frame.byteLength * 8; bit++) {
      const corrupted = frame.slice();
      corrupted[bit >> 3] ^= 1 << (bit & 7);
      assert.throws(() => decodeMessage(corrupted), WireFormatError, `bit ${bit} flipped`);
    }
  });

  it('rejects random bytes with WireFormatError, never anything else', () => {
    const rand = seededFloats(0xc0ffee);
    for (let i = 0; i < 3000; i++) {
      const bytes = randomBytes(rand, Math.floor(rand() * 200));
      try {
        decodeMessage(bytes);
        assert.fail(`random bytes decoded as a message (case ${i})`);
      } catch (err) {
        assert.ok(err instanceof WireFormatError, `case ${i}: ${String(err)}`);
      }
    }
  });

  it('rejects well-checksummed payloads that are not valid messages', async () => {
    // A valid envelope around garbage: the checksum passes, the message checks must not.
    const protobuf = (await import('protobufjs')).default;
    const { crc32 } = await import('node:zlib');
    const root = protobuf.parse(RAFT_PROTO_SCHEMA).root;
    const envelopeType = root.lookupType('weft.raft.Envelope');
    const seal = (payload: Uint8Array) =>
      envelopeType.encode({ version: 1, payload, crc32: crc32(payload) }).finish();
    const messageType = root.lookupType('weft.raft.Message');
    const withFields = (fields: Record<string, unknown>) =>
      seal(messageType.encode(messageType.fromObject(fields)).finish());

    assert.throws(() => decodeMessage(withFields({ type: 3, from: 'a' })), /to must name a node/);
    assert.throws(
      () => decodeMessage(withFields({ type: 3, from: 'a', to: 'b', term: '9007199254740993' })),
      /term exceeds 2\^53-1/,
    );
    assert.throws(
      () => decodeMessage(withFields({ type: 42, from: 'a', to: 'b' })),
      /type has unknown value 42/,
    );
    assert.throws(() => decodeMessage(withFields({ type: 9, from: 'a', to: 'b' })), /snapshot is missing/);
    assert.throws(
      () => decodeMessage(withFields({ type: 9, from: 'a', to: 'b', snapshot: { metadata: { index: 1 } } })),
      /snapshot\.metadata\.confState is missing/,
    );
    assert.throws(
      () => decodeMessage(withFields({ type: 3, from: 'a', to: 'b', entries: [{ index: 1, type: 7 }] })),
      /entries\[0\]\.type has unknown value 7/,
    );
    assert.throws(() => decodeMessage(seal(new Uint8Array([0xff, 0xff]))), /malformed Message/);
    const wrongVersion = envelopeType.encode({ version: 2, payload: new Uint8Array(0), crc32: 0 }).finish();
    assert.throws(() => decodeMessage(wrongVersion), /wire version 2/);
  });

  it('writes envelopes byte for byte as protobufjs does', async () => {
    const protobuf = (await import('protobufjs')).default;
    const envelopeType = protobuf.parse(RAFT_PROTO_SCHEMA).root.lookupType('weft.raft.Envelope');
    for (const length of [0, 1, 127, 128, 300, 16_383, 16_384, 2_100_000]) {
      const payload = new Uint8Array(length).map((_, i) => i * 7);
      for (const crc of [0, 1, 0x7fffffff, 0xffffffff]) {
        for (const version of [0, 1, 2, 300]) {
          const expected = envelopeType
            .encode(envelopeType.create({ version, payload, crc32: crc }))
            .finish();
          assert.ok(
            Buffer.from(encodeEnvelope(version, payload, crc)).equals(Buffer.from(expected)),
            `length ${length}, crc ${crc}, version ${version}`,
          );
        }
      }
    }
  });

  it('round-trips and validates the control frames', () => {
    const hello = {
      cluster: 'prod',
      nodeId: 'n1',
      peerId: '12D3KooW...',
      multiaddrs: ['/ip4/127.0.0.1/tcp/7001'],
      members: [{ nodeId: 'n2', peerId: '12D3KooWother', multiaddrs: [] }],
    };
    assert.deepStrictEqual(decodeHello(encodeHello(hello)), hello);
    assert.deepStrictEqual(decodeHelloReply(encodeHelloReply({ ok: true, hello })), { ok: true, hello });
    assert.deepStrictEqual(decodeHelloReply(encodeHelloReply({ ok: false, error: 'nope' })), {
      ok: false,
      error: 'nope',
    });
    assert.throws(() => encodeHello({ ...hello, nodeId: '' }), /hello\.nodeId must name a node/);
    assert.throws(
      () => encodeHello({ ...hello, members: [{ nodeId: 'n3', peerId: '', multiaddrs: [] }] }),
      /hello\.members\[0\]\.peerId must name a node/,
    );

    const header = {
      message: { ...fullMessage(), snapshot: { ...fullMessage().snapshot!, data: new Uint8Array(0) } },
      totalBytes: 5_000_000,
      dataCrc32: 0xdeadbeef,
    };
    assert.deepStrictEqual(decodeSnapshotHeader(encodeSnapshotHeader(header)), header);
    // A checksum of 0 is a checksum like any other (proto3 would drop a plain zero scalar).
    const zeroCrc = { ...header, totalBytes: 0, dataCrc32: 0 };
    assert.deepStrictEqual(decodeSnapshotHeader(encodeSnapshotHeader(zeroCrc)), zeroCrc);
    assert.throws(
      () => decodeSnapshotHeader(encodeSnapshotHeader({ ...header, message: fullMessage() })),
      /must be empty/,
    );
    assert.deepStrictEqual(decodeSnapshotAck(encodeSnapshotAck({ ok: true })), { ok: true });
    assert.deepStrictEqual(decodeSnapshotAck(encodeSnapshotAck({ ok: false, error: 'disk full' })), {
      ok: false,
      error: 'disk full',
    });

    const request = { protocol: 'forward-proposal', payload: new Uint8Array([1, 2]) };
    assert.deepStrictEqual(decodeRpcRequest(encodeRpcRequest(request)), request);
    assert.deepStrictEqual(decodeRpcResponse(encodeRpcResponse({ ok: true, payload: new Uint8Array([3]) })), {
      ok: true,
      payload: new Uint8Array([3]),
    });
    assert.deepStrictEqual(
      decodeRpcResponse(encodeRpcResponse({ ok: false, error: 'not leader', code: 'remote-error' })),
      {
        ok: false,
        error: 'not leader',
        code: 'remote-error',
      },
    );
    // A frame of one kind is not accepted as another.
    assert.throws(() => decodeMessage(encodeHello(hello)), WireFormatError);
  });
});
