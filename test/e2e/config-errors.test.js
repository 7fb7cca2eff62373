'use strict';
// Bad configuration, as a user meets it: `node --require auditrace/register app.js` with one
// invalid variable. auditrace prints ONE line that names the variable, shows the value (escaped,
// so a hostile value cannot forge log lines), says what is accepted and what is used instead, and
// the application runs anyway. With AUDITRACE_STRICT=true the process stops (exit 78) before any
// application code runs.
const assert = require('node:assert/strict');
const path = require('node:path');
const { startOtlpReceiver } = require('../helpers/otlp-receiver');
const { startApp } = require('../helpers/run-app');

const EXIT_CONFIG = 78;
const INJECTED = 'abc\n\u001b[31mFAKE auditrace: ok';

/** Every bad-config case: the variable, its bad value, and what the run points exports at. */
const CASES = [
  { variable: 'OTEL_TRACES_SAMPLER_ARG', value: 'abc' },
  { variable: 'OTEL_EXPORTER_OTLP_ENDPOINT', value: '::nope' },
  { variable: 'OTEL_NODE_ENABLED_INSTRUMENTATIONS', value: 'http,nosuchthing' },
  { variable: 'OTEL_EXPORTER_OTLP_TIMEOUT', value: '-5' },
  { variable: 'OTEL_SDK_DISABLED', value: 'maybe' },
  { variable: 'OTEL_EXPORTER_OTLP_PROTOCOL', value: 'grpc' },
  { variable: 'OTEL_EXPORTER_OTLP_TRACES_ENDPOINT', value: 'collector:4318' },
  { variable: 'OTEL_EXPORTER_OTLP_HEADERS', value: 'x-api-key' },
  { variable: 'OTEL_TRACES_SAMPLER_ARG', value: INJECTED },
  { variable: 'OTEL_EXPORTER_OTLP_ENDPOINT', value: INJECTED },
  { variable: 'OTEL_NODE_ENABLED_INSTRUMENTATIONS', value: INJECTED },
  { variable: 'OTEL_EXPORTER_OTLP_PROTOCOL', value: INJECTED },
];

const label = (v) => JSON.stringify(v);
const wordRe = (variable) => new RegExp(`(^|[^A-Z0-9_])${variable}([^A-Z0-9_]|$)`);

/** Asserts the one-line error contract for `variable`=`value` on `stderr`; returns the line. */
function assertOneErrorLine(stderr, variable, value) {
  const lines = stderr.split('\n');
  const naming = lines.filter((l) => wordRe(variable).test(l));
  assert.equal(naming.length, 1, `exactly one stderr line names ${variable}; stderr:\n${stderr}`);
  const line = naming[0];
  assert.match(line, /^auditrace: /, 'the line is auditrace\'s own, prefixed');
  if (value === INJECTED) {
    // Shown escaped on that same line: the injected newline and escape do not reach the terminal.
    assert.ok(line.includes('abc') && line.includes('FAKE auditrace: ok'), `the value is shown on the line: ${line}`);
    assert.ok(!lines.some((l) => l.startsWith('FAKE')), `the injected newline forged a line:\n${stderr}`);
    assert.ok(!stderr.includes('\u001b'), 'no raw ESC character on stderr');
    assert.ok(!stderr.includes('\r'), 'no raw carriage return on stderr');
  } else {
    const quoted = [`"${value}"`, `'${value}'`, `\`${value}\``];
    assert.ok(quoted.some((q) => line.includes(q)), `the value ${value} is shown quoted: ${line}`);
  }
  assert.match(line, /\bexpected \S.*\busing \S/, `states the accepted form ("expected ...") and the fallback ("using ..."): ${line}`);
  assert.doesNotMatch(stderr, /\n\s+at /, 'no stack trace');
  return line;
}

describe('config errors: one clear line per bad variable, and the app runs anyway', function () {
  this.timeout(60000);
  let rx;
  let running;

  before(async () => { rx = await startOtlpReceiver(); });
  after(async () => { await rx.close(); });
  beforeEach(() => { running = []; });
  afterEach(() => { for (const a of running) a.child.kill('SIGKILL'); });

  async function run(app, env, { preload = 'require', timeoutMs = 20000 } = {}) {
    const a = startApp(path.join('apps', app), {
      preload,
      env: { OTEL_EXPORTER_OTLP_ENDPOINT: rx.url, AUDITRACE_SHUTDOWN_TIMEOUT_MS: '2000', ...env },
    });
    running.push(a);
    let timer;
    const timeout = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${app} did not exit within ${timeoutMs} ms\n${a.stdout}\n${a.stderr}`)), timeoutMs);
    });
    try {
      return await Promise.race([a.exited, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  for (const { variable, value } of CASES) {
    describe(`${variable}=${label(value)}`, () => {
      it('prints one line (variable, escaped value, expected ..., using ...) and the app still runs and serves', async () => {
        const { code, signal, stdout, stderr } = await run('life-config-app.js', { [variable]: value });
        assertOneErrorLine(stderr, variable, value);
        assert.equal(signal, null);
        assert.equal(code, 0, `exit code\n${stderr}`);
        assert.match(stdout, /^app started$/m);
        assert.match(stdout, /^served 200$/m);
      });

      it('with AUDITRACE_STRICT=true the process exits 78 before application code runs', async () => {
        const { code, stdout, stderr } = await run('life-config-app.js', { [variable]: value, AUDITRACE_STRICT: 'true' });
        assert.equal(code, EXIT_CONFIG, `exit code\n${stderr}`);
        assert.doesNotMatch(stdout, /app started/, 'application code must not have run');
        assertOneErrorLine(stderr, variable, value);
      });
    });
  }

  describe('with --import (ESM app)', () => {
    it('a bad value: one line, and the app still runs', async () => {
      const { code, stdout, stderr } = await run('life-config-app.mjs', { OTEL_TRACES_SAMPLER_ARG: INJECTED }, { preload: 'import' });
      assertOneErrorLine(stderr, 'OTEL_TRACES_SAMPLER_ARG', INJECTED);
      assert.equal(code, 0, stderr);
      assert.match(stdout, /^served 200$/m);
    });

    it('AUDITRACE_STRICT=true: exit 78 before the ESM app runs', async () => {
      const { code, stdout, stderr } = await run('life-config-app.mjs',
        { OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc', AUDITRACE_STRICT: 'true' }, { preload: 'import' });
      assert.equal(code, EXIT_CONFIG, stderr);
      assert.doesNotMatch(stdout, /app started/);
      assertOneErrorLine(stderr, 'OTEL_EXPORTER_OTLP_PROTOCOL', 'grpc');
    });
  });

  it('several bad variables: one line each, and the app runs', async () => {
    const bad = { OTEL_TRACES_SAMPLER_ARG: 'abc', OTEL_EXPORTER_OTLP_TIMEOUT: '-5', OTEL_SDK_DISABLED: 'maybe' };
    const { code, stdout, stderr } = await run('life-config-app.js', bad);
    for (const [k, v] of Object.entries(bad)) assertOneErrorLine(stderr, k, v);
    assert.equal(code, 0, stderr);
    assert.match(stdout, /^served 200$/m);
  });

  it('the app with a bad base endpoint keeps running (exports fall back to the default endpoint)', async () => {
    const { code, stdout, stderr } = await run('life-config-app.js', { OTEL_EXPORTER_OTLP_ENDPOINT: '::nope' });
    assert.equal(code, 0, stderr);
    assert.match(stdout, /^served 200$/m);
    assert.match(stderr, /traces=http:\/\/localhost:4318\/v1\/traces/, 'the start-up line shows the default endpoint in use');
  });

  describe('a hostile value in a variable that is accepted cannot forge lines either', () => {
    const HOSTILE = [
      // Percent-decoded by the OTel key=value format, then shown in the start-up line.
      { variable: 'OTEL_RESOURCE_ATTRIBUTES', value: 'service.instance.id=x%0A%1B[31mFAKE auditrace: ok' },
      { variable: 'OTEL_RESOURCE_ATTRIBUTES', value: 'service.name=x%0A%1B[31mFAKE auditrace: ok' },
      { variable: 'OTEL_SERVICE_NAME', value: INJECTED },
      // The WHATWG URL parser drops newlines silently, so this value parses as a URL.
      { variable: 'OTEL_EXPORTER_OTLP_TRACES_ENDPOINT', value: 'http://127.0.0.1:9/v1/traces\n\u001b[31mFAKE auditrace: ok' },
      { variable: 'OTEL_EXPORTER_OTLP_ENDPOINT', value: 'http://127.0.0.1:9\n\u001b[31mFAKE auditrace: ok' },
    ];
    for (const { variable, value } of HOSTILE) {
      it(`${variable}=${label(value)}: no forged line, no raw escape on stderr, and the app runs`, async () => {
        const { code, stdout, stderr } = await run('life-config-app.js', {
          [variable]: value, AUDITRACE_SHUTDOWN_TIMEOUT_MS: '500', OTEL_METRICS_EXPORTER: 'none', OTEL_LOGS_EXPORTER: 'none',
        });
        assert.equal(code, 0, stderr);
        assert.match(stdout, /^served 200$/m);
        const forged = stderr.split('\n').filter((l) => !/^auditrace[: ]/.test(l) && l !== '');
        assert.deepEqual(forged, [], `every stderr line is auditrace's own; stderr:\n${JSON.stringify(stderr)}`);
        assert.ok(!stderr.includes('\u001b'), `no raw ESC character on stderr: ${JSON.stringify(stderr)}`);
      });
    }
  });

  it('a good configuration prints no error line', async () => {
    const { code, stderr } = await run('life-config-app.js', { OTEL_TRACES_SAMPLER_ARG: '0.5', OTEL_EXPORTER_OTLP_TIMEOUT: '500' });
    assert.equal(code, 0);
    assert.doesNotMatch(stderr, /invalid|expected/);
  });
});
