import { ValueType } from '@opentelemetry/api';
import { millisToHrTime } from '@opentelemetry/core';
import type { Attributes, HrTime } from '@opentelemetry/api';
import type {
  CollectionResult, HistogramMetricData, MetricProducer, MetricReader, ResourceMetrics,
} from '@opentelemetry/sdk-metrics';

/**
 * `http.server.request.duration`, aggregated in place rather than through the SDK's histogram.
 *
 * The SDK's `Histogram.record` builds and sorts the attribute set's key and serialises it to find
 * the series, on every request; the server side (http-server.ts) already knows the few values
 * the series is made of. Here a request costs a string concatenation, one Map lookup and a
 * bucket search. What reaches the exporter is what the SDK would have sent: the same scope
 * (instrumentation-http's), name, unit, bucket boundaries, attributes, min/max, temporality
 * (the reader's, per reader) and cardinality limit with its overflow series.
 *
 * Used only when every metric reader is ours and aggregates histograms by default (explicit
 * buckets); otherwise the instrumentation's own histogram records (`lean` is false).
 */

/** instrumentation-http's advice for this histogram, in seconds. */
export const DURATION_BOUNDARIES: readonly number[] = [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10];
/** The SDK's default cardinality limit: beyond it, one series with `otel.metric.overflow: true`. */
export const CARDINALITY_LIMIT = 2000;
const OVERFLOW_KEY = '\u0001overflow';
const OVERFLOW_ATTRIBUTES: Attributes = Object.freeze({ 'otel.metric.overflow': true });

type SdkMetrics = typeof import('@opentelemetry/sdk-metrics');
/** Loaded with the first reader: only when metrics are exported. */
const sdkMetrics = (): SdkMetrics => require('@opentelemetry/sdk-metrics') as SdkMetrics;

/** One series' histogram over an interval (or, in a cumulative reader, since it began). */
export interface Accumulation {
  readonly attributes: Attributes;
  startTime: HrTime;
  readonly counts: number[];
  sum: number;
  count: number;
  min: number;
  max: number;
}

/** What a request's series is made of (the stable-semconv metric attributes). */
interface DurationSeries {
  method: string;
  scheme: string;
  protocolVersion: string | undefined;
  route: string | undefined;
  status: number | undefined;
  errorType: string | undefined;
}

/** Now, as the SDK stamps a record. */
function hrNow(): HrTime {
  return millisToHrTime(Date.now());
}

/** The first index whose boundary is ≥ value (the SDK's buckets are inclusive upper bounds). */
export function bucketOf(boundaries: readonly number[], value: number): number {
  let lo = 0;
  let hi = boundaries.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (boundaries[mid]! < value) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

function emptyAccumulation(attributes: Attributes, startTime: HrTime, buckets: number): Accumulation {
  return { attributes, startTime, counts: new Array<number>(buckets).fill(0), sum: 0, count: 0, min: Infinity, max: -Infinity };
}

function seriesAttributes(s: DurationSeries): Attributes {
  const a: Attributes = { 'http.request.method': s.method, 'url.scheme': s.scheme };
  if (s.protocolVersion !== undefined) a['network.protocol.version'] = s.protocolVersion;
  if (s.route !== undefined) a['http.route'] = s.route;
  if (s.status !== undefined) a['http.response.status_code'] = s.status;
  if (s.errorType !== undefined) a['error.type'] = s.errorType;
  return Object.freeze(a);
}

/** Adds `from` into `into` (same boundaries). */
function mergeInto(into: Accumulation, from: Accumulation): void {
  for (let i = 0; i < into.counts.length; i++) into.counts[i]! += from.counts[i]!;
  into.sum += from.sum;
  into.count += from.count;
  if (from.min < into.min) into.min = from.min;
  if (from.max > into.max) into.max = from.max;
}

function copyOf(a: Accumulation): Accumulation {
  return { ...a, counts: [...a.counts] };
}

/** The recorder: the current interval's series, handed to every reader's producer at its collection. */
export class ServerDurations {
  private current = new Map<string, Accumulation>();
  private readonly producers = new Set<DurationProducer>();
  /** instrumentation-http's scope, set when it is created. */
  scope: { name: string; version?: string } = { name: '@opentelemetry/instrumentation-http' };
  /** False when a reader does not take the default histogram aggregation: the SDK records then. */
  lean = true;

  constructor(
    readonly boundaries: readonly number[] = DURATION_BOUNDARIES,
    readonly cardinalityLimit: number = CARDINALITY_LIMIT,
  ) {}

  /**
   * Records one request's duration in seconds. Positional, not
   * a series object: it runs once per request.
   */
  record(seconds: number, method: string, scheme: string, protocolVersion: string | undefined,
    route: string | undefined, status: number | undefined, errorType: string | undefined): void {
    if (!(seconds >= 0)) return; // as the SDK: a negative value is dropped (and NaN)
    let a: Accumulation | undefined;
    const last = this.last;
    // Most requests are in the series of the one before: no key to build then.
    if (last !== undefined && last.method === method && last.status === status && last.route === route
      && last.scheme === scheme && last.protocolVersion === protocolVersion && last.errorType === errorType
      && this.current.get(last.key) === last.accumulation) {
      a = last.accumulation;
    } else {
      a = this.series(method, scheme, protocolVersion, route, status, errorType);
    }
    a.counts[bucketOf(this.boundaries, seconds)]! += 1;
    a.sum += seconds;
    a.count += 1;
    if (seconds < a.min) a.min = seconds;
    if (seconds > a.max) a.max = seconds;
  }

  private last: (DurationSeries & { key: string; accumulation: Accumulation }) | undefined;

  /** The current interval's accumulation for a series (the overflow series past the limit). */
  private series(method: string, scheme: string, protocolVersion: string | undefined,
    route: string | undefined, status: number | undefined, errorType: string | undefined): Accumulation {
    // \u0000 cannot occur in a header-borne method or version, a route or an error name here;
    // \u0002 tells an absent value from an empty one.
    let key = `${method}\u0000${scheme}\u0000${protocolVersion ?? '\u0002'}\u0000${route ?? '\u0002'}\u0000${status ?? ''}\u0000${errorType ?? '\u0002'}`;
    let a = this.current.get(key);
    if (a === undefined) {
      // The limit counts the overflow series itself, as the SDK's does.
      if (this.current.size >= this.cardinalityLimit - 1) {
        key = OVERFLOW_KEY;
        a = this.current.get(OVERFLOW_KEY);
        if (a === undefined) {
          a = emptyAccumulation(OVERFLOW_ATTRIBUTES, hrNow(), this.boundaries.length + 1);
          this.current.set(OVERFLOW_KEY, a);
        }
      } else {
        a = emptyAccumulation(seriesAttributes({ method, scheme, protocolVersion, route, status, errorType }), hrNow(),
          this.boundaries.length + 1);
        this.current.set(key, a);
      }
    }
    this.last = { method, scheme, protocolVersion, route, status, errorType, key, accumulation: a };
    return a;
  }

  /** A producer for `reader` (pass it in the reader's `metricProducers`, then `attach` the reader). */
  producer(): DurationProducer {
    const p = new DurationProducer(this);
    this.producers.add(p);
    return p;
  }

  /** Ends the current interval: its series go to every producer's unreported list. */
  flushInterval(): void {
    if (this.current.size === 0) return;
    const done = this.current;
    this.current = new Map();
    for (const p of this.producers) p.unreported.push(done);
  }
}

/** One reader's view: its temporality, what it has reported, the intervals not yet reported. */
export class DurationProducer implements MetricProducer {
  readonly unreported: Map<string, Accumulation>[] = [];
  private reported = new Map<string, Accumulation>();
  private lastCollection: HrTime | undefined;
  /** The series of the last delta report. */
  private lastKeys = new Set<string>();
  private temporality: number | undefined;
  private reader: MetricReader | undefined;

  constructor(private readonly durations: ServerDurations) {}

  /**
   * Binds the producer to its reader; a reader that does not aggregate histograms by default
   * (exponential buckets, or a drop) turns the lean path off for everyone: the SDK's histogram
   * then records, and this producer reports nothing.
   */
  attach(reader: MetricReader): void {
    this.reader = reader;
    try {
      const m = sdkMetrics();
      const aggregation = reader.selectAggregation(m.InstrumentType.HISTOGRAM) as { type?: unknown } | undefined;
      if (aggregation?.type !== m.AggregationType.DEFAULT) this.durations.lean = false;
      this.temporality = reader.selectAggregationTemporality(m.InstrumentType.HISTOGRAM);
    } catch {
      this.durations.lean = false;
    }
  }

  collect(): Promise<CollectionResult> {
    const now = hrNow();
    this.durations.flushInterval();
    const merged = new Map<string, Accumulation>();
    for (const interval of this.unreported.splice(0)) {
      for (const [key, a] of interval) {
        const m = merged.get(key);
        if (m === undefined) merged.set(key, copyOf(a));
        else mergeInto(m, a);
      }
    }
    let points: Map<string, Accumulation>;
    if (this.temporality === sdkMetrics().AggregationTemporality.DELTA) {
      // As the SDK: a series reported last time starts where that collection ended; a new one
      // where its first value was recorded.
      if (this.lastCollection !== undefined) {
        for (const [key, a] of merged) if (this.lastKeys.has(key)) a.startTime = this.lastCollection;
      }
      this.lastKeys = new Set(merged.keys());
      points = merged;
    } else {
      for (const [key, a] of merged) {
        const r = this.reported.get(key);
        if (r === undefined) this.reported.set(key, a);
        else mergeInto(r, a);
      }
      points = this.reported;
    }
    this.lastCollection = now;
    return Promise.resolve({ resourceMetrics: this.toResourceMetrics(points, now), errors: [] });
  }

  private toResourceMetrics(points: Map<string, Accumulation>, endTime: HrTime): ResourceMetrics {
    const m = sdkMetrics();
    const boundaries = [...this.durations.boundaries];
    const metric: HistogramMetricData = {
      descriptor: {
        name: 'http.server.request.duration',
        description: 'Duration of HTTP server requests.',
        unit: 's',
        valueType: ValueType.DOUBLE,
        type: m.InstrumentType.HISTOGRAM,
        advice: { explicitBucketBoundaries: boundaries },
      } as HistogramMetricData['descriptor'],
      aggregationTemporality: this.temporality ?? m.AggregationTemporality.CUMULATIVE,
      dataPointType: m.DataPointType.HISTOGRAM,
      dataPoints: [...points.values()].map((a) => ({
        attributes: a.attributes,
        startTime: a.startTime,
        endTime,
        value: {
          buckets: { boundaries, counts: [...a.counts] },
          sum: a.sum,
          count: a.count,
          ...(a.count > 0 ? { min: a.min, max: a.max } : {}),
        },
      })),
    };
    // The reader keeps its SDK's resource and takes only the scopes from here.
    return {
      resource: undefined as unknown as ResourceMetrics['resource'],
      scopeMetrics: metric.dataPoints.length === 0 || !this.reader ? [] : [{ scope: this.durations.scope, metrics: [metric] }],
    };
  }
}
