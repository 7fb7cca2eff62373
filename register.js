'use strict';
// `node --require auditrace/register app.js`: start telemetry before the application loads.
// The bundle is loaded with the code cache the build made for this Node (lib/code-cache.ts).
const bundle = require.resolve('./dist/auditrace.js');
let auditrace;
try {
  auditrace = require('./dist/lib/code-cache.js').loadBundle(bundle);
} catch {
  auditrace = require(bundle);
}
auditrace.start('require');
