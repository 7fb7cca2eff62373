'use strict';
// Real auditrace-collector processes for tests: started from the shipped configs with every
// ${env:VAR} knob pointed at loopback ports and temp dirs, waited on through health_check, killed
// with SIGTERM or SIGKILL, restarted with the same settings. Also reads what they wrote: the zstd
// archive (concatenated frames) and the collector's own Prometheus metrics.
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const http = require('node:http');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const zlib = require('node:zlib');

const ROOT = path.resolve(__dirname, '..', '..');
const BIN = process.env.AUDITRACE_COLLECTOR_BIN || path.join(ROOT, 'collector-build', 'auditrace-collector');
const CONFIG_DIR = path.join(ROOT, 'collector-config');
/**
 * Feature gates every shipped config is started with (collector-config/README.md, "Settings"):
 * the archive's native zstd frames, and file_log handing each batch to the pipeline before its
 * offset is checkpointed (without it an agent kill loses up to 100 records: see "Durability").
 * AUDITRACE_TEST_FEATURE_GATES (comma-separated) overrides, e.g. to reproduce that loss.
 */
const FEATURE_GATES = (process.env.AUDITRACE_TEST_FEATURE_GATES || 'exporter.file.nativeCompression,stanza.synchronousLogEmitter').split(',').map((g) => g.trim()).filter(Boolean);
const gatesFlag = (gates) => `--feature-gates=${gates.join(',')}`;

const collectorAvailable = () => {
  try {
    fs.accessSync(BIN, fs.constants.X_OK);
    return true;
  } catch {
    return false;
  }
};

/**
 * A free port below the kernel's ephemeral range. A port the kernel picks for `listen(0)` comes from
 * that range, so between our check and the collector's bind it can become the source port of any
 * outgoing connection (an agent retrying a gateway that is down makes many): the gateway then
 * failed to start with EADDRINUSE. Ports below the range are never handed out by the kernel.
 */
function freePort() {
  return new Promise((resolve, reject) => {
    const low = ephemeralLow();
    const span = low - PORT_FLOOR;
    let attempts = 0;
    const attempt = () => {
      const port = span > 0 ? PORT_FLOOR + Math.floor(Math.random() * span) : 0;
      if (port !== 0 && given.has(port)) return attempt();
      const srv = net.createServer();
      srv.unref();
      srv.once('error', (err) => {
        if (err.code === 'EADDRINUSE' && ++attempts < 200) attempt();
        else reject(err);
      });
      srv.listen(port, '127.0.0.1', () => {
        const chosen = srv.address().port;
        given.add(chosen);
        srv.close(() => resolve(chosen));
      });
    };
    attempt();
  });
}

const PORT_FLOOR = 20000;
/** Ports handed out by this process: each goes to one listener. */
const given = new Set();

function ephemeralLow() {
  try {
    const low = Number(fs.readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]);
    return Number.isInteger(low) && low > PORT_FLOOR ? low : PORT_FLOOR;
  } catch {
    return 32768; // no /proc: the start of Linux's default range
  }
}

async function freePorts(n) {
  const out = new Set();
  while (out.size < n) out.add(await freePort());
  return [...out];
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function httpGet(url, timeoutMs = 2000) {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { timeout: timeoutMs }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${url} timed out`)));
    req.on('error', reject);
  });
}

/** Every collector started through this module and not yet reaped: afterEach SIGKILLs them. */
const live = new Set();

/**
 * One collector "role" (agent, gateway, standalone): a config, its env, and the process that runs
 * it now. start() may be called again after a kill: same ports, same storage, same archive.
 */
class Collector {
  constructor(name, config, env, { featureGates = FEATURE_GATES } = {}) {
    this.name = name;
    this.featureGates = featureGates;
    this.config = path.isAbsolute(config) ? config : path.join(CONFIG_DIR, config);
    this.env = env;
    this.child = null;
    this.log = '';
    this.starts = 0;
  }

  get healthUrl() { return `http://${this.env.__health}/`; }
  get metricsUrl() { return `http://127.0.0.1:${this.env.__metricsPort}/metrics`; }

  /** Spawns the process and waits until health_check answers 200 (the pipelines are running). */
  async start({ timeoutMs = 30000 } = {}) {
    if (this.child && this.child.exitCode === null && this.child.signalCode === null) {
      throw new Error(`${this.name} is already running (pid ${this.child.pid})`);
    }
    const env = { ...process.env };
    for (const k of Object.keys(env)) if (k.startsWith('AUDITRACE_') || k.startsWith('OTEL_')) delete env[k];
    for (const [k, v] of Object.entries(this.env)) if (!k.startsWith('__')) env[k] = String(v);
    this.starts++;
    this.log += `\n===== ${this.name} start #${this.starts} at ${new Date().toISOString()} =====\n`;
    const child = spawn(BIN, [gatesFlag(this.featureGates), `--config=${this.config}`], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    live.add(child);
    const append = (d) => {
      this.log += d;
      // Bounded: a collector retrying forever logs a lot.
      if (this.log.length > 4e6) this.log = this.log.slice(-2e6);
    };
    child.stdout.on('data', append);
    child.stderr.on('data', append);
    child.exited = new Promise((resolve) => child.on('exit', (code, signal) => { live.delete(child); resolve({ code, signal }); }));
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (child.exitCode !== null || child.signalCode !== null) {
        throw new Error(`${this.name} exited during start-up (${child.exitCode ?? child.signalCode}):\n${this.tail()}`);
      }
      try {
        const r = await httpGet(this.healthUrl, 1000);
        if (r.status === 200) return this;
      } catch { /* not listening yet */ }
      if (Date.now() > deadline) throw new Error(`${this.name} not healthy within ${timeoutMs} ms:\n${this.tail()}`);
      await sleep(100);
    }
  }

  get running() { return Boolean(this.child && this.child.exitCode === null && this.child.signalCode === null); }

  /** Sends `signal`; waits for the exit (SIGKILLs after graceMs if SIGTERM is not enough). */
  async stop(signal = 'SIGTERM', graceMs = 20000) {
    const child = this.child;
    if (!child || !this.running) return child ? child.exited : { code: null, signal: null };
    child.kill(signal);
    const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
    const r = await child.exited;
    clearTimeout(timer);
    return r;
  }

  kill() { return this.stop('SIGKILL'); }

  /** The collector's own metrics (Prometheus text), as { 'name{labels}': value } plus sum(name). */
  async metrics() {
    const { body } = await httpGet(this.metricsUrl);
    return parseProm(body);
  }

  tail(n = 60) { return this.log.split('\n').slice(-n).join('\n'); }
}

function parseProm(text) {
  const series = {};
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = line.match(/^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)/);
    if (m) series[m[1] + (m[2] || '')] = Number(m[3]);
  }
  return {
    series,
    /** Sum over every series of a metric name (all labels); 0 when absent. */
    sum(name) {
      let s = 0;
      for (const [k, v] of Object.entries(series)) if (k === name || k.startsWith(`${name}{`)) s += v;
      return s;
    },
  };
}

/**
 * Environment of an agent (agent.yaml) on fresh loopback ports, with its storage under `dir`.
 * `gateway`: the gateway's OTLP/HTTP URL; `files`: the glob of audit files to tail.
 */
async function agentEnv({ dir, gateway, files, retryMaxInterval = '2s', pollInterval = '50ms', extra = {} }) {
  const [otlp, health, metrics] = await freePorts(3);
  return {
    AUDITRACE_AGENT_OTLP_ENDPOINT: `127.0.0.1:${otlp}`,
    AUDITRACE_AGENT_HEALTH_ENDPOINT: `127.0.0.1:${health}`,
    AUDITRACE_AGENT_METRICS_HOST: '127.0.0.1',
    AUDITRACE_AGENT_METRICS_PORT: metrics,
    AUDITRACE_AGENT_STORAGE_DIR: path.join(dir, 'agent'),
    AUDITRACE_AGENT_POLL_INTERVAL: pollInterval,
    AUDITRACE_AGENT_RETRY_MAX_INTERVAL: retryMaxInterval,
    AUDITRACE_AGENT_QUEUE_SIZE: 100000,
    AUDITRACE_GATEWAY_ENDPOINT: gateway,
    AUDITRACE_AUDIT_FILES: files,
    __health: `127.0.0.1:${health}`,
    __metricsPort: metrics,
    __otlpUrl: `http://127.0.0.1:${otlp}`,
    ...extra,
  };
}

/** Environment of a gateway (gateway.yaml): archive and queue under `dir`, backend at `backend`. */
async function gatewayEnv({ dir, backend, extra = {} }) {
  const [otlp, grpc, health, metrics, prom] = await freePorts(5);
  return {
    AUDITRACE_GATEWAY_OTLP_ENDPOINT: `127.0.0.1:${otlp}`,
    AUDITRACE_GATEWAY_OTLP_GRPC_ENDPOINT: `127.0.0.1:${grpc}`,
    AUDITRACE_GATEWAY_HEALTH_ENDPOINT: `127.0.0.1:${health}`,
    AUDITRACE_GATEWAY_METRICS_HOST: '127.0.0.1',
    AUDITRACE_GATEWAY_METRICS_PORT: metrics,
    AUDITRACE_GATEWAY_PROMETHEUS_ENDPOINT: `127.0.0.1:${prom}`,
    AUDITRACE_GATEWAY_STORAGE_DIR: path.join(dir, 'gateway'),
    AUDITRACE_GATEWAY_QUEUE_SIZE: 100000,
    AUDITRACE_ARCHIVE_DIR: path.join(dir, 'archive'),
    AUDITRACE_ARCHIVE_MAX_MEGABYTES: 100,
    AUDITRACE_BACKEND_ENDPOINT: backend,
    __health: `127.0.0.1:${health}`,
    __metricsPort: metrics,
    __otlpUrl: `http://127.0.0.1:${otlp}`,
    ...extra,
  };
}

/** Environment of the standalone collector (standalone.yaml). */
async function standaloneEnv({ dir, backend, files, pollInterval = '50ms', extra = {} }) {
  const [otlp, health, metrics, prom] = await freePorts(4);
  return {
    AUDITRACE_STANDALONE_OTLP_ENDPOINT: `127.0.0.1:${otlp}`,
    AUDITRACE_STANDALONE_HEALTH_ENDPOINT: `127.0.0.1:${health}`,
    AUDITRACE_STANDALONE_METRICS_HOST: '127.0.0.1',
    AUDITRACE_STANDALONE_METRICS_PORT: metrics,
    AUDITRACE_STANDALONE_PROMETHEUS_ENDPOINT: `127.0.0.1:${prom}`,
    AUDITRACE_STANDALONE_STORAGE_DIR: path.join(dir, 'standalone'),
    AUDITRACE_STANDALONE_POLL_INTERVAL: pollInterval,
    AUDITRACE_STANDALONE_QUEUE_SIZE: 100000,
    AUDITRACE_ARCHIVE_DIR: path.join(dir, 'archive'),
    AUDITRACE_ARCHIVE_MAX_MEGABYTES: 100,
    AUDITRACE_BACKEND_ENDPOINT: backend,
    AUDITRACE_AUDIT_FILES: files,
    __health: `127.0.0.1:${health}`,
    __metricsPort: metrics,
    __otlpUrl: `http://127.0.0.1:${otlp}`,
    ...extra,
  };
}

/** SIGKILLs every collector still running (for after/afterEach, whatever the test did). */
async function killAll() {
  const waits = [];
  for (const child of live) {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      waits.push(child.exited);
    }
  }
  live.clear();
  await Promise.all(waits);
}

/** Runs `auditrace-collector validate` on a config; resolves { ok, output }. */
function validate(config, { env = {}, featureGates = FEATURE_GATES } = {}) {
  return new Promise((resolve) => {
    const child = spawn(BIN, ['validate', gatesFlag(featureGates), `--config=${config}`], {
      env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (d) => { out += d; });
    child.stderr.on('data', (d) => { out += d; });
    child.on('exit', (code) => resolve({ ok: code === 0, code, output: out }));
  });
}

// ---- archive -----------------------------------------------------------------------------------

const ZSTD_MAGIC = Buffer.from([0x28, 0xb5, 0x2f, 0xfd]);

/**
 * Length of the zstd frame at `pos` (RFC 8878 §3.1.1), or -1 when it runs past the end of `buf`
 * or is malformed. Skippable frames count as frames.
 */
function frameLength(buf, pos) {
  if (pos + 4 > buf.length) return -1;
  const magic = buf.readUInt32LE(pos);
  if ((magic & 0xfffffff0) === 0x184d2a50) {
    if (pos + 8 > buf.length) return -1;
    const len = 8 + buf.readUInt32LE(pos + 4);
    return pos + len <= buf.length ? len : -1;
  }
  if (magic !== 0xfd2fb528) return -1;
  let p = pos + 4;
  if (p >= buf.length) return -1;
  const fhd = buf[p++];
  const fcsFlag = fhd >> 6;
  const single = (fhd >> 5) & 1;
  const checksum = (fhd >> 2) & 1;
  const dictFlag = fhd & 3;
  if ((fhd >> 3) & 1) return -1; // reserved bit
  p += single ? 0 : 1;
  p += [0, 1, 2, 4][dictFlag];
  p += [single ? 1 : 0, 2, 4, 8][fcsFlag];
  for (;;) {
    if (p + 3 > buf.length) return -1;
    const bh = buf[p] | (buf[p + 1] << 8) | (buf[p + 2] << 16);
    p += 3;
    const last = bh & 1;
    const type = (bh >> 1) & 3;
    const size = bh >>> 3;
    if (type === 3) return -1;
    p += type === 1 ? 1 : size;
    if (p > buf.length) return -1;
    if (last) break;
  }
  p += checksum ? 4 : 0;
  return p <= buf.length ? p - pos : -1;
}

/**
 * Splits a file of concatenated zstd frames and decompresses each one (Node's decoder stops after
 * the first frame). Damaged or cut frames (a kill in the middle of a write) are skipped by
 * resynchronising on the next frame magic, and counted.
 */
function decompressFrames(buf) {
  const parts = [];
  let damaged = 0;
  let pos = 0;
  while (pos < buf.length) {
    const len = frameLength(buf, pos);
    let ok = false;
    if (len > 0) {
      try {
        if (buf.readUInt32LE(pos) === 0xfd2fb528) parts.push(zlib.zstdDecompressSync(buf.subarray(pos, pos + len)));
        ok = true;
      } catch { /* corrupt: resync below */ }
    }
    if (ok) {
      pos += len;
      continue;
    }
    damaged++;
    const next = buf.indexOf(ZSTD_MAGIC, pos + 1);
    pos = next < 0 ? buf.length : next;
  }
  return { text: Buffer.concat(parts).toString('utf8'), frames: parts.length, damaged };
}

const anyValue = (v) => {
  if (v == null) return null;
  if ('stringValue' in v) return v.stringValue;
  if ('intValue' in v) return Number(v.intValue);
  if ('doubleValue' in v) return Number(v.doubleValue);
  if ('boolValue' in v) return v.boolValue;
  if ('arrayValue' in v) return (v.arrayValue.values || []).map(anyValue);
  if ('kvlistValue' in v) return attrs(v.kvlistValue.values);
  if ('bytesValue' in v) return v.bytesValue;
  return null;
};
const attrs = (kvs) => Object.fromEntries((kvs || []).map((kv) => [kv.key, anyValue(kv.value)]));

/**
 * Reads every `<prefix>*.zst` file in `dir` (the live file and lumberjack backups): each line is an
 * OTLP/JSON Export{Logs,Trace}ServiceRequest. Returns flat log records / spans with attributes and
 * resource, plus the frame counts.
 */
function readArchive(dir, prefix) {
  const out = { logs: [], spans: [], frames: 0, damaged: 0, badLines: 0, files: [] };
  let names = [];
  try {
    names = fs.readdirSync(dir).filter((f) => f.startsWith(prefix) && f.endsWith('.zst')).sort();
  } catch {
    return out;
  }
  for (const name of names) {
    const { text, frames, damaged } = decompressFrames(fs.readFileSync(path.join(dir, name)));
    out.files.push(name);
    out.frames += frames;
    out.damaged += damaged;
    for (const line of text.split('\n')) {
      if (!line) continue;
      let req;
      try {
        req = JSON.parse(line);
      } catch {
        out.badLines++;
        continue;
      }
      for (const rl of req.resourceLogs || []) {
        const resource = attrs(rl.resource && rl.resource.attributes);
        for (const sl of rl.scopeLogs || []) {
          for (const r of sl.logRecords || []) {
            out.logs.push({ attributes: attrs(r.attributes), traceId: (r.traceId || '').toLowerCase(), spanId: (r.spanId || '').toLowerCase(), eventName: r.eventName || '', severityNumber: r.severityNumber || 0, timeUnixNano: r.timeUnixNano, body: anyValue(r.body), resource });
          }
        }
      }
      for (const rs of req.resourceSpans || []) {
        const resource = attrs(rs.resource && rs.resource.attributes);
        for (const ss of rs.scopeSpans || []) {
          for (const s of ss.spans || []) {
            out.spans.push({ traceId: (s.traceId || '').toLowerCase(), spanId: (s.spanId || '').toLowerCase(), name: s.name, kind: s.kind, attributes: attrs(s.attributes), resource });
          }
        }
      }
    }
  }
  return out;
}

/**
 * Counts `expectedIds` (the ground truth) against `receivedIds` (every audit.id seen, repeats
 * included): received = distinct expected ids found, missing = expected ids never seen,
 * duplicates = extra copies, unexpected = ids seen that were never expected.
 */
function tally(expectedIds, receivedIds) {
  const expected = new Set(expectedIds);
  const seen = new Map();
  for (const id of receivedIds) seen.set(id, (seen.get(id) || 0) + 1);
  let received = 0;
  let duplicates = 0;
  const missing = [];
  for (const id of expected) {
    const n = seen.get(id) || 0;
    if (n > 0) received++;
    else missing.push(id);
  }
  for (const n of seen.values()) duplicates += n - 1;
  const unexpected = [...seen.keys()].filter((id) => !expected.has(id));
  return { sent: expected.size, received, duplicates, missing, unexpected, copies: receivedIds.length };
}

/** Audit records of local audit files (ground truth): whole lines only; a torn last line is returned apart. */
function readAuditFiles(files) {
  const records = [];
  const torn = [];
  for (const file of files) {
    let text;
    try {
      text = fs.readFileSync(file, 'utf8');
    } catch {
      continue;
    }
    const end = text.lastIndexOf('\n') + 1;
    if (end < text.length) torn.push({ file, tail: text.slice(end) });
    for (const line of text.slice(0, end).split('\n')) {
      if (!line) continue;
      records.push(JSON.parse(line));
    }
  }
  return { records, torn };
}

function tmpDir(prefix = 'auditrace-collector-') {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

module.exports = {
  BIN, CONFIG_DIR, FEATURE_GATES, Collector, collectorAvailable, freePort, freePorts, sleep, httpGet,
  agentEnv, gatewayEnv, standaloneEnv, killAll, validate, parseProm,
  frameLength, decompressFrames, readArchive, readAuditFiles, tally, tmpDir,
};
