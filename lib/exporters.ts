import type { ExportConfig, Signal } from './config';
import type { RateLimitedWarnings } from './diagnostics';
import { EXPORT_BACKOFF, pausesExports } from './export-backoff';
import type { ExportBackoff } from './export-backoff';

interface ExportResultLike { code: number; error?: Error }
interface Exporter<T> {
  export(items: T, done: (r: ExportResultLike) => void): void;
  shutdown(): Promise<void>;
}

// Only the package for the chosen protocol is loaded: the protobuf exporter pulls in the
// serializer, the JSON one does not, and neither loads gRPC. Literal names, so that the bundle
// (`scripts/bundle.js`) carries them.
const otlpModules: Record<Signal, Record<'http/protobuf' | 'http/json', () => unknown>> = {
  traces: {
    'http/protobuf': () => require('@opentelemetry/exporter-trace-otlp-proto'),
    'http/json': () => require('@opentelemetry/exporter-trace-otlp-http'),
  },
  logs: {
    'http/protobuf': () => require('@opentelemetry/exporter-logs-otlp-proto'),
    'http/json': () => require('@opentelemetry/exporter-logs-otlp-http'),
  },
  metrics: {
    'http/protobuf': () => require('@opentelemetry/exporter-metrics-otlp-proto'),
    'http/json': () => require('@opentelemetry/exporter-metrics-otlp-http'),
  },
};
const otlpClass: Record<Signal, string> = { traces: 'OTLPTraceExporter', logs: 'OTLPLogExporter', metrics: 'OTLPMetricExporter' };
const consoleFactory: Record<Signal, () => unknown> = {
  traces: () => new (require('@opentelemetry/sdk-trace').ConsoleSpanExporter)(),
  logs: () => new (require('@opentelemetry/sdk-logs').ConsoleLogRecordExporter)(),
  metrics: () => new (require('@opentelemetry/sdk-metrics').ConsoleMetricExporter)(),
};

export function createOtlpExporter(signal: Signal, cfg: ExportConfig, opts: { holdProcess?: boolean } = {}): unknown {
  const mod = otlpModules[signal][cfg.protocol]() as Record<string, new (c: object) => unknown>;
  const exporter = new mod[otlpClass[signal]]!({
    url: cfg.endpoint,
    headers: { ...cfg.headers },
    timeoutMillis: cfg.timeoutMs,
    compression: cfg.compression,
  });
  requireHttpInTransport(exporter, opts.holdProcess !== false);
  agentsReadRawHeaders(exporter, opts.holdProcess !== false);
  if (signal === 'traces' && cfg.protocol === 'http/protobuf') encodeSpansOurselves(exporter);
  return exporter;
}

/**
 * The protobuf trace exporter serialises with our encoder (otlp-trace-encoder.ts: the same bytes,
 * a fraction of the CPU). Found by shape, as above: if a later release moves its serializer,
 * upstream's stays.
 */
export function encodeSpansOurselves(exporter: unknown): boolean {
  try {
    const delegate = (exporter as { _delegate?: { _serializer?: { serializeRequest?: unknown; deserializeResponse?: unknown } } })?._delegate;
    const upstream = delegate?._serializer;
    if (!delegate || typeof upstream?.serializeRequest !== 'function' || typeof upstream.deserializeResponse !== 'function') return false;
    const { encodeTraceExport } = require('./otlp-trace-encoder') as typeof import('./otlp-trace-encoder');
    delegate._serializer = {
      serializeRequest: encodeTraceExport,
      deserializeResponse: (upstream.deserializeResponse as (b: Uint8Array) => unknown).bind(upstream),
    };
    return true;
  } catch {
    return false;
  }
}

interface HttpTransportLike {
  _utils: unknown;
  _parameters?: { url?: unknown; agentFactory?: unknown };
  _loadUtils: () => Promise<unknown>;
}

function transportOf(exporter: unknown): HttpTransportLike | undefined {
  return (exporter as { _delegate?: { _transport?: { _transport?: HttpTransportLike } } } | null | undefined)?._delegate?._transport?._transport;
}

/**
 * Every agent the exporter's transport makes (its `agentFactory`: the keep-alive agent with the
 * OTEL_EXPORTER_OTLP_* TLS files, or ours below) gets `keepSocketAlive` from
 * `keepAliveFromRawHeaders`. Found by shape: if a later release moves the factory, the agents stay
 * Node's own.
 */
export function agentsReadRawHeaders(exporter: unknown, holdProcess = true): boolean {
  try {
    const params = transportOf(exporter)?._parameters;
    const factory = params?.agentFactory;
    if (!params || typeof factory !== 'function') return false;
    params.agentFactory = async function agentFactory(this: unknown, ...args: unknown[]) {
      const agent = keepAliveFromRawHeaders(await Reflect.apply(factory, this, args));
      return holdProcess ? agent : exportsDoNotHoldTheProcess(agent);
    };
    return true;
  } catch {
    return false;
  }
}

/**
 * Node's agent reads each response's `headers` as it frees the socket (for a `Keep-Alive: timeout=`
 * hint). Building that object runs `IncomingMessage.prototype._addHeaderLine`, the one function that
 * also builds the headers of every request the application's servers parse: fed the collector's
 * header names too (content-type, date, keep-alive, …), its property store goes megamorphic and V8
 * stops inlining it, ≈ 0.9 µs more per request on the Express benchmark (perf, bench/notes.md). So
 * the exporter's responses get their `headers` from `rawHeaders` here (through the public setter),
 * built by a function of ours; Node's agent then reads what it read before.
 */
export function keepAliveFromRawHeaders<T>(agent: T): T {
  return before(agent, 'keepSocketAlive', (socket) => {
    const res = (socket as { _httpMessage?: { res?: { rawHeaders?: unknown; headers?: unknown } | null } } | null)?._httpMessage?.res;
    if (res != null && typeof res === 'object' && Array.isArray(res.rawHeaders)) res.headers = headersFrom(res.rawHeaders);
  });
}

/**
 * `step` runs with the first argument before the agent's own `method`, which then runs as it
 * would have; a step that throws changes nothing (Node does what it did before).
 */
function before<T>(agent: T, method: 'keepSocketAlive' | 'addRequest', step: (first: unknown) => void): T {
  const a = agent as Record<string, unknown> | null | undefined;
  const original = a?.[method];
  if (typeof original !== 'function') return agent;
  a![method] = function (this: unknown, first: unknown) {
    try {
      step(first);
    } catch {
      // left to Node
    }
    // eslint-disable-next-line prefer-rest-params
    return Reflect.apply(original, this, arguments) as unknown;
  };
  return agent;
}

/**
 * An export on the wire must not keep the process alive: a collector that accepts and never
 * answers held it for the whole OTLP timeout (10 s, then again per retry), so a finished script
 * or a server drained after SIGTERM ran on long past AUDITRACE_SHUTDOWN_TIMEOUT_MS, and `beforeExit`
 * (where the bounded final flush runs) came only after it. Each request's socket is unref'd once
 * the agent hands it over (Node refs a kept-alive socket again when it reuses it). The final flush
 * keeps the process alive by its own timer, for at most the shutdown timeout.
 */
export function exportsDoNotHoldTheProcess<T>(agent: T): T {
  return before(agent, 'addRequest', (req) => {
    (req as { once?: (e: string, f: (s: unknown) => void) => void } | null)?.once?.('socket', (socket) => {
      (socket as { unref?: () => void } | null)?.unref?.();
    });
  });
}

/**
 * A response's headers as Node gives them: lower-case names; repeated values joined with `, `
 * (`set-cookie`: an array; `cookie`: `; `). Node keeps only the first of some single-valued
 * headers where this joins them: no reader of an exporter's response looks at those.
 */
export function headersFrom(raw: readonly unknown[]): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = String(raw[i]).toLowerCase();
    const value = String(raw[i + 1]);
    const had = out[name];
    if (name === 'set-cookie') {
      if (Array.isArray(had)) had.push(value);
      else out[name] = [value];
    } else {
      out[name] = had === undefined ? value : `${String(had)}${name === 'cookie' ? '; ' : ', '}${value}`;
    }
  }
  return out;
}

/**
 * The exporters' HTTP transport gets `node:http` with `await import('http')`. Building that ES
 * module namespace reads `http.WebSocket` and its siblings, whose getters load Node's bundled undici:
 * ≈ 38 ms on the event loop at the first export (and its memory), also at the end of a short
 * script. For a plain-http endpoint the transport is handed the same two things it would have made
 * — `http.request` and a keep-alive `http.Agent`, as upstream's default agent factory builds it —
 * from `require`, at its first export. Found by shape: if a later release moves these fields,
 * nothing is changed and the transport loads them itself. In the bundle (what the package ships)
 * scripts/bundle.js now gives the transport `require` for http and https alike, which covers
 * this too; kept for exporters built from the unbundled dist/lib, and as its tests describe it.
 */
export function requireHttpInTransport(exporter: unknown, holdProcess = true): boolean {
  try {
    const t = transportOf(exporter);
    if (!t || t._utils !== null || typeof t._loadUtils !== 'function') return false;
    const url = t._parameters?.url;
    if (typeof url !== 'string' || new URL(url).protocol !== 'http:') return false;
    t._loadUtils = async function loadUtils() {
      if (t._utils === null) {
        const http = require('node:http') as typeof import('node:http');
        const agent = keepAliveFromRawHeaders(new http.Agent({ keepAlive: true }));
        t._utils = { agent: holdProcess ? agent : exportsDoNotHoldTheProcess(agent), request: http.request };
      }
      return t._utils;
    };
    return true;
  } catch {
    return false;
  }
}

export function createConsoleExporter(signal: Signal): unknown {
  return consoleFactory[signal]();
}

/**
 * Reports failed exports as a rate-limited warning and counts them. Upstream logs every failure
 * through `diag` (invisible by default) and the data is then gone: here it is at least said.
 * After a failed export the next ones wait for `backoff` (export-backoff.ts): a batch that comes
 * in meanwhile is dropped unsent and counted (`onFailure` with `sent` false).
 */
export function watchExports<T>(exporter: Exporter<T>, signal: Signal, endpoint: string,
  warnings: RateLimitedWarnings, onFailure: (signal: Signal, items: T, sent: boolean) => void,
  backoff: ExportBackoff): Exporter<T> {
  const original = exporter.export.bind(exporter);
  exporter.export = (items, done) => {
    const waitMs = backoff.remainingMs();
    if (waitMs > 0) {
      try {
        onFailure(signal, items, false);
      } catch {
        // counting must never break the export pipeline
      }
      done({ code: 1, error: new Error(`${signal} exports to ${endpoint} failed; the next is sent in ${waitMs} ms and this batch is dropped`) });
      return;
    }
    original(items, (result) => {
      if (result.code === 0) {
        backoff.succeeded();
      } else {
        const pause = pausesExports(result.error);
        if (pause) backoff.failed();
        try {
          onFailure(signal, items, true);
          const reason = result.error?.message ?? 'unknown error';
          warnings.warn(`export:${signal}`, `could not export ${signal} to ${endpoint}: ${reason}; that batch is dropped`
            + (pause ? `, and until an export succeeds the next is sent after a pause of ${EXPORT_BACKOFF.initialMs / 1000} s doubling to `
              + `${EXPORT_BACKOFF.maxMs / 1000} s (±${EXPORT_BACKOFF.jitter * 100} %; batches in between are dropped, counted in auditrace.export.dropped)` : ''));
        } catch {
          // reporting must never break the export pipeline
        }
      }
      done(result);
    });
  };
  return exporter;
}
