// A closed-loop HTTP load generator: `concurrency` workers, each with its own
// keep-alive connection, issue requests back to back for `durationMs`.
// Latencies are recorded per request; the result gives ops/s, p50 and p99.
//
// The workers use undici's Client through its low-level dispatch() with a
// handler, not node:http's request() nor undici's request(): on the 2-core
// machine the generator shares the CPU with the servers it measures. node:http
// cost it ~150 µs of CPU per request, as much as a third of what the servers
// spend; undici's request() ~65–93 µs (it builds a body stream per response);
// dispatch() ~35 µs (packages/kv/README.md, "The load generator"). Both
// clusters get the same generator, so a cheaper one takes less from whichever
// is being measured.
import http from 'node:http';
import { Client, type Dispatcher } from 'undici';
import { percentileOfSorted } from '../stats.js';

export interface HttpRequestSpec {
  method: 'GET' | 'PUT' | 'POST';
  host: string;
  port: number;
  path: string;
  body?: Buffer;
  headers?: Record<string, string>;
}

export interface LoadResult {
  ops: number;
  errors: number;
  opsPerSecond: number;
  p50Ms: number;
  p99Ms: number;
  firstError?: string;
}

/** One request over `agent`; resolves with the status code once the body is read. */
export function request(
  spec: HttpRequestSpec,
  agent: http.Agent,
  timeoutMs = 10_000,
): Promise<{ status: number; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        method: spec.method,
        host: spec.host,
        port: spec.port,
        path: spec.path,
        agent,
        headers: { ...(spec.body ? { 'content-length': String(spec.body.length) } : {}), ...spec.headers },
        timeout: timeoutMs,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) }));
        res.on('error', reject);
      },
    );
    req.on('timeout', () =>
      req.destroy(new Error(`timeout after ${timeoutMs} ms: ${spec.method} ${spec.path}`)),
    );
    req.on('error', reject);
    req.end(spec.body);
  });
}

/**
 * Run `concurrency` workers for `durationMs`. `next(worker, seq)` builds each
 * request (so workloads choose keys and targets); a response status outside
 * 2xx counts as an error.
 */
export async function runLoad(opts: {
  concurrency: number;
  durationMs: number;
  next: (worker: number, seq: number) => HttpRequestSpec;
}): Promise<LoadResult> {
  const latencies: number[] = [];
  let errors = 0;
  let firstError: string | undefined;
  const start = performance.now();
  const end = start + opts.durationMs;
  const workers = Array.from({ length: opts.concurrency }, async (_, worker) => {
    const clients = new Map<string, Client>();
    try {
      for (let seq = 0; performance.now() < end; seq++) {
        const spec = opts.next(worker, seq);
        const target = `${spec.host}:${spec.port}`;
        let client = clients.get(target);
        if (!client) {
          client = new Client(`http://${target}`, {
            pipelining: 1,
            bodyTimeout: 10_000,
            headersTimeout: 10_000,
          });
          clients.set(target, client);
        }
        const t0 = performance.now();
        try {
          const res = await dispatch(client, {
            method: spec.method,
            path: spec.path,
            ...(spec.body ? { body: spec.body } : {}),
            ...(spec.headers ? { headers: spec.headers } : {}),
          });
          if (res.status >= 200 && res.status < 300) latencies.push(performance.now() - t0);
          else {
            errors++;
            firstError ??= `HTTP ${res.status}: ${res.errorBody.slice(0, 200)}`;
          }
        } catch (err) {
          errors++;
          firstError ??= (err as Error).message;
        }
      }
    } finally {
      await Promise.allSettled([...clients.values()].map((c) => c.destroy()));
    }
  });
  await Promise.all(workers);
  const elapsedS = (performance.now() - start) / 1000;
  const sorted = Float64Array.from(latencies).sort();
  return {
    ops: latencies.length,
    errors,
    opsPerSecond: latencies.length / elapsedS,
    p50Ms: percentileOfSorted(sorted, 0.5),
    p99Ms: percentileOfSorted(sorted, 0.99),
    ...(firstError ? { firstError } : {}),
  };
}

/**
 * One request through undici's dispatch(): the status, and the body only of
 * an answer outside 2xx (the only one read). A 2xx body is received and dropped.
 */
function dispatch(
  client: Client,
  options: Dispatcher.DispatchOptions,
): Promise<{ status: number; errorBody: string }> {
  return new Promise((resolve, reject) => {
    let status = 0;
    let errorBody = '';
    client.dispatch(options, {
      onConnect() {},
      onError: reject,
      onHeaders(statusCode) {
        status = statusCode;
        return true;
      },
      onData(chunk) {
        if ((status < 200 || status >= 300) && errorBody.length < 200) errorBody += chunk.toString();
        return true;
      },
      onComplete() {
        resolve({ status, errorBody });
      },
    });
  });
}
