'use strict';
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { startOtlpReceiver } = require('../helpers/otlp-receiver.js');
const { runApp } = require('../helpers/run-app.js');

describe('nodeSdkOptions() for apps that build their own NodeSDK', () => {
  let rx;
  beforeEach(async () => { rx = await startOtlpReceiver(); });
  afterEach(async () => { await rx.close(); });

  it('adds auditrace identity, instrumentations and pipelines to a user-built NodeSDK', async () => {
    const { code, stdout, stderr } = await runApp('nodesdk/app.js', {
      preload: 'none',
      env: { OTEL_EXPORTER_OTLP_ENDPOINT: rx.url, K8S_NAMESPACE_NAME: 'shop', K8S_POD_NAME: 'p-1', K8S_CONTAINER_NAME: 'c' },
    });
    assert.equal(code, 0, stderr);
    assert.match(stdout, /done/);
    // The user's own sampler is given the server span's attributes at its start.
    assert.match(stdout, /sampler saw url\.path \["\/x"\]/);
    const server = rx.spans().find((s) => s.kind === 2);
    assert.ok(server, 'the http instrumentation auditrace added produced a server span');
    assert.equal(server.resource['telemetry.distro.name'], 'auditrace');
    assert.equal(server.resource['k8s.pod.name'], 'p-1');
    // python3 -c "import uuid;print(uuid.uuid5(uuid.UUID('4d63009a-8d0f-11ee-aad7-4c796ed8e320'),'shop.p-1.c'))"
    assert.equal(server.resource['service.instance.id'], 'a2129b7a-6dbb-50a5-a72b-92e9caacd8de');
    // The caller's own option wins.
    assert.equal(server.resource['service.name'], 'own-sdk');
    assert.equal(rx.spans().filter((s) => s.kind === 2).length, 1, 'instrumentations are not doubled');
  });

  it('a disabled http instrumentation serves nothing, so it records nothing: no span, no access record, until enabled again', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'auditrace-disable-'));
    const { code, stdout, stderr } = await runApp('nodesdk/disable.js', {
      preload: 'none',
      env: { OTEL_EXPORTER_OTLP_ENDPOINT: rx.url, AUDITRACE_AUDIT_FILE: path.join(dir, 'audit.jsonl') },
    });
    assert.equal(code, 0, stderr);
    assert.match(stdout, /recorded \["\/enabled","\/enabled-again"\]/);
    const served = rx.spans().filter((s) => s.kind === 2).map((s) => s.attributes['url.path']).sort();
    assert.deepEqual(served, ['/enabled', '/enabled-again']);
  });
});
