import { type ChildProcess, type SpawnOptions, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/**
 * Starts a sibling script as a real child process, from the compiled .js when
 * the tests run from dist, or through tsx when they run from the sources.
 */
export function spawnScript(
  fromUrl: string,
  relative: string,
  args: string[],
  options: SpawnOptions = {},
): ChildProcess {
  const fromTs = fromUrl.endsWith('.ts');
  const file = fileURLToPath(new URL(relative.replace(/\.ts$|\.js$/, fromTs ? '.ts' : '.js'), fromUrl));
  if (!existsSync(file)) throw new Error(`child script ${file} does not exist (was the package built?)`);
  const nodeArgs = fromTs ? ['--import', 'tsx', file, ...args] : [file, ...args];
  return spawn(process.execPath, nodeArgs, { stdio: ['ignore', 'pipe', 'pipe'], ...options });
}
