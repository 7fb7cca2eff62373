'use strict';
// Each example in examples/<name>/ runs the way its README says: the first `node …` command of the
// README that preloads the repository's register file, from the example's folder. One request
// answers 200, the audit file gets the example's own record and the http_request access record of
// that request, and a test OTLP receiver gets the SERVER span the records point at.
const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { startOtlpReceiver } = require('../helpers/otlp-receiver');
const { cleanEnv, ROOT } = require('../helpers/run-app');

const EXAMPLES = [
  { name: 'http', request: '/', event: 'greeting_sent', route: undefined },
  { name: 'express', request: '/patients/p-4411', event: 'sensitive_read', route: '/patients/:id' },
  // Fastify's route comes from its diagnostics channel (README says so).
  { name: 'fastify', request: '/patients/p-4411', event: 'sensitive_read', route: '/patients/:id' },
  { name: 'esm', request: '/', event: 'greeting_sent', route: undefined },
];

/** The README's command that runs the example from its folder with the repository's register file. */
function readmeCommand(dir) {
  const readme = fs.readFileSync(path.join(dir, 'README.md'), 'utf8');
  const commands = [...readme.matchAll(/```(?:sh|bash)\n([\s\S]*?)```/g)]
    .flatMap((m) => m[1].split('\n'))
    .map((l) => l.trim())
    .filter((l) => /(^|\s)node\s/.test(l) && /--(require|import)\s+\.\.\/\.\.\/register\.m?js\b/.test(l));
  assert.ok(commands.length > 0, `${dir}/README.md shows no "node --require|--import ../../register…" command`);
  // `A=b C=d node args…`: leading assignments become the environment, the rest the arguments.
  const words = commands[0].replace(/#.*$/, '').trim().split(/\s+/);
  const env = {};
  while (words.length > 0 && /^[A-Z_][A-Z0-9_]*=/.test(words[0])) {
    const w = words.shift();
    env[w.slice(0, w.indexOf('='))] = w.slice(w.indexOf('=') + 1);
  }
  assert.equal(words.shift(), 'node', `the command starts with node: ${commands[0]}`);
  return { command: commands[0], env, args: words };
}

function readRecords(file) {
  if (!fs.existsSync(file)) return [];
  return fs.readFileSync(file, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));
}

async function poll(fn, what, timeoutMs = 10000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('examples run the way their READMEs say', function () {
  this.timeout(60000);
  let rx;
  let tmp;
  before(async () => {
    rx = await startOtlpReceiver();
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'auditrace-examples-'));
  });
  after(async () => {
    await rx?.close();
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });

  for (const ex of EXAMPLES) {
    describe(`examples/${ex.name}`, () => {
      const dir = path.join(ROOT, 'examples', ex.name);
      let app;
      afterEach(async () => {
        if (app && app.exitCode === null && app.signalCode === null) {
          app.kill('SIGKILL');
          await new Promise((r) => app.once('exit', r));
        }
      });

      it(`answers ${ex.request} with 200, writes ${ex.event} and http_request, and exports the SERVER span`, async () => {
        const { command, env: readmeEnv, args } = readmeCommand(dir);
        const auditFile = path.join(tmp, `${ex.name}.jsonl`);
        const service = readmeEnv.OTEL_SERVICE_NAME ?? `example-${ex.name}`;
        app = spawn(process.execPath, args, {
          cwd: dir,
          env: {
            ...cleanEnv(),
            ...readmeEnv,
            PORT: '0',
            AUDITRACE_AUDIT_FILE: auditFile,
            OTEL_EXPORTER_OTLP_ENDPOINT: rx.url,
            OTEL_BSP_SCHEDULE_DELAY: '100',
            OTEL_METRICS_EXPORTER: 'none',
          },
          stdio: ['ignore', 'pipe', 'pipe'],
        });
        let out = '';
        app.stdout.on('data', (d) => { out += d; });
        app.stderr.on('data', (d) => { out += d; });
        const exited = new Promise((r) => app.once('exit', (code, signal) => r({ code, signal })));
        const port = await poll(() => out.match(/listening on http:\/\/[^:]+:(\d+)/)?.[1], `"listening on" from ${command}\n${out}`);

        const res = await fetch(`http://127.0.0.1:${port}${ex.request}`);
        await res.text();
        assert.equal(res.status, 200, out);

        const records = await poll(() => {
          const r = readRecords(auditFile);
          return r.some((x) => x['event.name'] === 'http_request') ? r : undefined;
        }, `the http_request record in ${auditFile}\n${out}`);
        const own = records.find((r) => r['event.name'] === ex.event);
        const access = records.find((r) => r['event.name'] === 'http_request');
        assert.ok(own, `a ${ex.event} record: ${JSON.stringify(records)}`);
        assert.equal(access['http.response.status_code'], 200);
        assert.equal(access['url.path'], ex.request);
        assert.equal(access['http.route'], ex.route);
        assert.equal(own['service.name'], service);
        assert.equal(own['request.id'], access['request.id'], 'one request id for both records');
        assert.match(own.trace_id ?? '', /^[0-9a-f]{32}$/, 'the record carries the trace of its request');
        if (ex.event === 'sensitive_read') {
          assert.equal(own['user.target.id'], 'p-4411');
          assert.equal(own['object.type'], 'patient');
          assert.equal(own.severity, 'WARN');
        }

        const span = await rx.waitFor(() => rx.spans().find((s) => s.kind === 2 && s.traceId === own.trace_id), { timeoutMs: 10000 });
        assert.equal(span.resource['service.name'], service);
        assert.equal(span.attributes['http.request.method'], 'GET');
        assert.equal(span.attributes['request.id'], own['request.id']);
        assert.equal(span.spanId, access.span_id, 'the access record points at the SERVER span');
        const withEvent = await rx.waitFor(() => rx.spans().find((s) => s.traceId === own.trace_id && s.spanId === own.span_id), { timeoutMs: 10000 });
        assert.ok(withEvent.events.some((e) => e.name === ex.event), `the span active at the audit call has a span event ${ex.event}`);

        // Ctrl-C / SIGTERM ends it as the README says, after flushing.
        app.kill('SIGTERM');
        const { code, signal } = await exited;
        assert.ok(signal === 'SIGTERM' || code === 143, `ended by SIGTERM (code ${code}, signal ${signal})\n${out}`);
      });
    });
  }
});
