'use strict';
// One SDK per process, however auditrace is reached: loaded by --require and started again from
// the API, or loaded again inside worker threads. Each request yields one server span.
const assert = require('node:assert/strict');
const path = require('node:path');
const { startOtlpReceiver } = require('../helpers/otlp-receiver');
const { startApp } = require('../helpers/run-app');

const SERVER = 2; // SpanKind.SERVER
const CLIENT = 3; // SpanKind.CLIENT
const startupLines = (stderr) => stderr.split('\n').filter((l) => /^auditrace \S+: service\.name=/.test(l));
const alreadyStarted = (stderr) => stderr.split('\n').filter((l) => /already started/.test(l));
const pathOf = (s) => String(s.attributes['url.path'] ?? s.attributes['http.target'] ?? '');

describe('lifecycle: one SDK per process', function () {
  this.timeout(60000);
  let rx;
  let running;

  beforeEach(async () => {
    rx = await startOtlpReceiver();
    running = [];
  });
  afterEach(async () => {
    for (const a of running) a.child.kill('SIGKILL');
    await rx.close();
  });

  async function run(app, opts = {}) {
    const a = startApp(path.join('apps', app), {
      ...opts,
      env: { OTEL_EXPORTER_OTLP_ENDPOINT: rx.url, OTEL_METRICS_EXPORTER: 'none', ...(opts.env ?? {}) },
    });
    running.push(a);
    let timer;
    const timeout = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${app} did not exit within 20 s\n${a.stdout}\n${a.stderr}`)), 20000);
    });
    try {
      return await Promise.race([a.exited, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  describe('loaded twice: --require register plus start() from the API (twice)', () => {
    it('warns once with one "already started" line, and runs one SDK: one server span per request', async () => {
      const { code, stdout, stderr } = await run('life-double-start.js');
      assert.equal(code, 0, stderr);
      assert.match(stdout, /^served 3$/m);
      const warnings = alreadyStarted(stderr);
      assert.equal(warnings.length, 1, `one "already started" line; stderr:\n${stderr}`);
      assert.match(warnings[0], /^auditrace: warning: /);
      assert.equal(startupLines(stderr).length, 1, `one start-up line; stderr:\n${stderr}`);

      const server = rx.spans().filter((s) => s.kind === SERVER);
      assert.deepEqual(server.map(pathOf).sort(), ['/r0', '/r1', '/r2'], 'exactly one server span per request');
      const client = rx.spans().filter((s) => s.kind === CLIENT);
      assert.equal(client.length, 3, 'exactly one client span per request');
      const ids = rx.spans().map((s) => s.spanId);
      assert.equal(new Set(ids).size, ids.length, 'no span exported twice');
    });

    it('--require plus --import of the register file: one start-up line, one SDK', async () => {
      const { code, stderr } = await run('life-config-app.js', {
        nodeArgs: ['--import', path.resolve(__dirname, '../../register.mjs')],
      });
      assert.equal(code, 0, stderr);
      assert.equal(startupLines(stderr).length, 1, stderr);
      assert.ok(alreadyStarted(stderr).length <= 1, stderr);
      const server = rx.spans().filter((s) => s.kind === SERVER);
      assert.equal(server.length, 1, 'one server span for the one request');
    });
  });

  describe('worker threads', () => {
    const modes = [
      { name: 'the worker requires the register file itself', preload: 'require', env: { LIFE_WORKER_MODE: 'require' } },
      { name: 'the worker inherits --require from execArgv', preload: 'require', env: { LIFE_WORKER_MODE: 'inherit' } },
      { name: 'the worker inherits --import from execArgv', preload: 'import', env: { LIFE_WORKER_MODE: 'inherit' } },
    ];
    for (const m of modes) {
      it(`${m.name}: one start-up line, and the main thread's spans arrive once`, async () => {
        const { code, stdout, stderr } = await run('life-worker.js', { preload: m.preload, env: m.env });
        assert.equal(code, 0, stderr);
        // Otherwise this test would prove nothing: auditrace did run inside the worker.
        assert.match(stdout, /^worker done auditrace-loaded=true$/m);
        assert.match(stdout, /^main done$/m);
        assert.equal(startupLines(stderr).length, 1, `one start-up line; stderr:\n${stderr}`);
        assert.equal(alreadyStarted(stderr).length, 0, `a worker is not a second start; stderr:\n${stderr}`);
        assert.doesNotMatch(stderr, /error/i, stderr);

        // The main thread's server handled both requests; the main thread made one of them.
        const server = rx.spans().filter((s) => s.kind === SERVER);
        assert.deepEqual(server.map(pathOf).sort(), ['/from-main', '/from-worker'], 'one server span per request, each once');
        const client = rx.spans().filter((s) => s.kind === CLIENT);
        assert.equal(client.filter((s) => s.name === 'GET').length, 1, 'the main thread\'s client span, once (the worker runs no SDK)');
        const ids = rx.spans().map((s) => s.spanId);
        assert.equal(new Set(ids).size, ids.length, 'no span exported twice');
      });
    }
  });
});
