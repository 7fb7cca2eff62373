'use strict';
// A server span takes the request's attribute object itself (lib/http-server.ts handOver) where the
// SDK's setAttributes would have given it exactly that object's contents; anywhere else it falls
// back. Either way the span ends up as setAttributes would have left it, later attributes included.
const assert = require('node:assert/strict');
const fc = require('fast-check');
const { TracerProvider, InMemorySpanExporter, SimpleSpanProcessor } = require('@opentelemetry/sdk-trace');
const { trace, ROOT_CONTEXT } = require('@opentelemetry/api');
const { handOver } = require('../../dist/lib/http-server.js');

function tracer(spanLimits) {
  const exporter = new InMemorySpanExporter();
  const provider = new TracerProvider({ spanLimits, spanProcessors: [new SimpleSpanProcessor(exporter)] });
  return { t: provider.getTracer('t'), exporter };
}

function seen(span) {
  return { attributes: span.attributes, order: Object.keys(span.attributes), dropped: span.droppedAttributesCount };
}

describe('the server span takes its attribute object', () => {
  it('with the default limits: taken (the SDK\'s shape is the one handOver knows)', () => {
    const { t } = tracer(undefined);
    const span = t.startSpan('GET', {}, ROOT_CONTEXT);
    const attributes = { 'http.request.method': 'GET', 'url.path': '/x', 'network.peer.port': 4711 };
    assert.equal(handOver(span, attributes), true);
    assert.equal(span.attributes, attributes);
    span.setAttribute('http.response.status_code', 200);
    span.end();
    assert.deepEqual(span.attributes, { 'http.request.method': 'GET', 'url.path': '/x', 'network.peer.port': 4711, 'http.response.status_code': 200 });
  });

  it('a value-length limit, too few attribute slots, a non-recording span or a foreign span: not taken', () => {
    const attributes = () => ({ a: 'abcdef', b: 1, c: 'x' });
    assert.equal(handOver(tracer({ attributeValueLengthLimit: 4 }).t.startSpan('s', {}, ROOT_CONTEXT), attributes()), false);
    assert.equal(handOver(tracer({ attributeCountLimit: 2 }).t.startSpan('s', {}, ROOT_CONTEXT), attributes()), false);
    assert.equal(handOver(trace.wrapSpanContext({ traceId: '1'.repeat(32), spanId: '1'.repeat(16), traceFlags: 1 }), attributes()), false);
    const started = tracer(undefined).t.startSpan('s', { attributes: { k: 'v' } }, ROOT_CONTEXT);
    assert.equal(handOver(started, attributes()), false, 'a span that already has attributes');
    for (const foreign of [{}, { _attributesCount: 0 }, { _attributesCount: 0, _spanLimits: null, attributes: {} },
      { _attributesCount: 0, _spanLimits: { attributeValueLengthLimit: Infinity, attributeCountLimit: '128' }, attributes: {} },
      { _attributesCount: 0, _spanLimits: { attributeValueLengthLimit: Infinity, attributeCountLimit: 128 }, attributes: null }]) {
      assert.equal(handOver(foreign, attributes()), false, JSON.stringify(foreign));
    }
  });

  it('for any attributes and limits, the span ends as setAttributes leaves it, later attributes and drops included (property)', () => {
    const value = fc.oneof(fc.string({ maxLength: 12 }), fc.integer(), fc.double());
    const limit = fc.option(fc.nat(8), { nil: undefined });
    fc.assert(fc.property(
      fc.dictionary(fc.string({ minLength: 1, maxLength: 6 }), value, { maxKeys: 8 }),
      fc.array(fc.tuple(fc.string({ minLength: 1, maxLength: 6 }), value), { maxLength: 4 }),
      limit, limit,
      (attributes, later, attributeCountLimit, attributeValueLengthLimit) => {
        const limits = { ...(attributeCountLimit !== undefined ? { attributeCountLimit } : {}), ...(attributeValueLengthLimit !== undefined ? { attributeValueLengthLimit } : {}) };
        const { t } = tracer(limits);
        const theirs = t.startSpan('s', {}, ROOT_CONTEXT);
        theirs.setAttributes({ ...attributes });
        const ours = t.startSpan('s', {}, ROOT_CONTEXT);
        const copy = { ...attributes };
        if (!handOver(ours, copy)) ours.setAttributes(copy);
        for (const [k, v] of later) { theirs.setAttribute(k, v); ours.setAttribute(k, v); }
        theirs.end();
        ours.end();
        assert.deepEqual(seen(ours), seen(theirs));
      }), { numRuns: 1500 });
  });
});
