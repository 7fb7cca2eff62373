'use strict';
// http.server.request.duration aggregated in place (lib/server-durations.ts): whatever is
// recorded, a reader gets what the SDK's own histogram would have given it — the same series,
// buckets, sums, min/max, temporality and overflow series.
const assert = require('node:assert/strict');
const fc = require('fast-check');
const {
  AggregationTemporality, AggregationType, MeterProvider, MetricReader,
} = require('@opentelemetry/sdk-metrics');
const { ServerDurations, DURATION_BOUNDARIES, bucketOf } = require('../../dist/lib/server-durations.js');

class TestReader extends MetricReader {
  async onForceFlush() {}
  async onShutdown() {}
}

const SCOPE = { name: '@opentelemetry/instrumentation-http', version: '0.300.0' };

/** The SDK's way: a histogram with instrumentation-http's advice, read by one reader. */
function sdkSide(temporality, cardinalityLimit) {
  const reader = new TestReader({
    aggregationTemporalitySelector: () => temporality,
    ...(cardinalityLimit ? { cardinalitySelector: () => cardinalityLimit } : {}),
  });
  const provider = new MeterProvider({ readers: [reader] });
  const histogram = provider.getMeter(SCOPE.name, SCOPE.version).createHistogram('http.server.request.duration', {
    description: 'Duration of HTTP server requests.', unit: 's', advice: { explicitBucketBoundaries: [...DURATION_BOUNDARIES] },
  });
  return {
    reader,
    record(seconds, [method, scheme, version, route, status, errorType]) {
      const a = { 'http.request.method': method, 'url.scheme': scheme };
      if (version !== undefined) a['network.protocol.version'] = version;
      if (route !== undefined) a['http.route'] = route;
      if (status !== undefined) a['http.response.status_code'] = status;
      if (errorType !== undefined) a['error.type'] = errorType;
      histogram.record(seconds, a);
    },
  };
}

/** Ours: the same reader kind, with the producer; the SDK's own histogram is never recorded. */
function leanSide(temporality, cardinalityLimit) {
  const durations = new ServerDurations(DURATION_BOUNDARIES, cardinalityLimit);
  durations.scope = SCOPE;
  const producer = durations.producer();
  const reader = new TestReader({ aggregationTemporalitySelector: () => temporality, metricProducers: [producer] });
  producer.attach(reader);
  new MeterProvider({ readers: [reader] }); // binds the reader
  return { reader, durations, record: (seconds, s) => durations.record(seconds, ...s) };
}

/** The points of the duration metric, keyed by attributes, without the times. */
async function collected(reader) {
  const { resourceMetrics, errors } = await reader.collect();
  assert.deepEqual(errors, []);
  const out = { scopes: [], temporality: undefined, descriptor: undefined, points: {} };
  for (const sm of resourceMetrics.scopeMetrics) {
    for (const m of sm.metrics) {
      if (m.descriptor.name !== 'http.server.request.duration') continue;
      out.scopes.push({ name: sm.scope.name, version: sm.scope.version });
      out.temporality = m.aggregationTemporality;
      out.dataPointType = m.dataPointType;
      out.descriptor = { name: m.descriptor.name, unit: m.descriptor.unit, description: m.descriptor.description, type: m.descriptor.type, valueType: m.descriptor.valueType };
      for (const p of m.dataPoints) {
        const key = JSON.stringify(Object.entries(p.attributes).sort());
        out.points[key] = { ...p.value, attributes: p.attributes };
        assert.ok(Array.isArray(p.startTime) && Array.isArray(p.endTime), 'hr times');
      }
    }
  }
  return out;
}

const series = fc.tuple(
  fc.constantFrom('GET', 'POST', '_OTHER'),
  fc.constantFrom('http', 'https'),
  fc.constantFrom('1.1', '2.0', undefined),
  fc.constantFrom('/a', '/b/:id', '', undefined),
  fc.constantFrom(200, 404, 503, undefined),
  fc.constantFrom('503', 'client_aborted', 'RangeError', undefined),
);
const seconds = fc.oneof(
  fc.constantFrom(0, ...DURATION_BOUNDARIES, 10.000001, 1e6, -1),
  fc.double({ min: 0, max: 20, noNaN: true }),
);
/** Rounds of records, each ended by a collection. */
const rounds = fc.array(fc.array(fc.tuple(seconds, series), { maxLength: 40 }), { minLength: 1, maxLength: 4 });

async function sameAsSdk(temporality, plan, cardinalityLimit) {
  const sdk = sdkSide(temporality, cardinalityLimit);
  const lean = leanSide(temporality, cardinalityLimit);
  for (const round of plan) {
    for (const [s, attrs] of round) {
      sdk.record(s, attrs);
      lean.record(s, attrs);
    }
    const [want, got] = [await collected(sdk.reader), await collected(lean.reader)];
    assert.deepEqual(Object.keys(got.points).sort(), Object.keys(want.points).sort());
    for (const key of Object.keys(want.points)) {
      const w = want.points[key];
      const g = got.points[key];
      assert.deepEqual(g.buckets, w.buckets, key);
      assert.equal(g.count, w.count, key);
      assert.equal(g.min, w.min, key);
      assert.equal(g.max, w.max, key);
      // Summed in the same order; a cumulative reader adds the intervals as the SDK merges them.
      assert.ok(Math.abs(g.sum - w.sum) <= 1e-9 * Math.max(1, Math.abs(w.sum)), `${key}: ${g.sum} vs ${w.sum}`);
    }
    if (Object.keys(want.points).length > 0) {
      assert.deepEqual(got.scopes, want.scopes);
      assert.deepEqual(got.descriptor, want.descriptor);
      assert.equal(got.temporality, want.temporality);
      assert.equal(got.dataPointType, want.dataPointType);
    }
  }
}

describe('server durations: http.server.request.duration without the SDK\'s per-record hashing', () => {
  it('bucketOf: a value on a boundary is in that boundary\'s bucket (inclusive upper bounds); beyond the last, the overflow bucket', () => {
    assert.equal(bucketOf(DURATION_BOUNDARIES, 0), 0);
    assert.equal(bucketOf(DURATION_BOUNDARIES, 0.005), 0);
    assert.equal(bucketOf(DURATION_BOUNDARIES, 0.0050001), 1);
    assert.equal(bucketOf(DURATION_BOUNDARIES, 10), 13);
    assert.equal(bucketOf(DURATION_BOUNDARIES, 10.5), 14);
    assert.equal(bucketOf(DURATION_BOUNDARIES, Infinity), 14);
  });

  for (const [name, temporality] of [['cumulative', AggregationTemporality.CUMULATIVE], ['delta', AggregationTemporality.DELTA]]) {
    it(`a ${name} reader gets what the SDK's histogram gives, collection after collection (property)`, async () => {
      await fc.assert(fc.asyncProperty(rounds, (plan) => sameAsSdk(temporality, plan)), { numRuns: 150 });
    });

    it(`a ${name} reader: past the cardinality limit, one overflow series, as the SDK's`, async () => {
      const many = Array.from({ length: 60 }, (_, i) => [0.01 * (i % 7), ['GET', 'http', '1.1', `/r${i}`, 200, undefined]]);
      await sameAsSdk(temporality, [many, many.slice(0, 10), []], 25);
      const lean = leanSide(temporality, 25);
      for (const [s, attrs] of many) lean.record(s, attrs);
      const got = await collected(lean.reader);
      assert.equal(Object.keys(got.points).length, 25);
      const overflow = Object.values(got.points).find((p) => p.attributes['otel.metric.overflow'] === true);
      assert.equal(overflow.count, 60 - 24);
    });
  }

  it('a delta reader reports each interval once and starts it where the last collection ended', async () => {
    const lean = leanSide(AggregationTemporality.DELTA);
    lean.record(0.02, ['GET', 'http', '1.1', '/a', 200, undefined]);
    const first = await lean.reader.collect();
    const p1 = first.resourceMetrics.scopeMetrics[0].metrics[0].dataPoints[0];
    lean.record(0.03, ['GET', 'http', '1.1', '/a', 200, undefined]);
    const second = await lean.reader.collect();
    const p2 = second.resourceMetrics.scopeMetrics[0].metrics[0].dataPoints[0];
    assert.equal(p2.value.count, 1);
    assert.deepEqual(p2.startTime, p1.endTime);
    const third = await lean.reader.collect();
    assert.deepEqual(third.resourceMetrics.scopeMetrics, [], 'nothing recorded, nothing reported');
  });

  it('a delta reader: a series reported last time starts at that collection; a new one at its first value (as the SDK)', async () => {
    const lean = leanSide(AggregationTemporality.DELTA);
    const points = async () => {
      const r = await lean.reader.collect();
      return r.resourceMetrics.scopeMetrics[0].metrics[0].dataPoints;
    };
    const ns = (t) => t[0] * 1e9 + t[1];
    lean.record(0.02, ['GET', 'http', '1.1', '/a', 200, undefined]);
    const [a1] = await points();
    await new Promise((r) => setTimeout(r, 30));
    const beforeB = Date.now();
    lean.record(0.02, ['GET', 'http', '1.1', '/b', 200, undefined]);
    lean.record(0.02, ['GET', 'http', '1.1', '/a', 200, undefined]);
    const second = await points();
    const b = second.find((p) => p.attributes['http.route'] === '/b');
    const a2 = second.find((p) => p.attributes['http.route'] === '/a');
    assert.deepEqual(a2.startTime, a1.endTime, '/a was reported last time');
    assert.ok(ns(b.startTime) >= beforeB * 1e6 && ns(b.startTime) > ns(a1.endTime) + 20e6, '/b starts at its first value');
    lean.record(0.02, ['GET', 'http', '1.1', '/b', 200, undefined]);
    const [b3] = await points();
    assert.deepEqual(b3.startTime, b.endTime);
  });

  it('two readers each get every request (one cumulative, one delta)', async () => {
    const durations = new ServerDurations();
    const readers = [AggregationTemporality.CUMULATIVE, AggregationTemporality.DELTA].map((t) => {
      const producer = durations.producer();
      const reader = new TestReader({ aggregationTemporalitySelector: () => t, metricProducers: [producer] });
      producer.attach(reader);
      new MeterProvider({ readers: [reader] });
      return reader;
    });
    const count = async (r) => (await collected(r)).points;
    durations.record(0.1, 'GET', 'http', '1.1', undefined, 200, undefined);
    assert.equal(Object.values(await count(readers[0]))[0].count, 1);
    durations.record(0.1, 'GET', 'http', '1.1', undefined, 200, undefined);
    assert.equal(Object.values(await count(readers[1]))[0].count, 2, 'the delta reader had not collected the first');
    assert.equal(Object.values(await count(readers[0]))[0].count, 2);
    assert.deepEqual(await count(readers[1]), {});
  });

  it('a reader that aggregates histograms otherwise (exponential buckets) turns the lean path off: the SDK records', () => {
    const durations = new ServerDurations();
    const producer = durations.producer();
    const reader = new TestReader({
      aggregationSelector: () => ({ type: AggregationType.EXPONENTIAL_HISTOGRAM }), metricProducers: [producer],
    });
    producer.attach(reader);
    assert.equal(durations.lean, false);
    const plain = new ServerDurations();
    const p2 = plain.producer();
    p2.attach(new TestReader({ metricProducers: [p2] }));
    assert.equal(plain.lean, true);
  });
});
