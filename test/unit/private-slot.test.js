'use strict';
// A private slot (lib/private-slot.ts) keeps a value on another's object where nothing the
// application can do to that object sees it, copies it or trips over it.
const assert = require('node:assert/strict');
const { privateSlot } = require('../../dist/lib/private-slot.js');

describe('private slot', () => {
  it('is found on the object it was set on, and nowhere else', () => {
    const slot = privateSlot();
    const o = { a: 1 };
    assert.equal(slot.get(o), undefined);
    slot.set(o, 'v');
    assert.equal(slot.get(o), 'v');
    slot.set(o, 'w');
    assert.equal(slot.get(o), 'w', 'set again: replaced');
    assert.equal(slot.get({ ...o }), undefined, 'spread does not copy it');
    assert.equal(slot.get(Object.assign({}, o)), undefined);
    assert.equal(slot.get(structuredClone(o)), undefined);
    assert.equal(slot.get(Object.create(o)), undefined, 'nor does a prototype lend it');
    assert.equal(privateSlot().get(o), undefined, 'each slot is its own');
  });

  it('is invisible to reflection and serialisation', () => {
    const slot = privateSlot();
    const o = { host: 'x' };
    slot.set(o, { secret: 1 });
    assert.deepEqual(Reflect.ownKeys(o), ['host']);
    assert.deepEqual(Object.getOwnPropertySymbols(o), []);
    assert.equal(JSON.stringify(o), '{"host":"x"}');
    const keys = [];
    for (const k in o) keys.push(k);
    assert.deepEqual(keys, ['host']);
  });

  it('runs no Proxy trap, so a hostile object cannot throw through it', () => {
    const slot = privateSlot();
    const trap = () => { throw new Error('trap'); };
    const p = new Proxy({}, { get: trap, has: trap, set: trap, defineProperty: trap, getOwnPropertyDescriptor: trap, ownKeys: trap });
    assert.equal(slot.get(p), undefined);
    slot.set(p, 1);
    assert.equal(slot.get(p), 1);
    const { proxy, revoke } = Proxy.revocable({}, {});
    revoke();
    assert.equal(slot.get(proxy), undefined);
  });
});
