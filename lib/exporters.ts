import type { ExportConfig, Signal } from './config';
import type { RateLimitedWarnings } from './diagnostics';

interface ExportResultLike { code: number; error?: Error }
interface Exporter<T> {
  export(items: T, done: (r: ExportResultLike) => void): void;
  shutdown(): Promise<void>;
}

// Only the package for the chosen protocol is loaded: the protobuf exporter pulls in the
// serializer, the JSON one does not, and neither loads gRPC.
const otlpModules: Record<Signal, Record<'http/protobuf' | 'http/json', string>> = {
  traces: { 'http/protobuf': '@opentelemetry/exporter-trace-otlp-proto', 'http/json': '@opentelemetry/exporter-trace-otlp-http' },
  logs: { 'http/protobuf': '@opentelemetry/exporter-logs-otlp-proto', 'http/json': '@opentelemetry/exporter-logs-otlp-http' },
  metrics: { 'http/protobuf': '@opentelemetry/exporter-metrics-otlp-proto', 'http/json': '@opentelemetry/exporter-metrics-otlp-http' },
};
const otlpClass: Record<Signal, string> = { traces: 'OTLPTraceExporter', logs: 'OTLPLogExporter', metrics: 'OTLPMetricExporter' };
const consoleFactory: Record<Signal, () => unknown> = {
  traces: () => new (require('@opentelemetry/sdk-trace').ConsoleSpanExporter)(),
  logs: () => new (require('@opentelemetry/sdk-logs').ConsoleLogRecordExporter)(),
  metrics: () => new (require('@opentelemetry/sdk-metrics').ConsoleMetricExporter)(),
};

export function createOtlpExporter(signal: Signal, cfg: ExportConfig): unknown {
  const mod = require(otlpModules[signal][cfg.protocol]) as Record<string, new (c: object) => unknown>;
  return new mod[otlpClass[signal]]!({
    url: cfg.endpoint,
    headers: { ...cfg.headers },
    timeoutMillis: cfg.timeoutMs,
    compression: cfg.compression,
  });
}

export function createConsoleExporter(signal: Signal): unknown {
  return consoleFactory[signal]();
}

/**
 * Reports failed exports as a rate-limited warning and counts them. Upstream logs every failure
 * through `diag` (invisible by default) and the data is then gone: here it is at least said.
 */
export function watchExports<T>(exporter: Exporter<T>, signal: Signal, endpoint: string,
  warnings: RateLimitedWarnings, onFailure: (signal: Signal, items: T) => void): Exporter<T> {
  const original = exporter.export.bind(exporter);
  exporter.export = (items, done) => {
    original(items, (result) => {
      if (result.code !== 0) {
        try {
          onFailure(signal, items);
          const reason = result.error?.message ?? 'unknown error';
          warnings.warn(`export:${signal}`, `could not export ${signal} to ${endpoint}: ${reason}; that batch is dropped`);
        } catch {
          // reporting must never break the export pipeline
        }
      }
      done(result);
    });
  };
  return exporter;
}
