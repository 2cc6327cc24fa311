// A lean HTTP/1.1 front end for the Consul API's TCP connections.
//
// node:http spends ~60 µs of CPU on a keep-alive request here (its parser
// callbacks, IncomingMessage and ServerResponse streams, header validation);
// a loop that reads a request from the socket and writes one answer spends
// ~20 µs. On a machine whose members share two cores that difference is a
// tenth of a replicated write's CPU. This module serves the common shape of
// request itself and gives every other connection to node:http:
//
//  - It parses only a strict subset: `GET|PUT|POST|DELETE <origin-form> HTTP/1.1`,
//    printable ASCII in the head, a Host header, at most one decimal
//    Content-Length (no Transfer-Encoding, Expect or Upgrade), a body of at
//    most FAST_MAX_BODY bytes and a head within node's 16 KiB limit.
//  - The first request outside that subset (chunked bodies, 100-continue,
//    HTTP/1.0, HEAD, raw non-ASCII, malformed input, anything odd) hands the
//    connection, with its unread bytes, to node:http's own connection
//    listener, which then owns it for good. So every error answer and every
//    rarely used feature stays node's; only well-formed requests are ours.
//  - One request at a time per connection: pipelined requests wait in the
//    buffer and are answered in order; a hand-off happens only between requests.
//  - Answers carry what node:http's would: the status line, the handler's
//    headers, Content-Length, Date, and Connection/Keep-Alive.
//  - Timeouts follow the node:http server's settings: an idle connection is
//    closed after keepAliveTimeout, a request whose head and body do not
//    arrive within headersTimeout (node's default 60 s) is dropped.
import { EventEmitter } from 'node:events';
import { STATUS_CODES } from 'node:http';
import type { Socket } from 'node:net';

/** Bodies larger than this go to node:http (values are usually small; the limit keeps buffering bounded). */
export const FAST_MAX_BODY = 64 * 1024;
/** node:http's default maxHeaderSize: a longer head is handed over so node answers 431. */
const MAX_HEAD = 16 * 1024;
/** Stop reading from a client that pipelines this much while a request is being served. */
const MAX_BUFFERED = 256 * 1024;
const EMPTY = Buffer.alloc(0);
const HEAD_END = Buffer.from('\r\n\r\n');
/** Anything but tab, CR, LF and printable ASCII in a head sends it to node:http. */
const UNUSUAL_BYTE = /[^\t\r\n\x20-\x7e]/;
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const DIGITS = /^[0-9]{1,15}$/;
const HEADER_VALUE_FORBIDDEN = /[\r\n\0]/;
const METHODS = new Set(['GET', 'PUT', 'POST', 'DELETE']);

/** The part of node's ServerResponse the Consul handler uses; FastResponse and ServerResponse both have it. */
export interface ResponseLike {
  statusCode: number;
  readonly headersSent: boolean;
  setHeader(name: string, value: string | number): unknown;
  end(body?: string | Uint8Array): unknown;
  destroy(): unknown;
  once(event: 'close', listener: () => void): unknown;
  off(event: 'close', listener: () => void): unknown;
}

/** A request the front end parsed: the body has fully arrived. */
export interface FastRequest {
  method: string;
  url: string;
  body: Buffer;
}

export type FastHandler = (req: FastRequest, res: FastResponse) => void;

export interface FastFrontOptions {
  /** Serves a parsed request; must end or destroy the response eventually. */
  handle: FastHandler;
  /** node:http's connection listener: takes a connection the front end does not serve. */
  handOff: (socket: Socket) => void;
  /** Read at every check, so changes to the node:http server's settings apply. */
  keepAliveTimeoutMs: () => number;
  headersTimeoutMs: () => number;
}

/** Keeps the fast connections, their timeouts, and shutdown. */
export class FastFront {
  private readonly conns = new Set<FastConnection>();
  private sweeper: NodeJS.Timeout | undefined;
  private closing = false;
  private date = '';
  private dateAtMs = 0;

  constructor(readonly opts: FastFrontOptions) {}

  accept(socket: Socket): void {
    if (this.closing) {
      socket.destroy();
      return;
    }
    const conn = new FastConnection(this, socket);
    this.conns.add(conn);
    this.startSweeper();
  }

  /** Node's utcDate(): the Date header, recomputed at most once a second. */
  utcDate(nowMs: number): string {
    if (nowMs - this.dateAtMs >= 1000 || nowMs < this.dateAtMs) {
      this.dateAtMs = nowMs - (nowMs % 1000);
      this.date = new Date(nowMs).toUTCString();
    }
    return this.date;
  }

  get isClosing(): boolean {
    return this.closing;
  }

  forget(conn: FastConnection): void {
    this.conns.delete(conn);
    if (this.conns.size === 0 && this.sweeper) {
      clearInterval(this.sweeper);
      this.sweeper = undefined;
    }
  }

  /** Like server.close() with closeIdleConnections(): idle connections go now, busy ones after their answer. */
  close(): void {
    this.closing = true;
    for (const conn of [...this.conns]) conn.closeWhenIdle();
  }

  private startSweeper(): void {
    if (this.sweeper) return;
    // One timer for all connections: per-request timers cost more than a sweep.
    const everyMs = Math.max(25, Math.min(1000, Math.floor(this.opts.keepAliveTimeoutMs() / 4)));
    this.sweeper = setInterval(() => {
      const now = Date.now();
      for (const conn of [...this.conns]) conn.checkTimeout(now);
    }, everyMs);
    this.sweeper.unref();
  }
}

/** One client connection while the front end serves it. */
class FastConnection {
  private buf: Buffer = EMPTY;
  /** A request is with the handler. */
  private busy = false;
  /** Close once no request is with the handler: Connection: close was answered, or the front end closes. */
  private closeNow = false;
  private done = false;
  private readonly onData = (chunk: Buffer) => this.received(chunk);
  // Like node:http (httpAllowHalfOpen false): a client's FIN aborts the
  // request being served and closes the connection.
  private readonly onEnd = () => {
    this.finish();
    this.current?.connectionClosed();
  };
  private readonly onClose = () => this.closed();
  private readonly onDrain = () => this.next();
  private readonly onError = () => {
    // 'close' follows; without a listener a reset would throw.
  };
  /** Since when the connection waits idle, or for the rest of a request (ms since epoch). */
  private waitingSinceMs = Date.now();
  private current: FastResponse | undefined;

  constructor(
    private readonly front: FastFront,
    readonly socket: Socket,
  ) {
    // No setNoDelay: node:http's server (noDelay: true) set it when it accepted the socket.
    socket.on('data', this.onData);
    socket.on('end', this.onEnd);
    socket.on('close', this.onClose);
    socket.on('drain', this.onDrain);
    socket.on('error', this.onError);
  }

  checkTimeout(nowMs: number): void {
    if (this.busy || this.done) return;
    const limit =
      this.buf.length > 0 ? this.front.opts.headersTimeoutMs() : this.front.opts.keepAliveTimeoutMs();
    if (limit > 0 && nowMs - this.waitingSinceMs >= limit) this.socket.destroy();
  }

  closeWhenIdle(): void {
    this.closeNow = true;
    if (!this.busy) this.socket.destroy();
  }

  private received(chunk: Buffer): void {
    if (this.buf.length === 0) this.waitingSinceMs = Date.now();
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    if (this.busy || this.socket.writableNeedDrain) {
      if (this.buf.length > MAX_BUFFERED) this.socket.pause();
      return;
    }
    this.next();
  }

  /** Serve the next complete request in the buffer, if any. */
  private next(): void {
    if (this.busy || this.done || this.socket.writableNeedDrain) return;
    if (this.closeNow) {
      this.finish();
      return;
    }
    const headEnd = this.buf.indexOf(HEAD_END);
    if (headEnd === -1) {
      if (this.buf.length > MAX_HEAD) this.handOff();
      return;
    }
    const head = headEnd <= MAX_HEAD ? parseHead(this.buf.toString('latin1', 0, headEnd)) : undefined;
    if (head === undefined) {
      this.handOff();
      return;
    }
    const bodyStart = headEnd + 4;
    const end = bodyStart + head.contentLength;
    if (this.buf.length < end) return; // the rest of the body is on its way
    const body = this.buf.subarray(bodyStart, end);
    this.buf = end === this.buf.length ? EMPTY : this.buf.subarray(end);
    if (this.socket.isPaused()) this.socket.resume();
    this.busy = true;
    const res = new FastResponse(this, this.front, head.close);
    this.current = res;
    this.front.opts.handle({ method: head.method, url: head.url, body }, res);
  }

  /** The handler ended the current response; `close` = it said Connection: close. */
  responded(res: FastResponse, close: boolean): void {
    if (res !== this.current) return;
    this.current = undefined;
    this.busy = false;
    this.waitingSinceMs = Date.now();
    if (close) this.closeNow = true;
    this.next();
  }

  private finish(): void {
    if (this.done) return;
    this.detach();
    this.socket.end();
  }

  private closed(): void {
    this.detach();
    this.current?.connectionClosed();
  }

  private detach(): void {
    if (this.done) return;
    this.done = true;
    this.socket.off('data', this.onData);
    this.socket.off('end', this.onEnd);
    this.socket.off('drain', this.onDrain);
    this.front.forget(this);
  }

  /** Give the connection and its unread bytes to node:http, which serves it from now on. */
  private handOff(): void {
    const rest = this.buf;
    this.buf = EMPTY;
    this.detach();
    this.socket.off('close', this.onClose);
    this.socket.off('error', this.onError);
    if (this.socket.isPaused()) this.socket.resume();
    this.front.opts.handOff(this.socket);
    // node:http reads the socket's handle directly from now on; what was
    // already read reaches its parser through the 'data' listener it added.
    if (rest.length > 0) this.socket.emit('data', rest);
  }
}

/** The subset of ServerResponse the Consul handler uses, written straight to the socket. */
export class FastResponse extends EventEmitter implements ResponseLike {
  statusCode = 200;
  private ended = false;
  private gone = false;
  /** [lower-case name, name as set, value], in the order first set (node's order). */
  private readonly headers: [string, string, string][] = [];

  constructor(
    private readonly conn: FastConnection,
    private readonly front: FastFront,
    /** The client asked for Connection: close. */
    private readonly closeAfter: boolean,
  ) {
    super();
  }

  get headersSent(): boolean {
    return this.ended;
  }

  setHeader(name: string, value: string | number): this {
    const v = String(value);
    if (this.ended) throw new Error(`cannot set header ${name}: the response was sent`);
    if (!TOKEN.test(name) || HEADER_VALUE_FORBIDDEN.test(v)) {
      throw new TypeError(`invalid HTTP header ${JSON.stringify(name)}: ${JSON.stringify(v)}`);
    }
    const lower = name.toLowerCase();
    const at = this.headers.findIndex(([l]) => l === lower);
    if (at === -1) this.headers.push([lower, name, v]);
    else this.headers[at] = [lower, name, v];
    return this;
  }

  end(body?: string | Uint8Array): this {
    if (this.ended) return this;
    this.ended = true;
    const socket = this.conn.socket;
    let closing = this.closeAfter || this.front.isClosing;
    if (!this.gone && !socket.destroyed) {
      const payload = body === undefined ? EMPTY : typeof body === 'string' ? Buffer.from(body) : body;
      let head = `HTTP/1.1 ${this.statusCode} ${STATUS_CODES[this.statusCode] ?? 'unknown'}\r\n`;
      let hasLength = false;
      let hasConnection = false;
      // node:http's order: the handler's headers, Date, Connection, Content-Length.
      for (const [lower, name, value] of this.headers) {
        if (lower === 'content-length') hasLength = true;
        else if (lower === 'connection') {
          hasConnection = true;
          // The handler may ask to close (after refusing an oversized body).
          if (value.toLowerCase() === 'close') closing = true;
        }
        head += `${name}: ${value}\r\n`;
      }
      head += `Date: ${this.front.utcDate(Date.now())}\r\n`;
      if (!hasConnection) {
        if (closing) head += 'Connection: close\r\n';
        else {
          head += 'Connection: keep-alive\r\n';
          const keepAliveMs = this.front.opts.keepAliveTimeoutMs();
          if (keepAliveMs > 0) head += `Keep-Alive: timeout=${Math.floor(keepAliveMs / 1000)}\r\n`;
        }
      }
      if (!hasLength) head += `Content-Length: ${payload.length}\r\n`;
      head += '\r\n';
      if (payload.length === 0) socket.write(head, 'latin1');
      else {
        // One writev for head and body.
        socket.cork();
        socket.write(head, 'latin1');
        socket.write(payload);
        socket.uncork();
      }
    }
    this.connectionClosed();
    this.conn.responded(this, closing);
    return this;
  }

  destroy(): this {
    if (!this.gone) this.conn.socket.destroy();
    this.ended = true;
    this.connectionClosed();
    return this;
  }

  /** Once, like ServerResponse: after the answer, or when the connection closed while it was pending. */
  connectionClosed(): void {
    if (this.gone) return;
    this.gone = true;
    this.emit('close');
  }
}

interface Head {
  method: string;
  url: string;
  contentLength: number;
  close: boolean;
}

/** Parse a request head in the fast subset; undefined = let node:http have it. */
function parseHead(text: string): Head | undefined {
  if (UNUSUAL_BYTE.test(text)) return undefined;
  const lines = text.split('\r\n');
  const start = lines[0]!;
  const sp1 = start.indexOf(' ');
  const sp2 = start.indexOf(' ', sp1 + 1);
  if (sp1 <= 0 || sp2 === -1 || start.indexOf(' ', sp2 + 1) !== -1) return undefined;
  const method = start.slice(0, sp1);
  const url = start.slice(sp1 + 1, sp2);
  if (!METHODS.has(method) || start.slice(sp2 + 1) !== 'HTTP/1.1' || url[0] !== '/') return undefined;
  let contentLength = -1;
  let close = false;
  let host = false;
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i]!;
    const colon = line.indexOf(':');
    // No colon, a bare CR or LF, or a folded line (leading whitespace): node decides.
    if (colon <= 0 || line.includes('\r') || line.includes('\n')) return undefined;
    const name = line.slice(0, colon);
    if (!TOKEN.test(name)) return undefined;
    const value = line.slice(colon + 1).trim();
    switch (name.toLowerCase()) {
      case 'content-length':
        if (contentLength !== -1 || !DIGITS.test(value)) return undefined;
        contentLength = Number(value);
        if (contentLength > FAST_MAX_BODY) return undefined;
        break;
      case 'host':
        if (host) return undefined;
        host = true;
        break;
      case 'connection':
        for (const token of value.split(',')) {
          const t = token.trim().toLowerCase();
          if (t === 'close') close = true;
          else if (t !== 'keep-alive' && t !== '') return undefined;
        }
        break;
      case 'transfer-encoding':
      case 'expect':
      case 'upgrade':
        return undefined;
    }
  }
  if (!host) return undefined;
  return { method, url, contentLength: Math.max(0, contentLength), close };
}
