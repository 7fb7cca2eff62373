import { context, trace, SpanStatusCode } from '@opentelemetry/api';
import type { Span } from '@opentelemetry/api';
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
 * `next` runs in the context the layer started in when the context was lost on the way (a
 * callback from a connection pool), as instrumentation-express's binding of it does.
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
  if (layer === null || typeof layer !== 'object' || wrapped.has(layer)) return;
  wrapped.add(layer);
  // instrumentation-express ends a router's own span as soon as it starts: errors passing through
  // a router are recorded by the layer that raised them.
  const recordsErrors = (layer as Layer).name !== 'router';
  instrumentation._wrap(layer, 'handle', (original) => {
    if (typeof original !== 'function' || original.length === 4) return original; // error handlers
    const patched = function (this: unknown, req: Request, _res: unknown): unknown {
      const paths = pathsOf(req);
      const stored = layerPath !== undefined;
      if (stored) paths?.push(layerPath);
      const entered = context.active();
      const rpc = getRPCMetadata(entered);
      if (rpc?.type === RPCType.HTTP) rpc.route = matchedRoute(paths, req.originalUrl);
      let settled = !recordsErrors;
      // eslint-disable-next-line prefer-rest-params
      const args = arguments;
      for (let k = 0; k < args.length; k++) {
        const next: unknown = args[k];
        if (typeof next !== 'function') continue;
        args[k] = function (this: unknown, err?: unknown): unknown {
          const failed = err !== undefined && err !== null && err !== 'route' && err !== 'router';
          if (!settled) {
            settled = true;
            if (failed) recordError(trace.getSpan(entered), err);
          }
          if (!(req.route && failed) && stored) paths?.pop();
          const now = context.active();
          // eslint-disable-next-line prefer-rest-params
          if (now === entered) return (next as Handle).apply(this, arguments as unknown as unknown[]);
          const span = trace.getSpan(entered);
          // eslint-disable-next-line prefer-rest-params
          return context.with(span ? trace.setSpan(now, span) : now, next as Handle, this, ...(arguments as unknown as unknown[]));
        };
        break;
      }
      try {
        return original.apply(this, args as unknown as unknown[]);
      } catch (err) {
        recordError(trace.getSpan(entered), err);
        throw err;
      }
    } as Handle;
    // A router's handle carries its stack and settings, which express reads through the layer.
    for (const key in original) {
      Object.defineProperty(patched, key, {
        get: () => original[key],
        set: (value: unknown) => { original[key] = value; },
      });
    }
    return patched;
  });
}

function pathsOf(req: unknown): string[] | undefined {
  if (req === null || typeof req !== 'object') return undefined;
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

/** The errors already recorded on a span: the same error passes through several layers. */
const recorded = new WeakMap<Span, WeakSet<object>>();

function recordError(span: Span | undefined, err: unknown): void {
  if (span === undefined) return;
  const error = err instanceof Error ? err : String(err);
  if (typeof error === 'object') {
    let seen = recorded.get(span);
    if (seen === undefined) recorded.set(span, (seen = new WeakSet()));
    if (!seen.has(error)) {
      seen.add(error);
      span.recordException(error);
    }
  } else {
    span.recordException(error);
  }
  span.setStatus({ code: SpanStatusCode.ERROR, message: err instanceof Error ? err.message : error as string });
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
