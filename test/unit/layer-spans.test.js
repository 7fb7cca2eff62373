'use strict';
// Express layers without spans (lib/layer-spans.ts): the route as instrumentation-express names it,
// errors on the server span, `next` in the request's context. The layers here are Router 2's own
// (Express 5's router), and one as Express 4 makes it. The routes of real Express apps in both
// modes are held by test/e2e/register.test.js ("the route of mounted, nested, …").
const assert = require('node:assert/strict');
const path = require('node:path');
const fc = require('fast-check');
const { context, trace, propagation, ROOT_CONTEXT } = require('@opentelemetry/api');
const { AsyncLocalStorageContextManager } = require('@opentelemetry/context-async-hooks');
const { setRPCMetadata, getRPCMetadata, RPCType } = require('@opentelemetry/core');
const Layer = require('router/lib/layer');
const Route = require('router/lib/route');
const { withoutLayerSpans, matchedRoute, rememberedRouteShapes } = require('../../dist/lib/layer-spans.js');

// instrumentation-express's own route function, the reference (not exported by the package).
const upstream = require(path.join(path.dirname(require.resolve('@opentelemetry/instrumentation-express')), 'utils.cjs'));

function fakeSpan() {
  const span = {
    exceptions: [], statuses: [],
    recordException(e) { span.exceptions.push(e); },
    setStatus(s) { span.statuses.push(s); },
    spanContext() { return { traceId: '1'.repeat(32), spanId: '2'.repeat(16), traceFlags: 1 }; },
  };
  return span;
}

/** The instrumentation's hook, as far as the wrapper uses it. */
function fakeInstrumentation() {
  const i = { _applyPatch() { throw new Error('replaced by withoutLayerSpans'); } };
  assert.equal(withoutLayerSpans(i), true);
  return i;
}

/** A request's context as auditrace's server side makes it: its span and RPC metadata. */
function serverContext() {
  const span = fakeSpan();
  const rpc = { type: RPCType.HTTP, span };
  return { span, rpc, ctx: setRPCMetadata(trace.setSpan(ROOT_CONTEXT, span), rpc) };
}

/** A layer of a router's stack, wrapped as instrumentation-express's `use` hook wraps it. */
function use(i, layerPath, fn) {
  const layer = new Layer(layerPath, { end: false }, fn);
  i._applyPatch(layer, layerPath);
  return layer;
}

/** A route's layer with its own stack of handlers, as `router.route(path).get(...handlers)` makes it. */
function route(i, routePath, ...handlers) {
  const r = new Route(routePath);
  r.get(...handlers);
  const layer = new Layer(routePath, { end: true }, r.dispatch.bind(r));
  layer.route = r;
  i._applyPatch(layer, routePath);
  return { layer, route: r };
}

/** Runs a layer as a router does, in `ctx`; resolves with what reached the router's next. */
function dispatch(layer, req, ctx, res = {}) {
  return new Promise((resolve) => context.with(ctx, () => layer.handleRequest(req, res, (err) => resolve({ err, ctx: context.active() }))));
}

const request = (url, method = 'GET') => ({ originalUrl: url, url, method });

describe('express layers without spans', () => {
  before(() => {
    context.disable();
    context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  });
  after(() => context.disable());

  it('names the route as instrumentation-express does, for any stack of mount paths and any URL', () => {
    const segment = fc.constantFrom('/', '/*', '*', '', '/api', 'api', '/:id', ':id', '/users/:id', '/{*splat}', '/a,b',
      '/x\\y', '/[a]', '//double', '/v1/', 'v2', '/*rest', '/items', '/items/:id?');
    const url = fc.constantFrom('/', '/api', '/api/users/3', '/items/3', '/v1/v2', '/x', '', '/users/3?q=1', '//double/a');
    fc.assert(fc.property(fc.array(segment, { maxLength: 6 }), url, (paths, originalUrl) => {
      const req = { originalUrl };
      Object.defineProperty(req, '__ot_middlewares', { value: [...paths] });
      assert.equal(matchedRoute(paths, originalUrl), upstream.getActualMatchedRoute(req));
    }), { numRuns: 3000 });
  });

  it('names the route the same way past the number of mount-path sequences it remembers (4,096)', () => {
    for (let n = 0; n < 6000; n++) {
      for (const [paths, originalUrl] of [[[`/r${n}`, '/:id'], `/r${n}/7`], [[`/r${n}`], `/q${n}`], [[`/r${n}`], `/r${n}`]]) {
        const req = { originalUrl };
        Object.defineProperty(req, '__ot_middlewares', { value: [...paths] });
        assert.equal(matchedRoute(paths, originalUrl), upstream.getActualMatchedRoute(req));
      }
    }
    assert.equal(rememberedRouteShapes(), 4096, 'the memo filled up to its bound and no further');
  });

  it('gives the request\'s RPC metadata the route of the layers it is in, and pops a layer\'s path as its next() is called', async () => {
    const i = fakeInstrumentation();
    const routes = [];
    const seen = () => routes.push(getRPCMetadata(context.active()).route);
    const inner = route(i, '/orders/:id', (req, res, next) => { seen(); next(); });
    const shop = use(i, '/shop', function router(req, res, next) { seen(); inner.layer.handleRequest(req, res, (err) => { seen(); next(err); }); });
    const later = use(i, '/later/:x', (req, res, next) => { seen(); next(); });
    const { ctx } = serverContext();
    const req = request('/shop/orders/5');
    await dispatch(shop, req, ctx);
    await dispatch(later, req, ctx);
    // The route is named as a layer is entered (as instrumentation-express names it); the path
    // popped by the route's next() shows in the next layer's route: not /shop/later/:x.
    assert.deepEqual(routes, ['/shop', '/shop/orders/:id', '/shop/orders/:id', '/later/:x']);
  });

  it('wraps a layer once and leaves the application\'s function as it is: identity, name, length, own properties', async () => {
    const i = fakeInstrumentation();
    function named(req, res, next) { next(); }
    Object.defineProperty(named, 'meta', { value: 'kept', enumerable: false });
    const { layer, route: r } = route(i, '/x', named);
    const once = layer.handleRequest;
    i._applyPatch(layer, '/x');
    assert.equal(layer.handleRequest, once);
    assert.ok(!Object.keys(layer).includes('handleRequest'), 'not enumerable on the layer');
    await dispatch(layer, request('/x'), serverContext().ctx);
    const handler = r.stack[0];
    assert.equal(handler.handle, named);
    assert.equal(handler.handle.name, 'named');
    assert.equal(handler.handle.length, 3);
    assert.equal(handler.handle.meta, 'kept');
    assert.ok(Object.prototype.hasOwnProperty.call(handler, 'handleRequest'), 'the route\'s own layers are wrapped at their dispatch');
  });

  it('passes error handlers (four parameters) and functions of more straight to the router, which skips them', async () => {
    const i = fakeInstrumentation();
    let called = 0;
    const onError = use(i, '/five', (err, req, res, next) => { called++; next(err); });
    const five = use(i, '/five', (a, b, c, d, e) => { called++; e(); });
    const { rpc, ctx } = serverContext();
    const req = request('/five');
    assert.equal((await dispatch(onError, req, ctx)).err, undefined);
    assert.equal((await dispatch(five, req, ctx)).err, undefined);
    assert.equal(called, 0);
    assert.equal(rpc.route, undefined, 'no route from a layer the router skips');
  });

  it('records an error passed to next(err) on the server span once, however many layers it passes, and leaves its status to the answer', async () => {
    const i = fakeInstrumentation();
    const boom = new Error('boom');
    const inner = route(i, '/things/:id', (req, res, next) => next(boom));
    const mw = use(i, '/', (req, res, next) => inner.layer.handleRequest(req, res, next));
    const { span, rpc, ctx } = serverContext();
    const { err } = await dispatch(mw, request('/things/1'), ctx);
    assert.equal(err, boom, 'the error goes on to the next layer unchanged');
    assert.deepEqual(span.exceptions, [boom]);
    // The server side sets the status once the answer is known: a 4xx leaves it unset.
    assert.deepEqual(span.statuses, []);
    assert.equal(rpc.error, 'boom');
  });

  it('keeps the path of a route whose handler failed, as instrumentation-express does: a layer after the error handler names it', async () => {
    const i = fakeInstrumentation();
    const failing = route(i, '/things/:id', (req, res, next) => next(new Error('boom')));
    const after = use(i, '/', (req, res, next) => next());
    const { rpc, ctx } = serverContext();
    const req = request('/things/1');
    assert.ok((await dispatch(failing.layer, req, ctx)).err instanceof Error);
    // an error handler recovered (next() without the error): the router goes on with its layers
    await dispatch(after, req, ctx);
    assert.equal(rpc.route, upstream.getActualMatchedRoute({ originalUrl: '/things/1', __ot_middlewares: ['/things/:id', '/'] }));
    assert.equal(rpc.route, '/things/:id');
  });

  it('records what Router counts as an error and nothing else: not route, router, null, undefined, 0, false nor the empty string', async () => {
    const i = fakeInstrumentation();
    for (const v of ['route', 'router', null, undefined, 0, false, '']) {
      const layer = use(i, '/x', (req, res, next) => next(v));
      const { span, rpc, ctx } = serverContext();
      assert.equal((await dispatch(layer, request('/x'), ctx)).err, v);
      assert.deepEqual(span.exceptions, [], String(v));
      assert.equal(rpc.error, undefined, String(v));
    }
    for (const thrown of [undefined, 'route']) {
      const layer = use(i, '/t', () => { throw thrown; });
      const { span, ctx } = serverContext();
      await dispatch(layer, request('/t'), ctx);
      assert.deepEqual(span.exceptions, [], `throw ${String(thrown)}`);
    }
    const text = use(i, '/t', (req, res, next) => next('not allowed'));
    const t = serverContext();
    await dispatch(text, request('/t'), t.ctx);
    assert.deepEqual(t.span.exceptions, ['not allowed']);
    assert.equal(t.rpc.error, 'not allowed');
  });

  it('records an error a layer throws or its promise rejects with (Router sends both to its own next), and pops the layer\'s path for the next layer', async () => {
    const i = fakeInstrumentation();
    const thrown = new Error('thrown');
    const denied = new Error('denied');
    for (const [handler, expected] of [
      [() => { throw thrown; }, thrown],
      [async () => { throw denied; }, denied],
      [() => Promise.reject(undefined), 'Rejected promise'],
    ]) {
      const failing = use(i, '/api', handler);
      const after = use(i, '/items/:id', (req, res, next) => next());
      const { span, rpc, ctx } = serverContext();
      const req = request('/items/1');
      const { err } = await dispatch(failing, req, ctx);
      assert.ok(err instanceof Error);
      assert.equal(span.exceptions.length, 1);
      assert.equal(span.exceptions[0].message, typeof expected === 'string' ? expected : expected.message);
      await dispatch(after, req, ctx); // as after an error handler that recovered with next()
      assert.equal(rpc.route, '/items/:id', 'the failed layer\'s /api is gone');
    }
  });

  it('never calls then() on what a handler returns: a lazy thenable (a query builder) runs once, for Router', async () => {
    const i = fakeInstrumentation();
    let runs = 0;
    const query = { then(resolve) { runs++; resolve({ rows: [] }); } };
    const layer = use(i, '/', () => query);
    context.with(serverContext().ctx, () => layer.handleRequest(request('/'), {}, () => {}));
    const r = route(i, '/q', () => query);
    context.with(serverContext().ctx, () => r.layer.handleRequest(request('/q'), {}, () => {}));
    await new Promise(setImmediate);
    assert.equal(runs, 2, 'one then() each, by Router');
  });

  it('records a non-Error value once per request however many layers pass it, and nothing of a value without a string form', async () => {
    const i = fakeInstrumentation();
    for (const value of ['not allowed', { code: 'E_DENIED' }, 42, Symbol('denied')]) {
      const inner = use(i, '/in', (req, res, next) => next(value));
      const outer = use(i, '/sub', (req, res, next) => inner.handleRequest(req, res, next));
      const { span, ctx } = serverContext();
      await dispatch(outer, request('/sub/in'), ctx);
      assert.deepEqual(span.exceptions, [String(value)], String(value));
    }
    const bare = Object.assign(Object.create(null), { message: 'bare' });
    const layer = use(i, '/b', (req, res, next) => next(bare));
    const { span, ctx } = serverContext();
    assert.equal((await dispatch(layer, request('/b'), ctx)).err, bare, 'the app gets its error, not ours');
    assert.deepEqual(span.exceptions, []);
    assert.deepEqual(span.statuses, []);
  });

  it('touches nothing outside an HTTP request\'s context: a long-lived span gets no errors and keeps none', async () => {
    const i = fakeInstrumentation();
    const boot = fakeSpan();
    let reached = 0;
    const layer = use(i, '/', (req, res, next) => { reached++; next(new Error('e')); });
    for (let k = 0; k < 3; k++) await dispatch(layer, request('/'), trace.setSpan(ROOT_CONTEXT, boot));
    assert.equal(reached, 3);
    assert.deepEqual(boot.exceptions, []);
    assert.deepEqual(boot.statuses, []);
  });

  it('runs next() in the request\'s context (its span and RPC metadata) when it was lost on the way, and keeps a context that is still the request\'s', async () => {
    const i = fakeInstrumentation();
    const lost = use(i, '/', (req, res, next) => context.with(ROOT_CONTEXT, () => setImmediate(next)));
    const { span, rpc, ctx } = serverContext();
    const after = await dispatch(lost, request('/'), ctx);
    assert.equal(trace.getSpan(after.ctx), span);
    assert.equal(getRPCMetadata(after.ctx), rpc, 'the route set further in has somewhere to go');
    const baggage = propagation.createBaggage({ tenant: { value: 'acme' } });
    const keeps = use(i, '/', (req, res, next) => context.with(propagation.setBaggage(context.active(), baggage), next));
    const kept = await dispatch(keeps, request('/'), ctx);
    assert.equal(propagation.getBaggage(kept.ctx)?.getEntry('tenant')?.value, 'acme');
    // A middleware's own active span (startActiveSpan(..., () => next())): its baggage stays, and
    // the request's span is the active one again, as instrumentation-express puts it back.
    const own = fakeSpan();
    const inSpan = use(i, '/', (req, res, next) => context.with(trace.setSpan(propagation.setBaggage(context.active(), baggage), own), next));
    const after2 = await dispatch(inSpan, request('/'), ctx);
    assert.equal(propagation.getBaggage(after2.ctx)?.getEntry('tenant')?.value, 'acme');
    assert.equal(trace.getSpan(after2.ctx), span);
    assert.equal(getRPCMetadata(after2.ctx), rpc);
  });

  it('runs a layer entered without the request\'s context (after a param callback or an error handler lost it) in that context', async () => {
    const i = fakeInstrumentation();
    const first = use(i, '/p', (req, res, next) => next());
    let seen;
    const second = use(i, '/p/:id', (req, res, next) => { seen = context.active(); next(); });
    const { span, rpc, ctx } = serverContext();
    const req = request('/p/1');
    await dispatch(first, req, ctx);
    await dispatch(second, req, ROOT_CONTEXT);
    assert.equal(trace.getSpan(seen), span);
    assert.equal(rpc.route, '/p/:id');
  });

  it('runs next() of a route\'s own handlers in the request\'s context when one of them lost it, however many handlers the route gains', async () => {
    const i = fakeInstrumentation();
    const seen = [];
    const pool = (req, res, next) => context.with(ROOT_CONTEXT, () => setImmediate(next));
    const look = (req, res, next) => { seen.push(context.active()); next(); };
    const { layer, route: r } = route(i, '/pay/:id', pool, look);
    const { span, rpc, ctx } = serverContext();
    await dispatch(layer, request('/pay/1'), ctx);
    r.get((req, res, next) => context.with(ROOT_CONTEXT, () => setImmediate(next)), look);
    await dispatch(layer, request('/pay/2'), ctx);
    assert.equal(seen.length, 3);
    for (const c of seen) {
      assert.equal(trace.getSpan(c), span);
      assert.equal(getRPCMetadata(c), rpc);
    }
    assert.equal(rpc.route, '/pay/:id');
  });

  it('wraps Express 4\'s layers at their handle_request', async () => {
    const i = fakeInstrumentation();
    // Express 4's Layer.prototype.handle_request, as lib/router/layer.js of express@4 has it.
    const express4 = (fn) => ({ handle: fn, handle_request(req, res, next) {
      const f = this.handle;
      if (f.length > 3) return next();
      try { f(req, res, next); } catch (err) { next(err); }
    } });
    const thrown = new Error('e4');
    const layer = express4((req, res, next) => { throw thrown; });
    i._applyPatch(layer, '/legacy/:id');
    const { span, rpc, ctx } = serverContext();
    const err = await new Promise((resolve) => context.with(ctx, () => layer.handle_request(request('/legacy/1'), {}, resolve)));
    assert.equal(err, thrown);
    assert.equal(rpc.route, '/legacy/:id');
    assert.deepEqual(span.exceptions, [thrown]);
  });

  it('leaves an instrumentation it does not know as it is, and a layer without a known dispatch', () => {
    const i = {};
    assert.equal(withoutLayerSpans(i), false);
    assert.equal(i._applyPatch, undefined);
    const j = fakeInstrumentation();
    const handle = (req, res, next) => next();
    const odd = { handle };
    j._applyPatch(odd, '/');
    assert.deepEqual(Object.getOwnPropertyNames(odd), ['handle']);
    assert.equal(odd.handle, handle);
  });
});
