'use strict';
// Alerting: the Prometheus rules (collector-config/alerts/), Alertmanager (collector-config/alertmanager.yml)
// and Prometheus (collector-config/prometheus.yml) configurations as shipped.
//
// 1. promtool / amtool accept them; 2. the promtool unit tests of every rule pass (and every alert
// has a case that fires and one that stays quiet); 3. end to end on loopback: real services under
// `--require register.js` export metrics to the auditrace collector (gateway.yaml), Prometheus
// scrapes it with 1 s intervals and evaluates the same rules, Alertmanager sends to a webhook here.
// Compressed normal traffic fires nothing; a scan, a burst of forged tokens and failed mTLS
// handshakes each page.
//
// Needs prometheus, promtool, alertmanager (or prometheus-alertmanager), amtool, openssl and the
// collector (collector-build/auditrace-collector, `npm run collector:build`). Locally a missing one
// skips with its name; under CI=true it fails.
const assert = require('node:assert/strict');
const { execFileSync, spawn, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const http = require('node:http');
const https = require('node:https');
const os = require('node:os');
const path = require('node:path');
const { freePort } = require('../helpers/collector.js');
const { startApp, ROOT } = require('../helpers/run-app.js');

const CONFIG = path.join(ROOT, 'collector-config');
const RULES_DIR = path.join(CONFIG, 'alerts');
const RULE_FILES = () => fs.readdirSync(RULES_DIR).filter((f) => f.endsWith('.yml')).map((f) => path.join(RULES_DIR, f));
const TEST_FILES = () => fs.readdirSync(path.join(RULES_DIR, 'tests')).filter((f) => f.endsWith('.test.yml')).map((f) => path.join(RULES_DIR, 'tests', f));

const PROXY = '127.0.0.3'; // the trusted proxy (load balancer) every test client connects from
const ATTACKER = '203.0.113.66';
const FORGER = '203.0.113.77';

/** First executable of `names` on PATH (or the absolute path given). */
function which(...names) {
  for (const name of names) {
    if (!name) continue;
    if (path.isAbsolute(name)) { if (isExecutable(name)) return name; continue; }
    for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
      const p = path.join(dir, name);
      if (isExecutable(p)) return p;
    }
  }
  return undefined;
}
function isExecutable(p) {
  try { fs.accessSync(p, fs.constants.X_OK); return fs.statSync(p).isFile(); } catch { return false; }
}

const BIN = {
  prometheus: which(process.env.PROMETHEUS_BIN, 'prometheus'),
  promtool: which(process.env.PROMTOOL_BIN, 'promtool'),
  alertmanager: which(process.env.ALERTMANAGER_BIN, 'alertmanager', 'prometheus-alertmanager'),
  amtool: which(process.env.AMTOOL_BIN, 'amtool'),
  openssl: which('openssl'),
  collector: which(process.env.AUDITRACE_COLLECTOR_BIN, path.join(ROOT, 'collector-build', 'auditrace-collector')),
};

/** Skips (locally) or fails (CI=true) when a binary is missing. */
function requireBinaries(ctx, ...names) {
  const missing = names.filter((n) => !BIN[n]);
  if (missing.length === 0) return;
  const message = `alerting tests need ${missing.join(', ')} (not found on PATH${missing.includes('collector') ? '; the collector: npm run collector:build' : ''})`;
  if (process.env.CI === 'true') throw new Error(message);
  console.log(`      skipped: ${message}`);
  ctx.skip();
}

function run(bin, args, opts = {}) {
  const r = spawnSync(bin, args, { encoding: 'utf8', timeout: 60000, ...opts });
  return { code: r.status, out: `${r.stdout ?? ''}${r.stderr ?? ''}` };
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function httpGet(url) {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { agent: false }, (res) => {
      let body = '';
      res.on('data', (d) => { body += d; });
      res.on('end', () => resolve({ status: res.statusCode, body }));
    });
    req.on('error', reject);
    req.setTimeout(5000, () => req.destroy(new Error(`timeout: ${url}`)));
  });
}

async function waitFor(what, fn, { timeoutMs = 30000, intervalMs = 250 } = {}) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (err) {
      last = err;
    }
    await sleep(intervalMs);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? ` (last error: ${last.message})` : ''}`);
}

/** A long-running binary; its output is kept for failure messages. */
function startProcess(name, bin, args, env) {
  const child = spawn(bin, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  const keep = (d) => { output = (output + d).slice(-20000); };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  return {
    name, child, exited,
    get output() { return output; },
    kill() { if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL'); return exited; },
  };
}

/** A CA, a server certificate for 127.0.0.1 and a client certificate. */
function makeCertificates(dir) {
  const ssl = (...args) => execFileSync(BIN.openssl, args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
  ssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', 'ca.crt', '-subj', '/CN=alerting test CA', '-days', '2');
  fs.writeFileSync(path.join(dir, 'san.ext'), 'subjectAltName=DNS:localhost,IP:127.0.0.1\n');
  for (const [name, cn, ext] of [['server', 'localhost', 'san.ext'], ['client', 'billing-client']]) {
    ssl('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${cn}`);
    ssl('x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-out', `${name}.crt`, '-days', '2', ...(ext ? ['-extfile', ext] : []));
  }
}

/** Deterministic pseudo-random numbers (mulberry32), so the "normal" traffic is the same every run. */
function prng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

describe('alerting: rules, Alertmanager and Prometheus configuration', function () {
  this.timeout(120000);

  it('promtool check rules accepts every rule file', function () {
    requireBinaries(this, 'promtool');
    const files = RULE_FILES();
    assert.ok(files.length > 0, 'no rule files in collector-config/alerts/');
    const r = run(BIN.promtool, ['check', 'rules', ...files]);
    assert.equal(r.code, 0, r.out);
  });

  it('every alert has a summary, a description naming its labels, and a runbook that says how to get request ids', function () {
    const text = RULE_FILES().map((f) => fs.readFileSync(f, 'utf8')).join('\n');
    const alerts = [...text.matchAll(/^\s+- alert: (\w+)\n([\s\S]*?)(?=^\s+- (?:alert|record): |^\s+- name: |(?![\s\S]))/gm)];
    assert.ok(alerts.length >= 15, `only ${alerts.length} alerts found`);
    for (const [, name, body] of alerts) {
      assert.match(body, /^\s+summary: /m, `${name}: no summary`);
      assert.match(body, /^\s+description: [\s\S]*\{\{ \$labels\.\w+ \}\}/m, `${name}: the description names no label`);
      assert.match(body, /^\s+runbook: [\s\S]*auditrace trail/m, `${name}: the runbook does not say how to get request ids (auditrace trail)`);
      assert.match(body, /^\s+severity: (critical|warning)$/m, `${name}: no severity`);
    }
  });

  it('amtool check-config accepts alertmanager.yml', function () {
    requireBinaries(this, 'amtool');
    const r = run(BIN.amtool, ['check-config', path.join(CONFIG, 'alertmanager.yml')]);
    assert.equal(r.code, 0, r.out);
    assert.match(r.out, /SUCCESS/);
  });

  it('promtool check config accepts prometheus.yml with its rule files', function () {
    requireBinaries(this, 'promtool');
    const r = run(BIN.promtool, ['check', 'config', path.join(CONFIG, 'prometheus.yml')]);
    assert.equal(r.code, 0, r.out);
    assert.match(r.out, /SUCCESS: \d+ rules found/, `prometheus.yml loads no rules:\n${r.out}`);
  });

  it('promtool test rules: every unit test passes', function () {
    requireBinaries(this, 'promtool');
    const r = run(BIN.promtool, ['test', 'rules', ...TEST_FILES()], { cwd: ROOT });
    assert.equal(r.code, 0, r.out);
  });

  it('every alert is unit-tested both firing and quiet', function () {
    const rules = RULE_FILES().map((f) => fs.readFileSync(f, 'utf8')).join('\n');
    const tests = TEST_FILES().map((f) => fs.readFileSync(f, 'utf8')).join('\n');
    const names = [...rules.matchAll(/^\s+- alert: (\w+)$/gm)].map((m) => m[1]);
    const firing = new Set(); const quiet = new Set();
    for (const m of tests.matchAll(/^\s+- alertname: (\w+)\n\s+eval_time: \S+\n\s+exp_alerts:( \[\])?$/gm)) (m[2] ? quiet : firing).add(m[1]);
    const missing = names.flatMap((n) => [...(firing.has(n) ? [] : [`${n} (firing)`]), ...(quiet.has(n) ? [] : [`${n} (quiet)`])]);
    assert.deepEqual(missing, [], `alerts without a unit test: ${missing.join(', ')}`);
  });
});

describe('alerting end to end: services → collector → Prometheus → Alertmanager → webhook', function () {
  this.timeout(180000);
  let dir;
  const procs = []; // collector, Prometheus, Alertmanager
  const apps = [];
  const servers = [];
  const notifications = []; // webhook payloads, with the time they arrived
  const ports = {};
  let proxyAgent;
  let promUrl;

  const webhookAlerts = () => notifications.flatMap((n) => n.body.alerts.map((a) => ({ ...a, receivedAt: n.at })));

  async function promQuery(query) {
    const r = await httpGet(`${promUrl}/api/v1/query?query=${encodeURIComponent(query)}`);
    const body = JSON.parse(r.body);
    if (body.status !== 'success') throw new Error(`${query}: ${r.body}`);
    return body.data.result;
  }
  const promValue = async (query) => Number((await promQuery(query))[0]?.value[1] ?? 0);

  /** A request through the trusted proxy: the client address is `client`. */
  let edgeRequests = 0;
  function edgeRequest(client, urlPath, { method = 'GET', headers = {}, body } = {}) {
    edgeRequests++;
    return new Promise((resolve, reject) => {
      const req = http.request({
        host: '127.0.0.1', port: ports.edge, path: urlPath, method, agent: proxyAgent,
        headers: { 'x-forwarded-for': client, ...(body ? { 'content-type': 'application/json' } : {}), ...headers },
      }, (res) => {
        let text = '';
        res.on('data', (d) => { text += d; });
        res.on('end', () => resolve({ status: res.statusCode, body: text }));
      });
      req.on('error', reject);
      req.end(body ? JSON.stringify(body) : undefined);
    });
  }
  const login = (client, user, password) => edgeRequest(client, '/login', { method: 'POST', body: { user, password } });
  const api = (client, token, urlPath = '/api/orders') => edgeRequest(client, urlPath, { headers: { authorization: `Bearer ${token}` } });

  /** An https request to the mTLS service, with or without a client certificate. */
  function mtls(withCertificate) {
    const read = (n) => fs.readFileSync(path.join(dir, 'certs', n));
    return new Promise((resolve) => {
      const req = https.get({
        host: '127.0.0.1', port: ports.billing, path: '/', agent: false, ca: read('ca.crt'),
        ...(withCertificate ? { key: read('client.key'), cert: read('client.crt') } : {}),
      }, (res) => { res.resume(); res.on('end', () => resolve({ status: res.statusCode })); });
      req.on('error', (e) => resolve({ error: e.code }));
    });
  }

  async function waitForNotification(what, predicate, timeoutMs = 90000) {
    return waitFor(`a webhook notification: ${what}`, () => webhookAlerts().find(predicate), { timeoutMs, intervalMs: 200 })
      .catch(async (err) => {
        const alerts = await promQuery('ALERTS').catch(() => []);
        throw new Error(`${err.message}\nPrometheus ALERTS: ${JSON.stringify(alerts.map((a) => a.metric))}\nwebhook: ${JSON.stringify(webhookAlerts().map((a) => a.labels))}\n--- alertmanager:\n${procs.find((p) => p.name === 'alertmanager')?.output.slice(-3000)}`);
      });
  }

  before(async function () {
    this.timeout(120000);
    requireBinaries(this, 'collector', 'prometheus', 'promtool', 'alertmanager', 'openssl');
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'auditrace-alerting-'));
    // Should mocha exit before `after` runs (an interrupt), nothing started here outlives it.
    process.once('exit', killAll);
    for (const k of ['health', 'otlp', 'otlpGrpc', 'exporter', 'telemetry', 'backend', 'alertmanager', 'webhook', 'prometheus']) ports[k] = await freePort();

    // The gateway's OTLP backend (accepts everything) and the incident-response webhook.
    const backend = http.createServer((req, res) => { req.resume(); req.on('end', () => res.writeHead(200, { 'content-type': 'application/x-protobuf' }).end()); });
    const webhook = http.createServer((req, res) => {
      let text = '';
      req.on('data', (d) => { text += d; });
      req.on('end', () => {
        try { notifications.push({ at: Date.now(), body: JSON.parse(text) }); } catch { /* not a notification */ }
        res.writeHead(200).end();
      });
    });
    for (const [server, port] of [[backend, ports.backend], [webhook, ports.webhook]]) {
      servers.push(server);
      await new Promise((resolve) => server.listen(port, '127.0.0.1', resolve));
    }

    // The collector: gateway.yaml as shipped, every endpoint, port and directory knob on loopback / in dir.
    const gatewayYaml = fs.readFileSync(path.join(CONFIG, 'gateway.yaml'), 'utf8');
    const collectorEnv = {
      AUDITRACE_GATEWAY_HEALTH_ENDPOINT: `127.0.0.1:${ports.health}`,
      AUDITRACE_GATEWAY_STORAGE_DIR: path.join(dir, 'gateway'),
      AUDITRACE_GATEWAY_OTLP_ENDPOINT: `127.0.0.1:${ports.otlp}`,
      AUDITRACE_GATEWAY_OTLP_GRPC_ENDPOINT: `127.0.0.1:${ports.otlpGrpc}`,
      AUDITRACE_ARCHIVE_DIR: path.join(dir, 'archive'),
      AUDITRACE_GATEWAY_PROMETHEUS_ENDPOINT: `127.0.0.1:${ports.exporter}`,
      AUDITRACE_BACKEND_ENDPOINT: `http://127.0.0.1:${ports.backend}`,
      AUDITRACE_GATEWAY_METRICS_HOST: '127.0.0.1',
      AUDITRACE_GATEWAY_METRICS_PORT: String(ports.telemetry),
    };
    const knobs = [...new Set([...gatewayYaml.matchAll(/\$\{env:(\w+)/g)].map((m) => m[1]))];
    const unset = knobs.filter((k) => /ENDPOINT|PORT|HOST|DIR/.test(k) && !(k in collectorEnv));
    assert.deepEqual(unset, [], `gateway.yaml has endpoint/port/dir knobs this test does not set: ${unset.join(', ')}`);
    const collector = startProcess('collector', BIN.collector,
      ['--config', path.join(CONFIG, 'gateway.yaml'), '--feature-gates=exporter.file.nativeCompression'], collectorEnv);
    procs.push(collector);
    await waitFor('the collector to be healthy', async () => (await httpGet(`http://127.0.0.1:${ports.health}/`)).status === 200)
      .catch((err) => { throw new Error(`${err.message}\n${collector.output}`); });

    // Alertmanager: alertmanager.yml as shipped, its webhook pointed at the test's receiver.
    const amYaml = fs.readFileSync(path.join(CONFIG, 'alertmanager.yml'), 'utf8');
    const placeholder = 'https://incident-response.invalid/api/alertmanager';
    assert.ok(amYaml.includes(placeholder), 'alertmanager.yml no longer has the webhook placeholder this test replaces');
    fs.writeFileSync(path.join(dir, 'alertmanager.yml'), amYaml.replace(placeholder, `http://127.0.0.1:${ports.webhook}/alerts`));
    const am = startProcess('alertmanager', BIN.alertmanager, [
      `--config.file=${path.join(dir, 'alertmanager.yml')}`, `--storage.path=${path.join(dir, 'alertmanager')}`,
      `--web.listen-address=127.0.0.1:${ports.alertmanager}`, '--cluster.listen-address=',
    ]);
    procs.push(am);

    // Prometheus: prometheus.yml as shipped with 1 s intervals, loopback targets and the same rules.
    let promYaml = fs.readFileSync(path.join(CONFIG, 'prometheus.yml'), 'utf8');
    for (const [from, to] of [
      ['scrape_interval: 15s', 'scrape_interval: 1s'],
      ['scrape_timeout: 10s', 'scrape_timeout: 1s'],
      ['evaluation_interval: 15s', 'evaluation_interval: 1s'],
      ['- alerts/*.rules.yml', `- ${path.join(RULES_DIR, '*.rules.yml')}`],
      ["'alertmanager:9093'", `'127.0.0.1:${ports.alertmanager}'`],
      ["'auditrace-gateway:8889'", `'127.0.0.1:${ports.exporter}'`],
      ["'auditrace-gateway:8888'", `'127.0.0.1:${ports.telemetry}'`],
    ]) {
      assert.ok(promYaml.includes(from), `prometheus.yml no longer has ${JSON.stringify(from)}, which this test rewrites`);
      promYaml = promYaml.replace(from, to);
    }
    fs.writeFileSync(path.join(dir, 'prometheus.yml'), promYaml);
    const check = run(BIN.promtool, ['check', 'config', path.join(dir, 'prometheus.yml')]);
    assert.equal(check.code, 0, `the test's prometheus.yml:\n${check.out}`);
    const prom = startProcess('prometheus', BIN.prometheus, [
      `--config.file=${path.join(dir, 'prometheus.yml')}`, `--storage.tsdb.path=${path.join(dir, 'prometheus')}`,
      `--web.listen-address=127.0.0.1:${ports.prometheus}`,
    ]);
    procs.push(prom);
    promUrl = `http://127.0.0.1:${ports.prometheus}`;
    await waitFor('Alertmanager to be ready', async () => (await httpGet(`http://127.0.0.1:${ports.alertmanager}/-/ready`)).status === 200)
      .catch((err) => { throw new Error(`${err.message}\n${am.output}`); });
    await waitFor('Prometheus to be ready', async () => (await httpGet(`${promUrl}/-/ready`)).status === 200)
      .catch((err) => { throw new Error(`${err.message}\n${prom.output}`); });

    // The services: edge (logins, session tokens) → orders (authorisation), and billing (mTLS).
    fs.mkdirSync(path.join(dir, 'certs'));
    makeCertificates(path.join(dir, 'certs'));
    const appEnv = (service, extra) => ({
      env: {
        SERVICE: service, OTEL_SERVICE_NAME: service,
        OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${ports.otlp}`, OTEL_METRIC_EXPORT_INTERVAL: '1000',
        AUDITRACE_AUDIT_FILE: path.join(dir, `${service}.jsonl`), ...extra,
      },
    });
    const orders = startApp('alerting/service.js', appEnv('orders', { AUDITRACE_TRUSTED_PROXIES: '127.0.0.1' }));
    apps.push(orders);
    ports.orders = Number((await orders.waitForOutput(/listening (\d+)/))[1]);
    const edge = startApp('alerting/service.js', appEnv('edge', { AUDITRACE_TRUSTED_PROXIES: PROXY, NEXT_URL: `http://127.0.0.1:${ports.orders}` }));
    apps.push(edge);
    ports.edge = Number((await edge.waitForOutput(/listening (\d+)/))[1]);
    const billing = startApp('alerting/service.js', appEnv('billing', { CERT_DIR: path.join(dir, 'certs') }));
    apps.push(billing);
    ports.billing = Number((await billing.waitForOutput(/listening (\d+)/))[1]);
    proxyAgent = new http.Agent({ keepAlive: true, maxSockets: 16, localAddress: PROXY });

    // Every scrape target up before anything is measured.
    await waitFor('Prometheus to scrape the gateway exporter and the collector telemetry',
      async () => (await promValue('sum(up{job=~"auditrace-.*"})')) === 2, { timeoutMs: 30000 });
    // ...and the rules evaluated since: before the first scrape AuditraceGatewayScrapeMissing is
    // pending (absent(up)), which is startup, not traffic.
    await sleep(3000);
    await waitFor('no alert pending at the start', async () => (await promQuery('ALERTS')).length === 0, { timeoutMs: 15000 });
  });

  function killAll() {
    for (const p of [...apps.map((a) => a.child), ...procs.map((p) => p.child)]) {
      if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
    }
  }

  after(async () => {
    process.removeListener('exit', killAll);
    proxyAgent?.destroy();
    await Promise.all(apps.splice(0).map((a) => a.kill('SIGKILL')));
    await Promise.all(procs.splice(0).map((p) => p.kill()));
    await Promise.all(servers.splice(0).map((s) => new Promise((r) => { s.closeAllConnections?.(); s.close(() => r()); })));
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('ten minutes of normal traffic, compressed into 75 s, fires nothing', async function () {
    this.timeout(150000);
    const DURATION = 75000;
    const random = prng(20261122);
    const pick = (list) => list[Math.floor(random() * list.length)];
    const at = () => Math.floor(random() * (DURATION - 8000));
    const plan = []; // [time, action]
    const office = '198.51.100.200'; // a NAT in front of eight users
    // 40 users: log in (one in eight mistypes first), use the API a few times; one in five hits an
    // expired session once and logs in again.
    for (let i = 1; i <= 40; i++) {
      const user = `u-${String(i).padStart(2, '0')}`;
      const client = i <= 8 ? office : `198.51.100.${10 + i}`;
      const start = at();
      const typo = random() < 0.125;
      const calls = 3 + Math.floor(random() * 6);
      const expires = random() < 0.2 ? Math.floor(random() * calls) : -1;
      plan.push([start, async () => {
        if (typo) { await login(client, user, 'wrong'); await sleep(1500); }
        await login(client, user, 'correct');
        for (let c = 0; c < calls; c++) {
          await sleep(500 + random() * 1500);
          if (c === expires) { await api(client, `expired.${user}`); await login(client, user, 'correct'); }
          await api(client, `valid-${user}`);
        }
      }]);
    }
    // 404s from different addresses: browsers, a link checker, one bot trying a WordPress login.
    const paths = ['/favicon.ico', '/robots.txt', '/old-catalogue', '/apple-touch-icon.png', '/wp-login.php', '/.well-known/security.txt'];
    for (let i = 0; i < 14; i++) plan.push([at(), () => edgeRequest(`192.0.2.${1 + Math.floor(random() * 30)}`, pick(paths))]);
    // 404s behind a valid session (orders knows no such route).
    for (let i = 0; i < 3; i++) plan.push([at(), () => api(`198.51.100.${11 + i}`, 'valid-x', '/api/orders/unknown')]);
    // A few users trying what they may not, spread out.
    for (let i = 0; i < 4; i++) plan.push([at(), () => api(`198.51.100.${20 + i}`, `valid-u-${20 + i}`, '/api/admin/export')]);
    // The mTLS service: a client with its certificate every few seconds; twice a client without one.
    for (let i = 0; i < 20; i++) plan.push([at(), () => mtls(true)]);
    for (let i = 0; i < 2; i++) plan.push([at(), () => mtls(false)]);

    const started = Date.now();
    const before = edgeRequests;
    const running = [];
    for (const [time, action] of plan.sort((a, b) => a[0] - b[0])) {
      const wait = started + time - Date.now();
      if (wait > 0) await sleep(wait);
      running.push(action());
    }
    await Promise.all(running);
    const rest = started + DURATION - Date.now();
    if (rest > 0) await sleep(rest);
    // Export (1 s), scrape (1 s), evaluation (1 s), and Alertmanager's group_wait (15 s).
    await sleep(20000);
    const phase = Math.floor((Date.now() - started) / 1000);

    // The traffic reached Prometheus under the names the rules use.
    const seen = async (q) => promValue(q);
    const sent = edgeRequests - before;
    assert.equal(await seen('sum(auditrace_audit_events_total{service_name="edge", event_name="http_request"})'), sent, 'every request the edge served is counted');
    assert.ok(await seen('sum(auditrace_audit_events_total{service_name="edge", event_name="authn_login_success"})') >= 40, 'logins');
    assert.ok(await seen('sum(auditrace_audit_events_total{service_name="edge", event_name="authn_login_fail", client_address!=""})') >= 1, 'failed logins by address');
    assert.ok(await seen('sum(auditrace_audit_events_total{service_name="edge", event_name="http_request", http_route="unmatched", client_address=~"192.0.2.*"})') >= 14, '404s by address');
    assert.ok(await seen('sum(auditrace_audit_events_total{service_name="orders", event_name="authz_fail", client_address=~"198.51.100.*"})') >= 4, 'authz_fail at orders, by the original client address');
    assert.ok(await seen('sum(auditrace_audit_events_total{service_name="edge", event_name="authn_token_invalid", token_failure="expired"})') >= 1, 'expired tokens');
    assert.ok(await seen('sum(auditrace_audit_events_total{service_name="billing", event_name="tls_handshake_fail"})') >= 2, 'failed handshakes');
    assert.ok(await seen('sum(auditrace_audit_records_total)') > 0, 'audit record counts');
    assert.ok(await seen('count(otelcol_exporter_queue_size)') > 0, 'collector queue metrics');
    assert.ok(await seen('count(auditrace:audit_events:increase5m)') > 0, 'the recording rules ran');

    // Nothing pending or firing at any evaluation of the phase, and nothing at the webhook.
    const alerts = await promQuery(`max_over_time(ALERTS[${phase}s])`);
    assert.deepEqual(alerts.map((a) => a.metric), [], 'alerts during normal traffic');
    assert.deepEqual(webhookAlerts().map((a) => a.labels), [], 'notifications during normal traffic');
    const failures = await seen('sum(auditrace_audit_events_total{event_outcome="failure"})');
    console.log(`      normal traffic: ${sent} requests to edge, ${failures} failure events in all, nothing pending or firing`);
  });

  it(`a scan from one address (${ATTACKER}) pages once within 90 s, naming the address and the service`, async function () {
    this.timeout(150000);
    const random = prng(66);
    const sent = Date.now();
    const queue = Array.from({ length: 200 }, () => `/${Math.floor(random() * 1e9).toString(36)}/${scanWord(random)}`);
    const statuses = await Promise.all(Array.from({ length: 8 }, async () => {
      const got = [];
      while (queue.length) got.push((await edgeRequest(ATTACKER, queue.shift())).status);
      return got;
    }));
    assert.ok(statuses.flat().every((s) => s === 404), 'every scanned path is a 404');
    const page = await waitForNotification(`AuditraceScanning for ${ATTACKER}`,
      (a) => a.labels.alertname === 'AuditraceScanning' && a.labels.client_address === ATTACKER && a.status === 'firing');
    const seconds = (page.receivedAt - sent) / 1000;
    assert.ok(seconds < 90, `the page took ${seconds} s`);
    assert.equal(page.labels.service_name, 'edge');
    assert.equal(page.labels.scan, 'not_found');
    assert.equal(page.labels.severity, 'critical');
    assert.match(page.annotations.description, new RegExp(`${ATTACKER.replace(/\./g, '\\.')}[\\s\\S]*\\bedge\\b`));
    assert.match(page.annotations.summary, /203\.0\.113\.66 on edge/);
    assert.match(page.annotations.runbook, /auditrace trail/);
    // One scan, one page: the 404-level warning for the same address was inhibited.
    await sleep(5000);
    const lower = webhookAlerts().filter((a) => a.labels.client_address === ATTACKER && a.labels.alertname !== 'AuditraceScanning');
    assert.deepEqual(lower.map((a) => a.labels.alertname), [], 'lower-level alerts for the scanning address reached the webhook');
    const firing = await promQuery(`ALERTS{alertname="AuditraceNotFoundBurst", client_address="${ATTACKER}", alertstate="firing"}`);
    assert.equal(firing.length, 1, 'Prometheus fires the 404 warning too; Alertmanager holds it back');
    console.log(`      scan → page in ${seconds.toFixed(1)} s`);
  });

  it('a burst of forged session tokens fires the token-abuse alert', async function () {
    this.timeout(150000);
    const sent = Date.now();
    for (let i = 0; i < 60; i++) assert.equal((await api(FORGER, `bad_signature.${i.toString(36)}`)).status, 401);
    const page = await waitForNotification('AuditraceTokenFailuresRising for bad_signature',
      (a) => a.labels.alertname === 'AuditraceTokenFailuresRising' && a.labels.token_failure === 'bad_signature' && a.status === 'firing');
    const seconds = (page.receivedAt - sent) / 1000;
    assert.ok(seconds < 90, `the page took ${seconds} s`);
    assert.equal(page.labels.service_name, 'edge');
    const [, counted] = /^(\d+) tokens refused as bad_signature on edge in the last 5 minutes/.exec(page.annotations.description) ?? [];
    assert.ok(Number(counted) >= 30 && Number(counted) <= 60, page.annotations.description);
    // Ordinary expired sessions of the normal traffic did not page.
    assert.equal(webhookAlerts().filter((a) => a.labels.token_failure === 'expired').length, 0);
    console.log(`      forged tokens → page in ${seconds.toFixed(1)} s`);
  });

  it('failed mTLS handshakes (clients without a certificate) fire the TLS alert', async function () {
    this.timeout(150000);
    const sent = Date.now();
    for (let i = 0; i < 30; i++) assert.ok((await mtls(false)).error, 'a client without a certificate is refused');
    assert.equal((await mtls(true)).status, 200, 'a client with its certificate still gets in');
    const page = await waitForNotification('AuditraceTlsHandshakeFailures for billing',
      (a) => a.labels.alertname === 'AuditraceTlsHandshakeFailures' && a.labels.service_name === 'billing' && a.status === 'firing');
    const seconds = (page.receivedAt - sent) / 1000;
    assert.ok(seconds < 90, `the page took ${seconds} s`);
    assert.match(page.annotations.description, /TLS handshakes failed on billing/);
    console.log(`      failed handshakes → page in ${seconds.toFixed(1)} s`);
  });
});

function scanWord(random) {
  const words = ['admin', 'backup.zip', '.env', '.git/config', 'phpmyadmin', 'server-status', 'api/v0/debug', 'config.json', 'wp-admin', 'actuator/health'];
  return words[Math.floor(random() * words.length)];
}
