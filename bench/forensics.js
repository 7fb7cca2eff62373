'use strict';
// Benchmark of `auditrace trail` and `auditrace verify` (lib/forensics/) over 1,000,000 audit records.
//
//   node bench/forensics.js [--records N] [--dir DIR] [--keep] [--json]
//
// Generates, in a temp dir (or DIR, reused when it already holds data of the same size), the
// edge -> orders -> users scenario at scale: 3 services x 2 instances, one hash chain each, two
// records per request per service (the app's own event and the access record), in two forms:
//   local/    the audit files as auditrace writes them (JSON lines, keys in RFC 8785 order)
//   archive/  the gateway archive: audit.jsonl.zst (OTLP/JSON logs, 1000 records per request line,
//             one zstd frame per line) and traces.jsonl.zst (5 spans per request)
// then times, each in its own process (peak RSS from process.resourceUsage().maxRSS):
//   trail <request id from the middle> over local/, over archive/, and a miss (suggestions);
//   verify over local/ (MB/s of JSON lines) and over archive/.
// Prints one line per run and, with --json, one JSON object at the end. Targets (not asserted):
// trail over 1M records < 10 s and < 200 MB RSS; verify >= 100 MB/s.
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const crypto = require('node:crypto');
const { spawnSync } = require('node:child_process');
const gen = require('../test/fixtures/forensics/gen.js');

const ROOT = path.resolve(__dirname, '..');
const args = process.argv.slice(2);
const opt = (name, dflt) => { const i = args.indexOf(name); return i >= 0 ? args[i + 1] : dflt; };
const RECORDS = Number(opt('--records', 1_000_000));
const DIR = opt('--dir', undefined) ?? fs.mkdtempSync(path.join(os.tmpdir(), 'auditrace-bench-forensics-'));
const KEEP = args.includes('--keep') || args.includes('--dir');
const JSON_OUT = args.includes('--json');

const SERVICES = ['edge', 'orders', 'users'];
const INSTANCES = 2;
const PER_REQUEST = SERVICES.length * 2;
const REQUESTS = Math.floor(RECORDS / PER_REQUEST);
const T0 = Date.UTC(2026, 10, 1, 12, 0, 0) * 1000; // micros
const STEP = 600; // micros between requests
const md5 = (s) => crypto.createHash('md5').update(s).digest('hex');
const ids = (r) => ({ rid: md5(`req-${r}`), tid: md5(`trace-${r}`) });
const spanId = (r, what) => md5(`span-${r}-${what}`).slice(0, 16);
// Offsets (micros) within a request: service s starts at 100*s+50, writes its event at +100*(s+1),
// ends at 500 - 50*s.
const startAt = (s) => 100 * s + 50;
const handledAt = (s) => 100 * (s + 1);
const endAt = (s) => 500 - 50 * s;

function log(s) {
  process.stderr.write(`${s}\n`);
}

function generate() {
  // `-canonical`: the local lines in RFC 8785 key order, as auditrace's sink writes them (data made
  // before, in catalogue order, is made again).
  const marker = path.join(DIR, `.generated-${RECORDS}-canonical`);
  if (fs.existsSync(marker)) {
    log(`reusing ${DIR}`);
    return;
  }
  fs.mkdirSync(path.join(DIR, 'local'), { recursive: true });
  fs.mkdirSync(path.join(DIR, 'archive'), { recursive: true });
  const auditZst = fs.openSync(path.join(DIR, 'archive', 'audit.jsonl.zst'), 'w');
  const t = Date.now();
  SERVICES.forEach((service, s) => {
    for (let k = 0; k < INSTANCES; k++) {
      const instance = crypto.randomUUID();
      const n = Math.ceil((REQUESTS - k) / INSTANCES) * 2;
      const { lines } = gen.chainLines({
        count: n, service, instance, pod: `${service}-7f9c-${k}`, checkpointEvery: 20000, canonical: true,
        startMicros: T0 - 1000, stepMicros: 0,
        record: (i) => {
          const r = k + INSTANCES * (i >> 1);
          const { rid, tid } = ids(r);
          const base = T0 + r * STEP;
          const common = { 'client.address': '203.0.113.9', 'request.id': rid, trace_id: tid, span_id: spanId(r, `${service}-server`) };
          if ((i & 1) === 0) {
            return { event: `${service}_handled`, extra: { 'user.id': `u-${r % 1000}`, ...common, time: gen.rfc3339(base + handledAt(s)) }, fields: { 'order.id': `o-${r}` } };
          }
          return {
            event: 'http_request',
            extra: { ...common, time: gen.rfc3339(base + endAt(s)) },
            fields: {
              'http.request.method': 'GET', 'url.path': `/orders/${r}`, 'http.route': '/orders/:id', 'http.response.status_code': 200,
              'http.server.request.duration': (endAt(s) - startAt(s)) / 1e6, 'user_agent.original': 'bench',
              'network.peer.address': s === 0 ? '203.0.113.9' : '10.0.0.7',
            },
          };
        },
      });
      // The record's own `time` (from `extra`) must win over the generator's clock: re-stamping is
      // not needed because chainLines hashes the record as written.
      gen.writeLines(path.join(DIR, 'local', `${service}-${k}.jsonl`), lines);
      for (let i = 0; i < lines.length; i += 1000) {
        const [line] = gen.archiveLines(lines.slice(i, i + 1000), { batch: 1000, seed: i + 1, file: `/var/log/auditrace/${service}-${k}.jsonl` });
        fs.writeSync(auditZst, require('node:zlib').zstdCompressSync(Buffer.from(`${line}\n`)));
      }
      log(`  ${service}-${k}: ${lines.length} records (${((Date.now() - t) / 1000).toFixed(0)} s)`);
    }
  });
  fs.closeSync(auditZst);
  const tracesZst = fs.openSync(path.join(DIR, 'archive', 'traces.jsonl.zst'), 'w');
  const zlib = require('node:zlib');
  const BATCH = 200;
  for (let r0 = 0; r0 < REQUESTS; r0 += BATCH) {
    const groups = SERVICES.map((service, s) => ({ resource: { 'service.name': service, 'service.instance.id': `${service}-instance` }, spans: [] }));
    for (let r = r0; r < Math.min(REQUESTS, r0 + BATCH); r++) {
      const { rid, tid } = ids(r);
      const base = T0 + r * STEP;
      SERVICES.forEach((service, s) => {
        groups[s].spans.push({
          traceId: tid, spanId: spanId(r, `${service}-server`), parentSpanId: s === 0 ? '' : spanId(r, `${SERVICES[s - 1]}-client`),
          name: 'GET', kind: 2, start: base + startAt(s), end: base + endAt(s),
          attributes: { 'request.id': rid, 'client.address': '203.0.113.9', 'network.peer.address': s === 0 ? '203.0.113.9' : '10.0.0.7', 'http.route': '/orders/:id', 'url.path': `/orders/${r}`, 'http.response.status_code': 200 },
        });
        if (s < SERVICES.length - 1) {
          groups[s].spans.push({
            traceId: tid, spanId: spanId(r, `${service}-client`), parentSpanId: spanId(r, `${service}-server`),
            name: 'GET', kind: 3, start: base + startAt(s + 1) - 10, end: base + endAt(s + 1) + 10,
            attributes: { 'server.address': SERVICES[s + 1], 'http.response.status_code': 200 },
          });
        }
      });
    }
    fs.writeSync(tracesZst, zlib.zstdCompressSync(Buffer.from(`${gen.tracesLine(groups)}\n`)));
  }
  fs.closeSync(tracesZst);
  fs.writeFileSync(marker, '');
  log(`generated ${REQUESTS * PER_REQUEST} records in ${((Date.now() - t) / 1000).toFixed(0)} s`);
}

function size(dir) {
  return fs.readdirSync(dir).reduce((s, n) => s + fs.statSync(path.join(dir, n)).size, 0);
}

/** Runs the CLI in its own process; returns wall time, peak RSS and the output. */
function run(name, argv) {
  const wrapper = `
    const { main } = require(${JSON.stringify(path.join(ROOT, 'dist/lib/forensics/cli.js'))});
    const { Writable } = require('node:stream');
    let out = '';
    const stdout = new Writable({ write(c, e, cb) { out += c; cb(); } });
    const t = process.hrtime.bigint();
    main(${JSON.stringify(argv)}, { stdout, stderr: process.stderr, env: process.env }).then((code) => {
      const seconds = Number(process.hrtime.bigint() - t) / 1e9;
      const u = process.resourceUsage();
      process.stdout.write(JSON.stringify({ code, seconds, cpuSeconds: (u.userCPUTime + u.systemCPUTime) / 1e6, maxRssMB: u.maxRSS / 1024, out }));
    });`;
  const r = spawnSync(process.execPath, ['-e', wrapper], { encoding: 'utf8', maxBuffer: 256 * 1024 * 1024, stdio: ['ignore', 'pipe', 'pipe'] });
  if (r.status !== 0) throw new Error(`${name}: exit ${r.status}\n${r.stderr}`);
  const res = JSON.parse(r.stdout);
  log(`${name.padEnd(28)} ${res.seconds.toFixed(2).padStart(7)} s wall ${res.cpuSeconds.toFixed(2).padStart(7)} s CPU (all threads)  ${res.maxRssMB.toFixed(0).padStart(5)} MB peak RSS  exit ${res.code}`);
  return { name, ...res };
}

function main() {
  log(`forensics bench: ${RECORDS} records in ${DIR} (${os.availableParallelism()} CPUs, load average ${os.loadavg().map((l) => l.toFixed(1)).join(' ')})`);
  generate();
  const local = path.join(DIR, 'local');
  const archive = path.join(DIR, 'archive');
  const localBytes = size(local);
  log(`local: ${(localBytes / 1e6).toFixed(0)} MB, archive: ${(size(archive) / 1e6).toFixed(0)} MB compressed`);
  const { rid } = ids(Math.floor(REQUESTS / 2));
  const results = [];
  const trailLocal = run('trail (local files)', ['trail', rid, '--file', local, '--json']);
  const t = JSON.parse(trailLocal.out);
  if (!t.found || t.path.join(',') !== 'edge,orders,users') throw new Error(`trail did not find the request: ${trailLocal.out.slice(0, 500)}`);
  results.push(trailLocal);
  const trailArchive = run('trail (archive)', ['trail', rid, '--archive', archive, '--json']);
  if (!JSON.parse(trailArchive.out).found) throw new Error('trail (archive) did not find the request');
  results.push(trailArchive);
  results.push(run('trail (miss, suggestions)', ['trail', md5('nope'), '--file', local, '--archive', archive]));
  const verifyLocal = run('verify (local files)', ['verify', '--file', local, '--json']);
  const v = JSON.parse(verifyLocal.out);
  if (!v.ok) throw new Error(`verify found problems in generated data: ${JSON.stringify(v.findings.slice(0, 3))}`);
  verifyLocal.mbPerSecond = localBytes / 1e6 / verifyLocal.seconds;
  verifyLocal.internalMbPerSecond = v.stats.mbPerSecond;
  verifyLocal.workers = v.stats.workers;
  verifyLocal.mbPerCpuSecond = localBytes / 1e6 / verifyLocal.cpuSeconds;
  log(`  verify (local): ${verifyLocal.mbPerSecond.toFixed(0)} MB/s of JSON lines end to end (${v.stats.mbPerSecond.toFixed(0)} MB/s inside verify, ${v.stats.workers} worker threads, ${os.availableParallelism()} CPUs; ${verifyLocal.mbPerCpuSecond.toFixed(0)} MB per CPU-second)`);
  results.push(verifyLocal);
  const verifyLocal1 = run('verify (local, no workers)', ['verify', '--file', local, '--json', '--workers', '0']);
  verifyLocal1.mbPerSecond = localBytes / 1e6 / verifyLocal1.seconds;
  verifyLocal1.mbPerCpuSecond = localBytes / 1e6 / verifyLocal1.cpuSeconds;
  log(`  verify (local, one thread): ${verifyLocal1.mbPerSecond.toFixed(0)} MB/s (${verifyLocal1.mbPerCpuSecond.toFixed(0)} MB per CPU-second)`);
  results.push(verifyLocal1);
  const verifyArchive = run('verify (archive)', ['verify', '--archive', archive, '--json']);
  const va = JSON.parse(verifyArchive.out);
  if (!va.ok) throw new Error(`verify (archive) found problems: ${JSON.stringify(va.findings.slice(0, 3))}`);
  verifyArchive.mbPerSecond = va.stats.decompressedBytes / 1e6 / verifyArchive.seconds;
  log(`  verify (archive): ${verifyArchive.mbPerSecond.toFixed(0)} MB/s of decompressed OTLP/JSON`);
  results.push(verifyArchive);
  if (JSON_OUT) {
    process.stdout.write(`${JSON.stringify({
      records: REQUESTS * PER_REQUEST, cpus: os.availableParallelism(), localBytes,
      results: results.map(({ out, ...r }) => r),
    })}\n`);
  }
  if (!KEEP) fs.rmSync(DIR, { recursive: true, force: true });
}

main();
