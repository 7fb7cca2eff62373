import { context, diag, DiagLogLevel, logs, metrics, propagation, trace } from '@opentelemetry/api';
import type { Counter, MeterProvider, Span, TextMapPropagator } from '@opentelemetry/api';
import type { Instrumentation } from '@opentelemetry/instrumentation';
import type { Resource } from '@opentelemetry/resources';
import type { BatchConfig, Config, ExportConfig, Signal } from './config';
import { RateLimitedWarnings, redactUrl, writeLine } from './diagnostics';
import { createConsoleExporter, createOtlpExporter, watchExports } from './exporters';
import { ExportBackoff } from './export-backoff';
import { realpathSync } from 'node:fs';
import { dirname } from 'node:path';
import { withoutLayerSpans } from './layer-spans';
import { deferInstrumentations, instrumentationTargets, loadInstrumentations, nodeModulesDirs, patchesOnlyPackages, presentInstrumentations,
  selectInstrumentations } from './instrumentations';
import { processIdentity } from './identity';
import { Edge, onOutgoingHttpRequest, onOutgoingUndiciRequest, watchFrameworkRoutes } from './edge';
import { auditFetchCalls, watchHttpCall, watchHttpResponse } from './backend-calls'; // backend_call_fail records
import { auditTlsFailures } from './tls-audit'; // tls_handshake_fail records
import { auditClientErrors, auditHttpsClientErrors } from './client-errors'; // http_client_error records
import type { ClientRequest, IncomingMessage } from 'node:http';
import { serveThrough } from './http-server';
import type { ServeOptions } from './http-server';
import { ServerDurations } from './server-durations';
import { currentRequest } from './request-context';
import { EmitterContextManager } from './context-manager';
import { version } from './version';
import { PooledIdGenerator } from './random-hex';
import { exceptionGuard } from './exception-guard';
import { clientUrlRedaction } from './url-redaction';
import { koaWithoutLayerSpans } from './koa-layers';

/** What `start()` builds; `shutdown()` flushes and stops all of it. */
export interface Telemetry {
  config: Readonly<Config>;
  resource: Resource;
  instrumentations: Instrumentation[];
  /** Names of the instrumentations created at start. */
  instrumentationNames: string[];
  /** Names of those created when their package is first loaded (none yet at start). */
  deferredInstrumentations: string[];
  /** Module names the instrumentations hook, for the ESM loader's include list. */
  hookedModules: string[];
  /** Resolves `true` when everything was exported in time, `false` on timeout; never rejects. */
  shutdown(): Promise<boolean>;
  forceFlush(): Promise<boolean>;
  /**
   * The same flush with no timer of its own: on a signal the application handles itself, nothing
   * of ours may keep the process alive once the application is done (its exports hold no handle;
   * the final, bounded flush comes at `beforeExit`).
   */
  flushInBackground(): Promise<unknown>;
}

const EXPORT_WARNING_INTERVAL_MS = 60_000;

/** Resource: instance identity, the SDK's own attributes, then opt-in cloud detectors. */
export function buildResource(config: Readonly<Config>): Resource {
  const { defaultResource, resourceFromAttributes, detectResources } = require('@opentelemetry/resources') as typeof import('@opentelemetry/resources');
  const identity = processIdentity(config);
  let resource = defaultResource().merge(resourceFromAttributes({
    ...identity,
    'telemetry.distro.name': 'auditrace',
    'telemetry.distro.version': version,
  }));
  if (config.cloudDetectors.length > 0) {
    const detectors = config.cloudDetectors.flatMap(cloudDetector);
    // Identity wins over what a cloud detector guesses (e.g. a host name).
    resource = detectResources({ detectors }).merge(resource);
  }
  return resource;
}

function cloudDetector(name: string): import('@opentelemetry/resources').ResourceDetector[] {
  const { createRequire } = require('node:module') as typeof import('node:module');
  const fromAuto = createRequire(require.resolve('@opentelemetry/auto-instrumentations-node'));
  switch (name) {
    case 'aws': {
      const m = fromAuto('@opentelemetry/resource-detector-aws');
      return [m.awsEc2Detector, m.awsEcsDetector, m.awsEksDetector, m.awsBeanstalkDetector, m.awsLambdaDetector];
    }
    case 'gcp': return [fromAuto('@opentelemetry/resource-detector-gcp').gcpDetector];
    case 'azure': {
      const m = fromAuto('@opentelemetry/resource-detector-azure');
      return [m.azureAppServiceDetector, m.azureFunctionsDetector, m.azureVmDetector];
    }
    case 'alibaba': return [fromAuto('@opentelemetry/resource-detector-alibaba-cloud').alibabaCloudEcsDetector];
    default: return [];
  }
}

export function buildPropagator(config: Readonly<Config>): TextMapPropagator | undefined {
  if (config.propagators.length === 0) return undefined;
  const core = require('@opentelemetry/core') as typeof import('@opentelemetry/core');
  const list = config.propagators.map((name): TextMapPropagator => {
    switch (name) {
      case 'tracecontext': return new core.W3CTraceContextPropagator();
      case 'baggage': return new core.W3CBaggagePropagator();
      case 'b3': {
        const b3 = require('@opentelemetry/propagator-b3');
        return new b3.B3Propagator();
      }
      case 'b3multi': {
        const b3 = require('@opentelemetry/propagator-b3');
        return new b3.B3Propagator({ injectEncoding: b3.B3InjectEncoding.MULTI_HEADER });
      }
    }
  });
  return list.length === 1 ? list[0] : new core.CompositePropagator({ propagators: list });
}

function buildSampler(config: Readonly<Config>): import('@opentelemetry/sdk-trace').Sampler {
  const t = require('@opentelemetry/sdk-trace') as typeof import('@opentelemetry/sdk-trace');
  const { name, ratio } = config.sampler;
  switch (name) {
    case 'always_on': return new t.AlwaysOnSampler();
    case 'always_off': return new t.AlwaysOffSampler();
    case 'traceidratio': return new t.TraceIdRatioBasedSampler(ratio);
    case 'parentbased_always_on': return new t.ParentBasedSampler({ root: new t.AlwaysOnSampler() });
    case 'parentbased_always_off': return new t.ParentBasedSampler({ root: new t.AlwaysOffSampler() });
    case 'parentbased_traceidratio': return new t.ParentBasedSampler({ root: new t.TraceIdRatioBasedSampler(ratio) });
  }
}

/** The SDK's diagnostics go to stderr with our prefix, never to the app's stdout. */
function installDiag(config: Readonly<Config>): void {
  if (!config.logLevel || config.logLevel === 'none') return;
  const levels: Record<string, DiagLogLevel> = {
    error: DiagLogLevel.ERROR, warn: DiagLogLevel.WARN, info: DiagLogLevel.INFO,
    debug: DiagLogLevel.DEBUG, verbose: DiagLogLevel.VERBOSE, all: DiagLogLevel.ALL,
  };
  const line = (level: string) => (msg: string, ...args: unknown[]) =>
    writeLine(`auditrace: otel ${level}: ${[msg, ...args.map(safeString)].join(' ')}`);
  diag.setLogger({
    error: line('error'), warn: line('warn'), info: line('info'), debug: line('debug'), verbose: line('verbose'),
  }, { logLevel: levels[config.logLevel] ?? DiagLogLevel.INFO, suppressOverrideMessage: true });
}

function safeString(v: unknown): string {
  try {
    return typeof v === 'string' ? v : v instanceof Error ? v.message : JSON.stringify(v) ?? String(v);
  } catch {
    return String(v);
  }
}

/** Counts what could not be exported, so loss is reported as a metric as well as a warning. */
class LossCounters {
  private failures: Counter | undefined;
  private dropped: Counter | undefined;
  bind(): void {
    const meter = metrics.getMeter('auditrace', version);
    this.failures = meter.createCounter('auditrace.export.failures', {
      description: 'Export requests that failed; their data is dropped', unit: '{request}',
    });
    this.dropped = meter.createCounter('auditrace.export.dropped', {
      description: 'Spans, log records and metric batches dropped because their export failed, or unsent in the pause after a failed export', unit: '{item}',
    });
  }
  /** `sent`: false for a batch dropped unsent while exports are paused after a failure. */
  record(signal: Signal, items: unknown, sent: boolean): void {
    if (sent) this.failures?.add(1, { signal });
    this.dropped?.add(Array.isArray(items) ? items.length : 1, { signal });
  }
}

/** The edge policy; with AUDITRACE_PROXY_PROTOCOL, servers first read the load balancer's PROXY header. */
export function createEdge(config: Readonly<Config>): Edge {
  watchFrameworkRoutes();
  if (!config.edge.proxyProtocol) return new Edge(config.edge);
  const pp = require('./proxy-protocol') as typeof import('./proxy-protocol');
  const edge = new Edge(config.edge, pp.proxySourceOf);
  const warnings = new RateLimitedWarnings(EXPORT_WARNING_INTERVAL_MS);
  pp.enableProxyProtocol({
    trust: edge.trust,
    onRejected: (peer, reason) => warnings.warn('proxy-protocol', `refused a connection from trusted peer ${JSON.stringify(peer ?? 'unknown')}: ${reason}`),
  });
  return edge;
}

/** Exporters per signal, with failed exports warned about and counted. */
export class Pipelines {
  private readonly warnings = new RateLimitedWarnings(EXPORT_WARNING_INTERVAL_MS);
  private readonly losses = new LossCounters();
  /**
   * `lifecycle`: auditrace's own start() owns the process's end (the bounded flush at `beforeExit`
   * and on signals), so exports on the wire need not hold the process (exporters.ts). An
   * application's own NodeSDK (nodeSdkOptions) awaits its shutdown with nothing else holding the
   * loop: its exports keep their sockets as Node makes them.
   */
  constructor(private readonly config: Readonly<Config>, private readonly lifecycle = false) {}

  private exportersFor(signal: Signal, cfg: ExportConfig) {
    return cfg.exporters.map((name) => {
      if (name !== 'otlp') return { name, exporter: createConsoleExporter(signal), backoff: undefined };
      const backoff = new ExportBackoff();
      const exporter = watchExports(createOtlpExporter(signal, cfg, { holdProcess: !this.lifecycle }) as never, signal, redactUrl(cfg.endpoint), this.warnings,
        (s: Signal, items: unknown, sent: boolean) => this.losses.record(s, items, sent), backoff);
      return { name, exporter, backoff };
    });
  }

  /** Call once a meter provider is global, so loss counters reach it. */
  bindLossCounters(): void {
    this.losses.bind();
  }

  /** With `durations`, each reader also reports the server durations aggregated there (server-durations.ts). */
  metricReaders(durations?: ServerDurations): import('@opentelemetry/sdk-metrics').MetricReader[] {
    const m = require('@opentelemetry/sdk-metrics') as typeof import('@opentelemetry/sdk-metrics');
    const c = this.config.metrics;
    return this.exportersFor('metrics', c).map(({ exporter, backoff }) => {
      const producer = durations?.producer();
      const reader = new m.PeriodicExportingMetricReader({
        exporter: exporter as import('@opentelemetry/sdk-metrics').PushMetricExporter,
        exportIntervalMillis: c.intervalMs,
        exportTimeoutMillis: c.exportTimeoutMs,
        ...(producer ? { metricProducers: [producer] } : {}),
      });
      producer?.attach(reader);
      return flushesAlwaysSend(reader, backoff);
    });
  }

  /**
   * The SDK's batch processors drop silently when their queue is full (only a metric counts it):
   * say so, at most once a minute. Hooks the processor's own buffer method; if a later SDK renames
   * it, the processor is left as it is.
   */
  private warnOnDrops<T extends object>(processor: T, queueField: string, what: string, variable: string): T {
    const p = processor as unknown as Record<string, unknown> & { _maxQueueSize?: number };
    const add = p._addToBuffer;
    if (typeof add !== 'function' || !Array.isArray(p[queueField])) return processor;
    const warnings = this.warnings;
    p._addToBuffer = function (this: typeof p, item: unknown) {
      if ((this[queueField] as unknown[]).length >= (this._maxQueueSize ?? Infinity)) {
        warnings.warn(`drop:${what}`, `${what} dropped: the export queue is full (${this._maxQueueSize}); `
          + `raise ${variable} or export faster (counted in otel.sdk.processor.*.processed{error.type=queue_full})`);
      }
      return (add as (i: unknown) => unknown).call(this, item);
    };
    return processor;
  }

  /** The recordException guard (lib/exception-guard.ts) and the client spans' URL redaction first, then one processor per exporter. */
  spanProcessors(meterProvider?: MeterProvider): import('@opentelemetry/sdk-trace').SpanProcessor[] {
    const t = require('@opentelemetry/sdk-trace') as typeof import('@opentelemetry/sdk-trace');
    return [exceptionGuard(), clientUrlRedaction(), ...this.exportersFor('traces', this.config.traces).map(({ name, exporter, backoff }) => name === 'console'
      ? new t.SimpleSpanProcessor({ exporter: exporter as never })
      : flushesAlwaysSend(this.batchSpanProcessorFor(exporter, meterProvider), backoff))];
  }

  /**
   * A batch processor for one exporter (ours, or the application's: nodeSdkOptions' `traceExporter`):
   * the OTEL_BSP_* settings, and the warning when its queue drops spans.
   */
  batchSpanProcessorFor(exporter: unknown, meterProvider?: MeterProvider): import('@opentelemetry/sdk-trace').SpanProcessor {
    const t = require('@opentelemetry/sdk-trace') as typeof import('@opentelemetry/sdk-trace');
    return this.warnOnDrops(new t.BatchSpanProcessor(batchOptions(exporter, this.config.traces.batch, meterProvider)),
      '_finishedSpans', 'spans', 'OTEL_BSP_MAX_QUEUE_SIZE');
  }

  logRecordProcessors(meterProvider?: MeterProvider): import('@opentelemetry/sdk-logs').LogRecordProcessor[] {
    const l = require('@opentelemetry/sdk-logs') as typeof import('@opentelemetry/sdk-logs');
    return this.exportersFor('logs', this.config.logs).map(({ name, exporter, backoff }) => name === 'console'
      ? new l.SimpleLogRecordProcessor({ exporter: exporter as never })
      : flushesAlwaysSend(this.warnOnDrops(new l.BatchLogRecordProcessor(batchOptions(exporter, this.config.logs.batch, meterProvider)),
        '_finishedLogRecords', 'log records', 'OTEL_BLRP_MAX_QUEUE_SIZE'), backoff));
  }
}

/**
 * A flush the application asks for (`forceFlush`) and the one at shutdown send what is queued even
 * during the pause after a failed export: the process may not get another chance.
 */
function flushesAlwaysSend<T extends object>(target: T, backoff: ExportBackoff | undefined): T {
  if (!backoff) return target;
  const t = target as unknown as Record<string, unknown>;
  for (const method of ['forceFlush', 'shutdown']) {
    const f = t[method];
    if (typeof f !== 'function') continue;
    t[method] = function (this: unknown, ...args: unknown[]) {
      return backoff.bypass(() => (f as (...a: unknown[]) => Promise<unknown>).apply(this, args));
    };
  }
  return target;
}

/**
 * Our settings for upstream instrumentations. winston: the app's own loggers get the request id
 * and instance id beside trace_id/span_id; log sending stays off because upstream's transport
 * targets the pre-3.x logs API and its records would silently go nowhere.
 */
function instrumentationConfigs(config: Readonly<Config>, edge: Edge): Record<string, object> {
  const instanceId = String(processIdentity(config)['service.instance.id']);
  // The exporters' own uploads are not the application's traffic: keep them out of its
  // http.client metrics (their spans are already suppressed).
  const collectorOrigins = new Set([config.traces, config.metrics, config.logs]
    .filter((c) => c.exporters.includes('otlp'))
    .map((c) => { try { const u = new URL(c.endpoint); return `${u.hostname}:${u.port || (u.protocol === 'https:' ? '443' : '80')}`; } catch { return ''; } }));
  return {
    http: {
      ignoreOutgoingRequestHook: (req: { hostname?: string | null; host?: string | null; port?: string | number | null; protocol?: string | null }) => {
        const host = (req.hostname ?? req.host ?? 'localhost').replace(/^\[|\]$/g, '');
        const port = String(req.port ?? (req.protocol === 'https:' ? 443 : 80));
        return collectorOrigins.has(`${host}:${port}`) || collectorOrigins.has(`[${host}]:${port}`);
      },
      // The server side is ours (http-server.ts); the hooks below see client requests only.
      disableIncomingRequestInstrumentation: true,
      requestHook: (_span: Span, req: ClientRequest) => {
        onOutgoingHttpRequest(edge, req);
        if (config.edge.backendCallRecords) watchHttpCall(req); // backend_call_fail records
      },
      responseHook: (_span: Span, res: IncomingMessage) => {
        if (config.edge.backendCallRecords) watchHttpResponse(res); // backend_call_fail records
      },
    },
    undici: {
      requestHook: (_span: Span, req: { origin?: string; addHeader?: (k: string, v: string) => unknown }) => onOutgoingUndiciRequest(edge, req),
    },
    winston: {
      disableLogSending: true,
      logHook: (_span: unknown, record: Record<string, unknown>) => {
        const request = currentRequest();
        if (request) record['request.id'] = request.requestId;
        record['service.instance.id'] = instanceId;
      },
    },
  };
}

/** The batch processors' options from the OTEL_BSP_* / OTEL_BLRP_* settings (same shape for both). */
function batchOptions(exporter: unknown, b: BatchConfig, meterProvider: MeterProvider | undefined) {
  return {
    exporter: exporter as never,
    scheduledDelayMillis: b.scheduleDelayMs,
    exportTimeoutMillis: b.exportTimeoutMs,
    maxQueueSize: b.maxQueueSize,
    maxExportBatchSize: b.maxExportBatchSize,
    ...(meterProvider ? { selfObsMeterProvider: meterProvider } : {}),
  };
}

/** Where the app's modules resolve from: the working directory and the main script's directory. */
function appModuleDirs(): string[] {
  const roots = [process.cwd()];
  const main = process.argv[1];
  if (main) {
    try {
      roots.push(dirname(realpathSync(main)));
    } catch {
      // `node -e`, a REPL, or a main module that is not a file: the working directory is all there is
    }
  }
  return nodeModulesDirs(roots, process.env.NODE_PATH);
}

/**
 * Of the selected instrumentations, those with something to patch in this app (the default set
 * shrinks to what is installed; a list the user wrote is kept as written; under Yarn Plug'n'Play
 * there is no node_modules to look in).
 */
function presentSelection(config: Readonly<Config>): string[] {
  const names = selectInstrumentations(config.instrumentations.enabled, config.instrumentations.disabled, config.instrumentations.layerSpans);
  if (config.instrumentations.enabled !== undefined || process.versions.pnp) return names;
  return presentInstrumentations(names, appModuleDirs(), process.env);
}

function loadReporting(names: readonly string[], configs: Record<string, object>, edge: Edge, layerSpans: boolean,
  serve?: ServeOptions): Instrumentation[] {
  const loaded = loadInstrumentations(names, configs);
  for (const f of loaded.failed) writeLine(`auditrace: warning: instrumentation ${f.name} did not load: ${f.error}`);
  for (const i of loaded.instrumentations) {
    if (i.instrumentationName === '@opentelemetry/instrumentation-http') serveThrough(i, edge, serve);
    // Its route tracking, not its spans (layer-spans.ts).
    if (!layerSpans && i.instrumentationName === '@opentelemetry/instrumentation-express' && !withoutLayerSpans(i)) {
      writeLine(`auditrace: warning: this instrumentation-express (${i.instrumentationVersion}) is not one auditrace knows how to run without layer spans: it makes a span per layer`);
    }
    if (!layerSpans && i.instrumentationName === '@opentelemetry/instrumentation-koa' && !koaWithoutLayerSpans(i)) {
      writeLine(`auditrace: warning: this instrumentation-koa (${i.instrumentationVersion}) is not one auditrace knows how to run without layer spans: it makes a span per middleware`);
    }
  }
  return loaded.instrumentations;
}

/** All selected instrumentations, created now (for a `NodeSDK` the application starts itself). */
export function buildInstrumentations(config: Readonly<Config>, edge: Edge = new Edge(config.edge)): Instrumentation[] {
  return loadReporting(presentSelection(config), instrumentationConfigs(config, edge), edge, config.instrumentations.layerSpans);
}

interface Providers {
  tracerProvider?: import('@opentelemetry/api').TracerProvider;
  meterProvider?: MeterProvider;
  loggerProvider?: import('@opentelemetry/api').LoggerProvider;
}

interface StartedInstrumentations {
  now: Instrumentation[];
  deferred: string[];
  stop(): void;
}

/**
 * Those of built-in modules, channels and runtime metrics are created now; those of npm packages
 * when their package is first required or imported (`deferInstrumentations`), so start-up pays
 * only for what the app loads.
 */
function startInstrumentations(config: Readonly<Config>, edge: Edge, providers: Providers,
  serve: ServeOptions): StartedInstrumentations {
  const { registerInstrumentations } = require('@opentelemetry/instrumentation') as typeof import('@opentelemetry/instrumentation');
  const configs = instrumentationConfigs(config, edge);
  const create = (names: readonly string[]) => {
    const list = loadReporting(names, configs, edge, config.instrumentations.layerSpans, serve);
    if (list.length > 0) registerInstrumentations({ instrumentations: list, ...providers });
    return list;
  };
  const names = selectInstrumentations(config.instrumentations.enabled, config.instrumentations.disabled, config.instrumentations.layerSpans);
  // The server side (http-server.ts) rides on the http instrumentation's module hooks.
  if (config.edge.accessRecords && !names.includes('http')) {
    writeLine('auditrace: warning: the http instrumentation is not enabled (OTEL_NODE_ENABLED_INSTRUMENTATIONS / '
      + 'OTEL_NODE_DISABLED_INSTRUMENTATIONS): no server spans and no http_request access records');
  }
  const later = names.filter(patchesOnlyPackages);
  // aws-lambda, which has no module to wait for, only in a Lambda function.
  const now = create(presentInstrumentations(names.filter((n) => !later.includes(n)), [], process.env));
  const verbose = config.logLevel !== undefined && ['info', 'debug', 'verbose', 'all'].includes(config.logLevel);
  // The TLS audits wait, like the instrumentations, for the app to load a module that makes TLS
  // servers; most apps never do, and `node:tls` costs ≈ 5 ms and ≈ 3 MiB at start.
  const tlsNow = tlsLoaded();
  if (tlsNow) startTlsAudits();
  const waiting = tlsNow ? later : [...later, TLS_AUDITS];
  const stop = deferInstrumentations(waiting, (name) => {
    if (name === TLS_AUDITS) return startTlsAudits();
    const created = create([name]);
    now.push(...created);
    if (verbose && created.length > 0) writeLine(`auditrace: instrumentation ${name} created: its package was loaded`);
  }, { targetsOf: (name) => (name === TLS_AUDITS ? TLS_MODULES : instrumentationTargets[name] ?? []) });
  if (stop) return { now, deferred: later, stop };
  // No module hooks in this Node: create now what the app has installed, and audit TLS now.
  if (!tlsNow) startTlsAudits();
  const present = new Set(presentSelection(config));
  return { now: [...now, ...create(later.filter((n) => present.has(n)))], deferred: [], stop: () => undefined };
}

/** Deferred like an instrumentation: failed TLS handshakes and unparseable requests on https servers. */
const TLS_AUDITS = '(tls audits)';
/** The public modules through which an app gets TLS servers (Node's own modules load `tls` inside). */
const TLS_MODULES = ['tls', 'https', 'http2', '_tls_wrap'];

function startTlsAudits(): void {
  auditTlsFailures();
  auditHttpsClientErrors();
}

/** Whether `node:tls` is loaded already (start() called late): then no hook would see it load. */
function tlsLoaded(): boolean {
  const list = (process as unknown as { moduleLoadList?: unknown }).moduleLoadList;
  // Unknown in some other runtime: audit now rather than risk missing the servers.
  return !Array.isArray(list) || list.includes('NativeModule tls');
}

export function buildTelemetry(config: Readonly<Config>): Telemetry {
  installDiag(config);
  const pipelines = new Pipelines(config, true);
  const resource = buildResource(config);

  context.setGlobalContextManager(new EmitterContextManager().enable());
  const edge = createEdge(config);
  // Always installed, even with OTEL_PROPAGATORS=none: the request id must travel regardless.
  propagation.setGlobalPropagator(edge.propagator(buildPropagator(config)));

  // Metrics first: the trace and log processors report their own drops through it.
  let meterProvider: import('@opentelemetry/sdk-metrics').MeterProvider | undefined;
  let durations: ServerDurations | undefined;
  if (config.metrics.exporters.length > 0) {
    const m = require('@opentelemetry/sdk-metrics') as typeof import('@opentelemetry/sdk-metrics');
    durations = new ServerDurations();
    meterProvider = new m.MeterProvider({ resource, readers: pipelines.metricReaders(durations) });
    metrics.setGlobalMeterProvider(meterProvider);
    pipelines.bindLossCounters();
  }

  let tracerProvider: import('@opentelemetry/sdk-trace').TracerProvider | undefined;
  if (config.traces.exporters.length > 0) {
    const t = require('@opentelemetry/sdk-trace') as typeof import('@opentelemetry/sdk-trace');
    tracerProvider = new t.TracerProvider({
      resource,
      sampler: buildSampler(config),
      idGenerator: new PooledIdGenerator(),
      spanLimits: definedOnly(config.spanLimits),
      spanProcessors: pipelines.spanProcessors(meterProvider),
    });
    trace.setGlobalTracerProvider(tracerProvider);
  }

  let loggerProvider: import('@opentelemetry/sdk-logs').LoggerProvider | undefined;
  if (config.logs.exporters.length > 0) {
    const l = require('@opentelemetry/sdk-logs') as typeof import('@opentelemetry/sdk-logs');
    loggerProvider = new l.LoggerProvider({ resource, processors: pipelines.logRecordProcessors(meterProvider) });
    logs.setGlobalLoggerProvider(loggerProvider);
  }

  // --- audit records of unparseable requests (client-errors.ts; https servers and failed TLS
  //     handshakes once the app loads TLS: startTlsAudits) and of failed outgoing calls (below)
  auditClientErrors((peer) => edge.trust(peer));
  const started = startInstrumentations(config, edge, {
    ...(tracerProvider ? { tracerProvider } : {}),
    ...(meterProvider ? { meterProvider } : {}),
    ...(loggerProvider ? { loggerProvider } : {}),
  }, {
    ...(durations ? { durations } : {}),
    // Our tracer provider's sampler is one of OTEL_TRACES_SAMPLER's, none of which reads
    // attributes; without ours (traces off) spans go to whoever's is global: theirs may.
    attributesAtStart: tracerProvider === undefined,
  });
  const instrumentations = started.now;
  if (config.edge.backendCallRecords) auditFetchCalls(); // backend-calls.ts

  const providers = [tracerProvider, loggerProvider, meterProvider].filter(<T>(p: T | undefined): p is T => p !== undefined);
  let stopping: Promise<boolean> | undefined;
  return {
    config,
    resource,
    instrumentations,
    instrumentationNames: instrumentations.map((i) => i.instrumentationName.replace('@opentelemetry/instrumentation-', '')),
    deferredInstrumentations: started.deferred,
    hookedModules: [...new Set([...hookedModules(instrumentations), ...started.deferred.flatMap((n) => instrumentationTargets[n] ?? [])])],
    forceFlush: () => withTimeout(Promise.allSettled(providers.map((p) => p.forceFlush())), config.shutdownTimeoutMs),
    flushInBackground: () => Promise.allSettled(providers.map((p) => p.forceFlush())),
    shutdown: () => {
      // Traces and logs first so their drop counts reach the final metrics export.
      started.stop();
      stopping ??= withTimeout((async () => {
        await Promise.allSettled([tracerProvider?.shutdown(), loggerProvider?.shutdown()]);
        await meterProvider?.shutdown().catch(() => undefined);
      })(), config.shutdownTimeoutMs);
      return stopping;
    },
  };
}

function hookedModules(instrumentations: Instrumentation[]): string[] {
  const names = new Set<string>();
  for (const i of instrumentations) {
    const defs = (i as unknown as { getModuleDefinitions?: () => { name: string }[] }).getModuleDefinitions?.() ?? [];
    for (const d of defs) names.add(d.name);
  }
  return [...names];
}

function definedOnly<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

/** Resolves `true` when `p` settles in time, `false` when the time is up first; never rejects. */
export function withTimeout(p: Promise<unknown>, ms: number): Promise<boolean> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), ms);
    p.then(() => undefined, () => undefined).then(() => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}
