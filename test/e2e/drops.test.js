'use strict';
const assert = require('node:assert/strict');
const { startOtlpReceiver } = require('../helpers/otlp-receiver.js');
const { runApp } = require('../helpers/run-app.js');

describe('a burst beyond the export queue', () => {
  it('is never a silent drop: one rate-limited warning, and the drops are counted', async () => {
    const rx = await startOtlpReceiver();
    try {
      const { code, stderr } = await runApp('apps/burst.js', {
        env: { OTEL_EXPORTER_OTLP_ENDPOINT: rx.url, AUDITRACE_QUIET: 'true' },
      });
      assert.equal(code, 0, stderr);
      const warnings = stderr.split('\n').filter((l) => l.includes('log records dropped: the export queue is full'));
      assert.equal(warnings.length, 1, stderr);
      const received = rx.logs().length;
      assert.ok(received > 0 && received < 100000, `received ${received}`);
      const dropped = rx.metrics().filter((m) => m.name === 'otel.sdk.processor.log.processed')
        .flatMap((m) => m.dataPoints).filter((p) => p.attributes['error.type'] === 'queue_full')
        .reduce((a, p) => Math.max(a, p.value), 0);
      assert.equal(dropped + received, 100000, `dropped ${dropped} + received ${received}`);
    } finally {
      await rx.close();
    }
  });
});
