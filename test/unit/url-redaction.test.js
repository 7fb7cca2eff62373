'use strict';
// What a URL may say in telemetry (lib/url-redaction.ts): keys and names, never values.
const assert = require('node:assert/strict');
const fc = require('fast-check');
const { SpanKind } = require('@opentelemetry/api');
const { TracerProvider, SimpleSpanProcessor, InMemorySpanExporter } = require('@opentelemetry/sdk-trace');
const { redactQuery, redactPathParams, redactUrlQuery, clientUrlRedaction } = require('../../dist/lib/url-redaction.js');

const RUNS = Number(process.env.FC_RUNS || 300);

describe('URL redaction', () => {
  it('a query keeps its keys; values, and parts that have no key, are REDACTED', () => {
    assert.equal(redactQuery('token=s3cret&page=2'), 'token=REDACTED&page=REDACTED');
    assert.equal(redactQuery('eyJhbGciOiJIUzI1NiJ9.SECRETJWT'), 'REDACTED', 'a bare part may be a token on its own');
    assert.equal(redactQuery('a=1&&b&=c'), 'a=REDACTED&REDACTED&=REDACTED');
    assert.equal(redactQuery(''), '');
  });

  it('no value of any query survives, for any query', () => {
    fc.assert(fc.property(fc.array(fc.tuple(fc.string({ maxLength: 8 }), fc.option(fc.string({ minLength: 6, maxLength: 20 }))), { maxLength: 6 }), (pairs) => {
      const parts = pairs.map(([k, v]) => (v === null ? k : `${k}=${v}`)).filter((p) => p && !p.includes('&'));
      const out = redactQuery(parts.join('&'));
      for (const p of parts) {
        const eq = p.indexOf('=');
        const value = eq >= 0 ? p.slice(eq + 1) : p;
        if (value.length >= 6 && !value.includes('REDACTED') && !value.includes('=')) assert.ok(!out.split('&').some((x) => x.endsWith(`=${value}`) || x === value), `${value} in ${out}`);
      }
    }), { numRuns: RUNS });
  });

  it('path parameters keep their names: ;jsessionid=… is REDACTED, a path without ; is untouched', () => {
    assert.equal(redactPathParams('/cb;jsessionid=SESSIONSECRET'), '/cb;jsessionid=REDACTED');
    assert.equal(redactPathParams('/a;v=1;SECRET/b;x=2'), '/a;v=REDACTED;REDACTED/b;x=REDACTED');
    assert.equal(redactPathParams('/orders/42'), '/orders/42');
  });

  it('a whole URL: query values redacted, fragment dropped, the rest as it was', () => {
    assert.equal(redactUrlQuery('http://REDACTED:REDACTED@127.0.0.1:40297/api?access_token=HTTPGETSECRET&x=1'),
      'http://REDACTED:REDACTED@127.0.0.1:40297/api?access_token=REDACTED&x=REDACTED');
    assert.equal(redactUrlQuery('https://h/cb#access_token=T'), 'https://h/cb');
    assert.equal(redactUrlQuery('https://h/cb?code=C#state=S'), 'https://h/cb?code=REDACTED');
    assert.equal(redactUrlQuery('https://h/p'), 'https://h/p');
  });

  it('outgoing calls\' spans: url.full and url.query redacted as the span starts; other spans untouched', () => {
    const exporter = new InMemorySpanExporter();
    const tp = new TracerProvider({ spanProcessors: [clientUrlRedaction(), new SimpleSpanProcessor({ exporter })] });
    const tracer = tp.getTracer('test');
    tracer.startSpan('GET', { kind: SpanKind.CLIENT, attributes: {
      'url.full': 'http://127.0.0.1:1/api?api_key=FETCHSECRET', 'url.query': '?api_key=FETCHSECRET', 'http.url': 'http://h/x?sig=S' } }).end();
    tracer.startSpan('GET', { kind: SpanKind.SERVER, attributes: { 'url.query': 'q=REDACTED' } }).end();
    tracer.startSpan('internal', { attributes: { 'url.full': 'http://h/?keep=me' } }).end();
    const [client, server, internal] = exporter.getFinishedSpans();
    assert.equal(client.attributes['url.full'], 'http://127.0.0.1:1/api?api_key=REDACTED');
    assert.equal(client.attributes['url.query'], '?api_key=REDACTED');
    assert.equal(client.attributes['http.url'], 'http://h/x?sig=REDACTED');
    assert.ok(!JSON.stringify(client.attributes).includes('SECRET'));
    assert.equal(server.attributes['url.query'], 'q=REDACTED');
    assert.equal(internal.attributes['url.full'], 'http://h/?keep=me');
  });
});
