'use strict';
// The load generator: one autocannon run (programmatic API) in its own process, so it never
// competes with the server under test for an event loop. argv[2]: JSON options
//   { url, connections, duration, pipelining?, overallRate?, warmup? }
// Prints one JSON line: req/s, latency percentiles (ms), counts.
const autocannon = require('autocannon');

async function main() {
  const o = JSON.parse(process.argv[2]);
  const result = await autocannon({
    url: o.url,
    connections: o.connections ?? 50,
    duration: o.duration ?? 10,
    pipelining: o.pipelining ?? 1,
    ...(o.overallRate ? { overallRate: o.overallRate } : {}),
    timeout: o.timeout ?? 10,
  });
  const L = result.latency;
  const out = {
    url: o.url,
    duration: result.duration,
    connections: result.connections,
    rps: result.requests.average,
    rpsFromTotal: result.requests.total / result.duration,
    requestsTotal: result.requests.total,
    requestsSent: result.requests.sent,
    ok2xx: result['2xx'],
    non2xx: result.non2xx,
    errors: result.errors,
    timeouts: result.timeouts,
    latency: { p50: L.p50, p90: L.p90, p99: L.p99, p999: L.p99_9, max: L.max, mean: L.average },
  };
  process.stdout.write(`${JSON.stringify(out)}\n`);
}

main().catch((err) => {
  process.stderr.write(`${err && err.stack ? err.stack : err}\n`);
  process.exit(1);
});
