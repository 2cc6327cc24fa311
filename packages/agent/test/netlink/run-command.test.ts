// runCommand's contract, held by both implementations: the native addon's
// posix_spawn runner (native/src/spawn.cc) and child_process.
import assert from 'node:assert/strict';
import { mkdtemp, open, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CommandError, commandRunners, startDetached } from '../../src/netlink/ip.js';

for (const [name, run] of Object.entries(commandRunners)) {
  describe(`runCommand (${name})`, () => {
    it('resolves with stdout; large input reaches the program whole (beyond a pipe buffer)', async () => {
      assert.equal(await run(['printf', '%s-%s', 'a', 'b c']), 'a-b c');
      const input = 'line of input\n'.repeat(50_000); // 700 kB
      assert.equal(await run(['wc', '-c'], { input }), `${input.length}\n`);
      assert.equal(await run(['cat'], { input }), input);
    });

    it('a non-zero exit rejects with the exit code and what the program said on stderr', async () => {
      const err = await run(['sh', '-c', 'echo out; echo "no such device" >&2; exit 3']).catch((e) => e);
      assert.ok(err instanceof CommandError);
      assert.equal(err.exitCode, 3);
      assert.equal(err.stderr, 'no such device\n');
      assert.match(err.message, /`sh -c .*` failed \(exit 3\): no such device/);
    });

    it('a missing program rejects naming it and the package to install', async () => {
      const err = await run(['weft-no-such-program', 'x']).catch((e) => e);
      assert.ok(err instanceof CommandError);
      assert.equal(err.exitCode, null);
      assert.match(err.message, /weft-no-such-program.*ENOENT|weft-no-such-program.*no such file/i);
      assert.match(err.message, /is weft-no-such-program installed\?/);
    });

    it('a program killed by a signal rejects; one that does not read its input still gives its answer', async () => {
      const killed = await run(['sh', '-c', 'kill -9 $$']).catch((e) => e);
      assert.ok(killed instanceof CommandError);
      assert.equal(killed.exitCode, null);
      assert.equal(await run(['echo', 'ok'], { input: 'x'.repeat(1_000_000) }), 'ok\n');
    });

    it('the program starts with default signal handling and the caller’s environment', async () => {
      // Node ignores SIGPIPE; a child must not inherit that (ip, nft rely on the default). Only
      // the standard signals 1-31 count: glibc's posix_spawn leaves its own internal ones (32, 33) ignored.
      const status = await run(['sh', '-c', 'grep SigIgn /proc/self/status']);
      const ignored = BigInt(`0x${/SigIgn:\s+([0-9a-f]+)/.exec(status)?.[1]}`);
      assert.equal(ignored & 0x7fffffffn, 0n, `ignored signals: ${status.trim()}`);
      process.env.WEFT_RUN_COMMAND_TEST = 'seen';
      try {
        assert.equal(await run(['sh', '-c', 'echo $WEFT_RUN_COMMAND_TEST']), 'seen\n');
      } finally {
        delete process.env.WEFT_RUN_COMMAND_TEST;
      }
    });

    it('many commands at once each get their own answer', async () => {
      const answers = await Promise.all(Array.from({ length: 20 }, (_, i) => run(['echo', String(i)])));
      assert.deepEqual(
        answers,
        Array.from({ length: 20 }, (_, i) => `${i}\n`),
      );
    });
  });
}

describe('startDetached', () => {
  it('runs the program in its own session with output in the file, and reports its exit (128 + signal)', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'weft-detached-'));
    const log = await open(join(dir, 'out.log'), 'a');
    try {
      let exited!: (code: number) => void;
      const exit = new Promise<number>((r) => {
        exited = r;
      });
      const pid = await startDetached(
        ['sh', '-c', 'echo out; echo err >&2; ps -o sid= -p $$; read x || echo "stdin is empty"; exit 7'],
        log.fd,
        (code) => exited(code),
      );
      assert.equal(await exit, 7);
      const lines = (await readFile(join(dir, 'out.log'), 'utf8')).split('\n').map((l) => l.trim());
      assert.deepEqual(
        lines,
        ['out', 'err', String(pid), 'stdin is empty', ''],
        'own session: its id is its pid',
      );
      const signalled = new Promise<number>((r) => {
        void startDetached(['sh', '-c', 'kill -TERM $$'], log.fd, r);
      });
      assert.equal(await signalled, 128 + 15);
      await assert.rejects(
        startDetached(['weft-no-such-program'], log.fd, () => {}),
        /cannot start weft-no-such-program/,
      );
    } finally {
      await log.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
