'use strict';
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const Ajv2020 = require('ajv/dist/2020').default;
const { startOtlpReceiver } = require('../helpers/otlp-receiver.js');
const { startApp, ROOT } = require('../helpers/run-app.js');
const { catalogue: fullCatalogue } = require('../../dist/lib/audit/catalogue.js');

// The events an application calls; internal ones (access, TLS) are written by auditrace itself.
const catalogue = Object.fromEntries(Object.entries(fullCatalogue).filter(([, spec]) => !spec.internal));

const schema = JSON.parse(fs.readFileSync(path.join(ROOT, 'audit-record.schema.json'), 'utf8'));
const validate = new Ajv2020({ allErrors: true, strict: true, strictRequired: false }).compile(schema);

describe('audit records from a real instrumented service', function () {
  let rx; let app; let dir; let records; let lines; let ids; let serverSpan;

  before(async () => {
    rx = await startOtlpReceiver();
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'auditrace-audit-'));
    app = startApp('audit/audit-app.js', {
      env: {
        OTEL_EXPORTER_OTLP_ENDPOINT: rx.url, OTEL_SERVICE_NAME: 'audit-test', OTEL_BSP_SCHEDULE_DELAY: '100',
        OTEL_METRICS_EXPORTER: 'none', AUDITRACE_AUDIT_FILE: path.join(dir, 'nested', 'audit.jsonl'),
        K8S_POD_NAME: 'audit-pod-1',
      },
    });
    const [, port] = await app.waitForOutput(/listening (\d+)/);
    ids = await (await fetch(`http://127.0.0.1:${port}/do`)).json();
    await rx.waitFor(() => rx.spans().find((s) => s.kind === 2 && s.events.length > 0), { timeoutMs: 15000 });
    serverSpan = rx.spans().find((s) => s.kind === 2);
    lines = fs.readFileSync(path.join(dir, 'nested', 'audit.jsonl'), 'utf8').split('\n').filter(Boolean);
    records = lines.map((l) => JSON.parse(l));
  });
  after(async () => {
    await app?.kill();
    await rx?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('writes each line in RFC 8785 key order, so each audit.prev is the plain SHA-256 of the line before it', () => {
    assert.ok(lines.length >= 10, `${lines.length} lines`);
    let links = 0;
    for (let i = 0; i < lines.length; i++) {
      const keys = Object.keys(records[i]);
      assert.deepEqual(keys, [...keys].sort(), `line ${i + 1} keys in order`);
      const next = records[i + 1];
      if (next && next['audit.chain'] === records[i]['audit.chain']) {
        assert.equal(next['audit.prev'], crypto.createHash('sha256').update(lines[i]).digest('hex'), `line ${i + 2} links to line ${i + 1}`);
        links++;
      }
    }
    assert.equal(links, lines.length - 1);
  });

  it('writes one record per call, each returning its audit.id', () => {
    const mine = records.filter((r) => r['event.name'] !== 'http_request' && !r['event.name'].startsWith('audit_c'));
    assert.equal(mine.length, Object.keys(catalogue).length + 2);
    assert.deepEqual(mine.map((r) => r['audit.id']).sort(), Object.values(ids).sort());
  });

  it('offers no function for the events auditrace writes itself, and refuses them from audit.event()', () => {
    const { audit } = require('../../dist/lib/audit/auditor.js');
    for (const [name, spec] of Object.entries(fullCatalogue).filter(([, s]) => s.internal)) {
      assert.equal(audit[name.replace(/_([a-z])/g, (_, c) => c.toUpperCase())], undefined, name);
    }
  });

  it('every record validates against audit-record.schema.json', () => {
    for (const r of records) assert.ok(validate(r), `${r['event.name']}: ${JSON.stringify(validate.errors)}`);
  });

  it('covers every catalogue event, with its outcome and severity', () => {
    for (const [name, spec] of Object.entries(catalogue)) {
      const r = records.find((x) => x['audit.id'] === ids[name]);
      assert.equal(r['event.name'], name);
      assert.equal(r['event.outcome'], spec.outcome);
      assert.equal(r.severity, spec.severity);
      assert.equal(r['audit.problems'], undefined, `${name}: ${r['audit.problems']}`);
    }
  });

  it('links each record to the active span: same trace_id and span_id', () => {
    for (const r of records.filter((x) => !x['event.name'].startsWith('audit_c'))) {
      assert.equal(r.trace_id, serverSpan.traceId);
      assert.equal(r.span_id, serverSpan.spanId);
    }
  });

  it('stamps the instance identity', () => {
    for (const r of records) {
      assert.equal(r['service.name'], 'audit-test');
      assert.equal(r['service.instance.id'], serverSpan.resource['service.instance.id']);
      assert.equal(r['k8s.pod.name'], 'audit-pod-1');
    }
  });

  it('uses RFC 3339 UTC time with microseconds and UUIDv7 ids in time order', () => {
    for (const r of records) {
      assert.match(r.time, /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$/);
      assert.ok(Math.abs(Date.parse(r.time) - Date.now()) < 60000);
    }
    const auditIds = records.map((r) => r['audit.id']);
    assert.deepEqual([...auditIds].sort(), auditIds, 'file order is id order');
  });

  it('adds a span event per audit event, with its non-personal attributes', () => {
    const names = serverSpan.events.map((e) => e.name);
    for (const name of Object.keys(catalogue)) assert.ok(names.includes(name), name);
    const read = serverSpan.events.find((e) => e.name === 'sensitive_read' && e.attributes['audit.id'] === ids.sensitive_read);
    assert.equal(read.attributes['user.target.id'], 'user.target.id-value');
    assert.equal(read.attributes.context, undefined, 'free-form context stays off spans');
    assert.ok(serverSpan.attributes['audit.event.name']);
  });

  it('redacts deny-listed keys in context', () => {
    for (const r of records.filter((x) => x.context)) {
      assert.equal(r.context.password, '[REDACTED]');
      assert.equal(r.context.purpose, 'test');
    }
    assert.ok(!JSON.stringify(records).includes('hunter2'));
  });

  it("records an application's own event", () => {
    const r = records.find((x) => x['audit.id'] === ids.custom);
    assert.equal(r['event.name'], 'invoice_exported');
    assert.equal(r['invoice.id'], 'inv-9');
  });

  it('still writes a wrong call, naming what was refused, and never the refused value', () => {
    const r = records.find((x) => x['audit.id'] === ids.broken);
    assert.equal(r['event.name'], 'sensitive_read');
    assert.ok(r['audit.problems'].some((p) => p.startsWith('name: not a field of sensitive_read')));
    assert.ok(r['audit.problems'].some((p) => p.startsWith('user.target.id: required')));
    assert.ok(!JSON.stringify(r).includes('Jane Doe'));
    assert.match(app.stderr, /audit sensitive_read: .*audit\.problems/);
  });
});

describe('AUDITRACE_AUDIT_FILE=stdout when standard output goes nowhere', () => {
  it('says once that every record is thrown away (each write "succeeds", so nothing else would)', () => {
    const { spawnSync } = require('node:child_process');
    const devNull = fs.openSync('/dev/null', 'w');
    try {
      const r = spawnSync(process.execPath, ['--require', path.join(ROOT, 'register.js'), '-e', "require('auditrace').audit.event('invoice_exported', { 'invoice.id': 'i-1' })"], {
        cwd: ROOT, env: { ...process.env, AUDITRACE_AUDIT_FILE: 'stdout', OTEL_TRACES_EXPORTER: 'none', OTEL_METRICS_EXPORTER: 'none', OTEL_LOGS_EXPORTER: 'none' },
        stdio: ['ignore', devNull, 'pipe'], encoding: 'utf8', timeout: 30000,
      });
      assert.equal(r.status, 0, r.stderr);
      assert.match(r.stderr, /audit destination stdout is \/dev\/null .*every audit record is thrown away/);
      assert.equal(r.stderr.split('stdout is /dev/null').length, 2, 'once');
    } finally {
      fs.closeSync(devNull);
    }
  });
});
