'use strict';
// 2. Start-up: wall time and peak RSS of an empty script with each preload, interleaved runs
// (hyperfine-like: one untimed warm-up run each, then N timed runs, median).
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const c = require('../lib/common');

const CONTENDERS = ['plain', 'upstream', 'auditrace'];
const TIME = '/usr/bin/time';

function env(kind, { sink, tmp }) {
  if (kind === 'plain') return c.cleanEnv();
  const common = { OTEL_EXPORTER_OTLP_ENDPOINT: sink.url };
  if (kind === 'upstream') return c.cleanEnv({ ...common, OTEL_NODE_RESOURCE_DETECTORS: 'env,host,os,process' });
  return c.cleanEnv({ ...common, AUDITRACE_AUDIT_FILE: path.join(tmp, 'audit-startup.jsonl') });
}

const haveTime = fs.existsSync(TIME) && spawnSync(TIME, ['-f', '%M', 'true']).status === 0;

/** One run: wall ms (spawn to exit, measured here) and peak RSS (KiB, from /usr/bin/time -f %M). */
function once(kind, ctx, extraArgs = []) {
  const script = path.join(c.APPS, 'empty.js');
  const nodeArgs = [...extraArgs, ...c.PRELOADS[kind], script];
  const [cmd, args] = haveTime
    ? [TIME, ['-f', 'maxrss_kib=%M', c.NODE, ...nodeArgs]]
    : [c.NODE, ['--require', path.join(c.BENCH, 'lib', 'maxrss.js'), ...nodeArgs]];
  const t0 = process.hrtime.bigint();
  const r = spawnSync(cmd, args, { env: env(kind, ctx), cwd: ctx.tmp, encoding: 'utf8', timeout: 60_000 });
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  const m = /maxrss_kib=(\d+)/.exec(r.stderr ?? '');
  return { ms, rssKiB: m ? Number(m[1]) : NaN, status: r.status, stderr: r.stderr };
}

async function run(ctx) {
  const runs = ctx.quick ? 3 : 20;
  const samples = Object.fromEntries(CONTENDERS.map((k) => [k, []]));
  const problems = [];
  for (const k of CONTENDERS) once(k, ctx); // warm-up: file system cache, compile cache
  for (let i = 0; i < runs; i++) {
    const order = CONTENDERS.map((_, j) => CONTENDERS[(i + j) % CONTENDERS.length]);
    for (const k of order) {
      const r = once(k, ctx);
      if (r.status !== 0) problems.push(`${k}: exit ${r.status}: ${r.stderr.slice(-300)}`);
      samples[k].push(r);
    }
  }
  const out = { runs, rssMethod: haveTime ? '`/usr/bin/time -f %M` (peak RSS of the node process)' : 'the process\'s own peak (VmHWM, else maxRSS) at exit', contenders: {}, problems };
  for (const k of CONTENDERS) {
    out.contenders[k] = {
      wallMs: c.median(samples[k].map((s) => s.ms)),
      wallMinMs: Math.min(...samples[k].map((s) => s.ms)),
      rssMiB: c.median(samples[k].map((s) => s.rssKiB)) / 1024,
    };
  }
  for (const k of CONTENDERS) {
    out.contenders[k].addedWallMs = out.contenders[k].wallMs - out.contenders.plain.wallMs;
    out.contenders[k].addedRssMiB = out.contenders[k].rssMiB - out.contenders.plain.rssMiB;
  }
  return out;
}

/** --cpu-prof of an empty script with the auditrace preload. */
async function profile(ctx) {
  const dir = fs.mkdtempSync(path.join(ctx.tmp, 'prof-startup-'));
  once('auditrace', ctx, ['--cpu-prof', `--cpu-prof-dir=${dir}`, '--cpu-prof-interval=100']);
  return { file: require('../lib/cpuprofile').newestProfile(dir) };
}

module.exports = { run, profile };
