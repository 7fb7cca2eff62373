'use strict';
// 3. Audit write path: records/s of audit.sensitiveRead() into a file (hash chain on) vs pino
// (sync destination), winston (File transport), the floor fs.writeSync(JSON.stringify()) and that
// floor plus a SHA-256 of each line (the least a hash chain adds).
// One process per contender and round, pinned to the app CPU; rounds interleaved.
const fs = require('node:fs');
const path = require('node:path');
const c = require('../lib/common');

const CONTENDERS = ['auditrace', 'pino', 'winston', 'floor', 'floor-chained'];
const WRITER = path.join(c.BENCH, 'audit-writer.js');

function args(kind, ms, file, template, extra = []) {
  if (kind === 'auditrace' || kind === 'sample') return [...extra, ...c.PRELOADS.auditrace, WRITER, kind, String(ms), file];
  return [...extra, WRITER, kind, String(ms), file, template];
}

function env(ctx, file) {
  return c.cleanEnv({ OTEL_EXPORTER_OTLP_ENDPOINT: ctx.sink.url, AUDITRACE_AUDIT_FILE: file, AUDITRACE_QUIET: 'true' });
}

async function run(ctx) {
  const rounds = ctx.quick ? 1 : 5;
  const ms = ctx.quick ? 300 : 3000;
  const dir = fs.mkdtempSync(path.join(ctx.tmp, 'audit-write-'));
  const sampleFile = path.join(dir, 'sample.jsonl');
  const s = await c.runNode('app', args('sample', 0, sampleFile), { env: env(ctx, sampleFile) });
  if (s.code !== 0) throw new Error(`sample failed: ${s.stderr}`);
  const template = s.stdout.trim();
  const results = Object.fromEntries(CONTENDERS.map((k) => [k, []]));
  for (let r = 0; r < rounds; r++) {
    const order = CONTENDERS.map((_, i) => CONTENDERS[(i + r) % CONTENDERS.length]);
    for (const k of order) {
      const file = path.join(dir, `${k}-${r}.jsonl`);
      const res = await c.runNode('app', args(k, ms, file, template), { env: env(ctx, file) });
      if (res.code !== 0) throw new Error(`${k} failed (${res.code}): ${res.stderr.slice(-1000)}`);
      const j = c.lastJson(res.stdout);
      results[k].push(j);
      ctx.log(`  audit write round ${r + 1}/${rounds} ${k}: ${j.perSec.toFixed(0)} records/s (${j.bytesPerLine.toFixed(0)} B/line, ${j.lines} lines for ${j.records} records)`);
      for (const f of fs.readdirSync(dir)) if (f.startsWith(path.basename(file))) fs.rmSync(path.join(dir, f), { force: true });
    }
  }
  const out = { rounds, durationMs: ms, recordBytes: Buffer.byteLength(template) + 1, template, contenders: {} };
  for (const k of CONTENDERS) {
    const rs = results[k];
    out.contenders[k] = {
      perSec: c.median(rs.map((x) => x.perSec)),
      bytesPerLine: c.median(rs.map((x) => x.bytesPerLine)),
      rounds: rs.map((x) => x.perSec),
      // every record offered reached the file (auditrace adds its chain start/end records)
      complete: rs.every((x) => x.lines >= x.records),
    };
  }
  for (const k of CONTENDERS) {
    out.contenders[k].vsPino = out.contenders[k].perSec / out.contenders.pino.perSec;
    out.contenders[k].vsWinston = out.contenders[k].perSec / out.contenders.winston.perSec;
    out.contenders[k].vsFloor = out.contenders[k].perSec / out.contenders.floor.perSec;
  }
  return out;
}

async function profile(ctx) {
  const dir = fs.mkdtempSync(path.join(ctx.tmp, 'prof-audit-'));
  const file = path.join(dir, 'auditrace.jsonl');
  const r = await c.runNode('app', args('auditrace', ctx.quick ? 500 : 3000, file, '', ['--cpu-prof', `--cpu-prof-dir=${dir}`]), { env: env(ctx, file) });
  const { startUs, endUs } = c.lastJson(r.stdout);
  return { file: require('../lib/cpuprofile').newestProfile(dir), fromUs: startUs, toUs: endUs };
}

module.exports = { run, profile };
