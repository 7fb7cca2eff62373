'use strict';
// What users install: `npm pack` the repository (dist/ must already be built), install the tarball
// into a fresh application directory, and run that application the documented ways. This catches
// files missing from `files`, broken `exports`, and runtime needs met only by devDependencies.
const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { startOtlpReceiver } = require('../helpers/otlp-receiver');
const { cleanEnv, startApp, ROOT } = require('../helpers/run-app');

const SERVER = 2; // SpanKind.SERVER
const VERSION = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')).version;

/** Runs a command to completion, bounded in time; rejects with its output on failure. */
function exec(cmd, args, { cwd, timeoutMs, env = process.env }) {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => { stdout += d; });
    child.stderr.on('data', (d) => { stderr += d; });
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${cmd} ${args.join(' ')} did not finish within ${timeoutMs} ms\n${stdout}\n${stderr}`));
    }, timeoutMs);
    child.on('error', (err) => { clearTimeout(timer); reject(err); });
    child.on('exit', (code) => {
      clearTimeout(timer);
      if (code === 0) resolve({ stdout, stderr });
      else reject(new Error(`${cmd} ${args.join(' ')} exited ${code}\n${stdout}\n${stderr}`));
    });
  });
}

const APP_JS = `'use strict';
const http = require('node:http');
const server = http.createServer((req, res) => res.end('ok'));
server.listen(0, '127.0.0.1', () => {
  http.get({ host: '127.0.0.1', port: server.address().port, path: '/packed-cjs' }, (res) => {
    res.resume();
    res.on('end', () => { process.stdout.write('served ' + res.statusCode + '\\n'); server.close(); });
  });
});
`;
const APP_MJS = `import http from 'node:http';
const server = http.createServer((req, res) => res.end('ok'));
server.listen(0, '127.0.0.1', () => {
  http.get({ host: '127.0.0.1', port: server.address().port, path: '/packed-esm' }, (res) => {
    res.resume();
    res.on('end', () => { process.stdout.write('served ' + res.statusCode + '\\n'); server.close(); });
  });
});
`;

describe('pack: the npm tarball, installed in a fresh app, works', function () {
  this.timeout(300000);
  let tmp;
  let appDir;
  let tarball;
  let packedFiles;
  let rx;
  let running = [];

  before(async function () {
    this.timeout(240000);
    assert.ok(fs.existsSync(path.join(ROOT, 'dist', 'auditrace.js')), 'dist/ must be built first (npm run build)');
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'auditrace-pack-'));
    const { stdout } = await exec('npm', ['pack', '--json', '--pack-destination', tmp], { cwd: ROOT, timeoutMs: 60000 });
    const [info] = JSON.parse(stdout.slice(stdout.indexOf('[')));
    tarball = path.join(tmp, info.filename);
    packedFiles = info.files.map((f) => f.path);
    assert.ok(fs.existsSync(tarball), `tarball ${tarball}`);

    appDir = path.join(tmp, 'app');
    fs.mkdirSync(appDir);
    fs.writeFileSync(path.join(appDir, 'package.json'), JSON.stringify({ name: 'packed-app', version: '1.0.0', private: true }, null, 2));
    fs.writeFileSync(path.join(appDir, 'app.js'), APP_JS);
    fs.writeFileSync(path.join(appDir, 'app.mjs'), APP_MJS);
    await exec('npm', ['install', tarball, '--no-audit', '--no-fund', '--prefer-offline'], { cwd: appDir, timeoutMs: 180000 });
  });
  after(() => {
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });
  beforeEach(async () => {
    rx = await startOtlpReceiver();
    running = [];
  });
  afterEach(async () => {
    for (const a of running) a.child.kill('SIGKILL');
    await rx.close();
  });

  async function run(file, nodeArgs) {
    const a = startApp(path.join(appDir, file), {
      preload: 'none', nodeArgs, cwd: appDir, env: { OTEL_EXPORTER_OTLP_ENDPOINT: rx.url, OTEL_METRICS_EXPORTER: 'none' },
    });
    running.push(a);
    let timer;
    const timeout = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${file} did not exit within 30 s\n${a.stdout}\n${a.stderr}`)), 30000);
    });
    try {
      return await Promise.race([a.exited, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  function assertRanWithTelemetry({ code, stdout, stderr }, urlPath) {
    assert.equal(code, 0, stderr);
    assert.match(stdout, /^served 200$/m);
    assert.match(stderr, new RegExp(`^auditrace ${VERSION.replace(/\./g, '\\.')}: `, 'm'), `start-up line; stderr:\n${stderr}`);
    assert.doesNotMatch(stderr, /did not load|error|Cannot find/i, stderr);
    const spans = rx.spans().filter((s) => s.kind === SERVER && s.attributes['url.path'] === urlPath);
    assert.equal(spans.length, 1, `one server span for ${urlPath}; stderr:\n${stderr}`);
    assert.equal(spans[0].resource['telemetry.distro.name'], 'auditrace');
    assert.equal(spans[0].resource['telemetry.distro.version'], VERSION);
    assert.equal(spans[0].resource['service.name'], 'packed-app', 'service.name from the app\'s package.json');
  }

  it('the tarball holds the entry points and the built library, and no tests', () => {
    for (const f of ['package.json', 'register.js', 'register.mjs', 'dist/auditrace.js', `dist/auditrace.js.${process.version}-${process.arch}.code-cache`,
      'dist/lib/code-cache.js', 'dist/instrumentations/express.js', 'dist/lib/index.d.ts', 'dist/lib/index.js']) {
      assert.ok(packedFiles.includes(f), `${f} is in the tarball`);
    }
    assert.deepEqual(packedFiles.filter((f) => f.startsWith('test/')), [], 'no test files shipped');
  });

  it('node --require auditrace/register app.js: a span arrives with telemetry.distro.name=auditrace', async () => {
    assertRanWithTelemetry(await run('app.js', ['--require', 'auditrace/register']), '/packed-cjs');
  });

  it('node --import auditrace/register app.mjs: a span arrives with telemetry.distro.name=auditrace', async () => {
    assertRanWithTelemetry(await run('app.mjs', ['--import', 'auditrace/register']), '/packed-esm');
  });

  it('the installed package starts from its code cache; scripts/code-cache.js makes one where there is none (another Node)', async () => {
    const pkg = path.join(appDir, 'node_modules', 'auditrace');
    const cache = path.join(pkg, 'dist', `auditrace.js.${process.version}-${process.arch}.code-cache`);
    const status = async () => (await exec(process.execPath, ['--require', 'auditrace/register', '-e',
      'console.log(require(require("node:path").join(require.resolve("auditrace"), "..", "lib", "code-cache.js")).codeCacheStatus())'],
    { cwd: appDir, timeoutMs: 30000, env: { ...cleanEnv(), OTEL_TRACES_EXPORTER: 'none', OTEL_METRICS_EXPORTER: 'none', OTEL_LOGS_EXPORTER: 'none' } })).stdout.trim();
    assert.equal(await status(), 'accepted');
    fs.rmSync(cache);
    assert.equal(await status(), 'absent');
    const { stdout } = await exec(process.execPath, [path.join(pkg, 'scripts', 'code-cache.js')], { cwd: appDir, timeoutMs: 60000 });
    assert.match(stdout, /^code cache: dist\/auditrace\.js\.v[\d.]+-\w+\.code-cache \d+ KiB \(top level alone: \d+ KiB\)$/m);
    assert.equal(await status(), 'accepted');
  });

  it('the package entry points resolve from the app: require, import and the types', async () => {
    const probe = `
      const api = require('auditrace');
      for (const f of ['start', 'shutdown', 'forceFlush']) if (typeof api[f] !== 'function') throw new Error('require: no ' + f);
      import('auditrace').then((m) => {
        for (const f of ['start', 'shutdown', 'forceFlush']) if (typeof m[f] !== 'function') throw new Error('import: no ' + f);
        const pkg = require('auditrace/package.json');
        const types = require('node:path').join(require.resolve('auditrace/package.json'), '..', pkg.types);
        if (!require('node:fs').existsSync(types)) throw new Error('types file missing: ' + pkg.types);
        console.log('entry points ok ' + pkg.version);
      });
    `;
    const { stdout } = await exec(process.execPath, ['-e', probe], { cwd: appDir, timeoutMs: 30000 });
    assert.match(stdout, new RegExp(`entry points ok ${VERSION.replace(/\./g, '\\.')}`));
  });
});
