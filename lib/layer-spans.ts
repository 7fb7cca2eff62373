import { context, trace, INVALID_SPAN_CONTEXT } from '@opentelemetry/api';
import type { Attributes, AttributeValue, Context, Exception, Link, Span, SpanContext, SpanOptions, SpanStatus, TimeInput,
  Tracer, TracerProvider } from '@opentelemetry/api';

/**
 * Framework layers without spans of their own (AUDITRACE_LAYER_SPANS=false, the default).
 *
 * instrumentation-express keeps track of the route it matched (nested routers, sub-apps, routers
 * sharing a prefix) only on the code path that makes a span per layer: its `ignoreLayersType`
 * path pops the mount paths of skipped routers and sub-apps at the wrong time and names
 * `/shop/orders/5` `/shop/shop/orders/:id`. So it runs its whole path, with a tracer whose
 * "spans" are stand-ins for the span that is active when the layer starts (the server span):
 * nothing is recorded or exported for a layer, children of the layer are children of that span,
 * and what is set on a layer's stand-in — by the framework (an error passed to `next(err)`, its
 * status) or by the application through `trace.getActiveSpan()` — lands on it. The attributes a
 * layer is started with (its name, type and partial route) are not kept. This holds whatever
 * tracer provider the instrumentation is given later (a `NodeSDK` of the application's own).
 */
export function withoutLayerSpans(instrumentation: { setTracerProvider(p: TracerProvider): void }): void {
  const set = instrumentation.setTracerProvider;
  instrumentation.setTracerProvider = function () {
    set.call(this, provider);
  };
  // Its constructor took the global tracer directly.
  set.call(instrumentation, provider);
}

/** The errors already recorded on a span: the same `next(err)` passes through several layers. */
const recorded = new WeakMap<Span, WeakSet<object>>();

class LayerStandIn implements Span {
  constructor(readonly target: Span) {}

  spanContext(): SpanContext {
    return this.target.spanContext();
  }

  setAttribute(key: string, value: AttributeValue): this {
    this.target.setAttribute(key, value);
    return this;
  }

  setAttributes(attributes: Attributes): this {
    this.target.setAttributes(attributes);
    return this;
  }

  addEvent(name: string, attributesOrStartTime?: Attributes | TimeInput, startTime?: TimeInput): this {
    this.target.addEvent(name, attributesOrStartTime, startTime);
    return this;
  }

  addLink(link: Link): this {
    this.target.addLink(link);
    return this;
  }

  addLinks(links: Link[]): this {
    this.target.addLinks(links);
    return this;
  }

  setStatus(status: SpanStatus): this {
    this.target.setStatus(status);
    return this;
  }

  updateName(name: string): this {
    this.target.updateName(name);
    return this;
  }

  /** The layer ends; the span it stands in for does not. */
  end(): void {}

  isRecording(): boolean {
    return this.target.isRecording();
  }

  recordException(exception: Exception, time?: TimeInput): void {
    if (exception !== null && typeof exception === 'object') {
      let seen = recorded.get(this.target);
      if (seen === undefined) recorded.set(this.target, (seen = new WeakSet()));
      if (seen.has(exception)) return;
      seen.add(exception);
    }
    this.target.recordException(exception, time);
  }
}

const tracer: Tracer = {
  startSpan(_name: string, _options?: SpanOptions, ctx: Context = context.active()): Span {
    const active = trace.getSpan(ctx);
    if (active === undefined) return trace.wrapSpanContext(INVALID_SPAN_CONTEXT);
    return new LayerStandIn(active instanceof LayerStandIn ? active.target : active);
  },
  startActiveSpan<F extends (span: Span) => unknown>(name: string, ...rest: unknown[]): ReturnType<F> {
    const fn = rest[rest.length - 1] as F;
    const options = (rest.length >= 2 ? rest[0] : undefined) as SpanOptions | undefined;
    const parent = (rest.length >= 3 ? rest[1] : undefined) as Context | undefined ?? context.active();
    const span = tracer.startSpan(name, options, parent);
    return context.with(trace.setSpan(parent, span), fn as (s: Span) => ReturnType<F>, undefined, span);
  },
};

const provider: TracerProvider = { getTracer: () => tracer };
