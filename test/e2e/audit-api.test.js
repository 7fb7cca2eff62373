'use strict';
// The audit and logger API as an application uses it: real `node --require auditrace/register`
// children (test/fixtures/audit/api-*.js), a real OTLP/HTTP receiver, real files. The sink on its
// own is crash-tested in audit-durability.test.js; here every record goes through audit.*().
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { once } = require('node:events');
const { startOtlpReceiver } = require('../helpers/otlp-receiver.js');
const { startApp } = require('../helpers/run-app.js');
const { catalogue: fullCatalogue } = require('../../dist/lib/audit/catalogue.js');

// The events an application calls; internal ones (access, TLS) are written by auditrace itself.
const catalogue = Object.fromEntries(Object.entries(fullCatalogue).filter(([, spec]) => !spec.internal));

const UUIDV7 = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
const RFC3339_UTC = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z$/;
/** No network, no start-up line: only the audit path runs. */
const OFFLINE = { AUDITRACE_QUIET: 'true', OTEL_TRACES_EXPORTER: 'none', OTEL_METRICS_EXPORTER: 'none', OTEL_LOGS_EXPORTER: 'none' };

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Resolves with fn()'s first truthy result; rejects after timeoutMs with `what`. */
async function poll(fn, what, timeoutMs = 10000) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      const v = fn();
      if (v) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${last.message}` : ''}`);
    await sleep(25);
  }
}

/** Every line of an audit file, strictly: the text ends in "\n" and each line is JSON. */
function readRecords(file) {
  // auditrace's own hash-chain records (start, checkpoints, end) are not the app's calls.
  const text = fs.readFileSync(file, 'utf8');
  if (text === '') return [];
  assert.ok(text.endsWith('\n'), `no partial line at the end of ${file}: …${JSON.stringify(text.slice(-120))}`);
  return text.slice(0, -1).split('\n').map((l, i) => {
    try {
      return JSON.parse(l);
    } catch {
      return assert.fail(`line ${i + 1} of ${file} is not valid JSON: ${l.slice(0, 120)}…`);
    }
  }).filter((r) => !CHAIN_EVENTS.has(r['event.name']));
}

const CHAIN_EVENTS = new Set(['audit_chain_start', 'audit_checkpoint', 'audit_chain_end']);

/** The latest value the receiver got for a metric (highest point of its last export), or undefined. */
function metricValue(rx, name) {
  const ms = rx.metrics().filter((m) => m.name === name && m.dataPoints.length > 0);
  if (ms.length === 0) return undefined;
  return Math.max(...ms[ms.length - 1].dataPoints.map((p) => p.value));
}

describe('audit and logger API, end to end', function () {
  this.timeout(120000);
  let dir;
  let apps;
  let rx;

  /** Starts a fixture app; afterEach kills whatever is still running. */
  const start = (app, opts) => {
    const a = startApp(app, opts);
    apps.push(a);
    return a;
  };
  const listening = async (app) => Number((await app.waitForOutput(/listening (\d+)/))[1]);

  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'auditrace-api-'));
    apps = [];
    rx = undefined;
  });
  afterEach(async () => {
    for (const a of apps) {
      if (a.child.exitCode === null && a.child.signalCode === null) a.child.kill('SIGKILL');
      await a.exited;
    }
    await rx?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  describe('SIGKILL right after the last audit.sensitiveRead() returns', () => {
    const COUNT = 10000;
    for (const fsync of ['never', undefined]) {
      it(`AUDITRACE_AUDIT_FSYNC=${fsync ?? '(unset: the default)'}: the file holds all ${COUNT} records, whole and each once`, async () => {
        const file = path.join(dir, 'audit.jsonl');
        const app = start('audit/api-crash-writer.js', {
          env: { ...OFFLINE, AUDITRACE_AUDIT_FILE: file, API_COUNT: String(COUNT), ...(fsync ? { AUDITRACE_AUDIT_FSYNC: fsync } : {}) },
        });
        const { signal, stderr } = await app.exited;
        assert.equal(signal, 'SIGKILL', stderr);
        assert.doesNotMatch(stderr, /auditrace: (error|warning)/);
        const records = readRecords(file);
        assert.equal(records.length, COUNT);
        const ids = new Set();
        records.forEach((r, i) => {
          assert.equal(r['event.name'], 'sensitive_read');
          assert.equal(r['object.id'], `o-${i}`, `record ${i} out of order`);
          assert.match(r['audit.id'], UUIDV7);
          ids.add(r['audit.id']);
        });
        assert.equal(ids.size, COUNT, 'audit.id values are unique');
      });
    }
  });

  describe('AUDITRACE_AUDIT_FILE=stdout', () => {
    it('every call is exactly one JSON line on stdout, app lines stay separate lines, and all survive a SIGKILL', async () => {
      const COUNT = 3000;
      const app = start('audit/api-crash-writer.js', {
        env: { ...OFFLINE, AUDITRACE_AUDIT_FILE: 'stdout', API_COUNT: String(COUNT), API_CONSOLE_EVERY: '7' },
      });
      const closed = once(app.child, 'close'); // all of stdout read, not just the process gone
      // A reader that is slow for a moment: the pipe fills and the writes must wait, not tear.
      app.child.stdout.pause();
      setTimeout(() => app.child.stdout.resume(), 300);
      const [, signal] = await closed;
      assert.equal(signal, 'SIGKILL', app.stderr);
      assert.doesNotMatch(app.stderr, /auditrace: (error|warning)/);
      const out = app.stdout;
      assert.ok(out.endsWith('\n'), 'stdout ends with a whole line');
      const records = [];
      const appLines = [];
      for (const line of out.slice(0, -1).split('\n')) {
        if (line.startsWith('{')) {
          try {
            const r = JSON.parse(line);
            if (!CHAIN_EVENTS.has(r['event.name'])) records.push(r);
          } catch {
            assert.fail(`not one JSON record per line: ${line.slice(0, 160)}…`);
          }
        } else {
          assert.match(line, /^app line \d+$/, 'an app line glued to a record, or torn');
          appLines.push(line);
        }
      }
      assert.equal(records.length, COUNT);
      records.forEach((r, i) => {
        assert.equal(r['event.name'], 'sensitive_read');
        assert.equal(r['object.id'], `o-${i}`);
      });
      assert.equal(new Set(records.map((r) => r['audit.id'])).size, COUNT, 'audit.id values are unique');
      assert.ok(appLines.length > 0, "the app's own console.log lines are there too");
      assert.equal(new Set(appLines).size, appLines.length, 'no app line twice');
    });
  });

  describe('a destination that cannot be written (its parent is a regular file: ENOTDIR)', () => {
    it('keeps serving, reports once, counts in metrics, and writes the buffered records in order once it can', async () => {
      rx = await startOtlpReceiver();
      const blocker = path.join(dir, 'blocker');
      fs.writeFileSync(blocker, 'a regular file where a directory should be\n');
      const file = path.join(blocker, 'audit.jsonl');
      const app = start('audit/api-server.js', {
        env: {
          OTEL_EXPORTER_OTLP_ENDPOINT: rx.url, OTEL_SERVICE_NAME: 'api-broken', OTEL_TRACES_EXPORTER: 'none',
          OTEL_LOGS_EXPORTER: 'none', OTEL_METRIC_EXPORT_INTERVAL: '500', OTEL_METRIC_EXPORT_TIMEOUT: '400', AUDITRACE_AUDIT_FILE: file,
        },
      });
      const port = await listening(app);
      const returned = [];
      const request = async (seq) => {
        const res = await fetch(`http://127.0.0.1:${port}/authz?seq=${seq}`);
        assert.equal(res.status, 200, `request ${seq}`);
        const { id } = await res.json();
        assert.match(id, UUIDV7, 'the call still returns its audit.id');
        returned.push(id);
      };
      for (let seq = 0; seq < 50; seq++) await request(seq);

      // Every request also writes auditrace's own http_request access record: at least 50 are held.
      await rx.waitFor(() => metricValue(rx, 'auditrace.audit.write_failures') >= 50 && metricValue(rx, 'auditrace.audit.buffered') >= 50,
        { timeoutMs: 10000 });
      const errorLines = app.stderr.split('\n').filter((l) => /error/i.test(l) || l.includes(file));
      assert.equal(errorLines.length, 1, `one line, not one per record:\n${app.stderr}`);
      assert.ok(errorLines[0].startsWith('auditrace: error: '), errorLines[0]);
      assert.ok(errorLines[0].includes(file), `names the destination: ${errorLines[0]}`);
      assert.match(errorLines[0], /ENOTDIR/);
      assert.doesNotMatch(app.stderr, /^\s+at /m, 'no stack trace');

      // Fixed: the directory can be created now. The retry timer writes what was buffered.
      const authz = () => (fs.existsSync(file) ? readRecords(file).filter((r) => r['event.name'] === 'authz_fail') : []);
      fs.rmSync(blocker);
      const fixedAt = Date.now();
      await poll(() => authz().length >= 50, 'the 50 buffered authz_fail records in the file', 5000);
      const took = Date.now() - fixedAt;
      assert.ok(took < 3000, `written ${took} ms after the fix (retry interval 1 s)`);
      for (let seq = 50; seq < 55; seq++) await request(seq);
      await poll(() => authz().length >= 55, 'the 5 later records', 5000);

      const records = authz();
      assert.equal(records.length, 55);
      records.forEach((r, i) => assert.equal(r['object.id'], `o-${i}`, 'buffered records first, in order, then the later ones'));
      assert.deepEqual(records.map((r) => r['audit.id']), returned);
      const all = readRecords(file).map((r) => r['audit.id']);
      assert.deepEqual(all, [...all].sort(), 'file order is call order (UUIDv7 order), access records included');
      assert.match(app.stderr, /auditrace: audit destination .* writable again/);
      assert.equal(app.stderr.split('\n').filter((l) => /error/i.test(l)).length, 1, app.stderr);
      assert.equal(app.child.exitCode, null, 'still running');
    });
  });

  describe('AUDITRACE_AUDIT_OTLP', () => {
    const env = (extra) => ({
      OTEL_EXPORTER_OTLP_ENDPOINT: rx.url, OTEL_SERVICE_NAME: 'api-otlp', OTEL_BSP_SCHEDULE_DELAY: '100',
      OTEL_BLRP_SCHEDULE_DELAY: '100', OTEL_METRICS_EXPORTER: 'none', AUDITRACE_AUDIT_FILE: path.join(dir, 'audit.jsonl'), ...extra,
    });

    it('=true: the record also arrives as an OTLP log record, in the trace of the server span', async () => {
      rx = await startOtlpReceiver();
      const app = start('audit/api-server.js', { env: env({ AUDITRACE_AUDIT_OTLP: 'true' }) });
      const port = await listening(app);
      const { id } = await (await fetch(`http://127.0.0.1:${port}/read`)).json();
      const log = await rx.waitFor(() => rx.logs().find((l) => l.eventName === 'sensitive_read'), { timeoutMs: 15000 });
      const span = await rx.waitFor(() => rx.spans().find((s) => s.kind === 2), { timeoutMs: 15000 });
      assert.equal(log.attributes['audit.id'], id);
      assert.equal(log.attributes['user.id'], 'u-17');
      assert.equal(log.attributes['user.target.id'], 'p-4411');
      assert.equal(log.traceId, span.traceId);
      assert.equal(log.spanId, span.spanId);
      assert.equal(log.severityText, 'WARN');
      // The access record is written after the handler's turn, outside the request's context:
      // its OTLP copy still names the request's span.
      const access = await rx.waitFor(() => rx.logs().find((l) => l.eventName === 'http_request' && l.attributes['url.path'] === '/read'), { timeoutMs: 15000 });
      assert.equal(access.traceId, span.traceId);
      assert.equal(access.spanId, span.spanId);
      assert.match(String(access.attributes['request.id']), /^[0-9a-f]{32}$/);
      assert.equal(access.attributes['request.id'], log.attributes['request.id']);
      const record = readRecords(path.join(dir, 'audit.jsonl')).find((r) => r['audit.id'] === id);
      assert.equal(record?.['event.name'], 'sensitive_read', 'and it is still in the file');
    });

    it('=true: access records written in one turn each name their own request\'s span', async () => {
      rx = await startOtlpReceiver();
      const app = start('audit/api-server.js', { env: env({ AUDITRACE_AUDIT_OTLP: 'true' }) });
      const port = await listening(app);
      // Both responses end in the same turn, so both access records are written together.
      await Promise.all([fetch(`http://127.0.0.1:${port}/held`), new Promise((r) => setTimeout(r, 200)).then(() => fetch(`http://127.0.0.1:${port}/held`))]);
      const accesses = await rx.waitFor(() => {
        const l = rx.logs().filter((x) => x.eventName === 'http_request' && x.attributes['url.path'] === '/held');
        return l.length === 2 ? l : undefined;
      }, { timeoutMs: 15000 });
      const spans = await rx.waitFor(() => {
        const s = rx.spans().filter((x) => x.kind === 2 && x.attributes['url.path'] === '/held');
        return s.length === 2 ? s : undefined;
      }, { timeoutMs: 15000 });
      assert.notEqual(spans[0].traceId, spans[1].traceId);
      for (const a of accesses) {
        const own = spans.find((s) => s.attributes['request.id'] === a.attributes['request.id']);
        assert.ok(own, `a span with request.id ${a.attributes['request.id']}`);
        assert.equal(a.traceId, own.traceId);
        assert.equal(a.spanId, own.spanId);
      }
    });

    it('unset: no audit record is sent over OTLP (the app logger\'s record is)', async () => {
      rx = await startOtlpReceiver();
      const app = start('audit/api-server.js', { env: env({}) });
      const port = await listening(app);
      const { id } = await (await fetch(`http://127.0.0.1:${port}/read`)).json();
      // The app's logger.info() in the same handler goes through the same log pipeline: once it
      // has arrived (and a few more batch intervals), an audit log record would have too.
      await rx.waitFor(() => rx.logs().find((l) => l.body === 'order placed'), { timeoutMs: 15000 });
      await rx.waitFor(() => rx.spans().find((s) => s.kind === 2), { timeoutMs: 15000 });
      await sleep(500);
      const audits = rx.logs().filter((l) => l.eventName === 'sensitive_read' || l.scope.name === 'auditrace.audit' || 'audit.id' in l.attributes);
      assert.deepEqual(audits, []);
      assert.ok(readRecords(path.join(dir, 'audit.jsonl')).some((r) => r['audit.id'] === id), 'the record is in the file');
    });
  });

  describe('logger', () => {
    it('one JSON line on stdout with time, trace_id, span_id and service.instance.id; the same over OTLP', async () => {
      rx = await startOtlpReceiver();
      const app = start('audit/api-server.js', {
        env: {
          OTEL_EXPORTER_OTLP_ENDPOINT: rx.url, OTEL_SERVICE_NAME: 'api-logger', OTEL_BSP_SCHEDULE_DELAY: '100',
          OTEL_BLRP_SCHEDULE_DELAY: '100', OTEL_METRICS_EXPORTER: 'none', AUDITRACE_AUDIT_FILE: path.join(dir, 'audit.jsonl'),
          API_LOG_AT_START: '1',
        },
      });
      const port = await listening(app);
      assert.equal((await fetch(`http://127.0.0.1:${port}/read`)).status, 200);
      const span = await rx.waitFor(() => rx.spans().find((s) => s.kind === 2), { timeoutMs: 15000 });
      const otlp = await rx.waitFor(() => rx.logs().find((l) => l.body === 'order placed'), { timeoutMs: 15000 });
      await app.waitForOutput(/order placed/);

      const jsonLines = app.stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l));
      const placed = jsonLines.filter((l) => l.message === 'order placed');
      assert.equal(placed.length, 1, app.stdout);
      assert.equal(app.stdout.split('order placed').length, 2, 'the message is on exactly one line');
      const line = placed[0];
      assert.equal(line.level, 'info');
      assert.match(line.time, RFC3339_UTC);
      assert.ok(Math.abs(Date.parse(line.time) - Date.now()) < 60000);
      assert.equal(line.trace_id, span.traceId);
      assert.equal(line.span_id, span.spanId);
      assert.equal(line['service.instance.id'], span.resource['service.instance.id']);
      assert.equal(line.orderId, 'o-1');
      assert.equal(typeof line['request.id'], 'string', 'request.id of the request being handled');
      assert.equal(line['request.id'], span.attributes['request.id']);

      const boot = jsonLines.find((l) => l.message === 'app starting');
      assert.ok(boot, `the start-up log line:\n${app.stdout}`);
      assert.equal(boot.trace_id, undefined, 'outside a request there is no trace_id');
      assert.equal(boot.span_id, undefined);
      assert.match(boot.time, RFC3339_UTC);
      assert.equal(boot['service.instance.id'], span.resource['service.instance.id']);

      assert.equal(otlp.traceId, span.traceId);
      assert.equal(otlp.spanId, span.spanId);
      assert.equal(otlp.attributes.orderId, 'o-1');
      assert.equal(rx.logs().filter((l) => l.body === 'order placed').length, 1, 'sent once');
    });

    it('credentials under their usual names are redacted, client-chosen characters escaped and long values cut, on stdout and over OTLP', async () => {
      rx = await startOtlpReceiver();
      const app = start('audit/logger-hostile.js', {
        env: { OTEL_EXPORTER_OTLP_ENDPOINT: rx.url, OTEL_SERVICE_NAME: 'api-logger-hostile', OTEL_BLRP_SCHEDULE_DELAY: '100', AUDITRACE_AUDIT_FILE: path.join(dir, 'audit.jsonl') },
      });
      await app.waitForOutput(/done/);
      const lines = app.stdout.split('\n').filter((l) => l.includes('login attempt'));
      assert.equal(lines.length, 1, app.stdout);
      for (const secret of ['hunter2', 'SECRETTOKEN', 'tok123', 'k-999']) assert.ok(!app.stdout.includes(secret), `${secret} on stdout`);
      assert.doesNotMatch(lines[0], /[\u0085\u009b\u2028\u2029\u202e]/, 'no raw separator or terminal control');
      const line = JSON.parse(lines[0]);
      assert.equal(line.password, '[REDACTED]');
      assert.equal(line.authorization, '[REDACTED]');
      assert.equal(line.user.token, '[REDACTED]');
      assert.equal(line.user.name, 'bob');
      assert.equal(line.note, 'a\u2028forged\u2029b\u0085c\u009b2J\u202eevil\r\nnext', 'the same value, escaped');
      assert.ok(Buffer.byteLength(line.big) <= 4096, `a long value is cut (${line.big.length})`);
      const otlp = await rx.waitFor(() => rx.logs().find((l) => l.body === 'login attempt'), { timeoutMs: 15000 });
      assert.equal(otlp.attributes.password, '[REDACTED]');
      assert.equal(otlp.attributes.authorization, '[REDACTED]');
      assert.ok(!JSON.stringify(rx.logs()).includes('hunter2'));
    });

    it("the application's own winston logger gets trace_id, span_id and service.instance.id", async () => {
      rx = await startOtlpReceiver();
      const app = start('audit/api-server.js', {
        env: {
          OTEL_EXPORTER_OTLP_ENDPOINT: rx.url, OTEL_SERVICE_NAME: 'api-winston', OTEL_BSP_SCHEDULE_DELAY: '100',
          OTEL_METRICS_EXPORTER: 'none', OTEL_LOGS_EXPORTER: 'none', AUDITRACE_AUDIT_FILE: path.join(dir, 'audit.jsonl'),
        },
      });
      const port = await listening(app);
      assert.equal((await fetch(`http://127.0.0.1:${port}/winston`)).status, 200);
      const span = await rx.waitFor(() => rx.spans().find((s) => s.kind === 2), { timeoutMs: 15000 });
      await app.waitForOutput(/own line/);
      const lines = app.stdout.split('\n').filter((l) => l.includes('own line'));
      assert.equal(lines.length, 1, app.stdout);
      const line = JSON.parse(lines[0]);
      assert.equal(line.orderId, 'o-2');
      assert.equal(line.trace_id, span.traceId);
      assert.equal(line.span_id, span.spanId);
      assert.equal(line['service.instance.id'], span.resource['service.instance.id']);
      assert.equal(line['request.id'], span.attributes['request.id']);
    });
  });

  describe('calls never throw into the application', () => {
    const MAX_RECORD_BYTES = 8192;
    const garbageRun = async () => {
      rx = await startOtlpReceiver();
      const file = path.join(dir, 'audit.jsonl');
      const app = start('audit/api-server.js', {
        env: {
          OTEL_EXPORTER_OTLP_ENDPOINT: rx.url, OTEL_SERVICE_NAME: 'api-garbage', OTEL_METRICS_EXPORTER: 'none',
          AUDITRACE_AUDIT_OTLP: 'true', AUDITRACE_AUDIT_FILE: file, AUDITRACE_AUDIT_MAX_RECORD_BYTES: String(MAX_RECORD_BYTES),
        },
      });
      const port = await listening(app);
      const res = await fetch(`http://127.0.0.1:${port}/garbage`);
      assert.equal(res.status, 200, 'the handler completed');
      const { results } = await res.json();
      return { app, file, results };
    };

    it('garbage in every audit function: each call returns a string, every line is one valid JSON line, the 10 MB string is cut', async () => {
      const { app, file, results } = await garbageRun();
      const expectedCalls = Object.keys(catalogue).length * 10 + 10 + 9 * 2;
      assert.equal(results.filter((r) => r.label !== 'audit.flush(garbage)').length, expectedCalls);
      assert.deepEqual(results.filter((r) => r.threw !== undefined), [], 'no call threw');
      assert.deepEqual(results.filter((r) => r.type !== 'string'), [], 'every call returned a string');

      const text = fs.readFileSync(file, 'utf8');
      assert.ok(text.endsWith('\n'));
      const lines = text.slice(0, -1).split('\n');
      assert.ok(lines.length > 0);
      for (const [i, l] of lines.entries()) {
        assert.ok(Buffer.byteLength(l, 'utf8') + 1 <= MAX_RECORD_BYTES + 1, `line ${i + 1} is ${Buffer.byteLength(l)} bytes`);
        assert.doesNotMatch(l, /[\r\u2028\u2029]/, `line ${i + 1} has a raw line terminator`);
        assert.doesNotThrow(() => JSON.parse(l), `line ${i + 1} is not valid JSON`);
      }
      const huge = lines.map((l) => JSON.parse(l)).filter((r) => r['error.type'] === 'E_HUGE');
      assert.equal(huge.length, Object.keys(catalogue).length + 1, 'one per catalogue function and audit.event');
      for (const r of huge) assert.match(r['error.message'], /^x+…\[truncated 10485760 bytes\]$/);
      assert.doesNotMatch(app.stderr, /^\s+at /m, 'no stack trace');
      assert.equal(app.child.exitCode, null, 'the app is still running');
    });

    it('…and every one of those calls still wrote its record and returned its audit.id (README: "the record is still written")', async () => {
      const { app, file, results } = await garbageRun();
      const calls = results.filter((r) => r.label !== 'audit.flush(garbage)');
      const records = readRecords(file);
      const ids = new Set(records.map((r) => r['audit.id']));
      assert.equal(ids.size, records.length, 'no record twice');
      const lost = calls.filter((r) => !UUIDV7.test(r.id) || !ids.has(r.id)).map((r) => r.label);
      assert.deepEqual(lost, [], `calls that wrote no record (stderr: ${app.stderr.split('\n').filter((l) => l.includes('could not be written')).join(' | ')})`);
      // Besides one record per call, only auditrace's own access record of the /garbage request.
      const returned = new Set(calls.map((r) => r.id));
      const extra = records.filter((r) => !returned.has(r['audit.id']));
      assert.ok(extra.every((r) => r['event.name'] === 'http_request' && r['url.path'] === '/garbage'), JSON.stringify(extra).slice(0, 2000));
    });
  });
});
