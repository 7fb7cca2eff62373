'use strict';
// 100,000 OTLP log records emitted in one tick through the global logs API (whichever SDK the
// preload registered), then a normal exit: both preloads flush on beforeExit.
const { logs } = require('@opentelemetry/api');

const N = Number(process.env.BURST_RECORDS ?? 100_000);
setTimeout(() => {
  const logger = logs.getLogger('b');
  for (let i = 0; i < N; i++) {
    logger.emit({ severityNumber: 9, severityText: 'INFO', body: `burst record ${i}`, attributes: { 'burst.index': i } });
  }
  process.stdout.write(`${JSON.stringify({ emitted: N })}\n`);
  // Give the batch processor its schedule (1 s by default) to export, then end normally.
  setTimeout(() => {}, Number(process.env.BURST_LINGER_MS ?? 1500));
}, 500);
