'use strict';
// The context manager's cheaper emitter binding (lib/context-manager.ts): for streams (every
// request, response and socket) it must behave as upstream's per-emitter patching does, which
// is the reference here.
const assert = require('node:assert/strict');
const { EventEmitter } = require('node:events');
const { PassThrough } = require('node:stream');
const fc = require('fast-check');
const { ROOT_CONTEXT, createContextKey } = require('@opentelemetry/api');
const { AsyncLocalStorageContextManager } = require('@opentelemetry/context-async-hooks');
const { EmitterContextManager } = require('../../dist/lib/context-manager.js');

const KEY = createContextKey('test');
const ctx = (name) => ROOT_CONTEXT.setValue(KEY, name);
const nameIn = (m) => m.active().getValue(KEY) ?? 'root';

const ADD = ['on', 'addListener', 'once', 'prependListener', 'prependOnceListener'];

describe('context manager: binding a stream\'s listeners to a context', () => {
  const m = new EmitterContextManager().enable();
  after(() => m.disable());

  for (const method of ADD) {
    it(`a listener added with ${method}() after the binding runs in the bound context, wherever the event is emitted, with the emitter as this and the event's arguments`, () => {
      const s = new PassThrough();
      m.bind(ctx('request'), s);
      const seen = [];
      s[method]('x', function (a, b) { seen.push([nameIn(m), this === s, a, b]); return 'ignored'; });
      m.with(ctx('elsewhere'), () => s.emit('x', 1, 2));
      s.emit('x', 3);
      const all = [['request', true, 1, 2], ['request', true, 3, undefined]];
      assert.deepEqual(seen, method.includes('nce') ? all.slice(0, 1) : all);
    });

    it(`removeListener() and off() with the function passed to ${method}() remove it`, () => {
      for (const remove of ['removeListener', 'off']) {
        const s = new PassThrough();
        m.bind(ctx('request'), s);
        let calls = 0;
        const fn = () => calls++;
        s[method]('x', fn);
        assert.equal(s.listenerCount('x'), 1);
        s[remove]('x', fn);
        assert.equal(s.listenerCount('x'), 0, `${method} then ${remove}`);
        s.emit('x');
        assert.equal(calls, 0);
      }
    });
  }

  it('a listener added before the binding is left alone, and an unbound stream\'s listeners are its own functions', () => {
    const s = new PassThrough();
    const seen = [];
    const early = () => seen.push(nameIn(m));
    s.on('x', early);
    assert.equal(s.rawListeners('x')[0], early);
    m.bind(ctx('request'), s);
    m.with(ctx('elsewhere'), () => s.emit('x'));
    assert.deepEqual(seen, ['elsewhere']);
  });

  it('the first binding wins, as upstream', () => {
    const s = new PassThrough();
    m.bind(ctx('first'), s);
    m.bind(ctx('second'), s);
    const seen = [];
    s.on('x', () => seen.push(nameIn(m)));
    s.emit('x');
    assert.deepEqual(seen, ['first']);
  });

  it('removeAllListeners(event) and removeAllListeners() forget the wrapped listeners; adding again works', () => {
    const s = new PassThrough();
    m.bind(ctx('request'), s);
    const fn = () => {};
    s.on('x', fn);
    s.on('y', fn);
    s.removeAllListeners('x');
    assert.equal(s.listenerCount('x'), 0);
    assert.equal(s.listenerCount('y'), 1);
    s.removeListener('y', fn);
    assert.equal(s.listenerCount('y'), 0);
    s.on('x', fn);
    s.removeAllListeners();
    assert.equal(s.listenerCount('x'), 0);
    s.on('x', fn);
    s.removeListener('x', fn);
    assert.equal(s.listenerCount('x'), 0);
  });

  it('event names are property keys, as EventEmitter and upstream key them (1 and \'1\' are one event, NaN is \'NaN\', symbols by identity), before and after a second listener', () => {
    for (const [added, removed] of [[NaN, 'NaN'], [1, '1'], ['1', 1], [-0, '0'], [undefined, 'undefined'], ['x', 'x']]) {
      const s = new PassThrough();
      m.bind(ctx('request'), s);
      const seen = [];
      const fn = () => seen.push(nameIn(m));
      const other = () => {};
      s.on(added, fn); // the only pair so far
      m.with(ctx('elsewhere'), () => s.emit(removed));
      s.removeListener(removed, fn);
      assert.equal(s.listenerCount(added), 0, String(added));
      s.on(added, fn);
      s.on('z', other); // a second pair
      s.removeListener(removed, fn);
      assert.equal(s.listenerCount(added), 0, String(added));
      assert.equal(s.listenerCount('z'), 1);
      s.off('z', other);
      assert.equal(s.listenerCount('z'), 0);
      assert.deepEqual(seen, ['request']);
    }
    const s = new PassThrough();
    m.bind(ctx('request'), s);
    const a = Symbol('e');
    s.on(a, () => {});
    s.removeAllListeners(Symbol('e'));
    assert.equal(s.listenerCount(a), 1, 'another symbol of the same description is another event');
  });

  it('an event name whose conversion throws reaches Node\'s own method, which throws as without auditrace', () => {
    const s = new PassThrough();
    m.bind(ctx('request'), s);
    const hostile = { toString() { throw new Error('no name'); } };
    const plain = new PassThrough();
    for (const call of [(e) => e.on(hostile, () => {}), (e) => e.removeListener(hostile, () => {}), (e) => e.removeAllListeners(hostile)]) {
      let ours; let theirs;
      try { call(s); } catch (err) { ours = err.message; }
      try { call(plain); } catch (err) { theirs = err.message; }
      assert.equal(ours, theirs);
    }
  });

  it('the binding is invisible to the application: no own enumerable key, no own method', () => {
    const s = new PassThrough();
    const before = Object.keys(s);
    m.bind(ctx('request'), s);
    assert.deepEqual(Object.keys(s), before);
    for (const k of [...ADD, 'removeListener', 'off', 'removeAllListeners']) assert.ok(!Object.hasOwn(s, k), k);
    assert.deepEqual(Object.getOwnPropertySymbols({ ...s }).map(String).filter((x) => x.includes('auditrace')), []);
  });

  it('an emitter behind a Proxy that throws on unknown keys still adds and removes listeners (every emitter passes the patched methods)', () => {
    m.bind(ctx('request'), new PassThrough()); // the prototype is patched
    const strict = new Proxy(new EventEmitter(), {
      get(target, key) {
        if (typeof key === 'symbol' && !(key in target)) throw new Error(`no ${String(key)}`);
        return Reflect.get(target, key);
      },
    });
    let calls = 0;
    const fn = () => calls++;
    strict.on('x', fn);
    strict.emit('x');
    strict.removeListener('x', fn);
    strict.emit('x');
    strict.removeAllListeners();
    assert.equal(calls, 1);
    assert.equal(strict.listenerCount('x'), 0);
  });

  it('an emitter that is not a stream is bound the upstream way', () => {
    const e = new EventEmitter();
    m.bind(ctx('request'), e);
    const seen = [];
    e.on('x', () => seen.push(nameIn(m)));
    m.with(ctx('elsewhere'), () => e.emit('x'));
    assert.deepEqual(seen, ['request']);
    assert.ok(Object.hasOwn(e, 'on'), 'per-instance methods, as upstream');
    assert.equal(new EventEmitter().on, EventEmitter.prototype.on);
  });

  it('functions are bound as upstream binds them (context, this, arguments, result, length)', () => {
    const fn = function (a, b) { return [nameIn(m), this, a, b]; };
    const bound = m.bind(ctx('request'), fn);
    assert.equal(bound.length, 2);
    const self = {};
    assert.deepEqual(m.with(ctx('elsewhere'), () => bound.call(self, 1, 2)), ['request', self, 1, 2]);
  });

  it('where EventEmitter.prototype\'s methods cannot be replaced, streams are bound the upstream way and the prototype is left as it was', () => {
    const probe = (manager) => `
      const { EventEmitter } = require('node:events');
      const { PassThrough } = require('node:stream');
      const { ROOT_CONTEXT } = require('@opentelemetry/api');
      const before = Object.fromEntries(['addListener', 'on', 'once', 'removeListener'].map((k) => [k, EventEmitter.prototype[k]]));
      Object.defineProperty(EventEmitter.prototype, 'once', { writable: false });
      const m = new (${manager})().enable();
      let outcome;
      try { m.bind(ROOT_CONTEXT, new PassThrough()); outcome = 'bound'; } catch (err) { outcome = err.constructor.name; }
      const untouched = Object.entries(before).every(([k, f]) => EventEmitter.prototype[k] === f);
      console.log(JSON.stringify({ outcome, untouched }));`;
    const run = (manager) => JSON.parse(require('node:child_process').execFileSync(process.execPath, ['-e', probe(manager)], { cwd: require('node:path').join(__dirname, '..', '..'), encoding: 'utf8' }));
    const ours = run("require('./dist/lib/context-manager.js').EmitterContextManager");
    const upstream = run("require('@opentelemetry/context-async-hooks').AsyncLocalStorageContextManager");
    assert.deepEqual(ours, upstream);
    assert.equal(ours.untouched, true);
  });

  it('any sequence of adds, removes and emits on a bound stream behaves as on a stream bound by upstream\'s manager', () => {
    const upstream = new AsyncLocalStorageContextManager().enable();
    const op = fc.oneof(
      fc.record({ kind: fc.constant('add'), method: fc.constantFrom(...ADD), event: fc.constantFrom('a', 'b', 1, '1'), fn: fc.nat(3) }),
      fc.record({ kind: fc.constant('remove'), method: fc.constantFrom('removeListener', 'off'), event: fc.constantFrom('a', 'b', 1, '1'), fn: fc.nat(3) }),
      fc.record({ kind: fc.constant('removeAll'), event: fc.constantFrom('a', 'b', '1', undefined), explicit: fc.boolean() }),
      fc.record({ kind: fc.constant('emit'), event: fc.constantFrom('a', 'b', 1) }),
    );
    try {
      fc.assert(fc.property(fc.array(op, { maxLength: 40 }), (ops) => {
        const run = (manager) => {
          const s = new PassThrough();
          manager.bind(ctx('request'), s);
          const log = [];
          const fns = [0, 1, 2, 3].map((i) => () => log.push(`${i}:${nameIn(manager)}`));
          for (const o of ops) {
            if (o.kind === 'add') s[o.method](o.event, fns[o.fn]);
            else if (o.kind === 'remove') s[o.method](o.event, fns[o.fn]);
            else if (o.kind === 'removeAll') (o.event === undefined && !o.explicit ? s.removeAllListeners() : s.removeAllListeners(o.event));
            else manager.with(ctx('elsewhere'), () => s.emit(o.event));
            log.push(`#a=${s.listenerCount('a')} b=${s.listenerCount('b')} 1=${s.listenerCount('1')}`);
          }
          return log;
        };
        assert.deepEqual(run(m), run(upstream));
      }), { numRuns: 300 });
    } finally {
      upstream.disable();
    }
  });
});
