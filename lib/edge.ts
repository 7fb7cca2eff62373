import { context, propagation, trace, ROOT_CONTEXT } from '@opentelemetry/api';
import { getRPCMetadata } from '@opentelemetry/core';
import type { Context, Span, TextMapGetter, TextMapPropagator, TextMapSetter } from '@opentelemetry/api';
import { ServerResponse } from 'node:http';
import type { IncomingMessage, ClientRequest } from 'node:http';
import { subscribe } from 'node:diagnostics_channel';
import { isIP } from 'node:net';
import { getAuditor } from './audit/auditor';
import { rfc3339Now } from './audit/ids';
import { RateLimitedWarnings } from './diagnostics';
import { resolveClientAddress } from './client-address';
import type { EdgeConfig } from './config';
import { requestFromContext, setRequestContext } from './request-context';
import type { RequestContext } from './request-context';
import { decideRequestId } from './request-id';
import { compileTrust } from './trust';
import type { Trust } from './trust';

const accessWarnings = new RateLimitedWarnings(60_000);

/**
 * Edge policy: nothing that arrives from outside is believed by default. For each incoming HTTP
 * request we decide once — from the socket peer and the trusted-proxy list — the real client
 * address, the request id and whether the caller's trace context may be continued. The decision
 * reaches the handler through the OTel context (our propagator's `extract`), the server span
 * through the http instrumentation's hooks, and the next service through `inject`.
 */
interface Decision {
  request: RequestContext & { authFailureRecorded?: boolean };
  peerTrusted: boolean;
  untrustedRequestId?: string | undefined;
  requestIdReplaced?: string | undefined;
  untrustedParent?: import('@opentelemetry/api').SpanContext | undefined;
  startNs: bigint;
  /** The route template a framework reported (Fastify's diagnostics channel). */
  route?: string | undefined;
  /** When the app called res.end() (monotonic, and as the record's time). */
  endNs: bigint | undefined;
  endTime: string | undefined;
  /** Taken before any router rewrites req.url (Express strips mount paths). */
  path: string;
  /** The response's `end` before `endRecorded` replaced it, and the access record to take then. */
  end: ((...a: unknown[]) => unknown) | undefined;
  record: (() => void) | undefined;
}

// Kept on the request's headers object: it is the carrier the http instrumentation hands to
// `propagation.extract`, and it lives exactly as long as the request. A non-enumerable symbol
// property, not a WeakMap: a WeakMap entry per request made every scavenge walk an ephemeron table
// of short-lived keys (measured: ≈ 10 µs less CPU per request at 4,000 req/s without it). Spread,
// Object.keys, for…in, JSON and structuredClone do not see it.
const DECISION = Symbol('auditrace.edge.decision');
const fallback = new WeakMap<object, Decision>();

function decisionOf(carrier: object): Decision | undefined {
  try {
    return (carrier as { [DECISION]?: Decision })[DECISION] ?? fallback.get(carrier);
  } catch {
    return undefined; // a Proxy carrier whose get trap throws: it was never a request's headers
  }
}

function keepDecision(carrier: object, d: Decision): void {
  try {
    Object.defineProperty(carrier, DECISION, { value: d, enumerable: false, configurable: true, writable: false });
  } catch {
    fallback.set(carrier, d); // a frozen or exotic headers object
  }
}

const USER_AGENT_MAX = 256;

// The access record of a response that has not ended yet, on the request's context object, where
// the http instrumentation's close and error paths can reach it. Not enumerable: handlers see the
// same object through `currentRequest()`.
const PENDING = Symbol('auditrace.access.pending');
type Pending = (() => void) | undefined;

function pendingOf(request: RequestContext | undefined): Pending {
  return request ? (request as { [PENDING]?: Pending })[PENDING] : undefined;
}

function setPending(request: RequestContext, record: Pending): void {
  const r = request as { [PENDING]?: Pending };
  if (Object.prototype.hasOwnProperty.call(r, PENDING)) r[PENDING] = record;
  else if (record !== undefined) Object.defineProperty(r, PENDING, { value: record, enumerable: false, configurable: true, writable: true });
}

// The response's own `end` is one function for every response, which finds the request's decision
// on the response: a closure per response installed as `res.end` made V8 keep each request's
// objects (the request, its context, its span) through the next scavenge and promote them to the
// old generation. Measured at 1,000 req/s on the hello server for 4 s (--trace-gc-nvp): 25–30 MB
// promoted with the closure, 10 MB with the same closure kept on the response but not called as
// its `end`, and 10 MB with access records off.
const ACCESS = Symbol('auditrace.access.response');
const originalEnd = ServerResponse.prototype.end as unknown as (...a: unknown[]) => unknown;

function endRecorded(this: ServerResponse, ...args: unknown[]): unknown {
  const d = (this as { [ACCESS]?: Decision })[ACCESS];
  // Only without a decision (the function was copied onto another object) is there no record to take.
  if (d === undefined) return originalEnd.apply(this, args);
  if (d.endNs === undefined) {
    d.endNs = process.hrtime.bigint();
    d.endTime = rfc3339Now();
  }
  const previous = d.end !== undefined && d.end !== endRecorded ? d.end : originalEnd;
  const returned = previous.apply(this, args);
  if (this.writableEnded) d.record?.();
  return returned;
}

export class Edge {
  readonly trust: Trust;
  private readonly proxySourceOf: (socket: object) => { address: string } | undefined;

  constructor(readonly config: Readonly<EdgeConfig>, proxySourceOf?: (socket: object) => { address: string } | undefined) {
    this.trust = compileTrust(config.trustedProxies);
    this.proxySourceOf = proxySourceOf ?? (() => undefined);
  }

  /** Runs before the server span starts (instrumentation-http's startIncomingSpanHook). */
  decide(req: IncomingMessage): Decision {
    const existing = decisionOf(req.headers);
    if (existing) return existing;
    const socket = req.socket ?? {};
    const resolution = resolveClientAddress({
      socketAddress: (socket as { remoteAddress?: string }).remoteAddress,
      proxySource: this.proxySourceOf(socket)?.address,
      xForwardedFor: req.headers['x-forwarded-for'],
      forwarded: req.headers.forwarded,
      header: this.config.forwardedHeader,
      trust: this.trust,
    });
    const id = decideRequestId(req.headers[this.config.requestIdHeader], resolution.peerTrusted);
    const decision: Decision = {
      request: {
        requestId: id.requestId,
        ...(resolution.clientAddress ? { clientAddress: resolution.clientAddress } : {}),
        ...(resolution.peerAddress ? { peerAddress: resolution.peerAddress } : {}),
      },
      peerTrusted: resolution.peerTrusted,
      untrustedRequestId: id.untrusted,
      requestIdReplaced: id.replaced,
      startNs: process.hrtime.bigint(),
      endNs: undefined,
      endTime: undefined,
      path: pathOnly(req.url),
      end: undefined,
      record: undefined,
    };
    keepDecision(req.headers, decision);
    return decision;
  }

  /** Attributes for the server span, set at its start so a sampler sees them too. */
  spanAttributes(req: IncomingMessage): Record<string, string> {
    const d = this.decide(req);
    const attrs: Record<string, string> = { 'request.id': d.request.requestId };
    if (d.request.clientAddress) attrs['client.address'] = d.request.clientAddress;
    if (d.request.peerAddress) attrs['network.peer.address'] = d.request.peerAddress;
    if (d.untrustedRequestId !== undefined) attrs['request.id.untrusted'] = d.untrustedRequestId;
    if (d.requestIdReplaced) attrs['request.id.replaced'] = d.requestIdReplaced;
    // Query values can carry tokens and personal data: keep the keys, never the values.
    const q = (req.url ?? '').indexOf('?');
    if (q >= 0) attrs['url.query'] = redactQuery((req.url ?? '').slice(q + 1));
    return attrs;
  }

  /** Inside the server span's context (instrumentation-http's requestHook). */
  onServerSpan(span: Span, req: IncomingMessage): void {
    const d = decisionOf(req.headers);
    if (d?.untrustedParent) span.addLink({ context: d.untrustedParent, attributes: { 'auditrace.link': 'untrusted_parent' } });
  }

  /**
   * Set once the http instrumentation tells us of every server response that closes without
   * having ended (`watchResponsesOf`): then no listener is added per response. A listener on a
   * response goes through the context manager's bound `on` (a wrapper closure, a WeakMap per event
   * and an entry in it, which the garbage collector walks as an ephemeron).
   */
  private closeHooked = false;

  /**
   * Makes `instrumentation` (instrumentation-http) report responses that close unended. Its
   * `applyCustomAttributesOnSpan` option (set in sdk.ts) covers a close; its `_onServerResponseError`
   * a response that failed before closing (then the close is not reported). Without that method
   * (another version) responses keep their own 'close' listener.
   */
  watchResponsesOf(instrumentation: object): void {
    const i = instrumentation as { _onServerResponseError?: (...a: unknown[]) => unknown };
    const onError = i._onServerResponseError;
    if (typeof onError !== 'function') return;
    i._onServerResponseError = function onServerResponseError(this: unknown, ...args: unknown[]) {
      try {
        pendingOf(requestFromContext(context.active()))?.();
      } catch {
        // the access record's own failures are counted where it is written
      }
      return onError.apply(this, args);
    };
    this.closeHooked = true;
  }

  /** A server response closed (instrumentation-http's `applyCustomAttributesOnSpan`). */
  onServerResponseClosed(req: IncomingMessage): void {
    const d = decisionOf(req.headers);
    if (d) pendingOf(d.request)?.();
  }

  /** Inside the server span's context (instrumentation-http's responseHook). */
  onServerResponse(res: ServerResponse): void {
    const req = res.req;
    const d = req ? decisionOf(req.headers) : undefined;
    if (!req || !d) return;
    if (this.config.requestIdResponseHeader && !res.headersSent) res.setHeader(this.config.requestIdHeader, d.request.requestId);
    if (!this.config.accessRecords) return;
    // A server that hands its request to another (`inner.emit('request', req, res)`) reaches this
    // twice for one response: one record, taken by the first wrapper. (A second wrapper would find
    // itself as the response's previous `end` and call itself for ever.)
    if (Object.prototype.hasOwnProperty.call(res, ACCESS)) return;
    const ctx = context.active();
    const rpc = getRPCMetadata(ctx) as { route?: string } | undefined;
    let recorded = false;
    const record = (): void => {
      if (recorded) return;
      recorded = true;
      d.record = undefined;
      setPending(d.request, undefined);
      // What the response was is taken now; by default (AUDITRACE_ACCESS_RECORD_WRITE=turn) the
      // record is written at the end of this event-loop turn with the turn's other access records.
      const status = res.headersSent || res.writableFinished ? res.statusCode : undefined;
      const resSize = contentLength(res.getHeader('content-length'));
      const write = (): void => {
        try {
          context.with(ctx, () => this.recordRequest(req, d, rpc?.route, status, resSize));
        } catch (err) {
          accessWarnings.warn('access-record', `could not write an access record: ${(err as Error)?.message ?? String(err)}`);
        }
      };
      if (this.config.accessRecordWrite === 'turn') getAuditor().later(write);
      else write();
    };
    // The response's end is when the app calls res.end(), before any byte is handed to the socket:
    // the caller cannot have its answer earlier, so a callee's interval always lies inside its
    // caller's, however late either process runs afterwards (a busy machine preempts the writer as
    // soon as the write wakes the reader). The record is taken as end() returns, its bytes handed
    // to the socket (`endRecorded`); a response that closes without having ended (the client went
    // away) is recorded as it closes.
    d.end = res.end as unknown as (...a: unknown[]) => unknown;
    d.record = record;
    Object.defineProperty(res, ACCESS, { value: d, enumerable: false, configurable: true, writable: true });
    res.end = endRecorded as ServerResponse['end'];
    if (this.closeHooked) setPending(d.request, record);
    else res.once('close', record);
  }

  private recordRequest(req: IncomingMessage, d: Decision, route: string | undefined,
    status: number | undefined, resSize: number | undefined): void {
    const auditor = getAuditor();
    const path = d.path;
    const ua = req.headers['user-agent'];
    const fields: Record<string, unknown> = {
      'http.request.method': String(req.method ?? 'GET').slice(0, 32),
      'url.path': path,
      'http.server.request.duration': Number((d.endNs ?? process.hrtime.bigint()) - d.startNs) / 1e9,
      'network.peer.address': d.request.peerAddress ?? 'unknown',
    };
    const fullRoute = route ?? d.route ?? expressRoute(req);
    if (fullRoute) fields['http.route'] = fullRoute;
    if (status !== undefined) fields['http.response.status_code'] = status;
    const reqSize = contentLength(req.headers['content-length']);
    if (reqSize !== undefined) fields['http.request.body.size'] = reqSize;
    if (resSize !== undefined) fields['http.response.body.size'] = resSize;
    if (typeof ua === 'string') fields['user_agent.original'] = ua.slice(0, USER_AGENT_MAX);
    if (d.untrustedRequestId !== undefined) fields['request.id.untrusted'] = d.untrustedRequestId;
    if (d.requestIdReplaced) fields['request.id.replaced'] = d.requestIdReplaced;
    if (d.untrustedParent) fields['trace.untrusted_parent'] = d.untrustedParent.traceId;
    if (status === undefined) fields['error.type'] = 'client_aborted';
    const failed = status === undefined || status >= 400;
    auditor.emit('http_request', fields, {
      outcome: failed ? 'failure' : 'success',
      severity: status !== undefined && status >= 500 ? 'ERROR' : failed ? 'WARN' : 'INFO',
      time: d.endTime, // undefined (client gone before res.end()): the auditor takes the time now
    });
    if ((status === 401 || status === 403) && !d.request.authFailureRecorded) {
      if (status === 401) auditor.emit('authn_fail', { 'url.path': path, ...(fullRoute ? { 'http.route': fullRoute } : {}) }, {});
      else auditor.emit('authz_fail', { 'authz.action': `${String(req.method ?? 'GET').slice(0, 32)} ${fullRoute ?? path}`, reason: 'http_403' }, {});
    }
  }

  /** The propagator that applies the decision: wraps the configured one (or none). */
  propagator(inner: TextMapPropagator | undefined): TextMapPropagator {
    return new EdgePropagator(inner, this);
  }

  /** Outgoing request: whether the original client address may travel to this destination. */
  mayForwardClientTo(host: string | undefined): boolean {
    switch (this.config.forwardClientAddress) {
      case 'always': return true;
      case 'never': return false;
      case 'internal': return isInternalHost(host);
    }
  }

  decisionFor(carrier: unknown): Decision | undefined {
    return carrier !== null && typeof carrier === 'object' ? decisionOf(carrier) : undefined;
  }
}

class EdgePropagator implements TextMapPropagator {
  constructor(private readonly inner: TextMapPropagator | undefined, private readonly edge: Edge) {}

  inject(ctx: Context, carrier: unknown, setter: TextMapSetter): void {
    this.inner?.inject(ctx, carrier, setter);
    const request = requestOf(ctx);
    if (request) setter.set(carrier, this.edge.config.requestIdHeader, request.requestId);
  }

  extract(ctx: Context, carrier: unknown, getter: TextMapGetter): Context {
    const d = this.edge.decisionFor(carrier);
    if (!d) return this.inner ? this.inner.extract(ctx, carrier, getter) : ctx;
    let out = ctx;
    if (d.peerTrusted) {
      if (this.inner) out = this.inner.extract(ctx, carrier, getter);
    } else if (this.inner) {
      // Not continued: a new root trace starts. The caller's context is kept only as a link, so
      // a forged trace id cannot join or flood a real trace, and sampled=00 cannot hide a request.
      const remote = trace.getSpanContext(this.inner.extract(ROOT_CONTEXT, carrier, getter));
      if (remote) d.untrustedParent = remote;
    }
    return setRequestContext(out, d.request);
  }

  fields(): string[] {
    return [...(this.inner?.fields() ?? []), this.edge.config.requestIdHeader];
  }
}

const requestOf = requestFromContext;

function pathOnly(url: string | undefined): string {
  const u = url ?? '/';
  const q = u.indexOf('?');
  return (q >= 0 ? u.slice(0, q) : u).slice(0, 2048);
}

function contentLength(v: unknown): number | undefined {
  const n = typeof v === 'number' ? v : typeof v === 'string' && /^\d{1,15}$/.test(v) ? Number(v) : undefined;
  return n !== undefined && Number.isSafeInteger(n) ? n : undefined;
}

function redactQuery(query: string): string {
  return query.split('&').filter(Boolean).map((p) => {
    const eq = p.indexOf('=');
    return eq >= 0 ? `${p.slice(0, eq)}=REDACTED` : p;
  }).join('&').slice(0, 1024);
}

/** Express keeps the matched route on the request after routing. */
let watchingRoutes = false;

/**
 * Fastify (>= 4.27) publishes each matched route on the `tracing:fastify.request.handler` channel
 * (there is no Fastify instrumentation among the upstream ones). The template goes where Express's
 * instrumentation puts its own: the request's RPC metadata, from which instrumentation-http names
 * the server span and sets its `http.route`, and our access record reads it.
 */
export function watchFrameworkRoutes(): void {
  if (watchingRoutes) return;
  watchingRoutes = true;
  subscribe('tracing:fastify.request.handler:start', (message) => {
    try {
      const m = message as { request?: { raw?: IncomingMessage }; route?: { url?: unknown } };
      const url = m.route?.url;
      if (typeof url !== 'string' || !url) return;
      const rpc = getRPCMetadata(context.active()) as { route?: string } | undefined;
      if (rpc && rpc.route === undefined) rpc.route = url;
      const headers = m.request?.raw?.headers;
      const d = headers ? decisionOf(headers) : undefined;
      if (d && d.route === undefined) d.route = url;
    } catch {
      // a message of another shape: no route then
    }
  });
}

function expressRoute(req: IncomingMessage): string | undefined {
  const r = req as IncomingMessage & { route?: { path?: unknown }; baseUrl?: unknown };
  if (typeof r.route?.path !== 'string') return undefined;
  return `${typeof r.baseUrl === 'string' ? r.baseUrl : ''}${r.route.path}`;
}

const INTERNAL_SUFFIXES = ['.svc', '.svc.cluster.local', '.cluster.local', '.internal', '.local', '.localhost'];
const internalTrust = compileTrust(['loopback', 'private', 'linklocal']);

export function isInternalHost(host: string | undefined): boolean {
  if (!host) return false;
  const h = host.replace(/^\[|\]$/g, '').toLowerCase();
  if (isIP(h)) return internalTrust(h);
  // A dotless all-number (or hex) host is an IPv4 address in disguise (`134744072` is 8.8.8.8).
  if (/^(0x[0-9a-f]+|\d+)$/.test(h)) return false;
  if (h === 'localhost' || !h.includes('.')) return true;
  return INTERNAL_SUFFIXES.some((s) => h.endsWith(s));
}

/** Outgoing `http`/`https`: the client address travels as X-Forwarded-For to internal services. */
export function onOutgoingHttpRequest(edge: Edge, req: ClientRequest): void {
  const request = requestOf(context.active());
  if (!request?.clientAddress || req.headersSent) return;
  if (!edge.mayForwardClientTo(req.host)) return;
  req.setHeader('x-forwarded-for', request.clientAddress);
}

/** Outgoing `fetch`/undici: same rule. */
export function onOutgoingUndiciRequest(edge: Edge, request: { origin?: string | URL; addHeader?: (k: string, v: string) => unknown }): void {
  const rc = requestOf(context.active());
  if (!rc?.clientAddress || typeof request.addHeader !== 'function') return;
  let host: string | undefined;
  try {
    host = new URL(String(request.origin)).hostname;
  } catch {
    return;
  }
  if (edge.mayForwardClientTo(host)) request.addHeader('x-forwarded-for', rc.clientAddress);
}


/** Installs the propagator; the instrumentation hooks are wired in sdk.ts. */
export function installEdgePropagator(edge: Edge, inner: TextMapPropagator | undefined): void {
  propagation.setGlobalPropagator(edge.propagator(inner));
}
