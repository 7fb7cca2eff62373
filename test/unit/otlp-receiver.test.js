'use strict';
// Proves test/helpers/otlp-receiver.js decodes what the real OpenTelemetry
// exporters put on the wire, so other tests can trust what it reports.
const assert = require('node:assert/strict');
const zlib = require('node:zlib');
const { ROOT_CONTEXT, SeverityNumber, SpanKind, SpanStatusCode, ValueType, trace } = require('@opentelemetry/api');
const { ExportResultCode } = require('@opentelemetry/core');
const { resourceFromAttributes } = require('@opentelemetry/resources');
const { TracerProvider, SimpleSpanProcessor, InMemorySpanExporter } = require('@opentelemetry/sdk-trace');
const { LoggerProvider, SimpleLogRecordProcessor } = require('@opentelemetry/sdk-logs');
const { MeterProvider, PeriodicExportingMetricReader } = require('@opentelemetry/sdk-metrics');
const { OTLPTraceExporter: ProtoTraceExporter } = require('@opentelemetry/exporter-trace-otlp-proto');
const { OTLPTraceExporter: JsonTraceExporter } = require('@opentelemetry/exporter-trace-otlp-http');
const { OTLPLogExporter: ProtoLogExporter } = require('@opentelemetry/exporter-logs-otlp-proto');
const { OTLPLogExporter: JsonLogExporter } = require('@opentelemetry/exporter-logs-otlp-http');
const { OTLPMetricExporter: ProtoMetricExporter } = require('@opentelemetry/exporter-metrics-otlp-proto');
const { startOtlpReceiver } = require('../helpers/otlp-receiver');

const RESOURCE_ATTRS = { 'service.name': 'otlp-receiver-test', 'service.version': '9.9.9', 'audit.shard': 7 };
const resource = () => resourceFromAttributes(RESOURCE_ATTRS);
const LINKED = { traceId: '0af7651916cd43dd8448eb211c80319c', spanId: 'b7ad6b7169203331', traceFlags: 1 };

const ENCODINGS = [
  { label: 'protobuf', contentType: 'application/x-protobuf', Trace: ProtoTraceExporter, Log: ProtoLogExporter },
  { label: 'json', contentType: 'application/json', Trace: JsonTraceExporter, Log: JsonLogExporter },
];

function assertResource(item) {
  for (const [k, v] of Object.entries(RESOURCE_ATTRS)) assert.equal(item.resource[k], v, `resource ${k}`);
}

async function post(rx, path, body, headers) {
  const res = await fetch(rx.url + path, { method: 'POST', body, headers });
  return { status: res.status, contentType: res.headers.get('content-type'), text: await res.text() };
}

describe('otlp-receiver test helper', function () {
  let rx;
  beforeEach(async () => { rx = await startOtlpReceiver(); });
  afterEach(async () => { await rx.close(); });

  // Emits a SERVER parent (attributes, event, error status) and a CLIENT child
  // (with a link) through a real exporter, then shuts the provider down.
  async function emitSpans(exporter) {
    const provider = new TracerProvider({ resource: resource(), spanProcessors: [new SimpleSpanProcessor({ exporter })] });
    const tracer = provider.getTracer('receiver-test', '1.2.3');
    const parent = tracer.startSpan('GET /audit', {
      kind: SpanKind.SERVER,
      attributes: { 'http.request.method': 'GET', 'audit.count': 42, 'audit.ratio': 0.25, 'audit.ok': true, 'audit.tags': ['a', 'b'] },
    });
    parent.addEvent('audit.checkpoint', { step: 1, 'step.name': 'verify' });
    parent.setStatus({ code: SpanStatusCode.ERROR, message: 'denied' });
    const child = tracer.startSpan('db.query', {
      kind: SpanKind.CLIENT, links: [{ context: LINKED, attributes: { 'link.reason': 'batch' } }],
    }, trace.setSpan(ROOT_CONTEXT, parent));
    child.end();
    parent.end();
    await provider.shutdown();
    return { parent: parent.spanContext(), child: child.spanContext() };
  }

  for (const enc of ENCODINGS) {
    it(`decodes spans from the ${enc.label} trace exporter`, async () => {
      const ids = await emitSpans(new enc.Trace({ url: `${rx.url}/v1/traces` }));
      await rx.waitFor(() => rx.spans().length === 2);

      const parent = rx.spans().find((s) => s.name === 'GET /audit');
      const child = rx.spans().find((s) => s.name === 'db.query');
      assert.match(parent.traceId, /^[0-9a-f]{32}$/);
      assert.equal(parent.traceId, ids.parent.traceId);
      assert.equal(parent.spanId, ids.parent.spanId);
      assert.equal(parent.parentSpanId, '');
      assert.equal(child.traceId, ids.parent.traceId);
      assert.equal(child.spanId, ids.child.spanId);
      assert.equal(child.parentSpanId, ids.parent.spanId);
      assert.equal(parent.kind, 2); // SPAN_KIND_SERVER
      assert.equal(child.kind, 3); // SPAN_KIND_CLIENT
      assert.deepEqual(parent.attributes, {
        'http.request.method': 'GET', 'audit.count': 42, 'audit.ratio': 0.25, 'audit.ok': true, 'audit.tags': ['a', 'b'],
      });
      assert.deepEqual(parent.events.map(({ name, attributes }) => ({ name, attributes })),
        [{ name: 'audit.checkpoint', attributes: { step: 1, 'step.name': 'verify' } }]);
      assert.deepEqual(parent.status, { code: 2, message: 'denied' });
      assert.deepEqual(child.links, [{ traceId: LINKED.traceId, spanId: LINKED.spanId, attributes: { 'link.reason': 'batch' } }]);
      assert.ok(parent.startTimeUnixNano > 1.6e18 && parent.endTimeUnixNano >= parent.startTimeUnixNano);
      assert.deepEqual(parent.scope, { name: 'receiver-test', version: '1.2.3' });
      assertResource(parent);
      assert.deepEqual(rx.requests.map((r) => [r.path, r.signal, r.contentType.split(';')[0]]),
        [['/v1/traces', 'traces', enc.contentType], ['/v1/traces', 'traces', enc.contentType]]);
    });

    it(`decodes log records from the ${enc.label} log exporter`, async () => {
      const exporter = new enc.Log({ url: `${rx.url}/v1/logs` });
      const provider = new LoggerProvider({ resource: resource(), processors: [new SimpleLogRecordProcessor({ exporter })] });
      provider.getLogger('audit-logger', '0.1.0').emit({
        eventName: 'audit.login',
        severityNumber: SeverityNumber.WARN,
        severityText: 'WARN',
        body: { user: 'u-1', roles: ['admin', 'ops'] },
        attributes: { 'user.id': 'u-1', attempts: 3, digest: new Uint8Array([1, 2, 3]) },
        context: trace.setSpanContext(ROOT_CONTEXT, LINKED),
      });
      await provider.shutdown();
      await rx.waitFor(() => rx.logs().length === 1);

      const [log] = rx.logs();
      assert.equal(log.eventName, 'audit.login');
      assert.equal(log.severityNumber, SeverityNumber.WARN);
      assert.equal(log.severityText, 'WARN');
      assert.deepEqual(log.body, { user: 'u-1', roles: ['admin', 'ops'] });
      assert.deepEqual(log.attributes, { 'user.id': 'u-1', attempts: 3, digest: 'AQID' });
      assert.equal(log.traceId, LINKED.traceId);
      assert.equal(log.spanId, LINKED.spanId);
      assert.ok(log.timeUnixNano > 1.6e18 && log.observedTimeUnixNano > 1.6e18);
      assert.deepEqual(log.scope, { name: 'audit-logger', version: '0.1.0' });
      assertResource(log);
      assert.equal(rx.requests[0].signal, 'logs');
    });
  }

  it('decodes metrics from the protobuf metric exporter', async () => {
    const reader = new PeriodicExportingMetricReader({
      exporter: new ProtoMetricExporter({ url: `${rx.url}/v1/metrics` }), exportIntervalMillis: 60_000,
    });
    const provider = new MeterProvider({ resource: resource(), readers: [reader] });
    const meter = provider.getMeter('audit-meter', '2.0.0');
    const counter = meter.createCounter('audit.events', { description: 'Audit events', unit: '{event}', valueType: ValueType.INT });
    counter.add(3, { outcome: 'ok' });
    counter.add(4, { outcome: 'ok' });
    counter.add(1, { outcome: 'denied' });
    meter.createHistogram('audit.latency', { unit: 'ms' }).record(12.5);
    await provider.forceFlush();
    await rx.waitFor(() => rx.metrics().length >= 2);

    const events = rx.metrics().find((m) => m.name === 'audit.events');
    assert.equal(events.type, 'sum');
    assert.equal(events.isMonotonic, true);
    assert.equal(events.description, 'Audit events');
    assert.equal(events.unit, '{event}');
    const byOutcome = Object.fromEntries(events.dataPoints.map((p) => [p.attributes.outcome, p.value]));
    assert.deepEqual(byOutcome, { ok: 7, denied: 1 });
    const latency = rx.metrics().find((m) => m.name === 'audit.latency');
    assert.equal(latency.type, 'histogram');
    assert.equal(latency.dataPoints[0].count, 1);
    assert.equal(latency.dataPoints[0].sum, 12.5);
    assert.deepEqual(events.scope, { name: 'audit-meter', version: '2.0.0' });
    assertResource(events);
    await provider.shutdown();
  });

  for (const enc of ENCODINGS) {
    it(`accepts gzip-compressed ${enc.label} exports`, async () => {
      const ids = await emitSpans(new enc.Trace({ url: `${rx.url}/v1/traces`, compression: 'gzip' }));
      await rx.waitFor(() => rx.spans().length === 2);
      assert.ok(rx.requests.every((r) => r.contentEncoding === 'gzip'));
      assert.equal(rx.spans().find((s) => s.name === 'db.query').parentSpanId, ids.parent.spanId);
    });
  }

  it('simulates an outage with setStatus(503), then recovers with setStatus(200)', async () => {
    const memory = new InMemorySpanExporter();
    const provider = new TracerProvider({ spanProcessors: [new SimpleSpanProcessor({ exporter: memory })] });
    provider.getTracer('t').startSpan('during-outage').end();
    const spans = memory.getFinishedSpans();
    // Short timeout: the exporter's retry backoff (~1s) exceeds it, so it gives up quickly.
    const exporter = new ProtoTraceExporter({ url: `${rx.url}/v1/traces`, timeoutMillis: 500 });
    const exportOnce = () => new Promise((resolve) => exporter.export(spans, resolve));

    rx.setStatus(503);
    const failed = await exportOnce();
    assert.equal(failed.code, ExportResultCode.FAILED);
    assert.equal(rx.spans().length, 0);
    assert.ok(rx.requests.length >= 1 && rx.requests.every((r) => r.status === 503));

    rx.setStatus(200);
    const ok = await exportOnce();
    assert.equal(ok.code, ExportResultCode.SUCCESS);
    assert.deepEqual(rx.spans().map((s) => s.name), ['during-outage']);
    await exporter.shutdown();
    await provider.shutdown();
  });

  it('can start in outage mode via the status option', async () => {
    const down = await startOtlpReceiver({ status: 503 });
    try {
      const res = await post(down, '/v1/logs', '{}', { 'content-type': 'application/json' });
      assert.equal(res.status, 503);
      assert.equal(down.logs().length, 0);
    } finally {
      await down.close();
    }
  });

  it('rejects malformed input with 400, records nothing and keeps serving', async () => {
    const proto = { 'content-type': 'application/x-protobuf' };
    const json = { 'content-type': 'application/json' };
    const bad = [
      ['/v1/traces', Buffer.from([0x0a, 0xff, 0x01]), proto], // length prefix beyond the end
      ['/v1/logs', '{"resourceLogs": [', json],
      ['/v1/metrics', '{"resourceMetrics": 5}', json],
      ['/v1/traces', '[1, 2]', json],
      ['/v1/traces', 'definitely not gzip', { ...json, 'content-encoding': 'gzip' }],
    ];
    for (const [path, body, headers] of bad) {
      const res = await post(rx, path, body, headers);
      assert.equal(res.status, 400, `${path} ${String(body)}`);
    }
    assert.equal((await post(rx, '/v1/profiles', '{}', json)).status, 404);
    assert.equal((await post(rx, '/v1/traces', '{}', { 'content-type': 'text/plain' })).status, 415);
    assert.equal(rx.requests.length, 0);
    assert.equal(rx.spans().length + rx.logs().length + rx.metrics().length, 0);

    // Hand-written OTLP/JSON exercising encodings the JS exporters never emit
    // (int64 as string, upper-case hex ids), gzipped by hand.
    const body = zlib.gzipSync(JSON.stringify({
      resourceSpans: [{
        resource: { attributes: [{ key: 'service.name', value: { stringValue: 'hand' } }] },
        scopeSpans: [{
          scope: { name: 'manual' },
          spans: [{
            traceId: LINKED.traceId.toUpperCase(), spanId: 'B7AD6B7169203331', name: 'manual', kind: 1,
            startTimeUnixNano: '1700000000000000000', endTimeUnixNano: '1700000000000001000',
            attributes: [{ key: 'big', value: { intValue: '9007199254740991' } }, { key: 'raw', value: { bytesValue: 'AQID' } }],
          }],
        }],
      }],
    }));
    const ok = await post(rx, '/v1/traces', body, { ...json, 'content-encoding': 'gzip' });
    assert.equal(ok.status, 200);
    assert.equal(ok.contentType, 'application/json');
    assert.equal(ok.text, '{}');
    const [span] = rx.spans();
    assert.equal(span.traceId, LINKED.traceId);
    assert.equal(span.spanId, LINKED.spanId);
    // Timestamps become Numbers: near 1.7e18 a float64 step is 256ns, so 1000ns reads as 1024ns.
    assert.equal(span.endTimeUnixNano - span.startTimeUnixNano, 1024);
    assert.deepEqual(span.attributes, { big: Number.MAX_SAFE_INTEGER, raw: 'AQID' });
    assert.deepEqual(span.resource, { 'service.name': 'hand' });
    assert.equal(rx.requests[0].bytes, body.length);
  });

  it('waitFor rejects descriptively on timeout; reset clears everything', async () => {
    await assert.rejects(rx.waitFor(() => rx.spans().length > 0, { timeoutMs: 50 }),
      /waitFor timed out after 50ms \(traces=0 logs=0 metrics=0 requests=0\)/);
    const res = await post(rx, '/v1/logs', JSON.stringify({ resourceLogs: [{ scopeLogs: [{ logRecords: [{ body: { stringValue: 'x' } }] }] }] }),
      { 'content-type': 'application/json' });
    assert.equal(res.status, 200);
    assert.equal(await rx.waitFor(() => rx.logs()[0].body), 'x');
    const requests = rx.requests;
    rx.reset();
    assert.equal(rx.logs().length, 0);
    assert.equal(requests.length, 0);
  });
});
