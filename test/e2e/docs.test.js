'use strict';
// The documentation is executable where it says so, and its links lead somewhere:
//  - every ```sh / ```bash block directly preceded by `<!-- runnable -->` in README.md and
//    docs/*.md runs with `bash -e` from the repository root, in a clean environment (the Node that
//    runs the tests first on PATH, AUDITRACE_AUDIT_FILE in a temp directory, the OTLP endpoint a
//    local test receiver), finishes by itself within the timeout, and exits 0;
//  - every relative link (and #anchor) in README.md, docs/*.md and examples/*/README.md resolves;
//  - the README's Documentation section links every doc and every example.
const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { startOtlpReceiver } = require('../helpers/otlp-receiver');
const { cleanEnv, ROOT } = require('../helpers/run-app');

const BLOCK_TIMEOUT_MS = 30000;
const MARKER = '<!-- runnable -->';
const RUNNABLE_LANGS = new Set(['sh', 'bash']);

const docsDir = path.join(ROOT, 'docs');
const docFiles = fs.existsSync(docsDir)
  ? fs.readdirSync(docsDir).filter((f) => f.endsWith('.md')).sort().map((f) => path.join('docs', f))
  : [];
const runnableSources = ['README.md', ...docFiles];
const exampleReadmes = fs.existsSync(path.join(ROOT, 'examples'))
  ? fs.readdirSync(path.join(ROOT, 'examples'), { withFileTypes: true })
    .filter((d) => d.isDirectory() && fs.existsSync(path.join(ROOT, 'examples', d.name, 'README.md')))
    .map((d) => path.join('examples', d.name, 'README.md')).sort()
  : [];
const linkSources = [...runnableSources, ...exampleReadmes];

/**
 * Fenced code blocks of a Markdown file: { lang, body, line (1-based, of the opening fence),
 * runnable (the previous line is the marker) }, plus markers that precede no sh/bash block.
 */
function codeBlocks(text) {
  const lines = text.split('\n');
  const blocks = [];
  const strayMarkers = [];
  for (let i = 0; i < lines.length; i++) {
    const open = lines[i].match(/^ {0,3}(`{3,}|~{3,})\s*([\w+-]*)/);
    if (!open) {
      if (lines[i].trim() === MARKER) {
        const next = lines[i + 1]?.match(/^ {0,3}(`{3,}|~{3,})\s*([\w+-]*)/);
        if (!next || !RUNNABLE_LANGS.has(next[2].toLowerCase())) strayMarkers.push(i + 1);
      }
      continue;
    }
    const fence = open[1];
    const lang = open[2].toLowerCase();
    const body = [];
    let j = i + 1;
    for (; j < lines.length; j++) {
      const close = lines[j].match(/^ {0,3}(`{3,}|~{3,})\s*$/);
      if (close && close[1][0] === fence[0] && close[1].length >= fence.length) break;
      body.push(lines[j]);
    }
    blocks.push({ lang, body: body.join('\n'), line: i + 1, runnable: i > 0 && lines[i - 1].trim() === MARKER });
    i = j;
  }
  return { blocks, strayMarkers };
}

/** GitHub's heading anchors: lower case, punctuation dropped, spaces to dashes, duplicates numbered. */
function anchorsOf(text) {
  const seen = new Map();
  const anchors = new Set();
  let inFence = null;
  for (const line of text.split('\n')) {
    const fence = line.match(/^ {0,3}(`{3,}|~{3,})/);
    if (fence) {
      if (inFence === null) inFence = fence[1][0];
      else if (fence[1][0] === inFence) inFence = null;
      continue;
    }
    if (inFence !== null) continue;
    const h = line.match(/^ {0,3}#{1,6}\s+(.*?)\s*#*\s*$/);
    if (!h) continue;
    const plain = h[1]
      .replace(/!?\[([^\]]*)\]\([^)]*\)/g, '$1') // links and images: their text
      .replace(/<[^>]+>/g, ''); // inline HTML
    const base = plain.toLowerCase().replace(/[^\p{L}\p{N}\p{M}\s_-]/gu, '').replace(/\s/g, '-');
    const n = seen.get(base) ?? 0;
    seen.set(base, n + 1);
    anchors.add(n === 0 ? base : `${base}-${n}`);
  }
  return anchors;
}

/** Links outside code: inline `[text](target)` and reference definitions `[id]: target`. */
function linksOf(text) {
  const links = [];
  const lines = text.split('\n');
  let inFence = null;
  lines.forEach((raw, idx) => {
    const fence = raw.match(/^ {0,3}(`{3,}|~{3,})/);
    if (fence) {
      if (inFence === null) inFence = fence[1][0];
      else if (fence[1][0] === inFence) inFence = null;
      return;
    }
    if (inFence !== null) return;
    const line = raw.replace(/`[^`]*`/g, '``'); // inline code is not a link
    for (const m of line.matchAll(/\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)/g)) links.push({ target: m[1], line: idx + 1 });
    const ref = line.match(/^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+"[^"]*")?\s*$/);
    if (ref) links.push({ target: ref[1], line: idx + 1 });
  });
  return links;
}

function runBlock(script, env, cwd) {
  return new Promise((resolve) => {
    const started = Date.now();
    const child = spawn('bash', ['-e', '-c', script], { cwd, env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    let out = '';
    child.stdout.on('data', (d) => { out += d; });
    child.stderr.on('data', (d) => { out += d; });
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      try { process.kill(-child.pid, 'SIGKILL'); } catch { /* already gone */ }
    }, BLOCK_TIMEOUT_MS);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, out, timedOut, ms: Date.now() - started });
    });
  });
}

describe('documentation', function () {
  this.timeout(BLOCK_TIMEOUT_MS + 30000);

  describe('runnable shell blocks (<!-- runnable -->) run on a fresh clone', () => {
    let rx;
    let tmp;
    before(async () => {
      rx = await startOtlpReceiver();
      tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'auditrace-docs-'));
    });
    after(async () => {
      await rx?.close();
      if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
    });

    it('every marker stands right before a ```sh or ```bash block', () => {
      const stray = runnableSources.flatMap((f) =>
        codeBlocks(fs.readFileSync(path.join(ROOT, f), 'utf8')).strayMarkers.map((l) => `${f}:${l}`));
      assert.deepEqual(stray, [], `markers that mark no shell block: ${stray.join(', ')}`);
    });

    it("the README's Quick start commands (the CI itself) are not marked runnable", () => {
      const readme = codeBlocks(fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8')).blocks;
      const marked = readme.filter((b) => b.runnable && /npm (ci|test)\b/.test(b.body));
      assert.deepEqual(marked.map((b) => `README.md:${b.line}`), []);
    });

    const all = runnableSources.flatMap((f) =>
      codeBlocks(fs.readFileSync(path.join(ROOT, f), 'utf8')).blocks
        .filter((b) => b.runnable)
        .map((b) => ({ ...b, file: f })));

    it('there are runnable blocks to run (the docs were found)', () => {
      assert.ok(all.length > 0, `no runnable block in ${runnableSources.join(', ')}`);
    });

    for (const block of all) {
      it(`${block.file}:${block.line} exits 0`, async () => {
        assert.ok(RUNNABLE_LANGS.has(block.lang), `${block.file}:${block.line}: runnable blocks are sh or bash, not ${block.lang || 'unlabelled'}`);
        const dir = fs.mkdtempSync(path.join(tmp, 'block-'));
        const defaultFile = path.join(ROOT, 'auditrace-audit.jsonl');
        const existedBefore = fs.existsSync(defaultFile);
        const env = {
          ...cleanEnv(),
          PATH: `${path.dirname(process.execPath)}${path.delimiter}${process.env.PATH ?? ''}`,
          TMPDIR: dir,
          AUDITRACE_AUDIT_FILE: path.join(dir, 'audit.jsonl'),
          OTEL_EXPORTER_OTLP_ENDPOINT: rx.url,
        };
        const r = await runBlock(block.body, env, ROOT);
        const where = `${block.file}:${block.line}`;
        assert.equal(r.timedOut, false, `${where} did not finish within ${BLOCK_TIMEOUT_MS} ms:\n${r.out}`);
        assert.equal(r.code, 0, `${where} exited ${r.code ?? r.signal}:\n${r.out}`);
        assert.ok(r.ms < 20000, `${where} took ${r.ms} ms; runnable blocks are meant to be quick (< 20 s)`);
        if (!existedBefore) {
          assert.equal(fs.existsSync(defaultFile), false, `${where} left auditrace-audit.jsonl in the repository root`);
        }
      });
    }
  });

  describe('links', () => {
    for (const file of linkSources) {
      it(`every relative link in ${file} resolves`, () => {
        const text = fs.readFileSync(path.join(ROOT, file), 'utf8');
        const broken = [];
        for (const { target, line } of linksOf(text)) {
          if (/^[a-z][a-z0-9+.-]*:/i.test(target)) continue; // http:, https:, mailto:, …
          const hash = target.indexOf('#');
          const rel = decodeURIComponent(hash >= 0 ? target.slice(0, hash) : target);
          const fragment = hash >= 0 ? target.slice(hash + 1) : '';
          const resolved = rel === '' ? path.join(ROOT, file) : path.resolve(path.dirname(path.join(ROOT, file)), rel);
          if (!resolved.startsWith(ROOT)) {
            broken.push(`${file}:${line} ${target} (outside the repository)`);
            continue;
          }
          if (!fs.existsSync(resolved)) {
            broken.push(`${file}:${line} ${target} (no such file)`);
            continue;
          }
          if (fragment && resolved.endsWith('.md')) {
            const anchors = anchorsOf(fs.readFileSync(resolved, 'utf8'));
            if (!anchors.has(decodeURIComponent(fragment).toLowerCase())) broken.push(`${file}:${line} ${target} (no heading #${fragment})`);
          }
        }
        assert.deepEqual(broken, [], `broken links:\n${broken.join('\n')}`);
      });
    }

    it("the README's Documentation section links every doc, every example, BENCHMARKS.md and CHANGELOG.md", () => {
      const readme = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8');
      const m = readme.match(/^## Documentation\n([\s\S]*?)(?=^## )/m);
      assert.ok(m, 'README.md has a "## Documentation" section followed by another section');
      const targets = new Set(linksOf(m[1]).map((l) => path.normalize(l.target.split('#')[0]).replace(/\/$/, '')));
      const wanted = [
        ...docFiles,
        ...exampleReadmes.map((f) => path.dirname(f)),
        'BENCHMARKS.md',
        'CHANGELOG.md',
      ];
      const missing = wanted.filter((w) => !targets.has(w) && !targets.has(path.join(w, 'README.md')));
      assert.deepEqual(missing, [], `not linked from ## Documentation: ${missing.join(', ')}`);
      const sections = [...readme.matchAll(/^## (.+)$/gm)].map((s) => s[1]);
      assert.equal(sections[sections.indexOf('Documentation') + 1], 'Development', 'Documentation comes right before Development');
    });
  });

  describe('the checks themselves', () => {
    it('codeBlocks: finds marked blocks, ignores unmarked ones, reports stray markers', () => {
      const md = ['<!-- runnable -->', '```sh', 'echo 1', '```', '', '```bash', 'echo 2', '```', MARKER, 'text', MARKER, '```js', 'x', '```'].join('\n');
      const { blocks, strayMarkers } = codeBlocks(md);
      // A marker before a non-shell block marks it (the runner then fails it) and is also reported as stray.
      assert.deepEqual(blocks.map((b) => [b.lang, b.runnable, b.body]), [['sh', true, 'echo 1'], ['bash', false, 'echo 2'], ['js', true, 'x']]);
      assert.deepEqual(strayMarkers, [9, 11]);
    });

    it('anchorsOf: GitHub-style slugs, code spans and punctuation dropped, duplicates numbered', () => {
      const a = anchorsOf('# Running `auditrace` on Kubernetes\n## What is lost, and when\n## A/B\n## A/B\n```\n# not a heading\n```\n');
      assert.deepEqual([...a], ['running-auditrace-on-kubernetes', 'what-is-lost-and-when', 'ab', 'ab-1']);
    });

    it('linksOf: inline and reference links, not inside code', () => {
      const l = linksOf('[a](x.md) `[b](y.md)` [c](<z.md#t> "title")\n[ref]: r.md\n```\n[d](w.md)\n```\n');
      assert.deepEqual(l.map((x) => x.target), ['x.md', 'z.md#t', 'r.md']);
    });
  });
});
