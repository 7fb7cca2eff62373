'use strict';
// One contender of the audit write-path benchmark, in its own process:
//   node [--require register.js] bench/audit-writer.js <contender> <durationMs> <file> [templateJson]
// contender: auditrace | pino | winston | floor | floor-chained | sample
// Writes records to <file> for about durationMs and prints one JSON line with records/s. Every
// contender writes the same record: `sample` has auditrace write one sensitive_read record and
// prints it; the others write those fields (their own timestamp, the rest copied).
const fs = require('node:fs');
const path = require('node:path');

const ROOT = path.resolve(__dirname, '..');
const [contender, durationArg, file, templateArg] = process.argv.slice(2);
const durationMs = Number(durationArg);

/** What the application hands to audit.sensitiveRead(). */
const FIELDS = {
  'user.id': 'u-1017',
  'user.target.id': 'p-4411',
  'object.type': 'patient',
  'object.id': 'rec-88231',
  fields: ['diagnosis', 'medication'],
  context: { purpose: 'consultation', ward: 'cardiology' },
};

const now = () => Number(process.hrtime.bigint()) / 1e6;
/** When the timed loop started, on the clock of --cpu-prof sample times (µs). */
let startUs = 0;
let endUs = 0;

/** Calls `one` in batches until durationMs has passed; returns [count, elapsedMs]. */
function loopSync(one) {
  startUs = Number(process.hrtime.bigint() / 1000n);
  const t0 = now();
  let n = 0;
  for (;;) {
    for (let i = 0; i < 256; i++) one();
    n += 256;
    if (now() - t0 >= durationMs) break;
  }
  endUs = Number(process.hrtime.bigint() / 1000n);
  return [n, now() - t0];
}

/** Lines and bytes of `f` and of its rotated files (`f.1`, `f.2`, … — auditrace rotates at 100 MiB). */
function countLines(f) {
  let n = 0;
  let bytes = 0;
  for (let k = 0; ; k++) {
    const name = k === 0 ? f : `${f}.${k}`;
    if (k > 0 && !fs.existsSync(name)) break;
    const buf = fs.readFileSync(name);
    for (let i = 0; i < buf.length; i++) if (buf[i] === 0x0a) n++;
    bytes += buf.length;
  }
  return { lines: n, bytes };
}

function report(n, ms, extra = {}) {
  const { lines, bytes } = countLines(file);
  process.stdout.write(`${JSON.stringify({ contender, records: n, elapsedMs: ms, perSec: (n * 1000) / ms, startUs, endUs, lines, bytesPerLine: bytes / lines, ...extra })}\n`);
}

async function main() {
  if (contender === 'sample' || contender === 'auditrace') {
    const { audit } = require(path.join(ROOT, 'dist', 'auditrace.js'));
    audit.sensitiveRead(FIELDS); // opens the file, starts the chain: not timed
    if (contender === 'sample') {
      const lines = fs.readFileSync(file, 'utf8').trim().split('\n');
      process.stdout.write(`${lines.find((l) => l.includes('"sensitive_read"'))}\n`);
      return;
    }
    const [n, ms] = loopSync(() => audit.sensitiveRead(FIELDS));
    report(n, ms, { chained: true });
    return;
  }
  const template = JSON.parse(templateArg);
  delete template.time; // each logger writes its own timestamp
  if (contender === 'floor') {
    const fd = fs.openSync(file, 'a');
    const [n, ms] = loopSync(() => {
      fs.writeSync(fd, `${JSON.stringify({ time: new Date().toISOString(), ...template })}\n`);
    });
    fs.closeSync(fd);
    report(n, ms);
    return;
  }
  if (contender === 'floor-chained') {
    // The floor plus what any hash chain costs at least: the SHA-256 of each line's bytes (as
    // auditrace hashes them: encoded once, hashed without the newline, the same bytes written).
    const { hash } = require('node:crypto');
    const fd = fs.openSync(file, 'a');
    const [n, ms] = loopSync(() => {
      const bytes = Buffer.from(`${JSON.stringify({ time: new Date().toISOString(), ...template })}\n`, 'utf8');
      hash('sha256', bytes.subarray(0, bytes.length - 1), 'hex');
      fs.writeSync(fd, bytes, 0, bytes.length);
    });
    fs.closeSync(fd);
    report(n, ms);
    return;
  }
  if (contender === 'pino') {
    const pino = require('pino');
    const logger = pino({ base: null, timestamp: pino.stdTimeFunctions.isoTime }, pino.destination({ dest: file, sync: true }));
    const [n, ms] = loopSync(() => logger.warn(template));
    report(n, ms);
    return;
  }
  if (contender === 'winston') {
    // winston's File transport is a stream: calls return before the write. Records are offered in
    // batches; while more than BACKLOG records are not yet in the file, the loop yields to let the
    // stream write (back-pressure, as a server's event loop would get), and the clock stops only
    // when the file holds every record.
    const winston = require('winston');
    const transport = new winston.transports.File({ filename: file });
    const logger = winston.createLogger({
      level: 'info',
      format: winston.format.combine(winston.format.timestamp(), winston.format.json()),
      transports: [transport],
    });
    logger.warn(template);
    await waitForLines(1);
    const lineBytes = fs.statSync(file).size; // every line has the same length
    fs.truncateSync(file, 0);
    const t0 = now();
    let n = 0;
    const BACKLOG = 4096;
    while (now() - t0 < durationMs) {
      for (let i = 0; i < 256; i++) logger.warn(template);
      n += 256;
      do await new Promise((r) => setImmediate(r));
      while (n - fs.statSync(file).size / lineBytes > BACKLOG);
    }
    const offered = now() - t0;
    while (fs.statSync(file).size < n * lineBytes) await new Promise((r) => setTimeout(r, 1));
    const ms = now() - t0;
    report(n, ms, { offeredMs: offered });
    logger.end();
    return;
  }
  throw new Error(`unknown contender ${contender}`);
}

async function waitForLines(n) {
  for (let i = 0; i < 5000; i++) {
    if (fs.existsSync(file) && countLines(file).lines >= n) return;
    await new Promise((r) => setTimeout(r, 1));
  }
  throw new Error('winston wrote nothing');
}

main().catch((err) => {
  process.stderr.write(`${err && err.stack ? err.stack : err}\n`);
  process.exit(1);
});
