import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import type { Context } from '@opentelemetry/api';
import { EventEmitter } from 'node:events';
import { Stream } from 'node:stream';
import { privateSlot } from './private-slot';

/**
 * The context manager, with a cheaper way to bind an event emitter's listeners to a context.
 *
 * instrumentation-http binds every request and response (`context.bind(ctx, req)`), so that a
 * handler's `req.on('data')` runs in the request's context. Upstream's manager does it by giving
 * each emitter eight own methods (eight closures, a listener map, and a new hidden class for
 * every request and response, which Node's own HTTP code then meets in many shapes). Measured on
 * the hello server at saturation: skipping the binding altogether saved ≈ 16 µs of CPU per
 * request (109 → 93); this binding saved ≈ 13 (93.2 → 79.8, bench/notes.md "http-hello").
 *
 * Here a stream (every request, response and socket) gets one non-enumerable property, its
 * binding, and `EventEmitter.prototype`'s listener methods, patched once, wrap what is added to a
 * bound stream as upstream's per-emitter methods do: a listener added after the binding runs in
 * the bound context, `removeListener`/`off` find it by the function the caller passed,
 * `removeAllListeners` forgets it, the first binding wins, event names are property keys (a
 * property test holds the two to the same behaviour; the wrapper's `length` differs, see
 * wrapListener, and one removed listener per stream is kept longer, see remember). Node's streams add and
 * remove listeners through those prototype methods. Any other emitter is bound the upstream way,
 * since its class may keep listeners its own way.
 */
/** A bound stream's binding (lib/private-slot.ts: not visible on the stream). */
const bindings = privateSlot<Binding>();

interface Binding {
  manager: EmitterContextManager;
  context: Context;
  /**
   * The first (event, listener) added, and what was registered for it. A request or response
   * gets one listener after its binding (Node's `clearIncoming` on the request's 'end'), and a
   * Map with a WeakMap per stream for it was ≈ 0.4 µs per request (bench/notes.md, http-express).
   * The second distinct pair moves it into `listeners`: the slot is used only while that is unset.
   */
  event: string | symbol | undefined;
  listener: object | undefined;
  wrapped: Listener | undefined;
  /** Per event: the listener the caller passed → the one registered. */
  listeners: Map<string | symbol, WeakMap<object, Listener>> | undefined;
}

type Listener = (...a: unknown[]) => unknown;
type Method = (this: unknown, ...a: unknown[]) => unknown;

const ADD = ['addListener', 'on', 'once', 'prependListener', 'prependOnceListener'] as const;
const REMOVE = ['removeListener', 'off'] as const;

function bindingOf(target: unknown): Binding | undefined {
  // No Proxy trap runs for a private field: a hostile emitter cannot throw from here.
  return target !== null && typeof target === 'object' ? bindings.get(target) : undefined;
}

// While an original add method runs for a wrapped listener: `once` registers through `on`, whose
// listener must not be wrapped a second time (removeListener finds a `once` listener through
// Node's own wrapper of it).
let adding = false;

/**
 * Runs `listener` in the bound context with the emitter's `this` and arguments, as upstream's
 * bound function does, but without redefining its `length` (EventEmitter never reads a
 * listener's; the redefinition and a closure inside a closure were half the binding's cost, 3.3 →
 * 1.7 µs for a stream with three listeners in a loop) and without a `bind` per call.
 */
function wrapListener(b: Binding, listener: Listener): Listener {
  const manager = b.manager as unknown as { with(c: Context, f: typeof Reflect.apply, self: undefined, ...a: unknown[]): unknown };
  const context = b.context;
  return function listenerInContext(this: unknown, ...args: unknown[]): unknown {
    return manager.with(context, Reflect.apply, undefined, listener, this, args);
  };
}

/**
 * An event name as EventEmitter and upstream's manager key it: a property key (`1` and `'1'` are
 * one event). Undefined when its conversion throws: the caller then leaves the call to Node's
 * own method, which converts it too (and throws as it would have).
 */
function keyOf(event: unknown): string | symbol | undefined {
  if (typeof event === 'string' || typeof event === 'symbol') return event;
  try {
    return String(event);
  } catch {
    return undefined;
  }
}

/**
 * Remembers what was registered for (event, listener); a later add of the same pair replaces it,
 * as a Map would. Like upstream's WeakMap entry, the pair stays after the listener is removed (a
 * second removal must not take a copy added before the binding); unlike it, the one pair kept
 * inline holds its listener until the stream goes or `removeAllListeners` forgets it.
 */
function remember(b: Binding, event: string | symbol, listener: object, wrapped: Listener): void {
  if (b.listeners === undefined) {
    if (b.listener === undefined || (b.listener === listener && b.event === event)) {
      b.event = event;
      b.listener = listener;
      b.wrapped = wrapped;
      return;
    }
    b.listeners = new Map([[b.event!, new WeakMap([[b.listener, b.wrapped!]])]]);
    b.event = b.listener = b.wrapped = undefined;
  }
  const map = b.listeners;
  let byListener = map.get(event);
  if (byListener === undefined) map.set(event, byListener = new WeakMap());
  byListener.set(listener, wrapped);
}

/** What was registered for (event, listener) on a bound stream, if anything. */
function registered(b: Binding | undefined, event: unknown, listener: unknown): Listener | undefined {
  if (b === undefined) return undefined;
  const key = keyOf(event);
  if (key === undefined) return undefined;
  if (b.listeners !== undefined) return b.listeners.get(key)?.get(listener as object);
  return b.listener !== undefined && b.listener === listener && b.event === key ? b.wrapped : undefined;
}

function patchAdd(original: Method): Method {
  return function addListener(this: unknown, event: unknown, listener: unknown): unknown {
    const b = adding ? undefined : bindingOf(this);
    const key = b === undefined || typeof listener !== 'function' ? undefined : keyOf(event);
    if (key === undefined) return Reflect.apply(original, this, arguments);
    const wrapped = wrapListener(b!, listener as Listener);
    remember(b!, key, listener as object, wrapped);
    adding = true;
    try {
      return original.call(this, event, wrapped);
    } finally {
      adding = false;
    }
  };
}

function patchRemove(original: Method): Method {
  return function removeListener(this: unknown, event: unknown, listener: unknown): unknown {
    const wrapped = registered(bindingOf(this), event, listener);
    return wrapped === undefined ? Reflect.apply(original, this, arguments) : original.call(this, event, wrapped);
  };
}

function patchRemoveAll(original: Method): Method {
  return function removeAllListeners(this: unknown, event?: unknown): unknown {
    const b = bindingOf(this);
    if (b !== undefined) {
      const all = arguments.length === 0;
      const key = all ? undefined : keyOf(event);
      if (all || (key !== undefined && b.event === key)) b.event = b.listener = b.wrapped = undefined;
      if (all) b.listeners = undefined;
      else if (key !== undefined) b.listeners?.delete(key);
    }
    return Reflect.apply(original, this, arguments);
  };
}

/** Whether EventEmitter.prototype carries our methods: decided at the first stream's binding. */
let patched: boolean | undefined;

/**
 * Patches EventEmitter.prototype once per process. False (and nothing changed) when its methods
 * are not plain functions or cannot be replaced (made non-writable): streams are then bound
 * the upstream way.
 */
function patchPrototype(): boolean {
  if (patched !== undefined) return patched;
  const proto = EventEmitter.prototype as unknown as Record<string, Method>;
  const names = [...ADD, ...REMOVE, 'removeAllListeners'];
  patched = false;
  if (!names.every((n) => typeof proto[n] === 'function')) return false;
  const originals = new Map(names.map((n) => [n, proto[n]!]));
  // `on` and `addListener` (and `off` and `removeListener`) are one function: one wrapper each.
  const done = new Map<Method, Method>();
  const wrap = (name: string, make: (m: Method) => Method): void => {
    const original = originals.get(name)!;
    let w = done.get(original);
    if (w === undefined) done.set(original, w = make(original));
    proto[name] = w;
  };
  try {
    for (const n of ADD) wrap(n, patchAdd);
    for (const n of REMOVE) wrap(n, patchRemove);
    wrap('removeAllListeners', patchRemoveAll);
  } catch {
    for (const [n, original] of originals) {
      try { proto[n] = original; } catch { /* it was never replaced */ }
    }
    return false;
  }
  patched = true;
  return true;
}

export class EmitterContextManager extends AsyncLocalStorageContextManager {
  override bind<T>(context: Context, target: T): T {
    if (target instanceof Stream && patchPrototype()) {
      if (bindingOf(target) !== undefined) return target; // the first binding wins, as upstream
      const binding: Binding = { manager: this, context, event: undefined, listener: undefined, wrapped: undefined, listeners: undefined };
      try {
        bindings.set(target, binding);
        return target;
      } catch {
        // a frozen stream, in an engine that refuses it a private field: bound the upstream way below
        // (which then fails the same way upstream does)
      }
    }
    return super.bind(context, target);
  }
}
