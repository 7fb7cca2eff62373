'use strict';
// What an error thrown on the way through a framework's layers leaves on the server span
// (lib/layer-spans.ts recordServerError): the application's own errors as they are; an error the
// framework raised because of the client's input by its kind only, never its message.
const assert = require('node:assert/strict');
const { TracerProvider, SimpleSpanProcessor, InMemorySpanExporter } = require('@opentelemetry/sdk-trace');
const { recordServerError } = require('../../dist/lib/layer-spans.js');

function serverSpan() {
  const exporter = new InMemorySpanExporter();
  const tp = new TracerProvider({ spanProcessors: [new SimpleSpanProcessor({ exporter })] });
  const span = tp.getTracer('t').startSpan('GET /login');
  return { rpc: { type: 0, span }, finish: () => { span.end(); return exporter.getFinishedSpans()[0]; } };
}

/** As body-parser (express.json) raises it for `{"user":"bob","password": hunter2SECRET}`. */
function bodyParserError() {
  const body = '{"user":"bob","password": hunter2SECRET}';
  let err;
  try { JSON.parse(body); } catch (e) { err = e; }
  return Object.assign(err, { status: 400, statusCode: 400, expose: true, type: 'entity.parse.failed', body });
}

describe('errors recorded on the server span', () => {
  it('a client error (http-errors 4xx, e.g. malformed JSON): its kind and status, none of the body', () => {
    const { rpc, finish } = serverSpan();
    recordServerError(rpc, bodyParserError());
    const span = finish();
    assert.equal(rpc.error, 'client error 400 (entity.parse.failed)');
    assert.equal(span.events.length, 1);
    const a = span.events[0].attributes;
    assert.equal(a['exception.type'], 'SyntaxError');
    assert.equal(a['exception.message'], 'client error 400 (entity.parse.failed)');
    assert.equal(a['exception.stacktrace'], undefined, 'the stack repeats the message');
    assert.ok(!JSON.stringify({ events: span.events, attributes: span.attributes, status: span.status }).includes('hunter2'));
  });

  it('the application\'s own error (no 4xx status): message and stack as thrown, once however often it passes', () => {
    const { rpc, finish } = serverSpan();
    const err = new Error('inventory service down');
    recordServerError(rpc, err);
    recordServerError(rpc, err);
    const span = finish();
    assert.equal(rpc.error, 'inventory service down');
    assert.equal(span.events.length, 1);
    assert.equal(span.events[0].attributes['exception.message'], 'inventory service down');
    assert.match(span.events[0].attributes['exception.stacktrace'], /inventory service down/);
  });

  it('a 5xx http-error keeps its message (the server\'s own failure)', () => {
    const { rpc, finish } = serverSpan();
    recordServerError(rpc, Object.assign(new Error('db pool exhausted'), { status: 503 }));
    assert.equal(finish().events[0].attributes['exception.message'], 'db pool exhausted');
  });
});
