'use strict';
// Koa middleware without spans (lib/koa-layers.ts): the route on the request's RPC metadata, errors
// on the server span once, the application's function called as it is. Real Koa apps in both
// modes: test/e2e/register.test.js ("Koa, …").
const assert = require('node:assert/strict');
const { context, ROOT_CONTEXT } = require('@opentelemetry/api');
const { AsyncLocalStorageContextManager } = require('@opentelemetry/context-async-hooks');
const { setRPCMetadata, RPCType } = require('@opentelemetry/core');
const { koaWithoutLayerSpans } = require('../../dist/lib/koa-layers.js');

function request() {
  const span = { exceptions: [], recordException(e) { span.exceptions.push(e); } };
  const rpc = { type: RPCType.HTTP, span };
  return { rpc, span, ctx: setRPCMetadata(ROOT_CONTEXT, rpc) };
}

/** The instrumentation's `_patchLayer`, replaced: a stand-in that would make a span. */
function patcher() {
  const i = { _patchLayer: () => { throw new Error('the span-making original was called'); } };
  assert.equal(koaWithoutLayerSpans(i), true);
  return (layer, routed = false) => i._patchLayer(layer, routed, '/path');
}

describe('Koa middleware without layer spans (lib/koa-layers.ts)', () => {
  before(() => context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable()));
  after(() => context.disable());

  it('names the route @koa/router matched, in whatever layer runs after the match (as upstream does)', async () => {
    const patch = patcher();
    const r = request();
    const seen = [];
    const handler = patch(function (ctx, next) { seen.push([this, ctx, next]); return 'out'; }, true);
    const plain = patch(() => undefined, false);
    const ctx = { _matchedRoute: '/items/:id' };
    const self = {};
    const next = () => undefined;
    assert.equal(context.with(r.ctx, () => handler.call(self, ctx, next)), 'out');
    assert.deepEqual(seen, [[self, ctx, next]], 'called with its own this and arguments');
    assert.equal(r.rpc.route, '/items/:id');
    const r2 = request();
    context.with(r2.ctx, () => plain({ _matchedRoute: '/other' }, next));
    assert.equal(r2.rpc.route, '/other');
    const r3 = request();
    context.with(r3.ctx, () => plain({}, next));
    context.with(r3.ctx, () => plain({ _matchedRoute: '' }, next));
    assert.equal(r3.rpc.route, undefined, 'no match yet: no route');
  });

  it('adopts a thenable that is not a promise as koa-compose does', async () => {
    const patch = patcher();
    const r = request();
    const layer = patch(() => ({ then(ok) { ok('done'); } }));
    assert.equal(await context.with(r.ctx, () => layer({}, () => undefined)), 'done');
    const failing = patch(() => ({ then(ok, fail) { fail(new Error('thenable failed')); } }));
    await assert.rejects(context.with(r.ctx, () => failing({}, () => undefined)), /thenable failed/);
    assert.equal(r.span.exceptions.length, 1);
  });

  it('records a thrown or rejected error on the server span once, however many middleware it passes', async () => {
    const patch = patcher();
    const r = request();
    const err = new Error('boom');
    const inner = patch(async () => { throw err; }, true);
    const outer = patch(async (ctx, next) => { await next(); }, false);
    await assert.rejects(context.with(r.ctx, () => outer({}, () => inner({}, () => undefined))), err);
    assert.deepEqual(r.span.exceptions, [err]);
    assert.equal(r.rpc.error, 'boom');
    const r2 = request();
    const sync = patch(() => { throw 'plain'; }, false); // eslint-disable-line no-throw-literal
    assert.throws(() => context.with(r2.ctx, () => sync({}, () => undefined)), (e) => e === 'plain');
    assert.deepEqual(r2.span.exceptions, ['plain']);
  });

  it('passes on a value without a string form unchanged, and records nothing of it; a Symbol by its own form', async () => {
    const patch = patcher();
    const r = request();
    const bare = Object.create(null);
    const layer = patch(async () => { throw bare; }, false);
    await assert.rejects(context.with(r.ctx, () => layer({}, () => undefined)), (e) => e === bare);
    assert.deepEqual(r.span.exceptions, []);
    const sym = Symbol('odd');
    const symbolic = patch(async () => { throw sym; });
    await assert.rejects(context.with(r.ctx, () => symbolic({}, () => undefined)), (e) => e === sym);
    assert.deepEqual(r.span.exceptions, ['Symbol(odd)']);
  });

  it('leaves generator middleware, non-functions and its own wrappers alone; outside a request it only calls through', () => {
    const patch = patcher();
    function* gen() { yield 1; }
    assert.equal(patch(gen, false), gen);
    assert.equal(patch('x', false), 'x');
    const once = patch(() => 1, true);
    assert.equal(patch(once, true), once, 'a router mounted twice: wrapped once');
    const ctx = { _matchedRoute: '/a' };
    assert.equal(once(ctx, undefined), 1);
  });

  it('keeps the spans of an instrumentation it does not know', () => {
    assert.equal(koaWithoutLayerSpans({}), false);
  });
});
