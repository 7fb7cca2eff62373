'use strict';
// Bundles the runtime so that a start loads a few files instead of ~360 small ones (resolving,
// reading and compiling them was most of auditrace's start-up: bench/notes.md, "startup").
//
//   dist/auditrace.js                 dist/lib/index.js (tsc's output) and all it loads at start:
//                                     the SDK, the exporters, the instrumentations created at
//                                     start (http, undici, runtime-node).
//   dist/instrumentations/<name>.js   each other instrumentation: created when the app first loads
//                                     one of its packages (lib/instrumentations.ts), aws-lambda
//                                     at start inside Lambda only. The packages
//                                     auditrace.js already carries (API, core, instrumentation,
//                                     semantic conventions, …) are taken from it, through its
//                                     non-enumerable `__shared` table: one copy of each, so one
//                                     require-in-the-middle singleton and nothing parsed twice.
//
// Left outside: import-in-the-middle (the ESM loader and register.mjs
// must share the module the instrumentations register their hooks in), `@opentelemetry/sdk-node`
// (the user's, for nodeSdkOptions()), and what is required by a computed name at run time
// (host-metrics, the opt-in cloud resource detectors).
const fs = require('node:fs');
const path = require('node:path');
const esbuild = require('esbuild');
const { instrumentationModules } = require('../dist/lib/instrumentations.js');

const ROOT = path.resolve(__dirname, '..');
const DIST = path.join(ROOT, 'dist');
const MAIN = path.join(DIST, 'auditrace.js');
const INSTR_DIR = path.join(DIST, 'instrumentations');
/** Created at start everywhere (not deferred): they stay in the main bundle. aws-lambda, created at start only inside Lambda, has its own file. */
const EAGER = ['http', 'undici', 'runtime-node'];
const PREFIX = '@opentelemetry/instrumentation-';
const EXTERNAL = ['import-in-the-middle', '@opentelemetry/sdk-node', '@opentelemetry/auto-instrumentations-node',
  // the preconfigured logger's, loaded when the app first uses it (≈ 190 KB with its dependencies)
  'winston', 'winston-transport'];
const SEMCONV = path.join(ROOT, 'node_modules', '@opentelemetry', 'semantic-conventions', 'dist', 'index.cjs');

const common = {
  absWorkingDir: ROOT,
  bundle: true,
  platform: 'node',
  format: 'cjs',
  target: 'node22',
  external: EXTERNAL,
  // Whitespace and syntax minified (≈ 30 % less to parse and hold), names kept for stack traces,
  // lines kept short: Node prints the source line an uncaught error last passed through, and an
  // application error rethrown by an instrumentation passes through the bundle.
  minifyWhitespace: true,
  minifySyntax: true,
  lineLimit: 160,
  legalComments: 'eof',
  // Maps for bench/lib/cpuprofile.js (through tsc's maps to lib/*.ts); no sourceMappingURL comment,
  // so Node never reads them.
  sourcemap: 'external',
  sourcesContent: false,
  logLevel: 'warning',
  metafile: true,
  write: false,
};

/**
 * @opentelemetry/core 3.0's `isAnyValue` makes a WeakSet (its guard against cyclic values) before
 * it looks at the value's type: for every attribute of every span, twice as the span starts. On
 * the hello server that was ≈ 3.4 KB of the ≈ 22 KB auditrace allocated per request, and a weak
 * collection for the GC to visit each time (bench/notes.md, "Allocation per request"). A string,
 * number or boolean needs no guard: it is answered first, with the answer the guarded walk gives.
 * Another core whose text differs is bundled unchanged, and the build says so.
 */
const ANY_VALUE_FROM = 'function isAnyValue(val) {\n\treturn isAnyValueInternal(val, /* @__PURE__ */ new WeakSet());\n}';
const ANY_VALUE_TO = 'function isAnyValue(val) {\n\tconst type = typeof val;\n\tif (type === "string" || type === "number" || type === "boolean") return true;\n'
  + '\treturn isAnyValueInternal(val, /* @__PURE__ */ new WeakSet());\n}';
const coreAnyValue = {
  name: 'core-any-value',
  setup(build) {
    build.onLoad({ filter: /@opentelemetry[\\/]core[\\/]dist[\\/]common[\\/]attributes\.cjs$/ }, (args) => {
      const text = fs.readFileSync(args.path, 'utf8');
      if (!text.includes(ANY_VALUE_FROM)) {
        process.stderr.write(`bundle: warning: ${rel(args.path)} has no isAnyValue of the known form: bundled unchanged\n`);
        return undefined;
      }
      return { contents: text.replace(ANY_VALUE_FROM, ANY_VALUE_TO), loader: 'js' };
    });
  },
};

/**
 * The SDK bounds each export with a timer that holds the event loop (sdk-metrics' periodic export
 * and a reader's flush; the batch span and log record processors' export of a batch): with a
 * collector that accepts and never answers, every export held the process for its export timeout
 * (30 s by default), so a finished script never reached `beforeExit`, where auditrace's own
 * bounded flush runs (AUDITRACE_SHUTDOWN_TIMEOUT_MS, by a timer that does hold the loop). Those
 * timers are unref'd; what they bound is unchanged. Another version of a file is bundled
 * unchanged, and the build says so.
 */
const EXPORT_TIMERS = [
  {
    file: /@opentelemetry[\\/]sdk-metrics[\\/]dist[\\/]utils\.cjs$/,
    from: '\t\ttimeoutHandle = setTimeout(function timeoutHandler() {\n\t\t\treject(new TimeoutError("Operation timed out."));\n\t\t}, timeout);\n',
    unref: '\t\ttimeoutHandle.unref?.();\n',
  },
  {
    file: /@opentelemetry[\\/]sdk-trace[\\/]dist[\\/]export[\\/]BatchSpanProcessorBase\.cjs$/,
    from: '\t\t\tconst timer = setTimeout(() => {\n\t\t\t\treject(/* @__PURE__ */ new Error("Timeout"));\n\t\t\t}, this._exportTimeoutMillis);\n',
    unref: '\t\t\ttimer.unref?.();\n',
  },
  {
    file: /@opentelemetry[\\/]sdk-logs[\\/]dist[\\/]export[\\/]BatchLogRecordProcessorBase\.cjs$/,
    from: '\t\t\tconst timer = setTimeout(() => {\n\t\t\t\treject(/* @__PURE__ */ new Error("Timeout"));\n\t\t\t}, exportTimeoutMillis);\n',
    unref: '\t\t\ttimer.unref?.();\n',
  },
];
const exportTimersUnref = {
  name: 'export-timers-unref',
  setup(build) {
    for (const t of EXPORT_TIMERS) {
      build.onLoad({ filter: t.file }, (args) => {
        const text = fs.readFileSync(args.path, 'utf8');
        if (!text.includes(t.from)) {
          process.stderr.write(`bundle: warning: ${rel(args.path)} has no export timer of the known form: bundled unchanged\n`);
          return undefined;
        }
        return { contents: text.replace(t.from, t.from + t.unref), loader: 'js' };
      });
    }
  },
};

/**
 * instrumentation-express (with AUDITRACE_LAYER_SPANS=true) turns what a layer passes to `next()`
 * or throws into a message with `String(error)`, which throws for a value without a string form
 * (`next(Object.create(null))`, a throwing `toString`, a Proxy): inside the application's own
 * `next()`, or uncaught when `next` is called from a timer. Such a value gets the wording of
 * lib/exception-guard.ts instead; everything else is what upstream records. Another version of
 * the file fails the build.
 */
const EXPRESS_MESSAGE_FROM = 'const asErrorAndMessage = (error) => error instanceof Error ? [error, error.message] : [String(error), String(error)];';
const EXPRESS_MESSAGE_TO = 'const asErrorAndMessage = (error) => {\n\ttry {\n\t\tif (error instanceof Error) return [error, error.message];\n'
  + '\t\tconst text = String(error);\n\t\treturn [text, text];\n\t} catch {\n'
  + '\t\tconst text = `unprintable ${typeof error} thrown`;\n\t\treturn [text, text];\n\t}\n};';
const expressErrorMessage = {
  name: 'express-error-message',
  setup(build) {
    build.onLoad({ filter: /@opentelemetry[\\/]instrumentation-express[\\/]dist[\\/]utils\.cjs$/ }, (args) => {
      const text = fs.readFileSync(args.path, 'utf8');
      // Not a warning, as for isAnyValue: unguarded, this version throws into applications.
      if (!text.includes(EXPRESS_MESSAGE_FROM)) {
        throw new Error(`${rel(args.path)} has no asErrorAndMessage of the known form: check what it does with a value without a string form, then update EXPRESS_MESSAGE_FROM`);
      }
      return { contents: text.replace(EXPRESS_MESSAGE_FROM, EXPRESS_MESSAGE_TO), loader: 'js' };
    });
  },
};

/**
 * The OTLP transport gets `http`/`https` with `import()` (an https endpoint, or an agent of its
 * own). In the bundle, which register compiles through `vm.compileFunction` (lib/code-cache.ts),
 * that goes through `vm.constants.USE_MAIN_CONTEXT_DEFAULT_LOADER`, and Node prints an
 * ExperimentalWarning into the application's stderr the first time; building the ES module
 * namespace of `http` also loads Node's bundled undici (≈ 38 ms, lib/exporters.ts). A built-in's
 * namespace and its `require` hold the same `Agent` and `request`, so the transport gets the
 * `require`d module instead. Another version without these calls is bundled unchanged, and the
 * build says so (the loader still serves its `import()`).
 */
const BUILTIN_IMPORT = /\bimport\("(https?)"\)/g;
const builtinImports = {
  name: 'builtin-imports',
  setup(build) {
    build.onLoad({ filter: /@opentelemetry[\\/]otlp-exporter-base[\\/]dist[\\/]platform[\\/]node[\\/].*\.cjs$/ }, (args) => {
      const text = fs.readFileSync(args.path, 'utf8');
      if (!text.includes('import(')) return undefined;
      const out = text.replace(BUILTIN_IMPORT, 'Promise.resolve(require("$1"))');
      if (out.includes('import(')) process.stderr.write(`bundle: warning: ${rel(args.path)} has an import() of another form: bundled unchanged\n`);
      return { contents: out, loader: 'js' };
    });
  },
};

/**
 * Where a package's source says `import * as api from '@opentelemetry/api'` (the SDK's Tracer, the
 * metric readers, the log record, a dozen instrumentations), its CommonJS build wraps the API in a
 * namespace object whose every property is a getter, `((k) => from[k]).bind(null, key)`: each
 * `api.trace`, `api.context`, `api.SpanKind` … is a bound-function call, and in the SDK's
 * `startSpan`, run for every request, V8 made each of them a runtime call (`Runtime_GetProperty`,
 * ≈ 1 µs of CPU per request on the hello server: bench/notes.md, http-hello). The API is a
 * CommonJS module with `__esModule` and its own `default`, so those getters read exactly the
 * module's own properties: the module itself is used. The build fails if the API stops being
 * such a module.
 */
const API_NAMESPACE = '_opentelemetry_api = require_runtime.__toESM(_opentelemetry_api);';
const API_REQUIRE = 'let _opentelemetry_api = require("@opentelemetry/api");';
/** A read of a named property, not followed by an assignment to it. */
const API_USE = /\b_opentelemetry_api\.[A-Za-z_$][\w$]*(?![\w$])(?!\s*(?:[-+*\/%&|^]|\*\*|<<|>>>?|&&|\|\||\?\?)?=(?!=))/g;
function apiIsItsOwnNamespace() {
  const api = require('@opentelemetry/api');
  if (api.__esModule !== true || !Object.hasOwn(api, 'default')) {
    throw new Error('@opentelemetry/api is no longer a CommonJS module with __esModule and its own default: its namespace wrapper (API_NAMESPACE) may read differently from the module; check, then update the api-namespace plugin');
  }
}
const apiNamespace = {
  name: 'api-namespace',
  setup(build) {
    build.onLoad({ filter: /@opentelemetry[\\/][^\\/]+[\\/]dist[\\/].*\.cjs$/ }, (args) => {
      const text = fs.readFileSync(args.path, 'utf8');
      if (!text.includes(API_NAMESPACE)) return undefined;
      const out = text.split(API_NAMESPACE).join('');
      // Equivalent only while the file reads named properties: a write to the module, or the
      // namespace itself passed on, enumerated or compared, would differ.
      const uses = out.split(API_USE).join('');
      if (!out.includes(API_REQUIRE) || /\b_opentelemetry_api\b/.test(uses.split(API_REQUIRE).join(''))) {
        throw new Error(`${rel(args.path)} uses @opentelemetry/api other than by reading its named properties: check the api-namespace plugin`);
      }
      return { contents: out, loader: 'js' };
    });
  },
};

const deferred = Object.keys(instrumentationModules).filter((n) => !EAGER.includes(n));

/** The deferred instrumentation packages stay out of the main bundle: their own files are loaded. */
const deferredOut = {
  name: 'deferred-instrumentations',
  setup(build) {
    build.onResolve({ filter: /^@opentelemetry\/instrumentation-/ }, (args) => {
      const name = args.path.slice(PREFIX.length);
      if (!deferred.includes(name)) return undefined;
      return { path: `./instrumentations/${name}.js`, external: true };
    });
  },
};

/**
 * require-in-the-middle's only dependency outside the bundle's own, `debug`, loads `tty`,
 * `supports-color` and its formatters at every start (≈ 4 ms and ≈ 4 MiB RSS alone) to print
 * nothing unless DEBUG is set. The bundle carries a stand-in that loads the real one, from
 * node_modules, only when DEBUG is set at start, as `debug` reads it then too.
 */
const debugOnDemand = {
  name: 'debug-on-demand',
  setup(build) {
    build.onResolve({ filter: /^debug$/ }, () => ({ path: 'debug', namespace: 'debug-on-demand' }));
    build.onLoad({ filter: /.*/, namespace: 'debug-on-demand' }, () => ({
      contents: `'use strict';
const off = Object.assign(() => {}, { enabled: false });
module.exports = function debug(namespace) {
  if (!process.env.DEBUG) return off;
  try {
    const name = 'debug'; // not followed by the bundler
    return require(name)(namespace);
  } catch {
    return off;
  }
};`,
      loader: 'js',
    }));
  },
};

/**
 * Entry points that `require` the package, as lib/instrumentations.ts does: the CommonJS build of
 * each package is taken, the same files the main bundle carries (an entry point would get the ESM
 * build and its ESM imports).
 */
const requireEntries = {
  name: 'require-entries',
  setup(build) {
    build.onResolve({ filter: /^entry:/ }, (args) => ({ path: args.path.slice('entry:'.length), namespace: 'entry' }));
    build.onLoad({ filter: /.*/, namespace: 'entry' }, (args) => ({
      contents: `module.exports = require(${JSON.stringify(PREFIX + args.path)});`,
      resolveDir: ROOT,
      loader: 'js',
    }));
  },
};
const instrEntries = () => Object.fromEntries(deferred.map((n) => [n, `entry:${n}`]));

/** Resolves as esbuild would have, from inside a plugin (marked, so the plugin lets it through). */
const resolveAs = (build, args) => build.resolve(args.path, { kind: args.kind, resolveDir: args.resolveDir, importer: args.importer, pluginData: 'inner' });
const rel = (file) => path.relative(ROOT, file).split(path.sep).join('/');

/**
 * Pass 1: the files the deferred instrumentations' own code imports from other packages (the
 * edges out of each instrumentation package; what those files import in turn is theirs).
 */
async function importsOfInstrumentations() {
  const files = new Set();
  const ownPackage = (file) => /node_modules\/@opentelemetry\/instrumentation-[^/]+\//.test(file) || file.startsWith('entry:');
  const recorder = {
    name: 'record',
    setup(build) {
      build.onResolve({ filter: /.*/ }, async (args) => {
        if (args.pluginData === 'inner' || args.namespace !== 'file' || !ownPackage(args.importer)) return undefined;
        if (args.path.startsWith('.')) return undefined; // within the package
        const r = await resolveAs(build, args);
        if (r.errors.length === 0 && !r.external && r.path) files.add(r.path);
        return undefined;
      });
    },
  };
  const r = await esbuild.build({ ...common, entryPoints: instrEntries(), outdir: INSTR_DIR, plugins: [requireEntries, recorder] });
  return { files, inputs: Object.keys(r.metafile.inputs) };
}

/**
 * The semantic-conventions package is one CommonJS module of ~660 exports (≈ 170 KB, ≈ 8 ms to
 * evaluate at start) of which the bundled code uses a few dozen, and CommonJS cannot be
 * tree-shaken. The bundle carries a module with just the exports whose names occur in any bundled
 * file (a name that only occurs in a comment costs a line, nothing worse). Each is checked against
 * the real module (strings, numbers and objects by value, functions by calling both); any
 * difference and the bundle carries the whole package instead.
 */
function slimSemconv(inputs) {
  const real = require(SEMCONV);
  const names = new Set(Object.keys(real));
  const used = new Set();
  for (const f of inputs) {
    const file = path.resolve(ROOT, f);
    if (file.includes(`${path.sep}semantic-conventions${path.sep}`) || !fs.existsSync(file)) continue;
    for (const id of fs.readFileSync(file, 'utf8').match(/[A-Za-z_$][\w$]*/g) ?? []) if (names.has(id)) used.add(id);
  }
  const lines = [...used].sort().map((n) => {
    const v = real[n];
    return `exports.${n} = ${typeof v === 'function' ? v.toString() : JSON.stringify(v)};`;
  });
  const contents = `'use strict';\n${lines.join('\n')}\n`;
  let same;
  try {
    const slim = {};
    new Function('exports', contents)(slim);
    same = [...used].every((n) => (typeof real[n] === 'function'
      ? typeof slim[n] === 'function' && slim[n]('x') === real[n]('x')
      : JSON.stringify(slim[n]) === JSON.stringify(real[n])));
  } catch {
    same = false; // e.g. a function that used something of its module
  }
  if (!same) return { plugin: { name: 'semconv-whole', setup() {} }, summary: 'whole (a slim module differed from the real one)' };
  return {
    plugin: {
      name: 'semconv-slim',
      setup(build) {
        build.onLoad({ filter: /semantic-conventions[\\/]dist[\\/]index\.cjs$/ }, (args) => (args.path === SEMCONV ? { contents, loader: 'js' } : undefined));
      },
    },
    summary: `${used.size} of ${names.size} exports`,
  };
}

async function main() {
  apiIsItsOwnNamespace();
  const { files: imported, inputs: instrInputs } = await importsOfInstrumentations();

  // Pass 2: the main bundle alone, to learn which files it carries.
  const mainEntry = { contents: "module.exports = require('./dist/lib/index.js');", resolveDir: ROOT, sourcefile: 'auditrace-entry.js', loader: 'js' };
  const probe = await esbuild.build({ ...common, stdin: mainEntry, outfile: MAIN, plugins: [deferredOut, debugOnDemand, coreAnyValue, exportTimersUnref, builtinImports, apiNamespace] });
  const carried = new Set(Object.keys(probe.metafile.inputs).map((f) => path.resolve(ROOT, f)));
  const shared = [...imported].filter((f) => carried.has(f)).map(rel).sort();
  const semconv = slimSemconv([...Object.keys(probe.metafile.inputs), ...instrInputs]);

  // Pass 3: the main bundle again, now with a table of the shared modules. Getters: a module the
  // main bundle evaluates only on demand is not evaluated for the table at start.
  const table = shared.map((f) => `get ${JSON.stringify(f)}() { return require(${JSON.stringify(`./${f}`)}); }`).join(',\n  ');
  const contents = `module.exports = require('./dist/lib/index.js');
Object.defineProperty(module.exports, '__shared', { value: {
  ${table}
} });
// for register.mjs: whether --require started auditrace before it
Object.defineProperty(module.exports, '__current', { value: require('./dist/lib/start.js').current });
`;
  // Node's ESM loader finds a CommonJS module's named exports by reading its text (`import {
  // audit } from 'auditrace'`): the annotation esbuild writes for its own ESM entries.
  const names = Object.keys(require(path.join(DIST, 'lib', 'index.js')));
  const footer = { js: `0 && (module.exports = { ${names.join(', ')} });` };
  const mainBuild = await esbuild.build({ ...common, stdin: { ...mainEntry, contents }, outfile: MAIN, footer, plugins: [deferredOut, debugOnDemand, coreAnyValue, exportTimersUnref, builtinImports, semconv.plugin, apiNamespace] });

  // Pass 4: each deferred instrumentation, taking the shared modules from the main bundle.
  const sharedSet = new Set(shared);
  const fromMain = {
    name: 'from-main',
    setup(build) {
      build.onResolve({ filter: /^\.\.\/auditrace\.js$/ }, (args) => (args.namespace === 'shared' ? { path: '../auditrace.js', external: true } : undefined));
      build.onResolve({ filter: /.*/ }, async (args) => {
        if (args.pluginData === 'inner' || args.namespace !== 'file' || args.path.startsWith('.')) return undefined;
        const r = await resolveAs(build, args);
        return r.path && sharedSet.has(rel(r.path)) ? { path: rel(r.path), namespace: 'shared' } : undefined;
      });
      build.onLoad({ filter: /.*/, namespace: 'shared' }, (args) => ({
        contents: `module.exports = require('../auditrace.js').__shared[${JSON.stringify(args.path)}];`,
        loader: 'js',
      }));
    },
  };
  const instrBuild = await esbuild.build({ ...common, entryPoints: instrEntries(), outdir: INSTR_DIR, plugins: [requireEntries, fromMain, semconv.plugin, expressErrorMessage, apiNamespace] });

  fs.rmSync(INSTR_DIR, { recursive: true, force: true });
  fs.mkdirSync(INSTR_DIR, { recursive: true });
  for (const f of [...mainBuild.outputFiles, ...instrBuild.outputFiles]) fs.writeFileSync(f.path, f.contents);

  // V8 holds a source with any non-ASCII character as two bytes per character: 1.4 MB instead of
  // 0.7 for the main bundle, for the life of the process. esbuild escapes strings, not regexps.
  const main = mainBuild.outputFiles.find((f) => f.path === MAIN);
  const wide = main.contents.findIndex((b) => b > 0x7f);
  if (wide >= 0) {
    const at = Buffer.from(main.contents).toString('utf8', Math.max(0, wide - 60), wide + 20);
    throw new Error(`dist/auditrace.js has a non-ASCII character (write it as \\u…): …${at}`);
  }

  const js = (files) => files.filter((f) => f.path.endsWith('.js'));
  const kib = (files) => (js(files).reduce((n, f) => n + f.contents.length, 0) / 1024).toFixed(0);
  process.stdout.write(`bundle: dist/auditrace.js ${kib(mainBuild.outputFiles)} KiB; dist/instrumentations/: `
    + `${js(instrBuild.outputFiles).length} files, ${kib(instrBuild.outputFiles)} KiB, ${shared.length} modules taken from auditrace.js; `
    + `semantic conventions: ${semconv.summary}\n`);
}

main().catch((err) => {
  process.stderr.write(`bundle: ${err && err.stack ? err.stack : err}\n`);
  process.exit(1);
});
