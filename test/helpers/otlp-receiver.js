'use strict';
// A real OTLP/HTTP receiver for tests: decodes what exporters actually put on
// the wire (protobuf or OTLP/JSON, optionally gzipped) into flat, plain-JS
// records, so assertions don't depend on the exporters' own serializers.
const http = require('node:http');
const gunzip = require('node:util').promisify(require('node:zlib').gunzip);
const protobuf = require('protobufjs');

// Subset of opentelemetry-proto v1 (common, resource, trace, logs, metrics,
// collector services). Field numbers and wire types follow the upstream .proto
// files; enums are declared as int32, which is identical on the wire and lets
// us report them as numbers. One package is enough: names never hit the wire.
const PROTO = `
syntax = "proto3";
package otlp;

message AnyValue {
  oneof value {
    string string_value = 1; bool bool_value = 2; int64 int_value = 3; double double_value = 4;
    ArrayValue array_value = 5; KeyValueList kvlist_value = 6; bytes bytes_value = 7;
  }
}
message ArrayValue { repeated AnyValue values = 1; }
message KeyValueList { repeated KeyValue values = 1; }
message KeyValue { string key = 1; AnyValue value = 2; }
message InstrumentationScope { string name = 1; string version = 2; repeated KeyValue attributes = 3; uint32 dropped_attributes_count = 4; }
message EntityRef { string schema_url = 1; string type = 2; repeated string id_keys = 3; repeated string description_keys = 4; }
message Resource { repeated KeyValue attributes = 1; uint32 dropped_attributes_count = 2; repeated EntityRef entity_refs = 3; }

message ExportTraceServiceRequest { repeated ResourceSpans resource_spans = 1; }
message ResourceSpans { Resource resource = 1; repeated ScopeSpans scope_spans = 2; string schema_url = 3; }
message ScopeSpans { InstrumentationScope scope = 1; repeated Span spans = 2; string schema_url = 3; }
message Span {
  bytes trace_id = 1; bytes span_id = 2; string trace_state = 3; bytes parent_span_id = 4; fixed32 flags = 16;
  string name = 5; int32 kind = 6; fixed64 start_time_unix_nano = 7; fixed64 end_time_unix_nano = 8;
  repeated KeyValue attributes = 9; uint32 dropped_attributes_count = 10;
  message Event { fixed64 time_unix_nano = 1; string name = 2; repeated KeyValue attributes = 3; uint32 dropped_attributes_count = 4; }
  repeated Event events = 11; uint32 dropped_events_count = 12;
  message Link { bytes trace_id = 1; bytes span_id = 2; string trace_state = 3; repeated KeyValue attributes = 4; uint32 dropped_attributes_count = 5; fixed32 flags = 6; }
  repeated Link links = 13; uint32 dropped_links_count = 14;
  Status status = 15;
}
message Status { string message = 2; int32 code = 3; }

message ExportLogsServiceRequest { repeated ResourceLogs resource_logs = 1; }
message ResourceLogs { Resource resource = 1; repeated ScopeLogs scope_logs = 2; string schema_url = 3; }
message ScopeLogs { InstrumentationScope scope = 1; repeated LogRecord log_records = 2; string schema_url = 3; }
message LogRecord {
  fixed64 time_unix_nano = 1; fixed64 observed_time_unix_nano = 11; int32 severity_number = 2; string severity_text = 3;
  AnyValue body = 5; repeated KeyValue attributes = 6; uint32 dropped_attributes_count = 7; fixed32 flags = 8;
  bytes trace_id = 9; bytes span_id = 10; string event_name = 12;
}

message ExportMetricsServiceRequest { repeated ResourceMetrics resource_metrics = 1; }
message ResourceMetrics { Resource resource = 1; repeated ScopeMetrics scope_metrics = 2; string schema_url = 3; }
message ScopeMetrics { InstrumentationScope scope = 1; repeated Metric metrics = 2; string schema_url = 3; }
message Metric {
  string name = 1; string description = 2; string unit = 3;
  oneof data { Gauge gauge = 5; Sum sum = 7; Histogram histogram = 9; ExponentialHistogram exponential_histogram = 10; Summary summary = 11; }
  repeated KeyValue metadata = 12;
}
message Gauge { repeated NumberDataPoint data_points = 1; }
message Sum { repeated NumberDataPoint data_points = 1; int32 aggregation_temporality = 2; bool is_monotonic = 3; }
message Histogram { repeated HistogramDataPoint data_points = 1; int32 aggregation_temporality = 2; }
message ExponentialHistogram { repeated ExponentialHistogramDataPoint data_points = 1; int32 aggregation_temporality = 2; }
message Summary { repeated SummaryDataPoint data_points = 1; }
message NumberDataPoint {
  repeated KeyValue attributes = 7; fixed64 start_time_unix_nano = 2; fixed64 time_unix_nano = 3;
  oneof value { double as_double = 4; sfixed64 as_int = 6; } repeated Exemplar exemplars = 5; uint32 flags = 8;
}
message HistogramDataPoint {
  repeated KeyValue attributes = 9; fixed64 start_time_unix_nano = 2; fixed64 time_unix_nano = 3; fixed64 count = 4;
  optional double sum = 5; repeated fixed64 bucket_counts = 6; repeated double explicit_bounds = 7;
  repeated Exemplar exemplars = 8; uint32 flags = 10; optional double min = 11; optional double max = 12;
}
message ExponentialHistogramDataPoint {
  repeated KeyValue attributes = 1; fixed64 start_time_unix_nano = 2; fixed64 time_unix_nano = 3; fixed64 count = 4;
  optional double sum = 5; sint32 scale = 6; fixed64 zero_count = 7; Buckets positive = 8; Buckets negative = 9;
  uint32 flags = 10; repeated Exemplar exemplars = 11; optional double min = 12; optional double max = 13;
  double zero_threshold = 14;
  message Buckets { sint32 offset = 1; repeated uint64 bucket_counts = 2; }
}
message SummaryDataPoint {
  repeated KeyValue attributes = 7; fixed64 start_time_unix_nano = 2; fixed64 time_unix_nano = 3; fixed64 count = 4;
  double sum = 5; repeated ValueAtQuantile quantile_values = 6; uint32 flags = 8;
  message ValueAtQuantile { double quantile = 1; double value = 2; }
}
message Exemplar {
  repeated KeyValue filtered_attributes = 7; fixed64 time_unix_nano = 2;
  oneof value { double as_double = 3; sfixed64 as_int = 6; } bytes span_id = 4; bytes trace_id = 5;
}

// google.rpc.Status, the body OTLP/HTTP expects on error responses.
message RpcStatus { int32 code = 1; string message = 2; }
`;

const root = protobuf.parse(PROTO).root;
const RpcStatus = root.lookupType('otlp.RpcStatus');
// defaults:false keeps "absent on the wire" distinguishable; bytes stay Buffers
// so ids can be hex-encoded while bytes attributes become base64.
const TO_OBJECT = { longs: Number, enums: Number, defaults: false };

// path -> the signal's request type and the keys of its resource/scope/item nesting.
const route = (signal, type, ...keys) => ({ signal, type: root.lookupType(`otlp.${type}`), keys });
const ROUTES = {
  '/v1/traces': route('traces', 'ExportTraceServiceRequest', 'resourceSpans', 'scopeSpans', 'spans'),
  '/v1/logs': route('logs', 'ExportLogsServiceRequest', 'resourceLogs', 'scopeLogs', 'logRecords'),
  '/v1/metrics': route('metrics', 'ExportMetricsServiceRequest', 'resourceMetrics', 'scopeMetrics', 'metrics'),
};
const CONTENT_TYPES = { protobuf: 'application/x-protobuf', json: 'application/json' };
const FORMATS = { 'application/x-protobuf': 'protobuf', 'application/json': 'json' };

// Malformed OTLP/JSON must surface as an exception (-> 400), not as silently
// empty data, so shape checks throw.
function list(v) {
  if (v == null) return [];
  if (!Array.isArray(v)) throw new TypeError(`expected an array, got ${typeof v}`);
  return v;
}
// OTLP/JSON sends 64-bit integers as decimal strings; protobuf gives numbers.
// Nanosecond timestamps exceed 2^53, so they lose sub-microsecond precision.
const long = (v) => (v == null ? 0 : Number(v));
// OTLP/JSON ids are hex strings (not base64 as generic proto3 JSON would be).
const id = (v) => (v == null ? '' : typeof v === 'string' ? v.toLowerCase() : Buffer.from(v).toString('hex'));
function value(v) {
  if (v == null) return null;
  if (typeof v !== 'object') throw new TypeError('AnyValue must be an object');
  if ('stringValue' in v) return v.stringValue;
  if ('boolValue' in v) return v.boolValue;
  if ('intValue' in v) return long(v.intValue);
  if ('doubleValue' in v) return Number(v.doubleValue);
  if ('arrayValue' in v) return list(v.arrayValue && v.arrayValue.values).map(value);
  if ('kvlistValue' in v) return attrs(v.kvlistValue && v.kvlistValue.values);
  // OTLP/JSON already carries bytes as base64.
  if ('bytesValue' in v) return typeof v.bytesValue === 'string' ? v.bytesValue : Buffer.from(v.bytesValue).toString('base64');
  return null;
}
const attrs = (kvs) => Object.fromEntries(list(kvs).map((kv) => [String(kv.key), value(kv.value)]));

function span(s) {
  return {
    traceId: id(s.traceId), spanId: id(s.spanId), parentSpanId: id(s.parentSpanId),
    traceState: s.traceState || '', flags: s.flags || 0, name: s.name || '', kind: s.kind || 0,
    startTimeUnixNano: long(s.startTimeUnixNano), endTimeUnixNano: long(s.endTimeUnixNano),
    attributes: attrs(s.attributes),
    events: list(s.events).map((e) => ({
      name: e.name || '', timeUnixNano: long(e.timeUnixNano), attributes: attrs(e.attributes),
    })),
    links: list(s.links).map((l) => ({ traceId: id(l.traceId), spanId: id(l.spanId), attributes: attrs(l.attributes) })),
    status: { code: (s.status && s.status.code) || 0, message: (s.status && s.status.message) || '' },
  };
}

function logRecord(r) {
  return {
    timeUnixNano: long(r.timeUnixNano), observedTimeUnixNano: long(r.observedTimeUnixNano),
    severityNumber: r.severityNumber || 0, severityText: r.severityText || '', body: value(r.body),
    eventName: r.eventName || '', attributes: attrs(r.attributes),
    traceId: id(r.traceId), spanId: id(r.spanId), flags: r.flags || 0,
  };
}

const METRIC_TYPES = ['gauge', 'sum', 'histogram', 'exponentialHistogram', 'summary'];
const LONG_POINT_FIELDS = ['startTimeUnixNano', 'timeUnixNano', 'count', 'zeroCount'];
const DOUBLE_POINT_FIELDS = ['sum', 'min', 'max', 'zeroThreshold'];

function dataPoint(p) {
  const { asInt, asDouble, exemplars, ...out } = p;
  out.attributes = attrs(p.attributes);
  for (const k of LONG_POINT_FIELDS) if (k in p) out[k] = long(p[k]);
  for (const k of DOUBLE_POINT_FIELDS) if (k in p) out[k] = Number(p[k]);
  if ('bucketCounts' in p) out.bucketCounts = list(p.bucketCounts).map(long);
  if ('explicitBounds' in p) out.explicitBounds = list(p.explicitBounds).map(Number);
  for (const side of ['positive', 'negative']) {
    if (p[side]) out[side] = { offset: p[side].offset || 0, bucketCounts: list(p[side].bucketCounts).map(long) };
  }
  if (asInt != null) out.value = long(asInt);
  else if (asDouble != null) out.value = Number(asDouble);
  out.exemplars = list(exemplars).map((e) => ({
    value: e.asInt != null ? long(e.asInt) : Number(e.asDouble), traceId: id(e.traceId), spanId: id(e.spanId),
  }));
  return out;
}

function metric(m) {
  const type = METRIC_TYPES.find((t) => m[t] != null) || null;
  const data = type ? m[type] : {};
  return {
    name: m.name || '', description: m.description || '', unit: m.unit || '', type,
    aggregationTemporality: data.aggregationTemporality || 0, isMonotonic: Boolean(data.isMonotonic),
    dataPoints: list(data.dataPoints).map(dataPoint),
  };
}

const FLATTEN = { traces: span, logs: logRecord, metrics: metric };

function flatten(route, request) {
  if (request === null || typeof request !== 'object' || Array.isArray(request)) {
    throw new TypeError('export request must be an object');
  }
  const [resKey, scopeKey, itemKey] = route.keys;
  const out = [];
  for (const rs of list(request[resKey])) {
    const resource = attrs(rs.resource && rs.resource.attributes);
    for (const ss of list(rs[scopeKey])) {
      const scope = { name: (ss.scope && ss.scope.name) || '', version: (ss.scope && ss.scope.version) || '' };
      for (const item of list(ss[itemKey])) out.push({ ...FLATTEN[route.signal](item), resource, scope });
    }
  }
  return out;
}

function decode(route, format, body) {
  if (format === 'json') return flatten(route, JSON.parse(body.toString('utf8')));
  return flatten(route, route.type.toObject(route.type.decode(body), TO_OBJECT));
}

// OTLP/HTTP expects an empty Export*ServiceResponse on success and a
// google.rpc.Status on errors, both in the request's encoding.
function send(res, status, format, message = '') {
  const ok = status < 300;
  const code = status === 400 ? 3 : 14; // google.rpc.Code INVALID_ARGUMENT / UNAVAILABLE
  let body = message;
  if (format === 'json') body = ok ? '{}' : JSON.stringify({ code, message });
  if (format === 'protobuf') body = ok ? '' : RpcStatus.encode({ code, message }).finish();
  res.writeHead(status, { 'content-type': CONTENT_TYPES[format] || 'text/plain' }).end(body);
}

/**
 * Starts a receiver on host:port (port 0 = ephemeral). `status` (or later setStatus)
 * >= 300 refuses every export with that code, simulating a collector outage.
 * Returns { url, requests, spans(), logs(), metrics(), setStatus, waitFor, reset, close }.
 */
async function startOtlpReceiver({ port = 0, host = '127.0.0.1', status = 200 } = {}) {
  const collected = { traces: [], logs: [], metrics: [] };
  const requests = [];
  let replyStatus = status;

  async function handle(req, res) {
    const path = req.url.split('?')[0];
    const route = ROUTES[path];
    if (!route) return send(res, 404, null, `unknown path ${path}`);
    if (req.method !== 'POST') return send(res, 405, null, 'only POST is supported');
    const contentType = String(req.headers['content-type'] || '');
    const contentEncoding = String(req.headers['content-encoding'] || '');
    const format = FORMATS[contentType.split(';')[0].trim().toLowerCase()];
    if (!format) return send(res, 415, null, `unsupported content-type ${contentType}`);
    if (!['', 'identity', 'gzip'].includes(contentEncoding.toLowerCase())) {
      return send(res, 415, null, `unsupported content-encoding ${contentEncoding}`);
    }

    const chunks = [];
    for await (const chunk of req) chunks.push(chunk);
    const raw = Buffer.concat(chunks);
    const entry = { path, contentType, contentEncoding, signal: route.signal, bytes: raw.length, remotePort: req.socket.remotePort };

    // Simulated outage: the data is refused, but the attempt is kept so tests
    // can count exporter retries.
    if (replyStatus >= 300) {
      requests.push({ ...entry, status: replyStatus });
      return send(res, replyStatus, format, `simulated failure (HTTP ${replyStatus})`);
    }
    let items;
    try {
      const body = contentEncoding.toLowerCase() === 'gzip' ? await gunzip(raw) : raw;
      items = decode(route, format, body);
    } catch (err) {
      return send(res, 400, format, `malformed ${format} ${route.signal} request: ${err.message}`);
    }
    requests.push({ ...entry, status: replyStatus });
    collected[route.signal].push(...items);
    return send(res, replyStatus, format);
  }

  const server = http.createServer((req, res) => {
    handle(req, res).catch((err) => {
      // Aborted uploads etc.: never let a bad client take the test process down.
      if (!res.headersSent && !res.destroyed) send(res, 400, null, String(err && err.message));
      else res.destroy();
    });
  });
  await new Promise((resolve, reject) => server.once('error', reject).listen(port, host, resolve));

  const rx = {
    url: `http://${host}:${server.address().port}`,
    requests,
    spans: () => collected.traces.slice(),
    logs: () => collected.logs.slice(),
    metrics: () => collected.metrics.slice(),
    setStatus(code) {
      if (!Number.isInteger(code) || code < 200 || code > 599) throw new RangeError(`invalid HTTP status ${code}`);
      replyStatus = code;
    },
    reset() {
      // Cleared in place so references such as rx.requests stay valid.
      for (const arr of [collected.traces, collected.logs, collected.metrics, requests]) arr.length = 0;
    },
    async waitFor(predicate, { timeoutMs = 5000, intervalMs = 20 } = {}) {
      const deadline = Date.now() + timeoutMs;
      let lastError;
      for (;;) {
        try {
          const result = await predicate();
          if (result) return result;
        } catch (err) {
          lastError = err; // e.g. reading spans()[0] before it arrived: keep polling
        }
        if (Date.now() >= deadline) {
          const got = [...Object.entries(collected), ['requests', requests]].map(([k, v]) => `${k}=${v.length}`).join(' ');
          const why = lastError ? `; last predicate error: ${lastError.message}` : '';
          throw new Error(`otlp-receiver waitFor timed out after ${timeoutMs}ms (${got}): ${predicate}${why}`);
        }
        await new Promise((r) => setTimeout(r, intervalMs));
      }
    },
    close() {
      // Exporters keep connections alive; without this close() would hang.
      server.closeAllConnections();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
  return rx;
}

module.exports = { startOtlpReceiver };
