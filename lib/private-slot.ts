/**
 * A value kept on someone else's object (a request's headers, a response, a stream) where no
 * reflection can see it: a private class field stamped onto the object by a base constructor
 * that returns it. Spread, `Object.assign`, `Object.keys`, for…in, JSON, structuredClone and
 * `Reflect.ownKeys` do not see it, a Proxy's traps are not called for it, and V8 stores and finds
 * it like an ordinary property (≈ 8 ns in a loop), where the `Object.defineProperty` of a
 * non-enumerable symbol went through the runtime each time (≈ 250 ns; four per request).
 *
 * Unlike a property, a private field is not reached through a Proxy of the object nor through an
 * object that has it as prototype: a response whose `end()` is called through a Proxy of it gets
 * its access record when it closes rather than as it ends (no framework known to us does that).
 */
export interface PrivateSlot<T> {
  get(o: object): T | undefined;
  /** Throws when the engine refuses a new private field (an object that cannot be extended, in engines that say so). */
  set(o: object, value: T): void;
}

class Carrier {
  constructor(o: object) {
    return o;
  }
}

/** A new slot: each has its own private name. */
export function privateSlot<T>(): PrivateSlot<T> {
  class Slot extends Carrier {
    #value: T;

    constructor(o: object, value: T) {
      super(o);
      this.#value = value;
    }

    static get(o: object): T | undefined {
      return #value in o ? (o as Slot).#value : undefined;
    }

    static set(o: object, value: T): void {
      if (#value in o) (o as Slot).#value = value;
      else new Slot(o, value); // eslint-disable-line no-new
    }
  }
  return { get: (o) => Slot.get(o), set: (o, v) => Slot.set(o, v) };
}
