'use strict';
// Runs a fixture app the way a user does: `node --require auditrace/register app.js` in a child
// process, with a clean environment, and collects what it prints.
const { spawn } = require('node:child_process');
const path = require('node:path');

const ROOT = path.resolve(__dirname, '..', '..');
const FIXTURES = path.join(ROOT, 'test', 'fixtures');

/** Variables of the parent that would change what auditrace does; never passed to an app. */
function cleanEnv() {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (k.startsWith('OTEL_') || k.startsWith('AUDITRACE_') || k.startsWith('K8S_') || k === 'NODE_OPTIONS') continue;
    if (['POD_NAME', 'POD_UID', 'POD_NAMESPACE', 'NODE_NAME', 'CONTAINER_NAME'].includes(k)) continue;
    env[k] = v;
  }
  return env;
}

let auditFiles = 0;
function defaultAuditFile() {
  return path.join(require('node:os').tmpdir(), `auditrace-test-${process.pid}-${++auditFiles}.jsonl`);
}

/**
 * @param {string} app path relative to test/fixtures, or absolute
 * @param {{ preload?: 'require'|'import'|'none', env?: object, args?: string[], cwd?: string, nodeArgs?: string[] }} opts
 */
function startApp(app, opts = {}) {
  const preload = opts.preload ?? 'require';
  const flags = preload === 'none' ? [] : [`--${preload}`, preload === 'require' ? path.join(ROOT, 'register.js') : path.join(ROOT, 'register.mjs')];
  const file = path.isAbsolute(app) ? app : path.join(FIXTURES, app);
  const child = spawn(process.execPath, [...(opts.nodeArgs ?? []), ...flags, file, ...(opts.args ?? [])], {
    cwd: opts.cwd ?? path.dirname(file),
    // Apps that audit without naming a file would otherwise leave one in the fixtures folder.
    env: { ...cleanEnv(), AUDITRACE_AUDIT_FILE: defaultAuditFile(), ...(opts.env ?? {}) },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  const waiters = [];
  const check = () => {
    for (const w of [...waiters]) {
      const m = (w.stream === 'stdout' ? stdout : stderr).match(w.re);
      if (m) { waiters.splice(waiters.indexOf(w), 1); clearTimeout(w.timer); w.resolve(m); }
    }
  };
  child.stdout.on('data', (d) => { stdout += d; check(); });
  child.stderr.on('data', (d) => { stderr += d; check(); });
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal, stdout, stderr })));
  return {
    child,
    get stdout() { return stdout; },
    get stderr() { return stderr; },
    exited,
    /** Resolves with the match once `re` appears on the stream. */
    waitForOutput(re, { stream = 'stdout', timeoutMs = 15000 } = {}) {
      return new Promise((resolve, reject) => {
        const w = { re, stream, resolve };
        w.timer = setTimeout(() => {
          waiters.splice(waiters.indexOf(w), 1);
          reject(new Error(`timed out waiting for ${re} on ${stream}\n--- stdout:\n${stdout}\n--- stderr:\n${stderr}`));
        }, timeoutMs);
        waiters.push(w);
        check();
      });
    },
    kill(signal = 'SIGTERM') { child.kill(signal); return exited; },
  };
}

/** Runs an app to completion. */
async function runApp(app, opts = {}) {
  const a = startApp(app, opts);
  const timeoutMs = opts.timeoutMs ?? 30000;
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => { a.child.kill('SIGKILL'); reject(new Error(`${app} did not exit within ${timeoutMs} ms\n${a.stderr}`)); }, timeoutMs);
  });
  try {
    return await Promise.race([a.exited, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

module.exports = { startApp, runApp, cleanEnv, ROOT, FIXTURES };
