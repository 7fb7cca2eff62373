import { context, propagation, trace } from '@opentelemetry/api';
import { getRPCMetadata } from '@opentelemetry/core';
import type { Context, TextMapGetter, TextMapPropagator, TextMapSetter } from '@opentelemetry/api';
import type { IncomingMessage, ClientRequest, ServerResponse } from 'node:http';
import { subscribe } from 'node:diagnostics_channel';
import { isIP } from 'node:net';
import { getAuditor } from './audit/auditor';
import { RateLimitedWarnings } from './diagnostics';
import { resolveClientAddress } from './client-address';
import { LINKED_ROOT } from './linked-context';
import { privateSlot } from './private-slot';
import type { EdgeConfig } from './config';
import { requestFromContext, setRequestContext } from './request-context';
import type { RequestContext } from './request-context';
import { decideRequestId } from './request-id';
import { compileTrust } from './trust';
import { redactPathParams, redactQuery } from './url-redaction';
import type { Trust } from './trust';

const accessWarnings = new RateLimitedWarnings(60_000);

/**
 * Edge policy: nothing that arrives from outside is believed by default. For each incoming HTTP
 * request we decide once — from the socket peer and the trusted-proxy list — the real client
 * address, the request id and whether the caller's trace context may be continued. The decision
 * reaches the handler through the OTel context (our propagator's `extract`), the server span
 * through http-server.ts, and the next service through `inject`.
 */
export interface Decision {
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
}

// Kept on the request's headers object: it is the carrier http-server.ts hands to
// `propagation.extract`, and it lives exactly as long as the request. Not a WeakMap: an entry per
// request made every scavenge walk an ephemeron table of short-lived keys (measured: ≈ 10 µs less
// CPU per request at 4,000 req/s without it). A private slot (lib/private-slot.ts): invisible to
// the application's view of its headers.
const decisions = privateSlot<Decision>();
const fallback = new WeakMap<object, Decision>();

function decisionOf(carrier: object): Decision | undefined {
  return decisions.get(carrier) ?? fallback.get(carrier);
}

function keepDecision(carrier: object, d: Decision): void {
  try {
    decisions.set(carrier, d);
  } catch {
    fallback.set(carrier, d); // an object that takes no new private field (non-extensible, where the engine refuses)
  }
}

/** A client's user agent, cut to this in the access record and on the server span. */
export const USER_AGENT_MAX = 256;

export class Edge {
  readonly trust: Trust;
  private readonly proxySourceOf: (socket: object) => { address: string } | undefined;

  constructor(readonly config: Readonly<EdgeConfig>, proxySourceOf?: (socket: object) => { address: string } | undefined) {
    this.trust = compileTrust(config.trustedProxies);
    this.proxySourceOf = proxySourceOf ?? (() => undefined);
  }

  /** Runs before the server span starts (http-server.ts); once per request. */
  decide(req: IncomingMessage): Decision {
    const existing = decisionOf(req.headers);
    if (existing) return existing;
    const socket = req.socket ?? {};
    const resolution = resolveClientAddress({
      socketAddress: (socket as { remoteAddress?: string }).remoteAddress,
      proxySource: this.proxySourceOf(socket)?.address,
      proxyProtocol: this.config.proxyProtocol,
      xForwardedFor: req.headers['x-forwarded-for'],
      forwarded: req.headers.forwarded,
      header: this.config.forwardedHeader,
      trust: this.trust,
    });
    const id = decideRequestId(req.headers[this.config.requestIdHeader], resolution.peerTrusted);
    // Keys set one by one, not spread in: a spread of a literal was a CopyDataProperties call per request.
    const request: Decision['request'] = { requestId: id.requestId };
    if (resolution.clientAddress) request.clientAddress = resolution.clientAddress;
    if (resolution.peerAddress) request.peerAddress = resolution.peerAddress;
    const decision: Decision = {
      request,
      peerTrusted: resolution.peerTrusted,
      untrustedRequestId: id.untrusted,
      requestIdReplaced: id.replaced,
      startNs: process.hrtime.bigint(),
      endNs: undefined,
      endTime: undefined,
      path: redactPathParams(pathOnly(req.url)),
    };
    keepDecision(req.headers, decision);
    return decision;
  }

  /** The edge's attributes for the server span (http-server.ts), set at its start so a sampler sees them too. */
  spanAttributes(req: IncomingMessage, d: Decision, attrs: Record<string, string | number>): void {
    attrs['request.id'] = d.request.requestId;
    if (d.request.clientAddress) attrs['client.address'] = d.request.clientAddress;
    if (d.request.peerAddress) attrs['network.peer.address'] = d.request.peerAddress;
    if (d.untrustedRequestId !== undefined) attrs['request.id.untrusted'] = d.untrustedRequestId;
    if (d.requestIdReplaced) attrs['request.id.replaced'] = d.requestIdReplaced;
    // Query values can carry tokens and personal data: keep the keys, never the values.
    const url = req.url ?? '';
    const q = url.indexOf('?');
    if (q >= 0) {
      const hash = url.indexOf('#', q);
      attrs['url.query'] = redactQuery(url.slice(q + 1, hash >= 0 ? hash : undefined));
    }
  }

  /** As the server starts handling the request: the request id goes back to the caller. */
  onServerResponse(res: ServerResponse, d: Decision): void {
    if (this.config.requestIdResponseHeader && !res.headersSent) res.setHeader(this.config.requestIdHeader, d.request.requestId);
  }

  /**
   * The response ended, closed unended or its handler threw (http-server.ts): its access record.
   * `status` is undefined when no response was sent; `errorType` says why a response did not end
   * normally (`client_aborted`, the name of a thrown error) or is its 5xx status. `route`: the
   * template a framework matched. By default (AUDITRACE_ACCESS_RECORD_WRITE=turn) the record is
   * written at the end of this event-loop turn with the turn's other access records.
   */
  recordResponse(req: IncomingMessage, res: ServerResponse, d: Decision, ctx: Context, route: string | undefined,
    status: number | undefined, errorType: string | undefined, threw: boolean): void {
    if (!this.config.accessRecords) return;
    const resSize = contentLength(res.getHeader('content-length'));
    const write = (): void => {
      try {
        this.recordRequest(req, d, ctx, route, status, resSize, errorType, threw);
      } catch (err) {
        accessWarnings.warn('access-record', `could not write an access record: ${(err as Error)?.message ?? String(err)}`);
      }
    };
    if (this.config.accessRecordWrite === 'turn') getAuditor().later(write);
    else write();
  }

  private recordRequest(req: IncomingMessage, d: Decision, ctx: Context, route: string | undefined,
    status: number | undefined, resSize: number | undefined, errorType: string | undefined, threw: boolean): void {
    const auditor = getAuditor();
    const path = d.path;
    const ua = req.headers['user-agent'];
    // A 5xx status says itself; the record names only what the status does not tell.
    const notStatus = errorType !== undefined && errorType !== String(status) ? errorType : undefined;
    const failed = notStatus !== undefined || status === undefined || status >= 400;
    const durationNs = Number((d.endNs ?? process.hrtime.bigint()) - d.startNs);
    auditor.access({
      method: String(req.method ?? 'GET').slice(0, 32),
      path,
      duration: durationNs / 1e9,
      durationNs,
      peer: d.request.peerAddress ?? 'unknown',
      route,
      status,
      requestBodySize: contentLength(req.headers['content-length']),
      responseBodySize: resSize,
      userAgent: typeof ua === 'string' ? ua.slice(0, USER_AGENT_MAX) : undefined,
      untrustedRequestId: d.untrustedRequestId,
      requestIdReplaced: d.requestIdReplaced,
      untrustedParent: d.untrustedParent?.traceId,
      errorType: notStatus,
    }, {
      outcome: failed ? 'failure' : 'success',
      severity: threw || (status !== undefined && status >= 500) ? 'ERROR' : failed ? 'WARN' : 'INFO',
      time: d.endTime, // undefined (client gone before res.end()): the auditor takes the time now
      context: ctx,
    });
    if ((status === 401 || status === 403) && !d.request.authFailureRecorded) {
      if (status === 401) auditor.emit('authn_fail', { 'url.path': path, ...(route ? { 'http.route': route } : {}) }, { context: ctx });
      else auditor.emit('authz_fail', { 'authz.action': `${String(req.method ?? 'GET').slice(0, 32)} ${route ?? path}`, reason: 'http_403' }, { context: ctx });
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
      const remote = trace.getSpanContext(this.inner.extract(LINKED_ROOT, carrier, getter));
      if (remote) d.untrustedParent = remote;
    }
    return setRequestContext(out, d.request);
  }

  fields(): string[] {
    return [...(this.inner?.fields() ?? []), this.edge.config.requestIdHeader];
  }
}

const requestOf = requestFromContext;

/**
 * The path of a request-target: without query or fragment, and for the absolute form a proxy
 * client sends (`http://user:pass@host/p`) without scheme, credentials and host. The authority
 * (`CONNECT host:443`) and asterisk (`OPTIONS *`) forms have no path and are kept.
 */
export function pathOnly(url: string | undefined): string {
  let u = url ?? '/';
  if (u.charCodeAt(0) !== 47 /* / */) {
    const scheme = u.indexOf('://');
    if (scheme > 0) {
      const slash = u.indexOf('/', scheme + 3);
      u = slash >= 0 ? u.slice(slash) : '/';
    }
  }
  // Two scans of the string rather than a regular expression's search, run once per request.
  const q = u.indexOf('?');
  const h = u.indexOf('#');
  const end = q < 0 ? h : h < 0 ? q : Math.min(q, h);
  return (end >= 0 ? u.slice(0, end) : u).slice(0, 2048);
}

function contentLength(v: unknown): number | undefined {
  const n = typeof v === 'number' ? v : typeof v === 'string' && /^\d{1,15}$/.test(v) ? Number(v) : undefined;
  return n !== undefined && Number.isSafeInteger(n) ? n : undefined;
}


/** Express keeps the matched route on the request after routing. */
let watchingRoutes = false;

/**
 * Fastify (>= 4.27) publishes each matched route on the `tracing:fastify.request.handler` channel
 * (there is no Fastify instrumentation among the upstream ones). The template goes where Express's
 * instrumentation puts its own: the request's RPC metadata, from which http-server.ts names
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

export function expressRoute(req: IncomingMessage): string | undefined {
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
