'use strict';
// The OTLP exporters' first export over plain http: the data arrives, and getting `node:http` for
// it does not load Node's bundled undici (an ES-module namespace of `node:http` would: ≈ 38 ms on
// the event loop). Over https the upstream transport is left exactly as it is.
const assert = require('node:assert/strict');
const { startOtlpReceiver } = require('../helpers/otlp-receiver.js');
const { runApp } = require('../helpers/run-app.js');
const { requireHttpInTransport } = require('../../dist/lib/exporters.js');
const { createOtlpExporter, headersFrom, keepAliveFromRawHeaders, agentsReadRawHeaders } = require('../../dist/lib/exporters.js');

describe('OTLP exporters over plain http', function () {
  this.timeout(30_000);
  let rx;
  before(async () => { rx = await startOtlpReceiver(); });
  after(async () => { await rx?.close(); });

  it('the final export of a short script arrives, with undici never loaded', async () => {
    const r = await runApp('apps/first-export.js', {
      env: { OTEL_EXPORTER_OTLP_ENDPOINT: rx.url, OTEL_SERVICE_NAME: 'first-export', AUDITRACE_QUIET: 'true' },
    });
    assert.equal(r.code, 0, r.stderr);
    await rx.waitFor(() => rx.spans().some((s) => s.name === 'only-span'));
    await rx.waitFor(() => rx.metrics().length > 0);
    assert.match(r.stderr, /undici loaded: false/);
  });

  it("the collector's responses never reach Node's header builder, and the connection is kept alive", async () => {
    rx.reset();
    const r = await runApp('apps/exporter-responses.js', {
      env: { OTEL_EXPORTER_OTLP_ENDPOINT: rx.url, OTEL_BSP_SCHEDULE_DELAY: '50', OTEL_METRICS_EXPORTER: 'none', AUDITRACE_QUIET: 'true' },
    });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /client header lines: 0\b/);
    const headers = JSON.parse(/headers: (.*)/.exec(r.stderr)[1]);
    // As Node would give them: the receiver's own response (keep-alive hint included).
    assert.equal(headers['content-type'], 'application/x-protobuf');
    assert.match(headers['keep-alive'], /^timeout=\d+$/);
    assert.equal(headers.connection, 'keep-alive');
    const traces = rx.requests.filter((q) => q.signal === 'traces');
    assert.ok(traces.length >= 4, `${traces.length} trace exports`);
    assert.equal(new Set(traces.map((q) => q.remotePort)).size, 1, 'every export on one kept-alive connection');
  });

  it('headersFrom reads raw headers as Node does for what an exporter response carries', () => {
    assert.deepEqual(headersFrom(['Content-Type', 'a/b', 'Keep-Alive', 'timeout=5', 'Set-Cookie', 'x=1', 'set-cookie', 'y=2', 'Via', 'p', 'VIA', 'q']),
      { 'content-type': 'a/b', 'keep-alive': 'timeout=5', 'set-cookie': ['x=1', 'y=2'], via: 'p, q' });
    assert.deepEqual(headersFrom(['__proto__', 'x', 'odd']), {});
    assert.equal(Object.getPrototypeOf(headersFrom([])), Object.prototype);
  });

  it('an agent of another shape is left alone; a throwing response is left to Node', () => {
    for (const x of [undefined, null, 42, {}]) assert.equal(keepAliveFromRawHeaders(x), x);
    for (const x of [undefined, null, {}, { _delegate: {} }]) assert.equal(agentsReadRawHeaders(x), false);
    let got;
    const agent = keepAliveFromRawHeaders({ keepSocketAlive(s) { got = s; return 'kept'; } });
    const hostile = { _httpMessage: { get res() { throw new Error('no'); } } };
    assert.equal(agent.keepSocketAlive(hostile), 'kept');
    assert.equal(got, hostile);
  });

  it('protobuf and JSON exporters of every signal take the require path for http:, none for https:', () => {
    for (const signal of ['traces', 'metrics', 'logs']) {
      for (const protocol of ['http/protobuf', 'http/json']) {
        const cfg = { endpoint: `${rx.url}/v1/${signal}`, headers: {}, timeoutMs: 1000, protocol, compression: 'none' };
        const plain = createOtlpExporter(signal, cfg);
        assert.equal(plain._delegate._transport._transport._loadUtils.name, 'loadUtils', `${signal} ${protocol}`);
        const tls = createOtlpExporter(signal, { ...cfg, endpoint: 'https://collector.example:4318/v1/traces' });
        assert.equal(requireHttpInTransport(tls), false, `${signal} ${protocol} over https`);
        assert.notEqual(tls._delegate._transport._transport._loadUtils.name, 'loadUtils');
      }
    }
  });

  it('anything of another shape is left alone', () => {
    for (const x of [undefined, null, 42, {}, { _delegate: {} }, { _delegate: { _transport: { _transport: { _utils: {}, _loadUtils() {} } } } }]) {
      assert.equal(requireHttpInTransport(x), false);
    }
  });
});
