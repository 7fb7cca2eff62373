'use strict';
// Express layers without spans (lib/layer-spans.ts): the route as instrumentation-express names it,
// errors on the server span, `next` in the layer's context. The routes of real Express apps in
// both modes are held by test/e2e/register.test.js ("the route of mounted, nested, …").
const assert = require('node:assert/strict');
const path = require('node:path');
const fc = require('fast-check');
const { context, trace, ROOT_CONTEXT, createContextKey } = require('@opentelemetry/api');
const { AsyncLocalStorageContextManager } = require('@opentelemetry/context-async-hooks');
const { setRPCMetadata, getRPCMetadata, RPCType } = require('@opentelemetry/core');
const { withoutLayerSpans, matchedRoute } = require('../../dist/lib/layer-spans.js');

// instrumentation-express's own route function, the reference (not exported by the package).
const upstream = require(path.join(path.dirname(require.resolve('@opentelemetry/instrumentation-express')), 'utils.cjs'));

const OTHER = createContextKey('other');

function fakeSpan() {
  const span = {
    exceptions: [], statuses: [],
    recordException(e) { span.exceptions.push(e); },
    setStatus(s) { span.statuses.push(s); },
    spanContext() { return { traceId: '1'.repeat(32), spanId: '2'.repeat(16), traceFlags: 1 }; },
  };
  return span;
}

/** The instrumentation's hooks, as far as the wrapper uses them. */
function fakeInstrumentation() {
  const i = {
    _applyPatch() { throw new Error('replaced by withoutLayerSpans'); },
    _wrap(target, name, wrapper) { target[name] = wrapper(target[name]); },
  };
  assert.equal(withoutLayerSpans(i), true);
  return i;
}

/** A request's context as auditrace's server side makes it: its span and RPC metadata. */
function serverContext() {
  const span = fakeSpan();
  const rpc = { type: RPCType.HTTP, span };
  return { span, rpc, ctx: setRPCMetadata(trace.setSpan(ROOT_CONTEXT, span), rpc) };
}

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

  it('gives the request\'s RPC metadata the route of the layers it is in, and pops a layer\'s path as its next() is called', () => {
    const i = fakeInstrumentation();
    const inner = { name: 'bound dispatch', handle(req, res, next) { next(); } };
    i._applyPatch(inner, '/orders/:id');
    const routes = [];
    const router = { name: 'router', handle(req, res, next) { routes.push(getRPCMetadata(context.active()).route); inner.handle(req, res, () => { routes.push(getRPCMetadata(context.active()).route); next(); }); } };
    i._applyPatch(router, '/shop');
    const last = { name: 'bound dispatch', handle(req) { routes.push(getRPCMetadata(context.active()).route); req.done = true; } };
    i._applyPatch(last, '/later/:x');
    const { ctx } = serverContext();
    const req = { originalUrl: '/shop/orders/5' };
    context.with(ctx, () => router.handle(req, {}, () => last.handle(req, {}, () => {})));
    assert.deepEqual(routes, ['/shop', '/shop/orders/:id', '/later/:x']);
    assert.equal(req.done, true);
  });

  it('wraps a layer once, leaves error handlers (four arguments) alone, and reaches the original handle\'s own properties', () => {
    const i = fakeInstrumentation();
    let calls = 0;
    const handle = function (req, res, next) { calls++; next(); };
    handle.stack = ['layer'];
    const layer = { name: 'router', handle };
    i._applyPatch(layer, '/a');
    const once = layer.handle;
    i._applyPatch(layer, '/b');
    assert.equal(layer.handle, once);
    assert.notEqual(layer.handle, handle);
    assert.deepEqual(layer.handle.stack, ['layer']);
    layer.handle.stack = ['changed'];
    assert.deepEqual(handle.stack, ['changed']);
    context.with(serverContext().ctx, () => layer.handle({ originalUrl: '/a' }, {}, () => {}));
    assert.equal(calls, 1);
    const onError = function (err, req, res, next) { next(err); };
    const errorLayer = { name: 'onError', handle: onError };
    i._applyPatch(errorLayer, '/');
    assert.equal(errorLayer.handle, onError);
  });

  it('records an error passed to next(err) on the server span once, with its message as the span\'s status, however many layers it passes', () => {
    const i = fakeInstrumentation();
    const boom = new Error('boom');
    const route = { name: 'bound dispatch', handle(req, res, next) { next(boom); } };
    i._applyPatch(route, '/things/:id');
    const mw = { name: 'auth', handle(req, res, next) { route.handle(req, res, next); } };
    i._applyPatch(mw, '/');
    const { span, ctx } = serverContext();
    let passed;
    context.with(ctx, () => mw.handle({ originalUrl: '/things/1' }, {}, (err) => { passed = err; }));
    assert.equal(passed, boom, 'the error goes on to the next layer unchanged');
    assert.deepEqual(span.exceptions, [boom]);
    assert.ok(span.statuses.length >= 1);
    for (const s of span.statuses) assert.deepEqual(s, { code: 2, message: 'boom' });
  });

  it('does not record next(\'route\'), next(\'router\') nor a router\'s own next(err), and records a non-Error value as its string', () => {
    const i = fakeInstrumentation();
    const values = [];
    for (const v of ['route', 'router', null, undefined]) {
      const layer = { name: 'bound dispatch', handle(req, res, next) { next(v); } };
      i._applyPatch(layer, '/x');
      const { span, ctx } = serverContext();
      context.with(ctx, () => layer.handle({ originalUrl: '/x' }, {}, (e) => values.push(e)));
      assert.deepEqual(span.exceptions, [], String(v));
    }
    assert.deepEqual(values, ['route', 'router', null, undefined]);
    const router = { name: 'router', handle(req, res, next) { next(new Error('from inside')); } };
    i._applyPatch(router, '/r');
    const r = serverContext();
    context.with(r.ctx, () => router.handle({ originalUrl: '/r' }, {}, () => {}));
    assert.deepEqual(r.span.exceptions, []);
    const text = { name: 'bound dispatch', handle(req, res, next) { next('not allowed'); } };
    i._applyPatch(text, '/t');
    const t = serverContext();
    context.with(t.ctx, () => text.handle({ originalUrl: '/t' }, {}, () => {}));
    assert.deepEqual(t.span.exceptions, ['not allowed']);
    assert.deepEqual(t.span.statuses, [{ code: 2, message: 'not allowed' }]);
  });

  it('records an error a layer throws and throws it on', () => {
    const i = fakeInstrumentation();
    const thrown = new Error('thrown');
    const layer = { name: 'bound dispatch', handle() { throw thrown; } };
    i._applyPatch(layer, '/x');
    const { span, ctx } = serverContext();
    assert.throws(() => context.with(ctx, () => layer.handle({ originalUrl: '/x' }, {}, () => {})), (e) => e === thrown);
    assert.deepEqual(span.exceptions, [thrown]);
  });

  it('runs next() in the layer\'s context (its span) when the context was lost on the way, and in the caller\'s when it was not', async () => {
    const i = fakeInstrumentation();
    const layer = { name: 'session', handle(req, res, next) { context.with(ROOT_CONTEXT, () => setImmediate(next)); } };
    i._applyPatch(layer, '/');
    const { span, rpc, ctx } = serverContext();
    const seen = await new Promise((resolve) => context.with(ctx, () => layer.handle({ originalUrl: '/' }, {}, () => resolve(context.active()))));
    assert.equal(trace.getSpan(seen), span);
    assert.equal(getRPCMetadata(seen), rpc, 'the route set further in has somewhere to go');
    const same = { name: 'plain', handle(req, res, next) { next(); } };
    i._applyPatch(same, '/');
    const inner = ctx.setValue(OTHER, 'mine');
    let value;
    context.with(ctx, () => same.handle({ originalUrl: '/' }, {}, () => { value = context.active(); }));
    assert.equal(trace.getSpan(value), span);
    context.with(inner, () => {
      const layer2 = { name: 'keeps', handle(req, res, next) { context.with(inner, next); } };
      i._applyPatch(layer2, '/');
      layer2.handle({ originalUrl: '/' }, {}, () => { value = context.active(); });
    });
    assert.equal(value.getValue(OTHER), 'mine');
  });

  it('runs next() of a route\'s own handlers in the route\'s context when one of them lost it, however many handlers the route gains', async () => {
    const i = fakeInstrumentation();
    const route = { stack: [] };
    const dispatch = { name: 'handle', route, handle(req, res, done) {
      let k = 0;
      const next = (err) => {
        if (err || k === route.stack.length) return done(err);
        const { handle } = route.stack[k++];
        return handle.length > 3 ? next() : handle(req, res, next); // as Router skips what is not a request handler
      };
      next();
    } };
    i._applyPatch(dispatch, '/pay/:id');
    const pool = { name: 'pool', handle(req, res, next) { context.with(ROOT_CONTEXT, () => setImmediate(next)); } };
    route.stack.push(pool);
    const { span, rpc, ctx } = serverContext();
    const run = () => new Promise((resolve) => context.with(ctx, () => dispatch.handle({ originalUrl: '/pay/1' }, {}, resolve)));
    const seen = [];
    const handler = { name: 'pay', handle(req, res, next) { seen.push(context.active()); next(); } };
    route.stack.push(handler);
    await run();
    route.stack.push({ name: 'late', handle: (req, res, next) => { seen.push(context.active()); next(); } });
    route.stack.splice(2, 0, { name: 'pool2', handle(req, res, next) { context.with(ROOT_CONTEXT, () => setImmediate(next)); } });
    await run();
    assert.equal(seen.length, 3);
    for (const c of seen) {
      assert.equal(trace.getSpan(c), span);
      assert.equal(getRPCMetadata(c), rpc);
    }
    assert.equal(rpc.route, '/pay/:id');
    const five = (a, b, c, d, e) => e;
    const odd = { name: 'five', handle: five };
    route.stack.push(odd);
    await run();
    assert.equal(odd.handle, five, 'what Express does not call as a handler stays as it is');
  });

  it('leaves a handler of more than four parameters as it is: Express skips it by its length', () => {
    const i = fakeInstrumentation();
    const five = function (a, b, c, d, e) { return e; };
    const layer = { name: 'five', handle: five };
    i._applyPatch(layer, '/five');
    assert.equal(layer.handle, five);
  });

  it('records the rejection of a Router 2 middleware\'s promise, which Router sends to its own next, and leaves an Express 4 promise unhandled', async () => {
    const i = fakeInstrumentation();
    const denied = new Error('denied');
    const handleRequest = () => {};
    const router2 = { name: 'auth', handleRequest, async handle() { throw denied; } };
    i._applyPatch(router2, '/');
    const { span, ctx } = serverContext();
    const result = context.with(ctx, () => router2.handle({ originalUrl: '/x' }, {}, () => {}));
    await assert.rejects(result, (e) => e === denied, 'the promise Router awaits rejects as before');
    await new Promise(setImmediate);
    assert.deepEqual(span.exceptions, [denied]);
    assert.deepEqual(span.statuses, [{ code: 2, message: 'denied' }]);
    const empty = { name: 'empty', handleRequest, handle: () => Promise.reject(undefined) };
    i._applyPatch(empty, '/');
    const e = serverContext();
    await assert.rejects(context.with(e.ctx, () => empty.handle({ originalUrl: '/' }, {}, () => {})));
    await new Promise(setImmediate);
    assert.equal(e.span.exceptions[0].message, 'Rejected promise', 'as Router names it');
    let fulfilled = 0;
    const careless = { name: 'careless', handleRequest, handle: () => ({ then(onFulfilled) { setImmediate(() => { onFulfilled(); fulfilled++; }); } }) };
    i._applyPatch(careless, '/');
    context.with(ctx, () => careless.handle({ originalUrl: '/' }, {}, () => {}));
    await new Promise(setImmediate);
    assert.equal(fulfilled, 1, 'a thenable that calls its callbacks unchecked gets a function');
    let thens = 0;
    const thenable = { then() { thens++; } };
    const express4 = { name: 'auth', handle: () => thenable };
    i._applyPatch(express4, '/');
    assert.equal(context.with(ctx, () => express4.handle({ originalUrl: '/' }, {}, () => {})), thenable);
    assert.equal(thens, 0, 'no handler hides an Express 4 rejection from the process');
    const route = { name: 'handle', route: { stack: [] }, handleRequest, handle: () => thenable };
    i._applyPatch(route, '/r');
    context.with(ctx, () => route.handle({ originalUrl: '/r' }, {}, () => {}));
    assert.equal(thens, 0, 'a route\'s handlers reach the route\'s next, which records them');
  });

  it('records a non-Error value once per span however many layers pass it, and a value without a string form as the status alone', () => {
    const i = fakeInstrumentation();
    for (const value of ['not allowed', { code: 'E_DENIED' }, 42]) {
      const inner = { name: 'check', handle(req, res, next) { next(value); } };
      i._applyPatch(inner, '/in');
      const outer = { name: 'mounted app', handle(req, res, next) { inner.handle(req, res, next); } };
      i._applyPatch(outer, '/sub');
      const { span, ctx } = serverContext();
      context.with(ctx, () => outer.handle({ originalUrl: '/sub/in' }, {}, () => {}));
      assert.deepEqual(span.exceptions, [String(value)], String(value));
    }
    const bare = Object.assign(Object.create(null), { message: 'bare' });
    const layer = { name: 'bare', handle(req, res, next) { next(bare); } };
    i._applyPatch(layer, '/b');
    const { span, ctx } = serverContext();
    let passed;
    context.with(ctx, () => layer.handle({ originalUrl: '/b' }, {}, (err) => { passed = err; }));
    assert.equal(passed, bare, 'the app gets its error, not ours');
    assert.deepEqual(span.exceptions, []);
    assert.deepEqual(span.statuses, [{ code: 2 }]);
    const thrower = { name: 'bare', handle() { throw bare; } };
    i._applyPatch(thrower, '/t');
    assert.throws(() => context.with(ctx, () => thrower.handle({ originalUrl: '/t' }, {}, () => {})), (e) => e === bare);
  });

  it('leaves an instrumentation it does not know as it is', () => {
    const i = { _wrap() {} };
    assert.equal(withoutLayerSpans(i), false);
    assert.equal(i._applyPatch, undefined);
  });
});
