// Golden transcript tests: each testdata/NAME.txt scenario is run and its
// trace compared with testdata/NAME.trace. After an intended behaviour
// change, rewrite the traces with WEFT_REWRITE_GOLDEN=1 and review the diff.
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { runScenario } from './interaction.js';

// Compiled tests run from dist/test/raft; the scenario files stay in the source tree.
const candidates = [
  new URL('./testdata/', import.meta.url),
  new URL('../../../test/raft/testdata/', import.meta.url),
];
const dir = fileURLToPath(candidates.find((u) => existsSync(fileURLToPath(u))) ?? candidates[0]!);

describe('raft: golden transcripts', () => {
  const scenarios = readdirSync(dir)
    .filter((f) => f.endsWith('.txt'))
    .sort();
  it('has scenarios', () => assert.ok(scenarios.length >= 4, `only ${scenarios.length} scenarios in ${dir}`));
  for (const file of scenarios) {
    it(file.replace(/\.txt$/, ''), () => {
      const actual = runScenario(readFileSync(dir + file, 'utf8'));
      const tracePath = dir + file.replace(/\.txt$/, '.trace');
      if (process.env.WEFT_REWRITE_GOLDEN === '1') {
        writeFileSync(tracePath, actual);
        return;
      }
      assert.ok(existsSync(tracePath), `no ${tracePath}; create it with WEFT_REWRITE_GOLDEN=1 and review it`);
      assert.equal(
        actual,
        readFileSync(tracePath, 'utf8'),
        `trace of ${file} changed (WEFT_REWRITE_GOLDEN=1 to accept)`,
      );
    });
  }
});
