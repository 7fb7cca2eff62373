'use strict';
// The three-service scenario of the edge issue: edge → orders → users (test/fixtures/edge/chain.js),
// each preloaded with auditrace, orders and users trusting loopback (their callers), edge trusting
// `edgeTrust` when given. Returns the edge's port; every started app is pushed onto `apps`.
const path = require('node:path');
const { startApp } = require('./run-app');

async function startEdgeChain({ apps, otlpUrl, auditDir, edgeTrust }) {
  const env = (name, extra) => ({
    env: {
      SERVICE: name, OTEL_SERVICE_NAME: name, OTEL_EXPORTER_OTLP_ENDPOINT: otlpUrl, OTEL_BSP_SCHEDULE_DELAY: '100',
      OTEL_METRICS_EXPORTER: 'none', AUDITRACE_AUDIT_FILE: path.join(auditDir, `${name}.jsonl`), ...extra,
    },
  });
  const start = async (name, extra) => {
    const app = startApp('edge/chain.js', env(name, extra));
    apps.push(app);
    const [, port] = await app.waitForOutput(/listening (\d+)/);
    return Number(port);
  };
  const usersPort = await start('users', { AUDITRACE_TRUSTED_PROXIES: 'loopback' });
  const ordersPort = await start('orders', { AUDITRACE_TRUSTED_PROXIES: 'loopback', NEXT_URL: `http://127.0.0.1:${usersPort}` });
  return start('edge', { ...(edgeTrust ? { AUDITRACE_TRUSTED_PROXIES: edgeTrust } : {}), NEXT_URL: `http://127.0.0.1:${ordersPort}` });
}

module.exports = { startEdgeChain };
