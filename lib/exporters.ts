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

export function createOtlpExporter(signal: Signal, cfg: ExportConfig): unknown {
  const mod = otlpModules[signal][cfg.protocol]() as Record<string, new (c: object) => unknown>;
  const exporter = new mod[otlpClass[signal]]!({
    url: cfg.endpoint,
    headers: { ...cfg.headers },
    timeoutMillis: cfg.timeoutMs,
    compression: cfg.compression,
  });
  requireHttpInTransport(exporter);
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
  _parameters?: { url?: unknown };
  _loadUtils: () => Promise<unknown>;
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
export function requireHttpInTransport(exporter: unknown): boolean {
  try {
    const t = (exporter as { _delegate?: { _transport?: { _transport?: HttpTransportLike } } })?._delegate?._transport?._transport;
    if (!t || t._utils !== null || typeof t._loadUtils !== 'function') return false;
    const url = t._parameters?.url;
    if (typeof url !== 'string' || new URL(url).protocol !== 'http:') return false;
    t._loadUtils = async function loadUtils() {
      if (t._utils === null) {
        const http = require('node:http') as typeof import('node:http');
        t._utils = { agent: new http.Agent({ keepAlive: true }), request: http.request };
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
