'use strict';
// RFC 8785 (JSON Canonicalization Scheme) as the hash chain uses it: lib/audit/chain.ts.
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fc = require('fast-check');
const { canonicalize, recordHash } = require('../../dist/lib/audit/chain.js');

/** The scheme written out as plainly as possible: the reference the fast version must equal. */
function reference(v) {
  if (v === null || typeof v !== 'object') {
    if (typeof v === 'number' && !Number.isFinite(v)) throw new TypeError('non-finite');
    return JSON.stringify(v) ?? 'null';
  }
  if (Array.isArray(v)) return `[${v.map(reference).join(',')}]`;
  const parts = [];
  for (const k of Object.keys(v).sort()) if (v[k] !== undefined) parts.push(`${JSON.stringify(k)}:${reference(v[k])}`);
  return `{${parts.join(',')}}`;
}

describe('canonicalize (RFC 8785)', () => {
  it('RFC 8785 §3.2.2: numbers in ECMAScript form, strings minimally escaped, keys sorted', () => {
    const input = '{"numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001], '
      + '"string": "\\u20ac$\\u000F\\u000aA\'\\u0042\\u0022\\u005c\\\\\\"\\/", "literals": [null, true, false]}';
    assert.equal(canonicalize(JSON.parse(input)),
      '{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],"string":"€$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}');
  });

  it('RFC 8785 §3.2.3: keys sorted by UTF-16 code units, whatever order they came in', () => {
    const input = '{"\\u20ac":"Euro Sign","\\r":"Carriage Return","\\ufb33":"Hebrew Letter Dalet With Dagesh","1":"One",'
      + '"\\ud83d\\ude00":"Emoji: Grinning Face","\\u0080":"Control","\\u00f6":"Latin Small Letter O With Diaeresis"}';
    // (parsing the output back would put the index key "1" first again: compare positions in the text)
    const out = canonicalize(JSON.parse(input));
    const order = ['\r', '1', '\u0080', '\u00f6', '\u20ac', '\ud83d\ude00', '\ufb33'].map((k) => out.indexOf(JSON.stringify(k)));
    assert.ok(order.every((i) => i > 0), String(order));
    assert.deepEqual([...order].sort((a, b) => a - b), order);
  });

  it('index-like keys ("10" before "9"), __proto__, empty objects and nested arrays', () => {
    const v = JSON.parse('{"9":1,"10":2,"b":{"__proto__":{"y":[1,{"z":{},"a":[]}]},"a":null},"a":"x"}');
    assert.equal(canonicalize(v), '{"10":2,"9":1,"a":"x","b":{"__proto__":{"y":[1,{"a":[],"z":{}}]},"a":null}}');
  });

  it('refuses non-finite numbers; drops undefined members like JSON does', () => {
    assert.throws(() => canonicalize({ a: Number.NaN }), /non-finite/);
    assert.throws(() => canonicalize([Infinity]), /non-finite/);
    assert.equal(canonicalize({ a: undefined, b: 1 }), '{"b":1}');
  });

  it('equals the plain reference for any JSON value (the same object shapes seen again and again)', () => {
    const key = fc.oneof(fc.constantFrom('a', 'b', 'time', '__proto__', '0', '1', '10', '9', '', 'é', '\u2028', '\ud83d\ude00'), fc.string());
    const json = fc.letrec((tie) => ({
      value: fc.oneof({ depthSize: 'small' }, fc.constant(null), fc.boolean(), fc.double({ noNaN: true, noDefaultInfinity: true }),
        fc.integer(), fc.string({ unit: 'binary' }), fc.array(tie('value'), { maxLength: 4 }), tie('object')),
      object: fc.dictionary(key, tie('value'), { maxKeys: 6 }),
    })).value;
    fc.assert(fc.property(json, (v) => {
      const parsed = JSON.parse(JSON.stringify(v) ?? 'null');
      assert.equal(canonicalize(parsed), reference(parsed));
      assert.equal(canonicalize(parsed), canonicalize(parsed));
    }), { numRuns: 3000 });
  });

  it('stays right past its cache of key orders (input crafted with endless distinct keys)', () => {
    for (let i = 0; i < 30_000; i++) {
      const v = JSON.parse(`{"k${i}":1,"a${i % 7}":[{"z${i}":true,"y":2}]}`);
      if (i % 1000 === 0 || i > 29_990) assert.equal(canonicalize(v), reference(v));
    }
  });

  it('recordHash is SHA-256 (or HMAC-SHA256 with a key) of the canonical form', () => {
    const r = JSON.parse('{"b":1,"a":"é"}');
    assert.equal(recordHash(r, undefined), crypto.createHash('sha256').update('{"a":"é","b":1}').digest('hex'));
    const key = Buffer.from('k3y');
    assert.equal(recordHash(r, key), crypto.createHmac('sha256', key).update('{"a":"é","b":1}').digest('hex'));
  });
});
