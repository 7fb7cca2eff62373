'use strict';
// The runtime is bundled (scripts/bundle.js): a start loads dist/auditrace.js and a handful of
// files, not the ~360 modules of the OpenTelemetry packages; an instrumentation created later
// loads its own file from dist/instrumentations/ and shares the bundle's API, core and
// instrumentation packages (one copy each, so spans still reach the one SDK).
const assert = require('node:assert/strict');
const path = require('node:path');
const { startOtlpReceiver } = require('../helpers/otlp-receiver');
const { runApp, ROOT } = require('../helpers/run-app');

const FIXTURE = 'bundle/modules.js';
const rel = (f) => path.relative(ROOT, f).split(path.sep).join('/');
const ours = (files) => files.map(rel).filter((f) => !f.startsWith('..') && !f.startsWith('test/'));

describe('the bundle: what a start loads', function () {
  this.timeout(60_000);
  let rx;
  beforeEach(async () => { rx = await startOtlpReceiver(); });
  afterEach(() => rx.close());

  const env = () => ({ OTEL_EXPORTER_OTLP_ENDPOINT: rx.url, OTEL_BSP_SCHEDULE_DELAY: '50', OTEL_METRICS_EXPORTER: 'none' });

  it('an empty script: register.js, its code-cache loader, dist/auditrace.js and import-in-the-middle (with its two helpers); no OpenTelemetry package file, no other dist/lib file, no TLS module', async () => {
    const r = await runApp(FIXTURE, { env: env() });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /^auditrace \d/m, 'started');
    const { atStart, builtins } = JSON.parse(r.stdout.trim().split('\n').at(-1));
    assert.ok(builtins.includes('http'), 'the check sees built-ins');
    for (const m of ['tls', 'https', 'http2']) assert.ok(!builtins.includes(m), `${m} is not loaded before the app loads it`);
    const loaded = ours(atStart);
    assert.deepEqual(loaded.filter((f) => !f.startsWith('node_modules/')), ['register.js', 'dist/lib/code-cache.js', 'dist/auditrace.js']);
    assert.deepEqual(loaded.filter((f) => f.startsWith('node_modules/@opentelemetry/')), []);
    assert.ok(loaded.length <= 6, `a few files: ${loaded.join(', ')}`);
  });

  it('inside AWS Lambda: the aws-lambda instrumentation is created at start from its own file', async () => {
    const r = await runApp(FIXTURE, { env: { ...env(), AWS_LAMBDA_FUNCTION_NAME: 'fn', LAMBDA_TASK_ROOT: path.join(ROOT, 'test', 'fixtures', 'bundle'), _HANDLER: 'modules.handler' } });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /instrumentations=aws-lambda,http,runtime-node,undici /);
    const { atStart } = JSON.parse(r.stdout.trim().split('\n').at(-1));
    assert.ok(ours(atStart).includes('dist/instrumentations/aws-lambda.js'), ours(atStart).join(', '));
  });

  it('host-metrics (left out of the bundle) loads from node_modules when enabled, and its metrics arrive', async () => {
    const r = await runApp(FIXTURE, {
      env: { ...env(), OTEL_METRICS_EXPORTER: 'otlp', OTEL_METRIC_EXPORT_INTERVAL: '200', OTEL_NODE_ENABLED_INSTRUMENTATIONS: 'host-metrics,http', BUNDLE_STAY_MS: '1500' },
    });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /instrumentations=host-metrics,http$/m);
    await rx.waitFor(() => rx.metrics().some((m) => m.name === 'system.cpu.time'), { timeoutMs: 10_000 });
  });

  it('Express required later: its instrumentation file loads, takes the bundle\'s packages, and its spans arrive', async () => {
    const r = await runApp(FIXTURE, { env: { ...env(), BUNDLE_EXPRESS: '1', AUDITRACE_LAYER_SPANS: 'true' } });
    assert.equal(r.code, 0, r.stderr);
    const { atStart, afterExpress, status } = JSON.parse(r.stdout.trim().split('\n').at(-1));
    assert.equal(status, 200);
    assert.ok(!ours(atStart).some((f) => f.startsWith('dist/instrumentations/')), 'no instrumentation file at start');
    const later = ours(afterExpress);
    assert.ok(later.includes('dist/instrumentations/express.js'), later.join(', '));
    assert.deepEqual(later.filter((f) => f.startsWith('node_modules/@opentelemetry/')), [], 'no second copy of an OpenTelemetry package');
    // The express instrumentation's spans (its own scope) and the http server span are one trace.
    await rx.waitFor(() => rx.spans().some((s) => s.scope.name === '@opentelemetry/instrumentation-express'), { timeoutMs: 10_000 });
    const spans = rx.spans();
    const server = spans.find((s) => s.scope.name === '@opentelemetry/instrumentation-http' && s.kind === 2);
    assert.ok(server, 'server span');
    assert.equal(server.name, 'GET /bundle/:id', 'the route Express matched names the server span');
    const handler = spans.find((s) => s.scope.name === '@opentelemetry/instrumentation-express');
    assert.equal(handler.traceId, server.traceId, spans.map((s) => `${s.scope.name} ${s.name}`).join('; '));
  });
});

describe('the bundle: core\'s isAnyValue answers a primitive first', () => {
  // scripts/bundle.js answers isAnyValue for primitives before core makes its WeakSet.
  const fc = require('fast-check');
  const bundled = () => require('../../dist/auditrace.js').__shared['node_modules/@opentelemetry/core/dist/index.cjs'];
  const original = require('@opentelemetry/core');

  it('core\'s isAnyValue was patched in the bundle (no WeakSet for a primitive)', () => {
    const source = String(bundled().isAnyValue);
    assert.match(source, /typeof val/, source);
    assert.notEqual(source, String(original.isAnyValue));
  });

  it('answers as the original for any value, cyclic ones included (property)', () => {
    const { isAnyValue } = bundled();
    const cyclic = { a: 1 };
    cyclic.self = cyclic;
    const loop = [1];
    loop.push(loop);
    for (const v of [cyclic, loop, [cyclic], new Uint8Array(2), null, undefined, 1n, Symbol('s'), () => 1, new Date(), NaN, -0, '']) {
      assert.equal(isAnyValue(v), original.isAnyValue(v), String(typeof v));
    }
    fc.assert(fc.property(fc.anything({ withBigInt: true, withDate: true, withMap: true, withSet: true, withTypedArray: true, withNullPrototype: true }),
      (v) => isAnyValue(v) === original.isAnyValue(v)), { numRuns: 2000 });
  });

  it('spans keep what cleanAttributes kept: the same attributes in the same order, a bad one dropped', () => {
    const b = bundled();
    const attrs = { s: 'x'.repeat(10), n: 3, f: 1.5, t: true, arr: ['a', 1], obj: { k: 'v' }, bad: () => 1, big: 10n, u: undefined };
    const limits = { attributeCountLimit: 128, attributeValueLengthLimit: 4 };
    assert.deepEqual(b.cleanAttributes(attrs, limits), original.cleanAttributes(attrs, limits));
  });
});

describe('the bundle: the API module itself where a package wrapped it in a namespace', () => {
  // scripts/bundle.js (api-namespace): `import * as api` compiled to CommonJS reads each `api.X`
  // through a bound getter; the bundle reads the module's own properties instead. Every span
  // test in this suite goes through the bundled Tracer's startSpan, which reads the API this way.
  const fs = require('node:fs');
  const WRAP = /__toESM\(_opentelemetry_api\d*[,)]/g;
  const SDK_DIST = path.join(ROOT, 'node_modules', '@opentelemetry', 'sdk-trace', 'dist');
  const bundleFiles = () => [path.join(ROOT, 'dist', 'auditrace.js'),
    ...fs.readdirSync(path.join(ROOT, 'dist', 'instrumentations')).filter((f) => f.endsWith('.js')).map((f) => path.join(ROOT, 'dist', 'instrumentations', f))];

  it('no namespace wrapper of the API is left in the bundle, where the packages\' own files have them', () => {
    const tracer = fs.readFileSync(path.join(SDK_DIST, 'Tracer.cjs'), 'utf8');
    assert.equal((tracer.match(WRAP) ?? []).length, 1, 'the SDK\'s Tracer.cjs wraps the API (the case the plugin rewrites)');
    for (const f of bundleFiles()) assert.equal((fs.readFileSync(f, 'utf8').match(WRAP) ?? []).length, 0, rel(f));
  });

  it('the wrapper would have read exactly what the module holds: every own property, `default` included', () => {
    const api = require('@opentelemetry/api');
    const { __toESM } = require(path.join(SDK_DIST, '_virtual', '_rolldown', 'runtime.cjs'));
    const ns = __toESM(api);
    const names = Object.getOwnPropertyNames(api);
    assert.ok(names.includes('default') && names.includes('trace') && names.includes('context'));
    for (const k of names) assert.equal(ns[k], api[k], k);
    assert.deepEqual(Object.getOwnPropertyNames(ns).sort(), names.sort());
  });
});
