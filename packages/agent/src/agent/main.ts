// `weft agent`: builds the agent from its flags and runs it until a signal.
import { createLogger } from '../log/logger.js';
import { parseAgentConfig } from './config.js';

export async function runAgentProcess(raw: Record<string, unknown>): Promise<number> {
  let config: ReturnType<typeof parseAgentConfig>;
  try {
    config = parseAgentConfig(raw);
  } catch (err) {
    process.stderr.write(`Error: ${(err as Error).message}\n`);
    return 2;
  }
  const logger = createLogger({ level: config.logLevel, name: config.name });
  logger.error('this build has no KV node / overlay manager yet; the agent cannot start');
  return 1;
}
