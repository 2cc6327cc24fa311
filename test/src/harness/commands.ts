// The `weft` command lines the end-to-end tests, the demo and the benches
// type, built in one place so each reads as the user's command and the
// argument order (options before `--`, then the container's command) is
// written once.
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** How `weft run` is started: in the background (`-d`) or removed when done (`--rm`). */
export type RunMode = 'detach' | 'rm';

/** `weft run -d|--rm --net NET --name NAME -- CMD…` */
export function weftRun(mode: RunMode, net: string, name: string, command: string[]): string[] {
  return ['run', mode === 'detach' ? '-d' : '--rm', '--net', net, '--name', name, '--', ...command];
}

/** A busybox web server on port 80 serving `dir`, in the foreground (the container's main process). */
export function httpd(dir: string): string[] {
  return ['busybox', 'httpd', '-f', '-p', '80', '-h', dir];
}

/** Fetches `url` and prints the body on stdout (busybox wget). */
export function wget(url: string): string[] {
  return ['busybox', 'wget', '-q', '-O-', url];
}

/** One ping to `target` (a name or an address), waiting at most 2 s for the answer. */
export function pingOnce(target: string): string[] {
  return ['busybox', 'ping', '-c', '1', '-W', '2', target];
}

/** A new temp directory holding `files` (name → content) for httpd to serve; the caller removes it. */
export async function makePageDir(tag: string, files: Record<string, string>): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), `weft-${tag}-page-`));
  for (const [name, content] of Object.entries(files)) await writeFile(join(dir, name), content);
  return dir;
}
