import { context, trace, SpanStatusCode } from '@opentelemetry/api';
import type { Context, Span } from '@opentelemetry/api';
import { getRPCMetadata, RPCType } from '@opentelemetry/core';
import { privateSlot } from './private-slot';

/**
 * Framework layers without spans of their own (AUDITRACE_LAYER_SPANS=false, the default).
 *
 * instrumentation-express wraps every layer a router or app is given (`use`, `route`) to make a
 * span of it, and on the way keeps the mount paths of the layers a request is in, from which it
 * names the route on the server span (nested routers, sub-apps, routers sharing a prefix). Its
 * own way to skip layers (`ignoreLayersType`) pops those paths at the wrong time (it names
 * `/shop/orders/5` `/shop/shop/orders/:id`), so the layers are wrapped here instead, by the same
 * instrumentation's hooks: the paths are kept and popped as its span path keeps them, the route
 * goes where it puts it (the request's RPC metadata), and an error passed to `next(err)` is the
 * server span's (its exception event, once per error object, and its status). Nothing a layer
 * span needed is done: no span, no context entered per layer, no `close` listener per layer —
 * they cost ≈ 35 µs of CPU per request of the benchmark's Express app when the layer spans were
 * stand-ins that recorded nothing (bench/notes.md, "http-express").
 *
 * `next` runs in the context the layer started in when the span was lost on the way (a callback
 * from a connection pool), as instrumentation-express's binding of it does, and so does the
 * `next` of a route's own handlers.
 */
export function withoutLayerSpans(instrumentation: object): boolean {
  const i = instrumentation as Partial<ExpressInstrumentation>;
  // Another version of the instrumentation, whose internals differ: it keeps its layer spans.
  if (typeof i._applyPatch !== 'function' || typeof i._wrap !== 'function') return false;
  i._applyPatch = function (this: ExpressInstrumentation, layer: unknown, layerPath?: string): void {
    patchLayer(this, layer, layerPath);
  };
  return true;
}

interface ExpressInstrumentation {
  _applyPatch(layer: unknown, layerPath?: string): void;
  _wrap(target: object, name: string, wrapper: (original: Handle) => Handle): void;
}

type Handle = ((...args: unknown[]) => unknown) & Record<string, unknown>;

interface Layer {
  name?: unknown;
  handle?: unknown;
  route?: { stack?: unknown };
  handleRequest?: unknown;
}

interface Request {
  route?: unknown;
  originalUrl?: unknown;
}

/** Layers wrapped once: `app.use` wraps the layer its `router.use` already wrapped. */
const wrapped = new WeakSet<object>();

/** The mount paths of the layers a request is in, outermost first. */
const mountPaths = privateSlot<string[]>();

function patchLayer(instrumentation: ExpressInstrumentation, layer: unknown, layerPath: string | undefined): void {
  if (!isObject(layer) || wrapped.has(layer)) return;
  wrapped.add(layer);
  const { name, route } = layer as Layer;
  // instrumentation-express ends a router's own span as soon as it starts: errors passing through
  // a router are recorded by the layer that raised them.
  const recordsErrors = name !== 'router';
  // Router 2 sends a rejected promise of a handler to its own next, not to the one given here;
  // Express 4 leaves it unhandled, and a handler added here would hide it from the process.
  const rejectionsGoToNext = recordsErrors && route === undefined && typeof (layer as Layer).handleRequest === 'function';
  instrumentation._wrap(layer, 'handle', (original) => {
    if (!isRequestHandler(original)) return original;
    const patched = function (this: unknown, req: Request, _res: unknown): unknown {
      const paths = pathsOf(req);
      const stored = layerPath !== undefined;
      if (stored) paths?.push(layerPath);
      const entered = context.active();
      const rpc = getRPCMetadata(entered);
      if (rpc?.type === RPCType.HTTP) rpc.route = matchedRoute(paths, req.originalUrl);
      if (route !== undefined) patchRouteStack(instrumentation, route);
      let settled = !recordsErrors;
      // eslint-disable-next-line prefer-rest-params
      const args = arguments;
      replaceNext(args, (next) => function (this: unknown, err?: unknown): unknown {
        const failed = err !== undefined && err !== null && err !== 'route' && err !== 'router';
        if (!settled) {
          settled = true;
          if (failed) recordError(trace.getSpan(entered), err);
        }
        if (!(req.route && failed) && stored) paths?.pop();
        // eslint-disable-next-line prefer-rest-params
        return callIn(entered, next, this, arguments);
      });
      let result: unknown;
      try {
        result = original.apply(this, args as unknown as unknown[]);
      } catch (err) {
        recordError(trace.getSpan(entered), err);
        throw err;
      }
      if (rejectionsGoToNext && isThenable(result)) {
        try {
          result.then(noop, (err: unknown) => {
            if (settled) return;
            settled = true;
            recordError(trace.getSpan(entered), err || new Error('Rejected promise'));
          });
        } catch {
          // a thenable whose then throws: Router's own then call meets it
        }
      }
      return result;
    } as Handle;
    return keepProperties(patched, original);
  });
}

/** How many layers of a route's own stack are wrapped: a route gains layers after it is made. */
const routeLayers = new WeakMap<object, number>();

/**
 * The handlers of a route (`app.get(path, check, handler)`) are layers of the route's own stack,
 * which instrumentation-express does not wrap: their `next` runs in the context they started in
 * when a handler lost it, as the layers of a router's stack do. Errors they raise reach the
 * route's layer, which records them.
 */
function patchRouteStack(instrumentation: ExpressInstrumentation, route: { stack?: unknown }): void {
  const stack = route.stack;
  if (!Array.isArray(stack) || routeLayers.get(route) === stack.length) return;
  routeLayers.set(route, stack.length);
  for (const layer of stack) {
    if (!isObject(layer) || wrapped.has(layer)) continue;
    wrapped.add(layer);
    instrumentation._wrap(layer, 'handle', (original) => {
      if (!isRequestHandler(original)) return original;
      const patched = function (this: unknown): unknown {
        const entered = context.active();
        // eslint-disable-next-line prefer-rest-params
        const args = arguments;
        replaceNext(args, (next) => function (this: unknown): unknown {
          // eslint-disable-next-line prefer-rest-params
          return callIn(entered, next, this, arguments);
        });
        return original.apply(this, args as unknown as unknown[]);
      } as Handle;
      return keepProperties(patched, original);
    });
  }
}

/** Error handlers (four parameters) and what Express does not call as a handler (more) stay as they are. */
function isRequestHandler(handle: unknown): handle is Handle {
  return typeof handle === 'function' && handle.length <= 3;
}

/** Replaces the first function among a handler's arguments, its `next`. */
function replaceNext(args: IArguments, wrap: (next: Handle) => (this: unknown, ...args: unknown[]) => unknown): void {
  for (let k = 0; k < args.length; k++) {
    const next: unknown = args[k];
    if (typeof next === 'function') {
      args[k] = wrap(next as Handle);
      return;
    }
  }
}

/**
 * Runs `next` in the context the layer started in when the span was lost on the way (a callback
 * from a connection pool); a context that still has the span (a middleware's own entry) is kept.
 */
function callIn(entered: Context, next: Handle, self: unknown, args: IArguments): unknown {
  const now = context.active();
  if (now === entered || trace.getSpan(now) === trace.getSpan(entered)) {
    return next.apply(self, args as unknown as unknown[]);
  }
  return context.with(entered, next, self, ...(args as unknown as unknown[]));
}

/** A router's handle carries its stack and settings, which Express reads through the layer. */
function keepProperties(patched: Handle, original: Handle): Handle {
  for (const key in original) {
    Object.defineProperty(patched, key, {
      get: () => original[key],
      set: (value: unknown) => { original[key] = value; },
    });
  }
  return patched;
}

function pathsOf(req: unknown): string[] | undefined {
  if (!isObject(req)) return undefined;
  let paths = mountPaths.get(req);
  if (paths === undefined) {
    paths = [];
    try {
      mountPaths.set(req, paths);
    } catch {
      return undefined; // a request object that cannot be extended: no route
    }
  }
  return paths;
}

/** Passed to then() instead of undefined: some thenables call their callbacks without checking. */
function noop(): void {}

function isObject(value: unknown): value is object {
  return value !== null && typeof value === 'object';
}

function isThenable(value: unknown): value is PromiseLike<unknown> {
  return (isObject(value) || typeof value === 'function') && typeof (value as { then?: unknown }).then === 'function';
}

/**
 * The errors already recorded on a span: the same error passes through several layers (a
 * sub-app's and its mount's), objects by identity and other values by value.
 */
const recorded = new WeakMap<Span, Set<unknown>>();

function recordError(span: Span | undefined, err: unknown): void {
  if (span === undefined) return;
  try {
    let seen = recorded.get(span);
    if (seen === undefined) recorded.set(span, (seen = new Set()));
    const message = err instanceof Error ? err.message : String(err);
    if (!seen.has(err)) {
      seen.add(err);
      span.recordException(err instanceof Error ? err : message);
    }
    span.setStatus({ code: SpanStatusCode.ERROR, message });
  } catch {
    // a value without a string form (Object.create(null)): the status code alone
    try {
      span.setStatus({ code: SpanStatusCode.ERROR });
    } catch {
      // a span that refuses: nothing of the host's request depends on it
    }
  }
}

/**
 * The route of the layers a request is in, as instrumentation-express names it (its
 * `getActualMatchedRoute`): held to it by the e2e test of route layouts in both modes.
 */
export function matchedRoute(paths: readonly string[] | undefined, originalUrl: unknown): string | undefined {
  if (paths === undefined || paths.length === 0) return undefined;
  const url = typeof originalUrl === 'string' ? originalUrl : '';
  if (paths.every((p) => p === '/')) return url === '/' ? '/' : undefined;
  const meaningful = paths.filter((p) => p !== '/' && p !== '/*' && !/^\/\{[*][^}]*\}$/.test(p));
  if (meaningful.length === 1 && meaningful[0] === '*') return '*';
  const constructed = meaningful.join('').replace(/\/{2,}/g, '/');
  if (constructed === '*') return '*';
  if (constructed.includes('/') && (constructed.includes(',') || constructed.includes('\\') || constructed.includes('*') || constructed.includes('['))) {
    return constructed;
  }
  const route = constructed.startsWith('/') ? constructed : `/${constructed}`;
  return url === route || url.startsWith(route) || route.includes(':') || route.includes('*') ? route : undefined;
}
