'use strict';
// The access record's fixed template (lib/audit/access-line.ts) writes exactly the line the general
// path (record builder + serialiser) writes for the same request, and that line is its own RFC 8785
// form; where it cannot tell, it says so and the general path writes the record.
const assert = require('node:assert/strict');
const fc = require('fast-check');
const { accessLine, accessRecordFields, secondsText } = require('../../dist/lib/audit/access-line.js');
const { buildRecord } = require('../../dist/lib/audit/record.js');
const { createRedactor, toJsonLineCanonical, appliedLimits } = require('../../dist/lib/audit/serialize.js');
const { canonicalize } = require('../../dist/lib/audit/chain.js');

const RUNS = Number(process.env.ACCESS_LINE_RUNS) || 2000;
const isRedacted = createRedactor([]);

/** The general path: what `audit.emit('http_request', …)` writes (before the chain hashes it). */
function generalLine(f, a, limits) {
  const { record, problems } = buildRecord('http_request', accessRecordFields(f), {
    time: a.time, auditId: a.auditId, traceId: a.traceId, spanId: a.spanId, requestId: a.requestId,
    clientAddress: a.clientAddress, identity: a.identity, outcome: a.outcome, severity: a.severity, internal: true,
  }, isRedacted);
  if (a.chain) {
    record['audit.chain'] = a.chain.id;
    record['audit.seq'] = a.chain.seq;
    if (a.chain.prev !== undefined) record['audit.prev'] = a.chain.prev;
  }
  return { ...toJsonLineCanonical(record, limits, isRedacted, ['context']), problems };
}

const plainChar = fc.constantFrom(...'abcXYZ019 -_./:;?=&%~!#$\'()*+,<>@[]^`{|}');
const plain = (max) => fc.string({ unit: plainChar, maxLength: max });
// Strings the template must refuse: escapes JSON or the serialiser write, non-ASCII, lone surrogates.
const hostileChar = fc.constantFrom('"', '\\', '\n', '\r', '\u0000', '\u001b', '\u007f', '\u0085', '\u2028', '\u202e', '\ufeff', 'é', '€', '\ud800', '\udc00', '\ud83d\ude00');
const anyString = (max) => fc.oneof(
  { weight: 60, arbitrary: plain(max) },
  { weight: 1, arbitrary: fc.tuple(plain(max), hostileChar, plain(8)).map(([a, c, b]) => a + c + b) },
  { weight: 1, arbitrary: fc.string({ unit: 'binary', maxLength: max }) },
  // around the field limit (64 … 200 with the limits below)
  { weight: 1, arbitrary: fc.integer({ min: 60, max: 2100 }).map((n) => 'p'.repeat(n)) },
);
const opt = (arb) => fc.option(arb, { nil: undefined, freq: 3 });
const number = fc.oneof(fc.double({ noNaN: true, noDefaultInfinity: true }), fc.double(), fc.double({ min: 0, max: 100, noNaN: true }), fc.integer(), fc.constantFrom(-0, 1e-7, 1e21, 2 ** 53, 2 ** 53 + 2, NaN, Infinity));
const integerish = fc.oneof({ weight: 5, arbitrary: fc.nat(1e9) }, { weight: 1, arbitrary: number });

// Whole nanoseconds: around the edges of secondsText's own formatting (1 µs, where JavaScript turns
// to an exponent; 2^21 s, past which it converts the double), round and ragged values, any size.
const EXACT_BELOW_NS = 2 ** 21 * 1e9;
const nanos = fc.oneof(
  fc.nat(2e9),
  fc.integer({ min: EXACT_BELOW_NS - 1e6, max: EXACT_BELOW_NS + 1e6 }),
  fc.maxSafeNat(),
  fc.tuple(fc.nat(1e6), fc.integer({ min: 0, max: 9 })).map(([n, k]) => n * 10 ** k),
  fc.constantFrom(0, 1, 999, 1000, 1001, 1010, 100000, 1e9, 1e9 + 1, 1.5e9, EXACT_BELOW_NS - 1, EXACT_BELOW_NS, 2 ** 53 - 1),
);

const fieldsWithoutNanos = fc.record({
  method: anyString(32),
  path: anyString(300),
  duration: number,
  peer: anyString(45),
  route: opt(anyString(40)),
  status: opt(integerish),
  requestBodySize: opt(integerish),
  responseBodySize: opt(integerish),
  userAgent: opt(anyString(256)),
  untrustedRequestId: opt(anyString(140)),
  requestIdReplaced: opt(fc.constantFrom('malformed', 'multiple', '', 'other')),
  untrustedParent: opt(anyString(32)),
  errorType: opt(anyString(20)),
}, { requiredKeys: ['method', 'path', 'duration', 'peer'] });
// As lib/edge.ts passes it: the duration in seconds and, for the template, in whole nanoseconds.
const fields = fc.tuple(fieldsWithoutNanos, opt(nanos))
  .map(([f, ns]) => (ns === undefined ? f : { ...f, duration: ns / 1e9, durationNs: ns }));

const ambient = fc.record({
  time: fc.oneof({ weight: 9, arbitrary: fc.constant('2026-11-23T07:00:00.000001Z') }, { weight: 1, arbitrary: fc.constant('2026-11-23T07:00:00.5\u2028Z') }),
  auditId: fc.constantFrom('019ab0c2-7e2a-7abc-8def-0123456789ab'),
  outcome: fc.constantFrom('success', 'failure'),
  severity: fc.constantFrom('INFO', 'WARN', 'ERROR', 'CRITICAL'),
  traceId: opt(fc.oneof(fc.stringMatching(/^[0-9a-f]{32}$/), fc.constant(''))),
  spanId: opt(fc.stringMatching(/^[0-9a-f]{16}$/)),
  requestId: opt(anyString(128)),
  clientAddress: opt(fc.oneof(fc.constantFrom('203.0.113.9', '2001:db8::1', ''), anyString(45))),
  identity: fc.record({
    'service.name': fc.oneof(fc.constant('orders'), anyString(40)),
    'service.instance.id': fc.constant('orders-7d9f-abc12'),
    'k8s.pod.name': opt(fc.oneof(fc.constant('orders-7d9f'), fc.constant(''), anyString(30))),
  }, { requiredKeys: ['service.name', 'service.instance.id'] }),
  chain: opt(fc.record({
    id: fc.constant('019ab0c2-0000-7000-8000-000000000000'),
    seq: fc.oneof(fc.nat(), fc.constant(2 ** 53)),
    prev: opt(fc.stringMatching(/^[0-9a-f]{64}$/)),
  }, { requiredKeys: ['id', 'seq'] })),
}, { requiredKeys: ['time', 'auditId', 'outcome', 'severity', 'identity'] });

const limits = fc.record({
  maxFieldBytes: fc.constantFrom(64, 200, 8192),
  maxRecordBytes: fc.constantFrom(128, 700, 1000, 65536),
  maxDepth: fc.constant(8),
  maxKeys: fc.constant(200),
});

describe('access record template', () => {
  it('writes a duration given in whole nanoseconds exactly as JavaScript writes the seconds', () => {
    fc.assert(fc.property(nanos, (ns) => {
      assert.equal(secondsText(ns), String(ns / 1e9));
    }), { numRuns: RUNS * 25 });
    // Beyond whole numbers it converts the double, as the template did before.
    for (const v of [0.5, -1000, NaN, Infinity, 1e300]) assert.equal(secondsText(v), String(v / 1e9));
    assert.equal(secondsText(412345), '0.000412345');
    assert.equal(secondsText(1000), '0.000001');
    assert.equal(secondsText(999), '9.99e-7');
    assert.equal(secondsText(2_500_000_000), '2.5');
    assert.equal(secondsText(3e9), '3');
  });

  it('writes exactly the general path\'s line, which is its own canonical form, or declines', function () {
    this.timeout(120000);
    let written = 0;
    let declined = 0;
    fc.assert(fc.property(fields, ambient, limits, (f, a, l) => {
      const applied = appliedLimits(l);
      const line = accessLine(f, a, applied.maxFieldBytes, applied.maxRecordBytes);
      if (line === undefined) {
        declined++;
        return;
      }
      written++;
      const general = generalLine(f, a, l);
      assert.deepEqual(general.problems, []);
      assert.equal(line + '\n', general.line);
      assert.equal(line, general.canonical);
      assert.equal(line, canonicalize(JSON.parse(line)));
    }), { numRuns: RUNS });
    if (process.env.ACCESS_LINE_DEBUG) console.log({ written, declined });
    // Both branches were exercised: the property is not vacuous.
    assert.ok(written > RUNS / 20, `template wrote ${written} of ${RUNS}`);
    assert.ok(declined > RUNS / 20, `template declined ${declined} of ${RUNS}`);
  });

  it('writes the line for ordinary requests (plain values within the limits)', () => {
    const f = {
      method: 'GET', path: '/orders/42', duration: 0.000734, peer: '127.0.0.1', route: '/orders/:id', status: 200,
      responseBodySize: 12, userAgent: 'curl/8.5.0',
    };
    const a = {
      time: '2026-11-23T07:00:00.123456Z', auditId: '019ab0c2-7e2a-7abc-8def-0123456789ab', outcome: 'success', severity: 'INFO',
      traceId: '0af7651916cd43dd8448eb211c80319c', spanId: 'b7ad6b7169203331', requestId: 'r-1', clientAddress: '127.0.0.1',
      identity: { 'service.name': 'orders', 'service.instance.id': 'orders-1' },
      chain: { id: '019ab0c2-0000-7000-8000-000000000000', seq: 7, prev: 'ab'.repeat(32) },
    };
    const line = accessLine(f, a, 8192, 65536);
    assert.equal(line, generalLine(f, a, { maxFieldBytes: 8192, maxRecordBytes: 65536, maxDepth: 8, maxKeys: 200 }).canonical);
    const r = JSON.parse(line);
    assert.equal(r['event.name'], 'http_request');
    assert.equal(r['http.route'], '/orders/:id');
    assert.equal(r['audit.seq'], 7);
  });

  it('declines what the general path would escape, cut or refuse', () => {
    const base = { method: 'GET', path: '/', duration: 0.001, peer: '::1' };
    const a = { time: '2026-11-23T07:00:00.000001Z', auditId: 'x', outcome: 'success', severity: 'INFO', identity: { 'service.name': 's', 'service.instance.id': 'i' } };
    assert.equal(typeof accessLine(base, a, 64, 1000), 'string');
    for (const f of [
      { ...base, userAgent: 'evil\n{"event.name":"forged"}' },
      { ...base, path: '/é' },
      { ...base, path: '/' + 'a'.repeat(64) },
      { ...base, status: 200.5 },
      { ...base, duration: NaN },
      { ...base, requestIdReplaced: 'other' },
    ]) assert.equal(accessLine(f, a, 64, 1000), undefined, JSON.stringify(f));
    assert.equal(accessLine(base, a, 64, 128), undefined, 'over the record limit');
    // A value found plain under one field limit is not taken as plain under a smaller one.
    const long = { ...base, path: '/' + 'b'.repeat(99), userAgent: 'u'.repeat(80) };
    assert.equal(typeof accessLine(long, a, 8192, 65536), 'string');
    assert.equal(accessLine(long, a, 64, 65536), undefined);
    assert.equal(accessLine({ ...long, path: '/' }, a, 64, 65536), undefined, 'the user agent alone');
    // Nor is a missing value taken for a remembered one.
    assert.equal(accessLine({ ...base, method: undefined }, a, 65, 1000), undefined); // a new limit: nothing remembered
  });
});
