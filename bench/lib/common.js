'use strict';
// Shared helpers of the benchmark suite: child processes (optionally pinned to a CPU), a clean
// environment, statistics, the OTLP sink and the IPC-controlled apps.
const { spawn, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');

const ROOT = path.resolve(__dirname, '..', '..');
const BENCH = path.join(ROOT, 'bench');
const APPS = path.join(BENCH, 'apps');
const NODE = process.execPath;

/** The auditrace preload and upstream's, as a user would write them. */
const PRELOADS = {
  plain: [],
  // Resolved here, so it loads whatever the working directory of the child is.
  upstream: ['--require', require.resolve('@opentelemetry/auto-instrumentations-node/register', { paths: [ROOT] })],
  auditrace: ['--require', path.join(ROOT, 'register.js')],
};
const LABELS = { plain: 'plain node', upstream: 'upstream register', auditrace: 'auditrace' };

/** Variables of the parent that would change what a preload does; never passed to a child. */
function cleanEnv(extra = {}) {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (k.startsWith('OTEL_') || k.startsWith('AUDITRACE_') || k.startsWith('K8S_') || k === 'NODE_OPTIONS') continue;
    env[k] = v;
  }
  return { ...env, ...extra };
}

// ---- CPU placement -------------------------------------------------------------------------

function allowedCpus() {
  try {
    const line = fs.readFileSync('/proc/self/status', 'utf8').split('\n').find((l) => l.startsWith('Cpus_allowed_list:'));
    const list = line.split(':')[1].trim();
    const cpus = [];
    for (const part of list.split(',')) {
      const [a, b] = part.split('-').map(Number);
      for (let i = a; i <= (b ?? a); i++) cpus.push(i);
    }
    return cpus;
  } catch {
    return [];
  }
}

/**
 * With taskset and at least two CPUs: the process under test gets the first CPU, the load
 * generator and the sink the second. Otherwise nothing is pinned (and the report says so).
 */
const placement = (() => {
  const cpus = allowedCpus();
  const taskset = spawnSync('taskset', ['-c', String(cpus[0] ?? 0), 'true']).status === 0;
  if (!taskset || cpus.length < 2) {
    return { pinned: false, app: null, load: null, note: `not pinned (${taskset ? `${cpus.length} CPU allowed` : 'taskset unavailable'}): server, load generator and sink share the CPUs` };
  }
  return {
    pinned: true, app: cpus[0], load: cpus[1],
    note: `server under test pinned to CPU ${cpus[0]} (\`taskset -c ${cpus[0]}\`); load generator (autocannon) and OTLP sink pinned to CPU ${cpus[1]} (\`taskset -c ${cpus[1]}\`)`,
  };
})();

/** [command, args] running `args` (node arguments) on the CPU of `role` ('app' | 'load' | null: any CPU). */
function pinned(role, nodeArgs) {
  const cpu = placement.pinned && role ? placement[role] : null;
  return cpu === null || cpu === undefined ? [NODE, nodeArgs] : ['taskset', ['-c', String(cpu), NODE, ...nodeArgs]];
}

// ---- statistics ----------------------------------------------------------------------------

function median(xs) {
  const v = xs.filter((x) => typeof x === 'number' && Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return NaN;
  const m = v.length >> 1;
  return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
}

function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

function machine() {
  let model = 'unknown';
  try {
    const m = fs.readFileSync('/proc/cpuinfo', 'utf8').match(/^model name\s*:\s*(.+)$/m);
    if (m) model = m[1].trim();
  } catch {
    model = os.cpus()[0]?.model ?? 'unknown';
  }
  let mhz = '';
  try {
    const m = fs.readFileSync('/proc/cpuinfo', 'utf8').match(/^cpu MHz\s*:\s*(.+)$/m);
    if (m) mhz = `${Math.round(Number(m[1]))} MHz`;
  } catch { /* not on Linux */ }
  const nproc = (() => {
    const r = spawnSync('nproc', [], { encoding: 'utf8' });
    return r.status === 0 ? Number(r.stdout.trim()) : os.availableParallelism();
  })();
  return {
    nproc,
    model,
    mhz,
    memory: `${(os.totalmem() / 2 ** 30).toFixed(1)} GiB`,
    node: process.version,
    platform: `${os.type()} ${os.release()} ${os.arch()}`,
    date: new Date().toISOString(),
  };
}

// ---- child processes -----------------------------------------------------------------------

/** Runs a node script to completion; resolves { code, signal, stdout, stderr, ms }. */
function runNode(role, nodeArgs, { env, cwd, timeoutMs = 120_000 } = {}) {
  return new Promise((resolve) => {
    const [cmd, args] = pinned(role, nodeArgs);
    const t0 = process.hrtime.bigint();
    const child = spawn(cmd, args, { env: env ?? cleanEnv(), cwd: cwd ?? ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => { stdout += d; });
    child.stderr.on('data', (d) => { stderr += d; });
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, ms: Number(process.hrtime.bigint() - t0) / 1e6 });
    });
  });
}

/** Last JSON line of a child's stdout. */
function lastJson(stdout) {
  const lines = stdout.trim().split('\n').reverse();
  for (const l of lines) {
    try {
      return JSON.parse(l);
    } catch { /* not JSON */ }
  }
  throw new Error(`no JSON in output: ${stdout.slice(-500)}`);
}

/**
 * A long-running child that talks over IPC: apps report { type: 'ready', port }, answer
 * { cmd: 'stats' | 'reset' } and leave on { cmd: 'exit' } (a normal exit, so --cpu-prof writes).
 */
function startIpcChild(role, nodeArgs, { env, cwd, readyTimeoutMs = 30_000 } = {}) {
  const [cmd, args] = pinned(role, nodeArgs);
  const child = spawn(cmd, args, { env: env ?? cleanEnv(), cwd: cwd ?? ROOT, stdio: ['ignore', 'pipe', 'pipe', 'ipc'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => { stdout += d; });
  child.stderr.on('data', (d) => { stderr += d; });
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  let seq = 0;
  const pending = new Map();
  const ready = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${nodeArgs.join(' ')} not ready within ${readyTimeoutMs} ms\n${stderr}`)), readyTimeoutMs);
    exited.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Error(`${nodeArgs.join(' ')} exited (${code ?? signal}) before ready\n${stderr}`));
    });
    child.on('message', (m) => {
      if (m && m.type === 'ready') {
        clearTimeout(timer);
        resolve(m);
      }
    });
  });
  ready.catch(() => undefined);
  child.on('message', (m) => {
    if (!m || typeof m !== 'object') return;
    if (m.id !== undefined && pending.has(m.id)) {
      pending.get(m.id)(m);
      pending.delete(m.id);
    }
  });
  const request = (cmdName, extra = {}) => new Promise((resolve, reject) => {
    const id = ++seq;
    pending.set(id, resolve);
    try {
      child.send({ cmd: cmdName, id, ...extra });
    } catch (err) {
      pending.delete(id);
      reject(err);
    }
  });
  return {
    child,
    ready,
    exited,
    get stdout() { return stdout; },
    get stderr() { return stderr; },
    stats: () => request('stats'),
    reset: () => request('reset'),
    async stop(timeoutMs = 15_000) {
      if (child.exitCode !== null || child.signalCode !== null) return exited;
      try { child.send({ cmd: 'exit' }); } catch { child.kill('SIGTERM'); }
      const t = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
      const r = await exited;
      clearTimeout(t);
      return r;
    },
  };
}

// ---- the OTLP sink ---------------------------------------------------------------------------

/** Starts bench/sink.js (a separate process on the load generator's CPU); resolves a handle. */
async function startSink() {
  const [cmd, args] = pinned('load', [path.join(BENCH, 'sink.js')]);
  const child = spawn(cmd, args, { env: cleanEnv(), stdio: ['ignore', 'pipe', 'inherit'] });
  const port = await new Promise((resolve, reject) => {
    let buf = '';
    child.stdout.on('data', (d) => {
      buf += d;
      const m = buf.match(/listening (\d+)/);
      if (m) resolve(Number(m[1]));
    });
    child.on('exit', (code) => reject(new Error(`sink exited (${code})`)));
  });
  const url = `http://127.0.0.1:${port}`;
  const call = async (p, method = 'GET') => {
    const res = await fetch(url + p, { method });
    return res.json();
  };
  return {
    url,
    port,
    stats: () => call('/__sink/stats'),
    reset: () => call('/__sink/reset', 'POST'),
    stop: () => new Promise((resolve) => { child.once('exit', resolve); child.kill('SIGTERM'); }),
  };
}

// ---- load ------------------------------------------------------------------------------------

/** One autocannon run in its own process (bench/load.js) on the load generator's CPU. */
async function load(opts) {
  const r = await runNode('load', [path.join(BENCH, 'load.js'), JSON.stringify(opts)], {
    timeoutMs: (opts.duration + 60) * 1000,
  });
  if (r.code !== 0) throw new Error(`load generator failed (${r.code ?? r.signal}): ${r.stderr.slice(-1000)}`);
  return lastJson(r.stdout);
}

/**
 * Occurrences of `needle` in an audit file and its rotated predecessors (file.1, file.2, …):
 * auditrace renames the file at AUDITRACE_AUDIT_MAX_FILE_BYTES (100 MiB by default).
 */
function countInAuditFiles(file, needle = '"event.name":"http_request"') {
  let n = 0;
  for (let i = 0; ; i++) {
    const f = i === 0 ? file : `${file}.${i}`;
    if (!fs.existsSync(f)) {
      if (i === 0) continue;
      break;
    }
    const text = fs.readFileSync(f, 'utf8');
    for (let at = text.indexOf(needle); at !== -1; at = text.indexOf(needle, at + 1)) n++;
  }
  return n;
}

function tmpDir(prefix) {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

module.exports = {
  ROOT, BENCH, APPS, NODE, PRELOADS, LABELS, placement, pinned, cleanEnv, median, sleep, freePort, machine,
  runNode, lastJson, startIpcChild, startSink, load, tmpDir, countInAuditFiles,
};
