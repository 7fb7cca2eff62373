'use strict';

const assert = require('node:assert/strict');
const fc = require('fast-check');
const { canonicalize } = require('../../dist/lib/audit/chain.js');
const { canonicalOfSorted, inKeyOrder, kvlist, notRecordField, recordsOfLogsRequest } = require('../../dist/lib/forensics/otlp.js');

/** What canonicalOfSorted must equal: the record as kvlist makes it, canonicalised; or the same throw. */
function reference(attrs) {
  try {
    return { ok: canonicalize(kvlist(attrs, notRecordField)) };
  } catch (e) {
    return { threw: e.constructor.name };
  }
}
function fast(attrs) {
  try {
    return { ok: canonicalOfSorted(inKeyOrder(attrs), notRecordField) };
  } catch (e) {
    return { threw: e.constructor.name };
  }
}

const key = fc.oneof(
  fc.constantFrom('a', 'b', 'time', 'audit.seq', '__proto__', 'constructor', '0', '1', '10', '9', '', 'é', '\u2028', '\ud83d\ude00', '\ud800',
    'log.file.name', 'log.file.path', 'log.filex'),
  // A small alphabet: the keys seen stay under the rank table's bound, so the ranked sort is what
  // runs here (the test past the bound below fills it).
  fc.string({ unit: fc.constantFrom('a', 'b', 'A', '_', '.', '0', 'é', '\u2028', '\ud83d', '\ude00'), maxLength: 3 }),
);
const anyValue = fc.letrec((tie) => ({
  value: fc.oneof({ depthSize: 'small' },
    fc.record({ stringValue: fc.string({ unit: 'binary', maxLength: 12 }) }),
    fc.record({ boolValue: fc.boolean() }),
    fc.record({ intValue: fc.oneof(fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }).map(String), fc.integer()) }),
    fc.record({ doubleValue: fc.oneof(fc.double(), fc.constantFrom('NaN', 'Infinity', '-0', '1e400', 'x')) }),
    fc.record({ bytesValue: fc.base64String({ maxLength: 8 }) }),
    fc.record({ arrayValue: fc.record({ values: fc.array(tie('value'), { maxLength: 3 }) }) }),
    fc.record({ kvlistValue: fc.record({ values: fc.array(tie('kv'), { maxLength: 3 }) }) }),
    // Malformed values: what a damaged or hostile archive may hold.
    fc.constantFrom(undefined, null, {}, { stringValue: 5 }, { stringValue: null }, 'str', 7,
      { arrayValue: { values: 1 } }, { arrayValue: { values: { 0: { stringValue: 'x' } } } }, { kvlistValue: { values: 'x' } },
      { intValue: { valueOf: 1, toString: 1 } }, { doubleValue: { valueOf: 1, toString: 1 } }, { intValue: [] }, { intValue: true }),
  ),
  kv: fc.oneof({ arbitrary: fc.record({ key, value: tie('value') }), weight: 12 },
    { arbitrary: fc.constantFrom(null, 3, {}, { key: 5, value: { stringValue: 'k' } }, { value: { stringValue: 'no key' } }), weight: 1 }),
}));

describe('forensics: OTLP records back to their canonical form', function () {
  this.timeout(30000);

  it('writes the canonical form from sorted attributes exactly as canonicalize(kvlist(attributes)) does, for any attribute list', () => {
    fc.assert(fc.property(fc.array(anyValue.kv, { maxLength: 14 }), (attrs) => {
      assert.deepEqual(fast(attrs), reference(attrs));
    }), { numRuns: 3000 });
  });

  it('stays exact once an archive has shown more distinct keys than are ranked (bounded memory)', () => {
    const many = Array.from({ length: 5000 }, (_, i) => ({ key: `k${(i * 7919) % 5000}`, value: { intValue: String(i) } }));
    assert.deepEqual(fast(many), reference(many));
    fc.assert(fc.property(fc.array(anyValue.kv, { maxLength: 14 }), (attrs) => {
      assert.deepEqual(fast(attrs), reference(attrs));
    }), { numRuns: 500 });
  });

  it('keeps the last value of a repeated key, wherever the copies stand', () => {
    const attrs = [
      { key: 'b', value: { stringValue: 'first' } }, { key: 'a', value: { intValue: '1' } },
      null, { key: 'b', value: { stringValue: 'last' } }, { key: 'log.file.name', value: { stringValue: 'x.jsonl' } },
    ];
    assert.equal(canonicalOfSorted(inKeyOrder(attrs), notRecordField), '{"a":1,"b":"last"}');
  });

  it('does not reorder the input array, and hands back the record with its fields in key order', () => {
    const attrs = [{ key: 'z', value: { stringValue: '1' } }, { key: 'a', value: { boolValue: true } },
      { key: 'log.file.path', value: { stringValue: '/var/log/a.jsonl' } }];
    const before = JSON.stringify(attrs);
    const [r] = recordsOfLogsRequest({ resourceLogs: [{ scopeLogs: [{ logRecords: [{ attributes: attrs }] }] }] });
    assert.equal(JSON.stringify(attrs), before);
    assert.deepEqual(Object.keys(r.record), ['a', 'z']);
    assert.equal(r.source, '/var/log/a.jsonl');
    assert.equal(canonicalOfSorted(r.sorted, notRecordField), '{"a":true,"z":"1"}');
  });

  it('reads a log record whose attributes are not a list as one without attributes', () => {
    const [r] = recordsOfLogsRequest({ resourceLogs: [{ scopeLogs: [{ logRecords: [{ attributes: 'oops' }] }] }] });
    assert.deepEqual({ ...r.record }, {});
  });

  it('never throws on a damaged export request: what cannot be read is skipped, the rest is read', () => {
    const good = { attributes: [{ key: 'a', value: { stringValue: 'kept' } }] };
    const bad = { toString: 1, valueOf: 1 };
    const damaged = [
      { resourceLogs: [{ scopeLogs: {} }, { scopeLogs: [{ logRecords: [good] }] }] },
      { resourceLogs: [{ scopeLogs: [{ logRecords: {} }, { logRecords: [good] }] }] },
      { resourceLogs: [null, 5, { scopeLogs: [null, { scope: { name: 'auditrace.audit' }, logRecords: [null, good] }] }] },
      { resourceLogs: [{ scopeLogs: [{ scope: { name: 'auditrace.audit' }, logRecords: [{ ...good, timeUnixNano: bad, traceId: bad, spanId: bad }] }] }] },
      { resourceLogs: [{ scopeLogs: [{ logRecords: [{ attributes: [{ key: 'a', value: { arrayValue: { values: 1 } } }, { key: 'b', value: { intValue: bad } }] }] }] }] },
    ];
    for (const req of damaged) {
      const records = recordsOfLogsRequest(req);
      assert.ok(records.length >= 1, JSON.stringify(req));
      // A value that is no number fails canonicalisation as it does from the record (verify reports it).
      for (const r of records) assert.deepEqual(fast(r.sorted), reference(r.sorted));
    }
    assert.equal(recordsOfLogsRequest(damaged[0])[0].record.a, 'kept');
    assert.deepEqual({ ...recordsOfLogsRequest(damaged[4])[0].record }, { a: [], b: Number.NaN });
  });
});
