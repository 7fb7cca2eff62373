'use strict';
// The server side of HTTP is auditrace's own (lib/http-server.ts), not instrumentation-http's:
// these pin what it must still give — the span, its attributes, its end in every way a response
// can end, the duration metric — and what it must never give (forged addresses, query values).
const assert = require('node:assert/strict');
const fs = require('node:fs');
const http = require('node:http');
const os = require('node:os');
const path = require('node:path');
const { startOtlpReceiver } = require('../helpers/otlp-receiver.js');
const { startApp } = require('../helpers/run-app.js');
const { normalizeMethod, serverAddress } = require('../../dist/lib/http-server.js');

function send(port, { method = 'GET', urlPath, headers = {}, abortAfterMs, body }) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method, path: urlPath, headers, agent: false }, (res) => {
      let body = '';
      res.on('data', (d) => { body += d; });
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body }));
      res.on('error', () => undefined);
    });
    // Destroyed after the response began: no 'error', only 'close'.
    if (abortAfterMs) req.on('close', () => setTimeout(() => resolve({ aborted: true }), 50));
    req.on('error', (err) => (abortAfterMs ? resolve({ aborted: true }) : reject(err)));
    if (abortAfterMs) setTimeout(() => req.destroy(), abortAfterMs);
    if (body !== undefined) {
      req.on('continue', () => req.end(body));
      req.flushHeaders(); // the body waits for the 100, the headers must not
    }
    else req.end();
  });
}

describe('http server: auditrace\'s own server span', function () {
  let rx; let app; let port; let dir; let auditFile;
  const spansFor = (p) => rx.spans().filter((s) => s.kind === 2 && s.attributes['url.path'] === p);
  const access = () => fs.readFileSync(auditFile, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l))
    .filter((r) => r['event.name'] === 'http_request');

  before(async () => {
    rx = await startOtlpReceiver();
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'auditrace-server-span-'));
    auditFile = path.join(dir, 'audit.jsonl');
    app = startApp('edge/server-span.js', {
      env: {
        OTEL_EXPORTER_OTLP_ENDPOINT: rx.url, OTEL_SERVICE_NAME: 'server-span', OTEL_LOGS_EXPORTER: 'none',
        OTEL_BSP_SCHEDULE_DELAY: '100', OTEL_METRIC_EXPORT_INTERVAL: '300', AUDITRACE_AUDIT_FILE: auditFile,
      },
    });
    port = Number((await app.waitForOutput(/listening (\d+)/))[1]);
    await send(port, { urlPath: '/ok?token=s3cret&page=2', headers: { host: 'shop.example:8443', 'user-agent': `ua-${'x'.repeat(1000)}`, 'x-forwarded-for': '6.6.6.6' } });
    await send(port, { urlPath: '/fail' });
    const thrown = await send(port, { urlPath: '/throw' });
    assert.equal(thrown.body, 'caught handler broke', 'the application still handles its own error');
    await send(port, { urlPath: '/hang', abortAfterMs: 150 });
    await send(port, { urlPath: '/partial', abortAfterMs: 150 });
    await send(port, { urlPath: '/after-end' });
    await send(port, { urlPath: '/throw-after-end' });
    await send(port, { urlPath: '/bad-end' });
    await send(port, { method: 'POST', urlPath: '/expect', headers: { expect: '100-continue', 'content-length': '2' }, body: 'hi' });
    await send(port, { method: 'PROPFIND', urlPath: '/dav', headers: { host: '[::1]' } });
    await send(port, { urlPath: '/handoff' });
    await rx.waitFor(() => ['/ok', '/fail', '/throw', '/hang', '/dav', '/handoff', '/partial', '/after-end', '/throw-after-end', '/bad-end', '/expect'].every((p) => spansFor(p).length > 0), { timeoutMs: 15_000 });
    await rx.waitFor(() => access().length >= 11, { timeoutMs: 15_000 });
  });
  after(async () => {
    await app?.kill('SIGKILL');
    await rx?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('is the http instrumentation\'s SERVER span with stable-semconv attributes, computed from what the peer cannot forge', () => {
    const [s] = spansFor('/ok');
    assert.equal(s.scope.name, '@opentelemetry/instrumentation-http');
    assert.equal(s.name, 'GET');
    const a = s.attributes;
    assert.equal(a['http.request.method'], 'GET');
    assert.equal(a['url.scheme'], 'http');
    assert.equal(a['url.query'], 'token=REDACTED&page=REDACTED', 'keys, never values');
    assert.equal(a['server.address'], 'shop.example');
    assert.equal(a['server.port'], 8443);
    assert.equal(a['network.protocol.version'], '1.1');
    assert.equal(typeof a['network.peer.port'], 'number');
    assert.equal(a['network.peer.address'], '127.0.0.1');
    assert.equal(a['client.address'], '127.0.0.1', 'not the forged X-Forwarded-For of an untrusted peer');
    assert.equal(a['user_agent.original'].length, 256, 'a client\'s user agent is bounded');
    assert.equal(a['http.response.status_code'], 200);
    assert.match(a['request.id'], /^[0-9a-f]{32}$/);
    assert.equal(s.status.code, 0);
    assert.equal(a['error.type'], undefined);
  });

  it('a 5xx response is an error span with error.type = the status', () => {
    const [s] = spansFor('/fail');
    assert.equal(s.attributes['http.response.status_code'], 503);
    assert.equal(s.attributes['error.type'], '503');
    assert.equal(s.status.code, 2);
  });

  it('a handler that throws: the span records the exception; the app\'s own 500 and the error type reach span and record', () => {
    const spans = spansFor('/throw');
    assert.equal(spans.length, 1);
    const [s] = spans;
    assert.equal(s.status.code, 2);
    assert.equal(s.status.message, 'handler broke');
    assert.equal(s.attributes['error.type'], 'RangeError');
    assert.equal(s.attributes['http.response.status_code'], 500, 'the uncaughtException handler answered');
    assert.equal(s.events.filter((e) => e.name === 'exception').length, 1);
    assert.equal(s.events[0].attributes['exception.type'], 'RangeError');
    const [r] = access().filter((x) => x['url.path'] === '/throw');
    assert.equal(r['http.response.status_code'], 500);
    assert.equal(r['error.type'], 'RangeError', 'a crash is not a client abort');
    assert.equal(r['event.outcome'], 'failure');
    assert.equal(r.severity, 'ERROR');
  });

  it('a handler that throws after answering: the span (still open) says so; the record is of the answer', () => {
    const [s] = spansFor('/throw-after-end');
    assert.equal(s.status.code, 2);
    assert.equal(s.attributes['error.type'], 'TypeError');
    assert.equal(s.attributes['http.response.status_code'], 200);
    const [r] = access().filter((x) => x['url.path'] === '/throw-after-end');
    assert.equal(r['http.response.status_code'], 200);
  });

  it('the span ends as the response closes: what the app sets after res.end() in that turn reaches it', () => {
    const [s] = spansFor('/after-end');
    assert.equal(s.attributes['app.after_end'], 1);
    assert.equal(s.attributes['app.on_finish'], 1);
  });

  it('an end() that threw is not the response\'s end: the record\'s duration runs to the end() that worked', () => {
    const [r] = access().filter((x) => x['url.path'] === '/bad-end');
    assert.ok(r['http.server.request.duration'] >= 0.25, String(r['http.server.request.duration']));
    assert.equal(r['http.response.status_code'], 200);
  });

  it('a request the app takes through checkContinue (Expect: 100-continue) is one exchange', () => {
    assert.equal(spansFor('/expect').length, 1);
    assert.equal(access().filter((x) => x['url.path'] === '/expect').length, 1);
  });

  it('a response its client abandons still ends its span and leaves a client_aborted record', () => {
    const [s] = spansFor('/hang');
    assert.ok(s.endTimeUnixNano >= s.startTimeUnixNano);
    assert.equal(s.attributes['http.response.status_code'], undefined, 'no response was sent');
    assert.equal(s.attributes['error.type'], 'client_aborted');
    const [r] = access().filter((x) => x['url.path'] === '/hang');
    assert.equal(r['error.type'], 'client_aborted');
    assert.equal(r.trace_id, s.traceId);
  });

  it('abandoned after the headers: the status that was sent, and still client_aborted, not a success', () => {
    const [s] = spansFor('/partial');
    assert.equal(s.attributes['http.response.status_code'], 200);
    assert.equal(s.attributes['error.type'], 'client_aborted');
    const [r] = access().filter((x) => x['url.path'] === '/partial');
    assert.equal(r['http.response.status_code'], 200);
    assert.equal(r['error.type'], 'client_aborted');
    assert.equal(r['event.outcome'], 'failure');
  });

  it('a method outside the known set is _OTHER, and the span is named HTTP; Host [::1] gives the default port', () => {
    const [s] = spansFor('/dav');
    assert.equal(s.name, 'HTTP');
    assert.equal(s.attributes['http.request.method'], '_OTHER');
    assert.equal(s.attributes['http.request.method_original'], 'PROPFIND');
    assert.equal(s.attributes['server.address'], '[::1]');
    assert.equal(s.attributes['server.port'], 80);
  });

  it('a request handed on to a second server is one exchange: one span, one access record', () => {
    assert.equal(spansFor('/handoff').length, 1);
    assert.equal(access().filter((r) => r['url.path'] === '/handoff').length, 1);
  });

  it('every request has one access record in the trace of its span', () => {
    for (const p of ['/ok', '/fail', '/throw', '/hang', '/dav', '/handoff', '/partial', '/after-end', '/throw-after-end', '/bad-end', '/expect']) {
      const records = access().filter((r) => r['url.path'] === p);
      assert.equal(records.length, 1, p);
      assert.equal(records[0].trace_id, spansFor(p)[0].traceId, p);
      assert.equal(records[0].span_id, spansFor(p)[0].spanId, p);
    }
  });

  it('records http.server.request.duration per method, status, and error type', async () => {
    const points = () => rx.metrics().filter((m) => m.name === 'http.server.request.duration').flatMap((m) => m.dataPoints);
    await rx.waitFor(() => points().some((p) => p.attributes['http.response.status_code'] === 503), { timeoutMs: 15_000 });
    const ok = points().find((p) => p.attributes['http.response.status_code'] === 200 && p.attributes['http.request.method'] === 'GET');
    assert.ok(ok, JSON.stringify(points().map((p) => p.attributes)));
    assert.deepEqual(ok.attributes, { 'http.request.method': 'GET', 'url.scheme': 'http', 'network.protocol.version': '1.1', 'http.response.status_code': 200 });
    assert.ok(ok.sum > 0 && ok.sum < 10);
    const failed = points().find((p) => p.attributes['http.response.status_code'] === 503);
    assert.equal(failed.attributes['error.type'], '503');
    assert.ok(points().some((p) => p.attributes['error.type'] === 'RangeError'), 'the thrown handler');
  });
});

describe('http server: the pure parts', () => {
  it('normalizeMethod: the known methods, case-folded; anything else is _OTHER', () => {
    assert.equal(normalizeMethod('GET'), 'GET');
    assert.equal(normalizeMethod('get'), 'GET');
    assert.equal(normalizeMethod('QUERY'), 'QUERY');
    assert.equal(normalizeMethod('PROPFIND'), '_OTHER');
    assert.equal(normalizeMethod(undefined), 'GET');
    assert.equal(normalizeMethod('GET\r\nX: y'), '_OTHER');
  });

  it('serverAddress: host and port from a Host header, or nothing from a malformed one', () => {
    const of = (host, scheme = 'http') => { const o = {}; serverAddress(host, scheme, o); return o; };
    assert.deepEqual(of('svc'), { 'server.address': 'svc', 'server.port': 80 });
    assert.deepEqual(of('svc', 'https'), { 'server.address': 'svc', 'server.port': 443 });
    assert.deepEqual(of('svc:8080'), { 'server.address': 'svc', 'server.port': 8080 });
    assert.deepEqual(of('[2001:db8::1]:8443'), { 'server.address': '[2001:db8::1]', 'server.port': 8443 });
    assert.deepEqual(of('svc:99999'), { 'server.address': 'svc' }, 'no port out of range');
    assert.deepEqual(of('svc:http'), { 'server.address': 'svc' });
    assert.deepEqual(of('a:b:c'), {}, 'an unbracketed IPv6 or garbage');
    assert.deepEqual(of('[::1'), {});
    assert.deepEqual(of('[::1]x'), {});
    assert.deepEqual(of(':80'), {});
    assert.deepEqual(of(''), {});
    assert.deepEqual(of(undefined), {});
    assert.deepEqual(of('h'.repeat(300)), {}, 'longer than a DNS name');
    assert.deepEqual(of('svc:65535'), { 'server.address': 'svc', 'server.port': 65535 });
    assert.deepEqual(of('svc:00080'), { 'server.address': 'svc', 'server.port': 80 });
    assert.deepEqual(of('svc:65536'), { 'server.address': 'svc' });
    assert.deepEqual(of('svc:٣'), { 'server.address': 'svc' }, 'only ASCII digits');
  });

  it('serverAddress: the same answer as the regular-expression version it replaced, for any Host header (property)', () => {
    const fc = require('fast-check');
    // The implementation before the kept parse and the digit loop (git show c324bab:lib/http-server.ts).
    const before = (host, component, out) => {
      if (typeof host !== 'string' || host.length === 0 || host.length > 255) return;
      let name = host;
      let port;
      if (host.charCodeAt(0) === 91) {
        const close = host.indexOf(']');
        if (close < 0) return;
        name = host.slice(0, close + 1);
        const rest = host.slice(close + 1);
        if (rest.startsWith(':')) port = rest.slice(1);
        else if (rest !== '') return;
      } else {
        const colon = host.indexOf(':');
        if (colon >= 0) {
          if (host.indexOf(':', colon + 1) >= 0) return;
          name = host.slice(0, colon);
          port = host.slice(colon + 1);
        }
      }
      if (name === '') return;
      out['server.address'] = name;
      const n = port === undefined ? (component === 'https' ? 443 : 80) : /^\d{1,5}$/.test(port) ? Number(port) : NaN;
      if (n >= 0 && n <= 65535) out['server.port'] = n;
    };
    const unit = fc.constantFrom(...'0123456789:[]a.-٣ e+x\n');
    const host = fc.oneof(fc.string({ unit, maxLength: 12 }), fc.string({ unit: 'binary', maxLength: 20 }), fc.string({ unit, minLength: 250, maxLength: 260 }),
      fc.constantFrom(undefined, null, 8080, ''));
    fc.assert(fc.property(fc.array(fc.tuple(host, fc.constantFrom('http', 'https')), { minLength: 1, maxLength: 4 }), (calls) => {
      for (const [h, scheme] of calls) {
        const got = {};
        const want = {};
        serverAddress(h, scheme, got);
        before(h, scheme, want);
        assert.deepEqual(got, want, JSON.stringify([h, scheme]));
      }
    }), { numRuns: 3000 });
  });

  it('serverAddress: the last Host parsed is kept, and answers only for the same header and scheme', () => {
    const of = (host, scheme = 'http') => { const o = {}; serverAddress(host, scheme, o); return o; };
    for (let i = 0; i < 3; i++) {
      assert.deepEqual(of('a.example:81'), { 'server.address': 'a.example', 'server.port': 81 });
      assert.deepEqual(of('a.example:81'), { 'server.address': 'a.example', 'server.port': 81 });
      assert.deepEqual(of('a.example'), { 'server.address': 'a.example', 'server.port': 80 });
      assert.deepEqual(of('a.example', 'https'), { 'server.address': 'a.example', 'server.port': 443 });
      assert.deepEqual(of('a:b:c'), {});
      assert.deepEqual(of('a:b:c'), {});
      assert.deepEqual(of(undefined), {});
    }
  });
});
