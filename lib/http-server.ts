import { context, propagation, trace, SpanKind, SpanStatusCode } from '@opentelemetry/api';
import type { Attributes, Context, Link, Span, SpanOptions, Tracer } from '@opentelemetry/api';
import { RPCType, setRPCMetadata } from '@opentelemetry/core';
import { ServerResponse } from 'node:http';
import type { IncomingMessage } from 'node:http';
import { rfc3339Now } from './audit/ids';
import { LINKED_ROOT } from './linked-context';
import { RateLimitedWarnings } from './diagnostics';
import { expressRoute, USER_AGENT_MAX } from './edge';
import type { Decision, Edge } from './edge';
import type { ServerDurations } from './server-durations';
import { privateSlot } from './private-slot';

/**
 * The server side of HTTP: the server span, its context, the `http.server.request.duration`
 * metric and the access record of every request an `http` or `https` server emits.
 *
 * instrumentation-http's own server side is turned off (`disableIncomingRequestInstrumentation`)
 * and this takes its place, through the same module hooks (`serveThrough`), with the same span
 * (scope, kind, name, stable-semconv attributes) and metric. It exists because the upstream one
 * cost ≈ 60 µs of CPU per request where plain Node spends ≈ 18 (bench/notes.md, "http-hello"):
 * attributes from a `URL` parse and a `Forwarded` parse, a `close` and an `errorMonitor` listener
 * per response added through the bound emitter, a hook call per step, a Set of unended spans.
 * Here the edge decision is taken once and gives the span its attributes; one shared replacement
 * of `res.end` takes the access record as the response ends, and one shared `close` listener ends
 * the span and records the metric; both find the request's state on the response.
 *
 * What the edge requires is kept: the caller's trace context is continued only from a trusted
 * peer (our propagator's `extract`), an untrusted one is a link; `client.address` is the resolved
 * client, never a forwarded header of an untrusted peer; `url.query` keeps keys, not values.
 */

interface ServerInstrumentation {
  /** The instrumentation's tracer (its scope: `@opentelemetry/instrumentation-http`). */
  readonly tracer: Tracer;
  /** The module definitions its hooks patch through (InstrumentationBase; `getModuleDefinitions()` makes new ones). */
  _modules?: ModuleDefinition[];
  _recordServerDuration?(durationMs: number, attributes: Attributes): void;
}

interface ModuleDefinition {
  name: string;
  patch?: (exports: unknown, version?: string) => unknown;
  unpatch?: (exports: unknown, version?: string) => unknown;
}

type Emit = (this: unknown, event: string | symbol, ...args: unknown[]) => boolean;

/** What serves every request of a process: made once, in `serveThrough`. */
interface ServerSide {
  readonly instrumentation: ServerInstrumentation;
  readonly edge: Edge;
  /** The duration histogram aggregated in place; undefined: the instrumentation's own records. */
  readonly durations: ServerDurations | undefined;
  /**
   * Whether the span's attributes are given at its start, for a sampler to see. auditrace's own
   * samplers (OTEL_TRACES_SAMPLER: always_*, traceidratio, parentbased_*) never look at them:
   * then they are set just after the start, which spares the SDK's two validating copies of them.
   */
  readonly attributesAtStart: boolean;
}

export interface ServeOptions {
  durations?: ServerDurations;
  /** False only when the tracer provider's sampler is known to ignore attributes (ours). */
  attributesAtStart?: boolean;
}
type Component = 'http' | 'https';

/** One request and its response, on the response (non-enumerable) from `emit` to the response's end. */
interface Exchange {
  readonly req: IncomingMessage;
  readonly d: Decision;
  readonly span: Span;
  readonly ctx: Context;
  /** `route` and `error` (the message of an error a framework's layer passed on): lib/layer-spans.ts */
  readonly rpc: { route?: string; error?: string };
  readonly name: string;
  readonly method: string;
  readonly scheme: Component;
  readonly side: ServerSide;
  recorded: boolean;
  spanEnded: boolean;
  /** The name of the error a handler threw. */
  thrown: string | undefined;
}

/** The exchange a response belongs to (lib/private-slot.ts: not visible on the response). */
const exchanges = privateSlot<Exchange>();
const WRAPPED = Symbol('auditrace.http.server');
const warnings = new RateLimitedWarnings(60_000);
type End = (...a: unknown[]) => unknown;
/** `ServerResponse.prototype.end` as it was before ours took its place (`observeEnds`). */
let priorEnd = ServerResponse.prototype.end as unknown as End;
let observing = false;

/**
 * Makes `instrumentation` (instrumentation-http, created with `disableIncomingRequestInstrumentation`)
 * serve requests through us: when it patches `http` or `https`, their `Server.prototype.emit` is
 * wrapped too, and unwrapped when it unpatches. Without those module definitions (another version
 * of the package) there are no server spans and no access records, and a warning says so.
 */
export function serveThrough(instrumentation: object, edge: Edge, options: ServeOptions = {}): void {
  const i = instrumentation as ServerInstrumentation;
  const { durations } = options;
  const side: ServerSide = { instrumentation: i, edge, durations, attributesAtStart: options.attributesAtStart !== false };
  if (durations) {
    const { instrumentationName, instrumentationVersion } = i as { instrumentationName?: unknown; instrumentationVersion?: unknown };
    if (typeof instrumentationName === 'string') {
      durations.scope = { name: instrumentationName, ...(typeof instrumentationVersion === 'string' ? { version: instrumentationVersion } : {}) };
    }
  }
  const defs = Array.isArray(i._modules) ? i._modules : [];
  let found = 0;
  for (const def of defs) {
    if (def.name !== 'http' && def.name !== 'https') continue;
    found++;
    const component: Component = def.name;
    const patch = def.patch;
    const unpatch = def.unpatch;
    def.patch = function (this: unknown, exports: unknown, version?: string) {
      const out = patch ? patch.call(this, exports, version) : exports;
      wrapServer(exports, component, side);
      return out;
    };
    def.unpatch = function (this: unknown, exports: unknown, version?: string) {
      unwrapServer(exports);
      return unpatch?.call(this, exports, version);
    };
  }
  if (found === 0) warnings.warn('http-server', 'this instrumentation-http has no http module definitions: no server spans and no access records');
  else unservedSide = side;
}

let unservedSide: ServerSide | undefined;
/** How many `Server.prototype.emit`s are ours: none after the instrumentation was disabled. */
let wrappedServers = 0;

/**
 * Every response's `end` is observed on `ServerResponse.prototype`, once: a served response finds
 * its exchange there (`endObserved`), and one that was never served is recorded too. The
 * prototype rather than each response: an own `end` per response gave every response one more
 * property (a map transition and a store per request) and, for the unserved ones, Node's
 * `http.server.response.finish` channel had to be published for every response.
 */
function observeEnds(): void {
  // Once: `https` (whose responses are `http`'s) may load after a library wrapped our `end` with
  // one that calls it; taking that wrapper as ours to call would make each call the other.
  if (observing) return;
  observing = true;
  const proto = ServerResponse.prototype as unknown as { end: End };
  priorEnd = proto.end;
  proto.end = endObserved;
}

/**
 * Responses that end without the application having been asked: Node answers an `Expect:` it
 * does not know with a 417 itself, emitting nothing when the server has no `checkExpectation`
 * listener (a probe scanners send). Each gets an access record as it ends (no span: nothing ran),
 * as does any other response that did not pass through `serve` (a request served untraced
 * because tracing it failed).
 */
function endUnserved(res: ServerResponse, args: IArguments): unknown {
  // The prototype's `end` stays ours after the instrumentation unpatches (a library may have
  // wrapped it since), but with no server of ours left nothing was "unserved": nothing is served.
  const side = wrappedServers > 0 ? unservedSide : undefined;
  const ended = side === undefined || writableEnded(res);
  const returned = Reflect.apply(priorEnd, res, args);
  if (!ended && writableEnded(res)) recordUnserved(side, res);
  return returned;
}

function writableEnded(res: ServerResponse): boolean {
  try {
    return res.writableEnded === true;
  } catch {
    return false;
  }
}

function recordUnserved(side: ServerSide, res: ServerResponse): void {
  try {
    const req = (res as { req?: IncomingMessage | null }).req;
    if (req == null || typeof req !== 'object' || req.headers === null || typeof req.headers !== 'object') return;
    const d = side.edge.decide(req);
    d.endNs = process.hrtime.bigint();
    d.endTime = rfc3339Now();
    const status = res.headersSent ? res.statusCode : undefined;
    const errorType = status !== undefined && status >= 500 && status < 600 ? String(status) : undefined;
    side.edge.recordResponse(req, res, d, propagation.extract(LINKED_ROOT, req.headers), undefined, status, errorType, false);
  } catch (err) {
    warnings.warn('http-server', `an access record could not be taken: ${err instanceof Error ? err.message : String(err)}`);
  }
}

function serverPrototype(exports: unknown): { emit: Emit } | undefined {
  const server = (exports as { Server?: { prototype?: { emit?: unknown } } } | null)?.Server;
  const proto = server?.prototype;
  return proto && typeof proto.emit === 'function' ? proto as { emit: Emit } : undefined;
}

function wrapServer(exports: unknown, component: Component, side: ServerSide): void {
  const proto = serverPrototype(exports);
  if (!proto || (proto.emit as { [WRAPPED]?: Emit })[WRAPPED]) return;
  observeEnds();
  const original = proto.emit;
  const emit = function emit(this: unknown, event: string | symbol): boolean {
    // `arguments` rather than rest parameters: every event of every server passes here. A request
    // with `Expect:` reaches the app as `checkContinue`/`checkExpectation` when it listens for
    // them (and is usually passed on as 'request': the same exchange then).
    // eslint-disable-next-line prefer-rest-params
    if (event !== 'request' && event !== 'checkContinue' && event !== 'checkExpectation') return Reflect.apply(original, this, arguments) as boolean;
    // eslint-disable-next-line prefer-rest-params
    return serve(this, original, arguments, component, side);
  } as Emit & { [WRAPPED]?: Emit };
  emit[WRAPPED] = original;
  proto.emit = emit;
  wrappedServers++;
}

function unwrapServer(exports: unknown): void {
  const proto = serverPrototype(exports);
  const original = proto ? (proto.emit as { [WRAPPED]?: Emit })[WRAPPED] : undefined;
  if (proto && original) {
    proto.emit = original;
    wrappedServers--;
  }
}

function serve(server: unknown, original: Emit, args: IArguments, component: Component, side: ServerSide): boolean {
  let x: Exchange | undefined;
  try {
    x = begin(args[1], args[2], component, side);
  } catch (err) {
    // The request is served untraced rather than not at all.
    warnings.warn('http-server', `a request could not be traced: ${err instanceof Error ? err.message : String(err)}`);
  }
  if (x === undefined) return Reflect.apply(original, server, args) as boolean;
  return context.with(x.ctx, handle, server, original, args, x, args[2] as ServerResponse);
}

function handle(this: unknown, original: Emit, args: IArguments, x: Exchange, res: ServerResponse): boolean {
  try {
    return Reflect.apply(original, this, args) as boolean;
  } catch (err) {
    // Rethrown unchanged (Node's crash report then quotes this line rather than the app's; its
    // stack is the app's own, as with instrumentation-http, which did the same).
    handlerThrew(res, x, err);
    throw err;
  }
}

/**
 * A handler threw: the span gets the exception and `error.type` (the error's name); the response
 * may still be answered (an `uncaughtException` handler that sends a 500), and its record then
 * carries the status and that error type. With nobody to catch it the process is about to die:
 * the record is taken and the span ended now. Never throws (a hostile error object included).
 */
function handlerThrew(res: ServerResponse, x: Exchange, err: unknown): void {
  try {
    let type = 'Error';
    let message: string | undefined;
    if (err instanceof Error) {
      type = String(err.name).slice(0, 64) || 'Error';
      message = String(err.message);
    }
    x.thrown = type;
    x.span.setAttribute('error.type', type);
    x.span.setStatus({ code: SpanStatusCode.ERROR, ...(message !== undefined ? { message } : {}) });
    if (err instanceof Error) x.span.recordException(err);
    if (process.listenerCount('uncaughtException') === 0) {
      if (!x.recorded) takeRecord(res, x);
      endSpan(res, x);
    }
  } catch {
    // the application's error goes on unchanged
  }
}

function begin(reqArg: unknown, resArg: unknown, component: Component, side: ServerSide): Exchange | undefined {
  const edge = side.edge;
  if (reqArg === null || typeof reqArg !== 'object' || resArg === null || typeof resArg !== 'object') return undefined;
  const req = reqArg as IncomingMessage;
  const res = resArg as ServerResponse;
  if (req.headers === null || typeof req.headers !== 'object' || typeof res.end !== 'function') return undefined;
  // A server that hands its request to another (`inner.emit('request', req, res)`): one exchange,
  // the first, in whose context the inner server runs.
  if (exchanges.get(res) !== undefined) return undefined;
  const d = edge.decide(req);
  // Our propagator continues the caller's trace only from a trusted peer and puts the request's
  // context (id, client) in; an untrusted caller's trace context is kept as `d.untrustedParent`.
  const parent = propagation.extract(LINKED_ROOT, req.headers);
  const method = normalizeMethod(req.method);
  const attributes: Record<string, string | number> = {
    'http.request.method': method,
    'url.scheme': component,
    'url.path': d.path,
  };
  edge.spanAttributes(req, d, attributes);
  serverAddress(req.headers.host, component, attributes);
  const socket = req.socket as { remotePort?: unknown } | null | undefined;
  if (typeof socket?.remotePort === 'number') attributes['network.peer.port'] = socket.remotePort;
  if (typeof req.httpVersion === 'string') attributes['network.protocol.version'] = req.httpVersion;
  const ua = req.headers['user-agent'];
  if (typeof ua === 'string') attributes['user_agent.original'] = ua.slice(0, USER_AGENT_MAX);
  if (method === '_OTHER' && typeof req.method === 'string') attributes['http.request.method_original'] = req.method.slice(0, 32);
  const links: Link[] | undefined = d.untrustedParent
    ? [{ context: d.untrustedParent, attributes: { 'auditrace.link': 'untrusted_parent' } }] : undefined;
  const name = method === '_OTHER' ? 'HTTP' : method;
  // Set one by one rather than spread in from literals (a CopyDataProperties call each).
  const options: SpanOptions = { kind: SpanKind.SERVER };
  if (side.attributesAtStart) options.attributes = attributes;
  if (links) options.links = links;
  const span = side.instrumentation.tracer.startSpan(name, options, parent);
  if (!side.attributesAtStart) span.setAttributes(attributes);
  const rpc: { type: RPCType.HTTP; span: Span; route?: string; error?: string } = { type: RPCType.HTTP, span };
  const ctx = setRPCMetadata(trace.setSpan(parent, span), rpc);
  const x: Exchange = {
    req, d, span, ctx, rpc, name, method, scheme: component, side, recorded: false, spanEnded: false, thrown: undefined,
  };
  exchanges.set(res, x);
  // Added before the binding below, so it is not wrapped for the context: it needs none.
  res.on('close', onClose);
  context.bind(ctx, req);
  context.bind(ctx, res);
  edge.onServerResponse(res, d);
  return x;
}

// The response's `end` is one function for every response (on the prototype), which finds the
// request's state on the response: a closure per response installed as `res.end` made V8 keep each
// request's objects (the request, its context, its span) through the next scavenge and promote
// them to the old generation. Measured at 1,000 req/s on the hello server for 4 s
// (--trace-gc-nvp): 25–30 MB promoted with the closure, 10 MB with the same closure kept on the
// response but not called as its `end`, and 10 MB with access records off.
//
// The response's end is when the app calls res.end(), before any byte is handed to the socket:
// the caller cannot have its answer earlier, so a callee's interval always lies inside its
// caller's, however late either process runs afterwards (a busy machine preempts the writer as
// soon as the write wakes the reader). So the access record is taken as end() returns, its bytes
// handed to the socket; a response that closes without having ended (the client went away) is
// recorded as it closes. The span ends at the close (`onClose`).
function endObserved(this: ServerResponse): unknown {
  // eslint-disable-next-line prefer-rest-params
  if (this === null || typeof this !== 'object') return Reflect.apply(priorEnd, this, arguments);
  const x = exchanges.get(this);
  // eslint-disable-next-line prefer-rest-params
  if (x === undefined) return endUnserved(this, arguments);
  const d = x.d;
  // Taken as end() is called ('prefinish' listeners run inside it), kept only if it returns: one
  // that threw on a bad argument did not end the response.
  const endNs = d.endNs === undefined ? process.hrtime.bigint() : undefined;
  const endTime = endNs !== undefined ? rfc3339Now() : undefined;
  // eslint-disable-next-line prefer-rest-params
  const returned = Reflect.apply(priorEnd, this, arguments);
  if (endNs !== undefined && d.endNs === undefined) {
    d.endNs = endNs;
    d.endTime = endTime;
  }
  if (this.writableEnded && !x.recorded) takeRecord(this, x);
  return returned;
}

/**
 * The span ends as the response closes, as instrumentation-http's did: what the app does after
 * `res.end()` in the same turn (an attribute, a 'finish' listener, a throw) still reaches it.
 */
function onClose(this: ServerResponse): void {
  const x = exchanges.get(this);
  if (x === undefined) return;
  if (!x.recorded) takeRecord(this, x);
  if (!x.spanEnded) endSpan(this, x);
}

/** What the response was; `error.type` for one that did not end normally. */
function outcome(res: ServerResponse, x: Exchange): { status: number | undefined; errorType: string | undefined } {
  const status = res.headersSent ? res.statusCode : undefined;
  // A response that closes without the app having ended it: its client went away (after the
  // headers or before), or a handler threw.
  const errorType = x.thrown ?? (!res.writableEnded ? 'client_aborted'
    : status !== undefined && status >= 500 && status < 600 ? String(status) : undefined);
  return { status, errorType };
}

function routeOf(x: Exchange): string | undefined {
  return x.rpc.route ?? x.d.route ?? expressRoute(x.req);
}

/** The access record, taken once. Never throws. */
function takeRecord(res: ServerResponse, x: Exchange): void {
  x.recorded = true;
  try {
    const { status, errorType } = outcome(res, x);
    x.side.edge.recordResponse(x.req, res, x.d, x.ctx, routeOf(x), status, errorType, x.thrown !== undefined);
  } catch (err) {
    warnings.warn('http-server', `a request's access record could not be taken: ${err instanceof Error ? err.message : String(err)}`);
  }
}

/** The span's end and the duration metric, once. Never throws. */
function endSpan(res: ServerResponse, x: Exchange): void {
  x.spanEnded = true;
  try {
    const { span, d, req } = x;
    const { status, errorType } = outcome(res, x);
    const route = routeOf(x);
    if (route !== undefined) {
      span.setAttribute('http.route', route);
      span.updateName(`${x.name} ${route}`);
    }
    if (status !== undefined) span.setAttribute('http.response.status_code', status);
    // A 4xx leaves a server span's status unset, even after a framework's `next(err)`; a 5xx, or no
    // answer after one, carries that error's message. An error status set earlier is kept.
    const failed = status === undefined ? x.rpc.error !== undefined : status >= 500 && status < 600;
    if (failed && x.thrown === undefined && (span as { status?: { code?: unknown } }).status?.code !== SpanStatusCode.ERROR) {
      span.setStatus(x.rpc.error === undefined ? { code: SpanStatusCode.ERROR } : { code: SpanStatusCode.ERROR, message: x.rpc.error });
    }
    if (errorType !== undefined && x.thrown === undefined) span.setAttribute('error.type', errorType);
    span.end();
    const ns = Number((d.endNs ?? process.hrtime.bigint()) - d.startNs);
    const version = typeof req.httpVersion === 'string' ? req.httpVersion : undefined;
    const { durations, instrumentation } = x.side;
    if (durations?.lean) {
      durations.record(ns / 1e9, x.method, x.scheme, version, route, status, errorType);
    } else if (instrumentation._recordServerDuration) {
      const metric: Attributes = { 'http.request.method': x.method, 'url.scheme': x.scheme };
      if (version !== undefined) metric['network.protocol.version'] = version;
      if (route !== undefined) metric['http.route'] = route;
      if (status !== undefined) metric['http.response.status_code'] = status;
      if (errorType !== undefined) metric['error.type'] = errorType;
      instrumentation._recordServerDuration(ns / 1e6, metric);
    }
  } catch (err) {
    warnings.warn('http-server', `a request's span could not be ended: ${err instanceof Error ? err.message : String(err)}`);
  }
}

const KNOWN_METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'CONNECT', 'OPTIONS', 'TRACE', 'PATCH', 'QUERY']);

/** Semantic conventions: a method outside the known set is `_OTHER` (its text goes in `http.request.method_original`). */
export function normalizeMethod(method: unknown): string {
  if (typeof method !== 'string') return 'GET';
  if (KNOWN_METHODS.has(method)) return method;
  const upper = method.toUpperCase();
  return KNOWN_METHODS.has(upper) ? upper : '_OTHER';
}

/** A Host header's name, and its port (undefined: out of range or not a number). */
interface HostParts {
  readonly name: string;
  readonly port: number | undefined;
}

// A server's clients mostly send the one Host header: the last one parsed is kept.
let lastHost: string | undefined;
let lastComponent: Component | undefined;
let lastParts: HostParts | null = null;

/**
 * `server.address` / `server.port` from the Host header: the name the client asked for (the port
 * defaults by scheme). Forwarded host headers are not read: anyone can send them.
 */
export function serverAddress(host: unknown, component: Component, out: Record<string, string | number>): void {
  // Checked before it is kept: the memo never holds a long header.
  if (typeof host !== 'string' || host.length === 0 || host.length > 255) return;
  let parts: HostParts | null;
  if (host === lastHost && component === lastComponent) {
    parts = lastParts;
  } else {
    parts = parseHost(host, component);
    lastHost = host;
    lastComponent = component;
    lastParts = parts;
  }
  if (parts === null) return;
  out['server.address'] = parts.name;
  if (parts.port !== undefined) out['server.port'] = parts.port;
}

function parseHost(host: string, component: Component): HostParts | null {
  let name = host;
  let port: string | undefined;
  if (host.charCodeAt(0) === 91 /* [ */) {
    const close = host.indexOf(']');
    if (close < 0) return null;
    name = host.slice(0, close + 1);
    const rest = host.slice(close + 1);
    if (rest.startsWith(':')) port = rest.slice(1);
    else if (rest !== '') return null;
  } else {
    const colon = host.indexOf(':');
    if (colon >= 0) {
      if (host.indexOf(':', colon + 1) >= 0) return null;
      name = host.slice(0, colon);
      port = host.slice(colon + 1);
    }
  }
  if (name === '') return null;
  return { name, port: port === undefined ? (component === 'https' ? 443 : 80) : portNumber(port) };
}

/** 0–65535 written as one to five digits, else undefined (a digit loop: `Number()` of a string is a runtime call). */
function portNumber(text: string): number | undefined {
  if (text.length === 0 || text.length > 5) return undefined;
  let n = 0;
  for (let i = 0; i < text.length; i++) {
    const d = text.charCodeAt(i) - 48;
    if (d < 0 || d > 9) return undefined;
    n = n * 10 + d;
  }
  return n <= 65535 ? n : undefined;
}
