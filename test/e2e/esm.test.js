'use strict';
// End to end: ES-module fixture apps started with `node --import auditrace/register app.mjs`
// (and with both --require and --import), exporting to a real OTLP/HTTP receiver.
const assert = require('node:assert/strict');
const http = require('node:http');
const path = require('node:path');
const { startOtlpReceiver } = require('../helpers/otlp-receiver');
const { startApp, ROOT } = require('../helpers/run-app');

const SERVER = 2;
const EXPRESS_SCOPE = '@opentelemetry/instrumentation-express';
// Fast exports; and the downward-API fallback names cleared so a CI runner's own cannot leak in.
const ENV = {
  OTEL_METRIC_EXPORT_INTERVAL: '500',
  OTEL_BSP_SCHEDULE_DELAY: '100',
  OTEL_BLRP_SCHEDULE_DELAY: '100',
  POD_NAME: '', POD_UID: '', POD_NAMESPACE: '', NODE_NAME: '', CONTAINER_NAME: '',
};
const WAIT = { timeoutMs: 15000 };

function get(port, urlPath, { timeoutMs = 5000 } = {}) {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: urlPath, agent: false, timeout: timeoutMs }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, body: Buffer.concat(chunks).toString('utf8') }));
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${urlPath} timed out after ${timeoutMs} ms`)));
    req.on('error', reject);
  });
}

const servers = (rx) => rx.spans().filter((s) => s.kind === SERVER);
const expressSpans = (rx) => rx.spans().filter((s) => s.scope.name === EXPRESS_SCOPE);
const lines = (text, re) => text.split('\n').filter((l) => re.test(l));

describe('auditrace/register with --import (ES module apps)', function () {
  this.timeout(45000);

  let rx;
  let apps;

  beforeEach(async () => {
    rx = await startOtlpReceiver();
    apps = [];
  });

  afterEach(async function () {
    if (this.currentTest && this.currentTest.state === 'failed') {
      for (const app of apps) process.stderr.write(`--- ${app.fixture} stderr:\n${app.stderr}\n`);
    }
    await Promise.all(apps.map((app) => {
      app.child.kill('SIGKILL');
      return Promise.race([app.exited, new Promise((r) => setTimeout(r, 5000))]);
    }));
    await rx.close();
  });

  /**
   * Starts test/fixtures/apps/<fixture> with `--import register.mjs` (plus `--require register.js`
   * first when `alsoRequire`), resolves once it printed `listening <port>`.
   */
  async function launch(fixture, { alsoRequire = false, env = {} } = {}) {
    const app = startApp(`apps/${fixture}`, {
      preload: 'import',
      nodeArgs: alsoRequire ? ['--require', path.join(ROOT, 'register.js')] : [],
      env: { ...ENV, OTEL_EXPORTER_OTLP_ENDPOINT: rx.url, ...env },
    });
    app.fixture = fixture;
    apps.push(app);
    const [, port] = await app.waitForOutput(/^listening (\d+)$/m, { timeoutMs: 20000 });
    app.port = Number(port);
    return app;
  }

  /** SIGTERM: auditrace flushes everything buffered, then the process ends by the signal. */
  async function flushAndStop(app, { timeoutMs = 10000 } = {}) {
    app.child.kill('SIGTERM');
    let timer;
    const result = await Promise.race([
      app.exited,
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${app.fixture} still running ${timeoutMs} ms after SIGTERM`)), timeoutMs);
      }),
    ]).finally(() => clearTimeout(timer));
    assert.equal(result.signal, 'SIGTERM', app.stderr);
  }

  async function getOk(app, urlPath) {
    const res = await get(app.port, urlPath);
    assert.equal(res.status, 200, `GET ${urlPath} answered ${res.status}: ${res.body}`);
    return res;
  }

  function assertStartedCleanly(app) {
    assert.equal(lines(app.stderr, /^auditrace /).length, 1, `one start-up line:\n${app.stderr}`);
    assert.doesNotMatch(app.stderr, /could not register the ESM hooks|could not start telemetry/, app.stderr);
  }

  describe('--import alone', () => {
    it('instruments `import http from \'node:http\'`: a SERVER span per request', async () => {
      const app = await launch('esm-http.mjs');
      await getOk(app, '/hello');

      await rx.waitFor(() => servers(rx).length === 1, WAIT);
      const [span] = servers(rx);
      assert.equal(span.scope.name, '@opentelemetry/instrumentation-http');
      assert.equal(span.attributes['http.request.method'], 'GET');
      assert.equal(span.attributes['url.path'], '/hello');
      assert.equal(span.attributes['http.response.status_code'], 200);
      assert.equal(span.resource['service.name'], 'fixture-apps');
      assertStartedCleanly(app);
    });

    it('instruments `import express from \'express\'`: express spans and http.route on the SERVER span', async () => {
      // Without the ESM hook (e.g. `--require` only for this .mjs app) there are no
      // instrumentation-express spans. They are off by default: layer spans show the hook worked.
      const app = await launch('esm-express.mjs', { env: { AUDITRACE_LAYER_SPANS: 'true' } });
      const res = await getOk(app, '/users/42');
      assert.deepEqual(JSON.parse(res.body), { id: '42' });

      await rx.waitFor(() => servers(rx).length === 1
        && expressSpans(rx).some((s) => s.attributes['express.type'] === 'request_handler'), WAIT);
      const [server] = servers(rx);
      assert.equal(server.attributes['http.route'], '/users/:id');
      assert.equal(server.name, 'GET /users/:id');
      const types = new Set(expressSpans(rx).map((s) => s.attributes['express.type']));
      assert.ok(types.has('middleware') && types.has('request_handler'), `express span types: ${[...types]}`);
      for (const s of expressSpans(rx)) assert.equal(s.traceId, server.traceId, `${s.name} is in the request's trace`);
      assertStartedCleanly(app);
    });
  });

  describe('--require and --import together', () => {
    const REQUESTS = 3;

    /** Starts the app with both flags, sends REQUESTS requests, flushes; returns the app. */
    async function runBoth(fixture, urlPath, env = {}) {
      const app = await launch(fixture, { alsoRequire: true, env });
      for (let i = 0; i < REQUESTS; i++) await getOk(app, urlPath);
      await rx.waitFor(() => servers(rx).length >= REQUESTS, WAIT);
      // After the SIGTERM flush nothing is pending: the counts below are final.
      await flushAndStop(app);
      return app;
    }

    function assertStartedOnce(app) {
      assertStartedCleanly(app);
      const warnings = lines(app.stderr, /already started/);
      assert.equal(warnings.length, 1, `exactly one "already started" line:\n${app.stderr}`);
      assert.match(warnings[0], /^auditrace: warning: already started \(via require\); ignoring the second start \(via import\)$/);
    }

    function assertOneServerSpanPerRequest() {
      const spans = servers(rx);
      assert.equal(spans.length, REQUESTS, `SERVER spans: ${spans.map((s) => `${s.name} ${s.traceId}`).join(', ')}`);
      assert.equal(new Set(spans.map((s) => s.traceId)).size, REQUESTS, 'one trace per request');
      assert.equal(new Set(spans.map((s) => s.resource['service.instance.id'])).size, 1, 'one SDK exported them');
    }

    it('initialises once for an http app: one warning, one SERVER span per request', async () => {
      const app = await runBoth('esm-http.mjs', '/hello');
      assertStartedOnce(app);
      assertOneServerSpanPerRequest();
    });

    it('initialises once for an express app: express instrumented once, one SERVER span per request', async () => {
      // Layer spans on: one request_handler span per request shows Express was patched once.
      const app = await runBoth('esm-express.mjs', '/users/7', { AUDITRACE_LAYER_SPANS: 'true' });
      assertStartedOnce(app);
      assertOneServerSpanPerRequest();
      for (const server of servers(rx)) assert.equal(server.attributes['http.route'], '/users/:id');
      const handlers = expressSpans(rx).filter((s) => s.attributes['express.type'] === 'request_handler');
      assert.equal(handlers.length, REQUESTS, `express request_handler spans: ${handlers.length}`);
    });
  });
});
