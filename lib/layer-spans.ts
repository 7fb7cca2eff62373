import { context, trace } from '@opentelemetry/api';
import type { Context, Span } from '@opentelemetry/api';
import { getRPCMetadata, RPCType } from '@opentelemetry/core';
import { privateSlot } from './private-slot';
import { sequenceMemo } from './sequence-memo';

/**
 * Framework layers without spans of their own (AUDITRACE_LAYER_SPANS=false, the default).
 *
 * instrumentation-express wraps every layer a router or app is given (`use`, `route`) to make a
 * span of it, and on the way keeps the mount paths of the layers a request is in, from which it
 * names the route on the server span (nested routers, sub-apps, routers sharing a prefix). Its
 * own way to skip layers (`ignoreLayersType`) pops those paths at the wrong time (it names
 * `/shop/orders/5` `/shop/shop/orders/:id`), so the layers are wrapped here instead, by the same
 * instrumentation's hooks: the paths are kept and popped as its span path keeps them, and the
 * route goes where it puts it (the request's RPC metadata). Nothing a layer span needed is done:
 * no span, no context entered per layer, no `close` listener per layer — they cost ≈ 35 µs of CPU
 * per request of the benchmark's Express app when the layer spans were stand-ins that recorded
 * nothing (bench/notes.md, "http-express").
 *
 * What is wrapped is the layer's own dispatch (`handleRequest` in Router 2, Express 5's router;
 * `handle_request` in Express 4), not the application's function: the function stays the app's
 * (its identity, name, length and properties), no promise of the app's is touched (a lazy
 * thenable, a query builder, runs once per `then`), and the `next` the router gets back from a
 * throw or a rejected promise is ours, so the paths are popped and the error recorded whichever
 * way a handler fails. An error is recorded on the request's server span once, whatever number of
 * layers it passes. `next` runs in the request's context when the span was lost on the way (a
 * callback from a connection pool), as instrumentation-express's binding of it does, and a layer
 * entered without it (after a `param` callback or an error handler that lost it) runs in it.
 */
export function withoutLayerSpans(instrumentation: object): boolean {
  const i = instrumentation as Partial<ExpressInstrumentation>;
  // Another version of the instrumentation, whose internals differ: it keeps its layer spans.
  if (typeof i._applyPatch !== 'function') return false;
  i._applyPatch = function (layer: unknown, layerPath?: string): void {
    patchLayer(layer, layerPath, true);
  };
  return true;
}

interface ExpressInstrumentation {
  _applyPatch(layer: unknown, layerPath?: string): void;
}

type Dispatch = (this: unknown, req: unknown, res: unknown, next: unknown) => unknown;

interface Layer {
  handle?: unknown;
  route?: { stack?: unknown };
  handleRequest?: unknown;
  handle_request?: unknown;
}

interface Request {
  route?: unknown;
  originalUrl?: unknown;
}

/** The request's RPC metadata (lib/http-server.ts makes it), as the framework layers use it. */
export interface HttpMetadata {
  type: RPCType.HTTP;
  span: Span;
  route?: string;
  /** The message of the error a layer passed on: the server span's status if the answer is a 5xx. */
  error?: string;
  /** The errors already on the server span: one error passes through several layers. */
  recorded?: Set<unknown>;
}

/** What the layers of one request share. */
interface RequestState {
  /** The mount paths of the layers the request is in, outermost first. */
  paths: string[];
  /** The context the request's first layer ran in: its server span and RPC metadata. */
  ctx: Context;
  rpc: HttpMetadata;
}

/** Layers wrapped once: `app.use` wraps the layer its `router.use` already wrapped. */
const wrapped = new WeakSet<object>();

const requests = privateSlot<RequestState>();

/**
 * `main`: a layer of a router's stack (its path kept, the route named, errors recorded); else a
 * handler of a route's own stack, which keeps the request's context only.
 */
function patchLayer(layer: unknown, layerPath: string | undefined, main: boolean): void {
  if (!isObject(layer) || wrapped.has(layer)) return;
  const l = layer as Layer;
  const method = typeof l.handleRequest === 'function' ? 'handleRequest'
    : typeof l.handle_request === 'function' ? 'handle_request' : undefined;
  if (method === undefined) return; // a router this code does not know: the server side's route from req.route
  wrapped.add(layer);
  const original = l[method] as Dispatch;
  const route = main ? l.route : undefined;
  const stored = main && layerPath !== undefined;
  const dispatch = function (this: Layer, req: unknown, res: unknown, next: unknown): unknown {
    // Not a request handler (an error handler, or more parameters): the router skips it.
    if (typeof next !== 'function' || typeof this.handle !== 'function' || this.handle.length > 3) {
      return original.call(this, req, res, next);
    }
    const now = context.active();
    const state = stateOf(req, now);
    if (state === undefined) return original.call(this, req, res, next);
    if (now !== state.ctx && getRPCMetadata(now) !== state.rpc) {
      return context.with(state.ctx, run, this, req as Request, res, next as Dispatch, state);
    }
    return run.call(this, req as Request, res, next as Dispatch, state);
  };
  function run(this: Layer, req: Request, res: unknown, next: Dispatch, state: RequestState): unknown {
    if (stored) state.paths.push(layerPath);
    if (main) state.rpc.route = matchedRoute(state.paths, req.originalUrl);
    if (route !== undefined) patchRouteStack(route);
    const entered = context.active();
    let called = false;
    const ours = function (this: unknown, err?: unknown): unknown {
      if (!called) {
        called = true;
        // instrumentation-express's test of an error, for the path; Router's, for the record.
        const failed = err !== undefined && err !== null && err !== 'route' && err !== 'router';
        if (main && failed && err) recordServerError(state.rpc, err);
        if (!(req.route && failed) && stored) state.paths.pop();
      }
      // eslint-disable-next-line prefer-rest-params
      return callIn(entered, state, next, this, arguments);
    };
    return original.call(this, req, res, ours);
  }
  Object.defineProperty(layer, method, { value: dispatch, writable: true, configurable: true, enumerable: false });
}

/** How many layers of a route's own stack are wrapped: a route gains layers after it is made. */
const routeLayers = new WeakMap<object, number>();

/**
 * The handlers of a route (`app.get(path, check, handler)`) are layers of the route's own stack,
 * which instrumentation-express does not wrap: their `next` runs in the request's context when a
 * handler lost it, as the layers of a router's stack do. Errors they raise reach the route's
 * layer, which records them.
 */
function patchRouteStack(route: { stack?: unknown }): void {
  const stack = route.stack;
  if (!Array.isArray(stack) || routeLayers.get(route) === stack.length) return;
  routeLayers.set(route, stack.length);
  for (const layer of stack) patchLayer(layer, undefined, false);
}

/** The request's state, made by its first layer; none for a request without a server span. */
function stateOf(req: unknown, now: Context): RequestState | undefined {
  if (!isObject(req)) return undefined;
  const state = requests.get(req);
  if (state !== undefined) return state;
  const rpc = getRPCMetadata(now);
  if (rpc?.type !== RPCType.HTTP) return undefined; // a layer run outside an HTTP request's context
  const made: RequestState = { paths: [], ctx: now, rpc: rpc as HttpMetadata };
  try {
    requests.set(req, made);
  } catch {
    return undefined; // a request object that cannot be extended: no route
  }
  return made;
}

/**
 * Runs `next` in the context the layer started in when the request's context was lost on the way
 * (a callback from a connection pool); a context that is still the request's is kept.
 */
function callIn(entered: Context, state: RequestState, next: Dispatch, self: unknown, args: IArguments): unknown {
  const now = context.active();
  let ctx = entered;
  if (now === entered) ctx = now;
  else if (getRPCMetadata(now) === state.rpc) {
    // Still the request's (a middleware's own span or baggage): kept, with the layer's span back as
    // the active one, as instrumentation-express puts its parent span back for the next layer.
    const span = trace.getSpan(entered);
    ctx = trace.getSpan(now) === span || span === undefined ? now : trace.setSpan(now, span);
  }
  if (ctx === now) return next.apply(self, args as unknown as [unknown, unknown, unknown]);
  return context.with(ctx, next as (...a: unknown[]) => unknown, self, ...(args as unknown as unknown[]));
}

function isObject(value: unknown): value is object {
  return value !== null && typeof value === 'object';
}

/**
 * The exception event goes on the server span at once, once per error and request; its status is
 * the server side's to set when the answer is known: an error a handler passes on may end as a 4xx
 * (`next(createError(404))`), for which a server span's status stays unset, or be recovered from
 * by an error handler. Never throws. Express's layers here, Koa's in lib/koa-layers.ts.
 */
export function recordServerError(rpc: HttpMetadata, err: unknown): void {
  try {
    const seen = rpc.recorded ?? (rpc.recorded = new Set());
    const client = clientError(err);
    const message = client?.message ?? (err instanceof Error ? err.message : String(err));
    rpc.error = message;
    if (!seen.has(err)) {
      seen.add(err);
      rpc.span.recordException(client ?? (err instanceof Error ? err : message));
    }
  } catch {
    // a value without a string form (Object.create(null)): no message, no event
  }
}

/**
 * An error raised because of what the client sent (an http-errors 4xx: body-parser's
 * `entity.parse.failed`, `entity.too.large`, …) is described by its kind, not its message: V8's
 * JSON.parse message quotes the body (`"password": hunter2…` is not valid JSON), and the body is
 * the client's content. Its stack holds the same message, so none is recorded.
 */
function clientError(err: unknown): { name: string; message: string } | undefined {
  if (err === null || typeof err !== 'object') return undefined;
  const e = err as { status?: unknown; statusCode?: unknown; type?: unknown; name?: unknown };
  const status = typeof e.status === 'number' ? e.status : e.statusCode;
  if (typeof status !== 'number' || status < 400 || status > 499) return undefined;
  const type = typeof e.type === 'string' && /^[\w.-]{1,64}$/.test(e.type) ? ` (${e.type})` : '';
  const name = typeof e.name === 'string' && /^[\w.$-]{1,64}$/.test(e.name) ? e.name : 'Error';
  return { name, message: `client error ${status}${type}` };
}

/**
 * The route of the layers a request is in, as instrumentation-express names it (its
 * `getActualMatchedRoute`): held to it by the e2e test of route layouts in both modes.
 */
export function matchedRoute(paths: readonly string[] | undefined, originalUrl: unknown): string | undefined {
  if (paths === undefined || paths.length === 0) return undefined;
  const url = typeof originalUrl === 'string' ? originalUrl : '';
  const shape = shapes.get(paths);
  switch (shape.kind) {
    case 'slashes': return url === '/' ? '/' : undefined;
    case 'fixed': return shape.route;
    case 'prefix': return shape.always || url.startsWith(shape.route) ? shape.route : undefined;
  }
}

/**
 * What the mount paths alone decide of the route; only the 'prefix' kind still asks the URL.
 * Computed once per sequence of mount paths (an application has a few), not per layer and request:
 * the filter, join and two regular expressions were ≈ 0.5 µs per request of the benchmark's route.
 */
type Shape = { kind: 'slashes' } | { kind: 'fixed'; route: string } | { kind: 'prefix'; route: string; always: boolean };

function computeShape(paths: readonly string[]): Shape {
  if (paths.every((p) => p === '/')) return { kind: 'slashes' };
  const meaningful = paths.filter((p) => p !== '/' && p !== '/*' && !/^\/\{[*][^}]*\}$/.test(p));
  if (meaningful.length === 1 && meaningful[0] === '*') return { kind: 'fixed', route: '*' };
  const constructed = meaningful.join('').replace(/\/{2,}/g, '/');
  if (constructed === '*') return { kind: 'fixed', route: '*' };
  if (constructed.includes('/') && (constructed.includes(',') || constructed.includes('\\') || constructed.includes('*') || constructed.includes('['))) {
    return { kind: 'fixed', route: constructed };
  }
  const route = constructed.startsWith('/') ? constructed : `/${constructed}`;
  // `url === route` is within `url.startsWith(route)`.
  return { kind: 'prefix', route, always: route.includes(':') || route.includes('*') };
}

/** Mount paths are the application's, not the client's; past 4,096 nodes the shape is computed each time. */
const shapes = sequenceMemo(4096, computeShape);

/** How many mount-path nodes the route memo holds (for tests: it stays within its bound). */
export function rememberedRouteShapes(): number {
  return shapes.size;
}
