'use strict';
// recordException never throws into the application (lib/exception-guard.ts): the SDK's own throws
// for values it cannot put in a string (a Symbol: `Cannot convert a Symbol value to a string`), and
// instrumentations hand it whatever the app threw or passed to next().
const assert = require('node:assert/strict');
const { TracerProvider, SimpleSpanProcessor, InMemorySpanExporter } = require('@opentelemetry/sdk-trace');
const { exceptionGuard, guardRecordException } = require('../../dist/lib/exception-guard.js');
const { nodeSdkOptions } = require('../../dist/lib/node-sdk.js');

const ODD = {
  'a Symbol': Symbol('odd'),
  'an object without a prototype': Object.create(null),
  'an object whose message getter throws': Object.defineProperty({}, 'message', { get() { throw new Error('getter'); } }),
  'an object whose toString throws': { toString() { throw new Error('toString'); } },
  'a proxy that throws on every read': new Proxy({}, { get() { throw new Error('trap'); } }),
};

function provider(processors) {
  const exporter = new InMemorySpanExporter();
  const p = new TracerProvider({ spanProcessors: [...processors, new SimpleSpanProcessor({ exporter })] });
  return { tracer: p.getTracer('test'), exporter };
}

describe('recordException guard', () => {
  it('records every value the SDK could not read as an exception event with a string message, and throws nothing', () => {
    const { tracer, exporter } = provider([exceptionGuard()]);
    for (const [what, value] of Object.entries(ODD)) {
      const span = tracer.startSpan(what);
      assert.doesNotThrow(() => span.recordException(value), what);
      span.end();
    }
    const spans = exporter.getFinishedSpans();
    assert.equal(spans.length, Object.keys(ODD).length);
    for (const span of spans) {
      const events = span.events.filter((e) => e.name === 'exception');
      assert.equal(events.length, 1, span.name);
      assert.equal(typeof events[0].attributes['exception.message'], 'string', span.name);
    }
    const sym = spans.find((s) => s.name === 'a Symbol');
    assert.equal(sym.events[0].attributes['exception.message'], 'Symbol(odd)');
    const bare = spans.find((s) => s.name === 'an object without a prototype');
    assert.equal(bare.events[0].attributes['exception.message'], 'unprintable object thrown');
  });

  it('leaves what the SDK records of an Error, a string and an object with a message as it was', () => {
    const { tracer, exporter } = provider([exceptionGuard()]);
    const err = new TypeError('bad input');
    const span = tracer.startSpan('normal');
    span.recordException(err);
    span.recordException('a string');
    span.recordException({ message: 'plain object', code: 'E_X' });
    span.end();
    const [a, b, c] = exporter.getFinishedSpans()[0].events;
    assert.deepEqual(a.attributes, { 'exception.type': 'TypeError', 'exception.message': 'bad input', 'exception.stacktrace': err.stack });
    assert.deepEqual(b.attributes, { 'exception.message': 'a string' });
    assert.deepEqual(c.attributes, { 'exception.type': 'E_X', 'exception.message': 'plain object' });
  });

  it('guards a prototype once, however many providers start', () => {
    const { tracer } = provider([exceptionGuard()]);
    const span = tracer.startSpan('one');
    const proto = Object.getPrototypeOf(span);
    const guarded = proto.recordException;
    provider([exceptionGuard()]).tracer.startSpan('two').end();
    guardRecordException(proto);
    assert.equal(proto.recordException, guarded);
    span.end();
  });

  it('comes first in the span processors nodeSdkOptions() returns: the caller\'s own, or auditrace\'s', async () => {
    const theirs = new SimpleSpanProcessor({ exporter: new InMemorySpanExporter() });
    const given = nodeSdkOptions({ spanProcessors: [theirs] }).spanProcessors;
    assert.equal(given.length, 3, 'the guard, the client URL redaction, theirs');
    assert.equal(given[2], theirs);
    const made = nodeSdkOptions({}).spanProcessors;
    assert.ok(made.length >= 2, 'auditrace\'s pipeline after the guard');
    // A trace exporter given alone: the batch processor NodeSDK would have made for it, after the guard.
    const exporter = new InMemorySpanExporter();
    const alone = nodeSdkOptions({ traceExporter: exporter });
    assert.equal(alone.traceExporter, undefined);
    assert.equal(alone.spanProcessors.length, 3);
    const tp = new TracerProvider({ spanProcessors: nodeSdkOptions({ traceExporter: exporter }).spanProcessors });
    const span = tp.getTracer('test').startSpan('alone');
    assert.doesNotThrow(() => span.recordException(Object.create(null)));
    span.end();
    await tp.forceFlush();
    assert.deepEqual(exporter.getFinishedSpans().map((s) => [s.name, s.events[0].attributes['exception.message']]), [['alone', 'unprintable object thrown']]);
    await tp.shutdown();
    for (const processors of [given, made, alone.spanProcessors]) {
      const proto = { recordException() { throw new TypeError('the SDK\'s'); } };
      processors[0].onStart(Object.create(proto), undefined);
      assert.doesNotThrow(() => proto.recordException(Symbol('x')));
    }
    await Promise.all([...made, ...alone.spanProcessors].map((p) => p.shutdown()));
  });

  it('leaves alone a span that refuses even a string', () => {
    const proto = { recordException() { throw new Error('refuses'); } };
    guardRecordException(proto);
    assert.doesNotThrow(() => proto.recordException(Symbol('x')));
    guardRecordException(null);
    guardRecordException({});
  });
});
