'use strict';
// The trace exporter's protobuf encoder (lib/otlp-trace-encoder.ts) writes exactly the bytes of
// upstream's ProtobufTraceSerializer, for any spans: compared byte for byte.
const assert = require('node:assert/strict');
const fc = require('fast-check');
const { ProtobufTraceSerializer } = require('@opentelemetry/otlp-transformer');
const { TracerProvider, InMemorySpanExporter, SimpleSpanProcessor } = require('@opentelemetry/sdk-trace');
const { resourceFromAttributes } = require('@opentelemetry/resources');
const { encodeTraceExport } = require('../../dist/lib/otlp-trace-encoder.js');
const { encodeSpansOurselves, createOtlpExporter } = require('../../dist/lib/exporters.js');

const upstream = (spans) => Buffer.from(ProtobufTraceSerializer.serializeRequest(spans));
const ours = (spans) => Buffer.from(encodeTraceExport(spans));

function sameBytes(spans) {
  const want = upstream(spans);
  const got = ours(spans);
  if (!got.equals(want)) {
    let at = 0;
    while (at < got.length && got[at] === want[at]) at++;
    assert.fail(`bytes differ at ${at} of ${want.length} (ours ${got.length}): ours ${got.subarray(at, at + 12).toString('hex')} upstream ${want.subarray(at, at + 12).toString('hex')}`);
  }
}

// --- arbitrary spans, wider than the SDK ever makes them
const KEYS = ['http.request.method', 'url.path', 'request.id', 'client.address', 'service.name', 'k'];
const key = fc.oneof(fc.constantFrom(...KEYS), fc.string({ unit: 'binary', maxLength: 12 }), fc.string({ minLength: 101, maxLength: 140 }));
// Any UTF-16 unit, lone surrogates included (written as U+FFFD by both).
const utf16 = fc.nat(0xffff).map((c) => String.fromCharCode(c));
const scalar = fc.oneof(
  fc.string({ unit: 'binary', maxLength: 40 }),
  fc.string({ unit: utf16, maxLength: 40 }),
  fc.string({ unit: utf16, minLength: 30, maxLength: 400 }),
  fc.string({ unit: 'grapheme', maxLength: 300 }),
  fc.string({ minLength: 120, maxLength: 20000 }),
  fc.integer(),
  fc.integer({ min: 0, max: 2 ** 32 + 5 }),
  fc.maxSafeInteger(),
  fc.constantFrom(2 ** 32, 2 ** 53, 2 ** 60, -(2 ** 63), 2 ** 63, -(2 ** 40) - 1, -1, -0, 0, NaN, Infinity, -Infinity, 1.5, 1e300),
  fc.double(),
  fc.boolean(),
  fc.constant(null),
  fc.constant(undefined),
  fc.uint8Array({ maxLength: 200 }),
  fc.constantFrom(1n, Symbol('s')),
);
const value = fc.letrec((tie) => ({
  v: fc.oneof({ depthSize: 'small', withCrossShrink: true }, scalar, fc.array(tie('v'), { maxLength: 4 }), fc.dictionary(fc.string({ maxLength: 6 }), tie('v'), { maxKeys: 4 })),
})).v;
const attributes = fc.dictionary(key, value, { maxKeys: 20 });
const hex = (n) => fc.oneof(fc.stringMatching(new RegExp(`^[0-9a-fA-F]{${n}}$`)), fc.stringMatching(new RegExp(`^[0-9a-f]{${n - 1}}$`)));
const hrTime = fc.oneof(
  fc.tuple(fc.integer({ min: 0, max: 2 ** 32 - 1 }), fc.integer({ min: 0, max: 999_999_999 })),
  // what a user's odd end time gives (span.end(-1500) → [-1, -5e8]) or a fractional one
  fc.tuple(fc.oneof(fc.integer({ min: -(2 ** 33), max: 2 ** 33 }), fc.double({ min: -1e10, max: 1e10, noNaN: true })),
    fc.oneof(fc.integer({ min: -1e9, max: 2e9 }), fc.double({ min: -1e9, max: 1e9, noNaN: true }))),
);
const traceState = fc.option(fc.string({ maxLength: 60 }).map((s) => ({ serialize: () => s })), { nil: undefined });
const context = fc.record({
  traceId: hex(32), spanId: hex(16), traceFlags: fc.integer({ min: 0, max: 300 }),
  isRemote: fc.option(fc.boolean(), { nil: undefined }), traceState,
});
const event = fc.record({ time: hrTime, name: fc.string({ unit: 'binary', maxLength: 30 }), attributes: fc.option(attributes, { nil: undefined }), droppedAttributesCount: fc.option(fc.nat(1000), { nil: undefined }) });
const link = fc.record({ context, attributes: fc.option(attributes, { nil: undefined }), droppedAttributesCount: fc.option(fc.nat(1000), { nil: undefined }) });

const resources = [
  { attributes: { 'service.name': 'a', 'host.name': 'h', n: 3 } },
  { attributes: { 'service.name': 'b\u00e9' }, schemaUrl: 'https://opentelemetry.io/schemas/1.30.0' },
  { attributes: undefined },
];
const scopes = [
  { name: '@opentelemetry/instrumentation-http', version: '0.300.0' },
  { name: 'app', schemaUrl: 'https://example/s', attributes: { x: 1 }, droppedAttributesCount: 2 },
  { name: '' },
];
const span = fc.record({
  ctx: context,
  parent: fc.option(fc.record({ spanId: fc.oneof(hex(16), fc.constant('')), isRemote: fc.option(fc.boolean(), { nil: undefined }) }), { nil: undefined }),
  name: fc.string({ unit: 'binary', maxLength: 200 }),
  kind: fc.option(fc.integer({ min: 0, max: 4 }), { nil: undefined }),
  startTime: hrTime, endTime: hrTime,
  attributes: fc.option(attributes, { nil: undefined }),
  droppedAttributesCount: fc.nat(200), droppedEventsCount: fc.nat(200), droppedLinksCount: fc.nat(200),
  events: fc.array(event, { maxLength: 3 }), links: fc.array(link, { maxLength: 3 }),
  status: fc.record({ code: fc.integer({ min: 0, max: 2 }), message: fc.option(fc.string({ maxLength: 150 }), { nil: undefined }) }),
  resource: fc.constantFrom(...resources), scope: fc.constantFrom(...scopes),
}).map((s) => ({
  spanContext: () => s.ctx, parentSpanContext: s.parent, name: s.name, kind: s.kind, startTime: s.startTime, endTime: s.endTime,
  attributes: s.attributes, droppedAttributesCount: s.droppedAttributesCount, droppedEventsCount: s.droppedEventsCount,
  droppedLinksCount: s.droppedLinksCount, events: s.events, links: s.links, status: s.status, resource: s.resource,
  instrumentationScope: s.scope,
}));

// Values that repeat from span to span, under keys shared by span, event, link and resource
// attributes (the encoder copies an attribute's bytes once its value repeats): -0 after 0, NaN,
// a string just over the memo's length limit, a key whose value changes type.
const repeated = fc.dictionary(
  fc.constantFrom('service.name', 'url.path', 'n', 'x', 'k'.repeat(101)),
  fc.constantFrom('GET', 'b\u00e9', '', 'x'.repeat(128), 'x'.repeat(129), 0, -0, 1, 2 ** 40, -(2 ** 63), 1.5, NaN, Infinity, true, null, [1, 'a']),
  { maxKeys: 5 },
);
const repeatingSpan = fc.tuple(span, repeated, fc.array(repeated, { maxLength: 2 }), fc.array(repeated, { maxLength: 2 })).map(([s, attributes, ev, ln]) => ({
  ...s,
  attributes,
  events: ev.map((a, i) => ({ time: [i, 0], name: 'e', attributes: a })),
  links: ln.map((a) => ({ context: { traceId: 'ab'.repeat(16), spanId: 'cd'.repeat(8), traceFlags: 1 }, attributes: a })),
  resource: { attributes: { 'service.name': 'GET', n: 1 } },
}));

describe('OTLP trace encoding: upstream\'s bytes, our cost', function () {
  this.timeout(60_000);
  it('any batch of spans: the same bytes as upstream\'s serializer (property)', () => {
    fc.assert(fc.property(fc.array(span, { maxLength: 8 }), (spans) => sameBytes(spans)), { numRuns: 600 });
  });

  it('batches whose spans repeat attribute values: the same bytes, batch after batch (property)', () => {
    fc.assert(fc.property(fc.array(repeatingSpan, { maxLength: 12 }), (spans) => sameBytes(spans)), { numRuns: 600 });
  });

  it('spans the SDK made (a server span with a link, an exception event, children): the same bytes, export after export', async () => {
    const exporter = new InMemorySpanExporter();
    const provider = new TracerProvider({
      resource: resourceFromAttributes({ 'service.name': 'enc', 'service.instance.id': 'i-1' }),
      spanProcessors: [new SimpleSpanProcessor({ exporter })],
    });
    const tracer = provider.getTracer('@opentelemetry/instrumentation-http', '0.300.0');
    const other = provider.getTracer('app');
    for (let i = 0; i < 300; i++) {
      const s = tracer.startSpan('GET', {
        kind: 1,
        attributes: { 'http.request.method': 'GET', 'url.path': `/x/${i}`, 'request.id': `r-${i}`, 'server.port': 8080, 'user_agent.original': 'u'.repeat(i) },
        links: i % 3 ? [] : [{ context: { traceId: 'ab'.repeat(16), spanId: 'cd'.repeat(8), traceFlags: 1, isRemote: true }, attributes: { 'auditrace.link': 'untrusted_parent' } }],
      });
      if (i % 5 === 0) s.recordException(new RangeError(`bad ${i} \u00e9`));
      other.startSpan('child', {}, require('@opentelemetry/api').trace.setSpan(require('@opentelemetry/api').ROOT_CONTEXT, s)).end();
      s.setAttribute('http.response.status_code', 200 + (i % 4) * 100);
      s.end();
    }
    await provider.forceFlush();
    const spans = exporter.getFinishedSpans();
    assert.equal(spans.length, 600);
    assert.equal(spans.filter((s) => s.events.length === 1).length, 60, 'the exceptions');
    assert.equal(spans.filter((s) => s.links.length === 1).length, 100, 'the links');
    sameBytes(spans);
    sameBytes(spans.slice(0, 1));
    sameBytes([]);
    sameBytes(spans);
  });

  it('a span of over 2 MiB (lengths of three and four bytes) and a batch past the scratch buffer', () => {
    const big = { 'a.large': 'x'.repeat(2 * 1024 * 1024 + 7), nested: { deep: ['y'.repeat(70_000), new Uint8Array(20_000)] } };
    fc.assert(fc.property(span, (s) => sameBytes([{ ...s, attributes: big }, s])), { numRuns: 3 });
    fc.assert(fc.property(fc.array(span, { minLength: 1, maxLength: 2 }), (spans) => sameBytes(spans)), { numRuns: 50 });
  });

  it('a name that is not a string (untyped code) is written as its String(), without growing the buffer', () => {
    fc.assert(fc.property(span, fc.oneof(fc.integer(), fc.constant(null), fc.constant(undefined), fc.boolean()), (s, name) => {
      const got = ours([{ ...s, name }]);
      assert.ok(got.equals(upstream([{ ...s, name: String(name) }])));
    }), { numRuns: 100 });
    const big = ours(Array.from({ length: 64 }, () => ({ ...fc.sample(span, 1)[0], name: 42 })));
    assert.ok(big.length < 10 * 1024 * 1024, `${big.length} bytes`);
  });

  it('is used by the protobuf trace exporter, and only there', () => {
    const cfg = { endpoint: 'http://127.0.0.1:1/v1/traces', headers: {}, timeoutMs: 1000, compression: 'none' };
    const proto = createOtlpExporter('traces', { ...cfg, protocol: 'http/protobuf' });
    assert.equal(proto._delegate._serializer.serializeRequest, encodeTraceExport);
    const json = createOtlpExporter('traces', { ...cfg, protocol: 'http/json' });
    assert.notEqual(json._delegate._serializer.serializeRequest, encodeTraceExport);
    const logs = createOtlpExporter('logs', { ...cfg, protocol: 'http/protobuf' });
    assert.notEqual(logs._delegate._serializer.serializeRequest, encodeTraceExport);
    assert.equal(encodeSpansOurselves({ _delegate: { _serializer: {} } }), false, 'an exporter of another shape is left alone');
  });
});
