'use strict';
const assert = require('node:assert/strict');
const {
  defaultLimits, defaultRedactKeys, redactedSubstrings, createRedactor, sanitize, toJsonLine,
} = require('../../dist/lib/audit/serialize.js');

const isRedacted = createRedactor([]);
const FF = ['context'];

/** The invariants every line must keep; returns the parsed record. */
function checkLine(line, maxRecordBytes = defaultLimits.maxRecordBytes) {
  assert.equal(typeof line, 'string');
  assert.ok(line.endsWith('\n'), 'ends with a newline');
  const body = line.slice(0, -1);
  assert.doesNotMatch(body, /[\n\r\u2028\u2029\u0085]/, 'no other raw line terminator');
  assert.doesNotMatch(body, /[\u0000-\u001f\u007f-\u009f]/, 'no raw control character');
  assert.ok(body.isWellFormed(), 'no lone surrogate: the UTF-8 bytes are valid');
  assert.ok(Buffer.byteLength(line) <= maxRecordBytes + 1, `${Buffer.byteLength(line)} bytes > ${maxRecordBytes} + 1`);
  return JSON.parse(body);
}

function ser(record, limits = defaultLimits, freeForm = FF, redactor = isRedacted) {
  const line = toJsonLine(record, limits, redactor, freeForm);
  return { line, rec: checkLine(line, Math.max(128, limits.maxRecordBytes)) };
}

const ctx = (context, limits) => ser({ 'event.name': 'x', context }, limits).rec.context;

describe('serialize', () => {
  describe('exports', () => {
    it('defaultLimits are 4096 / 16384 / 8 / 200', () => {
      assert.deepEqual({ ...defaultLimits }, { maxFieldBytes: 4096, maxRecordBytes: 16384, maxDepth: 8, maxKeys: 200 });
    });

    it('defaultRedactKeys holds the documented names, normalised', () => {
      for (const k of ['password', 'passwd', 'pwd', 'secret', 'token', 'accesstoken', 'refreshtoken', 'idtoken', 'authorization',
        'auth', 'cookie', 'setcookie', 'apikey', 'xapikey', 'sessionid', 'sid', 'ssn', 'socialsecuritynumber', 'cardnumber',
        'creditcard', 'ccnumber', 'cvv', 'cvc', 'pin', 'privatekey', 'clientsecret', 'bearer', 'jwt', 'otp', 'passphrase', 'iban']) {
        assert.ok(defaultRedactKeys.includes(k), k);
      }
      for (const k of defaultRedactKeys) assert.match(k, /^[a-z0-9]+$/);
      assert.deepEqual([...redactedSubstrings].sort(),
        ['apikey', 'authorization', 'cookie', 'passwd', 'password', 'privatekey', 'secret', 'token']);
    });
  });

  describe('createRedactor', () => {
    it('matches case-insensitively, ignoring - _ . and spaces', () => {
      for (const k of ['password', 'PASSWORD', 'Set-Cookie', 'set_cookie', 'setCookie', 'api key', 'X-Api-Key', 'apiKey', 'API_KEY',
        'session_id', 'session.id', 'Session-Id', 'sid', 'Authorization', 'auth', 'credit-card', 'card_number', 'CVV', 'pin',
        'private_key', 'client_secret', 'iban', 'social security number', 'jwt', 'OTP', 'passphrase']) {
        assert.equal(isRedacted(k), true, k);
      }
    });

    it('redacts keys containing password, secret, token, apikey, cookie or authorization', () => {
      for (const k of ['dbPassword', 'csrf_token', 'x-csrf-token', 'githubToken', 'AWS_SECRET_ACCESS_KEY', 'my-api-key-2',
        'cookieJar', 'Proxy-Authorization', 'userPasswordHash', 'db.passwd']) {
        assert.equal(isRedacted(k), true, k);
      }
    });

    it('keeps ordinary keys (whole-key rules do not match inside words)', () => {
      for (const k of ['name', 'user', 'author', 'authn.method', 'pinned', 'spin', 'side', 'description', 'otpEnabledAt',
        'ssnLast4Hint', 'id', 'user.id', 'sessions', 'amount', '']) {
        assert.equal(isRedacted(k), false, k);
      }
    });

    it('adds extra keys, normalised the same way; answers are stable (cached)', () => {
      const r = createRedactor(['Patient-Name', 'date_of_birth', '', 42]);
      for (const k of ['patientName', 'PATIENT_NAME', 'date-of-birth', 'DateOfBirth', 'password']) {
        assert.equal(r(k), true, k);
        assert.equal(r(k), true, `${k} (cached)`);
      }
      assert.equal(r('patient'), false);
      assert.equal(isRedacted('patientName'), false, 'extra keys belong to their redactor only');
    });

    it('stays bounded with many distinct keys', () => {
      const r = createRedactor([]);
      for (let i = 0; i < 30000; i++) assert.equal(r(`key${i}`), false);
      assert.equal(r('password'), true);
    });
  });

  describe('one line', () => {
    it('escapes CR, LF, U+2028, U+2029, U+0085, ESC, DEL and C1 controls, and parses back', () => {
      const hostile = 'a\nb\rc\r\nd\u2028e\u2029f\u0085g\u001b[31mred\u001b[0m\u007fdel\u009bcsi\u0000nul\t';
      const { line, rec } = ser({ msg: hostile, context: { [hostile]: hostile, list: [hostile] } });
      assert.equal(line.indexOf('\n'), line.length - 1);
      for (const esc of ['\\n', '\\r', '\\u2028', '\\u2029', '\\u0085', '\\u001b', '\\u007f', '\\u009b', '\\u0000', '\\t']) {
        assert.ok(line.includes(esc), esc);
      }
      assert.equal(rec.msg, hostile);
      assert.equal(rec.context[hostile], hostile);
      assert.equal(rec.context.list[0], hostile);
    });

    it('escapes bidirectional overrides so a line reads as it displays', () => {
      const { line, rec } = ser({ msg: 'user\u202Eexe.txt\u2066x\u2069' });
      assert.ok(line.includes('\\u202e') && line.includes('\\u2066') && line.includes('\\u2069'));
      assert.equal(rec.msg, 'user\u202Eexe.txt\u2066x\u2069');
    });

    it('cannot be broken out of by JSON fragments', () => {
      const frag = '"}{"audit.id":"forged","x":"';
      const { rec } = ser({ 'audit.id': 'real', msg: frag, context: { [frag]: frag } });
      assert.equal(rec['audit.id'], 'real');
      assert.equal(rec.msg, frag);
      assert.deepEqual(Object.keys(rec), ['audit.id', 'context', 'msg']); // RFC 8785 order
    });

    it('writes lone surrogates as \\u escapes (valid UTF-8) and keeps valid pairs raw', () => {
      const s = 'a\ud800b\udfffc\ud83d';
      const { line, rec } = ser({ msg: s, emoji: '😀', context: { [s]: 1 } });
      assert.ok(line.includes('\\ud800') && line.includes('\\udfff') && line.includes('\\ud83d'));
      assert.ok(line.includes('😀'));
      const bytes = Buffer.from(line, 'utf8');
      assert.equal(new TextDecoder('utf-8', { fatal: true }).decode(bytes), line);
      assert.equal(rec.msg, s);
      assert.equal(rec.context[s], 1);
    });
  });

  describe('values', () => {
    it('circular references become "[Circular]"; shared ones are written in full', () => {
      const shared = { x: 1 };
      const a = { name: 'a', shared, again: shared, list: [shared, shared] };
      a.self = a;
      a.list.push(a.list);
      const m = new Map([['k', null]]);
      m.set('me', m);
      a.m = m;
      const c = ctx(a);
      assert.equal(c.self, '[Circular]');
      assert.deepEqual(c.shared, { x: 1 });
      assert.deepEqual(c.again, { x: 1 });
      assert.deepEqual(c.list, [{ x: 1 }, { x: 1 }, '[Circular]']);
      assert.deepEqual(c.m, { k: null, me: '[Circular]' });
    });

    it('BigInt, Symbol, function, undefined, NaN, Infinity', () => {
      const c = ctx({
        big: 12345678901234567890n, neg: -1n, sym: Symbol('s'), fn: () => 1, cls: class X {}, undef: undefined,
        arr: [undefined, NaN, Infinity, -Infinity, Symbol('t'), function f() {}, 1], nan: NaN, inf: -Infinity, zero: -0,
      });
      assert.deepEqual(c, {
        big: '12345678901234567890', neg: '-1', sym: '[Symbol]', fn: '[Function]', cls: '[Function]',
        arr: [null, null, null, null, '[Symbol]', '[Function]', 1], nan: null, inf: null, zero: 0,
      });
      assert.ok(!('undef' in c));
    });

    it('Date → ISO string, invalid Date → null', () => {
      const c = ctx({ d: new Date(Date.UTC(2024, 1, 29, 12, 0, 0, 5)), bad: new Date('nope') });
      assert.deepEqual(c, { d: '2024-02-29T12:00:00.005Z', bad: null });
    });

    it('Error → { name, message } only: no stack, no other properties', () => {
      const e = new TypeError('bad input');
      e.code = 'E_X';
      e.config = { headers: { authorization: 'Bearer secret' } };
      class MyError extends Error { constructor(m) { super(m); this.name = 'MyError'; } }
      const c = ctx({ e, mine: new MyError('boom'), agg: new AggregateError([new Error('inner')], 'many') });
      assert.deepEqual(c, {
        e: { name: 'TypeError', message: 'bad input' },
        mine: { name: 'MyError', message: 'boom' },
        agg: { name: 'AggregateError', message: 'many' },
      });
    });

    it('Buffer, TypedArray, DataView, ArrayBuffer → "[Binary N bytes]", never the content', () => {
      const { line, rec } = ser({
        context: {
          buf: Buffer.from('secret-content'), u16: new Uint16Array(4), f64: new Float64Array(2),
          dv: new DataView(new ArrayBuffer(3)), ab: new ArrayBuffer(5), sab: new SharedArrayBuffer(6),
        },
      });
      assert.deepEqual(rec.context, {
        buf: '[Binary 14 bytes]', u16: '[Binary 8 bytes]', f64: '[Binary 16 bytes]', dv: '[Binary 3 bytes]',
        ab: '[Binary 5 bytes]', sab: '[Binary 6 bytes]',
      });
      assert.ok(!line.includes('secret-content'));
    });

    it('Map → object of its string-keyed entries; Set → array', () => {
      const c = ctx({
        m: new Map([['a', 1], [2, 'two'], [{}, 'obj'], ['b', new Set(['x', 'y'])], ['token', 'hidden']]),
        s: new Set([1, 'a', { k: 'v' }]),
      });
      assert.deepEqual(c, { m: { a: 1, b: ['x', 'y'], token: '[REDACTED]' }, s: [1, 'a', { k: 'v' }] });
    });

    it('boxed primitives are unwrapped; null-prototype objects and class instances give own enumerable properties', () => {
      const np = Object.create(null);
      np.k = 'v';
      class Point { constructor() { this.x = 1; this.y = 2; } get sum() { return 3; } }
      const hidden = {};
      Object.defineProperty(hidden, 'invisible', { value: 1, enumerable: false });
      hidden.visible = 2;
      const c = ctx({
        boxed: [new String('s'), new Number(4), new Boolean(false), Object(5n), Object(Symbol('q'))],
        np, p: new Point(), hidden, re: /x/g, url: new URL('https://example.com/?q=1'),
      });
      assert.deepEqual(c, {
        boxed: ['s', 4, false, '5', '[Symbol]'], np: { k: 'v' }, p: { x: 1, y: 2 }, hidden: { visible: 2 }, re: {}, url: {},
      });
    });

    it('never calls toJSON (it runs application code)', () => {
      let calls = 0;
      const o = { v: 1, toJSON() { calls++; throw new Error('toJSON must not run'); } };
      class Model { constructor() { this.id = 7; } toJSON() { calls++; return { leaked: true }; } }
      const { rec } = ser({ context: { o, m: new Model(), d: new Date(0) } });
      assert.equal(calls, 0);
      assert.deepEqual(rec.context, { o: { v: 1, toJSON: '[Function]' }, m: { id: 7 }, d: '1970-01-01T00:00:00.000Z' });
    });

    it('keeps a key named __proto__ as data', () => {
      const o = JSON.parse('{"__proto__": {"polluted": true}, "a": 1}');
      const c = ctx(o);
      assert.deepEqual(Object.keys(c), ['__proto__', 'a']);
      assert.equal(Object.getOwnPropertyDescriptor(c, '__proto__').value.polluted, true);
      assert.equal({}.polluted, undefined);
    });
  });

  describe('hostile objects', () => {
    it('a throwing getter makes that value "[Unreadable]" and keeps the rest', () => {
      const o = { before: 1, get boom() { throw new Error('no'); }, after: 2 };
      const arr = [1, 2];
      Object.defineProperty(arr, 1, { get() { throw new Error('no'); }, enumerable: true });
      assert.deepEqual(ctx({ o, arr }), { o: { before: 1, boom: '[Unreadable]', after: 2 }, arr: [1, '[Unreadable]'] });
    });

    it('a Proxy that throws on ownKeys, get, getPrototypeOf, or is revoked → "[Unreadable]"', () => {
      const thrower = () => { throw new Error('trap'); };
      const { proxy: revoked, revoke } = Proxy.revocable({}, {});
      revoke();
      const c = ctx({
        ok: 1,
        keys: new Proxy({ a: 1 }, { ownKeys: thrower }),
        get: new Proxy({ a: 1, b: 2 }, { get: (t, k) => (k === 'b' ? thrower() : t[k]) }),
        proto: new Proxy({ a: 1 }, { getPrototypeOf: thrower }),
        arrLen: new Proxy([1, 2], { get: (t, k) => (k === 'length' ? thrower() : t[k]) }),
        revoked,
        after: 2,
      });
      assert.deepEqual(c, {
        ok: 1, keys: '[Unreadable]', get: { a: 1, b: '[Unreadable]' }, proto: '[Unreadable]', arrLen: '[Unreadable]',
        revoked: '[Unreadable]', after: 2,
      });
    });

    it('a record that is a hostile Proxy, or not an object, still gives one valid line', () => {
      const thrower = () => { throw new Error('trap'); };
      for (const record of [new Proxy({}, { ownKeys: thrower }), null, undefined, 'str', 42, [1, 2]]) {
        const { rec } = ser(record);
        assert.equal(typeof rec, 'object');
      }
    });

    it('a throwing or non-function redactor fails closed (nested values redacted)', () => {
      const line = toJsonLine({ a: 'top', context: { k: 'v' } }, defaultLimits, () => { throw new Error('x'); }, FF);
      assert.deepEqual(checkLine(line), { a: 'top', context: { k: '[REDACTED]' } });
      const line2 = toJsonLine({ a: 'top', context: { k: 'v' } }, defaultLimits, undefined, FF);
      assert.deepEqual(checkLine(line2), { a: 'top', context: { k: '[REDACTED]' } });
    });

    it('does not read values under redacted keys (their getters do not run)', () => {
      let reads = 0;
      const o = { get password() { reads++; return 'p'; }, visible: 1 };
      assert.deepEqual(ctx(o), { password: '[REDACTED]', visible: 1 });
      assert.equal(reads, 0);
    });

    it('garbage limits fall back to defaults or safe minimums', () => {
      for (const limits of [undefined, null, {}, { maxFieldBytes: -1, maxRecordBytes: 1, maxDepth: -5, maxKeys: NaN },
        { maxFieldBytes: Infinity, maxRecordBytes: Infinity, maxDepth: Infinity, maxKeys: Infinity }, { maxFieldBytes: '10' }]) {
        const line = toJsonLine({ a: 'x'.repeat(100000), context: { deep: { er: [1, 2, 3] } } }, limits, isRedacted, FF);
        const max = limits && limits.maxRecordBytes === 1 ? 128 : limits && limits.maxRecordBytes === Infinity ? 2 ** 30 : 16384;
        checkLine(line, max);
      }
    });
  });

  describe('limits', () => {
    const small = { ...defaultLimits, maxFieldBytes: 100 };

    it('cuts a long string at maxFieldBytes with "…[truncated N bytes]" and sets audit.truncated', () => {
      const { rec } = ser({ msg: 'a'.repeat(500), context: { note: 'b'.repeat(50) } }, small);
      assert.match(rec.msg, /^a+…\[truncated 500 bytes\]$/);
      assert.ok(Buffer.byteLength(rec.msg) <= 100);
      assert.equal(rec.context.note, 'b'.repeat(50));
      assert.equal(rec['audit.truncated'], true);
    });

    it('cuts multi-byte text at a code-point boundary', () => {
      for (const ch of ['é', '€', '😀']) {
        const s = ch.repeat(200);
        const v = ser({ msg: s }, small).rec.msg;
        const [, kept] = v.match(/^(.*)…\[truncated (\d+) bytes\]$/su);
        assert.ok(kept.isWellFormed(), ch);
        assert.equal(kept, ch.repeat([...kept].length), ch);
        assert.ok(Buffer.byteLength(v) <= 100 && Buffer.byteLength(v) > 80, `${ch}: ${Buffer.byteLength(v)}`);
        assert.ok(v.endsWith(`[truncated ${Buffer.byteLength(s)} bytes]`));
      }
    });

    it('does not set audit.truncated when nothing was cut', () => {
      const { rec } = ser({ msg: 'short', context: { a: [1, 2, { b: 'c' }] } });
      assert.ok(!('audit.truncated' in rec));
    });

    it('replaces a record-supplied audit.truncated instead of duplicating it', () => {
      const { line, rec } = ser({ 'audit.truncated': false, msg: 'a'.repeat(500) }, small);
      assert.equal(line.match(/"audit\.truncated"/g).length, 1);
      assert.equal(rec['audit.truncated'], true);
      assert.equal(ser({ 'audit.truncated': false, msg: 'a' }).rec['audit.truncated'], false);
    });

    it('truncates keys over 256 bytes, and truncated keys do not collide', () => {
      const k1 = 'k'.repeat(300) + '1';
      const k2 = 'k'.repeat(300) + '2';
      const c = ctx({ [k1]: 1, [k2]: 2, short: 3 });
      const keys = Object.keys(c);
      assert.equal(keys.length, 3);
      for (const k of keys.slice(0, 2)) assert.ok(Buffer.byteLength(k) <= 260 && k.includes('[truncated 301 bytes]'), k);
      assert.deepEqual(Object.values(c), [1, 2, 3]);
      const top = ser({ [k1]: 'a', [k2]: 'b' }).rec;
      assert.equal(Object.keys(top).length, 3); // two fields + audit.truncated
    });

    it('replaces objects deeper than maxDepth with "[MaxDepth]"', () => {
      let deep = { leaf: true };
      for (let i = 0; i < 12; i++) deep = { d: deep };
      let c = ctx(deep);
      let levels = 0;
      while (typeof c === 'object') { c = c.d; levels++; }
      assert.equal(levels, 8, 'context is depth 1; depth 8 is the last object kept');
      assert.equal(c, '[MaxDepth]');
      assert.deepEqual(ctx({ a: [[1]] }, { ...defaultLimits, maxDepth: 2 }), { a: ['[MaxDepth]'] });
      assert.equal(ctx({ a: 1 }, { ...defaultLimits, maxDepth: 0 }), '[MaxDepth]');
    });

    it('keeps the first maxKeys keys/items and counts the rest', () => {
      const limits = { ...defaultLimits, maxKeys: 3 };
      const obj = Object.fromEntries(Array.from({ length: 10 }, (_, i) => [`k${i}`, i]));
      assert.deepEqual(ctx({ obj }, limits).obj, { k0: 0, k1: 1, k2: 2, '…': '[7 more]' });
      assert.deepEqual(ctx({ arr: [1, 2, 3, 4, 5] }, limits).arr, [1, 2, 3, '[2 more]']);
      assert.deepEqual(ctx({ m: new Map([['a', 1], ['b', 2], ['c', 3], ['d', 4]]) }, limits).m, { a: 1, b: 2, c: 3, '…': '[1 more]' });
      assert.deepEqual(ctx({ s: new Set([1, 2, 3, 4, 5, 6]) }, limits).s, [1, 2, 3, '[3 more]']);
      const sparse = [];
      sparse[1e9] = 'far';
      assert.deepEqual(ctx({ sparse }, limits).sparse, [null, null, null, `[${1e9 - 2} more]`]);
      const clash = { '…': 'real', a: 1, b: 2, c: 3 };
      assert.deepEqual(ctx({ clash }, limits).clash, { '…': 'real', a: 1, b: 2, '…~2': '[1 more]' });
    });

    it('default maxKeys is 200', () => {
      const c = ctx({ arr: Array.from({ length: 1000 }, (_, i) => i) });
      assert.equal(c.arr.length, 201);
      assert.equal(c.arr[200], '[800 more]');
    });
  });

  describe('redaction', () => {
    it('redacts deny-listed keys at any depth, through arrays and objects, whatever the value', () => {
      const context = {
        user: { name: 'ann', password: 'p1', prefs: { apiKey: 'k1', theme: 'dark' } },
        requests: [
          { headers: { Authorization: 'Bearer t1', 'set-cookie': ['c1', 'c2'], accept: '*/*' } },
          [{ nested: [{ 'x-api-key': 'k2', session_id: 's1', ok: 1 }] }],
        ],
        token: { whole: { object: 'gone' } },
        secret: 42,
        csrf_token: null,
        dbPassword: ['p2'],
      };
      const { line, rec } = ser({ context });
      assert.deepEqual(rec.context, {
        user: { name: 'ann', password: '[REDACTED]', prefs: { apiKey: '[REDACTED]', theme: 'dark' } },
        requests: [
          { headers: { Authorization: '[REDACTED]', 'set-cookie': '[REDACTED]', accept: '*/*' } },
          [{ nested: [{ 'x-api-key': '[REDACTED]', session_id: '[REDACTED]', ok: 1 }] }],
        ],
        token: '[REDACTED]',
        secret: '[REDACTED]',
        csrf_token: '[REDACTED]',
        dbPassword: '[REDACTED]',
      });
      for (const v of ['p1', 'k1', 't1', 'c1', 'c2', 'k2', 's1', 'gone', '42', 'p2']) assert.ok(!line.includes(v), v);
    });

    it('redacts inside object-valued fields too, but not the record\'s own top-level field names', () => {
      const { rec } = ser({
        'token.type': 'refresh', 'token.hash': 'abc', 'user.id': 'u1', 'session.id': 's-visible',
        'http.headers': { cookie: 'c', host: 'h' },
        context: { 'session.id': 's-hidden' },
      });
      assert.equal(rec['token.type'], 'refresh');
      assert.equal(rec['token.hash'], 'abc');
      assert.equal(rec['session.id'], 's-visible');
      assert.deepEqual(rec['http.headers'], { cookie: '[REDACTED]', host: 'h' });
      assert.deepEqual(rec.context, { 'session.id': '[REDACTED]' });
    });

    it('sanitize redacts the same way', () => {
      assert.deepEqual(sanitize([{ pwd: 'x', a: [{ Cookie: 'y' }] }], defaultLimits, isRedacted),
        [{ pwd: '[REDACTED]', a: [{ Cookie: '[REDACTED]' }] }]);
    });
  });

  describe('record size', () => {
    it('a 10 MB string in any field, key or context is cut; the line stays within maxRecordBytes', () => {
      const big = 'x'.repeat(10 * 1024 * 1024);
      for (const record of [{ msg: big }, { context: { note: big } }, { context: { [big]: 1 } }, { [big]: 1 },
        { context: [big, big, big] }, { a: big, b: big, c: big, d: big, e: big, context: big }]) {
        const { rec } = ser(record);
        assert.equal(rec['audit.truncated'], true);
      }
    });

    it('drops free-form fields first, with a marker', () => {
      const { rec } = ser({ 'audit.id': 'id1', msg: 'm', context: { a: 'x'.repeat(3000), b: 'y'.repeat(3000) } },
        { ...defaultLimits, maxRecordBytes: 4000 });
      assert.deepEqual(rec, {
        'audit.id': 'id1', msg: 'm', context: '[dropped: record over 4000 bytes]', 'audit.truncated': true,
      });
    });

    it('then cuts the longest remaining strings, keeping the original size in the marker', () => {
      const limits = { ...defaultLimits, maxRecordBytes: 3000 };
      const { rec } = ser({ 'audit.id': 'id1', a: 'a'.repeat(2000), b: 'b'.repeat(2500), short: 's'.repeat(100), context: { c: 1 } }, limits);
      assert.equal(rec['audit.id'], 'id1');
      assert.equal(rec.short, 's'.repeat(100));
      assert.match(rec.a, /…\[truncated 2000 bytes\]$/);
      assert.match(rec.b, /…\[truncated 2500 bytes\]$/);
      assert.equal(rec.context, '[dropped: record over 3000 bytes]');
      const big = ser({ a: 'a'.repeat(1e6) }, limits).rec.a;
      assert.match(big, /…\[truncated 1000000 bytes\]$/, 'a second cut keeps the original count');
    });

    it('fits even when the record is made of many small parts', () => {
      const limits = { ...defaultLimits, maxRecordBytes: 1000 };
      const many = Object.fromEntries(Array.from({ length: 3000 }, (_, i) => [`field.${i}`, i]));
      const { rec } = ser(many, limits);
      assert.equal(rec['field.0'], 0);
      assert.equal(rec['audit.truncated'], true);
      const nested = {
        'audit.id': 'id', n: 7, obj: Array.from({ length: 200 }, () => ({ a: 1, b: [1, 2, 3] })),
        'audit.problems': Array.from({ length: 200 }, (_, i) => `problem ${i}`),
        headers: Object.fromEntries(Array.from({ length: 150 }, (_, i) => [`h${i}`, i])),
      };
      const shrunk = ser(nested, limits).rec;
      const marker = '[dropped: record over 1000 bytes]';
      assert.deepEqual(shrunk, {
        'audit.id': 'id', n: 7, obj: [marker], 'audit.problems': [marker], headers: { '…': marker }, 'audit.truncated': true,
      }, 'values too big even once their strings are cut are dropped, keeping their JSON type');
      const minimal = ser({ a: 1, b: 'x'.repeat(5000) }, { ...defaultLimits, maxRecordBytes: 1 }).rec;
      assert.equal(minimal['audit.truncated'], true);
    });

    it('bounds the work on shared-reference graphs that would expand exponentially', () => {
      let node = ['leaf'];
      for (let i = 0; i < 30; i++) node = [node, node, node];
      const t = Date.now();
      const { rec } = ser({ 'audit.id': 'id', context: { node }, other: { node } });
      assert.ok(Date.now() - t < 2000);
      assert.equal(rec['audit.id'], 'id');
      assert.ok(Buffer.byteLength(JSON.stringify(sanitize({ node }, defaultLimits, isRedacted))) < 3 * 16384);
    });
  });

  describe('sanitize', () => {
    it('returns JSON-safe plain values equal to what the line carries', () => {
      const value = { a: [1, 'two', { three: 3n }], d: new Date(0), e: new Error('x'), m: new Map([['k', 'v']]), s: 'é\u2028' };
      const once = sanitize(value, defaultLimits, isRedacted);
      assert.deepEqual(JSON.parse(JSON.stringify(once)), once);
      assert.deepEqual(once, ctx(value));
      assert.deepEqual(once, {
        a: [1, 'two', { three: '3' }], d: '1970-01-01T00:00:00.000Z', e: { name: 'Error', message: 'x' }, m: { k: 'v' }, s: 'é\u2028',
      });
    });

    it('passes primitives through and keeps undefined as undefined', () => {
      assert.equal(sanitize(undefined, defaultLimits, isRedacted), undefined);
      assert.equal(sanitize(null, defaultLimits, isRedacted), null);
      assert.equal(sanitize('s', defaultLimits, isRedacted), 's');
      assert.equal(sanitize(NaN, defaultLimits, isRedacted), null);
      assert.equal(sanitize(5n, defaultLimits, isRedacted), '5');
    });
  });

  describe('speed', () => {
    it('measures records per second (no assertion)', function () {
      this.timeout(30000);
      const record = {
        time: '2026-11-22T05:16:47.123456Z', 'audit.id': '01936f5e-8c2a-7b3d-9e4f-0a1b2c3d4e5f', 'event.name': 'user_login',
        'event.outcome': 'success', severity: 'INFO', 'user.id': 'u-12345', trace_id: '4bf92f3577b34da6a3ce929d0e0e4736',
        span_id: '00f067aa0ba902b7', 'service.name': 'checkout',
        context: { tenant: 'acme', plan: 'pro', attempt: 1, mfa: true, ua: 'Mozilla/5.0' },
      };
      const bytes = Buffer.byteLength(toJsonLine(record, defaultLimits, isRedacted, FF));
      for (let i = 0; i < 20000; i++) toJsonLine(record, defaultLimits, isRedacted, FF); // warm up
      const n = 300000;
      const start = process.hrtime.bigint();
      let total = 0;
      for (let i = 0; i < n; i++) total += toJsonLine(record, defaultLimits, isRedacted, FF).length;
      const s = Number(process.hrtime.bigint() - start) / 1e9;
      assert.ok(total > 0);
      console.log(`      toJsonLine: ${Math.round(n / s).toLocaleString('en')} records/s (${bytes}-byte line, 5-key context)`);
    });
  });
});
