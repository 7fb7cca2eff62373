'use strict';
// auditrace trail (lib/forensics/trail.ts, tree.ts) over a generated edge -> orders -> users
// scenario: local files, the archive (with spans), ids of every kind, errors, misses.
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawnSync } = require('node:child_process');
const { trail } = require('../../dist/lib/forensics/trail.js');
const { formatTrail } = require('../../dist/lib/forensics/tree.js');
const { resolveInputs } = require('../../dist/lib/forensics/inputs.js');
const { ROOT } = require('../helpers/run-app.js');
const gen = require('../fixtures/forensics/gen.js');

const SERVICES = ['edge', 'orders', 'users'];
const T0 = Date.UTC(2026, 10, 22, 5, 0, 0) * 1000;
const STEP = 10_000; // 10 ms between requests
const md5 = (s) => crypto.createHash('md5').update(s).digest('hex');
const ids = (r) => ({ rid: md5(`r${r}`), tid: md5(`t${r}`) });
const spanId = (r, s, kind) => md5(`s${r}${s}${kind}`).slice(0, 16);
const start = (s) => 100 * s + 50;
const handled = (s) => 100 * (s + 1);
const end = (s) => 600 - 50 * s;
const FAILING = 3; // users answers 500 to request 3

function scenario(dir, requests = 8) {
  const local = path.join(dir, 'local');
  const archive = path.join(dir, 'archive');
  fs.mkdirSync(local);
  fs.mkdirSync(archive);
  const all = [];
  const instance = (s) => `00000000-0000-4000-8000-00000000000${s}`;
  SERVICES.forEach((service, s) => {
    const { lines } = gen.chainLines({
      count: requests * 2, service, instance: instance(s), pod: `${service}-pod`, startMicros: T0 - 5000, stepMicros: 0,
      record: (i) => {
        const r = i >> 1;
        const { rid, tid } = ids(r);
        const base = T0 + r * STEP;
        const common = { 'client.address': '198.51.100.7', 'request.id': rid, trace_id: tid, span_id: spanId(r, s, 'server') };
        const status = r === FAILING && s > 0 ? 500 : 200;
        if ((i & 1) === 0) {
          if (r === FAILING && s === 2) {
            return { event: 'sensitive_read', outcome: 'failure', severity: 'WARN', extra: { 'user.id': 'u-42', ...common, time: gen.rfc3339(base + handled(s)) }, fields: { 'object.type': 'patient', 'error.message': 'database timeout' } };
          }
          return { event: `${service}_handled`, extra: { 'user.id': `u-${r}`, ...common, time: gen.rfc3339(base + handled(s)) }, fields: {} };
        }
        return {
          event: 'http_request', outcome: status >= 400 ? 'failure' : 'success', severity: status >= 500 ? 'ERROR' : 'INFO',
          extra: { ...common, time: gen.rfc3339(base + end(s)) },
          fields: {
            'http.request.method': 'GET', 'url.path': `/orders/${r}`, 'http.response.status_code': status,
            'http.server.request.duration': (end(s) - start(s)) / 1e6, 'network.peer.address': s === 0 ? '198.51.100.7' : '10.0.0.7',
          },
        };
      },
    });
    gen.writeLines(path.join(local, `${service}.jsonl`), lines);
    all.push(...lines);
  });
  gen.writeZstd(path.join(archive, 'audit.jsonl.zst'), gen.archiveLines(all, { batch: 10 }), 2);
  const traces = [];
  for (let r = 0; r < requests; r++) {
    const { rid, tid } = ids(r);
    const base = T0 + r * STEP;
    traces.push(gen.tracesLine(SERVICES.map((service, s) => ({
      resource: { 'service.name': service, 'service.instance.id': instance(s), 'k8s.pod.name': `${service}-pod` },
      spans: [
        {
          traceId: tid, spanId: spanId(r, s, 'server'), parentSpanId: s === 0 ? '' : spanId(r, s - 1, 'client'), name: 'GET /orders/:id', kind: 2,
          start: base + start(s), end: base + end(s), error: r === FAILING && s > 0 ? 'HTTP 500' : undefined,
          attributes: { 'request.id': rid, 'client.address': '198.51.100.7', 'network.peer.address': s === 0 ? '198.51.100.7' : '10.0.0.7', 'http.route': '/orders/:id', 'http.response.status_code': r === FAILING && s > 0 ? 500 : 200 },
        },
        ...(s < 2 ? [{
          traceId: tid, spanId: spanId(r, s, 'client'), parentSpanId: spanId(r, s, 'server'), name: 'GET', kind: 3,
          start: base + start(s + 1) - 10, end: base + end(s + 1) + 10, attributes: { 'server.address': SERVICES[s + 1], 'server.port': 8080, 'http.response.status_code': 200 },
        }] : []),
      ],
    }))));
  }
  gen.writeZstd(path.join(archive, 'traces.jsonl.zst'), traces, 3);
  return { local, archive, all };
}

let dir;
let sc;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'auditrace-trail-'));
  sc = scenario(dir);
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

async function find(id, { files = [], archives = [] } = {}) {
  const problems = [];
  const r = await trail({ id, inputs: resolveInputs(files, archives), events: { problem: (_i, m) => problems.push(m), progress() {} } });
  return { r, problems };
}

const services = (nodes, out = []) => {
  for (const n of nodes) {
    if (n.type === 'service') out.push(n);
    if (n.type !== 'record') services(n.children, out);
  }
  return out;
};
const recordsIn = (node) => node.children.flatMap((c) => (c.type === 'record' ? [c] : c.type === 'span' ? recordsIn(c) : []));

describe('forensics: trail', function () {
  this.timeout(60000);

  it('from local files alone: the path by access-record times, the client, every record under its service', async () => {
    const { rid } = ids(5);
    const { r } = await find(rid, { files: [sc.local] });
    assert.equal(r.found, true);
    assert.deepEqual(r.matchedAs, ['request.id']);
    assert.deepEqual(r.path, ['edge', 'orders', 'users']);
    assert.equal(r.clientAddress, '198.51.100.7');
    assert.equal(r.spansAvailable, false);
    assert.match(r.notes.join(' '), /spans were not available/);
    assert.equal(r.counts.records, 6);
    const [edge] = r.tree;
    assert.equal(edge.service, 'edge');
    assert.equal(edge.peer, '198.51.100.7');
    assert.equal(edge.pod, 'edge-pod');
    const hops = services(r.tree);
    assert.deepEqual(hops.map((h) => [h.service, h.peer]), [['edge', '198.51.100.7'], ['orders', '10.0.0.7'], ['users', '10.0.0.7']]);
    for (const h of hops) {
      const own = h.children.filter((c) => c.type === 'record');
      assert.deepEqual(own.map((c) => c.event), [`${h.service}_handled`, 'http_request']);
      assert.ok(own.every((c) => c.record['service.name'] === h.service));
    }
    assert.equal(hops[0].durationMs, 0.55);
  });

  it('from the archive with spans: SERVER/CLIENT spans nest the next service, records sit in their spans', async () => {
    const { rid, tid } = ids(5);
    const { r, problems } = await find(rid, { archives: [sc.archive] });
    assert.deepEqual(problems, []);
    assert.equal(r.spansAvailable, true);
    assert.deepEqual(r.traceIds, [tid]);
    assert.equal(r.counts.spans, 5);
    assert.deepEqual(r.path, ['edge', 'orders', 'users']);
    const [edge] = r.tree;
    assert.equal(edge.placedBy, 'spans');
    const server = edge.children[0];
    assert.equal(server.type, 'span');
    assert.equal(server.kind, 'SERVER');
    assert.deepEqual(recordsIn({ children: [server] }).filter((x) => x.record['service.name'] === 'edge').map((x) => x.event), ['edge_handled', 'http_request']);
    const client = server.children.find((c) => c.type === 'span');
    assert.equal(client.kind, 'CLIENT');
    assert.equal(client.children[0].type, 'service');
    assert.equal(client.children[0].service, 'orders');
    const text = formatTrail(r);
    assert.match(text, /path: edge -> orders -> users/);
    assert.match(text, /CLIENT {2}GET {2}to orders:8080/);
    assert.ok(text.indexOf('edge_handled') < text.indexOf('orders_handled'));
    assert.ok(text.indexOf('orders_handled') < text.indexOf('users_handled'));
  });

  it('finds the same request by its trace id and by the audit id of any of its records', async () => {
    const { rid, tid } = ids(6);
    const byTrace = (await find(tid, { files: [sc.local] })).r;
    assert.deepEqual(byTrace.matchedAs, ['trace_id']);
    assert.deepEqual(byTrace.requestIds, [rid]);
    assert.equal(byTrace.counts.records, 6);
    // An audit id from the last file: the request's records in the files before it need the second pass.
    const usersRecord = sc.all.map((l) => JSON.parse(l)).find((x) => x['request.id'] === rid && x['service.name'] === 'users');
    const byAudit = (await find(usersRecord['audit.id'], { files: [sc.local], archives: [sc.archive] })).r;
    assert.deepEqual(byAudit.matchedAs, ['audit.id']);
    assert.deepEqual(byAudit.requestIds, [rid]);
    assert.equal(byAudit.counts.records, 6, 'local and archive copies of a record count once');
    assert.deepEqual(byAudit.path, ['edge', 'orders', 'users']);
  });

  it('lists errors: a failed call, status >= 400, error.message', async () => {
    const { rid } = ids(FAILING);
    const { r } = await find(rid, { archives: [sc.archive] });
    const messages = r.errors.map((e) => `${e.service} ${e.what}: ${e.message}`);
    assert.ok(messages.includes('users sensitive_read: database timeout'), messages.join('\n'));
    assert.ok(messages.some((m) => /^orders http_request: HTTP 500/.test(m)));
    assert.ok(messages.some((m) => /^users SERVER span .*: HTTP 500/.test(m)));
    assert.match(formatTrail(r), /! .*sensitive_read {2}failure/);
  });

  it('a miss names the nearest requests: by the time inside a UUIDv7, else the most recent', async () => {
    const near = gen.uuidv7(Math.floor((T0 + 2 * STEP + 300) / 1000));
    const { r } = await find(near, { files: [sc.local], archives: [sc.archive] });
    assert.equal(r.found, false);
    assert.equal(r.message, `no record with id ${near}`);
    assert.equal(r.reference.kind, 'uuidv7');
    assert.equal(r.suggestions.length, 5);
    assert.equal(r.suggestions[0].requestId, ids(2).rid);
    assert.ok(r.suggestions.every((s) => s.time && s.service));
    const recent = (await find('no-such-request', { archives: [sc.archive] })).r;
    assert.equal(recent.reference.kind, 'most-recent');
    assert.deepEqual(recent.suggestions.map((s) => s.requestId).slice(0, 2), [ids(7).rid, ids(6).rid]);
    assert.equal(recent.suggestions[0].service, 'edge');
  });

  it('reports a corrupt line on stderr and still finds the request', async () => {
    const f = path.join(sc.local, 'orders.jsonl');
    const ls = fs.readFileSync(f, 'utf8').split('\n');
    ls.splice(3, 0, '{"time": garbage');
    fs.writeFileSync(f, ls.join('\n'));
    const { r, problems } = await find(ids(1).rid, { files: [sc.local] });
    assert.equal(r.found, true);
    assert.deepEqual(problems, [`${f}:4: not JSON (skipped)`]);
  });

  it('skips a line longer than 8 MiB, reports it with file and line, and still finds the request', async () => {
    const f = path.join(sc.local, 'orders.jsonl');
    const ls = fs.readFileSync(f, 'utf8').split('\n');
    ls.splice(3, 0, JSON.stringify({ 'request.id': ids(1).rid, pad: 'x'.repeat(9 * 1024 * 1024) }));
    fs.writeFileSync(f, ls.join('\n'));
    const { r, problems } = await find(ids(1).rid, { files: [sc.local] });
    assert.equal(r.found, true);
    assert.equal(problems.length, 1);
    assert.match(problems[0], new RegExp(`^${f.replace(/[.]/g, '\\.')}:4: line longer than 8388608 bytes \\(\\d+ bytes\\) \\(skipped\\)$`));
  });

  it('reports a record nested too deep to print as unreadable and goes on (it once ended the run: stack overflow)', async () => {
    const f = path.join(dir, 'deep.jsonl');
    let deep = '0';
    for (let i = 0; i < 20000; i++) deep = `[${deep}]`;
    const rec = (aid, v) => `{"time":"2026-11-22T05:00:00.000001Z","audit.id":"${aid}","event.name":"x","request.id":"deep-1","service.name":"s","v":${v}}`;
    fs.writeFileSync(f, `${rec('a1', deep)}\n${rec('a2', '1')}\n`);
    const { r, problems } = await find('deep-1', { files: [f] });
    assert.equal(r.found, true);
    assert.deepEqual(problems, [`${f}:1: unreadable record: nested deeper than 64 levels (skipped)`]);
    assert.doesNotThrow(() => formatTrail(r));
    assert.doesNotThrow(() => JSON.stringify(r));
  });

  it('finds an id with characters JSON may escape (no raw pre-filter)', async () => {
    const f = path.join(dir, 'odd.jsonl');
    gen.writeLines(f, [JSON.stringify({ time: '2026-11-22T05:00:00.000001Z', 'audit.id': 'a1', 'event.name': 'x', 'request.id': 'odd <id> "1"', 'service.name': 's' })]);
    const { r } = await find('odd <id> "1"', { files: [f] });
    assert.equal(r.found, true);
  });

  describe('the command', () => {
    const cli = (args) => spawnSync(process.execPath, [path.join(ROOT, 'bin/auditrace.js'), ...args], { encoding: 'utf8' });

    it('exits 0 with the tree, 1 with suggestions, 2 on a usage error; --json is the same tree', () => {
      const { rid } = ids(4);
      const ok = cli(['trail', rid, '--file', sc.local]);
      assert.equal(ok.status, 0, ok.stderr);
      assert.match(ok.stdout, /path: edge -> orders -> users/);
      const json = JSON.parse(cli(['trail', rid, '--file', sc.local, '--json']).stdout);
      assert.deepEqual(json.path, ['edge', 'orders', 'users']);
      assert.equal(json.tree[0].type, 'service');
      const miss = cli(['trail', 'deadbeef', '--archive', sc.archive]);
      assert.equal(miss.status, 1);
      assert.match(miss.stdout, /^no record with id deadbeef\nmost recent requests:\n {2}[0-9a-f]{32} {2}2026-/);
      assert.equal(cli(['trail', '--file', sc.local]).status, 2);
      assert.equal(cli(['trail', 'a', 'b', '--file', sc.local]).status, 2);
      assert.equal(cli(['trail', 'a']).status, 2);
      assert.equal(cli(['trail', 'a', '--file', sc.local, '--live']).status, 2);
    });

    it('never lets a recorded value drive the terminal (escape sequences are shown escaped)', () => {
      const f = path.join(dir, 'esc.jsonl');
      gen.writeLines(f, [JSON.stringify({
        time: '2026-11-22T05:00:00.000001Z', 'audit.id': 'a1', 'event.name': 'http_request', 'request.id': 'esc-1', 'service.name': 's',
        'url.path': '/\u001b[2J\u001b]0;owned\u0007', 'user_agent.original': 'x\u202ey', 'network.peer.address': '10.0.0.1',
      })]);
      const r = cli(['trail', 'esc-1', '--file', f]);
      assert.equal(r.status, 0, r.stderr);
      assert.ok(!/[\u001b\u0007\u202e]/.test(r.stdout), r.stdout);
      assert.match(r.stdout, /\\u001b\[2J/);
    });

    it('never lets a recorded value start a line of its own (line breaks in values are shown escaped)', () => {
      const f = path.join(dir, 'lines.jsonl');
      const forged = '\n└─ forged  reason=bad_password';
      gen.writeLines(f, [JSON.stringify({
        time: '2026-11-22T05:00:00.000001Z', 'audit.id': 'a1', 'event.name': 'authn_login_fail', 'event.outcome': 'failure', 'request.id': 'nl-1',
        'service.name': 's', 'user.id': `mallory${forged}`, 'error.message': `bad\u2028└─ forged2\r\u0085\u2029x`,
      })]);
      const r = cli(['trail', 'nl-1', '--file', f]);
      assert.equal(r.status, 0, r.stderr);
      assert.ok(!/[\u0085\u2028\u2029\r]/.test(r.stdout), r.stdout);
      assert.ok(!r.stdout.split('\n').some((l) => /^\s*└─ forged/.test(l)), r.stdout);
      assert.match(r.stdout, /mallory\\u000a└─ forged/);
    });
  });
});
