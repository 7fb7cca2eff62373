'use strict';
// The request's context is built of linked nodes (lib/linked-context.ts) rather than the API's
// copied Maps: whatever is set and deleted, it reads as the API's own context would.
const assert = require('node:assert/strict');
const fc = require('fast-check');
const { ROOT_CONTEXT, createContextKey, trace } = require('@opentelemetry/api');
const { LINKED_ROOT } = require('../../dist/lib/linked-context.js');

const KEYS = [createContextKey('a'), createContextKey('b'), createContextKey('a'), Symbol('d')];

describe('linked context: the API\'s context semantics without a Map copy per value', () => {
  it('any sequence of sets and deletes reads the same as ROOT_CONTEXT\'s, at every step and in every ancestor (property)', () => {
    const op = fc.record({ del: fc.boolean(), key: fc.nat(KEYS.length - 1), value: fc.oneof(fc.anything(), fc.constant(undefined)) });
    fc.assert(fc.property(fc.array(op, { maxLength: 60, size: 'max' }), (ops) => {
      const api = [ROOT_CONTEXT];
      const ours = [LINKED_ROOT];
      for (const { del, key, value } of ops) {
        const k = KEYS[key];
        api.push(del ? api.at(-1).deleteValue(k) : api.at(-1).setValue(k, value));
        ours.push(del ? ours.at(-1).deleteValue(k) : ours.at(-1).setValue(k, value));
      }
      // Contexts are immutable: each ancestor still reads as it did.
      for (let i = 0; i < api.length; i++) {
        for (const k of KEYS) assert.equal(ours[i].getValue(k), api[i].getValue(k));
      }
    }), { numRuns: 500 });
  });

  it('a context derived from the last one without end keeps a bounded chain (the values it replaced are not held)', () => {
    let ctx = LINKED_ROOT;
    const key = KEYS[0];
    for (let i = 0; i < 10_000; i++) ctx = ctx.setValue(key, { i });
    ctx = ctx.setValue(KEYS[1], 'b');
    let nodes = 0;
    for (let n = ctx; n !== undefined; n = n.parent) nodes++;
    assert.ok(nodes <= 17, `${nodes} nodes reachable`);
    assert.deepEqual(ctx.getValue(key), { i: 9999 });
    assert.equal(ctx.getValue(KEYS[1]), 'b');
    assert.equal(ctx.getValue(KEYS[3]), undefined);
  });

  it('the API\'s helpers work on it (a span set, read back, deleted)', () => {
    const span = trace.wrapSpanContext({ traceId: 'a'.repeat(32), spanId: 'b'.repeat(16), traceFlags: 1 });
    const withSpan = trace.setSpan(LINKED_ROOT, span);
    assert.equal(trace.getSpan(withSpan), span);
    assert.equal(trace.getSpan(LINKED_ROOT), undefined);
    assert.equal(trace.getSpan(trace.deleteSpan(withSpan)), undefined);
  });
});
