'use strict';
// The benchmark harness works: `node bench/run.js --quick` runs every scenario briefly and every
// scenario produces numbers. Nothing about timing is asserted (quick numbers are not measurements),
// and the committed BENCHMARKS.md is not touched: the run writes to a temp file.
const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { ROOT, cleanEnv } = require('../helpers/run-app');

function run(args, timeoutMs) {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, args, { cwd: ROOT, env: cleanEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => { stdout += d; });
    child.stderr.on('data', (d) => { stderr += d; });
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

const number = (x, what) => assert.ok(typeof x === 'number' && Number.isFinite(x), `${what} is not a number: ${x}`);
const positive = (x, what) => {
  number(x, what);
  assert.ok(x > 0, `${what} is not positive: ${x}`);
};

describe('benchmark suite, quick mode (smoke)', function () {
  this.timeout(300_000);
  let dir;
  let results;
  let markdown;
  const committed = path.join(ROOT, 'BENCHMARKS.md');
  let committedBefore;

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'auditrace-bench-smoke-'));
    committedBefore = fs.existsSync(committed) ? fs.readFileSync(committed, 'utf8') : null;
    const md = path.join(dir, 'bench.md');
    const json = path.join(dir, 'bench.json');
    const r = await run([path.join(ROOT, 'bench', 'run.js'), '--quick', '--out', md, '--json', json], 280_000);
    assert.equal(r.code, 0, `bench/run.js --quick failed (${r.code ?? r.signal}):\n${r.stderr.slice(-4000)}`);
    results = JSON.parse(fs.readFileSync(json, 'utf8'));
    markdown = fs.readFileSync(md, 'utf8');
  });

  after(() => {
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('ran every scenario without an error', () => {
    assert.equal(results.mode, 'quick');
    assert.deepEqual(results.errors, {});
    for (const s of ['startup', 'audit', 'http', 'burst', 'outage', 'forensics']) assert.ok(results.scenarios[s], `no ${s} results`);
  });

  it('HTTP overhead: req/s and latency for every contender and app', () => {
    for (const app of ['hello', 'express']) {
      for (const k of ['plain', 'upstream', 'auditrace']) {
        const x = results.scenarios.http.apps[app].contenders[k];
        positive(x.rps, `${app} ${k} req/s`);
        number(x.p50, `${app} ${k} p50`);
        positive(x.p99, `${app} ${k} p99`);
        positive(x.served, `${app} ${k} requests served`);
      }
      positive(results.scenarios.http.apps[app].contenders.auditrace.auditRecords, `${app} audit records`);
    }
  });

  it('start-up: wall time and peak RSS for every preload', () => {
    for (const k of ['plain', 'upstream', 'auditrace']) {
      positive(results.scenarios.startup.contenders[k].wallMs, `${k} wall ms`);
      positive(results.scenarios.startup.contenders[k].rssMiB, `${k} RSS`);
    }
    assert.deepEqual(results.scenarios.startup.problems, []);
  });

  it('audit write path: records/s for every contender, every record in its file', () => {
    for (const k of ['auditrace', 'pino', 'winston', 'floor', 'floor-chained']) {
      positive(results.scenarios.audit.contenders[k].perSec, `${k} records/s`);
      assert.equal(results.scenarios.audit.contenders[k].complete, true, `${k} file incomplete`);
    }
  });

  it('burst and outage: counts, RSS and event-loop delay', () => {
    for (const k of ['upstream', 'auditrace']) {
      const b = results.scenarios.burst.contenders[k];
      positive(b.received, `${k} burst records received`);
      number(b.dropped, `${k} burst drops`);
      number(b.counted, `${k} counted drops`);
    }
    const o = results.scenarios.outage;
    positive(o.served, 'outage requests served');
    positive(o.auditRecords, 'outage audit records');
    number(o.rssGrowthMiB, 'outage RSS growth');
    positive(o.rssIdleMiB, 'RSS of the idle process');
    positive(o.eld.p99, 'outage event-loop delay p99');
    // the warm-up exported to a live sink, and the outage that followed was one: exports failed
    positive(o.spanBytesBeforeOutage, 'span bytes exported before the outage');
    assert.ok(o.warnings.some((l) => /could not export/.test(l)), `no export failure warned during the outage: ${JSON.stringify(o.warnings)}`);
  });

  it('forensics: its output when bench/forensics.js exists, a marked section when not', () => {
    const f = results.scenarios.forensics;
    assert.equal(typeof f.available, 'boolean');
    if (f.available) {
      assert.ok(f.json && Array.isArray(f.json.results) && f.json.results.length > 0, `bench/forensics.js produced no results:\n${f.report}`);
      for (const r of f.json.results) positive(r.seconds, `forensics ${r.name} seconds`);
    } else assert.match(markdown, /forensics: not yet available/);
  });

  it('every target evaluated; a profile for every missed one; the report written elsewhere', () => {
    for (const t of results.targets) {
      assert.equal(typeof t.met, 'boolean', `target not evaluated: ${t.target}`);
      if (!t.met && t.profile) assert.ok(results.profiles[t.profile]?.functions?.length > 0, `no profile for ${t.profile}`);
    }
    for (const h of ['## Targets', '## 1. HTTP overhead', '## 2. Start-up', '## 3. Audit write path', '## 4. Collector outage and log burst', '## 5. Forensics']) {
      assert.ok(markdown.includes(h), `report lacks ${h}`);
    }
    const committedAfter = fs.existsSync(committed) ? fs.readFileSync(committed, 'utf8') : null;
    assert.equal(committedAfter, committedBefore, 'the quick run changed BENCHMARKS.md');
  });
});
