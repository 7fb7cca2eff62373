'use strict';
// `npm run demo`: three services (edge → orders → users) started as users start them, with
// `node --require auditrace/register`; a scripted story (a login, personal data read and changed,
// consent, a forged request, a scanner, a stolen token replayed); then the forged request rebuilt
// with `auditrace trail` and the logs checked with `auditrace verify`. Offline; Ctrl-C stops all.
const fs = require('node:fs');
const http = require('node:http');
const net = require('node:net');
const path = require('node:path');
const { execFileSync, spawn } = require('node:child_process');
const { startOtlpReceiver } = require('../test/helpers/otlp-receiver.js');
const { startApp, cleanEnv } = require('../test/helpers/run-app.js');

const ROOT = path.join(__dirname, '..');
const OUT = path.join(ROOT, 'demo-output');
const AUDIT_DIR = path.join(OUT, 'audit');
const ARCHIVE = path.join(OUT, 'archive');
const COLLECTOR = path.join(ROOT, 'collector-build', 'auditrace-collector');
const children = [];

const say = (s = '') => process.stdout.write(`${s}\n`);
const step = (s) => say(`\n▶ ${s}`);

function freePort() {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)); });
  });
}

function request(port, method, urlPath, { headers = {}, body, from } = {}) {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : JSON.stringify(body);
    const req = http.request({ host: '127.0.0.1', port, method, path: urlPath, localAddress: from, agent: false,
      headers: { ...headers, ...(data ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) } : {}) } }, (res) => {
      let text = '';
      res.on('data', (d) => { text += d; });
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: text }));
    });
    req.on('error', reject);
    req.end(data);
  });
}

async function startCollector(name, config, env) {
  const log = fs.openSync(path.join(OUT, `${name}.log`), 'w');
  // nativeCompression: whole zstd frames in the archive; synchronousLogEmitter: file_log offsets move
  // only after records reached the disk queue (upstream contrib #35456; see collector-config/README.md).
  const child = spawn(COLLECTOR, [`--config=${path.join(ROOT, 'collector-config', config)}`, '--feature-gates=exporter.file.nativeCompression,stanza.synchronousLogEmitter'],
    { env: { ...cleanEnv(), ...env }, stdio: ['ignore', log, log] });
  children.push({ kill: (sig) => child.kill(sig) });
  const health = env[Object.keys(env).find((k) => k.endsWith('HEALTH_ENDPOINT'))];
  for (let i = 0; i < 100; i++) {
    const ok = await new Promise((resolve) => http.get(`http://${health}/`, (r) => { r.resume(); resolve(r.statusCode === 200); }).on('error', () => resolve(false)));
    if (ok) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${name} did not become healthy; see ${path.join(OUT, `${name}.log`)}`);
}

function stopAll() {
  for (const c of children.splice(0)) {
    try { c.kill('SIGTERM'); } catch { /* already gone */ }
  }
}
process.on('SIGINT', () => { say('\nstopping…'); stopAll(); process.exit(130); });

function cli(args) {
  try {
    return execFileSync(process.execPath, [path.join(ROOT, 'bin', 'auditrace.js'), ...args], { encoding: 'utf8', env: cleanEnv() });
  } catch (err) {
    return `${err.stdout ?? ''}${err.stderr ?? ''}`;
  }
}

async function main() {
  fs.rmSync(OUT, { recursive: true, force: true });
  fs.mkdirSync(AUDIT_DIR, { recursive: true });
  const backend = await startOtlpReceiver();
  let otlpEndpoint = backend.url;
  const withCollector = fs.existsSync(COLLECTOR);

  say('auditrace demo: edge → orders → users, each started with `node --require auditrace/register`.');
  if (withCollector) {
    const [agentOtlp, agentHealth, agentMetrics, gwOtlp, gwGrpc, gwHealth, gwMetrics, gwProm] = await Promise.all(Array.from({ length: 8 }, freePort));
    await startCollector('gateway', 'gateway.yaml', {
      AUDITRACE_GATEWAY_OTLP_ENDPOINT: `127.0.0.1:${gwOtlp}`, AUDITRACE_GATEWAY_OTLP_GRPC_ENDPOINT: `127.0.0.1:${gwGrpc}`,
      AUDITRACE_GATEWAY_HEALTH_ENDPOINT: `127.0.0.1:${gwHealth}`, AUDITRACE_GATEWAY_METRICS_PORT: String(gwMetrics),
      AUDITRACE_GATEWAY_PROMETHEUS_ENDPOINT: `127.0.0.1:${gwProm}`, AUDITRACE_GATEWAY_STORAGE_DIR: path.join(OUT, 'gateway-state'),
      AUDITRACE_ARCHIVE_DIR: ARCHIVE, AUDITRACE_BACKEND_ENDPOINT: backend.url,
    });
    await startCollector('agent', 'agent.yaml', {
      AUDITRACE_AGENT_OTLP_ENDPOINT: `127.0.0.1:${agentOtlp}`, AUDITRACE_AGENT_HEALTH_ENDPOINT: `127.0.0.1:${agentHealth}`,
      AUDITRACE_AGENT_METRICS_PORT: String(agentMetrics), AUDITRACE_AGENT_STORAGE_DIR: path.join(OUT, 'agent-state'),
      AUDITRACE_AUDIT_FILES: path.join(AUDIT_DIR, '*.jsonl*'), AUDITRACE_GATEWAY_ENDPOINT: `http://127.0.0.1:${gwOtlp}`,
      AUDITRACE_AGENT_RETRY_MAX_INTERVAL: '2s',
    });
    otlpEndpoint = `http://127.0.0.1:${agentOtlp}`;
    say(`collector agent and gateway running; archive in ${path.relative(ROOT, ARCHIVE)}/`);
  } else {
    say('The collector is not built, so audit records stay in local files (build it with `npm run collector:build`,');
    say('Go >= 1.25, then run the demo again for the full agent → gateway → archive pipeline).');
  }

  const common = { OTEL_EXPORTER_OTLP_ENDPOINT: otlpEndpoint, OTEL_BSP_SCHEDULE_DELAY: '200', OTEL_METRICS_EXPORTER: 'none', AUDITRACE_QUIET: 'true' };
  const svc = async (name, env) => {
    const app = startApp(path.join(ROOT, 'examples', 'demo', `${name}.js`), {
      cwd: ROOT, env: { ...common, OTEL_SERVICE_NAME: name, AUDITRACE_AUDIT_FILE: path.join(AUDIT_DIR, `${name}.jsonl`), ...env },
    });
    children.push(app);
    const [, port] = await app.waitForOutput(/listening (\d+)/);
    return Number(port);
  };
  // Inner services trust their callers on loopback; the edge trusts only its load balancer (127.0.0.3).
  const usersPort = await svc('users', { AUDITRACE_TRUSTED_PROXIES: 'loopback' });
  const ordersPort = await svc('orders', { AUDITRACE_TRUSTED_PROXIES: 'loopback', USERS_URL: `http://127.0.0.1:${usersPort}` });
  const edgePort = await svc('edge', {
    AUDITRACE_TRUSTED_PROXIES: '127.0.0.3', AUDITRACE_REQUEST_ID_RESPONSE_HEADER: 'true',
    ORDERS_URL: `http://127.0.0.1:${ordersPort}`, USERS_URL: `http://127.0.0.1:${usersPort}`,
  });
  const viaLb = { from: '127.0.0.3' };
  const client = (h = {}) => ({ ...viaLb, headers: { 'x-forwarded-for': '198.51.100.23', ...h } });

  step('Ada logs in through the load balancer (it says she is 198.51.100.23)');
  const login = await request(edgePort, 'POST', '/login', { ...client(), body: { user: 'u-17', password: 'correct horse' } });
  const { token } = JSON.parse(login.body);
  const auth = { authorization: `Bearer ${token}` };
  say(`  POST /login -> ${login.status}  (request id ${login.headers['x-request-id']})`);

  step('She reads and updates her profile (personal data in the users service)');
  const read = await request(edgePort, 'GET', '/profile', client(auth));
  say(`  GET /profile -> ${read.status}`);
  const upd = await request(edgePort, 'PUT', '/profile', { ...client(auth), body: { plan: 'team' } });
  say(`  PUT /profile -> ${upd.status}`);
  const orders = await request(edgePort, 'GET', '/orders', client(auth));
  say(`  GET /orders -> ${orders.status}  (edge → orders → users)`);
  const consent = await request(edgePort, 'POST', '/consent', { ...client(auth), body: { purpose: 'marketing_email' } });
  say(`  POST /consent -> ${consent.status}`);

  step('An attacker connects directly, forging X-Request-Id, X-Forwarded-For and traceparent');
  const forged = await request(edgePort, 'GET', '/orders', {
    from: '127.0.0.2',
    headers: { ...auth, 'x-request-id': 'totally-legit-0001', 'x-forwarded-for': '10.0.0.1', traceparent: '00-0123456789abcdef0123456789abcdef-0123456789abcdef-00' },
  });
  const forgedId = forged.headers['x-request-id'];
  say(`  GET /orders -> ${forged.status}; the edge gave it request id ${forgedId}, not "totally-legit-0001"`);

  step('A scanner probes for routes');
  for (const p of ['/admin', '/.env', '/wp-login.php', '/backup.zip', '/api/v1/users', '/server-status']) {
    await request(edgePort, 'GET', p, { from: '127.0.0.4', headers: { authorization: 'Bearer guessed-token' } });
  }
  say('  6 probes -> 401/404, each recorded with the scanner\'s address 127.0.0.4');

  step('Ada logs out; her stolen token is replayed');
  await request(edgePort, 'POST', '/logout', client(auth));
  const replay = await request(edgePort, 'GET', '/profile', { from: '127.0.0.5', headers: auth });
  say(`  GET /profile with the revoked token -> ${replay.status} (authn_token_reuse recorded)`);

  // Let exporters and the agent catch up, then stop the services cleanly (chains end, files sync).
  await new Promise((r) => setTimeout(r, 1500));
  for (const c of children.filter((c) => c.exited)) await c.kill('SIGTERM');

  const files = fs.readdirSync(AUDIT_DIR).map((f) => path.join(AUDIT_DIR, f));
  const fileArgs = files.flatMap((f) => ['--file', f]);
  if (withCollector) {
    // The archive is written by the gateway; give the pipeline a moment to deliver the chain ends.
    for (let i = 0; i < 40; i++) {
      if (fs.existsSync(ARCHIVE) && fs.readdirSync(ARCHIVE).some((f) => f.startsWith('audit'))) break;
      await new Promise((r) => setTimeout(r, 250));
    }
    await new Promise((r) => setTimeout(r, 2000));
  }

  step(`auditrace trail ${forgedId}   (from the local audit files)`);
  say(cli(['trail', forgedId, ...fileArgs]).trimEnd());
  if (withCollector) {
    step(`auditrace trail ${forgedId} --archive ${path.relative(ROOT, ARCHIVE)}   (from the central archive)`);
    say(cli(['trail', forgedId, '--archive', ARCHIVE]).trimEnd());
  }
  step('auditrace verify   (every hash chain of every instance)');
  say(cli(['verify', ...fileArgs]).trimEnd());

  stopAll();
  await backend.close();
  step('Files written');
  const walk = (d) => fs.readdirSync(d, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? walk(path.join(d, e.name)) : [path.join(d, e.name)]));
  for (const f of walk(OUT).filter((f) => !f.includes('-state'))) say(`  ${path.relative(ROOT, f)}`);
}

main().catch((err) => {
  stopAll();
  process.stderr.write(`demo failed: ${err.stack ?? err}\n`);
  process.exit(1);
});
