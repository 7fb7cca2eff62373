'use strict';
// auditrace trail / verify on what the product really writes: the edge -> orders -> users scenario
// of edge.test.js (test/fixtures/edge/chain.js under --require), its local audit files, an archive
// built from them and the spans the services exported, and, when the collector is built, the archive
// the real agent + gateway pipeline writes.
const assert = require('node:assert/strict');
const fs = require('node:fs');
const http = require('node:http');
const os = require('node:os');
const path = require('node:path');
const { spawn, spawnSync } = require('node:child_process');
const { startEdgeChain } = require('../helpers/chain');
const { freePort } = require('../helpers/collector.js');
const { startOtlpReceiver } = require('../helpers/otlp-receiver.js');
const { ROOT } = require('../helpers/run-app.js');
const gen = require('../fixtures/forensics/gen.js');

const BIN = path.join(ROOT, 'bin', 'auditrace.js');
const COLLECTOR = process.env.AUDITRACE_COLLECTOR_BIN || path.join(ROOT, 'collector-build', 'auditrace-collector');

function cli(args, env = {}) {
  return spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', env: { PATH: process.env.PATH, ...env }, timeout: 60000 });
}

/** A GET from a chosen loopback source address, so the client is a distinct peer. */
function getFrom(localAddress, port, urlPath, headers = {}) {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: urlPath, headers, localAddress, agent: false }, (res) => {
      let body = '';
      res.on('data', (d) => { body += d; });
      res.on('end', () => resolve({ status: res.statusCode, body }));
    });
    req.on('error', reject);
  });
}

/** The receiver's decoded spans back to OTLP/JSON export request lines (as the gateway archives them). */
function tracesLines(spans) {
  const groups = new Map();
  for (const s of spans) {
    const resource = Object.fromEntries(Object.entries(s.resource).map(([k, v]) => [k, String(v)]));
    const key = JSON.stringify(resource);
    if (!groups.has(key)) groups.set(key, { resource, spans: [] });
    groups.get(key).spans.push({
      traceId: s.traceId, spanId: s.spanId, parentSpanId: s.parentSpanId, name: s.name, kind: s.kind,
      start: Math.round(s.startTimeUnixNano / 1000), end: Math.round(s.endTimeUnixNano / 1000), attributes: s.attributes,
      ...(s.status.code === 2 ? { error: s.status.message || 'error' } : {}),
      ...(s.links.length ? { links: s.links.map((l) => ({ traceId: l.traceId, spanId: l.spanId })) } : {}),
    });
  }
  return [...groups.values()].map((g) => gen.tracesLine([g]));
}

const hopsOf = (nodes, out = []) => {
  for (const n of nodes) {
    if (n.type === 'service') out.push(n);
    if (n.type !== 'record') hopsOf(n.children, out);
  }
  return out;
};
const recordsUnder = (node) => node.children.flatMap((c) => (c.type === 'record' ? [c] : c.type === 'span' ? recordsUnder(c) : []));

/** Starts users, orders, edge (edge.test.js's chain) writing audit files to `dir`. */
const startChain = (dir, apps, otlpUrl, auditDir = dir) => startEdgeChain({ apps, otlpUrl, auditDir });

describe('forensics: trail and verify on the three-service scenario', function () {
  this.timeout(120000);
  let rx; let dir; let requestId; let traceId; let serverSpans;
  const apps = [];
  const files = () => ['edge', 'orders', 'users'].flatMap((n) => ['--file', path.join(dir, `${n}.jsonl`)]);
  const records = (name) => fs.readFileSync(path.join(dir, `${name}.jsonl`), 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));

  before(async () => {
    rx = await startOtlpReceiver();
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'auditrace-forensics-'));
    const port = await startChain(dir, apps, rx.url);
    // A forged X-Forwarded-For from an untrusted client: the real socket peer is the client.
    const res = await getFrom('127.0.0.2', port, '/orders/17', { 'x-forwarded-for': '6.6.6.6' });
    assert.equal(res.status, 200);
    assert.equal((await getFrom('127.0.0.2', port, '/missing', {})).status, 404);
    await rx.waitFor(() => rx.spans().filter((s) => s.kind === 2).length >= 4, { timeoutMs: 20000 });
    await new Promise((r) => setTimeout(r, 300));
    const access = records('edge').find((r) => r['event.name'] === 'http_request' && r['url.path'] === '/orders/17');
    requestId = access['request.id'];
    traceId = access.trace_id;
    serverSpans = rx.spans().filter((s) => s.traceId === traceId);
  });

  after(async () => {
    await Promise.all(apps.splice(0).map((a) => a.kill('SIGKILL')));
    await rx?.close();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('trail <request-id> from the local files alone: edge -> orders -> users, the client address, every service\'s records', () => {
    const r = cli(['trail', requestId, ...files()]);
    assert.equal(r.status, 0, r.stderr);
    const out = r.stdout;
    assert.match(out, new RegExp(`^request ${requestId} {2}trace ${traceId} `));
    assert.match(out, /path: edge -> orders -> users/);
    assert.match(out, /client 127\.0\.0\.2 \(original external address\)/);
    assert.match(out, /spans were not available/);
    const at = (re) => out.search(re);
    assert.ok(at(/^edge {2}instance /m) < at(/orders {2}instance /) && at(/orders {2}instance /) < at(/users {2}instance /), out);
    assert.match(out, /^edge .* from 127\.0\.0\.2 /m);
    assert.match(out, /orders .* from 127\.0\.0\.1 /);
    for (const name of ['edge', 'orders', 'users']) {
      assert.match(out, new RegExp(`${name}_handled {2}success {2}user u-1 .*\\[${path.join(dir, name)}\\.jsonl:\\d+\\]`));
    }
    assert.equal(out.match(/http_request {2}success {2}GET \/orders\/17 -> 200/g).length, 3);
    assert.ok(!out.includes('6.6.6.6'));
    assert.match(out, /errors: none/);
  });

  it('trail --json: the same tree, machine-readable', () => {
    const r = cli(['trail', requestId, ...files(), '--json']);
    assert.equal(r.status, 0, r.stderr);
    const t = JSON.parse(r.stdout);
    assert.equal(t.found, true);
    assert.deepEqual(t.matchedAs, ['request.id']);
    assert.deepEqual(t.requestIds, [requestId]);
    assert.deepEqual(t.traceIds, [traceId]);
    assert.equal(t.clientAddress, '127.0.0.2');
    assert.deepEqual(t.path, ['edge', 'orders', 'users']);
    assert.deepEqual(t.users, ['u-1']);
    assert.equal(t.spansAvailable, false);
    assert.equal(t.counts.records, 6);
    const hops = hopsOf(t.tree);
    assert.deepEqual(hops.map((h) => [h.service, h.peer, h.clientAddress]), [
      ['edge', '127.0.0.2', '127.0.0.2'], ['orders', '127.0.0.1', '127.0.0.2'], ['users', '127.0.0.1', '127.0.0.2'],
    ]);
    for (const h of hops) {
      assert.match(h.instance, /^[0-9a-f-]{36}$/);
      const own = h.children.filter((c) => c.type === 'record');
      assert.deepEqual(own.map((c) => c.event).sort(), [`${h.service}_handled`, 'http_request'].sort());
      for (const c of own) {
        assert.equal(c.record['service.name'], h.service);
        assert.equal(c.record['request.id'], requestId);
        assert.match(c.where, new RegExp(`${h.service}\\.jsonl:\\d+$`));
      }
      assert.ok(h.durationMs > 0);
    }
    // Each inner hop is a child of the one that called it.
    assert.equal(t.tree.length, 1);
    assert.ok(t.tree[0].children.some((c) => c.type === 'service' && c.service === 'orders'));
  });

  it('trail by the audit id of the innermost record finds the whole request', () => {
    const usersRecord = records('users').find((r) => r['request.id'] === requestId);
    const t = JSON.parse(cli(['trail', usersRecord['audit.id'], ...files(), '--json']).stdout);
    assert.deepEqual(t.matchedAs, ['audit.id']);
    assert.deepEqual(t.path, ['edge', 'orders', 'users']);
    assert.equal(t.counts.records, 6);
  });

  it('trail of an unknown id: exit 1, "no record with id", the nearest requests', () => {
    const r = cli(['trail', 'ffffffffffffffffffffffffffffffff', ...files()]);
    assert.equal(r.status, 1);
    assert.match(r.stdout, /^no record with id ffffffffffffffffffffffffffffffff\nmost recent requests:\n/);
    assert.ok(r.stdout.includes(requestId));
    // An audit id (UUIDv7) that does not exist: nearest by its embedded time.
    const edgeRecord = records('edge').find((x) => x['request.id'] === requestId);
    const fake = `${edgeRecord['audit.id'].slice(0, 24)}000000000000`;
    const u = cli(['trail', fake, ...files(), '--json']);
    assert.equal(u.status, 1);
    const nf = JSON.parse(u.stdout);
    assert.equal(nf.found, false);
    assert.equal(nf.reference.kind, 'uuidv7');
    assert.ok(nf.suggestions.some((s) => s.requestId === requestId));
    assert.ok(nf.suggestions.every((s) => /^20\d\d-/.test(s.time) && ['edge', 'orders', 'users'].includes(s.service)));
  });

  it('trail from an archive of the same records and the exported spans: the span tree', () => {
    const archive = path.join(dir, 'archive');
    fs.mkdirSync(archive, { recursive: true });
    const all = ['edge', 'orders', 'users'].flatMap((n) => fs.readFileSync(path.join(dir, `${n}.jsonl`), 'utf8').split('\n').filter(Boolean));
    gen.writeZstd(path.join(archive, 'audit.jsonl.zst'), gen.archiveLines(all, { batch: 4 }), 2);
    gen.writeZstd(path.join(archive, 'traces.jsonl.zst'), tracesLines(rx.spans()), 1);
    const r = cli(['trail', requestId, '--archive', archive, '--json']);
    assert.equal(r.status, 0, r.stderr);
    const t = JSON.parse(r.stdout);
    assert.equal(t.spansAvailable, true);
    assert.equal(t.counts.spans, serverSpans.length);
    assert.deepEqual(t.path, ['edge', 'orders', 'users']);
    assert.equal(t.clientAddress, '127.0.0.2');
    const hops = hopsOf(t.tree);
    for (const h of hops) {
      const server = h.children.find((c) => c.type === 'span' && c.kind === 'SERVER');
      assert.ok(server, `${h.service} has its SERVER span`);
      assert.deepEqual(recordsUnder(server).filter((c) => c.record['service.name'] === h.service).map((c) => c.spanId),
        [server.spanId, server.spanId], 'records sit under the span they were written in');
    }
    // orders' hop hangs under a CLIENT span of edge.
    const edgeServer = t.tree[0].children.find((c) => c.type === 'span');
    const client = edgeServer.children.find((c) => c.type === 'span' && c.kind === 'CLIENT');
    assert.ok(client.children.some((c) => c.type === 'service' && c.service === 'orders'));
    const text = cli(['trail', requestId, '--archive', archive]).stdout;
    assert.match(text, /SERVER {2}GET .* peer 127\.0\.0\.2 /);
    // And verify reads the very same chains from the archive.
    const v = cli(['verify', '--archive', archive, '--live', '--json']);
    assert.equal(v.status, 0, v.stdout);
  });

  it('verify --live: the running services\' chains are intact and open', () => {
    const r = cli(['verify', ...files(), '--live']);
    assert.equal(r.status, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /RESULT: intact/);
    assert.equal(r.stdout.match(/open \(live\)/g).length, 3);
    const strict = cli(['verify', ...files(), '--json']);
    assert.equal(strict.status, 1);
    assert.deepEqual([...new Set(JSON.parse(strict.stdout).findings.filter((f) => f.severity === 'error').map((f) => f.kind))], ['chain-end']);
  });
});

describe('forensics: trail from the archive the real agent + gateway pipeline writes', function () {
  this.timeout(180000);
  const procs = [];
  const apps = [];
  let dir; let rx;

  before(function () {
    if (!fs.existsSync(COLLECTOR)) {
      const msg = `collector binary ${COLLECTOR} not built (npm run collector:build)`;
      if (process.env.CI) throw new Error(`${msg}: required on CI`);
      console.log(`      skipped: ${msg}`);
      this.skip();
    }
  });

  after(async () => {
    await Promise.all(apps.splice(0).map((a) => a.kill('SIGKILL')));
    for (const p of procs) if (p.exitCode === null) p.kill('SIGKILL');
    await rx?.close();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  function collector(name, config, env) {
    const p = spawn(COLLECTOR, ['--config', path.join(ROOT, 'collector-config', config), '--feature-gates=exporter.file.nativeCompression'], {
      env: { PATH: process.env.PATH, HOME: process.env.HOME ?? '/tmp', ...env }, stdio: ['ignore', 'ignore', 'pipe'],
    });
    p.log = '';
    p.stderr.on('data', (d) => { p.log = (p.log + d).slice(-20000); });
    p.name = name;
    procs.push(p);
    return p;
  }

  async function healthy(port, p) {
    for (let i = 0; i < 100; i++) {
      if (p.exitCode !== null) throw new Error(`${p.name} exited ${p.exitCode}:\n${p.log}`);
      const ok = await new Promise((resolve) => {
        http.get({ host: '127.0.0.1', port, path: '/' }, (res) => { res.resume(); resolve(res.statusCode === 200); }).on('error', () => resolve(false));
      });
      if (ok) return;
      await new Promise((r) => setTimeout(r, 200));
    }
    throw new Error(`${p.name} not healthy:\n${p.log}`);
  }

  it('shows edge -> orders -> users with spans, and the chains verify from the archive', async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'auditrace-forensics-pipeline-'));
    fs.mkdirSync(path.join(dir, 'logs'));
    rx = await startOtlpReceiver(); // the gateway's backend
    const [gwOtlp, gwHealth, gwMetrics, agOtlp, agHealth, agMetrics] = await Promise.all(Array.from({ length: 6 }, freePort));
    const archive = path.join(dir, 'archive');
    const gateway = collector('gateway', 'gateway.yaml', {
      AUDITRACE_GATEWAY_OTLP_ENDPOINT: `127.0.0.1:${gwOtlp}`, AUDITRACE_GATEWAY_HEALTH_ENDPOINT: `127.0.0.1:${gwHealth}`,
      AUDITRACE_GATEWAY_METRICS_PORT: String(gwMetrics), AUDITRACE_GATEWAY_STORAGE_DIR: path.join(dir, 'gateway'),
      AUDITRACE_ARCHIVE_DIR: archive, AUDITRACE_BACKEND_ENDPOINT: rx.url,
    });
    const agent = collector('agent', 'agent.yaml', {
      AUDITRACE_AGENT_OTLP_ENDPOINT: `127.0.0.1:${agOtlp}`, AUDITRACE_AGENT_HEALTH_ENDPOINT: `127.0.0.1:${agHealth}`,
      AUDITRACE_AGENT_METRICS_PORT: String(agMetrics), AUDITRACE_AGENT_STORAGE_DIR: path.join(dir, 'agent'),
      AUDITRACE_AUDIT_FILES: path.join(dir, 'logs', '*.jsonl*'), AUDITRACE_GATEWAY_ENDPOINT: `http://127.0.0.1:${gwOtlp}`,
      AUDITRACE_AGENT_POLL_INTERVAL: '100ms',
    });
    await healthy(gwHealth, gateway);
    await healthy(agHealth, agent);
    const port = await startChain(dir, apps, `http://127.0.0.1:${agOtlp}`, path.join(dir, 'logs'));
    assert.equal((await getFrom('127.0.0.2', port, '/orders/5')).status, 200);
    await new Promise((r) => setTimeout(r, 300));
    const edgeAccess = fs.readFileSync(path.join(dir, 'logs', 'edge.jsonl'), 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l))
      .find((r) => r['event.name'] === 'http_request');
    const requestId = edgeAccess['request.id'];

    // The archive fills as the agent ships: poll trail until every record and span of the request is there.
    let t;
    for (let i = 0; i < 60; i++) {
      const r = cli(['trail', requestId, '--archive', archive, '--json']);
      if (r.status === 0) {
        t = JSON.parse(r.stdout);
        if (t.counts.records >= 6 && t.counts.spans >= 5) break;
      }
      await new Promise((res) => setTimeout(res, 500));
    }
    assert.ok(t, `the request never reached the archive\n--- gateway:\n${gateway.log.slice(-3000)}\n--- agent:\n${agent.log.slice(-3000)}`);
    assert.deepEqual(t.path, ['edge', 'orders', 'users']);
    assert.equal(t.clientAddress, '127.0.0.2');
    assert.equal(t.spansAvailable, true);
    assert.equal(t.counts.records, 6);
    assert.ok(fs.readdirSync(archive).includes('audit.jsonl.zst'));
    const text = cli(['trail', requestId, '--archive', archive]).stdout;
    assert.match(text, /path: edge -> orders -> users/);
    assert.match(text, /CLIENT/);
    // The records reconstructed from OTLP attributes hash exactly as the lines did.
    const v = JSON.parse(cli(['verify', '--archive', archive, '--live', '--json']).stdout);
    assert.deepEqual(v.findings.filter((f) => f.severity === 'error'), []);
    assert.equal(v.chains.length, 3);
    assert.equal(v.ok, true);
  });
});
