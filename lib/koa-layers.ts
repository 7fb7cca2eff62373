import { context } from '@opentelemetry/api';
import { getRPCMetadata, RPCType } from '@opentelemetry/core';
import { recordServerError } from './layer-spans';
import type { HttpMetadata } from './layer-spans';

/**
 * Koa middleware without spans of its own (AUDITRACE_LAYER_SPANS=false, the default), as
 * lib/layer-spans.ts does for Express. instrumentation-koa wraps every middleware `app.use` is
 * given, and every handler of a `@koa/router` route, in a span; the route it puts on the server
 * span (`http.route`) is set only on that span's path, so its own way to skip layers
 * (`ignoreLayersType`) loses the route too. Its `_patchLayer` is replaced here: a layer run after
 * `@koa/router` matched a route names it on the request's RPC metadata, where the server side
 * reads it (as upstream's layers do; the same routers are reached: those given to `app.use`, and
 * the routers nested in them); an error a middleware throws (or rejects with) is an exception
 * event on the server span once, however many middleware it passes on its way out, and its
 * message the span's status if the answer is a 5xx. The application's function is called as it
 * is (its `this`, arguments and result), and no context is entered.
 */
export function koaWithoutLayerSpans(instrumentation: object): boolean {
  const i = instrumentation as Partial<KoaInstrumentation>;
  // Another version of the instrumentation, whose internals differ: it keeps its layer spans.
  if (typeof i._patchLayer !== 'function') return false;
  i._patchLayer = function (layer: unknown): unknown {
    return patchLayer(layer);
  };
  return true;
}

interface KoaInstrumentation {
  _patchLayer(layer: unknown, isRouter?: boolean, layerPath?: string): unknown;
}

type Middleware = (this: unknown, ctx: unknown, next: unknown) => unknown;

/** Our wrappers: a router mounted twice hands its handlers to `_patchLayer` twice. */
const ours = new WeakSet<object>();

function patchLayer(layer: unknown): unknown {
  if (typeof layer !== 'function' || ours.has(layer)) return layer;
  // Generator middleware (Koa 1 style) is left alone, as instrumentation-koa leaves it.
  const kind = (layer as { constructor?: { name?: unknown } }).constructor?.name;
  if (kind === 'GeneratorFunction' || kind === 'AsyncGeneratorFunction') return layer;
  const original = layer as Middleware;
  const patched = function (this: unknown, ctx: unknown, next: unknown): unknown {
    const rpc = httpMetadata();
    if (rpc === undefined) return original.call(this, ctx, next);
    // As instrumentation-koa does in every layer: the route @koa/router matched, once it has.
    const matched = (ctx as { _matchedRoute?: unknown } | null)?._matchedRoute;
    if (matched) {
      try {
        rpc.route = String(matched);
      } catch {
        // a route without a string form: none
      }
    }
    let out: unknown;
    try {
      out = original.call(this, ctx, next);
    } catch (err) {
      recordServerError(rpc, err);
      throw err;
    }
    // A promise, or any thenable, adopted as koa-compose adopts it (`Promise.resolve`).
    if (out instanceof Promise || (out !== null && (typeof out === 'object' || typeof out === 'function')
      && typeof (out as { then?: unknown }).then === 'function')) {
      return Promise.resolve(out).then(undefined, (err: unknown) => {
        recordServerError(rpc, err);
        throw err;
      });
    }
    return out;
  };
  ours.add(patched);
  return patched;
}

function httpMetadata(): HttpMetadata | undefined {
  const rpc = getRPCMetadata(context.active());
  return rpc?.type === RPCType.HTTP ? rpc as HttpMetadata : undefined;
}
