'use strict';
// Writes the V8 code cache of dist/auditrace.js for the Node that runs this script
// (lib/code-cache.ts): a child process starts auditrace the way `--require auditrace/register`
// does, with OTLP pointed at a local server that answers 200, lets an empty script end (the final
// export included) and writes the cache on 'exit', when every function a start runs is compiled.
// The build fails if the cache is not well beyond the top level alone (V8 compiled only that), which
// is what it would hold if V8's compilation cache stopped handing back the function that ran.
// Part of `npm run build`; run it again with another Node to add a cache for that Node.
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const http = require('node:http');
const os = require('node:os');
const path = require('node:path');

const ROOT = path.resolve(__dirname, '..');
const BUNDLE = path.join(ROOT, 'dist', 'auditrace.js');
const LOADER = path.join(ROOT, 'dist', 'lib', 'code-cache.js');

const child = `
const fs = require('node:fs');
const vm = require('node:vm');
const loader = require(${JSON.stringify(LOADER)});
const bundle = ${JSON.stringify(BUNDLE)};
// Under another file name: its own entry in V8's compilation cache.
const topLevel = vm.compileFunction(fs.readFileSync(bundle, 'utf8'), [...loader.COMMONJS_PARAMS],
  { filename: bundle + '.top-level', produceCachedData: true }).cachedData.length;
loader.loadBundle(bundle).start('require');
process.on('exit', () => {
  const file = loader.writeCodeCache(bundle);
  process.stdout.write(JSON.stringify({ file, bytes: fs.statSync(file).size, topLevel }));
});
`;

function cleanEnv(extra) {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (k.startsWith('OTEL_') || k.startsWith('AUDITRACE_') || k === 'NODE_OPTIONS') continue;
    env[k] = v;
  }
  return { ...env, ...extra };
}

async function main() {
  const sink = http.createServer((req, res) => {
    req.resume();
    req.on('end', () => res.writeHead(200, { 'content-type': 'application/x-protobuf' }).end());
  });
  await new Promise((resolve) => sink.listen(0, '127.0.0.1', resolve));
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'auditrace-code-cache-'));
  try {
    const env = cleanEnv({
      OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${sink.address().port}`,
      AUDITRACE_AUDIT_FILE: path.join(tmp, 'audit.jsonl'),
      OTEL_SERVICE_NAME: 'code-cache',
    });
    const proc = spawn(process.execPath, ['-e', child], { env, cwd: tmp, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    proc.stdout.on('data', (d) => { out += d; });
    proc.stderr.on('data', (d) => { err += d; });
    const code = await new Promise((resolve) => proc.on('close', resolve));
    if (code !== 0) throw new Error(`the start exited with ${code}: ${err.trim()}`);
    const { file, bytes, topLevel } = JSON.parse(out);
    process.stdout.write(`code cache: ${path.relative(ROOT, file)} ${(bytes / 1024).toFixed(0)} KiB (top level alone: ${(topLevel / 1024).toFixed(0)} KiB)\n`);
    if (bytes < 3 * topLevel) throw new Error(`${path.relative(ROOT, file)} holds little more than the top level (${bytes} vs ${topLevel} bytes): V8's compilation cache did not hand back the bundle that ran (a debugger attached, or --no-compilation-cache?)`);
  } finally {
    sink.close();
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

main().catch((err) => {
  process.stderr.write(`code-cache: ${err && err.stack ? err.stack : err}\n`);
  process.exit(1);
});
