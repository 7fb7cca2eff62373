'use strict';
// Instrumentation of the benchmark apps themselves, over IPC (so it adds no HTTP traffic, spans or
// audit records): event-loop delay (perf_hooks.monitorEventLoopDelay), memory, requests served.
//   parent -> { cmd: 'stats' | 'reset' | 'exit', id }    child -> { id, ... } / { type: 'ready', port }
const { monitorEventLoopDelay } = require('node:perf_hooks');

const RESOLUTION_MS = Number(process.env.PROBE_ELD_RESOLUTION_MS ?? 10);
const eld = monitorEventLoopDelay({ resolution: RESOLUTION_MS });
eld.enable();
let served = 0;
let peakRss = process.memoryUsage.rss();
const sampler = setInterval(() => { peakRss = Math.max(peakRss, process.memoryUsage.rss()); }, 250);
sampler.unref();

function stats() {
  const ms = (ns) => ns / 1e6;
  const rss = process.memoryUsage.rss();
  peakRss = Math.max(peakRss, rss);
  return {
    served,
    rss,
    peakRss,
    heapUsed: process.memoryUsage().heapUsed,
    // The young generation's size: V8 grows it under load (up to 128 MiB here) and RSS follows.
    newSpace: require('node:v8').getHeapSpaceStatistics().find((x) => x.space_name === 'new_space')?.space_size ?? 0,
    eld: {
      resolutionMs: RESOLUTION_MS,
      min: ms(eld.min), p50: ms(eld.percentile(50)), p99: ms(eld.percentile(99)), max: ms(eld.max), mean: ms(eld.mean),
      count: eld.count,
    },
  };
}

process.on('message', (m) => {
  if (!m || typeof m !== 'object') return;
  if (m.cmd === 'stats') process.send({ id: m.id, ...stats() });
  else if (m.cmd === 'reset') {
    eld.reset();
    peakRss = process.memoryUsage.rss();
    // hrtimeUs: the monotonic clock of --cpu-prof sample times, to profile from here on only
    process.send({ id: m.id, hrtimeUs: Number(process.hrtime.bigint() / 1000n), ...stats() });
  } else if (m.cmd === 'exit') {
    process.exit(0);
  }
});

module.exports = {
  served() { served++; },
  ready(port) { process.send({ type: 'ready', port }); },
};
