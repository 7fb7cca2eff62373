'use strict';
// Hostile bytes at the edge, on real sockets. One plain node:http server
// (test/fixtures/edge/hostile-server.js) runs three times: preloaded with auditrace trusting
// loopback, preloaded trusting nothing, and WITHOUT auditrace. Every request goes to all three:
// the preloaded ones must answer exactly what the bare server answers, keep serving, write only
// valid single-line records with no raw control character, and print no stack trace.
// Requests Node's own http client refuses to send (CR, LF, NUL in a header) are written raw.
const assert = require('node:assert/strict');
const fs = require('node:fs');
const http = require('node:http');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const Ajv2020 = require('ajv/dist/2020').default;
const fc = require('fast-check');
const { startOtlpReceiver } = require('../helpers/otlp-receiver.js');
const { startApp, ROOT } = require('../helpers/run-app.js');

const schema = JSON.parse(fs.readFileSync(path.join(ROOT, 'audit-record.schema.json'), 'utf8'));
const validate = new Ajv2020({ allErrors: true, strict: true, strictRequired: false }).compile(schema);

const HEX32 = /^[0-9a-f]{32}$/;
/** Raw in a line of the audit file: C0 (the file's own '\n' aside), DEL, C1, U+2028/2029, bidi overrides. */
const RAW_CONTROL = /[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/;
/** Decoded values of the fields the edge derives from headers must not carry a control character either. */
const EDGE_FIELDS = ['request.id', 'request.id.untrusted', 'request.id.replaced', 'client.address', 'network.peer.address', 'url.path', 'trace.untrusted_parent'];
const VALUE_CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/;
const STACK_LINE = /^\s+at .+(:\d+:\d+\)?|\(native\)|<anonymous>\)?)$/m;

/** One HTTP/1.1 request as bytes; header values given as strings are latin1 bytes, Buffers are sent as they are. */
function rawRequest({ method = 'GET', target = '/', headers = [], body, contentLength }) {
  const parts = [Buffer.from(`${method} ${target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n`, 'latin1')];
  for (const [name, value] of headers) {
    parts.push(Buffer.from(`${name}: `, 'latin1'), Buffer.isBuffer(value) ? value : Buffer.from(value, 'latin1'), Buffer.from('\r\n', 'latin1'));
  }
  if (body !== undefined) parts.push(Buffer.from(`Content-Length: ${contentLength ?? Buffer.byteLength(body)}\r\n`, 'latin1'));
  parts.push(Buffer.from('\r\n', 'latin1'));
  if (body !== undefined) parts.push(Buffer.from(body, 'latin1'));
  return Buffer.concat(parts);
}

/**
 * Writes `bytes` on a fresh connection and reads until the server closes it. `status` is null when
 * no status line came back (the server never answered, or `abortAfterMs` hung up first).
 */
function sendRaw(port, bytes, { abortAfterMs, timeoutMs = 5000 } = {}) {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    const chunks = [];
    let done = false;
    let error;
    const finish = () => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      const text = Buffer.concat(chunks).toString('latin1');
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(text);
      resolve({ status: m ? Number(m[1]) : null, error, head: text.split('\r\n')[0] });
    };
    const timer = setTimeout(() => { error = abortAfterMs ? 'aborted' : 'timeout'; finish(); }, abortAfterMs ?? timeoutMs);
    socket.on('data', (c) => chunks.push(c));
    socket.on('end', finish);
    socket.on('close', finish);
    socket.on('error', (e) => { error = e.code; }); // e.g. ECONNRESET after a 431: the status was still read
    socket.write(bytes);
  });
}

/** A request through Node's own http client (which only sends what it considers valid). */
function sendHttp(port, target, headers) {
  return new Promise((resolve) => {
    const req = http.request({ host: '127.0.0.1', port, path: target, headers, agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode }));
    });
    req.setTimeout(5000, () => req.destroy(new Error('timeout')));
    req.on('error', (e) => resolve({ status: null, error: e.code ?? e.message }));
    req.end();
  });
}

const VALID_TRACE = '0af7651916cd43dd8448eb211c80319c';
const VALID_SPAN = 'b7ad6b7169203331';
const validTraceparent = (trace = VALID_TRACE) => `00-${trace}-${VALID_SPAN}-01`;

describe('edge under hostile input (fixtures/edge/hostile-server.js, with and without auditrace)', function () {
  this.timeout(90_000);
  let rx; let dir; let servers; let caseNo = 0;

  const fileOf = (name) => path.join(dir, `${name}.jsonl`);
  const lines = (name) => (fs.existsSync(fileOf(name)) ? fs.readFileSync(fileOf(name), 'utf8') : '').split('\n').slice(0, -1);
  // The process's own hash-chain records (start, checkpoints, end) belong to no request.
  const recordsOf = (name) => lines(name).map((l) => JSON.parse(l))
    .filter((r) => !['audit_chain_start', 'audit_checkpoint', 'audit_chain_end'].includes(r['event.name']));
  /**
   * Records of the request(s) to `target`: the access record and every record written inside its
   * server span (the handler runs in it). Not grouped by request id: a trusted peer may send the same
   * well-formed id twice, and it is kept.
   */
  const recordsFor = (name, target) => {
    const all = recordsOf(name);
    const access = all.filter((r) => r['event.name'] === 'http_request' && r['url.path'] === target);
    const spans = new Set(access.map((r) => r.span_id));
    return { access, all: all.filter((r) => spans.has(r.span_id)) };
  };

  async function startServer(name, env, preload) {
    const app = startApp('edge/hostile-server.js', {
      preload,
      env: {
        OTEL_SERVICE_NAME: `hostile-${name}`, OTEL_EXPORTER_OTLP_ENDPOINT: rx.url, OTEL_BSP_SCHEDULE_DELAY: '200',
        OTEL_METRICS_EXPORTER: 'none', OTEL_LOGS_EXPORTER: 'none', ...env,
      },
    });
    const [, port] = await app.waitForOutput(/listening (\d+)/, { timeoutMs: 20_000 });
    return { name, app, port: Number(port) };
  }

  beforeEach(async function () {
    rx = await startOtlpReceiver();
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'auditrace-hostile-'));
    // The Forwarded cases run against proxies that append RFC 7239 Forwarded; the rest against XFF.
    const header = this.currentTest.title.startsWith('Forwarded') ? 'forwarded' : 'x-forwarded-for';
    const [trusted, untrusted, bare] = await Promise.all([
      startServer('trusted', { HOSTILE_AUDIT_EVENT: '1', AUDITRACE_TRUSTED_PROXIES: 'loopback', AUDITRACE_FORWARDED_HEADER: header, AUDITRACE_AUDIT_FILE: path.join(dir, 'trusted.jsonl') }),
      startServer('untrusted', { HOSTILE_AUDIT_EVENT: '1', AUDITRACE_AUDIT_FILE: path.join(dir, 'untrusted.jsonl') }),
      startServer('bare', {}, 'none'),
    ]);
    servers = { trusted, untrusted, bare };
  });

  afterEach(async () => {
    await Promise.all(Object.values(servers ?? {}).map((s) => s.app.kill('SIGKILL')));
    servers = undefined;
    await rx?.close();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  /**
   * Sends each case to the three servers; the preloaded ones must answer what the bare one answers
   * (and what the case expects of it), then still serve a plain request.
   */
  async function run(cases) {
    const results = [];
    for (const c of cases) {
      const target = c.target ?? `/case/${++caseNo}`;
      const bytes = c.raw ? Buffer.from(c.raw(target), 'latin1') : rawRequest({ ...c, target });
      const [t, u, b] = await Promise.all([servers.trusted, servers.untrusted, servers.bare].map((s) => sendRaw(s.port, bytes, c)));
      assert.equal(b.status, c.expect, `${c.name}: the bare server answered ${b.head || b.error}`);
      assert.equal(t.status, b.status, `${c.name}: trusting loopback, auditrace answered ${t.head || t.error}, the bare server ${b.status}`);
      assert.equal(u.status, b.status, `${c.name}: trusting nothing, auditrace answered ${u.head || u.error}, the bare server ${b.status}`);
      for (const s of [servers.trusted, servers.untrusted]) {
        assert.equal((await sendRaw(s.port, rawRequest({ target: '/health' }))).status, 200, `${s.name} stopped serving after ${c.name}`);
      }
      // `target` becomes the access record's url.path, unless the case says otherwise
      results.push({ ...c, target: c.recordPath ? c.recordPath(target) : target, status: b.status });
    }
    return results;
  }

  /** Waits until each preloaded server wrote an access record for every answered (or aborted) case. */
  async function settle(results) {
    const want = results.filter((r) => r.status !== null && r.status < 400 || r.abortAfterMs).map((r) => r.target);
    const deadline = Date.now() + 10_000;
    for (const name of ['trusted', 'untrusted']) {
      for (;;) {
        const paths = new Set(recordsOf(name).filter((r) => r['event.name'] === 'http_request').map((r) => r['url.path']));
        if (want.every((p) => paths.has(p))) break;
        if (Date.now() > deadline) throw new Error(`${name}: no access record for ${want.filter((p) => !paths.has(p)).join(' ')}`);
        await new Promise((r) => setTimeout(r, 25));
      }
    }
    await new Promise((r) => setTimeout(r, 150));
  }

  /** The invariants every case must leave behind. */
  function assertInvariants(results) {
    for (const name of ['trusted', 'untrusted']) {
      const raw = fs.readFileSync(fileOf(name), 'utf8');
      assert.ok(raw.endsWith('\n'), `${name}: the file does not end with a newline`);
      for (const line of lines(name)) {
        assert.doesNotMatch(line, RAW_CONTROL, `${name}: a raw control character in ${JSON.stringify(line).slice(0, 300)}`);
        let record;
        assert.doesNotThrow(() => { record = JSON.parse(line); }, `${name}: not JSON: ${line.slice(0, 300)}`);
        assert.ok(validate(record), `${name}: ${JSON.stringify(validate.errors)}\n${line.slice(0, 500)}`);
        for (const f of EDGE_FIELDS) {
          if (typeof record[f] === 'string') assert.doesNotMatch(record[f], VALUE_CONTROL, `${name}: ${f} = ${JSON.stringify(record[f])}`);
        }
        if (name === 'untrusted' && record['request.id'] !== undefined) assert.match(record['request.id'], HEX32, 'an untrusted peer chose its id');
      }
      // exactly one access record per request that reached the app
      for (const r of results.filter((x) => x.status !== null && x.status < 400)) {
        const { access, all } = recordsFor(name, r.target);
        assert.equal(access.length, 1, `${name} ${r.name}: ${access.length} access records`);
        assert.equal(access[0]['http.response.status_code'], r.status);
        assert.deepEqual(all.map((x) => x['event.name']).sort(), ['hostile_seen', 'http_request'], `${name} ${r.name}`);
        assert.equal(new Set(all.map((x) => x['client.address'])).size, 1, `${name} ${r.name}: the handler saw another client`);
        assert.equal(new Set(all.map((x) => x['request.id'])).size, 1, `${name} ${r.name}: the handler saw another request id`);
        assert.match(access[0].trace_id, HEX32);
        assert.notEqual(access[0].trace_id, '0'.repeat(32));
      }
      const stderr = servers[name].app.stderr;
      assert.doesNotMatch(stderr, STACK_LINE, `${name}: a stack trace on stderr:\n${stderr}`);
      assert.doesNotMatch(stderr, /could not be written|uncaught|unhandled/i, `${name}:\n${stderr}`);
    }
    // the untrusted server never believed a header: its client is always the socket peer
    for (const r of recordsOf('untrusted')) assert.equal(r['client.address'], '127.0.0.1', JSON.stringify(r));
  }

  const clientOf = (name, target) => recordsFor(name, target).access[0]['client.address'];

  it('X-Forwarded-For: 10,000 entries, the largest that fits, garbage, IPv6 zones, IPv4-mapped', async () => {
    const cases = [
      { name: '10,000 addresses (~150 KB): 431', expect: 431, headers: [['X-Forwarded-For', Array.from({ length: 10_000 }, (_, i) => `203.0.${(i >> 8) & 255}.${i & 255}`).join(', ')]] },
      { name: 'just over the 16 KB header limit: 431', expect: 431, headers: [['X-Forwarded-For', `${'::1,'.repeat(4100)}::1`]] },
      { name: '4,000 trusted ::1 (16 KB, fits)', expect: 200, headers: [['X-Forwarded-For', Array(4000).fill('::1').join(',')]], client: '::1' },
      { name: '10,000 empty entries and one address', expect: 200, headers: [['X-Forwarded-For', `${','.repeat(10_000)}198.51.100.7`]], client: '198.51.100.7' },
      { name: '5,000 garbage entries', expect: 200, headers: [['X-Forwarded-For', Array(5000).fill('a').join(',')]], client: '127.0.0.1' },
      { name: 'garbage after an address', expect: 200, headers: [['X-Forwarded-For', '198.51.100.7, unknown, _hidden, 1.2.3, 300.1.1.1, , "", "\\"", \t']], client: '127.0.0.1' },
      { name: 'UTF-8 bytes and obs-text', expect: 200, headers: [['X-Forwarded-For', Buffer.from('198.51.100.7, ü€🎉, \u00ff\u0085', 'utf8')]], client: '127.0.0.1' },
      { name: 'IPv6 with a zone', expect: 200, headers: [['X-Forwarded-For', '198.51.100.7, fe80::1%eth0']], client: 'fe80::1' },
      { name: 'bracketed IPv6 with zone and port', expect: 200, headers: [['X-Forwarded-For', '[fe80::1%25eth0]:8080']], client: 'fe80::1' },
      { name: 'bracketed IPv6 with port', expect: 200, headers: [['X-Forwarded-For', '[2001:DB8::1]:443']], client: '2001:db8::1' },
      { name: 'IPv4 with port', expect: 200, headers: [['X-Forwarded-For', '198.51.100.7:5555']], client: '198.51.100.7' },
      { name: 'IPv4-mapped client', expect: 200, headers: [['X-Forwarded-For', '::ffff:203.0.113.9']], client: '203.0.113.9' },
      { name: 'IPv4-mapped trusted hop', expect: 200, headers: [['X-Forwarded-For', '203.0.113.9, ::ffff:127.0.0.1']], client: '203.0.113.9' },
      { name: 'two X-Forwarded-For lines', expect: 200, headers: [['X-Forwarded-For', '203.0.113.1'], ['X-Forwarded-For', '127.0.0.2, 198.51.100.8']], client: '198.51.100.8' },
    ];
    const results = await run(cases);
    await settle(results);
    assertInvariants(results);
    for (const r of results.filter((x) => x.client)) assert.equal(clientOf('trusted', r.target), r.client, r.name);
    // the server listens dual-stack: the socket peer is ::ffff:127.0.0.1, recorded (and trusted) as 127.0.0.1
    for (const name of ['trusted', 'untrusted']) {
      for (const r of recordsOf(name).filter((x) => x['event.name'] === 'http_request')) assert.equal(r['network.peer.address'], '127.0.0.1');
    }
    const untrusted = fs.readFileSync(fileOf('untrusted'), 'utf8');
    for (const leaked of ['198.51.100.7', '203.0.113.9', 'fe80::1', '2001:db8::1']) assert.ok(!untrusted.includes(leaked), leaked);
  });

  it('Forwarded: malformed, obfuscated, oversized', async () => {
    const cases = [
      { name: 'unterminated quote and bracket', headers: [['Forwarded', 'for="[2001:db8::1']] },
      { name: 'empty for=', headers: [['Forwarded', 'for=']] },
      { name: 'for=unknown', headers: [['Forwarded', 'for=unknown;proto=https']] },
      { name: 'obfuscated', headers: [['Forwarded', 'for=_abc;by=_x;proto=https']] },
      { name: 'duplicate for= in one element', headers: [['Forwarded', 'for=1.2.3.4;for=5.6.7.8']] },
      { name: 'separators only', headers: [['Forwarded', ';;;,,,===,;=;']] },
      { name: 'escaped quotes', headers: [['Forwarded', 'for="\\"198.51.100.9\\"", for="[::1]:80"']] },
      { name: 'quotes only', headers: [['Forwarded', '"'.repeat(8000)]] },
      { name: 'quoted IPv6 client with port, by= and proto=', headers: [['Forwarded', 'for="[2001:db8:cafe::17]:4711";by=127.0.0.1;proto=https']], client: '2001:db8:cafe::17' },
      { name: '2,000 elements', headers: [['Forwarded', Array(2000).fill('for=::1').join(',')]], client: '::1' },
      { name: 'UTF-8 and obs-text', headers: [['Forwarded', Buffer.from('for="ü€🎉", for=\u00ff', 'utf8')]] },
      { name: 'over the header limit', expect: 431, headers: [['Forwarded', Array(5000).fill('for=198.51.100.1;proto=https').join(', ')]] },
    ].map((c) => ({ expect: 200, ...c }));
    const results = await run(cases);
    await settle(results);
    assertInvariants(results);
    for (const r of results.filter((x) => x.status === 200)) {
      const client = clientOf('trusted', r.target);
      const sent = r.headers.map(([, v]) => (Buffer.isBuffer(v) ? v.toString('latin1') : v)).join(' ').toLowerCase();
      if (r.client) assert.equal(client, r.client, r.name);
      else assert.ok(client === '127.0.0.1' || sent.includes(client), `${r.name}: client ${client}`);
    }
  });

  it('request ids: 100 KB, CR/LF, NUL, other controls, UTF-8, JSON fragments, duplicates', async () => {
    const cases = [
      { name: '100 KB', expect: 431, headers: [['X-Request-Id', 'a'.repeat(100 * 1024)]] },
      { name: 'bare CR', expect: 400, headers: [['X-Request-Id', 'abc\rdef-12345678']] },
      { name: 'bare LF', expect: 400, headers: [['X-Request-Id', 'abc\ndef-12345678']] },
      { name: 'CRLF and a forged header', expect: 400, headers: [['X-Request-Id', 'abc\r\nX-Injected: 1\r\ndef']] },
      { name: 'obs-fold', expect: 400, headers: [['X-Request-Id', 'abc-12345678\r\n continued']] },
      { name: 'NUL', expect: 400, headers: [['X-Request-Id', 'abc\u0000def-12345678']] },
      { name: 'ESC sequence', expect: 400, headers: [['X-Request-Id', 'abc\u001b[2Jdef']] },
      { name: 'DEL', expect: 400, headers: [['X-Request-Id', 'abc\u007fdef-12345678']] },
      { name: 'TAB (legal in a header value)', expect: 200, headers: [['X-Request-Id', 'abc\tdef-12345678']] },
      { name: 'UTF-8 bytes incl. U+0085 and U+2028', expect: 200, headers: [['X-Request-Id', Buffer.from('ünïcødé-€-🎉-\u0085\u2028-id', 'utf8')]] },
      { name: 'JSON fragment', expect: 200, headers: [['X-Request-Id', '"},{"evil":1']] },
      { name: 'JSON fragment with backslashes', expect: 200, headers: [['X-Request-Id', '\\"},{\\"evil\\":1,\\u0000']] },
      { name: '15 KB (fits)', expect: 200, headers: [['X-Request-Id', 'b'.repeat(15 * 1024)]] },
      { name: 'two X-Request-Id lines', expect: 200, headers: [['X-Request-Id', 'aaaaaaaa-1'], ['X-Request-Id', 'bbbbbbbb-2']] },
      { name: 'well-formed', expect: 200, headers: [['X-Request-Id', 'proxy-request-id-0042']], kept: 'proxy-request-id-0042' },
    ];
    const results = await run(cases);
    await settle(results);
    assertInvariants(results);
    for (const r of results.filter((x) => x.status === 200)) {
      const t = recordsFor('trusted', r.target).access[0];
      const u = recordsFor('untrusted', r.target).access[0];
      assert.match(u['request.id'], HEX32, `untrusted ${r.name}`);
      assert.equal(typeof u['request.id.untrusted'], 'string', `untrusted ${r.name}: the forensic copy`);
      assert.equal(u['request.id.replaced'], undefined);
      if (r.kept) {
        assert.equal(t['request.id'], r.kept);
        assert.equal(t['request.id.replaced'], undefined);
      } else {
        assert.match(t['request.id'], HEX32, `trusted ${r.name}`);
        assert.ok(['malformed', 'multiple'].includes(t['request.id.replaced']), `trusted ${r.name}: ${t['request.id.replaced']}`);
      }
      for (const a of [t, u]) {
        const copy = a['request.id.untrusted'];
        if (copy === undefined) continue;
        assert.doesNotMatch(copy, /[\u0000-\u001f\u007f-\u009f\u2028\u2029"]/, `${r.name}: ${JSON.stringify(copy)}`);
        assert.ok(copy.replace(/\\u[0-9a-f]{4}/g, '_').length <= 129, `${r.name}: forensic copy of ${copy.length} characters`);
      }
    }
  });

  it('trace context: malformed and oversized traceparent, garbage tracestate and baggage', async () => {
    const cases = [
      { name: 'not hex', headers: [['traceparent', `00-${'z'.repeat(32)}-${'z'.repeat(16)}-01`]] },
      { name: '10 KB', headers: [['traceparent', `00-${'a'.repeat(10 * 1024)}`]] },
      { name: 'version ff', headers: [['traceparent', `ff-${VALID_TRACE.replace(/c$/, '1')}-${VALID_SPAN}-01`]], notContinued: VALID_TRACE.replace(/c$/, '1') },
      { name: 'all-zero trace id', headers: [['traceparent', `00-${'0'.repeat(32)}-${VALID_SPAN}-01`]] },
      { name: 'all-zero span id', headers: [['traceparent', `00-${VALID_TRACE.replace(/c$/, '2')}-${'0'.repeat(16)}-01`]], notContinued: VALID_TRACE.replace(/c$/, '2') },
      { name: 'upper-case hex', headers: [['traceparent', `00-${VALID_TRACE.replace(/c$/, '3').toUpperCase()}-${VALID_SPAN}-01`]], notContinued: VALID_TRACE.replace(/c$/, '3') },
      { name: 'version 00 with trailing data', headers: [['traceparent', `${validTraceparent(VALID_TRACE.replace(/c$/, '4'))}-extra`]], notContinued: VALID_TRACE.replace(/c$/, '4') },
      { name: 'two traceparent lines', headers: [['traceparent', validTraceparent(VALID_TRACE.replace(/c$/, '5'))], ['traceparent', validTraceparent()]], notContinued: VALID_TRACE.replace(/c$/, '5') },
      { name: 'JSON fragment', headers: [['traceparent', '"},{"evil":1']] },
      { name: 'UTF-8 bytes', headers: [['traceparent', Buffer.from(`00-${VALID_TRACE}-${VALID_SPAN}-0🎉`, 'utf8')]] },
      { name: 'valid traceparent, garbage tracestate', headers: [['traceparent', validTraceparent(VALID_TRACE.replace(/c$/, '6'))], ['tracestate', `,,,=,a=,=b,k@@=v,${'x=y,'.repeat(1000)}\u00ff`]], valid: VALID_TRACE.replace(/c$/, '6') },
      { name: 'valid traceparent, garbage baggage', headers: [['traceparent', validTraceparent(VALID_TRACE.replace(/c$/, '7'))], ['baggage', `%E0%A4%A=1,a=%ZZ,;;;,=,k=v;prop=%%,${'k=v,'.repeat(2000)}`]], valid: VALID_TRACE.replace(/c$/, '7') },
      { name: 'baggage of 14 KB of one value', headers: [['baggage', `k=${'v'.repeat(14 * 1024)}`]] },
      { name: 'traceparent over the header limit', expect: 431, headers: [['traceparent', `00-${'a'.repeat(20 * 1024)}`]] },
    ].map((c) => ({ expect: 200, ...c }));
    const results = await run(cases);
    await settle(results);
    assertInvariants(results);
    for (const r of results.filter((x) => x.status === 200)) {
      const t = recordsFor('trusted', r.target).access[0];
      const u = recordsFor('untrusted', r.target).access[0];
      if (r.notContinued) assert.notEqual(t.trace_id, r.notContinued, `trusted ${r.name}: an invalid traceparent was continued`);
      if (r.valid) {
        assert.equal(t.trace_id, r.valid, `trusted ${r.name}: a valid traceparent from a trusted peer is continued`);
        assert.equal(u['trace.untrusted_parent'], r.valid, `untrusted ${r.name}: kept as a link only`);
      }
      assert.notEqual(u.trace_id, VALID_TRACE);
      for (const v of [r.notContinued, r.valid].filter(Boolean)) assert.notEqual(u.trace_id, v, `untrusted ${r.name}: continued`);
      if (u['trace.untrusted_parent'] !== undefined) assert.match(u['trace.untrusted_parent'], HEX32);
    }
  });

  it('request line and Host: odd targets, odd Hosts, framing', async () => {
    const line = (target, rest = 'Host: localhost\r\nConnection: close\r\n') => `GET ${target} HTTP/1.1\r\n${rest}\r\n`;
    const cases = [
      { name: 'Host with an unclosed bracket', raw: (t) => line(t, 'Host: [::1\r\nConnection: close\r\n') },
      { name: 'Host of colons', raw: (t) => line(t, 'Host: a:b:c:d\r\nConnection: close\r\n') },
      { name: 'Host with bad percent-encoding', raw: (t) => line(t, 'Host: %zz%\r\nConnection: close\r\n') },
      { name: 'empty Host', raw: (t) => line(t, 'Host: \r\nConnection: close\r\n') },
      { name: 'two Host lines', raw: (t) => line(t, 'Host: a\r\nHost: b\r\nConnection: close\r\n') },
      { name: 'HTTP/1.1 without Host', expect: 400, raw: (t) => line(t, 'Connection: close\r\n') },
      { name: 'HTTP/1.0 without Host', raw: (t) => `GET ${t} HTTP/1.0\r\n\r\n` },
      // The absolute form (what a client sends a proxy) is recorded by its path: never the
      // credentials or host a client wrote into it.
      { name: 'absolute-form target with a query', raw: (t) => line(`http://evil.example${t}?token=q-secret`) },
      { name: 'absolute-form target with credentials', raw: (t) => line(`http://alice:q-secret@evil.example${t}`) },
      { name: 'broken absolute-form target', raw: (t) => line(`http://[::1${t}?token=q-secret`) },
      { name: 'target with a fragment', raw: (t) => line(`${t}#access_token=q-secret`) },
      { name: 'target starting with //', raw: (t) => line(`/${t}?token=q-secret`), recordPath: (t) => `/${t}` },
      { name: 'query without a path', expect: 400, raw: () => line('?token=q-secret') },
      { name: 'percent-encoded CR, LF, NUL, RLO', raw: (t) => line(`${t}/a%0d%0ab%00%E2%80%AE?token=q-secret`), recordPath: (t) => `${t}/a%0d%0ab%00%E2%80%AE` },
      { name: 'a 12 KB path (recorded cut at 2048)', raw: (t) => line(`${t}/${'p'.repeat(12_000)}?token=q-secret`), recordPath: (t) => `${t}/${'p'.repeat(12_000)}`.slice(0, 2048) },
      { name: 'a 100 KB path', expect: 431, raw: (t) => line(`${t}/${'p'.repeat(100_000)}`) },
      { name: 'chunked POST', raw: (t) => `POST ${t} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n` },
      { name: 'chunked and Content-Length (smuggling shape)', expect: 400, raw: (t) => `POST ${t} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n` },
      { name: 'Expect: 100-continue', expect: 100, raw: (t) => `POST ${t} HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi`, answered: 200 },
      { name: 'unknown Expect', expect: 417, raw: (t) => `POST ${t}?token=q-secret HTTP/1.1\r\nHost: x\r\nExpect: evil\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi` },
      { name: 'OPTIONS *', raw: () => 'OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n', recordPath: () => '*' },
    ].map((c) => ({ expect: 200, ...c }));
    const results = (await run(cases)).map((r) => (r.answered ? { ...r, status: r.answered } : r));
    await settle(results);
    assertInvariants(results);
    for (const name of ['trusted', 'untrusted']) {
      const text = fs.readFileSync(fileOf(name), 'utf8');
      assert.ok(!text.includes('q-secret'), `${name}: a query value in the audit file`);
      for (const r of recordsOf(name)) if (typeof r['url.path'] === 'string') assert.ok(r['url.path'].length <= 2048);
    }
    // Node answers an Expect it does not know with a 417 of its own, never asking the app: still
    // one access record, with the client and a fresh request id, and no span (nothing ran).
    const unknownExpect = results.find((r) => r.name === 'unknown Expect');
    assert.equal(unknownExpect.status, 417);
    for (const name of ['trusted', 'untrusted']) {
      const access = recordsOf(name).filter((r) => r['event.name'] === 'http_request' && r['url.path'] === unknownExpect.target);
      assert.equal(access.length, 1, `${name}: ${JSON.stringify(access)}`);
      assert.equal(access[0]['http.response.status_code'], 417);
      assert.equal(access[0]['http.request.method'], 'POST');
      assert.equal(access[0]['event.outcome'], 'failure');
      assert.equal(access[0]['client.address'], '127.0.0.1');
      assert.match(access[0]['request.id'], HEX32);
      assert.equal(access[0].span_id, undefined);
    }
    const answered = results.filter((r) => r.status === 200).length;
    await rx.waitFor(() => rx.spans().filter((sp) => sp.kind === 2).length >= 2 * answered, { timeoutMs: 15_000 });
    assert.ok(!JSON.stringify(rx.spans()).includes('q-secret'), 'a query value on a span');
  });

  it('a client that hangs up mid-body leaves one client_aborted access record, like the bare server leaves no answer', async () => {
    const results = await run([
      { name: 'POST announcing 100 bytes, sending 5', method: 'POST', body: '{"a":', contentLength: 100, abortAfterMs: 300, expect: null },
    ]);
    await settle(results);
    assertInvariants(results);
    for (const name of ['trusted', 'untrusted']) {
      const { access } = recordsFor(name, results[0].target);
      assert.equal(access.length, 1, name);
      assert.equal(access[0]['error.type'], 'client_aborted');
      assert.equal(access[0]['event.outcome'], 'failure');
      assert.equal(access[0]['http.response.status_code'], undefined);
      assert.ok(validate(access[0]), JSON.stringify(validate.errors));
    }
  });

  it('bytes Node cannot parse as a request: answered like the bare server, one http_client_error record each', async () => {
    const results = await run([
      { name: 'a method of garbage', expect: 400, raw: () => 'G\u0001T / HTTP/1.1\r\nHost: x\r\n\r\n', type: /^HPE_/ },
      { name: 'a header without a colon', expect: 400, raw: (t) => `GET ${t} HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n`, type: /^HPE_/ },
      { name: 'headers over the limit', expect: 431, raw: (t) => `GET ${t} HTTP/1.1\r\nHost: x\r\nX-Big: ${'b'.repeat(20_000)}\r\n\r\n`, type: /^HPE_HEADER_OVERFLOW$/ },
      { name: 'not HTTP at all', expect: 400, raw: () => '\u0016\u0003\u0001\u0002\u0000\u0001\u0000\u0001\u00fc\u0003\u0003', type: /^HPE_/ },
    ]);
    const deadline = Date.now() + 10_000;
    const errorsOf = (name) => recordsOf(name).filter((r) => r['event.name'] === 'http_client_error');
    while (['trusted', 'untrusted'].some((n) => errorsOf(n).length < results.length) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 25));
    for (const name of ['trusted', 'untrusted']) {
      const errs = errorsOf(name);
      assert.equal(errs.length, results.length, `${name}: ${JSON.stringify(errs)}`);
      results.forEach((c, i) => {
        const r = errs[i];
        assert.match(r['error.type'], c.type, `${name} ${c.name}`);
        assert.equal(r['http.response.status_code'], c.status, `${name} ${c.name}`);
        assert.equal(r['event.outcome'], 'failure');
        assert.match(r['network.peer.address'], /^(127\.0\.0\.1|::1)$/);
        // behind a trusted proxy the client is unknown; an untrusted peer is its own client
        assert.equal(r['client.address'], name === 'trusted' ? undefined : r['network.peer.address'], `${name} ${c.name}`);
        assert.equal(r['request.id'], undefined);
        assert.ok(validate(r), JSON.stringify(validate.errors));
      });
      // (run() checks after each case that the server still serves /health)
      const access = recordsOf(name).filter((r) => r['event.name'] === 'http_request' && r['url.path'] !== '/health');
      assert.deepEqual(access, [], `${name}: an access record for a request that never was`);
    }
  });

  it('property: random printable header values answer like the bare server, with valid records', async () => {
    const printable = fc.integer({ min: 0x20, max: 0x7e }).map((c) => String.fromCharCode(c));
    const value = fc.oneof(
      fc.string({ unit: printable, maxLength: 120 }),
      fc.string({ unit: fc.constantFrom(...'0123456789abcdef:.,;=[]"_ -'), maxLength: 120 }),
      fc.tuple(fc.string({ unit: printable, minLength: 1, maxLength: 8 }), fc.integer({ min: 10, max: 250 })).map(([s, n]) => s.repeat(n)),
      fc.constantFrom(validTraceparent(), 'for=198.51.100.7;proto=https', '198.51.100.7, ::1', 'proxy-request-id-0042'),
    );
    const headersArb = fc.record({
      'x-request-id': value, 'x-forwarded-for': value, forwarded: value, traceparent: value,
    }, { requiredKeys: [] });
    const sent = new Map();
    let runs = 0;
    const started = Date.now();
    await fc.assert(fc.asyncProperty(headersArb, async (headers) => {
      const target = `/prop/${++runs}`;
      sent.set(target, headers);
      const [t, u, b] = await Promise.all([servers.trusted, servers.untrusted, servers.bare].map((s) => sendHttp(s.port, target, headers)));
      assert.ok(b.status !== null, `bare: ${b.error}`);
      assert.equal(t.status, b.status, `trusted: ${JSON.stringify(headers).slice(0, 300)}`);
      assert.equal(u.status, b.status, `untrusted: ${JSON.stringify(headers).slice(0, 300)}`);
    }), { numRuns: 100, interruptAfterTimeLimit: 40_000, markInterruptAsFailure: false });
    assert.ok(Date.now() - started < 60_000);
    assert.ok(runs >= 50, `only ${runs} runs before the time limit`);
    const results = [...sent.keys()].map((target) => ({ name: target, target, status: 200 }));
    await settle(results);
    assertInvariants(results);
    for (const [target, headers] of sent) {
      const t = recordsFor('trusted', target).access[0];
      const u = recordsFor('untrusted', target).access[0];
      const written = `${headers['x-forwarded-for'] ?? ''} ${headers.forwarded ?? ''}`.toLowerCase();
      assert.ok(t['client.address'] === '127.0.0.1' || written.includes(t['client.address']), `${target}: ${t['client.address']} from ${JSON.stringify(headers)}`);
      assert.equal(u['client.address'], '127.0.0.1');
      const id = (headers['x-request-id'] ?? '').trim();
      if (/^[A-Za-z0-9._:@/+=-]{8,128}$/.test(id)) assert.equal(t['request.id'], id, target);
      else assert.match(t['request.id'], HEX32, target);
      assert.match(u['request.id'], HEX32);
    }
  });
});
