'use strict';
// 4b. Burst: 100,000 OTLP log records emitted in one tick (logs.getLogger('b').emit() x 100k),
// auditrace preloaded vs upstream register, over OTLP/JSON so the sink can count the log records
// that arrive. Every drop should be counted (otel.sdk.processor.log.processed{error.type},
// auditrace.export.dropped) and said on stderr.
const path = require('node:path');
const c = require('../lib/common');

const CONTENDERS = ['upstream', 'auditrace'];
const N = 100_000;

function env(kind, ctx) {
  const common = {
    OTEL_EXPORTER_OTLP_ENDPOINT: ctx.sink.url,
    OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json',
    BURST_RECORDS: String(N),
  };
  if (kind === 'upstream') return c.cleanEnv({ ...common, OTEL_NODE_RESOURCE_DETECTORS: 'env,host,os,process' });
  return c.cleanEnv({ ...common, AUDITRACE_AUDIT_FILE: path.join(ctx.tmp, 'audit-burst.jsonl') });
}

/** Drops the process reported in the metrics that reached the sink, by metric and reason. */
function countedDrops(metrics) {
  const out = {};
  let total = 0;
  for (const [name, series] of Object.entries(metrics)) {
    for (const [attrs, value] of Object.entries(series)) {
      const a = JSON.parse(attrs);
      const isLogDrop = (name === 'otel.sdk.processor.log.processed' && a['error.type'])
        || (name === 'auditrace.export.dropped' && a.signal === 'logs');
      if (isLogDrop && value > 0) {
        out[`${name}{${Object.entries(a).map(([k, v]) => `${k}=${v}`).join(',')}}`] = value;
        total += value;
      }
    }
  }
  return { total, series: out };
}

async function run(ctx) {
  const rounds = ctx.quick ? 1 : 2;
  const results = Object.fromEntries(CONTENDERS.map((k) => [k, []]));
  for (let r = 0; r < rounds; r++) {
    const order = r % 2 ? [...CONTENDERS].reverse() : CONTENDERS;
    for (const k of order) {
      await ctx.sink.reset();
      const res = await c.runNode('app', [...c.PRELOADS[k], path.join(c.APPS, 'burst.js')], { env: env(k, ctx), cwd: ctx.tmp, timeoutMs: 60_000 });
      await c.sleep(300);
      const s = await ctx.sink.stats();
      const emitted = c.lastJson(res.stdout).emitted;
      const received = s.jsonLogRecords;
      const dropped = Math.max(0, emitted - received);
      const counted = countedDrops(s.metrics);
      const stderr = res.stderr.split('\n').filter((l) => l.trim() && !/^auditrace \d+\.\d+\.\d+: /.test(l));
      const warnings = stderr.filter((l) => /drop|lost|queue|discard|could not export/i.test(l));
      results[k].push({
        emitted, received, dropped, counted: counted.total, countedSeries: counted.series,
        silent: Math.max(0, dropped - counted.total),
        warned: warnings.length > 0, warnings: warnings.slice(0, 5), stderr: stderr.slice(0, 8),
        wallMs: res.ms, exit: res.code ?? res.signal, metricNames: Object.keys(s.metrics),
        logRequests: s.requests.logs, metricRequests: s.requests.metrics,
      });
      ctx.log(`  burst round ${r + 1}/${rounds} ${k}: ${received}/${emitted} received, ${dropped} dropped, ${counted.total} counted in metrics, ${warnings.length} warning line(s)`);
    }
  }
  const out = { records: N, rounds, contenders: {} };
  for (const k of CONTENDERS) {
    const rs = results[k];
    out.contenders[k] = {
      received: c.median(rs.map((x) => x.received)),
      dropped: c.median(rs.map((x) => x.dropped)),
      counted: c.median(rs.map((x) => x.counted)),
      silent: Math.max(...rs.map((x) => x.silent)),
      warnedEveryRound: rs.every((x) => x.warned),
      last: rs[rs.length - 1],
    };
  }
  return out;
}

module.exports = { run };
