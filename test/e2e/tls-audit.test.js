'use strict';
const assert = require('node:assert/strict');
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const https = require('node:https');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const tls = require('node:tls');
const Ajv2020 = require('ajv/dist/2020').default;
const { startApp, ROOT } = require('../helpers/run-app.js');

const schema = JSON.parse(fs.readFileSync(path.join(ROOT, 'audit-record.schema.json'), 'utf8'));
const validate = new Ajv2020({ allErrors: true, strict: true, strictRequired: false }).compile(schema);

/** A CA, a server certificate and a client certificate it signed, and a client certificate of another CA. */
function makeCertificates(dir) {
  const ssl = (...args) => execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
  const ca = (name, cn) => ssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.crt`, '-subj', `/CN=${cn}`, '-days', '2');
  const leaf = (name, cn, signer, ext) => {
    ssl('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${cn}`);
    ssl('x509', '-req', '-in', `${name}.csr`, '-CA', `${signer}.crt`, '-CAkey', `${signer}.key`, '-CAcreateserial', '-out', `${name}.crt`, '-days', '2', ...(ext ? ['-extfile', ext] : []));
  };
  ca('ca', 'auditrace test CA');
  ca('other-ca', 'some other CA');
  fs.writeFileSync(path.join(dir, 'san.ext'), 'subjectAltName=DNS:localhost,IP:127.0.0.1\n');
  leaf('server', 'localhost', 'ca', 'san.ext');
  leaf('client', 'orders-client', 'ca');
  leaf('rogue', 'rogue-client', 'other-ca');
}

/** What a client sees: a response, or the error code it got. Error texts carry pointers, codes do not. */
function httpsGet(port, localAddress, certs) {
  return new Promise((resolve) => {
    const req = https.get({ host: '127.0.0.1', port, path: '/', localAddress, agent: false, ca: certs.ca, ...certs.client }, (res) => {
      let body = '';
      res.on('data', (d) => { body += d; });
      res.on('end', () => resolve({ status: res.statusCode, body }));
      res.on('error', (e) => resolve({ error: e.code }));
    });
    req.on('error', (e) => resolve({ error: e.code }));
  });
}

/** Plain-text HTTP to the TLS port: what comes back and how the connection ends. */
function plainHttp(port, localAddress) {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port, localAddress }, () => socket.write('GET / HTTP/1.1\r\nHost: localhost\r\n\r\n'));
    let received = '';
    let error;
    socket.on('data', (d) => { received += d.toString('latin1'); });
    socket.on('error', (e) => { error = e.code; });
    socket.on('close', () => resolve({ received, error }));
  });
}

/** A TCP connection that closes (or resets) without sending a byte: a port check. */
function bareConnect(port, localAddress, reset) {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port, localAddress }, () => (reset ? socket.resetAndDestroy() : socket.end()));
    socket.on('error', () => {});
    socket.on('close', () => resolve());
  });
}

describe('tls_handshake_fail: failed TLS handshakes on an mTLS https server', function () {
  let dir; const apps = [];
  const auditFile = () => path.join(dir, 'tls.jsonl');
  const tlsRecords = () => (fs.existsSync(auditFile()) ? fs.readFileSync(auditFile(), 'utf8') : '')
    .split('\n').filter(Boolean).map((l) => JSON.parse(l)).filter((r) => r['event.name'] === 'tls_handshake_fail');

  async function waitForRecords(n) {
    const deadline = Date.now() + 5000;
    while (tlsRecords().length < n && Date.now() < deadline) await new Promise((r) => setTimeout(r, 25));
    await new Promise((r) => setTimeout(r, 200)); // and nothing more arrives
    return tlsRecords();
  }

  async function server(preload) {
    const app = startApp('edge/tls-server.js', {
      preload,
      env: { CERT_DIR: dir, OTEL_TRACES_EXPORTER: 'none', OTEL_METRICS_EXPORTER: 'none', OTEL_LOGS_EXPORTER: 'none', AUDITRACE_AUDIT_FILE: auditFile() },
    });
    apps.push(app);
    const [, port] = await app.waitForOutput(/listening (\d+)/);
    return Number(port);
  }

  /** The four clients, each from its own loopback address so its record can be told apart. */
  async function scenarios(port) {
    const read = (n) => fs.readFileSync(path.join(dir, n));
    const ca = read('ca.crt');
    return {
      noCertificate: await httpsGet(port, '127.0.0.2', { ca }),
      otherCa: await httpsGet(port, '127.0.0.3', { ca, client: { key: read('rogue.key'), cert: read('rogue.crt') } }),
      plainHttp: await plainHttp(port, '127.0.0.4'),
      valid: await httpsGet(port, '127.0.0.5', { ca, client: { key: read('client.key'), cert: read('client.crt') } }),
    };
  }

  let withPreload; let without; let records;

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'auditrace-tls-'));
    makeCertificates(dir);
    without = await scenarios(await server('none'));
    withPreload = await scenarios(await server('require'));
    records = await waitForRecords(3);
  });
  after(async () => {
    await Promise.all(apps.splice(0).map((a) => a.kill('SIGKILL')));
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('clients see exactly what they see without auditrace', () => {
    assert.deepEqual(withPreload, without);
    assert.deepEqual(withPreload.valid, { status: 200, body: 'hello orders-client' });
    assert.ok(withPreload.noCertificate.error, JSON.stringify(withPreload.noCertificate));
    assert.ok(withPreload.otherCa.error, JSON.stringify(withPreload.otherCa));
  });

  it('writes one record per failed handshake, with the peer address', () => {
    assert.equal(records.length, 3, JSON.stringify(records));
    assert.deepEqual(records.map((r) => r['network.peer.address']).sort(), ['127.0.0.2', '127.0.0.3', '127.0.0.4']);
    for (const r of records) {
      assert.equal(r['event.outcome'], 'failure');
      assert.equal(r.severity, 'WARN');
      assert.ok(typeof r['tls.failure'] === 'string' && r['tls.failure'].length > 0, JSON.stringify(r));
      assert.ok(typeof r['error.message'] === 'string' && r['error.message'].length > 0, JSON.stringify(r));
      assert.equal(r['audit.problems'], undefined);
      assert.equal(r['request.id'], undefined, 'no request exists before a handshake');
    }
  });

  it('names why: no client certificate, a certificate of another CA, plain HTTP', () => {
    const by = (peer) => records.find((r) => r['network.peer.address'] === peer);
    assert.equal(by('127.0.0.2')['tls.failure'], 'ERR_SSL_PEER_DID_NOT_RETURN_A_CERTIFICATE');
    // Node completes the handshake, finds the verification error and drops the socket: the
    // record names the verification error rather than the synthetic "socket hang up".
    assert.match(by('127.0.0.3')['tls.failure'], /^(UNABLE_TO_VERIFY_LEAF_SIGNATURE|UNABLE_TO_GET_ISSUER_CERT_LOCALLY|SELF_SIGNED_CERT_IN_CHAIN|CERT_SIGNATURE_FAILURE)$/);
    assert.match(by('127.0.0.3')['error.message'], /client certificate rejected/);
    assert.equal(by('127.0.0.4')['tls.failure'], 'ERR_SSL_HTTP_REQUEST');
  });

  it('writes nothing for a valid client certificate', () => {
    assert.equal(records.filter((r) => r['network.peer.address'] === '127.0.0.5').length, 0);
  });

  it('every record validates against audit-record.schema.json', () => {
    for (const r of records) assert.ok(validate(r), `${JSON.stringify(r)}: ${JSON.stringify(validate.errors)}`);
  });

  it('writes nothing for a TCP connection closed or reset without a byte (a port check), but does for an abandoned handshake', async () => {
    const port = await server('require');
    await bareConnect(port, '127.0.0.6', false);
    await bareConnect(port, '127.0.0.7', true);
    // The start of a handshake record, then the client goes away.
    await new Promise((resolve) => {
      const socket = net.connect({ host: '127.0.0.1', port, localAddress: '127.0.0.8' }, () => socket.end(Buffer.from([0x16, 0x03, 0x01, 0x00, 0x80, 0x01])));
      socket.on('error', () => {});
      socket.on('close', resolve);
    });
    await new Promise((r) => setTimeout(r, 300));
    const peers = tlsRecords().map((r) => r['network.peer.address']);
    assert.ok(!peers.includes('127.0.0.6') && !peers.includes('127.0.0.7'), JSON.stringify(peers));
    const abandoned = tlsRecords().filter((r) => r['network.peer.address'] === '127.0.0.8');
    assert.equal(abandoned.length, 1, JSON.stringify(abandoned));
    assert.equal(abandoned[0]['tls.failure'], 'ECONNRESET');
  });

  it('an authenticated client sending bytes that are no HTTP request: one http_client_error record (https servers are observed through tls.Server)', async () => {
    const port = await server('require');
    const read = (n) => fs.readFileSync(path.join(dir, n));
    const answer = await new Promise((resolve) => {
      const socket = tls.connect({ host: '127.0.0.1', port, localAddress: '127.0.0.9', ca: read('ca.crt'), key: read('client.key'), cert: read('client.crt') },
        () => socket.write('GET / HTTP/1.1\r\nHost: localhost\r\nbad header line\r\n\r\n'));
      let received = '';
      socket.on('data', (d) => { received += d.toString('latin1'); });
      socket.on('error', () => {});
      socket.on('close', () => resolve(received));
    });
    assert.match(answer, /^HTTP\/1\.1 400 Bad Request/, 'Node answers as without auditrace');
    const deadline = Date.now() + 5000;
    const clientErrors = () => fs.readFileSync(auditFile(), 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l))
      .filter((r) => r['event.name'] === 'http_client_error' && r['network.peer.address'] === '127.0.0.9');
    while (clientErrors().length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 25));
    const got = clientErrors();
    assert.equal(got.length, 1, JSON.stringify(got));
    assert.equal(got[0]['error.type'], 'HPE_INVALID_HEADER_TOKEN');
    assert.equal(got[0]['http.response.status_code'], 400);
    assert.ok(validate(got[0]), JSON.stringify(validate.errors));
  });

  it('auditTlsFailures() is idempotent and its undo restores tls.Server.prototype.emit', () => {
    const { auditTlsFailures } = require('../../dist/lib/tls-audit.js');
    const before = tls.Server.prototype.emit;
    const undo = auditTlsFailures();
    assert.notEqual(tls.Server.prototype.emit, before);
    const wrapped = tls.Server.prototype.emit;
    assert.equal(auditTlsFailures(), undo);
    assert.equal(tls.Server.prototype.emit, wrapped, 'not wrapped twice');
    undo();
    assert.equal(tls.Server.prototype.emit, before);
    assert.equal(Object.prototype.hasOwnProperty.call(tls.Server.prototype, 'emit'), false);
  });
});

describe('TLS audits start when the app loads TLS, however it loads it', function () {
  let dir; const apps = [];
  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'auditrace-tls-load-'));
    makeCertificates(dir);
  });
  after(async () => {
    await Promise.all(apps.splice(0).map((a) => a.kill('SIGKILL')));
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  const cases = [
    { name: 'require(\'node:https\') after --require', fixture: 'edge/tls-server.js', preload: 'require', env: {} },
    { name: 'process.getBuiltinModule(\'node:https\') after --require', fixture: 'edge/tls-server.js', preload: 'require', env: { TLS_LOAD: 'builtin' } },
    { name: 'import https from \'node:https\' after --import', fixture: 'edge/tls-server.mjs', preload: 'import', env: {} },
    { name: 'https loaded before a programmatic start()', fixture: 'edge/tls-server.js', preload: 'none', env: { TLS_LOAD: 'before-start' } },
  ];
  for (const [i, c] of cases.entries()) {
    it(`${c.name}: a handshake without a client certificate leaves its record, an unparseable request its http_client_error`, async () => {
      const file = path.join(dir, `audit-${i}.jsonl`);
      const app = startApp(c.fixture, {
        preload: c.preload,
        env: { CERT_DIR: dir, OTEL_TRACES_EXPORTER: 'none', OTEL_METRICS_EXPORTER: 'none', OTEL_LOGS_EXPORTER: 'none', AUDITRACE_AUDIT_FILE: file, ...c.env },
      });
      apps.push(app);
      const port = Number((await app.waitForOutput(/listening (\d+)/))[1]);
      const read = (n) => fs.readFileSync(path.join(dir, n));
      const denied = await httpsGet(port, '127.0.0.2', { ca: read('ca.crt') });
      assert.ok(denied.error, JSON.stringify(denied));
      await new Promise((resolve) => {
        const socket = tls.connect({ host: '127.0.0.1', port, localAddress: '127.0.0.3', ca: read('ca.crt'), key: read('client.key'), cert: read('client.crt') },
          () => socket.write('GET / HTTP/1.1\r\nbad header line\r\n\r\n'));
        socket.on('data', () => {});
        socket.on('error', () => {});
        socket.on('close', resolve);
      });
      const of = (event) => (fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : '').split('\n').filter(Boolean)
        .map((l) => JSON.parse(l)).filter((r) => r['event.name'] === event);
      const deadline = Date.now() + 5000;
      while ((of('tls_handshake_fail').length < 1 || of('http_client_error').length < 1) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 25));
      assert.deepEqual(of('tls_handshake_fail').map((r) => r['network.peer.address']), ['127.0.0.2'], JSON.stringify(of('tls_handshake_fail')));
      assert.deepEqual(of('http_client_error').map((r) => r['network.peer.address']), ['127.0.0.3'], app.stderr);
    });
  }
});
