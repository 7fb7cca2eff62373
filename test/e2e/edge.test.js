'use strict';
const assert = require('node:assert/strict');
const fs = require('node:fs');
const http = require('node:http');
const os = require('node:os');
const path = require('node:path');
const { startEdgeChain } = require('../helpers/chain');
const { startOtlpReceiver } = require('../helpers/otlp-receiver.js');
const { startApp } = require('../helpers/run-app.js');

/** A GET from a chosen loopback source address, so "client" and "proxy" are distinct peers. */
function getFrom(localAddress, port, urlPath, headers) {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: urlPath, headers, localAddress, agent: false }, (res) => {
      let body = '';
      res.on('data', (d) => { body += d; });
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body }));
    });
    req.on('error', reject);
  });
}

const CHAIN_EVENTS = new Set(['audit_chain_start', 'audit_checkpoint', 'audit_chain_end']);
const FORGED_TRACE = 'abcdefabcdefabcdefabcdefabcdef01';
const forged = {
  'x-request-id': 'forged-request-id-0001',
  'x-forwarded-for': '6.6.6.6, 7.7.7.7',
  traceparent: `00-${FORGED_TRACE}-1111111111111111-00`,
};

describe('edge trust: edge → orders → users', function () {
  let rx; let dir; const apps = [];
  // The request's records; the process's own hash-chain records (start, checkpoints, end) carry no request.
  const records = (name) => fs.readFileSync(path.join(dir, `${name}.jsonl`), 'utf8').split('\n').filter(Boolean)
    .map((l) => JSON.parse(l)).filter((r) => !CHAIN_EVENTS.has(r['event.name']));

  const chain = (edgeTrust) => startEdgeChain({ apps, otlpUrl: rx.url, auditDir: dir, edgeTrust });

  beforeEach(async () => {
    rx = await startOtlpReceiver();
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'auditrace-edge-'));
  });
  afterEach(async () => {
    await Promise.all(apps.splice(0).map((a) => a.kill('SIGKILL')));
    await rx.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  describe('a forged request from an untrusted client', () => {
    let res; let all; let serverSpans;
    beforeEach(async () => {
      const port = await chain(undefined);
      res = await getFrom('127.0.0.2', port, '/orders?email=jane@example.com', forged);
      await rx.waitFor(() => rx.spans().filter((s) => s.kind === 2).length >= 3, { timeoutMs: 15000 });
      await new Promise((r) => setTimeout(r, 300));
      all = ['edge', 'orders', 'users'].flatMap((n) => records(n));
      serverSpans = rx.spans().filter((s) => s.kind === 2);
    });

    it('is served exactly as without auditrace', () => {
      assert.equal(res.status, 200);
      assert.equal(JSON.parse(res.body).downstream.downstream.service, 'users');
    });

    it('yields one request id shared by every record of all three services, not the forged one', () => {
      const ids = new Set(all.map((r) => r['request.id']));
      assert.equal(ids.size, 1, JSON.stringify([...ids]));
      const [id] = ids;
      assert.notEqual(id, forged['x-request-id']);
      assert.match(id, /^[0-9a-f]{32}$/);
      for (const s of serverSpans) assert.equal(s.attributes['request.id'], id);
      assert.deepEqual(new Set(all.map((r) => r['service.name'])), new Set(['edge', 'orders', 'users']));
    });

    it('keeps the forged id only as a separate forensic attribute at the edge', () => {
      const access = records('edge').find((r) => r['event.name'] === 'http_request');
      assert.equal(access['request.id.untrusted'], forged['x-request-id']);
      for (const r of [...records('orders'), ...records('users')]) assert.equal(r['request.id.untrusted'], undefined);
    });

    it("records the real socket peer as the edge's client address, ignoring the forged X-Forwarded-For", () => {
      for (const r of records('edge')) assert.equal(r['client.address'], '127.0.0.2');
      const edgeSpan = serverSpans.find((s) => s.resource['service.name'] === 'edge');
      assert.equal(edgeSpan.attributes['client.address'], '127.0.0.2');
      assert.equal(edgeSpan.attributes['network.peer.address'], '127.0.0.2');
    });

    it('carries the original external address into every record of the inner services, beside their own peer', () => {
      for (const name of ['orders', 'users']) {
        for (const r of records(name)) assert.equal(r['client.address'], '127.0.0.2', `${name}: ${JSON.stringify(r)}`);
        const access = records(name).find((r) => r['event.name'] === 'http_request');
        assert.equal(access['network.peer.address'], '127.0.0.1');
      }
      assert.ok(!JSON.stringify(all).includes('6.6.6.6'));
    });

    it('starts a new trace linked to the forged one, recorded although the forged flags said not sampled', () => {
      const traceIds = new Set(serverSpans.map((s) => s.traceId));
      assert.equal(traceIds.size, 1);
      const [traceId] = traceIds;
      assert.notEqual(traceId, FORGED_TRACE);
      const edgeSpan = serverSpans.find((s) => s.resource['service.name'] === 'edge');
      assert.equal(edgeSpan.parentSpanId, '');
      assert.deepEqual(edgeSpan.links.map((l) => l.traceId), [FORGED_TRACE]);
      assert.equal(records('edge').find((r) => r['event.name'] === 'http_request')['trace.untrusted_parent'], FORGED_TRACE);
      for (const r of all) assert.equal(r.trace_id, traceId);
    });

    it('writes one access record per request in every service, without query values', () => {
      for (const name of ['edge', 'orders', 'users']) {
        const access = records(name).filter((r) => r['event.name'] === 'http_request');
        assert.equal(access.length, 1, name);
        assert.equal(access[0]['url.path'], '/orders');
        assert.equal(access[0]['http.response.status_code'], 200);
        assert.equal(access[0]['event.outcome'], 'success');
      }
      assert.ok(!JSON.stringify(all).includes('jane@example.com'));
      for (const s of serverSpans) assert.ok(!JSON.stringify(s.attributes).includes('jane@example.com'));
    });
  });

  it('through a trusted proxy hop, the proxy-supplied client address is used everywhere', async () => {
    const port = await chain('127.0.0.3');
    const res = await getFrom('127.0.0.3', port, '/orders', { 'x-forwarded-for': '6.6.6.6, 198.51.100.7', 'x-request-id': 'proxy-request-id-42' });
    assert.equal(res.status, 200);
    await rx.waitFor(() => rx.spans().filter((s) => s.kind === 2).length >= 3, { timeoutMs: 15000 });
    await new Promise((r) => setTimeout(r, 300));
    const all = ['edge', 'orders', 'users'].flatMap((n) => records(n));
    for (const r of all) {
      assert.equal(r['client.address'], '198.51.100.7', JSON.stringify(r));
      assert.equal(r['request.id'], 'proxy-request-id-42', 'a trusted proxy\'s well-formed request id is kept');
    }
  });

  it('records requests to routes that do not exist and refused ones, with authz_fail for an unrecorded 403', async () => {
    const port = await chain(undefined);
    assert.equal((await getFrom('127.0.0.2', port, '/missing/thing', {})).status, 404);
    assert.equal((await getFrom('127.0.0.2', port, '/private', {})).status, 403);
    await new Promise((r) => setTimeout(r, 300));
    const edge = records('edge');
    const missing = edge.find((r) => r['url.path'] === '/missing/thing');
    assert.equal(missing['http.response.status_code'], 404);
    assert.equal(missing['event.outcome'], 'failure');
    const denied = edge.filter((r) => r['url.path'] === '/private' || r['authz.action'] === 'GET /private');
    assert.deepEqual(denied.map((r) => r['event.name']).sort(), ['authz_fail', 'http_request']);
    assert.equal(new Set(denied.map((r) => r['request.id'])).size, 1);
  });

  it('echoes the request id in the response when asked', async () => {
    const users = startApp('edge/chain.js', { env: { SERVICE: 'users', AUDITRACE_REQUEST_ID_RESPONSE_HEADER: 'true', OTEL_TRACES_EXPORTER: 'none', OTEL_METRICS_EXPORTER: 'none', OTEL_LOGS_EXPORTER: 'none', AUDITRACE_AUDIT_FILE: path.join(dir, 'users.jsonl') } });
    apps.push(users);
    const [, port] = await users.waitForOutput(/listening (\d+)/);
    const res = await getFrom('127.0.0.2', Number(port), '/x', forged);
    assert.match(res.headers['x-request-id'], /^[0-9a-f]{32}$/);
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(records('users').find((r) => r['event.name'] === 'http_request')['request.id'], res.headers['x-request-id']);
  });
});
