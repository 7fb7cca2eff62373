'use strict';
// Shutdown as a user's process lives it: a signal or the natural end of the program flushes what
// is buffered to a real OTLP receiver, and the process then ends exactly as it would have without
// auditrace (killed by the signal, shell status 128+n; or with the app's own exit code).
const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const http = require('node:http');
const net = require('node:net');
const path = require('node:path');
const { startOtlpReceiver } = require('../helpers/otlp-receiver');
const { startApp, cleanEnv, ROOT, FIXTURES } = require('../helpers/run-app');

const SHUTDOWN_TIMEOUT_MS = 5000; // AUDITRACE_SHUTDOWN_TIMEOUT_MS default
const MARGIN_MS = 1500;

const appSpans = (rx) => rx.spans().filter((s) => s.name.startsWith('life-span-'));
const distinctNames = (spans) => new Set(spans.map((s) => s.name)).size;

/** A port nothing listens on: bound, then released. */
async function closedPort() {
  const srv = net.createServer();
  await new Promise((resolve) => srv.listen(0, '127.0.0.1', resolve));
  const { port } = srv.address();
  await new Promise((resolve) => srv.close(resolve));
  return port;
}

/** A TCP server that accepts connections and never answers: a hung collector. */
async function blackHole() {
  const sockets = new Set();
  const srv = net.createServer((sock) => { sockets.add(sock); sock.on('error', () => {}); sock.on('close', () => sockets.delete(sock)); });
  await new Promise((resolve) => srv.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${srv.address().port}`,
    close: () => { for (const s of sockets) s.destroy(); return new Promise((resolve) => srv.close(resolve)); },
  };
}

/**
 * `sh -c 'node --require register app ; echo "status=$?"'`: what a shell (or a container
 * entrypoint script) sees. The app prints `ready pid=<node pid>` so the test can signal node itself.
 */
function startViaShell(fixture, env = {}) {
  const child = spawn('sh', ['-c', '"$LIFE_NODE" --require "$LIFE_REGISTER" "$LIFE_APP"; echo "status=$?"'], {
    cwd: path.join(FIXTURES, 'apps'),
    env: {
      ...cleanEnv(),
      ...env,
      LIFE_NODE: process.execPath,
      LIFE_REGISTER: path.join(ROOT, 'register.js'),
      LIFE_APP: path.join(FIXTURES, 'apps', fixture),
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  let onData = () => {};
  child.stdout.on('data', (d) => { stdout += d; onData(); });
  child.stderr.on('data', (d) => { stderr += d; });
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  const run = {
    child,
    nodePid: undefined,
    get stdout() { return stdout; },
    get stderr() { return stderr; },
    exited,
    ready(timeoutMs = 15000) {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no "ready" within ${timeoutMs} ms\n${stdout}\n${stderr}`)), timeoutMs);
        onData = () => {
          const m = /ready pid=(\d+)/.exec(stdout);
          if (m) { clearTimeout(timer); run.nodePid = Number(m[1]); resolve(run.nodePid); }
        };
        onData();
      });
    },
    kill() {
      if (run.nodePid) try { process.kill(run.nodePid, 'SIGKILL'); } catch { /* gone */ }
      child.kill('SIGKILL');
    },
  };
  return run;
}

/** Resolves with what `p` resolves to, or rejects after `ms`: no test waits forever. */
function within(p, ms, what) {
  let timer;
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`${what} did not happen within ${ms} ms`)), ms); }),
  ]);
}

describe('shutdown: signals and the natural end flush telemetry, then the process ends as it would have', function () {
  this.timeout(60000);
  let rx;
  let running;
  let cleanups;

  beforeEach(async () => {
    rx = await startOtlpReceiver();
    running = [];
    cleanups = [];
  });
  afterEach(async () => {
    for (const r of running) r.kill('SIGKILL');
    for (const c of cleanups) await c();
    await rx.close();
  });

  const start = (fixture, env = {}) => {
    const a = startApp(path.join('apps', fixture), { env: { OTEL_EXPORTER_OTLP_ENDPOINT: rx.url, ...env } });
    running.push(a);
    return a;
  };
  const startSh = (fixture, env = {}) => {
    const r = startViaShell(fixture, { OTEL_EXPORTER_OTLP_ENDPOINT: rx.url, ...env });
    running.push(r);
    return r;
  };

  describe('SIGTERM right after the app emitted 500 spans (default batch settings)', () => {
    it('exports all 500 spans, then the process dies by SIGTERM within the shutdown timeout', async () => {
      const app = start('life-500-spans.js');
      await app.waitForOutput(/ready pid=\d+/);
      // OTEL_BSP_SCHEDULE_DELAY is 5000 ms and 500 < 512 spans per batch: nothing is sent yet.
      assert.equal(appSpans(rx).length, 0, 'no span may have been exported before the signal');

      const t0 = Date.now();
      app.child.kill('SIGTERM');
      const { code, signal } = await within(app.exited, SHUTDOWN_TIMEOUT_MS + MARGIN_MS, 'exit after SIGTERM');
      const elapsed = Date.now() - t0;

      assert.equal(signal, 'SIGTERM', `the process must die by SIGTERM (code=${code})\n${app.stderr}`);
      assert.equal(code, null);
      assert.ok(elapsed < SHUTDOWN_TIMEOUT_MS + MARGIN_MS, `took ${elapsed} ms`);
      const spans = appSpans(rx);
      assert.equal(spans.length, 500, `spans at the receiver when the process ended\n${app.stderr}`);
      assert.equal(distinctNames(spans), 500, 'each of the 500 spans exactly once');
      assert.equal(spans[0].resource['telemetry.distro.name'], 'auditrace');
    });

    it('a shell sees status 143 (128 + SIGTERM) and all 500 spans arrive', async () => {
      const r = startSh('life-500-spans.js');
      const pid = await r.ready();
      assert.equal(appSpans(rx).length, 0);
      const t0 = Date.now();
      process.kill(pid, 'SIGTERM');
      await within(r.exited, SHUTDOWN_TIMEOUT_MS + MARGIN_MS, 'exit after SIGTERM');
      const elapsed = Date.now() - t0;
      assert.match(r.stdout, /^status=143$/m, `stdout:\n${r.stdout}\nstderr:\n${r.stderr}`);
      assert.ok(elapsed < SHUTDOWN_TIMEOUT_MS + MARGIN_MS, `took ${elapsed} ms`);
      assert.equal(appSpans(rx).length, 500);
      assert.equal(distinctNames(appSpans(rx)), 500);
    });
  });

  describe('SIGTERM while the collector cannot take the data', () => {
    for (const down of ['a closed port', 'a receiver answering 503', 'a collector that accepts connections and never answers']) {
      it(`${down}: the process still ends within AUDITRACE_SHUTDOWN_TIMEOUT_MS, with status 143`, async () => {
        let endpoint = rx.url;
        if (down === 'a closed port') endpoint = `http://127.0.0.1:${await closedPort()}`;
        else if (down.startsWith('a receiver')) rx.setStatus(503);
        else {
          const hole = await blackHole();
          cleanups.push(hole.close);
          endpoint = hole.url;
        }
        const r = startSh('life-500-spans.js', { OTEL_EXPORTER_OTLP_ENDPOINT: endpoint });
        const pid = await r.ready();
        const t0 = Date.now();
        process.kill(pid, 'SIGTERM');
        await within(r.exited, SHUTDOWN_TIMEOUT_MS + 10000, 'exit after SIGTERM');
        const elapsed = Date.now() - t0;
        assert.match(r.stdout, /^status=143$/m, `stdout:\n${r.stdout}\nstderr:\n${r.stderr}`);
        assert.ok(elapsed < SHUTDOWN_TIMEOUT_MS + MARGIN_MS, `exit took ${elapsed} ms, allowed < ${SHUTDOWN_TIMEOUT_MS + MARGIN_MS}`);
        assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
        assert.equal(appSpans(rx).length, 0, 'nothing was accepted');
      });
    }

    it('with AUDITRACE_SHUTDOWN_TIMEOUT_MS=1000 the wait is shorter', async () => {
      rx.setStatus(503);
      const r = startSh('life-500-spans.js', { AUDITRACE_SHUTDOWN_TIMEOUT_MS: '1000' });
      const pid = await r.ready();
      const t0 = Date.now();
      process.kill(pid, 'SIGTERM');
      await within(r.exited, 15000, 'exit after SIGTERM');
      const elapsed = Date.now() - t0;
      assert.match(r.stdout, /^status=143$/m, r.stderr);
      assert.ok(elapsed < 1000 + MARGIN_MS, `exit took ${elapsed} ms, allowed < ${1000 + MARGIN_MS}`);
    });
  });

  it('SIGINT: spans are flushed and a shell sees status 130 (128 + SIGINT)', async () => {
    const r = startSh('life-500-spans.js');
    const pid = await r.ready();
    const t0 = Date.now();
    process.kill(pid, 'SIGINT');
    await within(r.exited, SHUTDOWN_TIMEOUT_MS + MARGIN_MS, 'exit after SIGINT');
    assert.match(r.stdout, /^status=130$/m, `stdout:\n${r.stdout}\nstderr:\n${r.stderr}`);
    assert.ok(Date.now() - t0 < SHUTDOWN_TIMEOUT_MS + MARGIN_MS);
    assert.equal(appSpans(rx).length, 500);
  });

  it('SIGINT: the child itself ends by the signal SIGINT', async () => {
    const app = start('life-500-spans.js');
    await app.waitForOutput(/ready pid=\d+/);
    app.child.kill('SIGINT');
    const { code, signal } = await within(app.exited, SHUTDOWN_TIMEOUT_MS + MARGIN_MS, 'exit after SIGINT');
    assert.equal(signal, 'SIGINT', `code=${code}\n${app.stderr}`);
    assert.equal(appSpans(rx).length, 500);
  });

  it('an app with its own SIGTERM handler decides: its handler runs, it exits 0, and the spans are flushed too', async () => {
    const app = start('life-own-sigterm.js');
    await app.waitForOutput(/ready pid=\d+/);
    assert.equal(appSpans(rx).length, 0);
    app.child.kill('SIGTERM');
    const { code, signal } = await within(app.exited, SHUTDOWN_TIMEOUT_MS + MARGIN_MS, 'exit after SIGTERM');
    assert.match(app.stdout, /^app handler$/m, 'the application handler ran');
    assert.equal(signal, null, `the app exits by itself, not by the signal\n${app.stderr}`);
    assert.equal(code, 0, app.stderr);
    assert.equal(appSpans(rx).length, 50, `spans flushed before the app's own exit\n${app.stderr}`);
  });

  it('a second SIGTERM while flushing ends the process at once', async () => {
    rx.setStatus(503); // the first flush would wait the whole shutdown timeout
    const app = start('life-500-spans.js');
    await app.waitForOutput(/ready pid=\d+/);
    const t0 = Date.now();
    app.child.kill('SIGTERM');
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(app.child.exitCode, null, 'still flushing after the first SIGTERM');
    app.child.kill('SIGTERM');
    const { signal } = await within(app.exited, SHUTDOWN_TIMEOUT_MS + MARGIN_MS, 'exit after the second SIGTERM');
    assert.equal(signal, 'SIGTERM');
    assert.ok(Date.now() - t0 < 300 + 1000, `took ${Date.now() - t0} ms`);
  });

  it('an app that drains in-flight requests on SIGTERM (server.close, no exit): the drained request is exported', async () => {
    // The common graceful shutdown: the app's handler stops accepting connections and the process
    // ends once in-flight requests are done. The request being drained is part of the audit trail.
    const app = start('life-drain.js');
    const [, port] = await app.waitForOutput(/ready pid=\d+ port=(\d+)/);
    const slowGet = () => new Promise((resolve, reject) => {
      http.get({ host: '127.0.0.1', port: Number(port), path: '/slow', agent: false }, (res) => {
        let b = '';
        res.on('data', (d) => { b += d; });
        res.on('end', () => resolve(b));
      }).on('error', reject);
    });
    assert.equal(await slowGet(), 'slow done', 'a first GET /slow, completed before the signal');
    const body = slowGet();
    await app.waitForOutput(/slow request received[\s\S]*slow request received/);
    app.child.kill('SIGTERM');
    assert.equal(await body, 'slow done', 'the in-flight request completes');
    const { code, signal } = await within(app.exited, SHUTDOWN_TIMEOUT_MS + MARGIN_MS, 'exit after draining');
    assert.match(app.stdout, /app handler[\s\S]*drained/);
    assert.equal(signal, null);
    assert.equal(code, 0, app.stderr);
    const slow = rx.spans().filter((s) => s.kind === 2 && /\/slow/.test(String(s.attributes['url.path'] ?? s.attributes['http.target'] ?? s.name)));
    assert.equal(slow.length, 2, 'the server spans of both GET /slow (the one completed before SIGTERM and the one drained after it) '
      + `must reach the receiver; got: ${JSON.stringify(rx.spans().map((s) => [s.name, s.attributes['url.path']]))}`);
  });

  it('an app that drains on SIGTERM with a collector that never answers still ends within the shutdown timeout', async () => {
    const hole = await blackHole();
    cleanups.push(hole.close);
    const app = start('life-drain.js', { OTEL_EXPORTER_OTLP_ENDPOINT: hole.url, OTEL_METRIC_EXPORT_INTERVAL: '500', AUDITRACE_SHUTDOWN_TIMEOUT_MS: '1500' });
    await app.waitForOutput(/ready pid=\d+ port=(\d+)/);
    await new Promise((r) => setTimeout(r, 1200)); // exports are on the wire
    const t0 = Date.now();
    app.child.kill('SIGTERM');
    const { code } = await within(app.exited, 30000, 'exit after draining');
    const elapsed = Date.now() - t0;
    assert.equal(code, 0, app.stderr);
    assert.ok(elapsed < 1500 + MARGIN_MS, `exit took ${elapsed} ms, allowed < ${1500 + MARGIN_MS}`);
  });

  describe('the natural end of a script (beforeExit)', () => {
    it('exports all 10 spans and exits 0', async () => {
      const app = start('life-10-spans.js');
      const { code, signal } = await within(app.exited, SHUTDOWN_TIMEOUT_MS + MARGIN_MS, 'natural exit');
      assert.equal(signal, null);
      assert.equal(code, 0, app.stderr);
      assert.match(app.stdout, /script done/);
      assert.equal(appSpans(rx).length, 10, app.stderr);
      assert.equal(distinctNames(appSpans(rx)), 10);
    });

    it('keeps the exit code the script set (process.exitCode = 3)', async () => {
      const app = start('life-10-spans.js', { LIFE_EXIT_CODE: '3' });
      const { code, signal } = await within(app.exited, SHUTDOWN_TIMEOUT_MS + MARGIN_MS, 'natural exit');
      assert.equal(signal, null);
      assert.equal(code, 3, app.stderr);
      assert.equal(appSpans(rx).length, 10, app.stderr);
    });

    it("lets the app's own asynchronous beforeExit work finish, and keeps the exit code it sets", async () => {
      // Without auditrace this fixture prints `app cleanup done` and exits 4 (checked below).
      const bare = startApp(path.join('apps', 'life-beforeexit.js'), { preload: 'none' });
      running.push(bare);
      const without = await within(bare.exited, 10000, 'natural exit without auditrace');
      assert.equal(without.code, 4);
      assert.match(without.stdout, /app cleanup done/);

      const app = start('life-beforeexit.js');
      const { code, signal } = await within(app.exited, SHUTDOWN_TIMEOUT_MS + MARGIN_MS, 'natural exit');
      assert.equal(signal, null);
      assert.match(app.stdout, /app cleanup done/, `the app's beforeExit work was cut short\n${app.stderr}`);
      assert.equal(code, 4, 'the exit code the app set in its beforeExit work');
      assert.equal(appSpans(rx).length, 10);
    });

    it('exports on the wire to a collector that never answers do not hold the exit past the shutdown timeout', async () => {
      // Each export would otherwise keep the loop alive for the whole OTLP timeout (10 s, and again
      // per retry), and beforeExit, where the bounded final flush runs, would come only after it.
      const hole = await blackHole();
      cleanups.push(hole.close);
      const t0 = Date.now();
      const app = start('life-linger.js', {
        OTEL_EXPORTER_OTLP_ENDPOINT: hole.url, OTEL_METRIC_EXPORT_INTERVAL: '500', OTEL_BSP_SCHEDULE_DELAY: '200',
        AUDITRACE_SHUTDOWN_TIMEOUT_MS: '1000', LIFE_WORK_MS: '1500',
      });
      const { code } = await within(app.exited, 30000, 'natural exit');
      const elapsed = Date.now() - t0;
      assert.equal(code, 0, app.stderr);
      assert.match(app.stdout, /script done/);
      assert.ok(elapsed < 1500 + 1000 + MARGIN_MS, `exit took ${elapsed} ms, allowed < ${1500 + 1000 + MARGIN_MS}`);
    });

    it('does not hold the exit when the collector is down', async () => {
      rx.setStatus(503);
      const t0 = Date.now();
      const app = start('life-10-spans.js', { LIFE_EXIT_CODE: '3' });
      const { code } = await within(app.exited, SHUTDOWN_TIMEOUT_MS + 10000, 'natural exit');
      assert.equal(code, 3, app.stderr);
      assert.ok(Date.now() - t0 < SHUTDOWN_TIMEOUT_MS + 3000, `took ${Date.now() - t0} ms`);
    });
  });

  describe('programmatic shutdown()', () => {
    for (const how of ['--require register', 'start() from the API']) {
      it(`flushes before it resolves (${how})`, async () => {
        const app = how === 'start() from the API'
          ? (() => {
            const a = startApp(path.join('apps', 'life-programmatic-shutdown.js'), {
              preload: 'none', env: { OTEL_EXPORTER_OTLP_ENDPOINT: rx.url, LIFE_START: 'api' },
            });
            running.push(a);
            return a;
          })()
          : start('life-programmatic-shutdown.js');
        await app.waitForOutput(/shutdown done|shutdown rejected/);
        assert.match(app.stdout, /shutdown done/);
        // The app is still running: only shutdown() can have sent these.
        assert.equal(app.child.exitCode, null);
        assert.equal(appSpans(rx).length, 7, app.stderr);
        // After shutdown() the signal hooks are gone: SIGTERM ends the process at once.
        app.child.kill('SIGTERM');
        const { signal } = await within(app.exited, 3000, 'exit after SIGTERM');
        assert.equal(signal, 'SIGTERM');
      });
    }
  });
});
