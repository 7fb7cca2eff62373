'use strict';
// 1. HTTP overhead: plain node vs upstream register vs auditrace, on a hello-world http server
// and an Express 5 route. The three servers of an app run side by side (all on the app CPU, idle
// when not loaded) and are loaded in turn, A B C, B C A, C A B …, by autocannon in another process.
const fs = require('node:fs');
const path = require('node:path');
const c = require('../lib/common');

const CONTENDERS = ['plain', 'upstream', 'auditrace'];
const APPS = [
  { id: 'hello', title: 'node:http hello world', file: 'hello.js', path: '/' },
  { id: 'express', title: 'Express 5 `GET /users/:id`', file: 'express.js', path: '/users/42' },
];

function contenderEnv(kind, { sink, tmp, appId, extra = {} }) {
  const common = { OTEL_EXPORTER_OTLP_ENDPOINT: sink.url, ...extra };
  if (kind === 'upstream') return c.cleanEnv({ ...common, OTEL_NODE_RESOURCE_DETECTORS: 'env,host,os,process' });
  if (kind === 'auditrace') return c.cleanEnv({ ...common, AUDITRACE_AUDIT_FILE: path.join(tmp, `audit-${appId}.jsonl`) });
  return c.cleanEnv(extra);
}

async function run({ quick, sink, tmp, log }) {
  const rounds = quick ? 1 : 4;
  // 8 s rounds: a cold full run (forensics data generated first) stays well under 15 minutes.
  const duration = quick ? 1 : 8;
  const warmup = quick ? 1 : 2;
  const connections = 50;
  const out = { rounds, duration, warmup, connections, apps: {} };
  for (const app of APPS) {
    const servers = {};
    for (const k of CONTENDERS) {
      const env = contenderEnv(k, { sink, tmp, appId: app.id });
      servers[k] = c.startIpcChild('app', [...c.PRELOADS[k], path.join(c.APPS, app.file)], { env });
      servers[k].port = (await servers[k].ready).port;
    }
    const url = (k) => `http://127.0.0.1:${servers[k].port}${app.path}`;
    for (const k of CONTENDERS) {
      log(`  ${app.id}: warm-up ${k} (${warmup} s)`);
      await c.load({ url: url(k), connections, duration: warmup });
    }
    const perRound = Object.fromEntries(CONTENDERS.map((k) => [k, []]));
    for (let r = 0; r < rounds; r++) {
      const order = CONTENDERS.map((_, i) => CONTENDERS[(i + r) % CONTENDERS.length]);
      for (const k of order) {
        await c.sleep(300);
        const before = await sink.stats();
        const res = await c.load({ url: url(k), connections, duration });
        const after = await sink.stats();
        perRound[k].push({
          rps: res.rps,
          p50: res.latency.p50,
          p99: res.latency.p99,
          errors: res.errors + res.timeouts + res.non2xx,
          traceBytes: after.bytes.traces - before.bytes.traces,
          loadavg: require('node:os').loadavg()[0],
        });
        log(`  ${app.id} round ${r + 1}/${rounds} ${k}: ${res.rps.toFixed(0)} req/s p50 ${res.latency.p50} ms p99 ${res.latency.p99} ms`);
      }
    }
    const result = { title: app.title, path: app.path, contenders: {} };
    await c.sleep(500); // requests accepted before the load ended are handled (Express routes asynchronously)
    for (const k of CONTENDERS) {
      const st = await servers[k].stats();
      await servers[k].stop();
      const rs = perRound[k];
      result.contenders[k] = {
        rps: c.median(rs.map((x) => x.rps)),
        p50: c.median(rs.map((x) => x.p50)),
        p99: c.median(rs.map((x) => x.p99)),
        errors: rs.reduce((a, x) => a + x.errors, 0),
        traceBytesPerRound: c.median(rs.map((x) => x.traceBytes)),
        served: st.served,
        rssMiB: st.rss / 2 ** 20,
        rounds: rs,
        stderr: servers[k].stderr.split('\n').filter((l) => l && !/^auditrace \d/.test(l)).slice(0, 10),
      };
      if (k === 'auditrace') {
        result.contenders[k].auditRecords = c.countInAuditFiles(path.join(tmp, `audit-${app.id}.jsonl`));
      }
    }
    const p = result.contenders.plain;
    for (const k of CONTENDERS) {
      const x = result.contenders[k];
      x.rpsVsPlain = x.rps / p.rps;
      x.p99VsPlain = x.p99 / p.p99;
      x.rpsVsUpstream = x.rps / result.contenders.upstream.rps;
    }
    out.apps[app.id] = result;
  }
  return out;
}

/** A CPU profile of the auditrace server under the same load, for a missed target. */
async function profile({ quick, sink, tmp, appId, log }) {
  const app = APPS.find((a) => a.id === appId);
  const dir = fs.mkdtempSync(path.join(tmp, `prof-http-${appId}-`));
  const env = contenderEnv('auditrace', { sink, tmp, appId: `${appId}-prof` });
  const server = c.startIpcChild('app', ['--cpu-prof', `--cpu-prof-dir=${dir}`, ...c.PRELOADS.auditrace, path.join(c.APPS, app.file)], { env });
  const { port } = await server.ready;
  const url = `http://127.0.0.1:${port}${app.path}`;
  const seconds = quick ? 2 : 5;
  log(`  profiling auditrace ${appId} (warm-up 2 s, then ${seconds} s profiled)`);
  await c.load({ url, connections: 50, duration: 2 });
  const { hrtimeUs } = await server.reset();
  await c.load({ url, connections: 50, duration: seconds });
  await server.stop(30_000);
  return { file: require('../lib/cpuprofile').newestProfile(dir), fromUs: hrtimeUs };
}

module.exports = { run, profile, CONTENDERS, APPS };
