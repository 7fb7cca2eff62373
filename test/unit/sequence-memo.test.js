'use strict';
// lib/sequence-memo.ts: a value per sequence of strings, computed once, within a bound.
const assert = require('node:assert/strict');
const fc = require('fast-check');
const { sequenceMemo } = require('../../dist/lib/sequence-memo.js');

describe('sequence memo', () => {
  it('computes a sequence\'s value once and hands the same value back', () => {
    let made = 0;
    const memo = sequenceMemo(100, (s) => ({ made: ++made, joined: s.join('|') }));
    const a = memo.get(['x', 'y']);
    assert.equal(memo.get(['x', 'y']), a);
    assert.equal(made, 1);
    assert.equal(memo.get([]).joined, '');
    assert.equal(memo.get([]), memo.get([]));
  });

  it('tells apart sequences whose strings join alike', () => {
    const memo = sequenceMemo(100, (s) => s.length);
    assert.equal(memo.get(['a\u0000', 'b']), 2);
    assert.equal(memo.get(['a', '\u0000b']), 2);
    assert.equal(memo.get(['a\u0000b']), 1);
    assert.equal(memo.get(['ab']), 1);
  });

  it('holds at most its bound of nodes and still answers every sequence right past it', () => {
    fc.assert(fc.property(fc.integer({ min: 0, max: 20 }), fc.array(fc.array(fc.constantFrom('a', 'b', 'c', 'd'), { maxLength: 5 }), { maxLength: 60 }), (max, seqs) => {
      const memo = sequenceMemo(max, (s) => s.join('/'));
      for (const s of seqs) {
        assert.equal(memo.get(s), s.join('/'));
        assert.ok(memo.size <= max, `${memo.size} > ${max}`);
      }
    }), { numRuns: 500 });
  });
});
