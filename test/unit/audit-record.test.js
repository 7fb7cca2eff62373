'use strict';
const assert = require('node:assert/strict');
const { buildRecord } = require('../../dist/lib/audit/record.js');
const { uuidv7, rfc3339Now } = require('../../dist/lib/audit/ids.js');
const { toJsonLine, defaultLimits } = require('../../dist/lib/audit/serialize.js');

const ambient = {
  time: '2026-11-22T05:00:00.000001Z',
  auditId: '01900000-0000-7000-8000-000000000000',
  identity: { 'service.name': 'svc', 'service.instance.id': 'inst' },
};

describe('audit record builder', () => {
  it('holds the fixed head, the event fields and context; the line writes them in RFC 8785 key order', () => {
    const { record, problems } = buildRecord('sensitive_read',
      { context: { why: 'x' }, fields: ['dob'], 'object.type': 'patient', 'user.target.id': 'p1', 'user.id': 'u1' },
      { ...ambient, traceId: 'a'.repeat(32), spanId: 'b'.repeat(16), requestId: 'r1', clientAddress: '203.0.113.9' });
    assert.deepEqual(problems, []);
    const expected = ['time', 'audit.id', 'event.name', 'event.outcome', 'severity', 'user.id',
      'user.target.id', 'client.address', 'request.id', 'trace_id', 'span_id', 'service.name', 'service.instance.id',
      'object.type', 'fields', 'context'];
    assert.deepEqual(Object.keys(record).sort(), [...expected].sort());
    const line = toJsonLine(record, defaultLimits, () => false, ['context']);
    const written = Object.keys(JSON.parse(line));
    assert.deepEqual(written, [...expected].sort()); // UTF-16 code-unit order, as RFC 8785
    assert.ok(line.startsWith('{"audit.id":') && line.endsWith('"user.target.id":"p1"}\n'));
    assert.equal(record['event.outcome'], 'success');
    assert.equal(record.severity, 'WARN');
  });

  it('leaves out what it does not know instead of inventing it', () => {
    const { record } = buildRecord('session_created', { 'user.id': 'u1' }, ambient);
    for (const k of ['trace_id', 'span_id', 'request.id', 'client.address', 'k8s.pod.name']) assert.ok(!(k in record), k);
  });

  it('never lets the application set a field auditrace owns', () => {
    const { record, problems } = buildRecord('invoice_exported', { 'request.id': 'forged', trace_id: 'f'.repeat(32), 'audit.id': 'x' }, ambient);
    assert.equal(record['request.id'], undefined);
    assert.equal(record['audit.id'], ambient.auditId);
    assert.equal(problems.length, 3);
  });

  it('checks types and enums, and names missing required fields', () => {
    const { record, problems } = buildRecord('authn_token_invalid', { 'token.failure': 'stolen', 'user.id': 42 }, ambient);
    assert.ok(problems.includes('token.failure: expected one of expired|bad_signature|revoked|malformed|wrong_audience|unknown_issuer|not_yet_valid|other'));
    assert.ok(problems.includes('user.id: expected a string'));
    assert.ok(problems.includes('token.failure: required by authn_token_invalid, missing'));
    assert.deepEqual(record['audit.problems'], problems);
  });

  it('keeps a catalogue event\'s outcome and severity fixed', () => {
    const { record, problems } = buildRecord('authz_fail', { 'authz.action': 'a', 'event.outcome': 'success' }, ambient);
    assert.equal(record['event.outcome'], 'failure');
    assert.ok(problems.length === 1);
  });

  it('validates an application\'s own event by the same rules', () => {
    const ok = buildRecord('export_done', { 'event.outcome': 'failure', severity: 'ERROR', 'file.count': 3, tags: ['a'] }, ambient);
    assert.deepEqual(ok.problems, []);
    assert.equal(ok.record['event.outcome'], 'failure');
    const bad = buildRecord('Bad Name!', { 'Bad-Key': 1, nested: { a: 1 }, severity: 'LOUD' }, ambient);
    assert.equal(bad.record['event.name'], 'invalid_event');
    assert.equal(bad.problems.length, 4);
    assert.equal(bad.record.severity, 'INFO');
  });

  it("refuses an application's own field named like a secret", () => {
    const redact = (k) => /password|token/i.test(k);
    const { record, problems } = buildRecord('export_done', { 'api.token': 'abc', 'user.id': 'u' }, ambient, redact);
    assert.equal(record['api.token'], undefined);
    assert.deepEqual(problems, ['api.token: a deny-listed name (secrets are never recorded)']);
  });

  it('survives hostile input objects', () => {
    const hostile = new Proxy({}, { ownKeys() { throw new Error('no'); } });
    assert.doesNotThrow(() => buildRecord('session_created', hostile, ambient));
    const getter = { get 'user.id'() { throw new Error('boom'); } };
    const { record } = buildRecord('session_created', getter, ambient);
    assert.ok(record['audit.problems'].length > 0);
    for (const input of [null, undefined, 42, 'str', [], Symbol('s')]) assert.doesNotThrow(() => buildRecord('session_created', input, ambient));
  });
});

describe('audit ids and time', () => {
  it('UUIDv7: version 7, RFC variant, strictly increasing within a millisecond', () => {
    const ids = Array.from({ length: 10000 }, () => uuidv7(1_700_000_000_000));
    for (const id of ids) assert.match(id, /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    assert.deepEqual([...ids].sort(), ids);
    assert.equal(new Set(ids).size, ids.length);
    assert.deepEqual(new Set(ids.map((id) => id[19])), new Set(['8', '9', 'a', 'b']), 'the variant bits, and the random bits around them');
  });

  it('UUIDv7 carries the millisecond timestamp', () => {
    const ms = Date.now() + 10_000;
    const id = uuidv7(ms);
    assert.equal(parseInt(id.replace(/-/g, '').slice(0, 12), 16), ms);
  });

  it('time is RFC 3339, UTC, microseconds, and close to the clock', () => {
    const t = rfc3339Now();
    assert.match(t, /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$/);
    assert.ok(Math.abs(Date.parse(t) - Date.now()) < 5);
  });

  it('record times never go back and stay inside the wall clock\'s millisecond', () => {
    let last = '';
    for (let i = 0; i < 20000; i++) {
      const before = Date.now();
      const t = rfc3339Now();
      const after = Date.now();
      const ms = Date.parse(t);
      assert.ok(ms >= before && ms <= after, `${t} outside [${before}, ${after}]`);
      assert.ok(t >= last, `${t} before ${last}`);
      last = t;
    }
  });
});
