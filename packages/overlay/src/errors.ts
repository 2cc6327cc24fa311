// Typed errors the agent maps to HTTP statuses:
//   invalid → 400, not-found → 404, conflict → 409, in-use → 409 (Docker uses 403),
//   exhausted → 409/503, unavailable → 503.

export type OverlayErrorCode = 'invalid' | 'not-found' | 'conflict' | 'in-use' | 'exhausted' | 'unavailable';

export class OverlayError extends Error {
  readonly code: OverlayErrorCode;

  constructor(code: OverlayErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'OverlayError';
    this.code = code;
  }
}

export function invalid(message: string): OverlayError {
  return new OverlayError('invalid', message);
}

export function isOverlayError(e: unknown, code?: OverlayErrorCode): e is OverlayError {
  return e instanceof OverlayError && (code === undefined || e.code === code);
}
