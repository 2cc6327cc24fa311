// Structured logs: one JSON object per line on stderr (pino), so stdout stays
// free for whatever the process prints for humans.
import { type Logger, pino } from 'pino';

export type { Logger };

export interface LoggerOptions {
  level?: string;
  name?: string;
  /** Where to write; defaults to stderr. */
  destination?: NodeJS.WritableStream;
}

export function createLogger(opts: LoggerOptions = {}): Logger {
  const level = opts.level ?? process.env.WEFT_LOG_LEVEL ?? 'info';
  const dest = opts.destination ?? pino.destination({ fd: 2, sync: true });
  return pino({ level, name: opts.name ?? 'weft', base: { pid: process.pid } }, dest);
}

/** A logger that drops everything; for tests and library use. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
