'use strict';
// End to end: CommonJS fixture apps started as users start them,
// `node --require auditrace/register app.js`, exporting to a real OTLP/HTTP receiver.
// Every assertion is on what the receiver decoded from the wire (or on what the app printed).
const assert = require('node:assert/strict');
const fs = require('node:fs');
const http = require('node:http');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const { startOtlpReceiver } = require('../helpers/otlp-receiver');
const { startApp } = require('../helpers/run-app');

const SPAN_KIND = { SERVER: 2, CLIENT: 3 };
const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

// Short batch delays and metric interval, so data arrives in well under a second.
const FAST = {
  OTEL_METRIC_EXPORT_INTERVAL: '500',
  OTEL_BSP_SCHEDULE_DELAY: '100',
  OTEL_BLRP_SCHEDULE_DELAY: '100',
};
// run-app strips OTEL_*, AUDITRACE_* and K8S_*, but auditrace also reads the downward-API names
// Helm charts use (POD_NAME, CONTAINER_NAME, ...); a CI runner that happens to set them must not
// change the resource under test. Empty counts as unset.
const HERMETIC = { POD_NAME: '', POD_UID: '', POD_NAMESPACE: '', NODE_NAME: '', CONTAINER_NAME: '' };

const WAIT = { timeoutMs: 15000 };

/** GET http://127.0.0.1:port/path without keep-alive; resolves { status, body }. */
function get(port, path, { timeoutMs = 5000 } = {}) {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path, agent: false, timeout: timeoutMs }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, body: Buffer.concat(chunks).toString('utf8') }));
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${path} timed out after ${timeoutMs} ms`)));
    req.on('error', reject);
  });
}

/** A port nothing listens on: bound, then released. */
async function closedPort() {
  const server = net.createServer();
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();
  await new Promise((resolve) => server.close(resolve));
  return port;
}

const servers = (spans, serviceName) => spans.filter((s) => s.kind === SPAN_KIND.SERVER
  && (serviceName === undefined || s.resource['service.name'] === serviceName));
const metricNamed = (rx, name) => rx.metrics().filter((m) => m.name === name);
/** A cumulative auditrace counter's latest value for one signal (0 before it exists). */
const counterValue = (rx, name, signal) => Math.max(0, ...metricNamed(rx, name)
  .flatMap((m) => m.dataPoints).filter((p) => p.attributes.signal === signal).map((p) => p.value));
const lines = (text, re) => text.split('\n').filter((l) => re.test(l));

describe('auditrace/register with --require (CommonJS apps)', function () {
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
    // Killed even when the test failed half-way; SIGKILL so nothing can hold the suite.
    await Promise.all(apps.map((app) => {
      app.child.kill('SIGKILL');
      return Promise.race([app.exited, new Promise((r) => setTimeout(r, 5000))]);
    }));
    await rx.close();
  });

  /**
   * Starts test/fixtures/apps/<fixture> preloaded with auditrace, exporting to the receiver,
   * and resolves once it printed `listening <port>` (app.port).
   */
  async function launch(fixture, { env = {} } = {}) {
    const app = startApp(`apps/${fixture}`, {
      preload: 'require',
      env: { ...HERMETIC, ...FAST, OTEL_EXPORTER_OTLP_ENDPOINT: rx.url, ...env },
    });
    app.fixture = fixture;
    apps.push(app);
    const [, port] = await app.waitForOutput(/^listening (\d+)$/m, { timeoutMs: 20000 });
    app.port = Number(port);
    return app;
  }

  /** SIGTERM (auditrace flushes, then the process dies by the signal); resolves { code, signal, ms }. */
  async function terminate(app, { timeoutMs = 10000 } = {}) {
    const t0 = Date.now();
    app.child.kill('SIGTERM');
    let timer;
    const result = await Promise.race([
      app.exited,
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${app.fixture} still running ${timeoutMs} ms after SIGTERM`)), timeoutMs);
      }),
    ]).finally(() => clearTimeout(timer));
    return { code: result.code, signal: result.signal, ms: Date.now() - t0 };
  }

  async function getOk(app, path) {
    const res = await get(app.port, path);
    assert.equal(res.status, 200, `GET ${path} answered ${res.status}: ${res.body}`);
    return res;
  }

  describe('a plain http server', () => {
    it('exports one SERVER span per request, with the HTTP method and URL path', async () => {
      const app = await launch('svc-http.js');
      for (let i = 0; i < 3; i++) await getOk(app, '/hello');

      await rx.waitFor(() => servers(rx.spans()).length >= 3, WAIT);
      const spans = servers(rx.spans());
      assert.equal(spans.length, 3);
      for (const span of spans) {
        assert.equal(span.scope.name, '@opentelemetry/instrumentation-http');
        assert.equal(span.attributes['http.request.method'], 'GET');
        // No router in a plain http server, so no http.route: the path is on url.path.
        assert.equal(span.attributes['http.route'] ?? span.attributes['url.path'], '/hello');
        assert.equal(span.attributes['url.scheme'], 'http');
        assert.equal(span.attributes['http.response.status_code'], 200);
        assert.equal(span.parentSpanId, '', 'an incoming request without traceparent starts a trace');
      }
      assert.equal(new Set(spans.map((s) => s.traceId)).size, 3, 'each request is its own trace');
    });

    it('correlates a log record emitted in the handler with that request\'s SERVER span', async () => {
      const app = await launch('svc-http.js');
      for (let i = 0; i < 3; i++) await getOk(app, '/hello');

      await rx.waitFor(() => servers(rx.spans()).length >= 3 && rx.logs().length >= 3, WAIT);
      const logs = rx.logs();
      assert.equal(logs.length, 3);
      for (const log of logs) {
        assert.equal(log.body, 'hello log');
        assert.equal(log.severityText, 'INFO');
        assert.deepEqual(log.attributes, { 'app.k': 'v' });
        assert.equal(log.scope.name, 'app');
      }
      const byTrace = new Map(servers(rx.spans()).map((s) => [s.traceId, s]));
      for (const log of logs) {
        const span = byTrace.get(log.traceId);
        assert.ok(span, `log traceId ${JSON.stringify(log.traceId)} is not the traceId of any SERVER span`);
        assert.equal(log.spanId, span.spanId, 'the log carries the active span id: the server span');
        assert.equal(log.flags & 1, 1, 'sampled flag');
      }
      assert.equal(new Set(logs.map((l) => l.traceId)).size, 3, 'one log per request, each in its own trace');
    });

    it('exports http.server.request.duration for the requests', async () => {
      const app = await launch('svc-http.js');
      for (let i = 0; i < 3; i++) await getOk(app, '/hello');

      const point = () => metricNamed(rx, 'http.server.request.duration')
        .flatMap((m) => m.dataPoints)
        .find((p) => p.attributes['http.request.method'] === 'GET'
          && p.attributes['http.response.status_code'] === 200 && p.count >= 3);
      const p = await rx.waitFor(point, WAIT);
      const [metric] = metricNamed(rx, 'http.server.request.duration');
      assert.equal(metric.type, 'histogram');
      assert.equal(metric.unit, 's');
      assert.ok(p.sum > 0, 'durations are recorded');
    });
  });

  describe('resource attributes', () => {
    /** The resources of the first span, log record and http.server.request.duration metric. */
    async function resourcesOfAllSignals(app) {
      await getOk(app, '/hello');
      await rx.waitFor(() => servers(rx.spans()).length > 0 && rx.logs().length > 0
        && metricNamed(rx, 'http.server.request.duration').length > 0, WAIT);
      return {
        span: servers(rx.spans())[0].resource,
        log: rx.logs()[0].resource,
        metric: metricNamed(rx, 'http.server.request.duration')[0].resource,
      };
    }

    it('describe the service, instance, host and process on spans, logs and metrics alike', async () => {
      const app = await launch('svc-http.js', { env: { OTEL_SERVICE_NAME: 'checkout' } });
      const resources = await resourcesOfAllSignals(app);
      for (const [signal, r] of Object.entries(resources)) {
        const msg = `${signal} resource: ${JSON.stringify(r)}`;
        assert.equal(r['service.name'], 'checkout', msg);
        assert.equal(r['service.version'], '1.2.3', `from test/fixtures/apps/package.json; ${msg}`);
        assert.match(String(r['service.instance.id']), UUID_RE, msg);
        assert.equal(r['host.name'], os.hostname(), msg);
        assert.equal(r['process.pid'], app.child.pid, msg);
        assert.equal(r['process.runtime.name'], 'nodejs', msg);
        assert.equal(r['telemetry.distro.name'], 'auditrace', msg);
      }
      assert.deepEqual(resources.log, resources.span, 'logs carry the same resource as spans');
      assert.deepEqual(resources.metric, resources.span, 'metrics carry the same resource as spans');
    });

    it('name the service after the app\'s package.json when OTEL_SERVICE_NAME is unset', async () => {
      const app = await launch('svc-http.js');
      const resources = await resourcesOfAllSignals(app);
      for (const r of Object.values(resources)) {
        assert.equal(r['service.name'], 'fixture-apps');
        assert.equal(r['service.version'], '1.2.3');
      }
    });

    it('in Kubernetes carry the downward-API k8s.* attributes and a stable service.instance.id', async () => {
      const app = await launch('svc-http.js', {
        env: {
          K8S_POD_NAME: 'orders-7d9f-x2k4q',
          K8S_POD_UID: '0f1e2d3c-4b5a-4697-8877-665544332211',
          K8S_NAMESPACE_NAME: 'shop',
          K8S_NODE_NAME: 'node-1',
          K8S_CONTAINER_NAME: 'orders',
        },
      });
      const resources = await resourcesOfAllSignals(app);
      // UUIDv5 of "<namespace>.<pod>.<container>" in the semantic conventions' namespace:
      // python3 -c "import uuid;print(uuid.uuid5(uuid.UUID('4d63009a-8d0f-11ee-aad7-4c796ed8e320'),'shop.orders-7d9f-x2k4q.orders'))"
      const expectedInstanceId = '995c9f74-16b6-5aca-ac2b-0aaf0d6623a1';
      for (const [signal, r] of Object.entries(resources)) {
        const msg = `${signal} resource: ${JSON.stringify(r)}`;
        assert.equal(r['k8s.pod.name'], 'orders-7d9f-x2k4q', msg);
        assert.equal(r['k8s.pod.uid'], '0f1e2d3c-4b5a-4697-8877-665544332211', msg);
        assert.equal(r['k8s.namespace.name'], 'shop', msg);
        assert.equal(r['k8s.node.name'], 'node-1', msg);
        assert.equal(r['k8s.container.name'], 'orders', msg);
        assert.equal(r['service.instance.id'], expectedInstanceId, msg);
      }
    });
  });

  describe('context propagation between two services', () => {
    it('makes the backend\'s SERVER span a child of the frontend\'s CLIENT span, in one trace', async () => {
      // Trace context is continued only from trusted peers: the frontend calls from loopback.
      const backend = await launch('svc-backend.js', { env: { OTEL_SERVICE_NAME: 'backend', AUDITRACE_TRUSTED_PROXIES: 'loopback' } });
      const frontend = await launch('svc-frontend.js', {
        env: { OTEL_SERVICE_NAME: 'frontend', BACKEND_URL: `http://127.0.0.1:${backend.port}` },
      });
      const res = await getOk(frontend, '/call');
      assert.deepEqual(JSON.parse(res.body), { items: [1, 2, 3] });

      const clientsOf = (service) => rx.spans().filter((s) => s.kind === SPAN_KIND.CLIENT
        && s.resource['service.name'] === service);
      await rx.waitFor(() => servers(rx.spans(), 'frontend').length === 1
        && servers(rx.spans(), 'backend').length === 1 && clientsOf('frontend').length === 1, WAIT);

      const [aServer] = servers(rx.spans(), 'frontend');
      const [aClient] = clientsOf('frontend');
      const [bServer] = servers(rx.spans(), 'backend');
      assert.equal(aServer.parentSpanId, '', 'the frontend\'s SERVER span is the root');
      assert.equal(aClient.traceId, aServer.traceId);
      assert.equal(aClient.parentSpanId, aServer.spanId, 'CLIENT span is a child of the frontend SERVER span');
      assert.equal(aClient.attributes['http.request.method'], 'GET');
      assert.equal(bServer.traceId, aServer.traceId, 'one trace across both services');
      assert.equal(bServer.parentSpanId, aClient.spanId, 'backend SERVER span is a child of the frontend CLIENT span');
      assert.equal(bServer.attributes['url.path'], '/data');
    });
  });

  describe('an Express 5 app', () => {
    it('by default: one SERVER span per request, named and tagged with the route Express matched, no layer spans', async () => {
      const app = await launch('svc-express.js', { env: { OTEL_LOG_LEVEL: 'info' } });
      const res = await getOk(app, '/users/42');
      assert.deepEqual(JSON.parse(res.body), { id: '42' });
      await rx.waitFor(() => servers(rx.spans()).length === 1, WAIT);
      const [server] = servers(rx.spans());
      assert.equal(server.attributes['http.route'], '/users/:id');
      assert.equal(server.attributes['url.path'], '/users/42');
      assert.equal(server.name, 'GET /users/:id');
      // A later export would carry layer spans ended with the response: wait for one more batch.
      await new Promise((r) => setTimeout(r, 300));
      const inTrace = rx.spans().filter((s) => s.traceId === server.traceId);
      assert.deepEqual(inTrace.map((s) => s.scope.name), ['@opentelemetry/instrumentation-http'],
        inTrace.map((s) => `${s.scope.name} ${s.name}`).join('; '));
      // Express is instrumented (it gave the route); the router package, loaded by Express 5, is not.
      assert.match(app.stderr, /instrumentation express created: its package was loaded/);
      assert.doesNotMatch(app.stderr, /instrumentation router created/);
    });

    /** The access records of an app's audit file, read once the app has ended; the file is removed. */
    function takeAccessRecords(auditFile) {
      const records = fs.readFileSync(auditFile, 'utf8').trim().split('\n').map((l) => JSON.parse(l))
        .filter((r) => r['event.name'] === 'http_request');
      fs.rmSync(auditFile, { force: true });
      return records;
    }

    /** `urlPath`'s SERVER span and its one access record carry `route` (none: no route matched) and `status`. */
    function assertRouted(records, urlPath, route, status) {
      const [span] = servers(rx.spans()).filter((s) => s.attributes['url.path'] === urlPath);
      assert.equal(span.attributes['http.route'], route, `span of ${urlPath}`);
      assert.equal(span.name, route === undefined ? 'GET' : `GET ${route}`, `span of ${urlPath}`);
      assert.equal(span.attributes['http.response.status_code'], status, urlPath);
      const access = records.filter((r) => r['url.path'] === urlPath);
      assert.equal(access.length, 1, urlPath);
      assert.equal(access[0]['http.route'], route, `access record of ${urlPath}`);
      return span;
    }

    // Each path and the route its SERVER span and access record must carry (none: no route matched).
    const ROUTES = [
      ['/plain', '/plain', 200], ['/api/items/5', '/api/items/:id', 200], ['/nest/v1/deep/7', '/nest/v1/deep/:id', 200],
      ['/sub/thing/3', '/sub/thing/:id', 200], ['/x/9', '/x/:id', 200], ['/arr2/4', '/arr1/:id,/arr2/:id', 200],
      ['/async/1', '/async/:id', 200], ['/mw/3', '/mw/:id', 200], ['/shop/orders/5', '/shop/orders/:id', 200],
      ['/shop/people/5', '/shop/people/:id', 200], ['/ft/b/9', '/ft/b/:id', 200], ['/err/2', '/err/:id', 500],
      ['/v2/things/3', '/v2/things/:id', 500], ['/sym/1', '/sym/:id', 500], ['/bare/1', '/bare/:id', 500],
      ['/bare-later/1', '/bare-later/:id', 500],
      ['/gone/1', '/gone/:id', 404],
      ['/nope', undefined, 404],
      // No route matched inside the router: instrumentation-express names the mount that took it, in both modes.
      ['/api/unknown', '/api', 404],
    ];
    for (const layerSpans of [false, true]) {
      it(`${layerSpans ? 'AUDITRACE_LAYER_SPANS=true' : 'by default'}: the route of mounted, nested, shared-prefix and fall-through routers, sub-apps, errors and 404s`, async () => {
        const auditFile = path.join(os.tmpdir(), `auditrace-routes-${process.pid}-${layerSpans}.jsonl`);
        fs.rmSync(auditFile, { force: true });
        const app = await launch('svc-express-routes.js', { env: { AUDITRACE_AUDIT_FILE: auditFile, ...(layerSpans ? { AUDITRACE_LAYER_SPANS: 'true' } : {}) } });
        const bodies = {};
        for (const [urlPath, , status] of ROUTES) {
          const res = await get(app.port, urlPath);
          assert.equal(res.status, status, urlPath);
          bodies[urlPath] = res.body;
        }
        // The app's error handler gets the app's own value (a throw inside next() would hand it a TypeError).
        assert.equal(JSON.parse(bodies['/err/2']).kind, 'Error');
        assert.equal(JSON.parse(bodies['/sym/1']).kind, 'symbol');
        // An object without a string form too, passed on at once or from a timer: upstream
        // instrumentation-express's String(err) threw for it inside next() (the bundle's is guarded).
        assert.equal(JSON.parse(bodies['/bare/1']).kind, 'null-prototype');
        assert.equal(JSON.parse(bodies['/bare-later/1']).kind, 'null-prototype');
        await rx.waitFor(() => servers(rx.spans()).length === ROUTES.length, WAIT);
        await terminate(app); // flushes the turn's access records
        const records = takeAccessRecords(auditFile);
        for (const [urlPath, route, status] of ROUTES) assertRouted(records, urlPath, route, status);
        // An error that answers 404 leaves the server span's status unset (a 4xx is the client's).
        const [gone] = servers(rx.spans()).filter((s) => s.attributes['url.path'] === '/gone/1');
        assert.equal(gone.status.code, 0);
        const scopes = new Set(rx.spans().map((s) => s.scope.name));
        assert.equal(scopes.has('@opentelemetry/instrumentation-express'), layerSpans, [...scopes].join(', '));
        if (layerSpans) {
          // The layer that passed the value on records it in words of its own.
          for (const urlPath of ['/bare/1', '/bare-later/1']) {
            const [server] = servers(rx.spans()).filter((s) => s.attributes['url.path'] === urlPath);
            const failed = rx.spans().filter((s) => s.traceId === server.traceId && s.scope.name === '@opentelemetry/instrumentation-express' && s.status.code === 2);
            assert.deepEqual(failed.map((s) => s.status.message), ['unprintable object thrown'], urlPath);
          }
        }
        if (!layerSpans) {
          // An error passed to next(err) is the server span's: its message in the status, one exception event.
          for (const [urlPath, message] of [['/err/2', 'boom'], ['/v2/things/3', 'nested boom'], ['/sym/1', 'Symbol(odd)']]) {
            const [span] = servers(rx.spans()).filter((s) => s.attributes['url.path'] === urlPath);
            assert.deepEqual(span.status, { code: 2, message }, urlPath);
            const exceptions = span.events.filter((e) => e.name === 'exception');
            assert.equal(exceptions.length, 1, urlPath);
            assert.equal(exceptions[0].attributes['exception.message'], message);
          }
          assert.equal(gone.events.filter((e) => e.name === 'exception').length, 1, 'the 404\'s error is still an event');
        }
      });
    }

    // Koa 3 with @koa/router: the route, errors and layer spans in both modes (lib/koa-layers.ts).
    const KOA_ROUTES = [
      ['/items/5', '/items/:id', 200], ['/api/v1/deep/7', '/api/v1/deep/:id', 200], ['/boom/1', '/boom/:id', 500],
      ['/later/1', '/later/:id', 500], ['/gone/1', '/gone/:id', 404], ['/nope', undefined, 404],
    ];
    for (const layerSpans of [false, true]) {
      it(`Koa, ${layerSpans ? 'AUDITRACE_LAYER_SPANS=true' : 'by default'}: the route of routers and nested routers, errors, ${layerSpans ? 'a span per middleware' : 'no middleware spans'}`, async () => {
        const auditFile = path.join(os.tmpdir(), `auditrace-koa-${process.pid}-${layerSpans}.jsonl`);
        fs.rmSync(auditFile, { force: true });
        const app = await launch('svc-koa.js', { env: { AUDITRACE_AUDIT_FILE: auditFile, ...(layerSpans ? { AUDITRACE_LAYER_SPANS: 'true' } : {}) } });
        for (const [urlPath, , status] of KOA_ROUTES) {
          const res = await get(app.port, urlPath);
          assert.equal(res.status, status, urlPath);
          if (status === 200) assert.equal(JSON.parse(res.body).seen, true, `the app's own middleware ran for ${urlPath}`);
        }
        await rx.waitFor(() => KOA_ROUTES.every(([p]) => servers(rx.spans()).some((s) => s.attributes['url.path'] === p)), WAIT);
        await new Promise((r) => setTimeout(r, 300)); // layer spans end with the response: one more batch
        await terminate(app);
        const records = takeAccessRecords(auditFile);
        for (const [urlPath, route, status] of KOA_ROUTES) {
          const span = assertRouted(records, urlPath, route, status);
          const koaSpans = rx.spans().filter((s) => s.traceId === span.traceId && s.scope.name === '@opentelemetry/instrumentation-koa');
          if (layerSpans) assert.ok(koaSpans.length > 0, `koa layer spans of ${urlPath}`);
          else assert.deepEqual(koaSpans.map((s) => s.name), [], `no koa layer spans for ${urlPath}`);
        }
        if (!layerSpans) {
          // A thrown error is the server span's: its message in the status, one exception event.
          for (const [urlPath, message] of [['/boom/1', 'koa boom'], ['/later/1', 'koa later']]) {
            const [span] = servers(rx.spans()).filter((s) => s.attributes['url.path'] === urlPath);
            assert.deepEqual(span.status, { code: 2, message }, urlPath);
            const exceptions = span.events.filter((e) => e.name === 'exception');
            assert.equal(exceptions.length, 1, urlPath);
            assert.equal(exceptions[0].attributes['exception.message'], message);
          }
          // A 4xx leaves the server span's status unset; the error is still an event.
          const [gone] = servers(rx.spans()).filter((s) => s.attributes['url.path'] === '/gone/1');
          assert.equal(gone.status.code, 0);
          assert.equal(gone.events.filter((e) => e.name === 'exception').length, 1);
        }
      });
    }

    it('AUDITRACE_LAYER_SPANS=true: express middleware and request-handler spans, router layer spans, all in the request\'s trace', async () => {
      const app = await launch('svc-express.js', { env: { AUDITRACE_LAYER_SPANS: 'true' } });
      const res = await getOk(app, '/users/42');
      assert.deepEqual(JSON.parse(res.body), { id: '42' });

      const expressSpans = () => rx.spans().filter((s) => s.scope.name === '@opentelemetry/instrumentation-express');
      const routerSpans = () => rx.spans().filter((s) => s.scope.name === '@opentelemetry/instrumentation-router');
      await rx.waitFor(() => servers(rx.spans()).length === 1
        && expressSpans().some((s) => s.attributes['express.type'] === 'request_handler')
        && routerSpans().some((s) => s.attributes['router.type'] === 'request_handler'), WAIT);

      const [server] = servers(rx.spans());
      assert.equal(server.attributes['http.route'], '/users/:id');
      assert.equal(server.name, 'GET /users/:id');
      const types = new Set(expressSpans().map((s) => s.attributes['express.type']));
      assert.ok(types.has('middleware'), `express span types: ${[...types]}`);
      assert.ok(types.has('request_handler'), `express span types: ${[...types]}`);
      const handler = expressSpans().find((s) => s.attributes['express.type'] === 'request_handler');
      assert.equal(handler.attributes['http.route'], '/users/:id');
      for (const s of [...expressSpans(), ...routerSpans()]) assert.equal(s.traceId, server.traceId, `${s.name} is in the request's trace`);
    });
  });

  describe('OTLP protocol', () => {
    /** One request, then traces, logs and metrics all arrived. */
    async function exchange(env) {
      const app = await launch('svc-http.js', { env });
      await getOk(app, '/hello');
      await rx.waitFor(() => servers(rx.spans()).length === 1 && rx.logs().length === 1
        && metricNamed(rx, 'http.server.request.duration').length > 0, WAIT);
      assert.equal(rx.logs()[0].body, 'hello log');
      assert.equal(rx.logs()[0].traceId, servers(rx.spans())[0].traceId);
      const signals = new Set(rx.requests.map((r) => r.signal));
      assert.deepEqual([...signals].sort(), ['logs', 'metrics', 'traces']);
      return new Set(rx.requests.map((r) => r.contentType.split(';')[0]));
    }

    it('is http/protobuf by default', async () => {
      assert.deepEqual([...await exchange({})], ['application/x-protobuf']);
    });

    it('is OTLP/JSON with OTEL_EXPORTER_OTLP_PROTOCOL=http/json, with the same data', async () => {
      assert.deepEqual([...await exchange({ OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json' })], ['application/json']);
    });
  });

  describe('turning signals off', () => {
    it('OTEL_TRACES_EXPORTER=none sends no trace request at all, while logs still arrive', async () => {
      const app = await launch('svc-http.js', { env: { OTEL_TRACES_EXPORTER: 'none' } });
      for (let i = 0; i < 3; i++) await getOk(app, '/hello');
      await rx.waitFor(() => rx.logs().length === 3, WAIT);
      // Whatever was still buffered is flushed on SIGTERM: after that, absence is final.
      await terminate(app);
      assert.equal(rx.requests.filter((r) => r.signal === 'traces').length, 0);
      assert.equal(rx.spans().length, 0);
      assert.deepEqual(rx.logs().map((l) => l.body), ['hello log', 'hello log', 'hello log']);
    });

    it('OTEL_SDK_DISABLED=true sends nothing, and the app still serves', async () => {
      const app = await launch('svc-http.js', { env: { OTEL_SDK_DISABLED: 'true' } });
      for (let i = 0; i < 5; i++) await getOk(app, '/hello');
      const { signal } = await terminate(app);
      assert.equal(signal, 'SIGTERM');
      assert.deepEqual(rx.requests, []);
      assert.doesNotMatch(app.stderr, /^auditrace /m, 'no start-up line: telemetry is off');
    });
  });

  describe('an unreachable collector', () => {
    const SHUTDOWN_TIMEOUT_MS = 2000;
    const EXPORT_TIMEOUT_MS = '1000';
    const countWarnings = (stderr, signal) => lines(stderr, new RegExp(`could not export ${signal}\\b`)).length;

    it('does not disturb the app: 200 requests answered, at most one warning per signal, no stack trace, prompt exit on SIGTERM', async () => {
      const port = await closedPort();
      const endpoint = `http://127.0.0.1:${port}`;
      const app = await launch('svc-http.js', {
        env: {
          OTEL_EXPORTER_OTLP_ENDPOINT: endpoint,
          // The exporters retry a refused connection until this timeout: 1 s instead of 10 s
          // makes every signal fail (and fail again) within the test.
          OTEL_EXPORTER_OTLP_TIMEOUT: EXPORT_TIMEOUT_MS,
          AUDITRACE_SHUTDOWN_TIMEOUT_MS: String(SHUTDOWN_TIMEOUT_MS),
        },
      });
      const statuses = [];
      for (let i = 0; i < 100; i++) statuses.push((await get(app.port, '/hello')).status);
      // Every signal fails (and keeps failing: 100 ms batches, 500 ms metric interval) ...
      for (const signal of ['traces', 'logs', 'metrics']) {
        await app.waitForOutput(new RegExp(`could not export ${signal}\\b`), { stream: 'stderr', timeoutMs: 15000 });
      }
      // ... and the app serves on regardless.
      for (let i = 0; i < 100; i++) statuses.push((await get(app.port, '/hello')).status);
      assert.deepEqual(statuses, new Array(200).fill(200));

      const { signal, ms } = await terminate(app);
      assert.equal(signal, 'SIGTERM', 'dies by the signal, as it would without auditrace');
      assert.ok(ms < SHUTDOWN_TIMEOUT_MS + 1500, `exited ${ms} ms after SIGTERM (shutdown timeout ${SHUTDOWN_TIMEOUT_MS} ms)`);

      const { stderr } = app;
      for (const s of ['traces', 'logs', 'metrics']) {
        assert.ok(countWarnings(stderr, s) <= 1, `at most one ${s} warning a minute:\n${stderr}`);
      }
      assert.ok(lines(stderr, /could not export/).length <= 3, stderr);
      for (const line of lines(stderr, /could not export/)) {
        assert.match(line, /^auditrace: warning: could not export \w+ to http:\/\/127\.0\.0\.1:\d+\/v1\/\w+: .*ECONNREFUSED/);
      }
      assert.doesNotMatch(stderr, /^\s+at /m, 'no stack trace');
      assert.deepEqual(rx.requests, [], 'the receiver was not the endpoint');
    });

    it('bounds the SIGTERM flush by AUDITRACE_SHUTDOWN_TIMEOUT_MS while the exporters would retry for 10 s', async () => {
      const port = await closedPort();
      const app = await launch('svc-http.js', {
        env: {
          OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${port}`,
          OTEL_EXPORTER_OTLP_TIMEOUT: '10000',
          AUDITRACE_SHUTDOWN_TIMEOUT_MS: '1000',
        },
      });
      for (let i = 0; i < 20; i++) await getOk(app, '/hello');
      // Spans and logs are buffered or in flight: the final flush has something to retry.
      const { signal, ms } = await terminate(app);
      assert.equal(signal, 'SIGTERM');
      assert.ok(ms < 1000 + 1500, `exited ${ms} ms after SIGTERM (shutdown timeout 1000 ms, export timeout 10000 ms)`);
      assert.doesNotMatch(app.stderr, /^\s+at /m, 'no stack trace');
    });

    it('counts every failed export (auditrace.export.failures) but prints one warning per signal', async () => {
      // Traces and logs go nowhere; metrics reach the receiver, so the loss counters can be read.
      const port = await closedPort();
      const app = await launch('svc-http.js', {
        env: {
          OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${port}`,
          OTEL_EXPORTER_OTLP_METRICS_ENDPOINT: `${rx.url}/v1/metrics`,
          OTEL_EXPORTER_OTLP_TIMEOUT: EXPORT_TIMEOUT_MS,
        },
      });
      const failures = (signal) => counterValue(rx, 'auditrace.export.failures', signal);
      // Keep traffic flowing until each of the two signals has failed at least three times.
      await rx.waitFor(async () => {
        await getOk(app, '/hello');
        return failures('traces') >= 3 && failures('logs') >= 3;
      }, { timeoutMs: 25000, intervalMs: 150 });

      assert.equal(countWarnings(app.stderr, 'traces'), 1, app.stderr);
      assert.equal(countWarnings(app.stderr, 'logs'), 1, app.stderr);
      assert.equal(countWarnings(app.stderr, 'metrics'), 0, app.stderr);
      const dropped = metricNamed(rx, 'auditrace.export.dropped').flatMap((m) => m.dataPoints);
      assert.ok(dropped.some((p) => p.attributes.signal === 'traces' && p.value >= 3), JSON.stringify(dropped));
    });
  });

  describe('a collector that refuses exports (HTTP 503)', () => {
    let down;
    beforeEach(async () => { down = await startOtlpReceiver({ status: 503 }); });
    afterEach(async () => { await down.close(); });
    const traceRequests = () => down.requests.filter((r) => r.signal === 'traces');

    it('pauses 1–5 s after a failed export instead of sending every batch into the outage; the unsent batches are counted; it resumes when the collector is back', async () => {
      const app = await launch('svc-http.js', {
        env: {
          // Spans go to the refusing collector (a batch every 100 ms), metrics to the receiver.
          OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: `${down.url}/v1/traces`,
          OTEL_LOGS_EXPORTER: 'none',
          // One attempt per export: the exporter's own retry (after ≈ 1 s) would not fit in 500 ms.
          OTEL_EXPORTER_OTLP_TIMEOUT: '500',
        },
      });
      let served = 0;
      const t0 = Date.now();
      while (Date.now() - t0 < 4000) {
        await getOk(app, '/hello');
        served++;
      }
      // Without the pause: a request every 100 ms, ≈ 40. With it: at ≈ 0.1, 1.1, 3.1 s (±20 %).
      const sent = traceRequests().length;
      assert.ok(sent >= 2 && sent <= 5, `${sent} trace export requests in 4 s of traffic (${served} requests served)`);
      // Every span is accounted for: in a batch that was refused, or in one dropped unsent.
      await rx.waitFor(() => counterValue(rx, 'auditrace.export.dropped', 'traces') === served, { timeoutMs: 15000, intervalMs: 100 });
      assert.equal(counterValue(rx, 'auditrace.export.failures', 'traces'), traceRequests().length, 'failures counts the requests sent');
      assert.equal(lines(app.stderr, /could not export traces\b/).length, 1, app.stderr);
      assert.match(app.stderr, /could not export traces to .*: .*; that batch is dropped, and until an export succeeds the next is sent after a pause of 1 s doubling to 5 s/);

      down.setStatus(200);
      const back = Date.now();
      await down.waitFor(async () => {
        await getOk(app, '/hello');
        return servers(down.spans()).length > 0;
      }, { timeoutMs: 10000, intervalMs: 50 });
      assert.ok(Date.now() - back < 5000 * 1.2 + 1500, `spans reached the collector ${Date.now() - back} ms after it came back`);
    });
  });

  describe('the start-up line', () => {
    const startupLines = (stderr) => lines(stderr, /^auditrace /);

    it('is exactly one stderr line naming the service and its instance id', async () => {
      const app = await launch('svc-http.js', { env: { OTEL_SERVICE_NAME: 'checkout' } });
      await getOk(app, '/hello');
      await rx.waitFor(() => servers(rx.spans()).length === 1, WAIT);

      const found = startupLines(app.stderr);
      assert.equal(found.length, 1, app.stderr);
      const [line] = found;
      assert.match(line, /^auditrace \d+\.\d+\.\d+\S*: /);
      assert.match(line, / service\.name="checkout" /);
      const instanceId = servers(rx.spans())[0].resource['service.instance.id'];
      assert.ok(line.includes(` service.instance.id="${instanceId}" `), `${line}\nexpected instance id ${instanceId}`);
      assert.equal(app.stdout, `listening ${app.port}\n`, 'nothing of auditrace on the app\'s stdout');
    });

    // Also at the most verbose diagnostic level, where the SDK itself logs what it does.
    for (const extra of [{}, { OTEL_LOG_LEVEL: 'all' }]) {
      const label = Object.keys(extra).length ? ` (with OTEL_LOG_LEVEL=${extra.OTEL_LOG_LEVEL})` : '';
      it(`never shows header values: OTEL_EXPORTER_OTLP_HEADERS=authorization=Bearer%20s3cr3t${label}`, async () => {
        const app = await launch('svc-http.js', {
          env: { OTEL_EXPORTER_OTLP_HEADERS: 'authorization=Bearer%20s3cr3t', ...extra },
        });
        await getOk(app, '/hello');
        await rx.waitFor(() => servers(rx.spans()).length === 1 && rx.logs().length === 1
          && metricNamed(rx, 'http.server.request.duration').length > 0, WAIT);
        await terminate(app);

        assert.equal(startupLines(app.stderr).length, 1, app.stderr);
        assert.match(startupLines(app.stderr)[0], /authorization=\[redacted\]/);
        assert.ok(!app.stderr.includes('s3cr3t'), `secret on stderr:\n${app.stderr}`);
        assert.ok(!app.stdout.includes('s3cr3t'), `secret on stdout:\n${app.stdout}`);
      });
    }

    for (const [name, value] of [['AUDITRACE_QUIET', 'true'], ['OTEL_LOG_LEVEL', 'none']]) {
      it(`is not printed with ${name}=${value}, while telemetry still flows`, async () => {
        const app = await launch('svc-http.js', { env: { [name]: value } });
        await getOk(app, '/hello');
        await rx.waitFor(() => servers(rx.spans()).length === 1, WAIT);
        assert.deepEqual(startupLines(app.stderr), [], app.stderr);
      });
    }
  });
});

describe('instrumentations of npm packages are created when their package is first loaded', function () {
  this.timeout(30000);
  const fs = require('node:fs');
  const path = require('node:path');
  const { runApp, ROOT } = require('../helpers/run-app');
  let dir;
  before(() => {
    // An app outside this repository. Its dependency `dep` has Express in its own node_modules
    // (a symlink to this repository's copy), where nothing above the app would find it.
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'auditrace-deferred-app-'));
    fs.writeFileSync(path.join(dir, 'app.js'), "require('node:http');\n");
    fs.writeFileSync(path.join(dir, 'express-app.js'), [
      "const app = require('dep')();",
      "const server = app.listen(0, '127.0.0.1', () => process.stdout.write(`listening ${server.address().port}\\n`));",
      '',
    ].join('\n'));
    const dep = path.join(dir, 'node_modules', 'dep');
    fs.mkdirSync(path.join(dep, 'node_modules'), { recursive: true });
    fs.writeFileSync(path.join(dep, 'package.json'), '{"name":"dep","version":"1.0.0"}');
    fs.writeFileSync(path.join(dep, 'index.js'), [
      "const express = require('express');",
      'module.exports = () => { const app = express(); app.get(\'/users/:id\', function getUser(req, res) { res.json({ id: req.params.id }); }); return app; };',
      '',
    ].join('\n'));
    fs.symlinkSync(path.join(ROOT, 'node_modules', 'express'), path.join(dep, 'node_modules', 'express'), 'dir');
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  const OFF = { OTEL_TRACES_EXPORTER: 'none', OTEL_METRICS_EXPORTER: 'none', OTEL_LOGS_EXPORTER: 'none' };
  const run = async (env) => {
    const r = await runApp(path.join(dir, 'app.js'), { cwd: dir, env: { ...OFF, NODE_PATH: '', ...HERMETIC, ...env } });
    assert.equal(r.code, 0, r.stderr);
    const m = /instrumentations=(\S+)(?: on-first-load=(\d+))?/.exec(r.stderr);
    assert.ok(m, r.stderr);
    return { now: m[1].split(',').sort(), later: Number(m[2] ?? 0), stderr: r.stderr };
  };

  it('by default: built-in and channel-based ones at start, the other 32 wait (router only with layer spans); none is created for a package never loaded', async () => {
    const r = await run({ OTEL_LOG_LEVEL: 'info' });
    assert.deepEqual(r.now, ['http', 'runtime-node', 'undici']);
    assert.equal(r.later, 32);
    assert.equal((await run({ AUDITRACE_LAYER_SPANS: 'true' })).later, 33);
    assert.doesNotMatch(r.stderr, /instrumentation \S+ created/);
  });

  it('a list the user wrote: its built-in ones at start, the rest when loaded', async () => {
    const r = await run({ OTEL_NODE_ENABLED_INSTRUMENTATIONS: 'http,express,pg' });
    assert.deepEqual(r.now, ['http']);
    assert.equal(r.later, 2);
  });

  it('a package required by a dependency from its own node_modules is instrumented, once', async () => {
    const rx = await startOtlpReceiver();
    const app = startApp(path.join(dir, 'express-app.js'), {
      cwd: dir,
      env: { ...HERMETIC, NODE_PATH: '', OTEL_LOG_LEVEL: 'info', OTEL_EXPORTER_OTLP_ENDPOINT: rx.url, OTEL_BSP_SCHEDULE_DELAY: '100', OTEL_METRICS_EXPORTER: 'none', AUDITRACE_LAYER_SPANS: 'true' },
    });
    try {
      const [, port] = await app.waitForOutput(/^listening (\d+)$/m, { timeoutMs: 20000 });
      assert.equal((await get(Number(port), '/users/7')).status, 200);
      const scope = '@opentelemetry/instrumentation-express';
      await rx.waitFor(() => rx.spans().some((s) => s.scope.name === scope), WAIT);
      assert.equal(app.stderr.match(/instrumentation express created: its package was loaded/g)?.length, 1, app.stderr);
    } finally {
      app.child.kill('SIGKILL');
      await rx.close();
    }
  });
});
