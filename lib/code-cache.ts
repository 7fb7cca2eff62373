import { hash } from 'node:crypto';
import { readFileSync, renameSync, unlinkSync, writeFileSync } from 'node:fs';
import Module, { createRequire } from 'node:module';
import { dirname } from 'node:path';
import { compileFunction, constants as vmConstants } from 'node:vm';

/**
 * Loads the bundle (dist/auditrace.js) with a V8 code cache made by the build (`npm run build`
 * runs `scripts/code-cache.js`): the bytecode of every function a start runs, so a start neither
 * parses nor compiles them (≈ 25 ms of ≈ 75 ms added to an empty script, bench/notes.md
 * "startup"). Node's own compile cache (NODE_COMPILE_CACHE) is taken right after compilation and
 * holds only the top-level code; this one is taken after a start.
 *
 * The bundle is compiled as a function of the CommonJS parameters (`vm.compileFunction`, what
 * Node's own loader compiles a module as), not as a `vm.Script` of the wrapped text: in most
 * processes that had compiled a `vm.Script` — even one of a single line, never run — Node's own
 * HTTP code ran ≈ 7 µs slower per request for the life of the process (V8 adding properties
 * through its runtime on every response), and the hello server with auditrace ≈ 8 µs
 * (bench/notes.md "http-hello": "the code cache's loader had made Node's own HTTP code slower").
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
/** What a CommonJS module is a function of, in Node's order. */
export const COMMONJS_PARAMS: readonly string[] = Object.freeze(['exports', 'require', 'module', '__filename', '__dirname']);
/** The bundle's path and text, as last compiled: `writeCodeCache` compiles them again. */
let lastCompiled: { bundle: string; text: string } | undefined;
let lastStatus: CodeCacheStatus = 'unused';

type CompiledBundle = ((...a: unknown[]) => void) & { cachedDataRejected?: boolean; cachedData?: Buffer };

export function codeCachePath(bundle: string): string {
  return `${bundle}.${process.version}-${process.arch}.code-cache`;
}

function digestOf(source: Uint8Array): Buffer {
  return hash('sha256', source, 'buffer');
}

/**
 * Compiles the bundle's text. An `import()` inside it goes to Node's default loader, as it would in
 * a module `require` loaded (the bundle has none today: scripts/bundle.js gives the OTLP transport
 * `require` instead, since Node warns the first time this option serves one).
 */
function compile(bundle: string, text: string, extra: { cachedData?: Buffer; produceCachedData?: boolean }): CompiledBundle {
  return compileFunction(text, [...COMMONJS_PARAMS], {
    filename: bundle,
    ...extra,
    importModuleDynamically: vmConstants.USE_MAIN_CONTEXT_DEFAULT_LOADER,
  } as Parameters<typeof compileFunction>[2]) as CompiledBundle;
}

/** How the last `loadBundle` went: for the build's check and the tests. */
export function codeCacheStatus(): CodeCacheStatus {
  return lastStatus;
}

/** The bundle's exports: from `require.cache`, or compiled now with the cache if it fits. */
export function loadBundle(bundle: string): unknown {
  const cached = require.cache[bundle];
  if (cached) return cached.exports;
  let text: string;
  let digest: Buffer;
  try {
    const bytes = readFileSync(bundle);
    text = bytes.toString('utf8');
    digest = digestOf(bytes);
  } catch {
    return require(bundle); // let require report it
  }
  let cachedData: Buffer | undefined;
  lastStatus = 'absent';
  try {
    const file = readFileSync(codeCachePath(bundle));
    if (file.length > DIGEST_BYTES && file.subarray(0, DIGEST_BYTES).equals(digest)) cachedData = file.subarray(DIGEST_BYTES);
    else lastStatus = 'stale';
  } catch {
    // no cache for this Node: compile
  }
  const fn = compile(bundle, text, cachedData ? { cachedData } : {});
  if (cachedData) lastStatus = fn.cachedDataRejected ? 'rejected' : 'accepted';
  lastCompiled = { bundle, text };

  const mod = new Module(bundle, module);
  mod.filename = bundle;
  const paths = (Module as unknown as { _nodeModulePaths?: (dir: string) => string[] })._nodeModulePaths;
  if (typeof paths === 'function') mod.paths = paths(dirname(bundle));
  require.cache[bundle] = mod;
  try {
    fn.call(mod.exports, mod.exports, createRequire(bundle), mod, bundle, dirname(bundle));
  } catch (err) {
    delete require.cache[bundle];
    throw err;
  }
  mod.loaded = true;
  return mod.exports;
}

/**
 * Writes the cache of the bundle `loadBundle` compiled, with the functions run since then: call it
 * after a start. The same text compiled again under the same file name and `import()` setting is
 * a hit in V8's compilation cache (the function already run, with the inner functions compiled
 * since), whose cache then holds them all. A miss (V8 keeps no compilation cache while a debugger
 * is attached, or with --no-compilation-cache) leaves only the top level: the build's size check
 * (scripts/code-cache.js) refuses that.
 * Written to a temporary name and renamed, so a reader never sees half a file.
 */
export function writeCodeCache(bundle: string): string {
  if (lastCompiled?.bundle !== bundle) throw new Error('loadBundle() has not compiled the bundle in this process');
  const data = compile(bundle, lastCompiled.text, { produceCachedData: true }).cachedData;
  if (!data) throw new Error('V8 produced no code cache');
  const target = codeCachePath(bundle);
  const temp = `${target}.${process.pid}.tmp`;
  try {
    writeFileSync(temp, Buffer.concat([digestOf(Buffer.from(lastCompiled.text, 'utf8')), data]));
    renameSync(temp, target);
  } catch (err) {
    try { unlinkSync(temp); } catch { /* never written */ }
    throw err;
  }
  return target;
}
