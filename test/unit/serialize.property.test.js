'use strict';
const assert = require('node:assert/strict');
const fc = require('fast-check');
const { defaultLimits, createRedactor, sanitize, toJsonLine, toJsonLineCanonical, toJsonLineReference } = require('../../dist/lib/audit/serialize.js');
const { canonicalize } = require('../../dist/lib/audit/chain.js');

const isRedacted = createRedactor([]);
const RUNS = Number(process.env.SERIALIZE_PROPERTY_RUNS) || 300;

/** Characters that break naive line writers, terminals or parsers. */
const hostileUnit = fc.oneof(
  { weight: 6, arbitrary: fc.string({ unit: 'binary', minLength: 1, maxLength: 1 }) },
  { weight: 4, arbitrary: fc.constantFrom('\n', '\r', '\r\n', '\u2028', '\u2029', '\u0085', '\u001b', '\u001b[2J', '\u001b]0;x\u0007',
    '\u007f', '\u009b', '\u0000', '\t', '\ud800', '\udbff', '\udc00', '\udfff', '\ud83d\ude00', '"', '\\', '"}{"', '"}\n{"a":"',
    '\u202e', '\u2066', '\ufeff', 'é', '€') },
  { weight: 2, arbitrary: fc.string({ unit: 'binary-ascii', minLength: 1, maxLength: 1 }) },
);
const hostileString = fc.string({ unit: hostileUnit, maxLength: 40 });

const anythingOptions = {
  withBigInt: true, withBoxedValues: true, withMap: true, withSet: true, withObjectString: true, withNullPrototype: true,
  withTypedArray: true, withSparseArray: true, withDate: true, stringUnit: hostileUnit,
  key: fc.oneof(
    hostileString,
    fc.constantFrom('__proto__', 'constructor', 'toJSON', '…', '…~2', 'audit.truncated', 'password', 'Set-Cookie'),
    // long keys sharing a prefix: cut at 256 bytes, they must not collide
    fc.tuple(fc.constantFrom('k', 'é', '€'), fc.integer({ min: 80, max: 140 }), fc.nat(3)).map(([c, n, d]) => c.repeat(n) + d),
  ),
  maxDepth: 4,
};
const anything = fc.anything(anythingOptions);

/** Values that fight back: cycles, throwing getters, hostile Proxies, revoked Proxies, toJSON bombs, huge strings. */
const hostile = fc.tuple(anything, fc.nat(7), hostileString).map(([value, how, s]) => {
  const thrower = () => { throw new Error('hostile'); };
  switch (how) {
    case 0: { const o = { value, s }; o.self = o; o.list = [o, value, o]; return o; }
    case 1: return { value, get boom() { throw new Error('getter'); }, after: s };
    case 2: return new Proxy({ value, s }, { ownKeys: thrower });
    case 3: return new Proxy({ value, s }, { get: thrower });
    case 4: { const p = Proxy.revocable({ value }, {}); p.revoke(); return [p.proxy, value]; }
    case 5: return { value, toJSON: thrower };
    case 6: return { value, big: s.repeat(2000) };
    default: return [value, new Map([[s, value], ['k', new Set([value, s])]])];
  }
});

const limitsArb = fc.oneof(
  fc.constant(defaultLimits),
  fc.record({
    maxFieldBytes: fc.integer({ min: 64, max: 4096 }),
    maxRecordBytes: fc.integer({ min: 128, max: 16384 }),
    maxDepth: fc.integer({ min: 0, max: 10 }),
    maxKeys: fc.integer({ min: 0, max: 50 }),
  }),
);

const recordArb = fc.record({
  time: hostileString,
  'audit.id': fc.oneof(hostileString, fc.uuid()),
  'event.name': fc.oneof(hostileString, anything),
  'user.id': fc.oneof(anything, hostile),
  'error.message': hostileString,
  'http.things': fc.oneof(anything, hostile),
  context: fc.oneof(anything, hostile, fc.dictionary(hostileString, fc.oneof(anything, hostile))),
}, { requiredKeys: ['time', 'audit.id'] });

/** Throws on a duplicate key in any object of the JSON text `t` (JSON.parse silently keeps the last). */
function assertNoDuplicateKeys(t) {
  let i = 0;
  const ws = () => { while (t[i] === ' ' || t[i] === '\t' || t[i] === '\n' || t[i] === '\r') i++; };
  const str = () => {
    const start = i++;
    while (t[i] !== '"') i += t[i] === '\\' ? 2 : 1;
    i++;
    return JSON.parse(t.slice(start, i));
  };
  const val = () => {
    ws();
    if (t[i] === '{') {
      i++;
      ws();
      if (t[i] === '}') { i++; return; }
      const seen = new Set();
      for (;;) {
        ws();
        const k = str();
        assert.ok(!seen.has(k), `duplicate key ${JSON.stringify(k)}`);
        seen.add(k);
        ws();
        i++; // :
        val();
        ws();
        if (t[i++] === '}') return;
      }
    }
    if (t[i] === '[') {
      i++;
      ws();
      if (t[i] === ']') { i++; return; }
      for (;;) { val(); ws(); if (t[i++] === ']') return; }
    }
    if (t[i] === '"') { str(); return; }
    while (i < t.length && !',]} \t\n\r'.includes(t[i])) i++;
  };
  val();
}

function checkLine(line, maxRecordBytes) {
  assert.equal(typeof line, 'string');
  assert.ok(line.endsWith('\n'));
  const body = line.slice(0, -1);
  assert.doesNotMatch(body, /[\n\r\u2028\u2029\u0085]/, 'a raw line terminator');
  assert.doesNotMatch(body, /[\u0000-\u001f\u007f-\u009f]/, 'a raw control character');
  assert.ok(body.isWellFormed(), 'a lone surrogate');
  assert.ok(Buffer.byteLength(line) <= maxRecordBytes + 1, `${Buffer.byteLength(line)} > ${maxRecordBytes} + 1`);
  const parsed = JSON.parse(body);
  assertNoDuplicateKeys(body);
  assert.ok(!('audit.serialize_error' in parsed), 'the last-resort fallback was needed');
  return parsed;
}

const DENY_KEYS = ['password', 'Password', 'PASSWORD', 'dbPassword', 'user_password', 'passwd', 'pwd', 'Authorization',
  'authorization', 'Proxy-Authorization', 'set-cookie', 'Set-Cookie', 'cookie', 'Cookie', 'apiKey', 'api_key', 'API-KEY', 'api key',
  'x-api-key', 'X-API-Key', 'session_id', 'sessionId', 'SESSION.ID', 'sid', 'secret', 'client_secret', 'clientSecret', 'access_token',
  'refreshToken', 'id_token', 'csrf_token', 'token', 'jwt', 'bearer', 'ssn', 'credit_card', 'card-number', 'cvv', 'cvc', 'pin',
  'privateKey', 'private_key', 'otp', 'passphrase', 'iban', 'auth'];
const MARK = 'ZqX9-SECRET-MARK';

/** Nested objects/arrays/Maps in which deny-listed keys hold values carrying MARK. */
const { tree: secretTree } = fc.letrec((tie) => ({
  secret: fc.oneof(
    fc.constant(MARK),
    fc.string({ maxLength: 5 }).map((s) => `${s}${MARK}${s}`),
    fc.constant([MARK, { inner: MARK }]),
    fc.constant({ plain: MARK, deeper: { x: MARK } }),
    fc.constant(new Map([['v', MARK]])),
  ),
  node: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    fc.oneof(fc.string({ maxLength: 8 }), fc.integer(), fc.boolean(), fc.constant(null)),
    tie('tree'),
  ),
  tree: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    fc.tuple(fc.dictionary(fc.string({ maxLength: 8 }), tie('node'), { maxKeys: 4 }),
      fc.array(fc.tuple(fc.constantFrom(...DENY_KEYS), tie('secret')), { maxLength: 3 }))
      .map(([o, secrets]) => { for (const [k, v] of secrets) o[k] = v; return o; }),
    fc.array(tie('node'), { maxLength: 4 }),
    fc.tuple(fc.constantFrom(...DENY_KEYS), tie('secret'), tie('node'))
      .map(([k, v, n]) => new Map([[k, v], ['n', n]])),
    fc.tuple(fc.constantFrom(...DENY_KEYS), tie('secret'), tie('node')).map(([k, v, n]) => [{ [k]: v }, n, [{ wrap: { [k]: v } }]]),
  ),
}));

describe('serialize (properties)', function () {
  this.timeout(120000);

  it('(the duplicate-key check used below does find duplicates)', () => {
    assert.throws(() => assertNoDuplicateKeys('{"a":1,"b":{"c":[{"x":"\\"}","x":2}]}}'), /duplicate key "x"/);
    assertNoDuplicateKeys('{"a":"x\\"","b":[1,{"a":true}],"c":{}}');
  });

  it('any record: never throws, one valid line within maxRecordBytes', () => {
    fc.assert(fc.property(recordArb, limitsArb, (record, limits) => {
      const line = toJsonLine(record, limits, isRedacted, ['context']);
      const rec = checkLine(line, limits.maxRecordBytes);
      assert.equal(typeof rec, 'object');
    }), { numRuns: RUNS });
  });

  it('any value anywhere (fc.anything with every option), hostile strings as keys and values', () => {
    fc.assert(fc.property(fc.dictionary(hostileString, fc.oneof(anything, hostile)), anything, limitsArb, (record, context, limits) => {
      record.context = context;
      checkLine(toJsonLine(record, limits, isRedacted, ['context']), limits.maxRecordBytes);
    }), { numRuns: RUNS });
  });

  it('the canonical form handed to the hash chain is exactly canonicalize(JSON.parse(line)) (any record, any value)', () => {
    const check = (record, limits) => {
      const { line, canonical, lineIsCanonical } = toJsonLineCanonical(record, limits, isRedacted, ['context']);
      checkLine(line, limits.maxRecordBytes);
      assert.equal(canonical, canonicalize(JSON.parse(line)));
      if (lineIsCanonical) assert.equal(canonical, line.slice(0, -1));
    };
    fc.assert(fc.property(recordArb, limitsArb, check), { numRuns: RUNS });
    fc.assert(fc.property(fc.dictionary(hostileString, fc.oneof(anything, hostile)), anything, limitsArb, (record, context, limits) => {
      record.context = context;
      check(record, limits);
    }), { numRuns: RUNS });
    // the shapes the auditor writes: plain fields, escapes in values and keys, truncation markers
    fc.assert(fc.property(fc.dictionary(fc.oneof(hostileString, fc.constantFrom('audit.truncated', 'a', 'time')),
      fc.oneof(hostileString, fc.integer(), fc.double(), fc.boolean(), fc.constant(null), fc.array(hostileString, { maxLength: 3 }))),
    limitsArb, check), { numRuns: RUNS * 3 });
  });

  it('records with plain keys (the fast path) are written exactly as the general path writes them, also when values repeat and limits change', () => {
    // The fast path remembers the last short string at each key position; a second call with the
    // same values, or with other limits in between, must still write what the general path writes.
    // Mostly plain keys (one key that needs an escape sends the whole record the general way).
    const key = fc.oneof(
      { weight: 6, arbitrary: fc.constantFrom('time', 'audit.id', 'audit.prev', 'audit.truncated', 'context', 'event.name', 'a') },
      { weight: 6, arbitrary: fc.stringMatching(/^[a-z][a-z0-9._]{0,11}$/) },
      { weight: 1, arbitrary: hostileString },
    );
    // Strings around the field limit: one-, two-, three- and four-byte characters repeated.
    const long = fc.tuple(fc.constantFrom('a', 'é', '€', '😀'), fc.integer({ min: 1, max: 400 })).map(([c, n]) => c.repeat(n));
    const value = fc.oneof(hostileString, long, fc.string({ maxLength: 300 }), fc.string({ unit: 'binary', maxLength: 60 }),
      fc.integer(), fc.double(), fc.boolean(), fc.constant(null), fc.array(hostileString, { maxLength: 3 }),
      fc.dictionary(fc.oneof(hostileString, fc.constantFrom('password', 'x')), hostileString, { maxKeys: 3 }));
    const small = fc.record({ maxFieldBytes: fc.integer({ min: 64, max: 300 }), maxRecordBytes: fc.integer({ min: 128, max: 2000 }),
      maxDepth: fc.integer({ min: 0, max: 4 }), maxKeys: fc.integer({ min: 0, max: 5 }) });
    fc.assert(fc.property(fc.dictionary(key, value, { maxKeys: 12 }), fc.oneof(limitsArb, small), fc.oneof(limitsArb, small), (record, l1, l2) => {
      for (const limits of [l1, l1, l2, l1]) {
        assert.equal(toJsonLine(record, limits, isRedacted, ['context']), toJsonLineReference(record, limits, isRedacted, ['context']));
      }
    }), { numRuns: RUNS * 3 });
  });

  it('a line is its own canonical form unless it needed an escape JSON does not make: the chain hashes the text on disk', () => {
    // Strings of any Unicode JSON writes raw or with its own escapes (quotes, backslashes, C0),
    // keys in any order, nested objects and arrays, numbers of every kind.
    const unit = fc.oneof(fc.constantFrom('"', '\\', '\n', '\t', '\u0000', '\u001f', 'é', '€', '😀', 'Z', 'a', '.', '_'),
      fc.integer({ min: 0x20, max: 0x7e }).map((c) => String.fromCharCode(c)));
    const str = fc.string({ unit, maxLength: 24 });
    const num = fc.oneof(fc.integer(), fc.double({ noNaN: true, noDefaultInfinity: true }), fc.constantFrom(1e21, 1e-7, -0, 5e-324));
    const leaf = fc.oneof(str, num, fc.boolean(), fc.constant(null));
    const value = fc.oneof(leaf, fc.array(leaf, { maxLength: 4 }), fc.dictionary(str, fc.oneof(leaf, fc.array(leaf, { maxLength: 3 })), { maxKeys: 5 }));
    fc.assert(fc.property(fc.dictionary(str.filter((k) => k !== 'audit.truncated' && k !== 'context'), value, { maxKeys: 12 }), (record) => {
      const { line, canonical, lineIsCanonical } = toJsonLineCanonical(record, defaultLimits, () => false, ['context']);
      assert.ok(lineIsCanonical);
      assert.equal(canonical, line.slice(0, -1));
      assert.equal(canonical, canonicalize(JSON.parse(line)));
    }), { numRuns: RUNS });
    // and one that needs a line-safe escape (U+2028) is not, but its canonical form is still exact
    const { line, canonical, lineIsCanonical } = toJsonLineCanonical({ msg: 'a\u2028b', b: 1 }, defaultLimits, () => false, []);
    assert.ok(line.includes('\\u2028') && !lineIsCanonical);
    assert.equal(canonical, '{"b":1,"msg":"a\u2028b"}');
  });

  it('the context written equals sanitize(context), unless dropped for size', () => {
    fc.assert(fc.property(fc.oneof(anything, hostile), limitsArb, (context, limits) => {
      const rec = checkLine(toJsonLine({ 'audit.id': 'a', context }, limits, isRedacted, ['context']), limits.maxRecordBytes);
      const s = sanitize(context, limits, isRedacted);
      if (typeof rec.context === 'string' && rec.context.startsWith('[dropped: record over')) return;
      assert.deepEqual(rec.context, s);
    }), { numRuns: RUNS });
  });

  it('sanitize never throws and returns a JSON round-trippable value', () => {
    fc.assert(fc.property(fc.oneof(anything, hostile), limitsArb, (value, limits) => {
      const s = sanitize(value, limits, isRedacted);
      if (value === undefined) return assert.equal(s, undefined);
      assert.deepEqual(JSON.parse(JSON.stringify(s)), s);
    }), { numRuns: RUNS });
  });

  it('no value under a deny-listed key ever reaches the line', () => {
    fc.assert(fc.property(secretTree, secretTree, fc.oneof(fc.constant(defaultLimits), limitsArb), (ctx, other, limits) => {
      const line = toJsonLine({ 'audit.id': 'a', context: ctx, 'http.request': other, list: [other, ctx] }, limits, isRedacted, ['context']);
      checkLine(line, limits.maxRecordBytes);
      assert.ok(!line.includes(MARK), line);
      assert.ok(!JSON.stringify(sanitize([ctx, other], limits, isRedacted)).includes(MARK));
    }), { numRuns: RUNS });
  });

  it('the generated secrets are really in the input (the previous property is not vacuous)', () => {
    const samples = fc.sample(secretTree, 200);
    const leaks = samples.filter((t) => toJsonLine({ c: t }, defaultLimits, () => false, ['c']).includes(MARK));
    assert.ok(leaks.length > 100, `${leaks.length} of 200 samples carry the mark when nothing is redacted`);
  });
});
