import { resolve as resolvePath } from 'node:path';
import { instrumentationNames } from './instrumentations';
import { isValidTrustEntry } from './trust';

/**
 * Every environment variable auditrace reads, parsed and validated in one place into one frozen
 * object. The table below is the single source: the parser refuses to read a variable that is not
 * in it, and the README's variable table is generated from it (a test keeps them equal).
 */

export type Signal = 'traces' | 'metrics' | 'logs';
export type OtlpProtocol = 'http/protobuf' | 'http/json';
export type ExporterName = 'otlp' | 'console';
export type LogLevel = 'none' | 'error' | 'warn' | 'info' | 'debug' | 'verbose' | 'all';
export type SamplerName =
  | 'always_on' | 'always_off' | 'traceidratio'
  | 'parentbased_always_on' | 'parentbased_always_off' | 'parentbased_traceidratio';
export type PropagatorName = 'tracecontext' | 'baggage' | 'b3' | 'b3multi';

export interface ExportConfig {
  /** Empty when the signal is off (`none`). */
  exporters: ExporterName[];
  endpoint: string;
  headers: Readonly<Record<string, string>>;
  timeoutMs: number;
  protocol: OtlpProtocol;
  compression: 'gzip' | 'none';
}

export interface BatchConfig {
  scheduleDelayMs: number;
  exportTimeoutMs: number;
  maxQueueSize: number;
  maxExportBatchSize: number;
}

export interface Config {
  sdkDisabled: boolean;
  strict: boolean;
  quiet: boolean;
  /** Undefined: the SDK's own diagnostics stay off, auditrace prints its own lines. */
  logLevel: LogLevel | undefined;
  shutdownTimeoutMs: number;
  serviceName: string | undefined;
  resourceAttributes: Readonly<Record<string, string>>;
  cloudDetectors: readonly string[];
  propagators: readonly PropagatorName[];
  sampler: { name: SamplerName; ratio: number };
  spanLimits: {
    attributeCountLimit: number | undefined;
    attributeValueLengthLimit: number | undefined;
    eventCountLimit: number | undefined;
    linkCountLimit: number | undefined;
  };
  traces: ExportConfig & { batch: BatchConfig };
  logs: ExportConfig & { batch: BatchConfig };
  metrics: ExportConfig & { intervalMs: number; exportTimeoutMs: number };
  instrumentations: {
    enabled: readonly string[] | undefined;
    disabled: readonly string[];
    /** A span per framework layer (Express middleware and handlers, `router` layers). */
    layerSpans: boolean;
  };
  audit: AuditConfig;
  edge: EdgeConfig;
}

export interface EdgeConfig {
  trustedProxies: readonly string[];
  forwardedHeader: 'x-forwarded-for' | 'forwarded';
  proxyProtocol: boolean;
  requestIdHeader: string;
  requestIdResponseHeader: boolean;
  forwardClientAddress: 'internal' | 'always' | 'never';
  accessRecords: boolean;
  /** `turn`: a turn's access records are written together at its end; `response`: each inside res.end(). */
  accessRecordWrite: 'turn' | 'response';
  backendCallRecords: boolean;
}

export interface AuditConfig {
  /** An absolute path, or `stdout`. */
  destination: string;
  fsync: 'always' | 'interval' | 'never';
  fsyncIntervalMs: number;
  maxFileBytes: number;
  maxFiles: number;
  bufferRecords: number;
  maxFieldBytes: number;
  maxRecordBytes: number;
  redactKeys: readonly string[];
  otlp: boolean;
  /** Never printed: it keys the hash chain. */
  hmacKey: Buffer | undefined;
  checkpointIntervalMs: number;
}

export interface ConfigError {
  variable: string;
  value: string;
  expected: string;
  fallback: string;
}

type Default = string | number | boolean | undefined;
export interface VariableDoc {
  name: string;
  default: Default;
  /** Shown instead of `default` when the default is computed. */
  defaultText?: string;
  meaning: string;
}

const SIGNALS: readonly Signal[] = ['traces', 'metrics', 'logs'];
const DEFAULT_ENDPOINT = 'http://localhost:4318';

function perSignal(signal: Signal): VariableDoc[] {
  const S = signal.toUpperCase();
  return [
    { name: `OTEL_${S}_EXPORTER`, default: 'otlp', meaning: `Exporters for ${signal}: \`otlp\`, \`console\` (comma-separated), or \`none\`.` },
    { name: `OTEL_EXPORTER_OTLP_${S}_ENDPOINT`, default: undefined, defaultText: `base endpoint + \`/v1/${signal}\``, meaning: `Full URL for ${signal}, used as given.` },
    { name: `OTEL_EXPORTER_OTLP_${S}_HEADERS`, default: undefined, defaultText: 'base headers', meaning: `Headers for ${signal}; merged over the base headers.` },
    { name: `OTEL_EXPORTER_OTLP_${S}_TIMEOUT`, default: undefined, defaultText: 'base timeout', meaning: `Export timeout for ${signal} in milliseconds.` },
    { name: `OTEL_EXPORTER_OTLP_${S}_PROTOCOL`, default: undefined, defaultText: 'base protocol', meaning: `\`http/protobuf\` or \`http/json\` for ${signal}.` },
    { name: `OTEL_EXPORTER_OTLP_${S}_COMPRESSION`, default: undefined, defaultText: 'base compression', meaning: `\`gzip\` or \`none\` for ${signal}.` },
  ];
}

export const variables: readonly VariableDoc[] = Object.freeze([
  { name: 'OTEL_SDK_DISABLED', default: false, meaning: '`true` turns auditrace off entirely: no SDK, no instrumentation.' },
  { name: 'OTEL_SERVICE_NAME', default: undefined, defaultText: "`service.name` from `OTEL_RESOURCE_ATTRIBUTES`, else the app's `package.json` name, else `unknown_service:node`", meaning: 'The service name on every span, log and metric.' },
  { name: 'OTEL_RESOURCE_ATTRIBUTES', default: '', meaning: 'Extra resource attributes, `key=value` pairs separated by commas, values percent-encoded.' },
  { name: 'OTEL_NODE_RESOURCE_DETECTORS', default: 'local', meaning: 'Resource detectors. Local identity (service, host, process, container, Kubernetes downward API) is always on; add cloud detectors by name: `aws`, `gcp`, `azure`, `alibaba` (they make network calls). `none` and `all` (= local only) are accepted.' },
  { name: 'OTEL_LOG_LEVEL', default: undefined, defaultText: 'unset: only auditrace\'s own lines', meaning: 'OpenTelemetry diagnostic level: `none`, `error`, `warn`, `info`, `debug`, `verbose`, `all`. `none` also silences the start-up line. Below `info`, diagnostics of the SDK itself are printed.' },
  { name: 'OTEL_PROPAGATORS', default: 'tracecontext,baggage', meaning: 'Context propagators: `tracecontext`, `baggage`, `b3`, `b3multi`, or `none`.' },
  { name: 'OTEL_TRACES_SAMPLER', default: 'parentbased_always_on', meaning: 'Sampler: `always_on`, `always_off`, `traceidratio`, `parentbased_always_on`, `parentbased_always_off`, `parentbased_traceidratio`.' },
  { name: 'OTEL_TRACES_SAMPLER_ARG', default: 1, meaning: 'Sampling ratio from 0 to 1 for the `traceidratio` samplers.' },
  { name: 'OTEL_NODE_ENABLED_INSTRUMENTATIONS', default: undefined, defaultText: 'all but `fs`, `dns`, `net`, `host-metrics` (and `router` unless `AUDITRACE_LAYER_SPANS=true`)', meaning: 'Comma-separated instrumentation names (as in `@opentelemetry/instrumentation-<name>`) to enable. Those of built-in modules, channels and runtime metrics start with the app; one that patches npm packages is loaded when the app first requires or imports one of them (`OTEL_LOG_LEVEL=info` prints a line for each), so a package never loaded costs nothing.' },
  { name: 'OTEL_NODE_DISABLED_INSTRUMENTATIONS', default: '', meaning: 'Comma-separated instrumentation names to disable.' },
  { name: 'AUDITRACE_LAYER_SPANS', default: false, meaning: '`true`: a span for every Express middleware, router and request handler (instrumentation-express), every layer of the `router` package (instrumentation-router, which Express 5 runs on, so each layer gets two) and every Koa middleware and `@koa/router` handler (instrumentation-koa), as upstream does by default. Off: instrumentation-express and instrumentation-koa still run and find the route (Express: mounted and nested routers, sub-apps; Koa: the `@koa/router` routers given to `app.use` and those nested in them, as upstream), which names the server span and fills `http.route`, but their layers make no spans: an error passed to `next(err)` (or thrown, or a rejection of a Koa middleware) is an exception event on the server span, whose status gets its message when the answer is a 5xx (a 4xx leaves it unset); an attribute the application sets on the active span goes to the server span, and spans of work that leaves the process (database, HTTP, queue calls) are children of the server span. instrumentation-router is off unless named in `OTEL_NODE_ENABLED_INSTRUMENTATIONS`.' },
  { name: 'OTEL_EXPORTER_OTLP_ENDPOINT', default: DEFAULT_ENDPOINT, meaning: 'Base OTLP/HTTP URL; `/v1/traces`, `/v1/metrics`, `/v1/logs` are appended.' },
  { name: 'OTEL_EXPORTER_OTLP_HEADERS', default: '', meaning: 'Headers sent with every export, `key=value` pairs separated by commas, values percent-encoded. Values are redacted in the start-up line.' },
  { name: 'OTEL_EXPORTER_OTLP_TIMEOUT', default: 10000, meaning: 'Export request timeout in milliseconds.' },
  { name: 'OTEL_EXPORTER_OTLP_PROTOCOL', default: 'http/protobuf', meaning: '`http/protobuf` or `http/json`. (`grpc` is not shipped: auditrace exports over HTTP only.)' },
  { name: 'OTEL_EXPORTER_OTLP_COMPRESSION', default: 'none', meaning: '`gzip` or `none`.' },
  ...SIGNALS.flatMap(perSignal),
  { name: 'OTEL_BSP_SCHEDULE_DELAY', default: 5000, meaning: 'Span batch: delay between exports, milliseconds.' },
  { name: 'OTEL_BSP_EXPORT_TIMEOUT', default: 30000, meaning: 'Span batch: time allowed for one export, milliseconds.' },
  { name: 'OTEL_BSP_MAX_QUEUE_SIZE', default: 2048, meaning: 'Span batch: spans held in memory at most; beyond it spans are dropped and counted.' },
  { name: 'OTEL_BSP_MAX_EXPORT_BATCH_SIZE', default: 512, meaning: 'Span batch: spans per export request at most.' },
  { name: 'OTEL_BLRP_SCHEDULE_DELAY', default: 1000, meaning: 'Log batch: delay between exports, milliseconds.' },
  { name: 'OTEL_BLRP_EXPORT_TIMEOUT', default: 30000, meaning: 'Log batch: time allowed for one export, milliseconds.' },
  { name: 'OTEL_BLRP_MAX_QUEUE_SIZE', default: 2048, meaning: 'Log batch: records held in memory at most.' },
  { name: 'OTEL_BLRP_MAX_EXPORT_BATCH_SIZE', default: 512, meaning: 'Log batch: records per export request at most.' },
  { name: 'OTEL_METRIC_EXPORT_INTERVAL', default: 60000, meaning: 'Metrics: export interval, milliseconds.' },
  { name: 'OTEL_METRIC_EXPORT_TIMEOUT', default: 30000, meaning: 'Metrics: time allowed for one export, milliseconds (at most the interval).' },
  { name: 'OTEL_ATTRIBUTE_COUNT_LIMIT', default: 128, meaning: 'Attributes per span at most.' },
  { name: 'OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT', default: undefined, defaultText: 'unlimited', meaning: 'Characters per attribute value at most.' },
  { name: 'OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT', default: undefined, defaultText: '`OTEL_ATTRIBUTE_COUNT_LIMIT`', meaning: 'Attributes per span at most (overrides the general limit).' },
  { name: 'OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT', default: undefined, defaultText: '`OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT`', meaning: 'Characters per span attribute value at most.' },
  { name: 'OTEL_SPAN_EVENT_COUNT_LIMIT', default: 128, meaning: 'Events per span at most.' },
  { name: 'OTEL_SPAN_LINK_COUNT_LIMIT', default: 128, meaning: 'Links per span at most.' },
  { name: 'AUDITRACE_STRICT', default: false, meaning: '`true`: an invalid variable stops the process (exit code 78) before application code runs, instead of a warning and the default.' },
  { name: 'AUDITRACE_QUIET', default: false, meaning: '`true`: no start-up line (warnings and errors are still printed).' },
  { name: 'AUDITRACE_SHUTDOWN_TIMEOUT_MS', default: 5000, meaning: 'On SIGTERM/SIGINT, `beforeExit` and `shutdown()`: time allowed to flush telemetry, milliseconds.' },
  { name: 'AUDITRACE_TRUSTED_PROXIES', default: '', defaultText: 'none', meaning: 'Peers whose forwarding headers are believed: CIDRs, addresses and the names `loopback`, `linklocal`, `uniquelocal`, `private` (comma-separated). From any other peer, `X-Forwarded-For`, `Forwarded`, the request id header and trace context are not believed.' },
  { name: 'AUDITRACE_FORWARDED_HEADER', default: 'x-forwarded-for', meaning: 'The header your trusted proxies append the client address to: `x-forwarded-for` or `forwarded` (RFC 7239). Only that one is read: a proxy passes the other through untouched, so a client could write it.' },
  { name: 'AUDITRACE_PROXY_PROTOCOL', default: false, meaning: '`true`: read a PROXY protocol v1/v2 header at the start of every connection from a trusted peer (servers behind an L4 load balancer); a trusted peer that sends none is disconnected.' },
  { name: 'AUDITRACE_REQUEST_ID_HEADER', default: 'x-request-id', meaning: 'Header that carries the request id in and out.' },
  { name: 'AUDITRACE_REQUEST_ID_RESPONSE_HEADER', default: false, meaning: '`true`: echo the request id in every response.' },
  { name: 'AUDITRACE_FORWARD_CLIENT_ADDRESS', default: 'internal', meaning: 'Where outgoing requests carry the original client address (as `X-Forwarded-For`, so the next service can resolve it through its own trusted proxies): `internal` = to loopback/private addresses and cluster-internal names (no dot, `.svc`, `.cluster.local`, `.internal`, `.local`), `always`, or `never`. A client address is personal data: it is not sent to third parties by default.' },
  { name: 'AUDITRACE_ACCESS_RECORDS', default: true, meaning: 'One `http_request` audit record per incoming request, plus `authn_fail`/`authz_fail` for 401/403 responses the application did not record itself.' },
  { name: 'AUDITRACE_ACCESS_RECORD_WRITE', default: 'turn', meaning: 'When an access record is written. `turn`: at the end of the event-loop turn in which the response was sent, together with that turn\'s other access records (one `write(2)`; about a fifth less CPU per request); an exit, an uncaught exception or a handled signal writes them first, a SIGKILL or an out-of-memory abort in that turn loses them. `response`: inside `res.end()`, one `write(2)` per record. The application\'s `audit.*()` records are always written before the call returns.' },
  { name: 'AUDITRACE_BACKEND_CALL_RECORDS', default: true, meaning: 'A `backend_call_fail` audit record for every outgoing call that fails (network error or 5xx), with the error the other side returned (truncated).' },
  { name: 'AUDITRACE_AUDIT_FILE', default: 'auditrace-audit.jsonl', meaning: 'Where audit records are appended, one JSON object per line: a file path (relative to the working directory; parent directories are created) or `stdout`.' },
  { name: 'AUDITRACE_AUDIT_FSYNC', default: 'interval', meaning: '`always`: fsync after every record (survives power loss, slowest); `interval`: at most `AUDITRACE_AUDIT_FSYNC_INTERVAL_MS` of records (plus the time one fdatasync takes, which runs off the event loop) can be lost on power loss; `never`: left to the kernel. A crash of the app loses nothing in any mode.' },
  { name: 'AUDITRACE_AUDIT_FSYNC_INTERVAL_MS', default: 1000, meaning: 'Interval of `AUDITRACE_AUDIT_FSYNC=interval`, milliseconds.' },
  { name: 'AUDITRACE_AUDIT_MAX_FILE_BYTES', default: 104857600, meaning: 'Rotate the audit file (rename to `.1`, `.2`, …) before it would exceed this size; `0` never rotates. A record is never split.' },
  { name: 'AUDITRACE_AUDIT_MAX_FILES', default: 0, meaning: 'Rotated audit files kept; `0` keeps all (audit data is never deleted unless you say so).' },
  { name: 'AUDITRACE_AUDIT_BUFFER_RECORDS', default: 10000, meaning: 'While the destination fails (disk full, unwritable), records are kept in memory up to this many and retried; beyond it they are dropped and counted.' },
  { name: 'AUDITRACE_AUDIT_MAX_FIELD_BYTES', default: 4096, meaning: 'Longest string value in a record, UTF-8 bytes; longer values are truncated with a marker.' },
  { name: 'AUDITRACE_AUDIT_MAX_RECORD_BYTES', default: 16384, meaning: 'Longest record; beyond it the free-form `context` is dropped (marked) first.' },
  { name: 'AUDITRACE_REDACT_KEYS', default: '', meaning: 'Extra key names (comma-separated) whose values are replaced by `[REDACTED]` anywhere in `context`, added to the built-in deny-list (password, secret, token, authorization, cookie, api key, session id, ssn, card number, …).' },
  { name: 'AUDITRACE_AUDIT_HMAC_KEY', default: undefined, defaultText: 'unset (plain SHA-256)', meaning: 'Secret key (at least 16 characters) for the audit hash chain: each record\'s `audit.prev` becomes an HMAC-SHA256, so someone who can edit the file cannot recompute the chain. Never printed. Give `auditrace verify` the same key.' },
  { name: 'AUDITRACE_AUDIT_CHECKPOINT_INTERVAL_MS', default: 60000, meaning: 'Interval of `audit_checkpoint` records (written even when nothing else happens, signed with the HMAC key when set), so a deleted tail or a silent instance shows; `0` turns them off.' },
  { name: 'AUDITRACE_AUDIT_OTLP', default: false, meaning: '`true`: also emit every audit record as an OpenTelemetry log record (EventName = the event) over the logs pipeline.' },
] satisfies VariableDoc[]);

const byName = new Map(variables.map((v) => [v.name, v]));

/** Renders a value for an error line: quoted, escaped, short, so a hostile value cannot forge lines. */
export function quote(value: string): string {
  const shown = value.length > 120 ? `${value.slice(0, 120)}…` : value;
  return JSON.stringify(shown);
}

/** Reads variables from one env object, recording every name read and every invalid value. */
/** The longest timer Node keeps (a signed 32-bit count of milliseconds). */
const TIMER_MAX_MS = 2_147_483_647;

class Reader {
  readonly read = new Set<string>();
  readonly errors: ConfigError[] = [];
  constructor(private readonly env: Record<string, string | undefined>) {}

  doc(name: string): VariableDoc {
    const d = byName.get(name);
    if (!d) throw new Error(`auditrace internal error: ${name} is not in the variable table`);
    return d;
  }

  /** The spec treats an empty value like an unset one. */
  raw(name: string): string | undefined {
    this.doc(name);
    this.read.add(name);
    const v = this.env[name];
    return v === undefined || v.trim() === '' ? undefined : v.trim();
  }

  fail(name: string, value: string, expected: string, fallback?: string): void {
    const d = this.doc(name);
    this.errors.push({
      variable: name,
      value,
      expected,
      fallback: fallback ?? (d.defaultText ?? (d.default === undefined ? 'unset' : String(d.default))),
    });
  }

  bool(name: string): boolean {
    const v = this.raw(name);
    const dflt = this.doc(name).default as boolean;
    if (v === undefined) return dflt;
    const lower = v.toLowerCase();
    if (lower === 'true') return true;
    if (lower === 'false') return false;
    this.fail(name, v, '`true` or `false`');
    return dflt;
  }

  int(name: string, opts: { min: number; max?: number }, fallback?: number): number | undefined {
    const v = this.raw(name);
    const dflt = fallback ?? (this.doc(name).default as number | undefined);
    if (v === undefined) return dflt;
    const max = opts.max ?? Number.MAX_SAFE_INTEGER;
    if (/^[+-]?\d+$/.test(v)) {
      const n = Number(v);
      if (Number.isSafeInteger(n) && n >= opts.min && n <= max) return n;
    }
    const range = opts.max !== undefined ? `an integer from ${opts.min} to ${opts.max}`
      : opts.min > 0 ? `an integer of at least ${opts.min}` : 'a non-negative integer';
    this.fail(name, v, range, dflt === undefined ? 'unset' : String(dflt));
    return dflt;
  }

  /**
   * Milliseconds for a timer: Node sets a longer duration to 1 ms (with a TimeoutOverflowWarning),
   * so 3000000000 would export every millisecond or give up a flush at once.
   */
  ms(name: string, opts: { min: number }, fallback?: number): number | undefined {
    return this.int(name, { min: opts.min, max: TIMER_MAX_MS }, fallback);
  }

  oneOf<T extends string>(name: string, accepted: readonly T[], fallback?: T): T | undefined {
    const v = this.raw(name);
    const dflt = fallback ?? (this.doc(name).default as T | undefined);
    if (v === undefined) return dflt;
    const lower = v.toLowerCase() as T;
    if (accepted.includes(lower)) return lower;
    this.fail(name, v, `one of ${accepted.map((a) => `\`${a}\``).join(', ')}`, dflt);
    return dflt;
  }

  /** A comma-separated list whose every item must be accepted; on any bad item the whole value is rejected. */
  list<T extends string>(name: string, accepted: readonly T[], what: string): T[] | undefined {
    const v = this.raw(name);
    if (v === undefined) return undefined;
    const items = v.split(',').map((s) => s.trim().toLowerCase()).filter(Boolean);
    const bad = items.filter((i) => !accepted.includes(i as T));
    if (items.length === 0) {
      // `,,,` is not "none": read as an empty list it would turn everything off.
      this.fail(name, v, `${what} (it names none)`);
      return undefined;
    }
    if (bad.length > 0) {
      this.fail(name, v, `${what} from: ${accepted.join(', ')} (unknown: ${bad.map(quote).join(', ')})`);
      return undefined;
    }
    return [...new Set(items)] as T[];
  }

  url(name: string): string | undefined {
    const v = this.raw(name);
    if (v === undefined) return undefined;
    try {
      // The URL parser silently drops tabs and newlines; a value carrying them is not a URL we accept.
      if (/[\s\u0000-\u001f\u007f]/.test(v)) throw new Error('control characters');
      const u = new URL(v);
      if ((u.protocol === 'http:' || u.protocol === 'https:') && u.hostname !== '') return v;
    } catch {
      // fall through to the error below
    }
    this.fail(name, v, 'an absolute http:// or https:// URL, e.g. `http://collector:4318`');
    return undefined;
  }

  keyValues(name: string): Record<string, string> | undefined {
    const v = this.raw(name);
    if (v === undefined) return undefined;
    const parsed = parseKeyValueList(v);
    if (parsed === undefined) {
      // Header values are credentials: the error shows keys only.
      const shown = name.endsWith('_HEADERS') ? v.replace(/=[^,]*/g, '=[redacted]') : v;
      this.fail(name, shown, '`key=value` pairs separated by commas, values percent-encoded', 'none');
    }
    return parsed;
  }
}

/** W3C-baggage-like `k=v,k2=v2` as the OTel spec defines for headers and resource attributes. */
export function parseKeyValueList(value: string): Record<string, string> | undefined {
  const out: Record<string, string> = {};
  for (const part of value.split(',')) {
    if (part.trim() === '') continue;
    const eq = part.indexOf('=');
    if (eq <= 0) return undefined;
    const key = part.slice(0, eq).trim();
    let val: string;
    try {
      val = decodeURIComponent(part.slice(eq + 1).trim());
    } catch {
      return undefined;
    }
    // Keys are printed (values never are): no whitespace, quotes or control characters.
    if (key === '' || /[\s"\u0000-\u001f\u007f-\u009f]/.test(key)) return undefined;
    out[key] = val;
  }
  return out;
}

function signalUrl(base: string, signal: Signal): string {
  return `${base.replace(/\/+$/, '')}/v1/${signal}`;
}

function exportConfig(r: Reader, signal: Signal, base: {
  endpoint: string; headers: Record<string, string>; timeoutMs: number; protocol: OtlpProtocol; compression: 'gzip' | 'none';
}): ExportConfig {
  const S = signal.toUpperCase();
  const names = r.list(`OTEL_${S}_EXPORTER`, ['otlp', 'console', 'none'] as const, 'a list of exporters');
  let exporters: ExporterName[] = ['otlp'];
  if (names && names.includes('none')) {
    if (names.length > 1) r.fail(`OTEL_${S}_EXPORTER`, names.join(','), '`none` alone, or a list of `otlp`, `console`', 'none');
    exporters = [];
  } else if (names && names.length > 0) {
    exporters = names as ExporterName[];
  }
  const endpoint = r.url(`OTEL_EXPORTER_OTLP_${S}_ENDPOINT`) ?? signalUrl(base.endpoint, signal);
  const headers = { ...base.headers, ...(r.keyValues(`OTEL_EXPORTER_OTLP_${S}_HEADERS`) ?? {}) };
  const timeoutMs = r.ms(`OTEL_EXPORTER_OTLP_${S}_TIMEOUT`, { min: 1 }, base.timeoutMs)!;
  const protocol = r.oneOf(`OTEL_EXPORTER_OTLP_${S}_PROTOCOL`, ['http/protobuf', 'http/json'] as const, base.protocol)!;
  const compression = r.oneOf(`OTEL_EXPORTER_OTLP_${S}_COMPRESSION`, ['gzip', 'none'] as const, base.compression)!;
  return { exporters, endpoint, headers, timeoutMs, protocol, compression };
}

function batchConfig(r: Reader, prefix: 'OTEL_BSP' | 'OTEL_BLRP'): BatchConfig {
  const cfg = {
    scheduleDelayMs: r.ms(`${prefix}_SCHEDULE_DELAY`, { min: 0 })!,
    exportTimeoutMs: r.ms(`${prefix}_EXPORT_TIMEOUT`, { min: 1 })!,
    maxQueueSize: r.int(`${prefix}_MAX_QUEUE_SIZE`, { min: 1 })!,
    maxExportBatchSize: r.int(`${prefix}_MAX_EXPORT_BATCH_SIZE`, { min: 1 })!,
  };
  if (cfg.maxExportBatchSize > cfg.maxQueueSize) {
    r.fail(`${prefix}_MAX_EXPORT_BATCH_SIZE`, String(cfg.maxExportBatchSize),
      `at most ${prefix}_MAX_QUEUE_SIZE (${cfg.maxQueueSize})`, String(cfg.maxQueueSize));
    cfg.maxExportBatchSize = cfg.maxQueueSize;
  }
  return cfg;
}

function edgeConfig(r: Reader): EdgeConfig {
  const proxies = r.raw('AUDITRACE_TRUSTED_PROXIES');
  let trustedProxies: string[] = [];
  if (proxies !== undefined) {
    const entries = proxies.split(',').map((e) => e.trim()).filter(Boolean);
    const bad = entries.filter((e) => !isValidTrustEntry(e));
    if (bad.length > 0) {
      r.fail('AUDITRACE_TRUSTED_PROXIES', proxies, `CIDRs, IP addresses or \`loopback\`, \`linklocal\`, \`uniquelocal\`, \`private\` (invalid: ${bad.map(quote).join(', ')})`, 'none (nothing trusted)');
    } else {
      trustedProxies = entries;
    }
  }
  let header = (r.raw('AUDITRACE_REQUEST_ID_HEADER') ?? 'x-request-id').toLowerCase();
  if (!/^[a-z0-9][a-z0-9-]{0,63}$/.test(header)) {
    r.fail('AUDITRACE_REQUEST_ID_HEADER', header, 'an HTTP header name of letters, digits and dashes', 'x-request-id');
    header = 'x-request-id';
  }
  return {
    trustedProxies,
    forwardedHeader: r.oneOf('AUDITRACE_FORWARDED_HEADER', ['x-forwarded-for', 'forwarded'] as const)!,
    proxyProtocol: r.bool('AUDITRACE_PROXY_PROTOCOL'),
    requestIdHeader: header,
    requestIdResponseHeader: r.bool('AUDITRACE_REQUEST_ID_RESPONSE_HEADER'),
    forwardClientAddress: r.oneOf('AUDITRACE_FORWARD_CLIENT_ADDRESS', ['internal', 'always', 'never'] as const)!,
    accessRecords: r.bool('AUDITRACE_ACCESS_RECORDS'),
    accessRecordWrite: r.oneOf('AUDITRACE_ACCESS_RECORD_WRITE', ['turn', 'response'] as const)!,
    backendCallRecords: r.bool('AUDITRACE_BACKEND_CALL_RECORDS'),
  };
}

function auditConfig(r: Reader): AuditConfig {
  const file = r.raw('AUDITRACE_AUDIT_FILE') ?? (r.doc('AUDITRACE_AUDIT_FILE').default as string);
  const maxFieldBytes = r.int('AUDITRACE_AUDIT_MAX_FIELD_BYTES', { min: 64 })!;
  let maxRecordBytes = r.int('AUDITRACE_AUDIT_MAX_RECORD_BYTES', { min: 1024 })!;
  if (maxRecordBytes < maxFieldBytes) {
    r.fail('AUDITRACE_AUDIT_MAX_RECORD_BYTES', String(maxRecordBytes), `at least AUDITRACE_AUDIT_MAX_FIELD_BYTES (${maxFieldBytes})`, String(maxFieldBytes));
    maxRecordBytes = maxFieldBytes;
  }
  const redact = r.raw('AUDITRACE_REDACT_KEYS');
  return {
    destination: file.toLowerCase() === 'stdout' ? 'stdout' : resolvePath(file),
    fsync: r.oneOf('AUDITRACE_AUDIT_FSYNC', ['always', 'interval', 'never'] as const)!,
    fsyncIntervalMs: r.ms('AUDITRACE_AUDIT_FSYNC_INTERVAL_MS', { min: 1 })!,
    maxFileBytes: r.int('AUDITRACE_AUDIT_MAX_FILE_BYTES', { min: 0 })!,
    maxFiles: r.int('AUDITRACE_AUDIT_MAX_FILES', { min: 0 })!,
    bufferRecords: r.int('AUDITRACE_AUDIT_BUFFER_RECORDS', { min: 0 })!,
    maxFieldBytes,
    maxRecordBytes,
    redactKeys: redact ? redact.split(',').map((k) => k.trim()).filter(Boolean) : [],
    otlp: r.bool('AUDITRACE_AUDIT_OTLP'),
    hmacKey: hmacKey(r),
    checkpointIntervalMs: r.ms('AUDITRACE_AUDIT_CHECKPOINT_INTERVAL_MS', { min: 0 })!,
  };
}

function hmacKey(r: Reader): Buffer | undefined {
  const v = r.raw('AUDITRACE_AUDIT_HMAC_KEY');
  if (v === undefined) return undefined;
  if (v.length < 16) {
    // The value is a secret: the error names its length, never its content.
    r.fail('AUDITRACE_AUDIT_HMAC_KEY', `[${v.length} characters]`, 'a secret of at least 16 characters', 'no key (plain SHA-256 chain)');
    return undefined;
  }
  return Buffer.from(v, 'utf8');
}

const CLOUD_DETECTORS = ['aws', 'gcp', 'azure', 'alibaba'] as const;
const LOCAL_DETECTORS = ['env', 'host', 'os', 'process', 'serviceinstance', 'service', 'container'] as const;

export interface ParsedConfig {
  config: Readonly<Config>;
  errors: readonly ConfigError[];
  /** Names the parser read: a test compares them with the variable table. */
  read: ReadonlySet<string>;
}

export function parseConfig(env: Record<string, string | undefined>): ParsedConfig {
  const r = new Reader(env);

  const detectorList = r.list('OTEL_NODE_RESOURCE_DETECTORS',
    ['all', 'none', 'local', ...LOCAL_DETECTORS, ...CLOUD_DETECTORS] as const, 'a list of detector names') ?? [];
  const cloudDetectors = detectorList.filter((d): d is (typeof CLOUD_DETECTORS)[number] =>
    (CLOUD_DETECTORS as readonly string[]).includes(d));

  const propagatorList = r.list('OTEL_PROPAGATORS', ['tracecontext', 'baggage', 'b3', 'b3multi', 'none'] as const,
    'a list of propagators');
  const propagators: PropagatorName[] = propagatorList === undefined
    ? ['tracecontext', 'baggage']
    : propagatorList.includes('none') ? [] : propagatorList as PropagatorName[];

  const samplerName = r.oneOf('OTEL_TRACES_SAMPLER', ['always_on', 'always_off', 'traceidratio',
    'parentbased_always_on', 'parentbased_always_off', 'parentbased_traceidratio'] as const)!;
  let ratio = 1;
  const ratioRaw = r.raw('OTEL_TRACES_SAMPLER_ARG');
  if (ratioRaw !== undefined) {
    const n = Number(ratioRaw);
    if (/^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$/.test(ratioRaw) && n >= 0 && n <= 1) ratio = n;
    else r.fail('OTEL_TRACES_SAMPLER_ARG', ratioRaw, 'a number from 0 to 1, e.g. `0.25`');
  }

  const instrumentationList = (name: string): string[] | undefined =>
    r.list(name, instrumentationNames, 'a comma-separated list of instrumentation names');

  const baseHeaders = r.keyValues('OTEL_EXPORTER_OTLP_HEADERS') ?? {};
  const base = {
    endpoint: r.url('OTEL_EXPORTER_OTLP_ENDPOINT') ?? DEFAULT_ENDPOINT,
    headers: baseHeaders,
    timeoutMs: r.ms('OTEL_EXPORTER_OTLP_TIMEOUT', { min: 1 })!,
    protocol: r.oneOf('OTEL_EXPORTER_OTLP_PROTOCOL', ['http/protobuf', 'http/json'] as const)!,
    compression: r.oneOf('OTEL_EXPORTER_OTLP_COMPRESSION', ['gzip', 'none'] as const)!,
  };

  const metricsInterval = r.ms('OTEL_METRIC_EXPORT_INTERVAL', { min: 1 })!;
  let metricsTimeout = r.ms('OTEL_METRIC_EXPORT_TIMEOUT', { min: 1 })!;
  // The spec's default timeout (30 s) exceeds a short interval; clamp quietly unless both were set.
  if (metricsTimeout > metricsInterval) metricsTimeout = metricsInterval;

  const attributeCountLimit = r.int('OTEL_ATTRIBUTE_COUNT_LIMIT', { min: 0 });
  const attributeValueLengthLimit = r.int('OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT', { min: 0 });

  const config: Config = {
    sdkDisabled: r.bool('OTEL_SDK_DISABLED'),
    strict: r.bool('AUDITRACE_STRICT'),
    quiet: r.bool('AUDITRACE_QUIET'),
    logLevel: r.oneOf('OTEL_LOG_LEVEL', ['none', 'error', 'warn', 'info', 'debug', 'verbose', 'all'] as const),
    shutdownTimeoutMs: r.ms('AUDITRACE_SHUTDOWN_TIMEOUT_MS', { min: 1 })!,
    serviceName: r.raw('OTEL_SERVICE_NAME'),
    resourceAttributes: r.keyValues('OTEL_RESOURCE_ATTRIBUTES') ?? {},
    cloudDetectors: detectorList.includes('none') ? [] : cloudDetectors,
    propagators,
    sampler: { name: samplerName, ratio },
    spanLimits: {
      attributeCountLimit: r.int('OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT', { min: 0 }, attributeCountLimit),
      attributeValueLengthLimit: r.int('OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT', { min: 0 }, attributeValueLengthLimit),
      eventCountLimit: r.int('OTEL_SPAN_EVENT_COUNT_LIMIT', { min: 0 }),
      linkCountLimit: r.int('OTEL_SPAN_LINK_COUNT_LIMIT', { min: 0 }),
    },
    traces: { ...exportConfig(r, 'traces', base), batch: batchConfig(r, 'OTEL_BSP') },
    logs: { ...exportConfig(r, 'logs', base), batch: batchConfig(r, 'OTEL_BLRP') },
    metrics: { ...exportConfig(r, 'metrics', base), intervalMs: metricsInterval, exportTimeoutMs: metricsTimeout },
    instrumentations: {
      enabled: instrumentationList('OTEL_NODE_ENABLED_INSTRUMENTATIONS'),
      disabled: instrumentationList('OTEL_NODE_DISABLED_INSTRUMENTATIONS') ?? [],
      layerSpans: r.bool('AUDITRACE_LAYER_SPANS'),
    },
    audit: auditConfig(r),
    edge: edgeConfig(r),
  };
  return { config: deepFreeze(config), errors: Object.freeze(r.errors), read: r.read };
}

/** One line per error: the variable, the value, what is accepted, what is used instead. No stack. */
export function formatConfigError(e: ConfigError): string {
  return `auditrace: invalid ${e.variable}=${quote(e.value)}: expected ${e.expected}; using ${e.fallback}`;
}

function deepFreeze<T>(o: T): T {
  // Buffers (the HMAC key) cannot be frozen; they are never exposed outside the config anyway.
  if (ArrayBuffer.isView(o)) return o;
  if (o && typeof o === 'object' && !Object.isFrozen(o)) {
    Object.freeze(o);
    for (const v of Object.values(o as object)) deepFreeze(v);
  }
  return o;
}
