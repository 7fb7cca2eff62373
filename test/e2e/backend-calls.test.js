'use strict';
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const Ajv2020 = require('ajv/dist/2020').default;
const { startOtlpReceiver } = require('../helpers/otlp-receiver.js');
const { freePort } = require('../helpers/collector.js');
const { startApp, ROOT } = require('../helpers/run-app.js');
const { readAuditRecords } = require('../helpers/audit-file.js');
const { BODY_WAIT_MS } = require('../../dist/lib/backend-calls.js');

const schema = JSON.parse(fs.readFileSync(path.join(ROOT, 'audit-record.schema.json'), 'utf8'));
const validate = new Ajv2020({ allErrors: true, strict: true, strictRequired: false }).compile(schema);

const BACKEND_ERROR = '{"error":"inventory db unavailable"}';
const BIG = `${'inventory shard 7 unreachable; '.repeat(200)}END`; // as test/fixtures/edge/backend-inventory.js
const TARGETS = ['fail', 'ok', 'big-fail', 'gzip-fail', 'reset', 'closed', 'hang'];

async function get(port, urlPath) {
  const r = await fetch(`http://127.0.0.1:${port}${urlPath}`);
  assert.equal(r.status, 200, urlPath);
  return r.json();
}

describe('backend_call_fail: failed outgoing http and fetch calls', function () {
  let rx; let backend; let backendPort; let closedPort; let dir; const apps = [];

  const read = (file) => readAuditRecords(file);

  async function startBackendApp(name, { preload, env } = {}) {
    const file = path.join(dir, `${name}.jsonl`);
    const app = startApp('edge/backend-app.js', {
      preload,
      env: {
        OTEL_SERVICE_NAME: name, OTEL_EXPORTER_OTLP_ENDPOINT: rx.url, OTEL_BSP_SCHEDULE_DELAY: '100',
        OTEL_METRICS_EXPORTER: 'none', AUDITRACE_AUDIT_FILE: file,
        BACKEND_URL: `http://127.0.0.1:${backendPort}`, CLOSED_PORT: String(closedPort), ...env,
      },
    });
    apps.push(app);
    const [, port] = await app.waitForOutput(/listening (\d+)/);
    return { port: Number(port), records: () => read(file), app };
  }

  before(async () => {
    rx = await startOtlpReceiver();
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'auditrace-backend-'));
    backend = startApp('edge/backend-inventory.js', { preload: 'none' });
    [, backendPort] = await backend.waitForOutput(/listening (\d+)/);
    closedPort = await freePort();
  });
  after(async () => {
    await Promise.all(apps.splice(0).map((a) => a.kill('SIGKILL')));
    await backend?.kill('SIGKILL');
    await rx?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  describe('with the preload (records on by default)', () => {
    let svc; const seen = {}; let plain; let failures; let access;

    before(async () => {
      svc = await startBackendApp('orders');
      // First: a 5xx with a body too large to arrive unread; only the fallback timer can record it.
      seen.unreadHuge = await get(svc.port, '/unread/huge-fail');
      for (const t of TARGETS) seen[t] = await get(svc.port, `/call/${t}`);
      seen.unread = await get(svc.port, '/unread/fail');
      // The same calls from the same app without auditrace: what the app sees must not change.
      const bare = await startBackendApp('orders-bare', { preload: 'none' });
      plain = {};
      for (const t of TARGETS) plain[t] = await get(bare.port, `/call/${t}`);
      plain.unread = await get(bare.port, '/unread/fail');
      plain.unreadHuge = await get(bare.port, '/unread/huge-fail');
      const deadline = Date.now() + BODY_WAIT_MS + 5000;
      while (!svc.records().some((r) => r['url.path'] === '/huge-fail') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
      await new Promise((r) => setTimeout(r, 300));
      const all = svc.records();
      failures = all.filter((r) => r['event.name'] === 'backend_call_fail');
      access = Object.fromEntries(all.filter((r) => r['event.name'] === 'http_request').map((r) => [r['url.path'], r]));
    });

    const forCall = (urlPath) => failures.filter((r) => r['request.id'] === access[urlPath]['request.id']);

    it('the app receives exactly what it receives without auditrace, complete bodies included', () => {
      assert.deepEqual(seen, plain);
      assert.deepEqual(seen.fail, { http: { status: 503, body: BACKEND_ERROR }, fetch: { status: 503, body: BACKEND_ERROR } });
      assert.equal(seen['big-fail'].http.body, BIG);
      assert.equal(seen['big-fail'].fetch.body, BIG);
      assert.equal(seen['gzip-fail'].fetch.body, 'upstream pricing service timed out');
      assert.equal(seen.ok.http.body, '{"stock":42}');
    });

    it('writes one record per failed call (http.get and fetch), in the incoming request\'s context', () => {
      const records = forCall('/call/fail');
      assert.equal(records.length, 2, JSON.stringify(records));
      for (const r of records) {
        assert.equal(r['http.response.status_code'], 503);
        assert.equal(r['error.message'], BACKEND_ERROR);
        assert.equal(r['server.address'], `127.0.0.1:${backendPort}`);
        assert.equal(r['url.path'], '/fail');
        assert.equal(r['event.outcome'], 'failure');
        assert.equal(r.severity, 'WARN');
        assert.match(r['request.id'], /^[0-9a-f]{32}$/);
        assert.match(r.trace_id, /^[0-9a-f]{32}$/);
        assert.equal(r.trace_id, access['/call/fail'].trace_id);
        assert.equal(r['audit.problems'], undefined);
      }
    });

    it('writes nothing for a call that succeeded', () => {
      assert.equal(forCall('/call/ok').length, 0);
      assert.equal(failures.filter((r) => r['url.path'] === '/ok').length, 0);
    });

    it('keeps at most ~1 KB of a long error body, and decompresses a compressed one', () => {
      const big = forCall('/call/big-fail');
      assert.equal(big.length, 2);
      for (const r of big) {
        assert.ok(r['error.message'].startsWith('inventory shard 7 unreachable; '), r['error.message']);
        const bytes = Buffer.byteLength(r['error.message']);
        assert.ok(bytes > 900 && bytes <= 1024, String(bytes));
      }
      const gz = forCall('/call/gzip-fail');
      assert.equal(gz.length, 2);
      for (const r of gz) {
        assert.equal(r['http.response.status_code'], 502);
        assert.equal(r['error.message'], 'upstream pricing service timed out');
      }
    });

    it('records network errors with their code: refused, reset, timeout', () => {
      const refused = forCall('/call/closed');
      assert.equal(refused.length, 2);
      for (const r of refused) {
        assert.equal(r['error.type'], 'ECONNREFUSED');
        assert.equal(r['server.address'], `127.0.0.1:${closedPort}`);
        assert.equal(r['url.path'], '/inventory');
        assert.match(r['error.message'], /ECONNREFUSED/);
        assert.equal(r['http.response.status_code'], undefined);
      }
      assert.deepEqual(forCall('/call/reset').map((r) => r['error.type']).sort(), ['ECONNRESET', 'UND_ERR_SOCKET']);
      assert.deepEqual(forCall('/call/hang').map((r) => r['error.type']), ['TimeoutError', 'TimeoutError']);
    });

    it('records a 5xx whose body the app never reads', () => {
      const [r, ...more] = forCall('/unread/fail');
      assert.equal(more.length, 0);
      assert.equal(r['http.response.status_code'], 503);
      assert.equal(r['error.message'], BACKEND_ERROR);
    });

    it('records a 5xx whose large body is never read, after BODY_WAIT_MS, with its first kilobyte', () => {
      assert.deepEqual(seen.unreadHuge, { status: 500 });
      const [r, ...more] = forCall('/unread/huge-fail');
      assert.equal(more.length, 0);
      assert.equal(r['http.response.status_code'], 500);
      assert.match(r['error.message'], /^huge failure x{100}/);
      assert.ok(Buffer.byteLength(r['error.message']) <= 1024);
      const waited = Date.parse(r.time) - Date.parse(access['/unread/huge-fail'].time);
      assert.ok(waited >= BODY_WAIT_MS - 500, `written after ${waited} ms`);
    });

    it('never writes query strings, and every record validates against audit-record.schema.json', () => {
      assert.equal(failures.length, 2 * 6 + 2);
      assert.ok(!JSON.stringify(failures).includes('t0psecret'));
      for (const r of failures) assert.ok(validate(r), `${JSON.stringify(r)}: ${JSON.stringify(validate.errors)}`);
    });
  });

  it('AUDITRACE_BACKEND_CALL_RECORDS=false writes no backend_call_fail record', async () => {
    const svc = await startBackendApp('orders-off', { env: { AUDITRACE_BACKEND_CALL_RECORDS: 'false' } });
    for (const t of ['fail', 'closed', 'reset']) await get(svc.port, `/call/${t}`);
    await get(svc.port, '/unread/fail');
    await new Promise((r) => setTimeout(r, 300));
    const records = svc.records();
    assert.equal(records.filter((r) => r['event.name'] === 'http_request').length, 4);
    assert.equal(records.filter((r) => r['event.name'] === 'backend_call_fail').length, 0);
  });

  it("does not record the exporters' own failed uploads when the collector is down", async () => {
    const collectorPort = await freePort();
    const svc = await startBackendApp('orders-nocollector', {
      env: {
        OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${collectorPort}`, OTEL_EXPORTER_OTLP_TIMEOUT: '1000',
        OTEL_METRICS_EXPORTER: 'otlp', OTEL_METRIC_EXPORT_INTERVAL: '200', OTEL_METRIC_EXPORT_TIMEOUT: '200',
        OTEL_BLRP_SCHEDULE_DELAY: '100', AUDITRACE_AUDIT_OTLP: 'true',
      },
    });
    await get(svc.port, '/call/ok');
    await get(svc.port, '/call/fail');
    // Every signal's uploads were attempted (with retries) and refused.
    for (const signal of ['traces', 'metrics', 'logs']) {
      await svc.app.waitForOutput(new RegExp(`could not export ${signal} to http://127\\.0\\.0\\.1:${collectorPort}`), { stream: 'stderr' });
    }
    await new Promise((r) => setTimeout(r, 300));
    const failures = svc.records().filter((r) => r['event.name'] === 'backend_call_fail');
    assert.equal(failures.length, 2, JSON.stringify(failures));
    for (const r of failures) assert.equal(r['server.address'], `127.0.0.1:${backendPort}`);
  });
});
