import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

// The compiled command (tests run from dist/test/sim; under tsx there is no .js to run).
const cli = fileURLToPath(new URL('../../src/sim/cli.js', import.meta.url));

function run(args: string[]): { status: number | null; lines: string[]; summary: Record<string, unknown> } {
  const r = spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', timeout: 120_000 });
  const lines = r.stdout.trim().split('\n');
  return {
    status: r.status,
    lines,
    summary: JSON.parse(lines[lines.length - 1]!) as Record<string, unknown>,
  };
}

describe('sim: command line', function () {
  this.timeout(120_000);
  before(function () {
    if (!existsSync(cli)) this.skip();
  });

  it('ends with a JSON summary and exits 0 when every seed passes', () => {
    const { status, summary } = run(['--seeds', '2', '--first', '11']);
    assert.equal(status, 0);
    assert.equal(summary.seeds, 2);
    assert.equal(summary.failures, 0);
    assert.equal(summary.firstFailingSeed, null);
    for (const k of ['steps', 'elections', 'snapshots', 'confChanges', 'opsChecked', 'seedsPerSecond']) {
      assert.equal(typeof summary[k], 'number', k);
    }
  });

  it('exits non-zero and prints the seed and a trace tail when a seed fails', () => {
    const { status, lines, summary } = run(['--first', '4', '--seeds', '3', '--bug', 'voteWithoutLogCheck']);
    assert.notEqual(status, 0);
    assert.ok((summary.failures as number) > 0);
    const failing = summary.firstFailingSeed as number;
    assert.ok(lines.some((l) => l.startsWith(`seed ${failing} FAILED:`)));
    assert.ok(lines.some((l) => l.includes('trace tail')));
  });

  it('rejects bad arguments with a clear message', () => {
    const r = spawnSync(process.execPath, [cli, '--seeds', 'many'], { encoding: 'utf8' });
    assert.equal(r.status, 2);
    assert.match(r.stderr, /--seeds must be a non-negative integer/);
  });
});
