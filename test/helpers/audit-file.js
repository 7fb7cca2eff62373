'use strict';
const fs = require('node:fs');

/**
 * The records of an audit file that a running app may still be appending to: complete lines only.
 * A reader can see a `write(2)` half done (the kernel copies it page by page); the unterminated
 * tail is left for the next read, as the collector's file_log receiver does.
 */
function readAuditRecords(file) {
  if (!fs.existsSync(file)) return [];
  const text = fs.readFileSync(file, 'utf8');
  return text.slice(0, text.lastIndexOf('\n') + 1).split('\n').filter(Boolean).map((l) => JSON.parse(l));
}

module.exports = { readAuditRecords };
