import type { Context } from '@opentelemetry/api';
import type { ReadableSpan, Span, SpanProcessor } from '@opentelemetry/sdk-trace';

type RecordException = (this: unknown, exception: unknown, time?: unknown) => void;

const guarded = new WeakSet<object>();

/**
 * The SDK's `recordException` puts a value it cannot read a type or message from into a template
 * string to warn about it, and so throws for a Symbol, an object without a string form
 * (`Object.create(null)`), a throwing getter or `toString`. What an instrumentation records is what
 * the application threw or passed on (`next(Symbol())` under instrumentation-router; a driver's
 * rejection), and the throw lands in the application's own call (the router's `next`), against the
 * API's promise that it never throws. The span's class is not exported, so its prototype is
 * guarded when the provider starts its first span; a span processor that then does nothing.
 */
export function exceptionGuard(): SpanProcessor {
  let done = false;
  return {
    onStart(span: Span, _parent: Context): void {
      if (done) return;
      done = true;
      try {
        guardRecordException(Object.getPrototypeOf(span) as object | null);
      } catch {
        // a prototype that cannot be changed (frozen): left as the SDK made it
      }
    },
    onEnd(_span: ReadableSpan): void {},
    forceFlush: () => Promise.resolve(),
    shutdown: () => Promise.resolve(),
  };
}

export function guardRecordException(proto: object | null): void {
  if (proto === null || guarded.has(proto)) return;
  const original = (proto as { recordException?: unknown }).recordException;
  if (typeof original !== 'function') return;
  guarded.add(proto);
  const record = original as RecordException;
  Object.defineProperty(proto, 'recordException', {
    configurable: true, writable: true, enumerable: false,
    value: function recordException(this: unknown, exception: unknown, time?: unknown): void {
      try {
        record.call(this, exception, time);
      } catch {
        try {
          record.call(this, describe(exception), time);
        } catch {
          // a span that refuses even a string: nothing of the application's depends on it
        }
      }
    },
  });
}

/** A string in place of a value the SDK could not read: a Symbol's own form, else its kind. */
function describe(exception: unknown): string {
  if (typeof exception === 'symbol') return exception.toString();
  return `unprintable ${typeof exception} thrown`;
}
