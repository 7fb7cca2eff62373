import { hash } from 'node:crypto';
import { closeSync, fstatSync, openSync, readFileSync, readSync, renameSync, unlinkSync, writeFileSync } from 'node:fs';
import Module, { createRequire } from 'node:module';
import { dirname } from 'node:path';
import { constants as vmConstants, Script } from 'node:vm';

/**
 * Loads the bundle (dist/auditrace.js) with a V8 code cache made by the build (`npm run build`
 * runs `scripts/code-cache.js`): the bytecode of every function a start runs, so a start neither
 * parses nor compiles them (≈ 25 ms of ≈ 75 ms added to an empty script, bench/notes.md
 * "startup"). Node's own compile cache (NODE_COMPILE_CACHE) is taken right after compilation and
 * holds only the top-level code; this one is taken after a start.
 *
 * The cache is used only when it was made from these exact bytes: V8 checks the Node version,
 * its flags and the source's *length*, so the file name carries the Node version and the
 * architecture and the file starts with the SHA-256 of the bundle's text. Anything else (no file,
 * another bundle, V8 refusing it) and the bundle is compiled as `require` would.
 *
 * The module goes into `require.cache` under the bundle's path before it runs, so a later
 * `require('auditrace')` gets this same instance.
 */

export type CodeCacheStatus = 'accepted' | 'rejected' | 'absent' | 'stale' | 'unused';

const DIGEST_BYTES = 32;
let lastScript: Script | undefined;
let lastStatus: CodeCacheStatus = 'unused';

export function codeCachePath(bundle: string): string {
  return `${bundle}.${process.version}-${process.arch}.code-cache`;
}

function digestOf(source: Uint8Array): Buffer {
  return hash('sha256', source, 'buffer');
}

/**
 * The bundle's text inside the CommonJS wrapper, read into one buffer that already holds the
 * wrapper, and the digest of the file's bytes: `Module.wrap(text)` would hold a second copy of the
 * ≈ 700 KB text until the next full collection (≈ 1.4 MiB more peak RSS, measured).
 */
function readWrapped(bundle: string): { wrapped: string; digest: Buffer } {
  const [head, tail] = Module.wrap('\0').split('\0') as [string, string];
  const fd = openSync(bundle, 'r');
  try {
    const size = fstatSync(fd).size;
    const buf = Buffer.allocUnsafeSlow(head.length + size + tail.length);
    buf.write(head, 0, 'latin1');
    let at = head.length;
    for (let n; at < head.length + size && (n = readSync(fd, buf, at, head.length + size - at, null)) > 0;) at += n;
    if (at !== head.length + size) throw new Error(`${bundle}: short read`);
    buf.write(tail, at, 'latin1');
    return { wrapped: buf.toString('utf8'), digest: digestOf(buf.subarray(head.length, at)) };
  } finally {
    closeSync(fd);
  }
}

/** How the last `loadBundle` went: for the build's check and the tests. */
export function codeCacheStatus(): CodeCacheStatus {
  return lastStatus;
}

/** The bundle's exports: from `require.cache`, or compiled now with the cache if it fits. */
export function loadBundle(bundle: string): unknown {
  const cached = require.cache[bundle];
  if (cached) return cached.exports;
  let read: { wrapped: string; digest: Buffer };
  try {
    read = readWrapped(bundle);
  } catch {
    return require(bundle); // let require report it
  }
  const { wrapped, digest } = read;
  let cachedData: Buffer | undefined;
  lastStatus = 'absent';
  try {
    const file = readFileSync(codeCachePath(bundle));
    if (file.length > DIGEST_BYTES && file.subarray(0, DIGEST_BYTES).equals(digest)) cachedData = file.subarray(DIGEST_BYTES);
    else lastStatus = 'stale';
  } catch {
    // no cache for this Node: compile
  }
  const script = new Script(wrapped, {
    filename: bundle,
    ...(cachedData ? { cachedData } : {}),
    importModuleDynamically: vmConstants.USE_MAIN_CONTEXT_DEFAULT_LOADER,
  });
  if (cachedData) lastStatus = script.cachedDataRejected ? 'rejected' : 'accepted';
  lastScript = script;

  const mod = new Module(bundle, module);
  mod.filename = bundle;
  const paths = (Module as unknown as { _nodeModulePaths?: (dir: string) => string[] })._nodeModulePaths;
  if (typeof paths === 'function') mod.paths = paths(dirname(bundle));
  require.cache[bundle] = mod;
  try {
    const wrapper = script.runInThisContext() as (...a: unknown[]) => void;
    const req = createRequire(bundle);
    wrapper.call(mod.exports, mod.exports, req, mod, bundle, dirname(bundle));
  } catch (err) {
    delete require.cache[bundle];
    throw err;
  }
  mod.loaded = true;
  return mod.exports;
}

/**
 * Writes the cache of the bundle `loadBundle` compiled, with the functions run since then: call it
 * after a start. Written to a temporary name and renamed, so a reader never sees half a file.
 */
export function writeCodeCache(bundle: string): string {
  if (!lastScript) throw new Error('loadBundle() has not compiled the bundle in this process');
  const data = lastScript.createCachedData();
  const target = codeCachePath(bundle);
  const temp = `${target}.${process.pid}.tmp`;
  try {
    writeFileSync(temp, Buffer.concat([digestOf(readFileSync(bundle)), data]));
    renameSync(temp, target);
  } catch (err) {
    try { unlinkSync(temp); } catch { /* never written */ }
    throw err;
  }
  return target;
}
