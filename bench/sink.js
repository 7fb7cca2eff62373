'use strict';
// A local OTLP/HTTP endpoint that accepts and discards: 200 to every POST /v1/*, so exporters do
// all their work (serialisation, the HTTP request) and no collector's cost is measured. It counts
// requests and bytes per signal; OTLP/JSON bodies are also decoded, to count log records and to
// keep the SDK's and auditrace's own loss metrics (otel.sdk.*, auditrace.*) as last reported.
//   GET /__sink/stats   POST /__sink/reset
const http = require('node:http');
const zlib = require('node:zlib');

let stats;
function reset() {
  stats = {
    requests: { traces: 0, metrics: 0, logs: 0, other: 0 },
    bytes: { traces: 0, metrics: 0, logs: 0, other: 0 },
    jsonLogRecords: 0,
    jsonSpans: 0,
    decodeErrors: 0,
    // name -> { attributesJson -> last value } (cumulative sums: the last report is the total)
    metrics: {},
  };
}
reset();

function attrsKey(attrs) {
  const o = {};
  for (const a of attrs ?? []) {
    const v = a.value ?? {};
    o[a.key] = v.stringValue ?? v.intValue ?? v.doubleValue ?? v.boolValue ?? JSON.stringify(v);
  }
  return JSON.stringify(o, Object.keys(o).sort());
}

function onJson(signal, body) {
  if (signal === 'logs') {
    for (const rl of body.resourceLogs ?? []) for (const sl of rl.scopeLogs ?? []) stats.jsonLogRecords += (sl.logRecords ?? []).length;
  } else if (signal === 'traces') {
    for (const rs of body.resourceSpans ?? []) for (const ss of rs.scopeSpans ?? []) stats.jsonSpans += (ss.spans ?? []).length;
  } else if (signal === 'metrics') {
    for (const rm of body.resourceMetrics ?? []) {
      for (const sm of rm.scopeMetrics ?? []) {
        for (const m of sm.metrics ?? []) {
          if (!/^(otel\.sdk\.|auditrace\.)/.test(m.name)) continue;
          const points = (m.sum ?? m.gauge ?? {}).dataPoints ?? [];
          const series = (stats.metrics[m.name] ??= {});
          for (const p of points) series[attrsKey(p.attributes)] = Number(p.asInt ?? p.asDouble ?? 0);
        }
      }
    }
  }
}

const server = http.createServer((req, res) => {
  if (req.url === '/__sink/stats') {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify(stats));
    return;
  }
  if (req.url === '/__sink/reset') {
    reset();
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end('{}');
    return;
  }
  const m = /^\/v1\/(traces|metrics|logs)/.exec(req.url ?? '');
  const signal = m ? m[1] : 'other';
  const json = /json/.test(req.headers['content-type'] ?? '');
  const chunks = [];
  req.on('data', (d) => {
    stats.bytes[signal] += d.length;
    if (json) chunks.push(d);
  });
  req.on('end', () => {
    stats.requests[signal]++;
    if (json && signal !== 'other') {
      try {
        let buf = Buffer.concat(chunks);
        if (req.headers['content-encoding'] === 'gzip') buf = zlib.gunzipSync(buf);
        onJson(signal, JSON.parse(buf.toString('utf8')));
      } catch {
        stats.decodeErrors++;
      }
    }
    if (req.method !== 'POST' || signal === 'other') {
      res.writeHead(404);
      res.end();
      return;
    }
    if (json) {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{}');
    } else {
      // An empty Export*ServiceResponse is a zero-length protobuf message.
      res.writeHead(200, { 'content-type': 'application/x-protobuf', 'content-length': '0' });
      res.end();
    }
  });
});
server.keepAliveTimeout = 30_000;
server.listen(Number(process.env.SINK_PORT ?? 0), '127.0.0.1', () => {
  process.stdout.write(`listening ${server.address().port}\n`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
