'use strict';
// `npm run demo`: two services started the way a user starts them (`node --require
// auditrace/register`), one request through both, and what the telemetry backend received.
// Works offline: the OTLP backend is a local receiver.
const path = require('node:path');
const { startOtlpReceiver } = require('../test/helpers/otlp-receiver.js');
const { startApp } = require('../test/helpers/run-app.js');

const EXAMPLES = path.join(__dirname, '..', 'examples');
const kinds = ['INTERNAL', 'SERVER', 'CLIENT', 'PRODUCER', 'CONSUMER'];

function printTree(spans) {
  const byParent = new Map();
  for (const s of spans) {
    const list = byParent.get(s.parentSpanId) ?? [];
    list.push(s);
    byParent.set(s.parentSpanId, list);
  }
  const ids = new Set(spans.map((s) => s.spanId));
  const roots = spans.filter((s) => !ids.has(s.parentSpanId));
  const walk = (s, depth) => {
    const r = s.resource;
    const ms = ((s.endTimeUnixNano - s.startTimeUnixNano) / 1e6).toFixed(1);
    console.log(`${'  '.repeat(depth)}${kinds[s.kind - 1] ?? s.kind} ${s.name}  ${ms} ms  ` +
      `[${r['service.name']} ${r['k8s.pod.name'] ?? ''} instance ${r['service.instance.id'].slice(0, 8)}… pid ${r['process.pid']}]`);
    for (const c of (byParent.get(s.spanId) ?? []).sort((a, b) => a.startTimeUnixNano - b.startTimeUnixNano)) walk(c, depth + 1);
  };
  for (const r of roots) walk(r, 1);
}

async function main() {
  const rx = await startOtlpReceiver();
  const common = { OTEL_EXPORTER_OTLP_ENDPOINT: rx.url, OTEL_BSP_SCHEDULE_DELAY: '200', OTEL_METRICS_EXPORTER: 'none' };
  console.log(`OTLP receiver (standing in for a collector) at ${rx.url}\n`);
  const users = startApp(path.join(EXAMPLES, 'users.js'), {
    env: { ...common, OTEL_SERVICE_NAME: 'users', AUDITRACE_TRUSTED_PROXIES: 'loopback', K8S_NAMESPACE_NAME: 'shop', K8S_POD_NAME: 'users-5c9d-7kq2p', K8S_CONTAINER_NAME: 'users' },
  });
  const [, usersPort] = await users.waitForOutput(/listening (\d+)/);
  const edge = startApp(path.join(EXAMPLES, 'edge.js'), {
    env: { ...common, OTEL_SERVICE_NAME: 'edge', USERS_URL: `http://127.0.0.1:${usersPort}` },
  });
  const [, edgePort] = await edge.waitForOutput(/listening (\d+)/);
  for (const app of [users, edge]) console.log(app.stderr.split('\n').find((l) => l.startsWith('auditrace ')));

  const res = await fetch(`http://127.0.0.1:${edgePort}/profile/u42`);
  console.log(`\nGET /profile/u42 -> ${res.status} ${await res.text()}\n`);
  await rx.waitFor(() => rx.spans().some((s) => s.resource['service.name'] === 'users' && s.kind === 2)
    && rx.spans().filter((s) => s.resource['service.name'] === 'edge').length >= 2, { timeoutMs: 15000 });
  const spans = rx.spans();
  const traceId = spans.find((s) => s.resource['service.name'] === 'edge' && s.kind === 2).traceId;
  console.log(`trace ${traceId}, as the backend received it:`);
  printTree(spans.filter((s) => s.traceId === traceId));

  console.log('\nSIGTERM to both services (auditrace flushes, then the process ends as it would without it):');
  for (const [name, app] of [['edge', edge], ['users', users]]) {
    const { code, signal } = await app.kill('SIGTERM');
    console.log(`  ${name}: ended by ${signal ?? `exit code ${code}`}`);
  }
  await rx.close();
}

main().catch((err) => {
  console.error(`demo failed: ${err.stack ?? err}`);
  process.exit(1);
});
