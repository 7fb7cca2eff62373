import { existsSync } from 'node:fs';
import * as nodeModule from 'node:module';
import { createRequire, isBuiltin } from 'node:module';
import nodePath_ from 'node:path';
import type { Instrumentation } from '@opentelemetry/instrumentation';

/**
 * The instrumentations of `@opentelemetry/auto-instrumentations-node`, by the short name that
 * `OTEL_NODE_{ENABLED,DISABLED}_INSTRUMENTATIONS` uses: the exported class and its package, by a
 * `require` of its literal name, which the bundle (`scripts/bundle.js`) follows — the
 * instrumentations then share the bundle's one copy of the API, core and instrumentation
 * packages. We keep our own table instead of calling `getNodeAutoInstrumentations()` because that
 * function requires all ~41 packages (≈ 180 ms) even when one is enabled; a test checks this table
 * against the upstream map. `host-metrics` has no `require` here: it is off by default and its
 * `systeminformation` dependency alone is ≈ 150 KB to parse at every start, so it stays out of
 * the bundle and is loaded from node_modules.
 */
const instrumentationTable: Readonly<Record<string, readonly [className: string, load?: () => unknown]>> = {
  amqplib: ['AmqplibInstrumentation', () => require('@opentelemetry/instrumentation-amqplib')],
  'aws-lambda': ['AwsLambdaInstrumentation', () => require('@opentelemetry/instrumentation-aws-lambda')],
  'aws-sdk': ['AwsInstrumentation', () => require('@opentelemetry/instrumentation-aws-sdk')],
  bunyan: ['BunyanInstrumentation', () => require('@opentelemetry/instrumentation-bunyan')],
  'cassandra-driver': ['CassandraDriverInstrumentation', () => require('@opentelemetry/instrumentation-cassandra-driver')],
  connect: ['ConnectInstrumentation', () => require('@opentelemetry/instrumentation-connect')],
  cucumber: ['CucumberInstrumentation', () => require('@opentelemetry/instrumentation-cucumber')],
  dataloader: ['DataloaderInstrumentation', () => require('@opentelemetry/instrumentation-dataloader')],
  dns: ['DnsInstrumentation', () => require('@opentelemetry/instrumentation-dns')],
  express: ['ExpressInstrumentation', () => require('@opentelemetry/instrumentation-express')],
  fs: ['FsInstrumentation', () => require('@opentelemetry/instrumentation-fs')],
  'generic-pool': ['GenericPoolInstrumentation', () => require('@opentelemetry/instrumentation-generic-pool')],
  graphql: ['GraphQLInstrumentation', () => require('@opentelemetry/instrumentation-graphql')],
  grpc: ['GrpcInstrumentation', () => require('@opentelemetry/instrumentation-grpc')],
  hapi: ['HapiInstrumentation', () => require('@opentelemetry/instrumentation-hapi')],
  'host-metrics': ['HostMetricsInstrumentation'],
  http: ['HttpInstrumentation', () => require('@opentelemetry/instrumentation-http')],
  ioredis: ['IORedisInstrumentation', () => require('@opentelemetry/instrumentation-ioredis')],
  kafkajs: ['KafkaJsInstrumentation', () => require('@opentelemetry/instrumentation-kafkajs')],
  knex: ['KnexInstrumentation', () => require('@opentelemetry/instrumentation-knex')],
  koa: ['KoaInstrumentation', () => require('@opentelemetry/instrumentation-koa')],
  'lru-memoizer': ['LruMemoizerInstrumentation', () => require('@opentelemetry/instrumentation-lru-memoizer')],
  memcached: ['MemcachedInstrumentation', () => require('@opentelemetry/instrumentation-memcached')],
  mongodb: ['MongoDBInstrumentation', () => require('@opentelemetry/instrumentation-mongodb')],
  mongoose: ['MongooseInstrumentation', () => require('@opentelemetry/instrumentation-mongoose')],
  mysql2: ['MySQL2Instrumentation', () => require('@opentelemetry/instrumentation-mysql2')],
  mysql: ['MySQLInstrumentation', () => require('@opentelemetry/instrumentation-mysql')],
  'nestjs-core': ['NestInstrumentation', () => require('@opentelemetry/instrumentation-nestjs-core')],
  net: ['NetInstrumentation', () => require('@opentelemetry/instrumentation-net')],
  openai: ['OpenAIInstrumentation', () => require('@opentelemetry/instrumentation-openai')],
  oracledb: ['OracleInstrumentation', () => require('@opentelemetry/instrumentation-oracledb')],
  pg: ['PgInstrumentation', () => require('@opentelemetry/instrumentation-pg')],
  pino: ['PinoInstrumentation', () => require('@opentelemetry/instrumentation-pino')],
  redis: ['RedisInstrumentation', () => require('@opentelemetry/instrumentation-redis')],
  restify: ['RestifyInstrumentation', () => require('@opentelemetry/instrumentation-restify')],
  router: ['RouterInstrumentation', () => require('@opentelemetry/instrumentation-router')],
  'runtime-node': ['RuntimeNodeInstrumentation', () => require('@opentelemetry/instrumentation-runtime-node')],
  'socket.io': ['SocketIoInstrumentation', () => require('@opentelemetry/instrumentation-socket.io')],
  tedious: ['TediousInstrumentation', () => require('@opentelemetry/instrumentation-tedious')],
  undici: ['UndiciInstrumentation', () => require('@opentelemetry/instrumentation-undici')],
  winston: ['WinstonInstrumentation', () => require('@opentelemetry/instrumentation-winston')],
};

export const instrumentationClasses: Readonly<Record<string, string>> = Object.freeze(Object.fromEntries(
  Object.entries(instrumentationTable).map(([name, [className]]) => [name, className])));

/** The packages required by literal name (all but host-metrics). */
export const instrumentationModules: Readonly<Record<string, () => unknown>> = Object.freeze(Object.fromEntries(
  Object.entries(instrumentationTable).flatMap(([name, [, load]]) => (load ? [[name, load]] : []))));

export const instrumentationNames: readonly string[] = Object.freeze(Object.keys(instrumentationClasses));

/**
 * Off unless named in OTEL_NODE_ENABLED_INSTRUMENTATIONS: `fs`, `dns` and `net` make a span per
 * syscall-sized operation (hundreds of MiB at start-up in some apps), `host-metrics` is a metrics
 * poller rather than an instrumentation.
 */
export const defaultOffInstrumentations: readonly string[] = Object.freeze(['fs', 'dns', 'net', 'host-metrics']);

/**
 * Off by default too unless layer spans are on (AUDITRACE_LAYER_SPANS): `router` makes nothing but
 * a span per layer of the `router` package, which Express 5 runs on beside instrumentation-express
 * (whose layers then make no spans but still find the route, lib/layer-spans.ts).
 */
export const layerSpanInstrumentations: readonly string[] = Object.freeze(['router']);

/**
 * The modules each instrumentation patches: the names of its module definitions (a test checks
 * this table against the packages). `[]`: nothing to look for (diagnostics channels, runtime
 * metrics, host metrics). Built-in modules are always there.
 */
export const instrumentationTargets: Readonly<Record<string, readonly string[]>> = Object.freeze({
  amqplib: ['amqplib'],
  'aws-lambda': [],
  'aws-sdk': ['@aws-sdk/middleware-stack', '@smithy/middleware-stack', '@smithy/core', '@aws-sdk/smithy-client', '@smithy/smithy-client'],
  bunyan: ['bunyan'],
  'cassandra-driver': ['cassandra-driver'],
  connect: ['connect'],
  cucumber: ['@cucumber/cucumber'],
  dataloader: ['dataloader'],
  dns: ['dns'],
  express: ['express'],
  fs: ['fs'],
  'generic-pool': ['generic-pool'],
  graphql: ['graphql'],
  grpc: ['@grpc/grpc-js'],
  hapi: ['@hapi/hapi'],
  'host-metrics': [],
  http: ['http', 'https'],
  ioredis: ['ioredis'],
  kafkajs: ['kafkajs'],
  knex: ['knex'],
  koa: ['koa'],
  'lru-memoizer': ['lru-memoizer'],
  memcached: ['memcached'],
  mongodb: ['mongodb'],
  mongoose: ['mongoose'],
  mysql2: ['mysql2'],
  mysql: ['mysql'],
  'nestjs-core': ['@nestjs/core'],
  net: ['net'],
  openai: ['openai'],
  oracledb: ['oracledb'],
  pg: ['pg', 'pg-pool'],
  pino: ['pino'],
  redis: ['redis', '@redis/client', '@node-redis/client'],
  restify: ['restify'],
  router: ['router'],
  'runtime-node': [],
  'socket.io': ['socket.io'],
  tedious: ['tedious'],
  undici: [],
  winston: ['winston'],
});

/** The `node_modules` directories a require from the app can reach: up from each root, then NODE_PATH. */
export function nodeModulesDirs(roots: readonly string[], nodePath: string | undefined): string[] {
  const dirs: string[] = [];
  for (const root of roots) {
    for (let dir = nodePath_.resolve(root); ; dir = nodePath_.dirname(dir)) {
      if (nodePath_.basename(dir) !== 'node_modules') dirs.push(nodePath_.join(dir, 'node_modules'));
      if (nodePath_.dirname(dir) === dir) break;
    }
  }
  for (const p of (nodePath ?? '').split(nodePath_.delimiter)) if (p) dirs.push(nodePath_.resolve(p));
  return [...new Set(dirs)];
}

/**
 * Of the default set, the instrumentations with something to patch in this app: an instrumentation
 * whose modules are installed in none of `dirs` would only cost start-up (loading the 37 packages
 * is about a third of it). Explicitly enabled ones are never filtered (see sdk.ts).
 */
export function presentInstrumentations(names: readonly string[], dirs: readonly string[], env: NodeJS.ProcessEnv,
  exists: (path: string) => boolean = existsSync): string[] {
  return names.filter((name) => {
    if (name === 'aws-lambda') return !!(env.LAMBDA_TASK_ROOT && env._HANDLER);
    const targets = instrumentationTargets[name];
    if (!targets || targets.length === 0) return true;
    return targets.some((m) => isBuiltin(m) || dirs.some((d) => exists(nodePath_.join(d, m, 'package.json'))));
  });
}

/** Which instrumentations run, given the two environment lists (already validated); a name listed as enabled always runs. */
export function selectInstrumentations(enabled: readonly string[] | undefined, disabled: readonly string[], layerSpans = false): string[] {
  const base = enabled ?? instrumentationNames.filter((n) => !defaultOffInstrumentations.includes(n)
    && (layerSpans || !layerSpanInstrumentations.includes(n)));
  return base.filter((n) => !disabled.includes(n));
}

// The instrumentation packages are dependencies of auto-instrumentations-node; resolving from there
// finds them even when npm did not hoist them next to us.
let resolveFromAuto: NodeJS.Require | undefined;
function autoRequire(): NodeJS.Require {
  if (!resolveFromAuto) {
    const local = createRequire(__filename);
    resolveFromAuto = createRequire(local.resolve('@opentelemetry/auto-instrumentations-node'));
  }
  return resolveFromAuto;
}

export interface LoadedInstrumentations {
  instrumentations: Instrumentation[];
  failed: { name: string; error: string }[];
}

/** Requires and constructs only the named instrumentations. */
export function loadInstrumentations(names: readonly string[], configs: Record<string, object> = {}): LoadedInstrumentations {
  const instrumentations: Instrumentation[] = [];
  const failed: { name: string; error: string }[] = [];
  for (const name of names) {
    const entry = instrumentationTable[name];
    if (!entry) continue;
    const [className, load] = entry;
    try {
      const mod = (load ? load() : autoRequire()(`@opentelemetry/instrumentation-${name}`)) as Record<string, new (c: object) => Instrumentation>;
      const Ctor = mod[className];
      if (typeof Ctor !== 'function') throw new Error(`export ${className} not found`);
      instrumentations.push(new Ctor(configs[name] ?? {}));
    } catch (err) {
      failed.push({ name, error: err instanceof Error ? err.message : String(err) });
    }
  }
  return { instrumentations, failed };
}

/**
 * Whether an instrumentation patches npm packages only, so that it can wait until one of them is
 * loaded. Built-in modules, diagnostics channels and runtime metrics are patched at start.
 */
export function patchesOnlyPackages(name: string): boolean {
  const targets = instrumentationTargets[name];
  return targets !== undefined && targets.length > 0 && !targets.some((m) => isBuiltin(m));
}

/**
 * The npm package a bare specifier names: `@scope/name/sub` → `@scope/name`, `name/sub` → `name`.
 * Undefined for what cannot name a package: relative and absolute paths, URLs and `node:` (a colon),
 * subpath imports (`#x`).
 */
export function packageOf(specifier: string): string | undefined {
  const c = specifier.charCodeAt(0);
  // '.', '/', '#', backslash
  if (specifier === '' || c === 46 || c === 47 || c === 35 || c === 92 || specifier.includes(':')) return undefined;
  const slash = specifier.indexOf('/');
  if (c !== 64 /* '@' */) return slash === -1 ? specifier : specifier.slice(0, slash);
  if (slash === -1) return undefined;
  const next = specifier.indexOf('/', slash + 1);
  return next === -1 ? specifier : specifier.slice(0, next);
}

type ResolveHook = (specifier: string, context: object, next: (specifier: string, context: object) => unknown) => unknown;
type RegisterHooks = (hooks: { resolve: ResolveHook }) => { deregister(): void };
interface ModuleLoader { prototype: { require: (this: unknown, id: string) => unknown } }

interface BuiltinHost { getBuiltinModule?: (this: unknown, id: string) => unknown }

export interface DeferralOptions {
  /** `module.registerHooks` (tests pass their own; null: this Node has none). */
  registerHooks?: RegisterHooks | null | undefined;
  /** The CommonJS loader whose `prototype.require` is wrapped. */
  loader?: ModuleLoader;
  /** Where `getBuiltinModule` lives (`process`). */
  host?: BuiltinHost;
  /** The modules whose first load creates a name (default: the instrumentation's targets). */
  targetsOf?: (name: string) => readonly string[];
}

/** Stops a deferral: no instrumentation is created after it. */
export type StopDeferral = () => void;

/**
 * Creates each named instrumentation when one of its packages is first required or imported, from
 * anywhere (a package nested in a dependency's own node_modules included): requiring 37
 * instrumentation packages at start costs more start-up than anything else, while an app loads a
 * handful of the packages they patch. `require` is caught in `Module.prototype.require`, so that
 * the require-in-the-middle hook a new instrumentation installs there sees the very require that
 * created it; `import` in a module resolve hook (`module.registerHooks`), which runs before the
 * import-in-the-middle wrapper of the package is evaluated. Built-in modules count too (`node:`
 * or not, and through `process.getBuiltinModule`), for other work that waits on them (`targetsOf`:
 * sdk.ts's TLS audits). All step aside once every one was created. Undefined when this Node has no
 * `module.registerHooks`: the caller creates them now.
 */
export function deferInstrumentations(names: readonly string[], create: (name: string) => void, opts: DeferralOptions = {}): StopDeferral | undefined {
  const registerHooks = 'registerHooks' in opts ? opts.registerHooks : (nodeModule as unknown as { registerHooks?: RegisterHooks }).registerHooks;
  const loader = opts.loader ?? (nodeModule as unknown as { Module: ModuleLoader }).Module;
  const host = opts.host ?? (process as unknown as BuiltinHost);
  const targetsOf = opts.targetsOf ?? ((name: string) => instrumentationTargets[name] ?? []);
  if (typeof registerHooks !== 'function') return undefined;
  const waiting = new Map<string, string[]>();
  for (const name of names) {
    for (const target of targetsOf(name)) {
      const list = waiting.get(target);
      if (list) list.push(name);
      else waiting.set(target, [name]);
    }
  }
  if (waiting.size === 0) return () => undefined;

  const due = (specifier: unknown): boolean => {
    if (typeof specifier !== 'string' || waiting.size === 0) return false;
    const pkg = specifier.startsWith('node:') ? specifier.slice(5) : packageOf(specifier);
    const list = pkg === undefined ? undefined : waiting.get(pkg);
    if (!list) return false;
    for (const name of list) {
      // Off the waiting list first: creating it requires modules, which comes back through here.
      for (const target of targetsOf(name)) {
        const rest = waiting.get(target)?.filter((n) => n !== name);
        if (rest && rest.length > 0) waiting.set(target, rest);
        else waiting.delete(target);
      }
      try {
        create(name);
      } catch {
        // `create` reports its own failures; a throw here would fail the application's require
      }
    }
    if (waiting.size === 0) queueMicrotask(stop);
    return true;
  };

  const original = loader.prototype.require;
  const requireFirst = function (this: unknown, id: string): unknown {
    const top = loader.prototype.require;
    // Through the new `require` when the instrumentation just created installed a hook there: it
    // must see this very require, and it wraps this function.
    // eslint-disable-next-line prefer-rest-params
    if (due(id) && loader.prototype.require !== top) return loader.prototype.require.apply(this, arguments as unknown as [string]);
    // eslint-disable-next-line prefer-rest-params
    return original.apply(this, arguments as unknown as [string]);
  };
  loader.prototype.require = requireFirst;
  let handle: { deregister(): void } | undefined = registerHooks({
    resolve(specifier, context, next) {
      due(specifier);
      return next(specifier, context);
    },
  });
  // A built-in module can also be had without require or import.
  const originalBuiltin = host.getBuiltinModule;
  const builtinFirst = typeof originalBuiltin === 'function'
    ? function (this: unknown, id: string): unknown {
      due(id);
      // eslint-disable-next-line prefer-rest-params
      return originalBuiltin.apply(this, arguments as unknown as [string]);
    }
    : undefined;
  if (builtinFirst) host.getBuiltinModule = builtinFirst;
  function stop(): void {
    waiting.clear();
    // Left in place (as a pass-through) when another hook has wrapped it since.
    if (loader.prototype.require === requireFirst) loader.prototype.require = original;
    if (builtinFirst && host.getBuiltinModule === builtinFirst) host.getBuiltinModule = originalBuiltin;
    handle?.deregister();
    handle = undefined;
  }
  return stop;
}
