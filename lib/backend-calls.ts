import { context } from '@opentelemetry/api';
import type { Context } from '@opentelemetry/api';
import { errorMonitor } from 'node:events';
import type { ClientRequest, IncomingMessage } from 'node:http';
import { getAuditor } from './audit/auditor';
import { opensslReason } from './tls-audit';

/**
 * Failed outgoing calls become `backend_call_fail` audit records: a network error (refused, reset,
 * timeout, DNS) or a 5xx response, with what the other side said. One record per failed call,
 * written in the context of the call, so it carries the `request.id` and `trace_id` of the incoming
 * request that made it.
 *
 * `http`/`https`: through instrumentation-http's client `requestHook`/`responseHook` (wired in
 * sdk.ts), so requests that instrumentation ignores — the exporters' uploads — are never seen.
 * `fetch`/undici: through undici's diagnostics channels, which Node publishes whether or not the
 * undici instrumentation is enabled.
 *
 * Nothing here changes what the application sees. Errors are observed with `errorMonitor` (an
 * `'error'` listener would stop an unhandled error from being thrown). A 5xx body is observed as it
 * is pushed into the response stream — that instance's `push` is wrapped — never with a `'data'`
 * listener, which would switch the stream to flowing mode and could lose data for the app; for
 * fetch, undici's `undici:request:bodyChunkReceived` channel gives the same chunks.
 */

/** At most this many bytes of a 5xx body end up in `error.message`. */
export const BODY_MAX_BYTES = 1024;
/** When the body has not ended by then (the app does not read it), the record is written anyway. */
export const BODY_WAIT_MS = 5000;
/** Compressed bodies: at most this much raw input is kept for decompression. */
const RAW_MAX_BYTES = 8 * 1024;
const PATH_MAX = 2048;

interface Call {
  ctx: Context;
  server: string;
  /** `server.address` before a port is known: filled from the socket or error later. */
  host?: string | undefined;
  defaultPort?: number | undefined;
  path: string | undefined;
  status?: number | undefined;
  statusText?: string | undefined;
  encoding?: string | undefined;
  chunks: Buffer[];
  size: number;
  done: boolean;
  timer?: NodeJS.Timeout | undefined;
}

interface Failure {
  type?: string | undefined;
  message?: string | undefined;
  port?: number | undefined;
}

let isTracingSuppressed: ((ctx: Context) => boolean) | undefined;
/** The SDK's own calls (exporters, resource detectors) run with tracing suppressed. */
function isSuppressed(ctx: Context): boolean {
  try {
    isTracingSuppressed ??= (require('@opentelemetry/core') as typeof import('@opentelemetry/core')).isTracingSuppressed;
    return isTracingSuppressed(ctx);
  } catch {
    return false;
  }
}

function newCall(ctx: Context, server: string, path: string | undefined): Call {
  return { ctx, server, path, chunks: [], size: 0, done: false };
}

function pathOnly(raw: unknown): string | undefined {
  if (typeof raw !== 'string' || raw.length === 0) return undefined;
  const cut = raw.search(/[?#]/);
  return (cut >= 0 ? raw.slice(0, cut) : raw).slice(0, PATH_MAX) || '/';
}

function bracket(host: string): string {
  return host.includes(':') && !host.startsWith('[') ? `[${host}]` : host;
}

/** A chunk pushed into a 5xx body: kept up to the limit, decoded once at the end. */
function collect(call: Call, chunk: unknown): void {
  if (call.done || call.status === undefined || call.status < 500) return;
  const limit = call.encoding ? RAW_MAX_BYTES : BODY_MAX_BYTES;
  if (call.size >= limit || chunk === null || chunk === undefined) return;
  let buf: Buffer;
  if (Buffer.isBuffer(chunk)) buf = chunk;
  else if (chunk instanceof Uint8Array) buf = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
  else if (typeof chunk === 'string') buf = Buffer.from(chunk, 'utf8');
  else return;
  const part = buf.subarray(0, limit - call.size);
  // Copied: the parser may reuse the memory behind a chunk it pushed.
  call.chunks.push(Buffer.from(part));
  call.size += part.length;
}

/** The body's text: decompressed if it was sent compressed, UTF-8, at most BODY_MAX_BYTES. */
export function bodyText(raw: Buffer, encoding: string | undefined): string | undefined {
  let bytes: Buffer | undefined = raw;
  const enc = (encoding ?? '').trim().toLowerCase();
  if (enc && enc !== 'identity') {
    bytes = undefined;
    try {
      const zlib = require('node:zlib') as typeof import('node:zlib');
      const opts = { finishFlush: zlib.constants.Z_SYNC_FLUSH, maxOutputLength: 64 * 1024 };
      if (enc === 'gzip' || enc === 'x-gzip') bytes = zlib.gunzipSync(raw, opts);
      else if (enc === 'deflate') {
        try { bytes = zlib.inflateSync(raw, opts); } catch { bytes = zlib.inflateRawSync(raw, opts); }
      } else if (enc === 'br') {
        bytes = zlib.brotliDecompressSync(raw, { finishFlush: zlib.constants.BROTLI_OPERATION_FLUSH, maxOutputLength: 64 * 1024 });
      }
    } catch {
      bytes = undefined;
    }
    if (!bytes) return undefined;
  }
  // `stream: true` holds back a multi-byte character cut by the limit instead of writing U+FFFD.
  const text = new TextDecoder('utf-8').decode(bytes.subarray(0, BODY_MAX_BYTES), { stream: true }).trim();
  return text.length > 0 ? text : undefined;
}

function nameOf(error: unknown): unknown {
  return error !== null && typeof error === 'object' ? (error as { name?: unknown }).name : undefined;
}

/**
 * An abort the application asked for (AbortController, `req.destroy()` with an AbortError) is its
 * own decision, not a backend failure. A timeout is: `AbortSignal.timeout()` aborts with a
 * TimeoutError (fetch reports it as is, http wraps it as the AbortError's `cause`).
 */
function isOwnAbort(error: unknown): boolean {
  if (nameOf(error) !== 'AbortError') return false;
  return nameOf((error as { cause?: unknown }).cause) !== 'TimeoutError';
}

function describe(failure: unknown): Failure {
  let error = failure;
  if (nameOf(error) === 'AbortError' && nameOf((error as { cause?: unknown }).cause) === 'TimeoutError') error = (error as { cause?: unknown }).cause;
  if (error === null || typeof error !== 'object') return { type: 'Error', message: typeof error === 'string' ? error : undefined };
  const e = error as { code?: unknown; name?: unknown; message?: unknown; port?: unknown; errors?: unknown; cause?: unknown };
  let message = typeof e.message === 'string' ? e.message : '';
  // Happy eyeballs: an AggregateError with an empty message and one error per address tried.
  if (!message && Array.isArray(e.errors)) {
    message = e.errors.map((x: unknown) => (x && typeof (x as Error).message === 'string' ? (x as Error).message : '')).filter(Boolean).join('; ');
  }
  let port = typeof e.port === 'number' ? e.port : undefined;
  if (port === undefined && Array.isArray(e.errors)) {
    const first = e.errors.find((x: unknown) => x && typeof (x as { port?: unknown }).port === 'number') as { port: number } | undefined;
    port = first?.port;
  }
  const code = typeof e.code === 'string' && e.code ? e.code : typeof e.name === 'string' && e.name ? e.name : 'Error';
  return { type: code.slice(0, 64), message: message ? opensslReason(message) : undefined, port };
}

function withPort(call: Call, port: number | undefined): void {
  if (call.host === undefined || port === undefined || !Number.isInteger(port) || port <= 0) return;
  if (port !== call.defaultPort) call.server = `${bracket(call.host)}:${port}`;
  call.host = undefined;
}

/** Writes the call's one record, in the call's context. Never throws. */
function finish(call: Call, failure?: Failure): void {
  if (call.done) return;
  call.done = true;
  if (call.timer) clearTimeout(call.timer);
  call.timer = undefined;
  try {
    withPort(call, failure?.port);
    const fields: Record<string, unknown> = { 'server.address': call.server };
    if (call.path) fields['url.path'] = call.path;
    if (call.status !== undefined) fields['http.response.status_code'] = call.status;
    if (failure?.type) fields['error.type'] = failure.type;
    let message = failure?.message;
    if (call.status !== undefined && call.status >= 500) {
      const body = call.size > 0 ? bodyText(Buffer.concat(call.chunks), call.encoding) : undefined;
      message = body ?? (call.statusText?.trim() || message);
    }
    call.chunks = [];
    if (message) fields['error.message'] = message;
    // `own` marks the record as auditrace's own (as the access and TLS records are).
    context.with(call.ctx, () => getAuditor().emit('backend_call_fail', fields, { outcome: 'failure', severity: 'WARN' }));
  } catch {
    // auditing never breaks the call
  }
}

function armTimer(call: Call): void {
  call.timer = setTimeout(() => finish(call), BODY_WAIT_MS);
  call.timer.unref();
}

// ---------------------------------------------------------------------------------------------
// http / https (instrumentation-http hooks)

const httpCalls = new WeakMap<object, Call>();

type ClientRequestLike = ClientRequest & { host?: string; protocol?: string; socketPath?: string };

function httpServerAddress(req: ClientRequestLike): { server: string; host?: string; defaultPort?: number } {
  const defaultPort = req.protocol === 'https:' ? 443 : 80;
  if (typeof req.socketPath === 'string' && req.socketPath) return { server: req.socketPath.slice(0, 256) };
  const host = String(req.host ?? 'localhost').replace(/^\[|\]$/g, '');
  // Node writes the Host header as host[:port], the port left out when it is the default.
  const header = req.getHeader('host');
  if (typeof header === 'string') {
    const m = /^(\[[^\]]+\]|[^:]+)(?::(\d+))?$/.exec(header.trim());
    if (m && m[1]!.replace(/^\[|\]$/g, '').toLowerCase() === host.toLowerCase()) {
      return { server: m[2] && Number(m[2]) !== defaultPort ? `${bracket(host)}:${m[2]}` : bracket(host) };
    }
  }
  return { server: bracket(host), host, defaultPort };
}

/**
 * instrumentation-http's client `requestHook`, called in the call's context (its client span
 * inside the incoming request's context).
 */
export function watchHttpCall(request: ClientRequest): void {
  try {
    const ctx = context.active();
    if (isSuppressed(ctx)) return;
    const req = request as ClientRequestLike;
    const where = httpServerAddress(req);
    const call = newCall(ctx, where.server, pathOnly(req.path));
    call.host = where.host;
    call.defaultPort = where.defaultPort;
    httpCalls.set(req, call);
    req.on(errorMonitor, (err: unknown) => {
      if (call.done) return;
      if (isOwnAbort(err)) {
        if (call.status !== undefined && call.status >= 500) finish(call);
        else call.done = true;
        return;
      }
      const f = describe(err);
      if (f.port === undefined) f.port = remotePort(req.socket);
      finish(call, f);
    });
  } catch {
    // never break the call
  }
}

function remotePort(socket: unknown): number | undefined {
  try {
    const p = (socket as { remotePort?: unknown } | null | undefined)?.remotePort;
    return typeof p === 'number' ? p : undefined;
  } catch {
    return undefined;
  }
}

/**
 * instrumentation-http's client `responseHook`, called before the application's `'response'`
 * listeners. A 5xx body is observed through the response's own `push`; the record is written when
 * the body has ended (or was cut off), or after BODY_WAIT_MS if it never ends.
 */
export function watchHttpResponse(response: IncomingMessage): void {
  try {
    const req = (response as IncomingMessage & { req?: object }).req;
    const call = req ? httpCalls.get(req) : undefined;
    if (!call || call.done) return;
    const status = response.statusCode;
    call.status = typeof status === 'number' ? status : undefined;
    withPort(call, remotePort(response.socket));
    if (call.status !== undefined && call.status >= 500) {
      call.statusText = response.statusMessage;
      const enc = response.headers['content-encoding'];
      call.encoding = typeof enc === 'string' ? enc : undefined;
      const target = response as unknown as { push: (chunk: unknown, encoding?: BufferEncoding) => boolean };
      const push = target.push;
      target.push = function (this: unknown, chunk: unknown, ...rest: unknown[]): boolean {
        if (!call.done) {
          if (chunk === null) finish(call);
          else collect(call, chunk);
        }
        return Reflect.apply(push, this, [chunk, ...rest]) as boolean;
      };
      armTimer(call);
    }
    // Closed before the body was complete: the backend (or the network) cut the response off.
    response.once('close', () => {
      if (call.done) return;
      const errored = (response as IncomingMessage & { errored?: unknown }).errored;
      const cut = !response.complete && (response.aborted || (Boolean(errored) && !isOwnAbort(errored)));
      if (cut) finish(call, describe(errored ?? Object.assign(new Error('aborted'), { code: 'ECONNRESET' })));
      else if (call.status !== undefined && call.status >= 500) finish(call);
      else call.done = true;
    });
  } catch {
    // never break the call
  }
}

// ---------------------------------------------------------------------------------------------
// fetch / undici (diagnostics channels)

interface UndiciRequest { origin?: unknown; path?: unknown; method?: unknown }
interface UndiciResponse { statusCode?: unknown; statusText?: unknown; headers?: unknown }

const CHANNELS = {
  create: 'undici:request:create',
  headers: 'undici:request:headers',
  chunk: 'undici:request:bodyChunkReceived',
  trailers: 'undici:request:trailers',
  error: 'undici:request:error',
} as const;

function undiciServer(origin: unknown): string | undefined {
  try {
    const u = new URL(String(origin));
    return u.host || undefined;
  } catch {
    return undefined;
  }
}

function headerValue(headers: unknown, name: string): string | undefined {
  if (!Array.isArray(headers)) return undefined;
  for (let i = 0; i + 1 < headers.length; i += 2) {
    if (String(headers[i]).toLowerCase() === name) return String(headers[i + 1]);
  }
  return undefined;
}

let fetchInstalled: (() => void) | undefined;

/**
 * Subscribes to undici's diagnostics channels (fetch and the undici package). Idempotent;
 * returns an unsubscribe for tests.
 */
export function auditFetchCalls(): () => void {
  if (fetchInstalled) return fetchInstalled;
  const dc = require('node:diagnostics_channel') as typeof import('node:diagnostics_channel');
  const calls = new WeakMap<object, Call>();
  const get = (request: unknown) => (request !== null && typeof request === 'object' ? calls.get(request) : undefined);

  const handlers: Record<string, (message: unknown) => void> = {
    [CHANNELS.create]: (m) => {
      try {
        const request = (m as { request?: UndiciRequest }).request;
        if (!request || typeof request !== 'object') return;
        const ctx = context.active();
        if (isSuppressed(ctx) || request.method === 'CONNECT') return;
        const server = undiciServer(request.origin);
        if (!server) return;
        calls.set(request, newCall(ctx, server, pathOnly(request.path)));
      } catch {
        // never break the call
      }
    },
    [CHANNELS.headers]: (m) => {
      const { request, response } = m as { request?: unknown; response?: UndiciResponse };
      const call = get(request);
      if (!call || call.done || !response) return;
      call.status = typeof response.statusCode === 'number' ? response.statusCode : undefined;
      if (call.status !== undefined && call.status >= 500) {
        call.statusText = typeof response.statusText === 'string' ? response.statusText : undefined;
        call.encoding = headerValue(response.headers, 'content-encoding');
        armTimer(call);
      } else {
        // Only a failure to finish the body matters now; nothing else is kept.
        call.chunks = [];
      }
    },
    [CHANNELS.chunk]: (m) => {
      const { request, chunk } = m as { request?: unknown; chunk?: unknown };
      const call = get(request);
      if (call) collect(call, chunk);
    },
    [CHANNELS.trailers]: (m) => {
      const request = (m as { request?: unknown }).request;
      const call = get(request);
      if (!call) return;
      calls.delete(request as object);
      if (call.status !== undefined && call.status >= 500) finish(call);
      else call.done = true;
    },
    [CHANNELS.error]: (m) => {
      const { request, error } = m as { request?: unknown; error?: unknown };
      const call = get(request);
      if (!call) return;
      calls.delete(request as object);
      if (isOwnAbort(error)) {
        // The 5xx was already received: that is the failure, whatever the app did next.
        if (call.status !== undefined && call.status >= 500) finish(call);
        else call.done = true;
        return;
      }
      finish(call, describe(error));
    },
  };
  for (const [name, fn] of Object.entries(handlers)) dc.subscribe(name, fn);
  const undo = () => {
    for (const [name, fn] of Object.entries(handlers)) dc.unsubscribe(name, fn);
    if (fetchInstalled === undo) fetchInstalled = undefined;
  };
  fetchInstalled = undo;
  return undo;
}
