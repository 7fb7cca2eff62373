'use strict';
// The agents' redaction processor masks values that look like credentials in every attribute,
// resource attributes and log bodies included — so in audit records too, whose hash chain then no
// longer verifies. It must catch card numbers, bearer tokens and JWTs, and never an id auditrace
// or the SDK writes: a UUID whose last two groups are all digits (about 1 in 2,300) had its
// `8491-137320571528` masked by `\b(?:\d[ -]?){13,16}\b`, seen as a service.instance.id of
// `4875330c-8dd3-44d2-****` in a CI run of the collector e2e test; a span id (16 hex digits) of
// decimal digits only (1 in 1,850) is a card number to any pattern, so the id keys are ignored.
// The patterns are RE2; the ones here use only what RE2 and JavaScript read alike (ASCII `\b`, `\d`,
// classes, counted repeats, a leading `(?i)`).
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const fc = require('fast-check');
const YAML = require('yaml');

const DIR = path.join(__dirname, '..', '..', 'collector-config');
const CONFIGS = ['agent.yaml', 'standalone.yaml'];

function redaction(file) {
  const config = YAML.parse(fs.readFileSync(path.join(DIR, file), 'utf8'));
  const r = config.processors?.redaction;
  assert.ok(Array.isArray(r?.blocked_values) && r.blocked_values.length > 0, `${file}: processors.redaction.blocked_values`);
  return { blocked: r.blocked_values, ignored: r.ignored_keys ?? [] };
}

function toRegExp(re2) {
  const insensitive = re2.startsWith('(?i)');
  return new RegExp(insensitive ? re2.slice(4) : re2, insensitive ? 'gi' : 'g');
}

/** What the processor leaves of a value: each pattern's matches replaced by `****`, in order. */
function redact(value, patterns) {
  return patterns.reduce((v, re) => v.replace(re, '****'), value);
}

/** What it leaves of attributes: string values of keys not ignored are masked (summary: silent). */
function redactAttributes(attributes, patterns, ignored) {
  return Object.fromEntries(Object.entries(attributes).map(([k, v]) => [k, typeof v === 'string' && !ignored.includes(k) ? redact(v, patterns) : v]));
}

const hex = (n, digitsOnly = false) => fc.string({ unit: fc.constantFrom(...(digitsOnly ? '0123456789' : '0123456789abcdef')), minLength: n, maxLength: n });
/** UUIDs with any group made of digits only, the case the old card pattern caught. */
const uuid = fc.tuple(...[8, 4, 4, 4, 12].map((n) => fc.oneof(hex(n), hex(n, true)))).map((g) => g.join('-'));

describe('collector redaction (collector-config/*.yaml, processors.redaction)', () => {
  const { blocked, ignored } = redaction('agent.yaml');
  const patterns = blocked.map(toRegExp);

  it('is the same in every config that has it', () => {
    for (const f of CONFIGS) assert.deepEqual(redaction(f), redaction('agent.yaml'), f);
  });

  it('leaves the ids of an audit record as written, a span id of decimal digits only included', () => {
    const record = fc.record({
      'audit.id': uuid, 'audit.chain': uuid, 'service.instance.id': uuid, 'request.id': fc.oneof(uuid, hex(32)),
      'audit.prev': hex(64), 'audit.checkpoint.mac': hex(64), trace_id: fc.oneof(hex(32), hex(32, true)),
      span_id: fc.oneof(hex(16), hex(16, true)), 'audit.seq': fc.nat(), 'event.name': fc.constant('user_login'),
    });
    fc.assert(fc.property(record, (r) => {
      assert.deepEqual(redactAttributes(r, patterns, ignored), { ...r });
    }), { numRuns: 3000 });
    // What the ignored keys are for: such a span id is masked anywhere else.
    assert.equal(redact('1234567890123456', patterns), '****');
  });

  it('masks a card number a trusted proxy sent as the request id (its ids are its choice)', () => {
    assert.deepEqual(redactAttributes({ 'request.id': '4111111111111111' }, patterns, ignored), { 'request.id': '****' });
  });

  it('masks a card number in any other field of the record', () => {
    const out = redactAttributes({ span_id: '4111111111111111', 'payment.note': 'card 4111 1111 1111 1111' }, patterns, ignored);
    assert.deepEqual(out, { span_id: '4111111111111111', 'payment.note': 'card ****' });
  });

  it('mask card numbers, bearer tokens and JWTs inside any text', () => {
    const secrets = ['4111111111111111', '4111 1111 1111 1111', '4111-1111-1111-1111', '378282246310005',
      '3782 822463 10005', '3782-822463-10005', '4222222222222', '6011 0009 9013 9424',
      'Bearer abcdefgh.ijklmnop', 'bearer 0123456789abcdef==',
      'eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U'];
    for (const s of secrets) {
      for (const text of [s, `paid with ${s}.`, `card=${s}`, `"${s}"`]) {
        const out = redact(text, patterns);
        assert.ok(out.includes('****'), `${text} -> ${out}`);
        assert.ok(!out.includes(s), `${text} -> ${out}`);
      }
    }
  });

  it('leave every UUID alone, whatever groups are all digits (the case that was masked)', () => {
    assert.equal(redact('4875330c-8dd3-44d2-8491-137320571528', patterns), '4875330c-8dd3-44d2-8491-137320571528');
    fc.assert(fc.property(uuid, fc.constantFrom('', 'id ', 'u-', '"'), (id, prefix) => {
      assert.equal(redact(`${prefix}${id}`, patterns), `${prefix}${id}`);
    }), { numRuns: 5000 });
  });

  it('leave trace ids, hashes, times, addresses and numbers up to 12 digits alone, in any field', () => {
    const ids = fc.oneof(hex(32), hex(64), hex(12, true),
      fc.date({ noInvalidDate: true, min: new Date(0), max: new Date(Date.UTC(9999, 0)) }).map((d) => d.toISOString()),
      fc.ipV4(), fc.ipV6(), fc.integer({ min: 0, max: 999_999_999_999 }).map(String));
    fc.assert(fc.property(ids, (v) => {
      assert.equal(redact(v, patterns), v);
    }), { numRuns: 5000 });
  });
});
