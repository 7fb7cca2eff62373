'use strict';
// 4a. Collector outage: the auditrace-instrumented hello server takes 1,000 req/s (autocannon
// overallRate) exporting to the sink; after a warm-up the sink is stopped (the collector is gone:
// connections refused) and the load goes on. RSS growth and p99 event-loop delay over the outage
// (inside the app, perf_hooks.monitorEventLoopDelay at 1 ms resolution), and the durable path: one
// http_request audit record per request served.
//
// Under load V8 grows the young generation step by step up to its maximum (semi-spaces of 128 MiB
// on this machine) — for auditrace and for upstream's register alike, with the collector up or
// down — and when it does depends on the allocation rate: in one run it was done after 50 s of
// warm-up, in the next it happened 15 s into the outage (+52 MiB of RSS that was not the outage's).
// So the app starts with its young generation at that size (YOUNG_GENERATION), and the warm-up
// lasts until the process has settled (see warmUp). The RSS of the idle process is reported too.
const fs = require('node:fs');
const path = require('node:path');
const c = require('../lib/common');

const RATE = 1000;
const STEP_S = 10;
/** Where V8 takes the young generation under this load anyway (its maximum semi-space here). */
const YOUNG_GENERATION = ['--min-semi-space-size=128'];

/**
 * Load in steps of STEP_S seconds until the young generation has kept its size for two steps and
 * RSS grew by less than 3 MiB in the last one; at least `min`, at most `max` seconds. Returns the
 * summed load results and the steps' samples.
 */
async function warmUp(server, url, min, max) {
  const steps = [];
  let total;
  for (let t = 0; t < max; t += STEP_S) {
    const r = await c.load({ url, connections: 50, duration: STEP_S, overallRate: RATE });
    total = total ? { requestsTotal: total.requestsTotal + r.requestsTotal, ok2xx: total.ok2xx + r.ok2xx } : r;
    const s = await server.stats();
    steps.push({ t: t + STEP_S, rssMiB: s.rss / 2 ** 20, newSpaceMiB: s.newSpace / 2 ** 20 });
    const [a, b, last] = steps.slice(-3);
    if (t + STEP_S >= min && last && a.newSpaceMiB === b.newSpaceMiB && b.newSpaceMiB === last.newSpaceMiB
      && last.rssMiB - b.rssMiB < 3) break;
  }
  return { ...total, steps };
}

async function startServer(ctx, port, auditFile, nodeArgs = []) {
  const env = c.cleanEnv({
    OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${port}`,
    AUDITRACE_AUDIT_FILE: auditFile,
    PROBE_ELD_RESOLUTION_MS: '1',
  });
  const server = c.startIpcChild('app', [...nodeArgs, ...c.PRELOADS.auditrace, path.join(c.APPS, 'hello.js')], { env });
  server.port = (await server.ready).port;
  return server;
}

async function run(ctx) {
  const seconds = ctx.quick ? 10 : 300;
  const [minWarmup, maxWarmup] = ctx.quick ? [STEP_S, STEP_S] : [30, 90];
  const sink = await c.startSink();
  const auditFile = path.join(ctx.tmp, 'audit-outage.jsonl');
  let server, url, idle, w, exportedBeforeOutage;
  try {
    server = await startServer(ctx, sink.port, auditFile, YOUNG_GENERATION);
    url = `http://127.0.0.1:${server.port}/`;
    idle = await server.stats();
    ctx.log(`  outage: warm-up ${minWarmup}–${maxWarmup} s at ${RATE} req/s, exporting to the sink on port ${sink.port}`);
    w = await warmUp(server, url, minWarmup, maxWarmup);
    ctx.log(`  outage: warm-up ended after ${w.steps.length * STEP_S} s (RSS ${w.steps.at(-1).rssMiB.toFixed(1)} MiB, young generation ${w.steps.at(-1).newSpaceMiB} MiB)`);
    exportedBeforeOutage = await sink.stats();
  } finally {
    await sink.stop(); // from here on the endpoint refuses connections
  }
  const start = await server.reset();
  const samples = [{ t: 0, rssMiB: start.rss / 2 ** 20, heapMiB: start.heapUsed / 2 ** 20 }];
  const t0 = Date.now();
  const sampler = setInterval(async () => {
    try {
      const s = await server.stats();
      samples.push({ t: (Date.now() - t0) / 1000, rssMiB: s.rss / 2 ** 20, heapMiB: s.heapUsed / 2 ** 20 });
    } catch { /* the app is stopping */ }
  }, ctx.quick ? 2000 : 15_000);
  ctx.log(`  outage: ${seconds} s at ${RATE} req/s`);
  const res = await c.load({ url, connections: 50, duration: seconds, overallRate: RATE });
  clearInterval(sampler);
  await c.sleep(500); // requests accepted before the load ended are handled
  const end = await server.stats();
  samples.push({ t: (Date.now() - t0) / 1000, rssMiB: end.rss / 2 ** 20, heapMiB: end.heapUsed / 2 ** 20 });
  await server.stop(30_000);
  const served = end.served;
  const records = c.countInAuditFiles(auditFile);
  const stderrLines = server.stderr.split('\n').filter((l) => l.trim());
  const warnings = stderrLines.filter((l) => /could not export|dropped|lost/i.test(l));
  return {
    seconds,
    warmupSeconds: w.steps.length * STEP_S,
    warmupSteps: w.steps,
    warmupBoundsSeconds: [minWarmup, maxWarmup],
    nodeArgs: YOUNG_GENERATION,
    newSpaceStartMiB: start.newSpace / 2 ** 20,
    rate: RATE,
    achievedRps: res.rps,
    requests: res.requestsTotal + w.requestsTotal,
    ok2xx: res.ok2xx + w.ok2xx,
    errors: res.errors + res.timeouts + res.non2xx,
    latencyP99: res.latency.p99,
    rssIdleMiB: idle.rss / 2 ** 20,
    rssStartMiB: start.rss / 2 ** 20,
    rssEndMiB: end.rss / 2 ** 20,
    rssPeakMiB: end.peakRss / 2 ** 20,
    rssGrowthMiB: (end.peakRss - start.rss) / 2 ** 20,
    rssGrowthFromIdleMiB: (end.peakRss - idle.rss) / 2 ** 20,
    spanBytesBeforeOutage: exportedBeforeOutage.bytes?.traces ?? 0,
    eld: end.eld,
    served,
    auditRecords: records,
    lostOnDurablePath: Math.max(0, served - records),
    samples,
    warnings: warnings.slice(0, 8),
    warningCount: warnings.length,
  };
}

/** --cpu-prof of the same outage, shorter. */
async function profile(ctx) {
  const dir = fs.mkdtempSync(path.join(ctx.tmp, 'prof-outage-'));
  const closedPort = await c.freePort();
  const server = await startServer(ctx, closedPort, path.join(dir, 'audit.jsonl'), [...YOUNG_GENERATION, '--cpu-prof', `--cpu-prof-dir=${dir}`]);
  const url = `http://127.0.0.1:${server.port}/`;
  await c.load({ url, connections: 50, duration: 2, overallRate: RATE });
  const { hrtimeUs } = await server.reset();
  await c.load({ url, connections: 50, duration: ctx.quick ? 3 : 10, overallRate: RATE });
  await server.stop(30_000);
  return { file: require('../lib/cpuprofile').newestProfile(dir), fromUs: hrtimeUs };
}

module.exports = { run, profile };
