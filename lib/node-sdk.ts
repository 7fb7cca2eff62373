import type { NodeSDKConfiguration } from '@opentelemetry/sdk-node';
import { formatConfigError, parseConfig } from './config';
import { writeLine } from './diagnostics';
import { Edge } from './edge';
import { exceptionGuard } from './exception-guard';
import { clientUrlRedaction } from './url-redaction';
import { buildInstrumentations, buildPropagator, buildResource, Pipelines } from './sdk';

/**
 * For applications that build their own `NodeSDK`: returns their options with auditrace's
 * resource (instance identity), instrumentations and export pipelines added. What the caller set
 * wins: their resource attributes override ours, their processors and exporters replace ours,
 * and an instrumentation they configured themselves is not added twice.
 *
 * ```js
 * const sdk = new NodeSDK(nodeSdkOptions({ serviceName: 'orders' }));
 * sdk.start();
 * ```
 */
export function nodeSdkOptions(options: Partial<NodeSDKConfiguration> = {}): Partial<NodeSDKConfiguration> {
  const { config, errors } = parseConfig(process.env);
  for (const e of errors) writeLine(formatConfigError(e));
  const pipelines = new Pipelines(config);
  const edge = new Edge(config.edge);
  let resource = buildResource(config);
  if (options.resource) resource = resource.merge(options.resource);
  const theirs = new Set((options.instrumentations ?? []).flat().map((i) => i.instrumentationName));
  const ours = buildInstrumentations(config, edge).filter((i) => !theirs.has(i.instrumentationName));
  // A trace exporter given alone gets the batch processor NodeSDK would have made, after the guard.
  const { traceExporter, ...rest } = options;
  const spanProcessors = options.spanProcessors ? [exceptionGuard(), clientUrlRedaction(), ...options.spanProcessors]
    : traceExporter ? [exceptionGuard(), clientUrlRedaction(), pipelines.batchSpanProcessorFor(traceExporter)]
      : config.traces.exporters.length === 0 ? undefined : pipelines.spanProcessors();
  return {
    autoDetectResources: false,
    ...rest,
    resource,
    // The edge policy (request ids, untrusted trace context) lives in the propagator.
    textMapPropagator: edge.propagator(options.textMapPropagator ?? buildPropagator(config)),
    instrumentations: [...(options.instrumentations ?? []), ...ours],
    // The recordException guard (lib/exception-guard.ts) goes first in the caller's processors as in
    // ours. No exporter at all (OTEL_TRACES_EXPORTER=none): NodeSDK makes no tracer provider.
    ...(spanProcessors ? { spanProcessors } : {}),
    ...(options.logRecordProcessors || config.logs.exporters.length === 0 ? {} : { logRecordProcessors: pipelines.logRecordProcessors() }),
    ...(options.metricReaders || config.metrics.exporters.length === 0 ? {} : { metricReaders: pipelines.metricReaders() }),
  };
}
