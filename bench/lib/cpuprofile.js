'use strict';
// Summarises a V8 .cpuprofile (node --cpu-prof): self time per function and per package/file.
const fs = require('node:fs');
const path = require('node:path');
const { ROOT } = require('./common');

function shortUrl(url) {
  if (!url) return '';
  let u = url.startsWith('file://') ? decodeURIComponent(url.slice(7)) : url;
  if (u.startsWith(ROOT + path.sep)) u = u.slice(ROOT.length + 1);
  return u;
}

/** Files of the build whose maps lead back to the sources: tsc's output and the bundle (scripts/bundle.js). */
const MAPPED = /^dist\/(lib\/.*|auditrace|instrumentations\/[^/]+)\.js$/;

/**
 * dist/lib/x.js or dist/auditrace.js at line:col → lib/x.ts:line (or the npm package file the
 * bundle took it from) through the build's source maps, as shown in reports.
 */
const maps = new Map();
function sourceLocation(url, line0, col0) {
  const u = shortUrl(url);
  if (!MAPPED.test(u)) return `${u}:${line0 + 1}`;
  try {
    if (!maps.has(u)) {
      const { SourceMap } = require('node:module');
      maps.set(u, new SourceMap(JSON.parse(fs.readFileSync(path.join(ROOT, `${u}.map`), 'utf8'))));
    }
    const e = maps.get(u).findEntry(line0, Math.max(0, col0));
    if (e && e.originalSource) {
      const src = path.relative(ROOT, path.resolve(path.dirname(path.join(ROOT, u)), e.originalSource.replace(/^file:\/\//, '')));
      return `${src}:${e.originalLine + 1}`;
    }
  } catch { /* no map: the compiled location */ }
  return `${u}:${line0 + 1}`;
}

/** Whether a (mapped) location is auditrace's own code. */
const isOwn = (loc) => loc.startsWith('lib/') || loc.startsWith('dist/lib/');

/** Where a function lives, coarsely: an npm package, an auditrace file, Node itself, V8. */
function groupOf(url, functionName, loc) {
  if (!url) return functionName.startsWith('(') ? functionName : '(native / V8 builtins)';
  const u = loc ? loc.replace(/:\d+$/, '') : shortUrl(url);
  const nm = u.lastIndexOf('node_modules/');
  if (nm >= 0) {
    const rest = u.slice(nm + 'node_modules/'.length).split('/');
    return rest[0].startsWith('@') ? `${rest[0]}/${rest[1]}` : rest[0];
  }
  if (u.startsWith('lib/')) return `auditrace ${u}`;
  if (u.startsWith('dist/lib/')) return `auditrace ${u.replace(/^dist\//, '').replace(/\.js$/, '.ts')}`;
  if (u.startsWith('node:')) return 'node: (Node.js core)';
  if (u.startsWith('bench/')) return 'benchmark app';
  return u;
}

/**
 * @returns {{ totalMs: number, idleMs: number, functions: {name, file, selfMs, pct}[], groups: {group, selfMs, pct}[] }}
 * `pct` is of the busy (non-idle) time.
 */
function summarize(file, top = 10, { fromUs = -Infinity, toUs = Infinity } = {}) {
  const prof = JSON.parse(fs.readFileSync(file, 'utf8'));
  const byId = new Map(prof.nodes.map((n) => [n.id, n]));
  const self = new Map();
  const samples = prof.samples ?? [];
  const deltas = prof.timeDeltas ?? [];
  // Sample times are on the monotonic clock process.hrtime() uses, so a window marked by the
  // app (e.g. "load starts now") selects the samples of the measurement only.
  let t = prof.startTime;
  for (let i = 0; i < samples.length; i++) {
    t += deltas[i] ?? 0;
    if (t < fromUs || t > toUs) continue;
    // timeDeltas[i] is the time since the previous sample: the time spent where sample i-1 was.
    const dt = (deltas[i + 1] ?? 0) / 1000;
    self.set(samples[i], (self.get(samples[i]) ?? 0) + dt);
  }
  // Inclusive time of auditrace's own functions (dist/lib): which of its entry points the time is under.
  const parent = new Map();
  for (const n of prof.nodes) for (const ch of n.children ?? []) parent.set(ch, n.id);
  const own = new Map();
  for (const [id, ms] of self) {
    const seen = new Set();
    for (let cur = id; cur !== undefined; cur = parent.get(cur)) {
      const cf = byId.get(cur)?.callFrame;
      if (!cf || !MAPPED.test(shortUrl(cf.url))) continue;
      const loc = sourceLocation(cf.url, cf.lineNumber, cf.columnNumber);
      if (!isOwn(loc)) continue;
      const key = `${cf.functionName || '(anonymous)'}\u0000${loc}`;
      if (seen.has(key)) continue;
      seen.add(key);
      own.set(key, (own.get(key) ?? 0) + ms);
    }
  }
  const fns = new Map();
  const groups = new Map();
  let total = 0;
  let idle = 0;
  for (const [id, ms] of self) {
    const n = byId.get(id);
    if (!n) continue;
    const cf = n.callFrame;
    const name = cf.functionName || '(anonymous)';
    total += ms;
    if (name === '(idle)') {
      idle += ms;
      continue;
    }
    const fileLoc = cf.url ? sourceLocation(cf.url, cf.lineNumber, cf.columnNumber) : '';
    const key = `${name}\u0000${fileLoc}`;
    fns.set(key, (fns.get(key) ?? 0) + ms);
    const g = groupOf(cf.url, name, fileLoc);
    groups.set(g, (groups.get(g) ?? 0) + ms);
  }
  const busy = total - idle || 1;
  const sorted = (m) => [...m.entries()].sort((a, b) => b[1] - a[1]);
  return {
    totalMs: total,
    idleMs: idle,
    busyMs: total - idle,
    functions: sorted(fns).slice(0, top).map(([k, ms]) => {
      const [name, loc] = k.split('\u0000');
      return { name, file: loc, selfMs: ms, pct: (100 * ms) / busy };
    }),
    groups: sorted(groups).slice(0, top).map(([group, ms]) => ({ group, selfMs: ms, pct: (100 * ms) / busy })),
    auditrace: sorted(own).slice(0, 12).map(([k, ms]) => {
      const [name, loc] = k.split('\u0000');
      return { name, file: loc, inclMs: ms, pct: (100 * ms) / busy };
    }),
  };
}

/** The newest .cpuprofile in a directory. */
function newestProfile(dir) {
  const files = fs.readdirSync(dir).filter((f) => f.endsWith('.cpuprofile'))
    .map((f) => ({ f, t: fs.statSync(path.join(dir, f)).mtimeMs })).sort((a, b) => b.t - a.t);
  return files.length ? path.join(dir, files[0].f) : null;
}

module.exports = { summarize, newestProfile, shortUrl };
