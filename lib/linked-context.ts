import type { Context } from '@opentelemetry/api';

/**
 * A Context whose `setValue` adds one small node instead of copying a Map.
 *
 * The API's own context copies its whole Map of values on every `setValue`; a request's context
 * is made by three or four of them in a row (the caller's trace context and the request's own
 * (propagator), the server span, the RPC metadata), each copying the last: ≈ 1.5 KB of garbage
 * per request on the hello server. Here each value is a node pointing at its parent; a lookup
 * walks the few nodes of a request's context. Deleting a key adds a node that hides it.
 */

const DELETED: unique symbol = Symbol('auditrace.context.deleted');

class LinkedContext implements Context {
  constructor(
    private readonly parent: LinkedContext | undefined,
    private readonly key: symbol | undefined,
    private readonly value: unknown,
  ) {}

  getValue(key: symbol): unknown {
    // eslint-disable-next-line @typescript-eslint/no-this-alias
    let node: LinkedContext | undefined = this;
    while (node !== undefined) {
      if (node.key === key) return node.value === DELETED ? undefined : node.value;
      node = node.parent;
    }
    return undefined;
  }

  setValue(key: symbol, value: unknown): Context {
    return new LinkedContext(this, key, value);
  }

  deleteValue(key: symbol): Context {
    return new LinkedContext(this, key, DELETED);
  }
}

/** The empty context, as `ROOT_CONTEXT`: its descendants are linked nodes. */
export const LINKED_ROOT: Context = new LinkedContext(undefined, undefined, undefined);
