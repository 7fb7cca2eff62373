'use strict';
// `node --require auditrace/register app.js`: start telemetry before the application loads.
require('./dist/auditrace.js').start('require');
