'use strict';
// The shipped collector configs under faults, with real processes: an instrumented app
// (`node --require auditrace/register`, test/fixtures/collector/audit-writer.js) writes audit
// records to its local file and sends spans over OTLP; a real auditrace-collector agent
// (collector-config/agent.yaml) tails the file and forwards to a real gateway (gateway.yaml), which
// writes the zstd archive and copies to a test OTLP backend. Every knob points at loopback ports
// and temp dirs. Records are counted by audit.id: the app's local file (whole lines) is the ground
// truth, the archive is what arrived. Loss fails a test; duplicates are counted and printed
// (delivery is at-least-once, consumers dedupe by audit.id).
//
// Needs collector-build/auditrace-collector (npm run collector:build) and dist/ (npm run build).
// Without the binary the suite is skipped locally and FAILS when CI is set.
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { spawn } = require('node:child_process');
const { startApp, ROOT } = require('../helpers/run-app.js');
const { startOtlpReceiver } = require('../helpers/otlp-receiver.js');
const {
  BIN, CONFIG_DIR, FEATURE_GATES, Collector, collectorAvailable, sleep, agentEnv, gatewayEnv,
  standaloneEnv, killAll, validate, readArchive, readAuditFiles, tally, tmpDir,
} = require('../helpers/collector.js');

const WRITER = path.join(ROOT, 'test', 'fixtures', 'collector', 'audit-writer.js');
const SPAN_KIND_SERVER = 2;
const SPAN_KIND_CLIENT = 3;
/** SIGKILLs per crash scenario (3, 4, 7); raise COLLECTOR_KILLS for a stress run. */
const KILLS = Number(process.env.COLLECTOR_KILLS) || 2;

/** One clear line per scenario on stdout. */
function report(label, t, extra = '') {
  console.log(`      [collector] ${label}: sent ${t.sent} received ${t.received} duplicates ${t.duplicates}${t.missing.length ? ` LOST ${t.missing.length}` : ''}${extra ? ` (${extra})` : ''}`);
}

describe('collector: app → agent → gateway → archive, under faults (real auditrace-collector processes)', function () {
  this.timeout(600000);

  let dir;
  let backend;
  let collectors;
  let apps;

  before(function () {
    if (collectorAvailable()) return;
    const msg = `${path.relative(ROOT, BIN)} is not built (npm run collector:build)`;
    if (process.env.CI) throw new Error(`CI: ${msg}; the collector tests must run in CI`);
    console.log(`      [collector] SKIPPED: ${msg}`);
    this.skip();
  });

  beforeEach(async () => {
    dir = tmpDir();
    fs.mkdirSync(path.join(dir, 'app'));
    backend = await startOtlpReceiver();
    collectors = [];
    apps = [];
  });

  afterEach(async function () {
    for (const a of apps) if (a.child.exitCode === null && a.child.signalCode === null) a.child.kill('SIGKILL');
    await Promise.all(apps.map((a) => a.exited));
    await killAll();
    if (this.currentTest && this.currentTest.state === 'failed') {
      for (const c of collectors) console.log(`----- ${c.name} (last lines) -----\n${c.tail(25)}`);
      console.log(`(temp dir kept: ${dir})`);
    } else {
      fs.rmSync(dir, { recursive: true, force: true });
    }
    if (backend) await backend.close();
  });

  // ---- building blocks ---------------------------------------------------------------------------

  const archiveDir = () => path.join(dir, 'archive');
  const auditFile = () => path.join(dir, 'app', 'audit.jsonl');

  async function makeGateway() {
    const gw = new Collector('gateway', 'gateway.yaml', await gatewayEnv({ dir, backend: backend.url }));
    collectors.push(gw);
    return gw;
  }

  async function makeAgent(gw, extra = {}) {
    const ag = new Collector('agent', 'agent.yaml', await agentEnv({
      dir, gateway: gw.env.__otlpUrl, files: path.join(dir, 'app', '*.jsonl*'), retryMaxInterval: '2s', pollInterval: '50ms', extra,
    }));
    collectors.push(ag);
    return ag;
  }

  /** The load generator, sending its spans/metrics to `otlpUrl` and auditing into the temp dir. */
  function startWriter(otlpUrl, env) {
    const app = startApp(WRITER, {
      env: {
        AUDITRACE_AUDIT_FILE: auditFile(),
        AUDITRACE_QUIET: 'true',
        OTEL_EXPORTER_OTLP_ENDPOINT: otlpUrl,
        OTEL_BSP_SCHEDULE_DELAY: '200',
        OTEL_METRICS_EXPORTER: 'none',
        ...env,
      },
    });
    apps.push(app);
    return app;
  }

  /** `A <id>` / `R <id> <trace> <request>` lines the app printed after audit.*() returned. */
  const printed = (app) => app.stdout.split('\n').filter((l) => /^[AR] /.test(l)).map((l) => l.split(' '));
  const printedCount = (app) => (app.stdout.match(/^[AR] /gm) || []).length;

  async function waitPrinted(app, n, timeoutMs = 60000) {
    const deadline = Date.now() + timeoutMs;
    while (printedCount(app) < n) {
      if (app.child.exitCode !== null) throw new Error(`app exited early (${app.child.exitCode}):\n${app.stderr}`);
      if (Date.now() > deadline) throw new Error(`app printed ${printedCount(app)} < ${n} records in ${timeoutMs} ms:\n${app.stderr}`);
      await sleep(20);
    }
  }

  /**
   * SIGKILLs collector `c` KILLS times while the app writes its N records (evenly spread: after
   * N/(KILLS+1), 2N/(KILLS+1), … records returned) and restarts it `downMs` later, with the same
   * ports, storage and archive. Returns a description of when it happened.
   */
  async function killDuring(app, n, c, downMs) {
    const when = [];
    for (let k = 1; k <= KILLS; k++) {
      await waitPrinted(app, Math.floor((n * k) / (KILLS + 1)));
      const at = printedCount(app);
      await c.kill();
      await sleep(downMs);
      await c.start();
      when.push(`${at}→${printedCount(app)}`);
    }
    return `${c.name} killed ${KILLS}× (records returned at kill→restart: ${when.join(', ')})`;
  }

  async function appDone(app, timeoutMs = 120000) {
    let timer;
    const r = await Promise.race([app.exited, new Promise((resolve) => { timer = setTimeout(resolve, timeoutMs, null); })]);
    clearTimeout(timer);
    assert.ok(r, `app did not exit within ${timeoutMs} ms`);
    assert.equal(r.code, 0, `app failed:\n${r.stderr}`);
    return r;
  }

  /** Ground truth: every whole line of the app's audit file(s). */
  function groundTruth() {
    const files = fs.readdirSync(path.join(dir, 'app')).map((f) => path.join(dir, 'app', f));
    return readAuditFiles(files);
  }

  const archivedIds = (a) => a.logs.map((l) => l.attributes['audit.id']).filter(Boolean);

  /**
   * Polls the archive until every expected audit.id is in it (or the time is up), then lets it
   * settle and counts again, so late duplicates are counted too.
   */
  async function waitArchive(expectedIds, { timeoutMs = 90000, settleMs = 1500 } = {}) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const t = tally(expectedIds, archivedIds(readArchive(archiveDir(), 'audit')));
      if (t.received === t.sent) break;
      if (Date.now() > deadline) break;
      await sleep(400);
    }
    await sleep(settleMs);
    const archive = readArchive(archiveDir(), 'audit');
    return { ...tally(expectedIds, archivedIds(archive)), archive };
  }

  async function metric(c, name) {
    try {
      return (await c.metrics()).sum(name);
    } catch {
      return NaN;
    }
  }

  function assertNoLoss(t, what) {
    const sample = t.missing.slice(0, 5).join(', ');
    assert.equal(t.missing.length, 0, `${what}: ${t.missing.length} of ${t.sent} audit records never reached the archive (e.g. ${sample})`);
    assert.equal(t.received, t.sent);
    assert.deepEqual(t.unexpected, [], 'the archive holds audit ids the app never wrote');
    assert.equal(t.archive.badLines, 0, 'every archive line is one OTLP/JSON request');
  }

  // ---- scenarios ---------------------------------------------------------------------------------

  it('1. every audit record and span arrives with the ids the app saw; a clean agent restart re-sends nothing', async () => {
    const gw = await makeGateway();
    const ag = await makeAgent(gw);
    await gw.start();
    await ag.start();
    const N = 300;
    // An instance id whose last two groups are digits: the agent's redaction masked them once (1 in
    // ~2,300 random UUIDs) in the spans' resource (test/unit/collector-redaction.test.js).
    const INSTANCE = '4875330c-8dd3-44d2-8491-137320571528';
    const app = startWriter(ag.env.__otlpUrl, { CW_MODE: 'http', CW_COUNT: N, CW_BATCH: 50, CW_TICK_MS: 5, OTEL_RESOURCE_ATTRIBUTES: `service.instance.id=${INSTANCE}` });
    await appDone(app);

    const seen = printed(app); // R <audit.id> <trace_id> <request.id>, as the request handler saw them
    assert.equal(seen.length, N);
    const { records, torn } = groundTruth();
    assert.deepEqual(torn, []);
    const local = new Map(records.map((r) => [r['audit.id'], r]));
    const instance = records[0]['service.instance.id'];
    assert.equal(instance, INSTANCE);
    for (const [, id, trace, request] of seen) {
      const r = local.get(id);
      assert.ok(r, `the local file holds ${id}`);
      assert.equal(r.trace_id, trace);
      assert.equal(r['request.id'], request);
    }

    const t = await waitArchive([...local.keys()]);
    assertNoLoss(t, 'scenario 1');
    const archived = new Map(t.archive.logs.map((l) => [l.attributes['audit.id'], l]));
    for (const [, id, trace, request] of seen) {
      const l = archived.get(id);
      assert.equal(l.attributes.trace_id, trace, `trace_id of ${id}`);
      assert.equal(l.attributes['request.id'], request, `request.id of ${id}`);
      assert.equal(l.traceId, trace, `the log record's own trace context (trace_parser) of ${id}`);
      assert.equal(l.attributes['service.instance.id'], instance);
      assert.equal(l.eventName, 'collector_test');
    }
    // The record's fields arrive exactly as written (the hash chain is recomputed from them).
    for (const r of records) {
      const a = archived.get(r['audit.id']).attributes;
      for (const [k, v] of Object.entries(r)) assert.deepEqual(a[k], v, `${r['audit.id']} field ${k}`);
    }

    // Spans: one client and one server span per request, all in the trace archive, each carrying
    // the instance identity; the server spans are the traces the records name.
    const spansDone = async () => {
      const deadline = Date.now() + 30000;
      for (;;) {
        const s = readArchive(archiveDir(), 'traces').spans;
        if (new Set(s.map((x) => x.spanId)).size >= 2 * N || Date.now() > deadline) return s;
        await sleep(300);
      }
    };
    const spans = await spansDone();
    const distinct = new Map(spans.map((s) => [s.spanId, s]));
    const server = [...distinct.values()].filter((s) => s.kind === SPAN_KIND_SERVER);
    const client = [...distinct.values()].filter((s) => s.kind === SPAN_KIND_CLIENT);
    assert.equal(server.length, N, 'server spans in the trace archive');
    assert.equal(client.length, N, 'client spans in the trace archive');
    assert.equal(distinct.size, 2 * N);
    assert.deepEqual(new Set(server.map((s) => s.traceId)), new Set(seen.map((x) => x[2])), 'server span trace ids = the trace ids the app saw');
    const byTrace = new Map(server.map((s) => [s.traceId, s]));
    for (const [, , trace, request] of seen) assert.equal(byTrace.get(trace).attributes['request.id'], request);
    for (const s of distinct.values()) {
      assert.equal(s.resource['service.instance.id'], instance);
      assert.ok(s.resource['service.name'], 'service.name');
      assert.ok(s.resource['host.name'], 'host.name');
    }
    // The backend got its copy of the audit records too (through the gateway's disk queue).
    await backend.waitFor(() => tally([...local.keys()], backend.logs().map((l) => l.attributes['audit.id']).filter(Boolean)).received === local.size, { timeoutMs: 30000 });

    report('scenario 1 app→agent→gateway→archive', t, `spans sent ${2 * N} received ${distinct.size} duplicates ${spans.length - distinct.size}; ids checked ${N}`);

    // Checkpoint: stop the agent cleanly, start it again, no new data: nothing may be re-sent.
    const before = t.archive.logs.length;
    await ag.stop('SIGTERM');
    await ag.start();
    await sleep(3000); // 60 polls at 50 ms
    const again = readArchive(archiveDir(), 'audit');
    const resent = again.logs.length - before;
    const accepted = await metric(ag, 'otelcol_receiver_accepted_log_records');
    console.log(`      [collector] checkpoint: clean agent restart with no new data: sent 0 received ${resent} duplicates ${resent} (file_log accepted ${accepted} after restart)`);
    assert.equal(resent, 0, 'records re-sent after a clean restart: the checkpoint did not persist');
    assert.equal(accepted, 0);
  });

  it('2. gateway down for 30 s while the app writes 5,000 records: all 5,000 reach the archive', async () => {
    const gw = await makeGateway(); // ports and dirs chosen, process not started
    const ag = await makeAgent(gw);
    await ag.start();
    const N = 5000;
    const down = Date.now();
    const app = startWriter(ag.env.__otlpUrl, { CW_COUNT: N, CW_BATCH: 25, CW_TICK_MS: 80 });
    await appDone(app);
    const writing = Date.now() - down;
    assert.equal(printed(app).length, N);
    const { records } = groundTruth();
    const ids = records.map((r) => r['audit.id']);
    const inFile = new Set(ids);
    for (const [, id] of printed(app)) assert.ok(inFile.has(id), `${id} returned but is not in the file`);
    await sleep(Math.max(0, 30000 - (Date.now() - down)));
    // While the gateway is down, the records wait in the agent's disk queue.
    const queued = await metric(ag, 'otelcol_exporter_queue_size');
    assert.ok(queued > 0, `the agent's queue holds the records while the gateway is down (queue_size ${queued})`);
    assert.equal(readArchive(archiveDir(), 'audit').logs.length, 0);
    const outage = Date.now() - down;
    await gw.start();
    const back = Date.now();
    const t = await waitArchive(ids, { timeoutMs: 60000 });
    const catchUp = Date.now() - back - 1500;
    const failed = await metric(ag, 'otelcol_exporter_enqueue_failed_log_records');
    report(`scenario 2 gateway down ${Math.round(outage / 1000)}s`, t, `${N} audit.event() + ${records.length - N} chain records, written in ${(writing / 1000).toFixed(1)} s; agent queue held ${queued} requests; caught up ${(catchUp / 1000).toFixed(1)} s after the gateway came back; enqueue failures ${failed}`);
    assertNoLoss(t, 'scenario 2');
    assert.equal(failed, 0);
  });

  it('3. agent SIGKILLed in the middle of 20,000 records and restarted: zero loss', async () => {
    const gw = await makeGateway();
    const ag = await makeAgent(gw);
    await gw.start();
    await ag.start();
    const N = 20000;
    const app = startWriter(ag.env.__otlpUrl, { CW_COUNT: N, CW_BATCH: 50, CW_TICK_MS: 20 });
    const kills = await killDuring(app, N, ag, 500);
    await appDone(app);
    const { records } = groundTruth();
    assert.equal(printed(app).length, N);
    const t = await waitArchive(records.map((r) => r['audit.id']));
    const failed = await metric(ag, 'otelcol_exporter_enqueue_failed_log_records');
    report('scenario 3 agent SIGKILL + restart', t, `${kills}; enqueue failures ${failed}; feature gates ${FEATURE_GATES.join(',')}`);
    assertNoLoss(t, 'scenario 3');
    assert.equal(failed, 0);
  });

  it('4. gateway SIGKILLed and restarted mid-stream: zero loss', async () => {
    const gw = await makeGateway();
    const ag = await makeAgent(gw);
    await gw.start();
    await ag.start();
    const N = 20000;
    const app = startWriter(ag.env.__otlpUrl, { CW_COUNT: N, CW_BATCH: 50, CW_TICK_MS: 20 });
    const kills = await killDuring(app, N, gw, 1000);
    await appDone(app);
    const { records } = groundTruth();
    const t = await waitArchive(records.map((r) => r['audit.id']));
    const failed = await metric(ag, 'otelcol_exporter_enqueue_failed_log_records');
    report('scenario 4 gateway SIGKILL + restart', t, `${kills}; damaged archive frames ${t.archive.damaged}; agent enqueue failures ${failed}`);
    assertNoLoss(t, 'scenario 4');
    assert.equal(failed, 0);
  });

  it('5. app SIGKILLed: every record whose audit.*() had returned arrives', async () => {
    const gw = await makeGateway();
    const ag = await makeAgent(gw);
    await gw.start();
    await ag.start();
    const app = startWriter(ag.env.__otlpUrl, { CW_COUNT: 1e6, CW_BATCH: 50, CW_TICK_MS: 5, CW_END: 'stay' });
    await waitPrinted(app, 3000 + Math.floor(Math.random() * 3000));
    app.child.kill('SIGKILL');
    const exit = await app.exited;
    assert.equal(exit.signal, 'SIGKILL');
    const returned = printed(app).map((x) => x[1]); // printed only after the call returned
    const { records, torn } = groundTruth();
    const whole = records.map((r) => r['audit.id']);
    const inFile = new Set(whole);
    for (const id of returned) assert.ok(inFile.has(id), `${id} returned but is not a whole line in the file`);
    const t = await waitArchive(whole);
    report('scenario 5 app SIGKILL', t, `${returned.length} calls had returned; ${whole.length} whole lines in the file; torn last line: ${torn.length ? `${Buffer.byteLength(torn[0].tail)} bytes` : 'none'}`);
    assertNoLoss(t, 'scenario 5');
    const got = new Set(archivedIds(t.archive));
    assert.equal(returned.filter((id) => !got.has(id)).length, 0, 'every returned record is archived');
  });

  it('6. every shipped config passes validate (scripts/collector.sh and the binary with the documented feature gates)', async () => {
    const configs = [
      ...fs.readdirSync(CONFIG_DIR).filter((f) => f.endsWith('.yaml') && f !== 'builder.yaml').map((f) => path.join(CONFIG_DIR, f)),
      ...fs.readdirSync(path.join(CONFIG_DIR, 'k8s')).filter((f) => f.endsWith('.collector.yaml')).map((f) => path.join(CONFIG_DIR, 'k8s', f)),
    ];
    for (const name of ['agent.yaml', 'gateway.yaml', 'standalone.yaml', 'k8s/agent.collector.yaml']) {
      assert.ok(configs.includes(path.join(CONFIG_DIR, name)), `${name} is shipped`);
    }
    const script = await new Promise((resolve) => {
      const child = spawn('bash', [path.join(ROOT, 'scripts', 'collector.sh'), 'validate'], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      child.stdout.on('data', (d) => { out += d; });
      child.stderr.on('data', (d) => { out += d; });
      child.on('exit', (code) => resolve({ code, out }));
    });
    assert.equal(script.code, 0, script.out);
    for (const cfg of configs) assert.match(script.out, new RegExp(`^valid: ${path.relative(ROOT, cfg).replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`, 'm'));
    for (const cfg of configs) {
      const r = await validate(cfg);
      assert.ok(r.ok, `${path.relative(ROOT, cfg)} with --feature-gates=${FEATURE_GATES.join(',')}:\n${r.output}`);
    }
    // Every ${env:VAR:-default} knob of a config is set by the helper that starts it in these tests,
    // so a new knob cannot silently default to a production port or directory here.
    const helperEnv = {
      'agent.yaml': await agentEnv({ dir, gateway: 'http://127.0.0.1:9', files: path.join(dir, '*.jsonl') }),
      'gateway.yaml': await gatewayEnv({ dir, backend: 'http://127.0.0.1:9' }),
      'standalone.yaml': await standaloneEnv({ dir, backend: 'http://127.0.0.1:9', files: path.join(dir, '*.jsonl') }),
    };
    for (const [name, env] of Object.entries(helperEnv)) {
      const text = fs.readFileSync(path.join(CONFIG_DIR, name), 'utf8').replace(/^\s*#.*$/gm, '');
      const knobs = [...new Set([...text.matchAll(/\$\{env:([A-Z0-9_]+)/g)].map((m) => m[1]))];
      assert.ok(knobs.length > 5, `${name} has knobs`);
      for (const k of knobs) assert.ok(k in env, `${name}: ${k} is not set by test/helpers/collector.js`);
    }
    console.log(`      [collector] scenario 6 validate: ${configs.length} configs valid (${configs.map((c) => path.relative(CONFIG_DIR, c)).join(', ')})`);
  });

  it('7. standalone collector SIGKILLed and restarted mid-stream: zero loss in its archive', async () => {
    const sa = new Collector('standalone', 'standalone.yaml', await standaloneEnv({ dir, backend: backend.url, files: path.join(dir, 'app', '*.jsonl*') }));
    collectors.push(sa);
    await sa.start();
    const N = 20000;
    const app = startWriter(sa.env.__otlpUrl, { CW_COUNT: N, CW_BATCH: 50, CW_TICK_MS: 20 });
    const kills = await killDuring(app, N, sa, 500);
    await appDone(app);
    const { records } = groundTruth();
    const t = await waitArchive(records.map((r) => r['audit.id']));
    report('scenario 7 standalone SIGKILL + restart', t, `${kills}; damaged archive frames ${t.archive.damaged}`);
    assertNoLoss(t, 'scenario 7');
  });

  it('8. agent queue full while the gateway is down: file_log waits and retries, nothing is dropped', async () => {
    const gw = await makeGateway();
    // 5 requests of at most 100 records: full within a second of the outage.
    const ag = await makeAgent(gw, { AUDITRACE_AGENT_QUEUE_SIZE: 5 });
    await ag.start();
    const N = 5000;
    const app = startWriter(ag.env.__otlpUrl, { CW_COUNT: N, CW_BATCH: 50, CW_TICK_MS: 20 });
    await appDone(app);
    await sleep(2000);
    const rejected = await metric(ag, 'otelcol_exporter_enqueue_failed_log_records');
    const queued = await metric(ag, 'otelcol_exporter_queue_size');
    assert.ok(rejected > 0, 'the queue overflowed (otelcol_exporter_enqueue_failed_log_records > 0)');
    await gw.start();
    const { records } = groundTruth();
    const t = await waitArchive(records.map((r) => r['audit.id']));
    const refused = await metric(ag, 'otelcol_receiver_refused_log_records');
    report('scenario 8 agent queue full (queue_size 5)', t, `queue held ${queued} requests, ${rejected} records refused by the full queue and retried by file_log; file_log dropped ${refused}`);
    assertNoLoss(t, 'scenario 8');
    assert.equal(refused, 0);
  });
});
