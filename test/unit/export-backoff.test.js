'use strict';
// The pause after a failed export (lib/export-backoff.ts) and the flushes that ignore it.
const assert = require('node:assert/strict');
const { ExportBackoff, EXPORT_BACKOFF, pausesExports } = require('../../dist/lib/export-backoff.js');
const { Pipelines } = require('../../dist/lib/sdk.js');
const { parseConfig } = require('../../dist/lib/config.js');
const { TracerProvider } = require('@opentelemetry/sdk-trace');
const { startOtlpReceiver } = require('../helpers/otlp-receiver');

function clock(start = 1_000_000) {
  const c = { t: start, now: () => c.t };
  return c;
}

describe('export backoff: the pause after a failed export', () => {
  it('sends at once until an export fails; then pauses 1, 2, 4, 5, 5 s; a success ends the pause', () => {
    const c = clock();
    const b = new ExportBackoff({ ...EXPORT_BACKOFF, jitter: 0 }, c.now);
    assert.equal(b.remainingMs(), 0);
    const pauses = [];
    for (let i = 0; i < 5; i++) {
      b.failed();
      pauses.push(b.remainingMs());
    }
    assert.deepEqual(pauses, [1000, 2000, 4000, 5000, 5000]);
    c.t += 4999;
    assert.equal(b.remainingMs(), 1);
    c.t += 1;
    assert.equal(b.remainingMs(), 0, 'the pause is over: the next export is sent');
    b.succeeded();
    b.failed();
    assert.equal(b.remainingMs(), 1000, 'after a success the next failure starts again at 1 s');
  });

  it('jitter stretches or shortens each pause by at most 20 %', () => {
    for (const r of [0, 0.25, 0.5, 0.999999]) {
      const c = clock();
      const b = new ExportBackoff(EXPORT_BACKOFF, c.now, () => r);
      b.failed();
      const ms = b.remainingMs();
      assert.ok(ms >= 800 && ms <= 1200, `random ${r}: ${ms} ms`);
    }
    const low = new ExportBackoff(EXPORT_BACKOFF, clock().now, () => 0);
    const high = new ExportBackoff(EXPORT_BACKOFF, clock().now, () => 0.999999);
    for (let i = 0; i < 6; i++) { low.failed(); high.failed(); }
    assert.equal(low.remainingMs(), 4000);
    assert.equal(high.remainingMs(), 6000);
  });

  it('the default clock is monotonic: the wall clock stepping back an hour does not stretch the pause', () => {
    const realNow = Date.now;
    let wall = realNow();
    Date.now = () => wall;
    try {
      const b = new ExportBackoff({ ...EXPORT_BACKOFF, jitter: 0 });
      b.failed();
      wall -= 3_600_000;
      assert.ok(b.remainingMs() <= 1000, `${b.remainingMs()} ms`);
    } finally {
      Date.now = realNow;
    }
  });

  it('pauses for an unreachable or overloaded collector, not for a batch it refused as invalid', () => {
    const withCode = (code) => Object.assign(new Error('x'), { code });
    for (const e of [withCode('ECONNREFUSED'), withCode('ENOTFOUND'), new Error('Request timed out'),
      new Error('Export failed with retryable status'), withCode(429), withCode(502), withCode(503), withCode(504), withCode(500), undefined]) {
      assert.equal(pausesExports(e), true, String(e?.code ?? e?.message));
    }
    for (const code of [400, 401, 403, 404, 413, 415]) assert.equal(pausesExports(withCode(code)), false, String(code));
  });

  it('bypass: no pause while the flush runs, the pause again after it (also when it fails)', async () => {
    const c = clock();
    const b = new ExportBackoff({ ...EXPORT_BACKOFF, jitter: 0 }, c.now);
    b.failed();
    let inside;
    assert.equal(await b.bypass(async () => { inside = b.remainingMs(); return 'x'; }), 'x');
    assert.equal(inside, 0);
    assert.equal(b.remainingMs(), 1000);
    await assert.rejects(b.bypass(async () => { throw new Error('flush failed'); }), /flush failed/);
    assert.equal(b.remainingMs(), 1000);
  });
});

describe('export backoff in the span pipeline (a real batch processor and OTLP exporter)', function () {
  this.timeout(20000);
  let rx;
  beforeEach(async () => { rx = await startOtlpReceiver({ status: 503 }); });
  afterEach(async () => { await rx.close(); });

  function pipeline() {
    const { config, errors } = parseConfig({
      OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: `${rx.url}/v1/traces`,
      OTEL_EXPORTER_OTLP_TIMEOUT: '500',
      OTEL_BSP_SCHEDULE_DELAY: '60000',
      OTEL_BSP_MAX_EXPORT_BATCH_SIZE: '2',
    });
    assert.deepEqual(errors, []);
    const pipelines = new Pipelines(config);
    const processors = pipelines.spanProcessors();
    const provider = new TracerProvider({ spanProcessors: processors });
    const tracer = provider.getTracer('test');
    const span = (name) => tracer.startSpan(name).end();
    return { provider, span };
  }
  const names = () => rx.spans().map((s) => s.name);
  const traceRequests = () => rx.requests.filter((r) => r.signal === 'traces').length;

  it('during the pause a full batch is dropped unsent; the shutdown flush sends what is queued anyway', async () => {
    const { provider, span } = pipeline();
    span('a'); span('b'); // a full batch: sent, refused; the pause begins
    await rx.waitFor(() => traceRequests() === 1);
    span('c'); span('d'); // a full batch during the pause: dropped without a request
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(traceRequests(), 1, 'nothing sent during the pause');
    span('e'); // queued: less than a batch
    rx.setStatus(200);
    await provider.shutdown();
    assert.deepEqual(names(), ['e'], 'the shutdown flush sent the queued span although the pause was not over');
  });

  it('a batch refused as invalid (HTTP 400) starts no pause: the next full batch is sent', async () => {
    rx.setStatus(400);
    const { provider, span } = pipeline();
    span('a'); span('b');
    await rx.waitFor(() => traceRequests() === 1);
    span('c'); span('d');
    await rx.waitFor(() => traceRequests() === 2);
    await provider.shutdown();
  });

  it('forceFlush sends during the pause too', async () => {
    const { provider, span } = pipeline();
    span('a'); span('b');
    await rx.waitFor(() => traceRequests() === 1);
    span('c');
    rx.setStatus(200);
    await provider.forceFlush();
    assert.deepEqual(names(), ['c']);
    span('d'); span('e'); // the flush succeeded: the pause is over and a full batch goes at once
    await rx.waitFor(() => names().length === 3);
    assert.deepEqual(names(), ['c', 'd', 'e']);
    await provider.shutdown();
  });
});
