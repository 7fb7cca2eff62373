'use strict';
// When access records are written (AUDITRACE_ACCESS_RECORD_WRITE): by default at the end of the
// event-loop turn in which the response went out, all of the turn's records together; an exit or
// an uncaught exception in that same turn must still find them written.
const assert = require('node:assert/strict');
const fs = require('node:fs');
const http = require('node:http');
const os = require('node:os');
const path = require('node:path');
const { startApp } = require('../helpers/run-app.js');
const { recordHash } = require('../../dist/lib/audit/chain.js');

const records = (file) => fs.readFileSync(file, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));
const access = (file) => records(file).filter((r) => r['event.name'] === 'http_request');

/** GET with a fresh connection each; resolves the status (or the error code when the server died first). */
function get(port, p) {
  return new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port, path: p, agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode));
      res.on('error', () => resolve(res.statusCode));
    });
    req.on('error', (err) => resolve(err.code));
  });
}

/** GET with a fresh connection; resolves the parsed JSON body. */
function json(port, p) {
  return new Promise((resolve, reject) => {
    http.get({ host: '127.0.0.1', port, path: p, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c) => { body += c; });
      res.on('end', () => resolve(JSON.parse(body)));
    }).on('error', reject);
  });
}

describe('access records: when they are written', function () {
  this.timeout(60_000);
  let dir;
  const apps = [];
  beforeEach(() => { dir = fs.mkdtempSync(path.join(os.tmpdir(), 'auditrace-access-')); });
  afterEach(async () => {
    for (const a of apps.splice(0)) if (a.child.exitCode === null && a.child.signalCode === null) await a.kill('SIGKILL');
    fs.rmSync(dir, { recursive: true, force: true });
  });

  async function start(mode) {
    const file = path.join(dir, `audit-${mode ?? 'default'}.jsonl`);
    const app = startApp('access/exit-app.js', {
      env: {
        AUDITRACE_AUDIT_FILE: file, OTEL_TRACES_EXPORTER: 'none', OTEL_METRICS_EXPORTER: 'none', OTEL_LOGS_EXPORTER: 'none',
        ...(mode ? { AUDITRACE_ACCESS_RECORD_WRITE: mode } : {}),
      },
    });
    apps.push(app);
    const [, port] = await app.waitForOutput(/listening (\d+)/);
    return { app, file, port: Number(port) };
  }

  for (const mode of [undefined, 'turn', 'response']) {
    const label = mode ?? 'default (turn)';
    it(`${label}: 300 concurrent requests, exactly one access record each, every record in the hash chain`, async () => {
      const { app, file, port } = await start(mode);
      const paths = Array.from({ length: 300 }, (_, i) => (i % 3 === 0 ? `/missing?i=${i}` : `/ok/${i}`));
      const statuses = await Promise.all(paths.map((p) => get(port, p)));
      assert.equal(statuses.filter((s) => s === 404).length, 100);
      await app.kill('SIGTERM');
      const got = access(file);
      assert.equal(got.length, 300);
      assert.deepEqual(got.map((r) => r['url.path']).sort(), paths.map((p) => p.split('?')[0]).sort());
      assert.equal(got.filter((r) => r['http.response.status_code'] === 404 && r['event.outcome'] === 'failure').length, 100);
      const all = records(file);
      assert.deepEqual(all.map((r) => r['audit.seq']), all.map((_, i) => i), 'one chain from 0, no gap, file order = sequence');
      // Each record names the hash of the one before it, as a verifier recomputes it from the file.
      for (let i = 1; i < all.length; i++) assert.equal(all[i]['audit.prev'], recordHash(all[i - 1], undefined), `audit.prev of seq ${i}`);
    });
  }

  it('a process.exit() in the same turn as the response: its access record is written before the process ends', async () => {
    const { app, file, port } = await start();
    assert.equal(await get(port, '/ok'), 200);
    await get(port, '/exit');
    const { code } = await app.exited;
    assert.equal(code, 3, app.stderr);
    const got = access(file);
    assert.deepEqual(got.map((r) => r['url.path']), ['/ok', '/exit']);
    assert.equal(records(file).at(-1)['event.name'], 'audit_chain_end', 'the chain is closed after it');
  });

  it('an uncaught exception in the same turn as the response: its access record is still written', async () => {
    const { app, file, port } = await start();
    await get(port, '/throw');
    const { code } = await app.exited;
    assert.equal(code, 1, app.stderr);
    assert.match(app.stderr, /boom after the response/);
    assert.deepEqual(access(file).map((r) => r['url.path']), ['/throw']);
    assert.equal(records(file).at(-1)['event.name'], 'audit_chain_end');
  });

  for (const mode of ['turn', 'response']) {
    it(`${mode}: one record for a response that never ended (client gone), one for a response that failed before its end, one for an ended response written to after its end`, async () => {
      const { app, file, port } = await start(mode);
      const hang = http.get({ host: '127.0.0.1', port, path: '/hang', agent: false });
      hang.on('error', () => {});
      setTimeout(() => hang.destroy(), 200);
      assert.equal(typeof await get(port, '/fail'), 'string'); // the connection is dropped: an error code
      assert.equal(await get(port, '/wae'), 200);
      await new Promise((r) => setTimeout(r, 500));
      await app.kill('SIGTERM');
      const got = access(file);
      assert.deepEqual(got.map((r) => r['url.path']).sort(), ['/fail', '/hang', '/wae']);
      for (const r of got.filter((x) => x['url.path'] !== '/wae')) {
        assert.equal(r['error.type'], 'client_aborted', JSON.stringify(r));
        assert.equal(r['http.response.status_code'], undefined);
      }
      assert.equal(got.find((r) => r['url.path'] === '/wae')['http.response.status_code'], 200);
    });
  }

  it('every response ends through the same `end` function, on the prototype (none of its own, no closure per response), and an app wrapping `res.end` is still recorded', async () => {
    const { app, file, port } = await start();
    assert.deepEqual(await json(port, '/end-identity'), { shared: null, own: false });
    // A closure per response installed as `res.end` made V8 keep each request's objects through
    // the next scavenge (bench/notes.md, outage): one shared function does not.
    assert.deepEqual(await json(port, '/end-identity'), { shared: true, own: false });
    assert.equal(await get(port, '/wrapped'), 201);
    await app.kill('SIGTERM');
    const got = access(file);
    assert.deepEqual(got.map((r) => [r['url.path'], r['http.response.status_code']]),
      [['/end-identity', 200], ['/end-identity', 200], ['/wrapped', 201]]);
    for (const r of got) assert.ok(r['http.server.request.duration'] > 0 && r['http.server.request.duration'] < 5, JSON.stringify(r));
  });

  it('a library wrapping ServerResponse.prototype.end after `http` loaded, then `https` loaded: each response ends once, through both, and is recorded once', async () => {
    const file = path.join(dir, 'audit-late-patch.jsonl');
    const app = startApp('access/late-end-patch.js', {
      env: { AUDITRACE_AUDIT_FILE: file, OTEL_TRACES_EXPORTER: 'none', OTEL_METRICS_EXPORTER: 'none', OTEL_LOGS_EXPORTER: 'none' },
    });
    apps.push(app);
    const port = Number((await app.waitForOutput(/listening (\d+)/))[1]);
    assert.equal(await get(port, '/a'), 203);
    assert.equal(await get(port, '/b'), 203);
    // /a and /b: /calls reads the count before its own end.
    assert.equal((await json(port, '/calls')).calls, 2);
    await app.kill('SIGTERM');
    assert.doesNotMatch(app.stderr, /Maximum call stack|RangeError/);
    assert.deepEqual(access(file).map((r) => [r['url.path'], r['http.response.status_code']]), [['/a', 203], ['/b', 203], ['/calls', 200]]);
  });

  it('a request handed to a second server (`inner.emit("request", req, res)`) is answered and recorded once', async () => {
    const { app, file, port } = await start();
    assert.equal(await get(port, '/reemit'), 202);
    assert.equal(await get(port, '/ok'), 200);
    await app.kill('SIGTERM');
    assert.doesNotMatch(app.stderr, /Maximum call stack|RangeError/);
    assert.deepEqual(access(file).map((r) => [r['url.path'], r['http.response.status_code']]), [['/reemit', 202], ['/ok', 200]]);
  });

  it('an invalid AUDITRACE_ACCESS_RECORD_WRITE is named on one line and the default is used', async () => {
    const { app, file, port } = await start('later');
    assert.equal(await get(port, '/ok'), 200);
    await app.kill('SIGTERM');
    assert.match(app.stderr, /AUDITRACE_ACCESS_RECORD_WRITE.*"later".*turn.*response/);
    assert.equal(access(file).length, 1);
  });
});
