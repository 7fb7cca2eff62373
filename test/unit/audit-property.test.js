'use strict';
// Properties of the public audit API, in process: whatever an application passes, one call
// appends exactly one whole JSON line to the audit file and returns that line's audit.id.
// The auditor reads its configuration on first use, so AUDITRACE_AUDIT_FILE is set before
// dist/lib/index.js is first used (and restored once the auditor has read it).
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const fc = require('fast-check');
const Ajv2020 = require('ajv/dist/2020').default;

const ROOT = path.resolve(__dirname, '..', '..');
const { recordHash } = require('../../dist/lib/audit/chain.js');
const RUNS = Math.max(500, Number(process.env.AUDIT_PROPERTY_RUNS) || 500);
const UUIDV7 = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
const EVENT_NAME = /^[a-z][a-z0-9]*(?:_[a-z0-9]+)*$/;
const camel = (s) => s.replace(/_([a-z])/g, (_, c) => c.toUpperCase());

// ---- arbitraries -------------------------------------------------------------------------------

/** Characters that break naive line writers, terminals or parsers. */
const hostileUnit = fc.oneof(
  { weight: 6, arbitrary: fc.string({ unit: 'binary', minLength: 1, maxLength: 1 }) },
  { weight: 4, arbitrary: fc.constantFrom('\n', '\r', '\r\n', '\u2028', '\u2029', '\u0085', '\u001b', '\u001b[2J', '\u007f', '\u009b',
    '\u0000', '\t', '\ud800', '\udbff', '\udc00', '\udfff', '\ud83d\ude00', '"', '\\', '"}{"', '"}\n{"a":"', '\u202e', '\ufeff', 'é', '€') },
  { weight: 2, arbitrary: fc.string({ unit: 'binary-ascii', minLength: 1, maxLength: 1 }) },
);
const hostileString = fc.string({ unit: hostileUnit, maxLength: 40 });

/** Keys an application passes: catalogue and common fields, reserved ones, secrets, Object.prototype names. */
const FIELD_KEYS = ['user.id', 'user.target.id', 'context', 'error.message', 'error.type', 'request.id', 'object.type', 'object.id',
  'fields', 'reason', 'authz.action', 'authz.from', 'authz.to', 'authn.retries', 'consent.purpose', 'preferences.changed',
  'http.response.status_code', 'event.outcome', 'severity', 'audit.id', 'audit.problems', 'audit.truncated', 'time', 'trace_id',
  'service.name', 'client.address', 'invoice.id', 'my_app.field', 'password', 'api.token', 'constructor', 'toString'];

const anythingOptions = {
  withBigInt: true, withBoxedValues: true, withMap: true, withSet: true, withObjectString: true, withNullPrototype: true,
  withTypedArray: true, withSparseArray: true, withDate: true, stringUnit: hostileUnit, maxDepth: 3,
  key: fc.oneof(hostileString, fc.constantFrom(...FIELD_KEYS, '__proto__', 'toJSON', 'Set-Cookie')),
};
const anything = fc.anything(anythingOptions);

const fieldValue = fc.oneof(
  { weight: 3, arbitrary: anything },
  { weight: 3, arbitrary: hostileString },
  { weight: 1, arbitrary: fc.array(hostileString, { maxLength: 4 }) },
  { weight: 1, arbitrary: fc.oneof(fc.integer(), fc.double(), fc.constantFrom(true, false, NaN, Infinity, -0, 2 ** 53)) },
  { weight: 1, arbitrary: fc.dictionary(fc.constantFrom(...FIELD_KEYS), fc.oneof(hostileString, fc.integer(), anything), { maxKeys: 4 }) },
);

/** Field objects for calls; `protoKey`: also `__proto__` as an own key (as JSON.parse makes it). */
const fieldsArb = (protoKey) => fc.oneof(
  { weight: 6, arbitrary: fc.dictionary(fc.oneof(fc.constantFrom(...FIELD_KEYS, ...(protoKey ? ['__proto__'] : [])), hostileString), fieldValue, { maxKeys: 8 }) },
  { weight: 2, arbitrary: protoKey ? anything : fc.anything({ ...anythingOptions, key: hostileString }) },
);

/**
 * Values that fight back: throwing getters, Proxies (over objects and arrays), revoked Proxies,
 * cycles. Generated as plain recipes and built inside the property: fast-check itself inspects
 * generated values (and prints counterexamples), which a revoked Proxy does not survive.
 */
const thrower = () => { throw new Error('hostile'); };
const ALL_TRAPS = ['get', 'set', 'has', 'ownKeys', 'getOwnPropertyDescriptor', 'getPrototypeOf', 'setPrototypeOf', 'defineProperty',
  'deleteProperty', 'isExtensible', 'preventExtensions', 'apply', 'construct'];
const throwingProxy = (target) => new Proxy(target, Object.fromEntries(ALL_TRAPS.map((t) => [t, thrower])));
const HOSTILE = ['cycle', 'throwing getter', 'array with a throwing getter', 'throwing Proxy', 'throwing Proxy over an array',
  'revoked Proxy over an array', 'revoked Proxy'];
function hostile({ how, value, s }) {
  switch (how) {
    case 'cycle': { const o = { value, s }; o.self = o; return o; }
    case 'throwing getter': return Object.defineProperty({ value }, 'boom', { enumerable: true, get: thrower });
    case 'array with a throwing getter': return Object.defineProperty([s, s], 0, { enumerable: true, get: thrower });
    case 'throwing Proxy': return throwingProxy({ value });
    case 'throwing Proxy over an array': return throwingProxy([s]);
    case 'revoked Proxy over an array': { const p = Proxy.revocable([s], {}); p.revoke(); return p.proxy; }
    default: { const p = Proxy.revocable({ value }, {}); p.revoke(); return p.proxy; }
  }
}
const recipe = fc.record({ how: fc.constantFrom(...HOSTILE), value: fieldValue, s: hostileString });
/** A recipe for the fields argument: hostile itself, or an object some of whose values are. */
const hostileFieldsRecipe = fc.oneof(
  fc.record({ whole: recipe }),
  fc.record({
    entries: fc.array(fc.tuple(fc.constantFrom(...FIELD_KEYS), fc.oneof(fc.record({ plain: fieldValue }), fc.record({ hostile: recipe }))),
      { minLength: 1, maxLength: 6 }),
  }),
);
function buildFields(r) {
  if (r.whole) return hostile(r.whole);
  const o = {};
  for (const [k, v] of r.entries) o[k] = 'hostile' in v ? hostile(v.hostile) : v.plain;
  return o;
}

/** `protoNames`: also names that are Object.prototype members ('constructor' is valid lower_snake_case). */
const eventNameArb = (names, protoNames = true) => fc.oneof(
  { weight: 3, arbitrary: fc.constantFrom(...names, 'invoice_exported', 'a', 'x'.repeat(64), 'x'.repeat(65), '', 'Invoice_Exported',
    'invoice-exported', 'invoice_', '_x', 'a__b', 'evil\nname', 'evil\u2028name', '__proto__', ...(protoNames ? ['constructor'] : [])) },
  { weight: 3, arbitrary: fc.stringMatching(/^[a-z][a-z0-9]{0,12}(_[a-z0-9]{1,8}){0,4}$/) },
  { weight: 2, arbitrary: hostileString },
);

const callArb = (names, fields, protoNames = true) => fc.oneof(
  fc.record({ kind: fc.constant('event'), name: eventNameArb(names, protoNames), fields }),
  fc.record({ kind: fc.constant('fn'), name: fc.constantFrom(...names), fields }),
);

// ---- the test ----------------------------------------------------------------------------------

describe('audit API properties (in process)', function () {
  this.timeout(120000);
  let dir;
  let file;
  let audit;
  let catalogue;
  let names;
  let validate;
  let realStderrWrite;
  let stderr = '';
  let lastRecord;
  let chained = 0;

  /** Calls fn and returns what it returned and the bytes it appended to the audit file. */
  function appended(fn) {
    const before = fs.statSync(file).size;
    const ret = fn();
    const after = fs.statSync(file).size;
    const buf = Buffer.alloc(after - before);
    const fd = fs.openSync(file, 'r');
    try {
      fs.readSync(fd, buf, 0, buf.length, before);
    } finally {
      fs.closeSync(fd);
    }
    return { ret, buf };
  }

  /** Makes the call; asserts it appended exactly one whole, valid line and returned its audit.id. */
  function oneLine(call) {
    const { ret, buf } = appended(() => (call.kind === 'event' ? audit.event(call.name, call.fields) : audit[camel(call.name)](call.fields)));
    const text = buf.toString('utf8');
    assert.ok(Buffer.from(text, 'utf8').equals(buf), 'the line is valid UTF-8');
    const lines = text.split('\n').length - 1;
    if (lines !== 1) {
      const why = stderr.split('\n').filter((l) => l.includes('could not be written')).pop() ?? '';
      assert.equal(lines, 1, `exactly one line appended, got ${lines} (${buf.length} bytes; returned ${JSON.stringify(ret)}) ${why}`);
    }
    assert.ok(text.endsWith('\n'), 'the line is terminated');
    const line = text.slice(0, -1);
    assert.doesNotMatch(line, /[\r\n\u2028\u2029]/, 'no raw line terminator');
    let record;
    try {
      record = JSON.parse(line);
    } catch {
      assert.fail(`not valid JSON: ${line.slice(0, 200)}`);
    }
    assert.equal(typeof ret, 'string');
    assert.equal(ret, record['audit.id'], 'the call returns the audit.id of its line');
    assert.match(ret, UUIDV7);
    // The chain: this record names the hash of the one before it, as a verifier recomputes it
    // from the record read back (the writer hashes the bytes it wrote).
    if (lastRecord !== undefined && lastRecord['audit.chain'] === record['audit.chain'] && lastRecord['audit.seq'] === record['audit.seq'] - 1) {
      assert.equal(record['audit.prev'], recordHash(lastRecord, undefined), `audit.prev of seq ${record['audit.seq']}`);
      chained++;
    }
    lastRecord = record;
    const name = call.name;
    const expected = call.kind === 'fn' ? name : typeof name === 'string' && EVENT_NAME.test(name) && name.length <= 64 ? name : 'invalid_event';
    assert.equal(record['event.name'], expected);
    return record;
  }

  const ENV = { AUDITRACE_AUDIT_FSYNC: 'never', AUDITRACE_AUDIT_MAX_FILE_BYTES: '0', OTEL_SERVICE_NAME: 'audit-property' };
  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'auditrace-property-'));
    file = path.join(dir, 'audit.jsonl');
    const env = { ...ENV, AUDITRACE_AUDIT_FILE: file };
    const saved = Object.fromEntries(Object.keys(env).map((k) => [k, process.env[k]]));
    Object.assign(process.env, env);
    try {
      ({ audit, catalogue } = require('../../dist/lib/index.js'));
      const id = audit.event('property_probe', {}); // first use: the auditor reads the variables now
      assert.ok(fs.existsSync(file) && fs.readFileSync(file, 'utf8').includes(id),
        'the auditor was already set up by another test in this process, before AUDITRACE_AUDIT_FILE was set');
    } finally {
      for (const [k, v] of Object.entries(saved)) {
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      }
    }
    names = Object.keys(catalogue).filter((n) => !catalogue[n].internal);
    const schema = JSON.parse(fs.readFileSync(path.join(ROOT, 'audit-record.schema.json'), 'utf8'));
    validate = new Ajv2020({ allErrors: true, strict: true, strictRequired: false }).compile(schema);
  });
  after(() => {
    const d = dir;
    fs.rmSync(d, { recursive: true, force: true });
    // The process's auditor writes its chain's end there as the process exits (registered earlier, so run first).
    process.once('exit', () => fs.rmSync(d, { recursive: true, force: true }));
  });

  // Problem warnings (one per event name a minute) would flood the test output: keep them.
  beforeEach(() => {
    stderr = '';
    realStderrWrite = process.stderr.write;
    process.stderr.write = (chunk, ...rest) => {
      stderr += String(chunk);
      const cb = rest.find((r) => typeof r === 'function');
      if (cb) cb();
      return true;
    };
  });
  afterEach(() => {
    process.stderr.write = realStderrWrite;
  });

  it(`any event name and any fields (${RUNS} runs): each call appends exactly one JSON line and returns its audit.id`, () => {
    fc.assert(fc.property(callArb(names, fieldsArb(true)), (call) => {
      oneLine(call);
    }), { numRuns: RUNS });
    assert.doesNotMatch(stderr, /could not be written/);
    assert.ok(chained >= RUNS - 1, `${chained} records checked against their predecessor`);
  });

  it(`every such record validates against audit-record.schema.json (${RUNS} runs)`, () => {
    // Object.prototype names (as event names or keys) have their own tests below.
    fc.assert(fc.property(callArb(names, fieldsArb(false), false), (call) => {
      const record = oneLine(call);
      assert.ok(validate(record), `${JSON.stringify(validate.errors)}\n${JSON.stringify(record).slice(0, 1000)}`);
    }), { numRuns: RUNS });
  });

  it(`values that fight back (throwing getters, Proxies, revoked Proxies, cycles; ${RUNS} runs): still one line, still its audit.id`, () => {
    fc.assert(fc.property(callArb(names, hostileFieldsRecipe), (call) => {
      oneLine({ ...call, fields: buildFields(call.fields) });
    }), { numRuns: RUNS });
  });

  describe('regressions, one call each', () => {
    const record = (fn) => {
      const { ret, buf } = appended(fn);
      const lines = buf.toString('utf8').split('\n').filter(Boolean);
      assert.equal(lines.length, 1, `one record written (returned ${JSON.stringify(ret)}; stderr: ${stderr.trim()})`);
      const r = JSON.parse(lines[0]);
      assert.equal(r['audit.id'], ret);
      return r;
    };

    it('a list field whose items cannot be read (throwing getter, Proxy over an array) is refused, and the record still written', () => {
      const getterList = Object.defineProperty(['diagnosis'], 0, { enumerable: true, get: thrower });
      const r1 = record(() => audit.sensitiveRead({ 'user.id': 'u-1', 'user.target.id': 'p-1', 'object.type': 'patient', fields: getterList }));
      assert.equal(r1['user.id'], 'u-1');
      assert.ok(r1['audit.problems'].some((p) => p.startsWith('fields')), r1['audit.problems']);
      const r2 = record(() => audit.event('list_exported', { 'user.id': 'u-1', 'list.names': throwingProxy(['a']) }));
      assert.ok(r2['audit.problems'].some((p) => p.startsWith('list.names')), r2['audit.problems']);
    });

    it('a revoked Proxy as context is refused, and the record still written', () => {
      const p = Proxy.revocable({ purpose: 'x' }, {});
      p.revoke();
      const r = record(() => audit.authnLoginFail({ 'user.id': 'u-1', context: p.proxy }));
      assert.equal(r['event.name'], 'authn_login_fail');
      assert.ok(r['audit.problems'].some((p2) => p2.startsWith('context')), r['audit.problems']);
    });

    it('audit.event() with a name that cannot become a string (Proxy, null-prototype object, throwing toString) writes invalid_event', () => {
      for (const name of [throwingProxy({}), Object.create(null), { toString: thrower }]) {
        const r = record(() => audit.event(name, { 'user.id': 'u-1' }));
        assert.equal(r['event.name'], 'invalid_event');
        assert.equal(r['user.id'], 'u-1');
      }
    });

    it('a "__proto__" key (as JSON.parse makes it) cannot smuggle error.*/context past the type checks', () => {
      const r = record(() => audit.authnLoginFail(JSON.parse('{"user.id":"u-1","__proto__":{"error.message":12345,"error.type":{"x":1},"context":"str"}}')));
      assert.ok(validate(r), `${JSON.stringify(validate.errors)}\n${JSON.stringify(r)}`);
      assert.notEqual(r['error.message'], 12345);
      assert.ok((r['audit.problems'] ?? []).some((p) => p.includes('__proto__')), `named in audit.problems: ${JSON.stringify(r)}`);
    });

    it('keys named like Object.prototype members are fields like any other, not silently dropped', () => {
      // `constructor` is a valid lower_snake_case name: an application's own event keeps it.
      const own = record(() => audit.event('app_event', { constructor: 'c-1' }));
      assert.equal(Object.getOwnPropertyDescriptor(own, 'constructor')?.value, 'c-1', JSON.stringify(own));
      // Not fields of a catalogue event: refused and named, as any unknown key is.
      const cat = record(() => audit.sessionCreated({ 'user.id': 'u-1', constructor: 'c-1', toString: 't', hasOwnProperty: 'h' }));
      for (const k of ['constructor', 'toString', 'hasOwnProperty']) {
        assert.ok((cat['audit.problems'] ?? []).some((p) => p.startsWith(k)), `${k} named in audit.problems: ${JSON.stringify(cat)}`);
      }
    });

    it("audit.event('constructor') (a valid name that is also an Object.prototype member) writes its record", () => {
      const r = record(() => audit.event('constructor', { 'user.id': 'u-1' }));
      assert.equal(r['event.name'], 'constructor');
      assert.equal(r['user.id'], 'u-1');
    });

    it('a context that is not a plain object (boxed string, Date, Set) is refused, never written as a string or an array', () => {
      for (const context of [new String('s'), new Date(0), new Set(['a'])]) {
        const r = record(() => audit.sessionLogout({ 'user.id': 'u-1', context }));
        assert.ok(validate(r), `${Object.prototype.toString.call(context)}: ${JSON.stringify(validate.errors)}\n${JSON.stringify(r)}`);
      }
    });

    it('an array with holes is not an array of strings: refused, never written with nulls', () => {
      const holey = [];
      holey[2] = 'admin'; // [ <2 empty items>, 'admin' ]: every() skips the holes
      const r1 = record(() => audit.authzChange({ 'user.id': 'u-1', 'user.target.id': 'p-1', 'authz.from': holey, 'authz.to': ['admin'] }));
      assert.ok(validate(r1), `${JSON.stringify(validate.errors)}\n${JSON.stringify(r1)}`);
      const r2 = record(() => audit.event('list_exported', { 'list.names': holey }));
      assert.ok(validate(r2), `${JSON.stringify(validate.errors)}\n${JSON.stringify(r2)}`);
    });

    it('time never goes backwards from one record to the next (5000 calls)', () => {
      const { buf } = appended(() => { for (let i = 0; i < 5000; i++) audit.event('tick', { 'tick.n': i }); });
      const times = buf.toString('utf8').trim().split('\n').map((l) => JSON.parse(l).time);
      const back = [];
      for (let i = 1; i < times.length; i++) if (times[i] < times[i - 1]) back.push(`${times[i - 1]} -> ${times[i]}`);
      assert.deepEqual(back.slice(0, 5), [], `${back.length} of ${times.length} records are earlier than the one before`);
    });
  });
});
