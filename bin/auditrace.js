#!/usr/bin/env node
'use strict';
// auditrace trail | verify: forensics over audit files and the collector archive (lib/forensics/).
let main;
try {
  ({ main } = require('../dist/lib/forensics/cli.js'));
} catch (e) {
  process.stderr.write(`auditrace: cannot load dist/lib/forensics/cli.js (${e.message}); run npm run build\n`);
  process.exit(2);
}
process.stdout.on('error', (e) => { if (e.code === 'EPIPE') process.exit(process.exitCode ?? 0); });
main(process.argv.slice(2)).then(
  (code) => { process.exitCode = code; },
  (e) => { process.stderr.write(`auditrace: ${e && e.message ? e.message : String(e)}\n`); process.exitCode = 2; },
);
