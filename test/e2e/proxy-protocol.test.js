'use strict';
const assert = require('node:assert/strict');
const { execFileSync } = require('node:child_process');
const { EventEmitter } = require('node:events');
const fs = require('node:fs');
const http = require('node:http');
const https = require('node:https');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const tls = require('node:tls');
const { enableProxyProtocol, proxySourceOf } = require('../../dist/lib/proxy-protocol.js');

const SIG = Buffer.from('\r\n\r\n\0\r\nQUIT\n', 'latin1');
const V1 = Buffer.from('PROXY TCP4 203.0.113.7 10.0.0.1 51000 80\r\n');
const GET = 'GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n';
const GET_KEEP_ALIVE = 'GET /first HTTP/1.1\r\nHost: x\r\n\r\n';
const SOURCE = { address: '203.0.113.7', port: 51000 };
const isLoopback = (a) => a === '127.0.0.1' || a === '::1' || a === '::ffff:127.0.0.1';
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function v2(fam, addresses, length = addresses.length) {
  const head = Buffer.from([0x21, fam, 0, 0]);
  head.writeUInt16BE(length, 2);
  return Buffer.concat([SIG, head, addresses]);
}
const V2_TCP4 = v2(0x11, Buffer.from([203, 0, 113, 7, 10, 0, 0, 1, 0xc7, 0x38, 0, 80]));
const V2_TCP6 = v2(0x21, Buffer.concat([
  Buffer.from('20010db8000000000000000000000007', 'hex'), Buffer.from('20010db8000000000000000000000001', 'hex'),
  Buffer.from([0xc7, 0x38, 0x01, 0xbb]),
]));

/** Answers with what the app can know about its client. */
function handler(req, res) {
  res.setHeader('content-type', 'application/json');
  res.end(JSON.stringify({ path: req.url, source: proxySourceOf(req.socket) ?? null, remote: req.socket.remoteAddress }));
}

async function listen(server) {
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return server.address().port;
}

/**
 * Writes `chunks` on a fresh TCP connection (each its own write, `gapMs` apart) and collects
 * everything until the server closes: { raw, closed, error }.
 */
function exchange(port, chunks, { gapMs = 0, end = false } = {}) {
  return new Promise((resolve) => {
    const socket = net.connect({ port, host: '127.0.0.1', noDelay: true });
    const got = [];
    let error = null;
    socket.on('data', (d) => got.push(d));
    socket.on('error', (e) => { error = e; });
    socket.on('close', () => resolve({ raw: Buffer.concat(got).toString('latin1'), error }));
    socket.once('connect', async () => {
      for (const c of chunks) {
        if (socket.destroyed) break;
        socket.write(c);
        if (gapMs) await sleep(gapMs);
      }
      if (end && !socket.destroyed) socket.end();
    });
  });
}

/** Splits pipelined HTTP/1.1 responses (all with Content-Length) into { status, headers, body }. */
function responses(raw) {
  const out = [];
  let rest = raw;
  while (rest.length > 0) {
    const split = rest.indexOf('\r\n\r\n');
    assert.ok(split > 0, `not an HTTP response: ${JSON.stringify(rest)}`);
    const [statusLine, ...headerLines] = rest.slice(0, split).split('\r\n');
    const length = Number(/^content-length: *(\d+)$/im.exec(headerLines.join('\n'))?.[1] ?? 0);
    const body = rest.slice(split + 4, split + 4 + length);
    out.push({ status: statusLine, headers: headerLines, body: body && body.startsWith('{') ? JSON.parse(body) : body });
    rest = rest.slice(split + 4 + length);
  }
  return out;
}

const bytes = (b) => [...Buffer.from(b)].map((x) => Buffer.from([x]));

describe('proxy-protocol: real servers behind a PROXY header', function () {
  let server; let port; let undo; let rejected; let trustCalls;

  before(async () => {
    server = http.createServer(handler);
    port = await listen(server);
    rejected = [];
    trustCalls = [];
    undo = enableProxyProtocol({
      trust: (a) => { trustCalls.push(a); return isLoopback(a); },
      headerTimeoutMs: 2000,
      onRejected: (peer, reason) => rejected.push({ peer, reason }),
    });
  });
  after(async () => {
    undo?.();
    server?.closeAllConnections();
    await new Promise((r) => server.close(r));
  });
  beforeEach(() => { rejected.length = 0; });

  async function assertServesPlainlyFromSource(chunks, options, source = SOURCE) {
    const [res] = responses((await exchange(port, chunks, options)).raw);
    assert.equal(res.status, 'HTTP/1.1 200 OK');
    assert.deepEqual(res.body, { path: '/', source, remote: '127.0.0.1' });
  }

  it('v1: the header and the request in one write', async () => {
    await assertServesPlainlyFromSource([Buffer.concat([V1, Buffer.from(GET)])]);
    assert.ok(trustCalls.includes('127.0.0.1'), 'trust sees socket.remoteAddress as-is');
  });

  it('v1: the header byte by byte, then the request in pieces', async () => {
    await assertServesPlainlyFromSource([...bytes(V1), GET.slice(0, 5), GET.slice(5, 20), GET.slice(20)], { gapMs: 2 });
    await assertServesPlainlyFromSource([V1.subarray(0, 20), Buffer.concat([V1.subarray(20), Buffer.from(GET.slice(0, 3))]), GET.slice(3)], { gapMs: 5 });
  });

  it('v2: TCP4 and TCP6, in one write and byte by byte', async () => {
    const six = { address: '2001:db8::7', port: 51000 };
    await assertServesPlainlyFromSource([Buffer.concat([V2_TCP4, Buffer.from(GET)])]);
    await assertServesPlainlyFromSource([...bytes(V2_TCP4), GET], { gapMs: 2 });
    await assertServesPlainlyFromSource([Buffer.concat([V2_TCP6, Buffer.from(GET)])], {}, six);
    await assertServesPlainlyFromSource([...bytes(V2_TCP6), GET], { gapMs: 1 }, six);
  });

  it('v2 LOCAL (a balancer health check): served, with no source', async () => {
    const local = Buffer.concat([SIG, Buffer.from([0x20, 0x00, 0, 0])]);
    await assertServesPlainlyFromSource([Buffer.concat([local, Buffer.from(GET)])], {}, null);
  });

  it('keep-alive: two requests after one header both see the source', async () => {
    const socket = net.connect({ port, host: '127.0.0.1' });
    let raw = '';
    socket.setEncoding('latin1');
    socket.on('data', (d) => { raw += d; });
    const closed = new Promise((r) => socket.on('close', r));
    await new Promise((r) => socket.once('connect', r));
    socket.write(Buffer.concat([V1, Buffer.from(GET_KEEP_ALIVE)]));
    while (!raw.includes('"path":"/first"')) await sleep(5);
    socket.write(GET);
    await closed;
    const [first, second] = responses(raw);
    assert.deepEqual(first.body, { path: '/first', source: SOURCE, remote: '127.0.0.1' });
    assert.deepEqual(second.body, { path: '/', source: SOURCE, remote: '127.0.0.1' });
  });

  it('a truncated header then the socket ends: closed quietly, the server keeps serving', async () => {
    for (const partial of [V1.subarray(0, 17), V2_TCP4.subarray(0, 20), SIG.subarray(0, 5)]) {
      const { raw } = await exchange(port, [partial], { end: true });
      assert.equal(raw, '');
    }
    // and a reset (RST) half way through the header: no unhandled 'error' on the server side
    const resetter = net.connect({ port, host: '127.0.0.1' });
    resetter.on('error', () => {});
    await new Promise((r) => resetter.once('connect', r));
    resetter.write(V1.subarray(0, 12));
    await sleep(20);
    resetter.resetAndDestroy();
    await sleep(50);
    // the peer left, nothing was refused (TCP health checks connect and close all day)
    assert.deepEqual(rejected, []);
    await assertServesPlainlyFromSource([Buffer.concat([V1, Buffer.from(GET)])]);
  });

  it('a lying v2 length: destroyed, reported, and the server keeps serving', async () => {
    const lying = v2(0x11, V2_TCP4.subarray(16), 12 + 40);
    const { raw } = await exchange(port, [Buffer.concat([lying, Buffer.from(GET)])]);
    assert.equal(raw, '', 'nothing reached the HTTP parser');
    assert.deepEqual(rejected, [{ peer: '127.0.0.1', reason: 'v2 malformed TLVs' }]);

    // a length no sane balancer sends: refused from the 16 fixed bytes, long before any timeout
    const started = Date.now();
    await exchange(port, [v2(0x11, V2_TCP4.subarray(16), 0xffff)]);
    assert.ok(Date.now() - started < 1000);
    assert.deepEqual(rejected[1], { peer: '127.0.0.1', reason: 'v2 header too long' });
    await assertServesPlainlyFromSource([Buffer.concat([V2_TCP4, Buffer.from(GET)])]);
  });

  it('a trusted peer that sends no header at all is refused, not served as if it were the client', async () => {
    const { raw } = await exchange(port, [GET]);
    assert.equal(raw, '');
    assert.deepEqual(rejected, [{ peer: '127.0.0.1', reason: 'no PROXY signature' }]);
  });

  it('a v1 line that is not a valid header is refused', async () => {
    for (const line of ['PROXY TCP4 999.1.1.1 10.0.0.1 51000 80\r\n', 'PROXY TCP4 203.0.113.7 10.0.0.1 70000 80\r\n']) {
      assert.equal((await exchange(port, [line + GET])).raw, '');
    }
    assert.deepEqual(rejected.map((r) => r.reason), ['v1 bad address', 'v1 bad port']);
  });
});

describe('proxy-protocol: header timeout', function () {
  let server; let port; let undo; const rejected = [];

  before(async () => {
    server = http.createServer(handler);
    port = await listen(server);
    undo = enableProxyProtocol({ trust: isLoopback, headerTimeoutMs: 300, onRejected: (peer, reason) => rejected.push({ peer, reason }) });
  });
  after(async () => {
    undo?.();
    await new Promise((r) => server.close(r));
  });

  it('a trusted peer that sends nothing within headerTimeoutMs is disconnected and reported', async () => {
    const started = Date.now();
    const { raw } = await exchange(port, []);
    const elapsed = Date.now() - started;
    assert.equal(raw, '');
    assert.ok(elapsed >= 250 && elapsed < 3000, `${elapsed} ms`);
    assert.deepEqual(rejected, [{ peer: '127.0.0.1', reason: 'header timeout' }]);
  });

  it('so does one that stalls half way through the header', async () => {
    rejected.length = 0;
    const { raw } = await exchange(port, [V1.subarray(0, 10)]);
    assert.equal(raw, '');
    assert.deepEqual(rejected, [{ peer: '127.0.0.1', reason: 'header timeout' }]);
  });
});

describe('proxy-protocol: untrusted peers', function () {
  let server; let port; let undo; const rejected = [];
  const withHeader = [Buffer.concat([V1, Buffer.from(GET)])];
  const withV2Header = [Buffer.concat([V2_TCP4, Buffer.from(GET)])];

  before(async () => {
    server = http.createServer(handler);
    port = await listen(server);
  });
  after(async () => {
    undo?.();
    await new Promise((r) => server.close(r));
  });

  it('a PROXY header from an untrusted peer is never believed: Node answers exactly as without auditrace', async () => {
    // the same bytes to the same server, before the patch
    const baseline = (await exchange(port, withHeader)).raw;
    const baselineV2 = (await exchange(port, withV2Header)).raw;
    assert.match(baseline, /^HTTP\/1\.1 400 Bad Request\r\n/);

    undo = enableProxyProtocol({ trust: () => false, onRejected: (peer, reason) => rejected.push({ peer, reason }) });
    const { raw } = await exchange(port, withHeader);
    assert.equal(raw, baseline);
    assert.equal((await exchange(port, withV2Header)).raw, baselineV2);
    assert.deepEqual(rejected, [], 'untrusted peers are not "refused": they are not read at all');
  });

  it('a plain request from an untrusted peer works normally, with no source', async () => {
    const [res] = responses((await exchange(port, [GET])).raw);
    assert.equal(res.status, 'HTTP/1.1 200 OK');
    assert.deepEqual(res.body, { path: '/', source: null, remote: '127.0.0.1' });
  });

  it('a trust function that throws counts as untrusted', async () => {
    undo();
    undo = enableProxyProtocol({ trust: () => { throw new Error('boom'); } });
    const [res] = responses((await exchange(port, [GET])).raw);
    assert.deepEqual(res.body, { path: '/', source: null, remote: '127.0.0.1' });
  });
});

describe('proxy-protocol: https behind a v1 header', function () {
  let dir; let server; let port; let undo;

  before(async function () {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'auditrace-pp-'));
    try {
      execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', path.join(dir, 'k'),
        '-out', path.join(dir, 'c'), '-days', '1', '-subj', '/CN=localhost'], { stdio: 'ignore' });
    } catch {
      this.skip(); // no openssl binary here
    }
    server = https.createServer({ key: fs.readFileSync(path.join(dir, 'k')), cert: fs.readFileSync(path.join(dir, 'c')) }, handler);
    port = await listen(server);
    undo = enableProxyProtocol({ trust: isLoopback, headerTimeoutMs: 2000 });
  });
  after(async () => {
    undo?.();
    if (server) await new Promise((r) => server.close(r));
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  /** PROXY header in clear on the raw TCP socket, then TLS over that same socket. */
  async function tlsExchange(header, { sameSegment = false } = {}) {
    const raw = net.connect({ port, host: '127.0.0.1' });
    // sameSegment: written before the connection is up, the header and the ClientHello leave together
    if (!sameSegment) await new Promise((r) => raw.once('connect', r));
    raw.write(header);
    const secure = tls.connect({ socket: raw, rejectUnauthorized: false, servername: 'localhost' });
    await new Promise((resolve, reject) => { secure.once('secureConnect', resolve); secure.once('error', reject); });
    secure.write(GET);
    let text = '';
    secure.setEncoding('latin1');
    secure.on('data', (d) => { text += d; });
    await new Promise((r) => secure.on('close', r));
    return responses(text);
  }

  it('reports the source to a request on the TLS socket', async () => {
    const [res] = await tlsExchange(V1);
    assert.equal(res.status, 'HTTP/1.1 200 OK');
    assert.deepEqual(res.body, { path: '/', source: SOURCE, remote: '127.0.0.1' });
  });

  it('when the header and the ClientHello arrive together too', async () => {
    const [res] = await tlsExchange(V1, { sameSegment: true });
    assert.deepEqual(res.body.source, SOURCE);
  });

  it('and behind a v2 header', async () => {
    const [res] = await tlsExchange(V2_TCP6);
    assert.deepEqual(res.body.source, { address: '2001:db8::7', port: 51000 });
  });
});

describe('proxy-protocol: undo', function () {
  const protos = { net: net.Server.prototype, tls: tls.Server.prototype, http: http.Server.prototype, https: https.Server.prototype };
  const descriptors = () => Object.fromEntries(Object.entries(protos).map(([k, p]) => [k, Object.getOwnPropertyDescriptor(p, 'emit')]));
  // Other test files may have loaded OTel's http instrumentation into this process: put back whatever was there.
  const httpEmit = Object.getOwnPropertyDescriptor(http.Server.prototype, 'emit');
  const restoreHttpEmit = () => {
    if (httpEmit) Object.defineProperty(http.Server.prototype, 'emit', httpEmit);
    else delete http.Server.prototype.emit;
  };

  it('restores the original emit everywhere', async () => {
    const before = descriptors();
    const original = net.Server.prototype.emit;
    const undo = enableProxyProtocol({ trust: isLoopback });
    assert.notEqual(net.Server.prototype.emit, original);
    undo();
    assert.deepEqual(descriptors(), before);
    assert.equal(net.Server.prototype.emit, original);
    undo(); // a second call changes nothing
    assert.deepEqual(descriptors(), before);

    // and a header is once more just bytes to the HTTP parser
    const server = http.createServer(handler);
    const port = await listen(server);
    const { raw } = await exchange(port, [Buffer.concat([V1, Buffer.from(GET)])]);
    assert.match(raw, /^HTTP\/1\.1 400 Bad Request\r\n/);
    await new Promise((r) => server.close(r));
  });

  it('works under an instrumentation that wrapped http.Server.prototype.emit first, and undo puts that wrapper back', async () => {
    // what shimmer-based instrumentations (OTel's http) do: an own emit calling the one it found, here EventEmitter's
    const seen = [];
    function instrumented(event, ...args) {
      if (event === 'request') seen.push(args[0].url);
      return EventEmitter.prototype.emit.call(this, event, ...args);
    }
    http.Server.prototype.emit = instrumented;
    const undo = enableProxyProtocol({ trust: isLoopback });
    const server = http.createServer(handler);
    try {
      const port = await listen(server);
      const [res] = responses((await exchange(port, [Buffer.concat([V1, Buffer.from(GET)])])).raw);
      assert.deepEqual(res.body.source, SOURCE);
      assert.deepEqual(seen, ['/']);
    } finally {
      undo();
      await new Promise((r) => server.close(r));
      assert.equal(http.Server.prototype.emit, instrumented);
      restoreHttpEmit();
    }
  });

  it('a wrapper installed after the patch stays in place, and the patch inside it becomes a pass-through', async () => {
    const undo = enableProxyProtocol({ trust: isLoopback });
    const patched = http.Server.prototype.emit;
    function later(event, ...args) { return patched.call(this, event, ...args); }
    http.Server.prototype.emit = later;
    const server = http.createServer(handler);
    try {
      undo();
      assert.equal(http.Server.prototype.emit, later);
      const port = await listen(server);
      const [res] = responses((await exchange(port, [GET])).raw);
      assert.deepEqual(res.body, { path: '/', source: null, remote: '127.0.0.1' });
    } finally {
      await new Promise((r) => server.close(r));
      restoreHttpEmit();
    }
  });
});
