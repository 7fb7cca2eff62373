'use strict';
// The bundle is loaded with the V8 code cache the build made (lib/code-cache.ts,
// scripts/code-cache.js): used only for the exact bytes it was made from, never at the price of
// a second copy of auditrace or of running code other than the file on disk.
const assert = require('node:assert/strict');
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { cleanEnv, ROOT } = require('../helpers/run-app');

const LOADER = path.join(ROOT, 'dist', 'lib', 'code-cache.js');
const BUNDLE = path.join(ROOT, 'dist', 'auditrace.js');

const AUDIT_FILE = path.join(os.tmpdir(), `auditrace-cc-${process.pid}.jsonl`);
const made = [AUDIT_FILE];

function node(args, { env = {}, cwd = ROOT } = {}) {
  const r = spawnSync(process.execPath, args, {
    cwd,
    encoding: 'utf8',
    timeout: 30_000,
    env: { ...cleanEnv(), OTEL_TRACES_EXPORTER: 'none', OTEL_METRICS_EXPORTER: 'none', OTEL_LOGS_EXPORTER: 'none', AUDITRACE_AUDIT_FILE: AUDIT_FILE, ...env },
  });
  assert.equal(r.status, 0, `node ${args.join(' ')}\n${r.stderr}`);
  return r;
}

/** A stand-in bundle in a temp dir: loadBundle works for any CommonJS file. */
function tempBundle(text) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'auditrace-cc-'));
  made.push(dir);
  const file = path.join(dir, 'bundle.js');
  fs.writeFileSync(file, text);
  return { dir, file };
}

const loadAndPrint = (file) => `
  const loader = require(${JSON.stringify(LOADER)});
  const m = loader.loadBundle(${JSON.stringify(file)});
  console.log(JSON.stringify({ status: loader.codeCacheStatus(), v: m.v, same: require(${JSON.stringify(file)}) === m, file: m.file, dir: m.dir, resolved: m.resolved }));`;
const makeCache = (file) => `
  const loader = require(${JSON.stringify(LOADER)});
  loader.loadBundle(${JSON.stringify(file)}).run();
  loader.writeCodeCache(${JSON.stringify(file)});`;

describe('the code cache of the bundle', function () {
  this.timeout(60_000);
  after(() => { for (const p of made) fs.rmSync(p, { recursive: true, force: true }); });

  it('the build made one for this Node, and `--require auditrace/register` uses it; `require(\'auditrace\')` then gets the same instance', () => {
    assert.ok(fs.existsSync(`${BUNDLE}.${process.version}-${process.arch}.code-cache`), 'npm run build wrote the cache');
    const r = node(['--require', path.join(ROOT, 'register.js'), '-e', `
      const status = require(${JSON.stringify(LOADER)}).codeCacheStatus();
      const api = require(${JSON.stringify(ROOT)});
      console.log(JSON.stringify({ status, started: api.__current() !== undefined }));`]);
    assert.deepEqual(JSON.parse(r.stdout), { status: 'accepted', started: true });
    assert.doesNotMatch(r.stderr, /already started/);
  });

  it('`--import auditrace/register` uses it too', () => {
    const r = node(['--import', path.join(ROOT, 'register.mjs'), '-e', `
      console.log(JSON.stringify({ status: require(${JSON.stringify(LOADER)}).codeCacheStatus(), started: require(${JSON.stringify(ROOT)}).__current() !== undefined }));`]);
    assert.deepEqual(JSON.parse(r.stdout), { status: 'accepted', started: true });
  });

  it('a bundle changed after its cache was made, even to the same length, runs as it is on disk (V8 alone checks only the length)', () => {
    const v1 = 'module.exports = { v: 1, run() { return [1, 2, 3].map((x) => x * 2); } };\n';
    const { file } = tempBundle(v1);
    node(['-e', makeCache(file)]);
    assert.equal(JSON.parse(node(['-e', loadAndPrint(file)]).stdout).status, 'accepted');
    const v2 = v1.replace('v: 1', 'v: 2');
    assert.equal(v2.length, v1.length);
    fs.writeFileSync(file, v2);
    assert.deepEqual(JSON.parse(node(['-e', loadAndPrint(file)]).stdout), { status: 'stale', v: 2, same: true });
    // Why the digest: V8 itself takes the old cache for the new text.
    const r = node(['-e', `
      const vm = require('node:vm');
      const data = require('node:fs').readFileSync(${JSON.stringify(`${file}.${process.version}-${process.arch}.code-cache`)}).subarray(32);
      const fn = vm.compileFunction(${JSON.stringify(v2)}, ['exports', 'require', 'module', '__filename', '__dirname'], { filename: ${JSON.stringify(file)}, cachedData: data, importModuleDynamically: vm.constants.USE_MAIN_CONTEXT_DEFAULT_LOADER });
      console.log(fn.cachedDataRejected);`]);
    assert.equal(r.stdout.trim(), 'false');
  });

  it('the cache holds the functions that ran before it was written, not only the top level', () => {
    // A function V8 compiles lazily, only when called: big enough to show in the cache's size.
    const body = Array.from({ length: 400 }, (_, i) => `t += Math.imul(t, ${i + 7}) ^ (t >>> ${i % 31});`).join(' ');
    const { file } = tempBundle(`module.exports = { v: 4, run() { let t = 1; ${body} return t; } };\n`);
    node(['-e', makeCache(file)]);
    const cache = fs.statSync(`${file}.${process.version}-${process.arch}.code-cache`).size - 32;
    const topLevel = Number(node(['-e', `
      const vm = require('node:vm');
      const text = require('node:fs').readFileSync(${JSON.stringify(file)}, 'utf8');
      console.log(vm.compileFunction(text, ['exports', 'require', 'module', '__filename', '__dirname'], { filename: ${JSON.stringify(file)}, produceCachedData: true }).cachedData.length);`]).stdout);
    assert.ok(cache > topLevel + 4000, `cache ${cache} bytes, top level alone ${topLevel}`);
    assert.equal(JSON.parse(node(['-e', loadAndPrint(file)]).stdout).status, 'accepted');
  });

  it('`import()` inside a bundle it loads goes to Node\'s loader, as in a module `require` loaded', () => {
    const { file } = tempBundle('module.exports = { v: 5, load: () => import("node:os").then((os) => typeof os.hostname) };\n');
    const r = node(['-e', `
      const loader = require(${JSON.stringify(LOADER)});
      loader.loadBundle(${JSON.stringify(file)}).load().then((t) => console.log(t));`]);
    assert.equal(r.stdout.trim(), 'function');
  });

  it('the bundle\'s OTLP transport reaches an https endpoint without `import()`: no ExperimentalWarning in the application\'s stderr', () => {
    const r = spawnSync(process.execPath, ['--require', path.join(ROOT, 'register.js'), '-e', `
      require(${JSON.stringify(ROOT)}).__current();
      const api = require(${JSON.stringify(require.resolve('@opentelemetry/api', { paths: [ROOT] }))});
      api.trace.getTracer('t').startSpan('s').end();
      require(${JSON.stringify(ROOT)}).forceFlush().then(() => console.log('flushed'));`], {
      cwd: ROOT,
      encoding: 'utf8',
      timeout: 30_000,
      env: { ...cleanEnv(), OTEL_EXPORTER_OTLP_ENDPOINT: 'https://127.0.0.1:9', OTEL_METRICS_EXPORTER: 'none', OTEL_LOGS_EXPORTER: 'none', AUDITRACE_QUIET: 'true', AUDITRACE_SHUTDOWN_TIMEOUT_MS: '1000', OTEL_EXPORTER_OTLP_TIMEOUT: '1000', AUDITRACE_AUDIT_FILE: AUDIT_FILE },
    });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout.trim(), 'flushed');
    assert.match(r.stderr, /could not export traces to https:\/\/127\.0\.0\.1:9\/v1\/traces: connect ECONNREFUSED/, 'the export was tried over https');
    assert.doesNotMatch(r.stderr, /ExperimentalWarning|USE_MAIN_CONTEXT_DEFAULT_LOADER/);
  });

  it('a cache V8 refuses (right digest, wrong data) is ignored; no cache at all: compiled as require would', () => {
    const text = 'module.exports = { v: 3, file: __filename, dir: __dirname, resolved: require.resolve("node:fs"), run() {} };\n';
    const { file, dir } = tempBundle(text);
    let r = JSON.parse(node(['-e', loadAndPrint(file)]).stdout);
    assert.deepEqual(r, { status: 'absent', v: 3, same: true, file, dir, resolved: 'node:fs' });
    const digest = require('node:crypto').hash('sha256', fs.readFileSync(file), 'buffer');
    fs.writeFileSync(`${file}.${process.version}-${process.arch}.code-cache`, Buffer.concat([digest, Buffer.alloc(4096, 0xa5)]));
    r = JSON.parse(node(['-e', loadAndPrint(file)]).stdout);
    assert.deepEqual(r, { status: 'rejected', v: 3, same: true, file, dir, resolved: 'node:fs' });
  });

  it('a bundle that throws while loading leaves nothing in require.cache: the next require runs it again', () => {
    const { file } = tempBundle('globalThis.loads = (globalThis.loads ?? 0) + 1; if (globalThis.loads === 1) throw new Error("first load fails"); module.exports = { v: globalThis.loads };\n');
    const r = node(['-e', `
      const loader = require(${JSON.stringify(LOADER)});
      let message;
      try { loader.loadBundle(${JSON.stringify(file)}); } catch (err) { message = err.message; }
      console.log(JSON.stringify({ message, cached: ${JSON.stringify(file)} in require.cache, v: require(${JSON.stringify(file)}).v }));`]);
    assert.deepEqual(JSON.parse(r.stdout), { message: 'first load fails', cached: false, v: 2 });
  });
});
