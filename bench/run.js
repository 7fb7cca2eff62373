#!/usr/bin/env node
'use strict';
// The benchmark suite. `npm run bench` (full: ~14 min, writes BENCHMARKS.md) or
// `npm run bench:quick` (every scenario briefly: checks the harness, asserts nothing).
//   node bench/run.js [--quick] [--out FILE.md] [--json FILE.json] [--only a,b] [--no-profile]
//   node bench/run.js --render FILE.json | --profile-again FILE.json [--out FILE.md]
// Scenarios: startup, audit, http, burst, outage, forensics. Expects `npm run build` first.
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const c = require('./lib/common');
const { summarize } = require('./lib/cpuprofile');
const { evaluate, render } = require('./lib/report');

function parseArgs(argv) {
  const o = { quick: false, out: null, json: null, only: null, profile: true, render: null, profileAgain: null };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--quick') o.quick = true;
    else if (a === '--out') o.out = argv[++i];
    else if (a === '--json') o.json = argv[++i];
    else if (a === '--only') o.only = argv[++i].split(',');
    else if (a === '--no-profile') o.profile = false;
    else if (a === '--render') o.render = argv[++i];
    else if (a === '--profile-again') o.profileAgain = argv[++i];
    else if (a === '--help' || a === '-h') {
      process.stdout.write('node bench/run.js [--quick] [--out FILE.md] [--json FILE.json] [--only startup,audit,http,burst,outage,forensics] [--no-profile]\n'
        + 'node bench/run.js --render FILE.json [--out FILE.md]   # the report again from saved results (e.g. after editing bench/notes.md)\n'
        + 'node bench/run.js --profile-again FILE.json [--out FILE.md]   # new profiles of the missed targets for saved results (FILE.json is updated)\n');
      process.exit(0);
    } else throw new Error(`unknown argument ${a}`);
  }
  // The committed BENCHMARKS.md holds full runs only; a quick run goes to a temp file unless told.
  o.out ??= o.quick ? path.join(os.tmpdir(), 'auditrace-bench-quick.md') : path.join(c.ROOT, 'BENCHMARKS.md');
  return o;
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  if (opts.render) {
    const saved = JSON.parse(fs.readFileSync(opts.render, 'utf8'));
    if (saved.mode === 'quick' && !process.argv.includes('--out')) opts.out = path.join(os.tmpdir(), 'auditrace-bench-quick.md');
    fs.writeFileSync(opts.out, render(saved, evaluate(saved), { notes: readNotes() }));
    process.stderr.write(`wrote ${opts.out} from ${opts.render}\n`);
    return;
  }
  if (opts.profileAgain) {
    const saved = JSON.parse(fs.readFileSync(opts.profileAgain, 'utf8'));
    const t0 = Date.now();
    const log = (m) => process.stderr.write(`[bench ${((Date.now() - t0) / 1000).toFixed(0).padStart(4)} s] ${m}\n`);
    const tmp = c.tmpDir('auditrace-bench-');
    const sink = await c.startSink();
    saved.profiles = {};
    for (const k of Object.keys(saved.errors)) if (k.startsWith('profile ')) delete saved.errors[k];
    await profileMisses(saved, { quick: saved.mode === 'quick', sink, tmp, log }, log);
    await sink.stop();
    fs.rmSync(tmp, { recursive: true, force: true });
    fs.writeFileSync(opts.profileAgain, `${JSON.stringify({ ...saved, targets: evaluate(saved) }, null, 2)}\n`);
    fs.writeFileSync(opts.out, render(saved, evaluate(saved), { notes: readNotes() }));
    log(`wrote ${opts.out} and ${opts.profileAgain}`);
    return;
  }
  if (!fs.existsSync(path.join(c.ROOT, 'dist', 'auditrace.js'))) throw new Error('dist/ is missing: run `npm run build` first');
  const t0 = Date.now();
  const log = (m) => process.stderr.write(`[bench ${((Date.now() - t0) / 1000).toFixed(0).padStart(4)} s] ${m}\n`);
  const tmp = c.tmpDir('auditrace-bench-');
  const sink = await c.startSink();
  const ctx = { quick: opts.quick, sink, tmp, log };
  const want = (s) => !opts.only || opts.only.includes(s);
  const results = {
    mode: opts.quick ? 'quick' : 'full',
    machine: c.machine(),
    placement: c.placement.note,
    loadavgStart: os.loadavg(),
    scenarios: {},
    errors: {},
    profiles: {},
  };
  log(`${results.mode} run; ${c.placement.note}; output ${opts.out}`);

  const scenario = async (name, fn) => {
    if (!want(name)) return;
    log(`scenario ${name}`);
    const s0 = Date.now();
    try {
      results.scenarios[name] = await fn();
      results.scenarios[name].loadavg = os.loadavg()[0];
    } catch (err) {
      results.errors[name] = err && err.stack ? err.stack : String(err);
      log(`scenario ${name} FAILED: ${results.errors[name]}`);
    }
    log(`scenario ${name} took ${((Date.now() - s0) / 1000).toFixed(0)} s`);
  };

  await scenario('startup', () => require('./scenarios/startup').run(ctx));
  await scenario('audit', () => require('./scenarios/audit-write').run(ctx));
  await scenario('http', () => require('./scenarios/http').run(ctx));
  await scenario('burst', () => require('./scenarios/burst').run(ctx));
  await scenario('outage', () => require('./scenarios/outage').run(ctx));
  await scenario('forensics', () => forensics(ctx));

  if (opts.profile) await profileMisses(results, ctx, log);
  results.loadavgEnd = os.loadavg();
  results.totalSeconds = (Date.now() - t0) / 1000;
  await sink.stop();

  const md = render(results, evaluate(results), { notes: readNotes() });
  fs.mkdirSync(path.dirname(path.resolve(opts.out)), { recursive: true });
  fs.writeFileSync(opts.out, md);
  if (opts.json) fs.writeFileSync(opts.json, `${JSON.stringify({ ...results, targets: evaluate(results) }, null, 2)}\n`);
  fs.rmSync(tmp, { recursive: true, force: true });
  log(`done in ${results.totalSeconds.toFixed(0)} s; wrote ${opts.out}`);
  for (const t of evaluate(results)) log(`  ${t.met === true ? 'met   ' : t.met === false ? 'MISSED' : 'n/a   '} ${t.target}: ${t.measured}`);
  if (Object.keys(results.errors).length) {
    log(`errors in: ${Object.keys(results.errors).join(', ')}`);
    process.exitCode = 1;
  }
}

/** CPU profiles of the contenders that missed a target, into results.profiles. */
async function profileMisses(results, ctx, log) {
  const groups = [...new Set(evaluate(results).filter((t) => t.met === false && t.profile).map((t) => t.profile))];
  for (const g of groups) {
    log(`profile ${g} (a target was missed)`);
    try {
      let p = null;
      if (g === 'http-hello' || g === 'http-express') p = await require('./scenarios/http').profile({ ...ctx, appId: g.slice(5) });
      else if (g === 'startup') p = await require('./scenarios/startup').profile(ctx);
      else if (g === 'audit') p = await require('./scenarios/audit-write').profile(ctx);
      else if (g === 'outage') p = await require('./scenarios/outage').profile(ctx);
      else if (g === 'forensics') p = await profileVerify(results, ctx);
      if (p && p.file) results.profiles[g] = { ...summarize(p.file, 10, { fromUs: p.fromUs, toUs: p.toUs }), windowed: p.fromUs !== undefined };
    } catch (err) {
      results.errors[`profile ${g}`] = err && err.stack ? err.stack : String(err);
    }
  }
}

const FORENSICS_CACHE = path.join(os.tmpdir(), 'auditrace-bench-forensics-cache');

/** `verify` of one file of the forensics data on one thread (none when that data is gone). */
async function profileVerify(results, ctx) {
  const local = path.join(results.scenarios.forensics?.dir ?? FORENSICS_CACHE, 'local');
  if (!fs.existsSync(local)) return null;
  const input = path.join(local, fs.readdirSync(local).filter((f) => f.endsWith('.jsonl')).sort()[0]);
  const dir = fs.mkdtempSync(path.join(ctx.tmp, 'prof-verify-'));
  await c.runNode(null, ['--cpu-prof', `--cpu-prof-dir=${dir}`, path.join(c.ROOT, 'bin', 'auditrace.js'), 'verify', '--file', input, '--json', '--workers', '0'],
    { env: c.cleanEnv(), cwd: c.ROOT, timeoutMs: 300_000 });
  return { file: require('./lib/cpuprofile').newestProfile(dir) };
}

/** 5. bench/forensics.js is another engineer's; run it when it exists and keep what it prints. */
async function forensics(ctx) {
  const file = path.join(c.BENCH, 'forensics.js');
  if (!fs.existsSync(file)) return { available: false };
  // It prints its report on stderr and, with --json, one JSON object on stdout. Quick: 30,000
  // records in a temp dir. Full: its default 1M records, generated once into a cache directory it
  // reuses on later runs (--dir), so the suite's time goes to trail/verify. Not pinned: verify
  // uses worker threads.
  const cache = ctx.quick ? path.join(ctx.tmp, 'forensics') : FORENSICS_CACHE;
  const args = [file, ...(ctx.quick ? ['--records', '30000'] : []), '--dir', cache, '--json'];
  const r = await c.runNode(null, args, { env: c.cleanEnv(), cwd: c.ROOT, timeoutMs: ctx.quick ? 120_000 : 600_000 });
  let json = null;
  try {
    json = c.lastJson(r.stdout);
  } catch { /* failed: the report shows stderr */ }
  return { available: true, args: args.slice(1), dir: cache, code: r.code, signal: r.signal, seconds: r.ms / 1000, report: r.stderr.slice(-6000), json };
}

/** Hand-written analysis of misses, by target id (bench/notes.md: `## <id>` sections). */
function readNotes() {
  const f = path.join(c.BENCH, 'notes.md');
  if (!fs.existsSync(f)) return {};
  const notes = {};
  let id = null;
  for (const line of fs.readFileSync(f, 'utf8').split('\n')) {
    const m = /^## (\S+)\s*$/.exec(line);
    if (m) {
      id = m[1];
      notes[id] = '';
    } else if (id) notes[id] += `${line}\n`;
  }
  for (const k of Object.keys(notes)) notes[k] = notes[k].trim();
  return notes;
}

main().catch((err) => {
  process.stderr.write(`${err && err.stack ? err.stack : err}\n`);
  process.exit(1);
});
