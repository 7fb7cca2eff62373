'use strict';
// The edge under real frameworks: the same app written for Express 5, Fastify 5 and plain
// node:http (test/fixtures/edge/fw-*.js), each preloaded with `--require auditrace/register`.
// Every request must leave exactly one access record tied to its server span, without query
// values; 401/403 get an authn_fail/authz_fail unless the handler recorded one itself.
const assert = require('node:assert/strict');
const fs = require('node:fs');
const http = require('node:http');
const os = require('node:os');
const path = require('node:path');
const Ajv2020 = require('ajv/dist/2020').default;
const { startOtlpReceiver } = require('../helpers/otlp-receiver.js');
const { startApp, ROOT } = require('../helpers/run-app.js');
const { readAuditRecords } = require('../helpers/audit-file.js');

const schema = JSON.parse(fs.readFileSync(path.join(ROOT, 'audit-record.schema.json'), 'utf8'));
const validate = new Ajv2020({ allErrors: true, strict: true, strictRequired: false }).compile(schema);

const SECRET = 'secret-value';
const ITEM = JSON.stringify({ name: 'widget', qty: 2 });
/** One request per route; `route` is the template a framework that knows it must report. */
const REQUESTS = [
  { key: 'user', method: 'GET', url: `/users/42?q=${SECRET}`, path: '/users/42', route: '/users/:id', status: 200 },
  { key: 'missing', method: 'GET', url: `/no/such/route?q=${SECRET}`, path: '/no/such/route', route: undefined, status: 404 },
  { key: 'authn', method: 'GET', url: '/login', path: '/login', route: '/login', status: 401 },
  { key: 'authnRecorded', method: 'GET', url: '/login/recorded', path: '/login/recorded', route: '/login/recorded', status: 401 },
  { key: 'authz', method: 'GET', url: `/admin?token=${SECRET}`, path: '/admin', route: '/admin', status: 403 },
  { key: 'authzRecorded', method: 'GET', url: '/admin/recorded', path: '/admin/recorded', route: '/admin/recorded', status: 403 },
  { key: 'post', method: 'POST', url: `/items?q=${SECRET}`, path: '/items', route: '/items', status: 201, body: ITEM },
];
/** Through a router mounted at /api/v1: kept apart because Express rewrites req.url inside it. */
const MOUNTED = { key: 'mounted', method: 'GET', url: `/api/v1/orders/7?q=${SECRET}`, path: '/api/v1/orders/7', route: '/api/v1/orders/:oid', status: 200 };
/** Sent one after the other on one kept-alive connection. */
const KEEPALIVE = ['ka-1', 'ka-2', 'ka-3'].map((id) => ({ method: 'GET', url: `/users/${id}?q=${SECRET}`, path: `/users/${id}`, route: '/users/:id', status: 200 }));
const SENT = REQUESTS.length + 1 + KEEPALIVE.length;

function send(port, { method, url, body }, agent = false) {
  return new Promise((resolve, reject) => {
    const headers = body ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } : {};
    const req = http.request({ host: '127.0.0.1', port, method, path: url, headers, agent }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { text += d; });
      res.on('end', () => resolve({ status: res.statusCode, body: text }));
    });
    req.setTimeout(10_000, () => req.destroy(new Error(`${method} ${url} timed out`)));
    req.on('error', reject);
    req.end(body);
  });
}

async function until(predicate, timeoutMs, what) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = predicate();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

for (const framework of ['express', 'fastify', 'http']) {
  describe(`edge under ${framework === 'http' ? 'plain node:http' : framework} (fixtures/edge/fw-${framework}.js)`, function () {
    this.timeout(60_000);
    let rx; let app; let dir; let file; let responses; let records; let serverSpans;

    const readRecords = () => readAuditRecords(file);
    const access = (r) => records.find((x) => x['event.name'] === 'http_request' && x['url.path'] === r.path && x['http.request.method'] === r.method);
    const byKey = (key) => REQUESTS.find((r) => r.key === key);
    const sameRequest = (key) => records.filter((x) => x['request.id'] === access(byKey(key))['request.id']);

    before(async () => {
      rx = await startOtlpReceiver();
      dir = fs.mkdtempSync(path.join(os.tmpdir(), `auditrace-fw-${framework}-`));
      file = path.join(dir, 'audit.jsonl');
      app = startApp(`edge/fw-${framework}.js`, {
        env: {
          OTEL_SERVICE_NAME: `fw-${framework}`, OTEL_EXPORTER_OTLP_ENDPOINT: rx.url, OTEL_BSP_SCHEDULE_DELAY: '100',
          OTEL_METRICS_EXPORTER: 'none', AUDITRACE_AUDIT_FILE: file,
        },
      });
      const [, port] = await app.waitForOutput(/listening (\d+)/, { timeoutMs: 20_000 });
      responses = {};
      for (const r of [...REQUESTS, MOUNTED]) responses[r.key] = await send(Number(port), r);
      const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
      try {
        for (const r of KEEPALIVE) responses[r.path] = await send(Number(port), r, agent);
      } finally {
        agent.destroy();
      }
      await until(() => readRecords().filter((x) => x['event.name'] === 'http_request').length >= SENT, 10_000, 'access records');
      await rx.waitFor(() => rx.spans().filter((s) => s.kind === 2).length >= SENT, { timeoutMs: 15_000 });
      await new Promise((r) => setTimeout(r, 300)); // anything written late would show up as a duplicate
      records = readRecords();
      serverSpans = rx.spans().filter((s) => s.kind === 2);
    });

    after(async () => {
      await app?.kill('SIGKILL');
      await rx?.close();
      if (dir) fs.rmSync(dir, { recursive: true, force: true });
    });

    it('the app answers every route as it does without auditrace', () => {
      for (const r of [...REQUESTS, MOUNTED]) assert.equal(responses[r.key].status, r.status, `${r.method} ${r.url}: ${responses[r.key].body}`);
      assert.deepEqual(JSON.parse(responses.mounted.body), { order: '7' });
      assert.deepEqual(JSON.parse(responses.post.body), { received: JSON.parse(ITEM) });
      assert.deepEqual(JSON.parse(responses.user.body), { id: '42' });
      assert.doesNotMatch(app.stderr, /^\s+at .+:\d+:\d+\)?$/m, 'a stack trace on stderr');
    });

    it('writes exactly one http_request record per request, each with its own request id', () => {
      const all = records.filter((x) => x['event.name'] === 'http_request');
      assert.equal(all.length, SENT, JSON.stringify(all.map((x) => x['url.path'])));
      for (const r of REQUESTS) {
        assert.equal(all.filter((x) => x['url.path'] === r.path && x['http.request.method'] === r.method).length, 1, r.path);
      }
      assert.equal(new Set(all.map((x) => x['request.id'])).size, SENT);
      // one server span per request id, one access record per server span
      assert.equal(serverSpans.length, SENT);
      for (const s of serverSpans) assert.equal(all.filter((x) => x['request.id'] === s.attributes['request.id']).length, 1, s.attributes['url.path']);
    });

    it('each access record: method, path without query, status, duration, peer, outcome', () => {
      for (const r of REQUESTS) {
        const a = access(r);
        assert.equal(a['http.request.method'], r.method);
        assert.equal(a['url.path'], r.path);
        assert.equal(a['http.response.status_code'], r.status);
        assert.equal(typeof a['http.server.request.duration'], 'number');
        assert.ok(a['http.server.request.duration'] > 0 && a['http.server.request.duration'] < 10, String(a['http.server.request.duration']));
        assert.equal(a['network.peer.address'], '127.0.0.1');
        assert.equal(a['client.address'], '127.0.0.1', 'an untrusted peer is its own client');
        assert.match(a['request.id'], /^[0-9a-f]{32}$/);
        assert.equal(a['event.outcome'], r.status >= 400 ? 'failure' : 'success');
        assert.equal(a.severity, r.status >= 400 ? 'WARN' : 'INFO');
        assert.equal(a['error.type'], undefined);
      }
    });

    it('requests on one kept-alive connection get one access record each, with their own ids', () => {
      const ports = new Set();
      for (const r of KEEPALIVE) {
        assert.equal(responses[r.path].status, 200);
        const a = access(r);
        assert.ok(a, r.path);
        assert.equal(a['http.response.status_code'], 200);
        if (framework !== 'http') assert.equal(a['http.route'], r.route);
        const span = serverSpans.find((s) => s.attributes['request.id'] === a['request.id']);
        assert.equal(span.attributes['url.path'], r.path);
        assert.equal(a.trace_id, span.traceId);
        ports.add(span.attributes['network.peer.port']);
      }
      assert.equal(new Set(KEEPALIVE.map((r) => access(r)['request.id'])).size, KEEPALIVE.length);
      assert.equal(ports.size, 1, 'the three requests did not share one connection');
    });

    it('the access record\'s request.id and trace_id are those of the server span', () => {
      for (const r of REQUESTS) {
        const a = access(r);
        const spans = serverSpans.filter((s) => s.attributes['request.id'] === a['request.id']);
        assert.equal(spans.length, 1, `${r.path}: server spans with request.id ${a['request.id']}`);
        assert.equal(a.trace_id, spans[0].traceId, r.path);
        assert.equal(spans[0].attributes['url.path'], r.path);
        assert.equal(spans[0].attributes['client.address'], '127.0.0.1');
        assert.equal(spans[0].attributes['network.peer.address'], '127.0.0.1');
        assert.equal(spans[0].attributes['http.response.status_code'], r.status);
      }
    });

    it('no query value reaches a record, a span or a log; query keys survive as url.query on the span', () => {
      const text = fs.readFileSync(file, 'utf8');
      assert.ok(!text.includes(SECRET), 'a query value in the audit file');
      const telemetry = JSON.stringify([rx.spans(), rx.logs()]);
      assert.ok(!telemetry.includes(SECRET), 'a query value in spans or logs');
      const span = serverSpans.find((s) => s.attributes['request.id'] === access(byKey('user'))['request.id']);
      assert.equal(span.attributes['url.query'], 'q=REDACTED');
    });

    it('http.route is the route template when present, never the concrete path', () => {
      for (const r of REQUESTS) {
        const a = access(r);
        const route = a['http.route'];
        if (framework !== 'http') {
          // Express tells its instrumentation which route matched; Fastify its diagnostics channel.
          // An unmatched request (404) has no template.
          assert.equal(route, r.route, r.path);
        } else {
          // Plain node:http has no routes: nothing can know a template.
          assert.equal(route, undefined, r.path);
        }
        const span = serverSpans.find((s) => s.attributes['request.id'] === a['request.id']);
        assert.ok(span.attributes['http.route'] === undefined || span.attributes['http.route'] === r.route, `span ${r.path}: ${span.attributes['http.route']}`);
        assert.equal(a['http.route'], span.attributes['http.route'], `${r.path}: record and span disagree on http.route`);
      }
    });

    it('a 401 the app did not record gets one authn_fail with the same request id', () => {
      const recs = sameRequest('authn');
      assert.deepEqual(recs.map((x) => x['event.name']).sort(), ['authn_fail', 'http_request']);
      const f = recs.find((x) => x['event.name'] === 'authn_fail');
      assert.equal(f['url.path'], '/login');
      assert.equal(f['event.outcome'], 'failure');
      assert.equal(f['client.address'], '127.0.0.1');
      assert.equal(f.trace_id, access(byKey('authn')).trace_id);
      if (framework !== 'http') assert.equal(f['http.route'], '/login');
    });

    it('a 403 the app did not record gets one authz_fail with the same request id', () => {
      const recs = sameRequest('authz');
      assert.deepEqual(recs.map((x) => x['event.name']).sort(), ['authz_fail', 'http_request']);
      const f = recs.find((x) => x['event.name'] === 'authz_fail');
      assert.equal(f['authz.action'], 'GET /admin');
      assert.equal(f.reason, 'http_403');
      assert.ok(!JSON.stringify(f).includes(SECRET));
    });

    it('no automatic authn_fail/authz_fail when the handler recorded the failure itself', () => {
      const authn = sameRequest('authnRecorded');
      assert.deepEqual(authn.map((x) => x['event.name']).sort(), ['authn_login_fail', 'http_request']);
      assert.equal(authn.find((x) => x['event.name'] === 'authn_login_fail')['user.id'], 'u-9');
      const authz = sameRequest('authzRecorded');
      assert.deepEqual(authz.map((x) => x['event.name']).sort(), ['authz_fail', 'http_request']);
      assert.equal(authz.find((x) => x['event.name'] === 'authz_fail')['authz.action'], 'admin:read', 'the application\'s own authz_fail, not ours');
    });

    it('no authn_fail/authz_fail for requests that were not 401/403', () => {
      for (const key of ['user', 'missing', 'post']) {
        assert.deepEqual(sameRequest(key).map((x) => x['event.name']).filter((n) => n.startsWith('auth')), [], key);
      }
    });

    it('a record written in the handler carries the access record\'s request.id, client.address and trace', () => {
      const a = access(byKey('user'));
      assert.equal(records.filter((x) => x['event.name'] === 'user_viewed').length, 1 + KEEPALIVE.length);
      const own = records.filter((x) => x['event.name'] === 'user_viewed' && x['object.id'] === '42');
      assert.equal(own.length, 1);
      assert.equal(own[0]['request.id'], a['request.id']);
      assert.equal(own[0]['client.address'], a['client.address']);
      assert.equal(own[0].trace_id, a.trace_id);
      assert.equal(own[0]['object.id'], '42');
      for (const key of ['authnRecorded', 'authzRecorded']) {
        for (const x of sameRequest(key)) assert.equal(x['client.address'], '127.0.0.1');
      }
      for (const r of KEEPALIVE) {
        const mine = records.filter((x) => x['event.name'] === 'user_viewed' && x['object.id'] === r.path.split('/').pop());
        assert.equal(mine.length, 1, r.path);
        assert.equal(mine[0]['request.id'], access(r)['request.id'], `${r.path}: a kept-alive request saw another request's id`);
      }
    });

    it('every record validates against audit-record.schema.json', () => {
      for (const r of records) assert.ok(validate(r), `${r['event.name']}: ${JSON.stringify(validate.errors)}`);
    });

    // Express strips the mount path from req.url while a mounted router handles the request, so the
    // path is taken when the request arrives (Edge.decide), before any router sees it.
    it('a request answered inside a mounted router is recorded with the path the client asked for', () => {
      const span = serverSpans.find((s) => s.attributes['url.path'] === MOUNTED.path);
      assert.ok(span, 'the server span of the mounted route');
      const a = records.find((x) => x['event.name'] === 'http_request' && x['request.id'] === span.attributes['request.id']);
      assert.equal(a['http.response.status_code'], 200);
      if (framework !== 'http') assert.equal(a['http.route'], MOUNTED.route);
      else assert.equal(a['http.route'], undefined);
      assert.equal(a['url.path'], MOUNTED.path);
    });

    if (framework === 'http') {
      // From Content-Length: counting socket bytes after the head misses a body that arrived in the
      // same segment as the head.
      it('http.request.body.size of a POST is the size of the body that was sent', () => {
        assert.equal(access(byKey('post'))['http.request.body.size'], Buffer.byteLength(ITEM));
      });
    }
  });
}

describe('the access record times the response by the app\'s res.end(), not by when it is written', function () {
  this.timeout(60_000);
  let app; let dir; let file;

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'auditrace-late-'));
    file = path.join(dir, 'audit.jsonl');
    app = startApp('edge/late-writer.js', {
      env: { OTEL_TRACES_EXPORTER: 'none', OTEL_METRICS_EXPORTER: 'none', OTEL_LOGS_EXPORTER: 'none', AUDITRACE_AUDIT_FILE: file },
    });
  });
  after(async () => {
    await app?.kill('SIGKILL');
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('a process stalled after the write still records the end it had (so a caller\'s interval contains it)', async () => {
    const [, port] = await app.waitForOutput(/listening (\d+)/, { timeoutMs: 20_000 });
    const res = await send(Number(port), { method: 'GET', url: '/stall/150' });
    const { endedAt } = JSON.parse(res.body);
    const access = await until(() => (fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : '').split('\n').filter(Boolean)
      .map((l) => JSON.parse(l)).find((x) => x['event.name'] === 'http_request'), 10_000, 'the access record');
    const recordedEnd = Date.parse(access.time);
    assert.ok(recordedEnd >= endedAt && recordedEnd - endedAt < 50, `time ${access.time} vs res.end() at ${new Date(endedAt).toISOString()}`);
    const d = access['http.server.request.duration'];
    assert.ok(d >= 0.015 && d < 0.1, `duration ${d} s: the 150 ms stall after res.end() must not count`);
  });
});
