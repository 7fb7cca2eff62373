import { logs, SeverityNumber, trace } from '@opentelemetry/api';
import type { Logger as WinstonLogger } from 'winston';
import { processIdentity } from './identity';
import { formatConfigError, parseConfig } from './config';
import { writeLine } from './diagnostics';
import { rfc3339Now } from './audit/ids';
import { currentRequest } from './request-context';
import { current } from './start';
import { version } from './version';

/** Fields that tie a log line to its trace, request and instance; empty outside a request/span. */
export function correlationFields(): Record<string, string> {
  const out: Record<string, string> = {};
  const sc = trace.getActiveSpan()?.spanContext();
  if (sc && sc.traceId !== '00000000000000000000000000000000') {
    out.trace_id = sc.traceId;
    out.span_id = sc.spanId;
  }
  const request = currentRequest();
  if (request) out['request.id'] = request.requestId;
  return out;
}

const SEVERITY: Record<string, SeverityNumber> = {
  error: SeverityNumber.ERROR, warn: SeverityNumber.WARN, info: SeverityNumber.INFO, http: SeverityNumber.INFO,
  verbose: SeverityNumber.DEBUG2, debug: SeverityNumber.DEBUG, silly: SeverityNumber.TRACE,
};

let instance: WinstonLogger | undefined;

/**
 * A winston logger for the application's ordinary logs: JSON lines on stdout with an RFC 3339 UTC
 * `time`, the correlation fields and the instance id; also sent as OTel log records when the logs
 * pipeline is on (our own bridge: `@opentelemetry/winston-transport` 0.34 targets the old
 * `api-logs` package and its records go nowhere on SDK 3.x).
 */
export function getLogger(): WinstonLogger {
  if (instance) return instance;
  const winston = require('winston') as typeof import('winston');
  const TransportBase = require('winston-transport') as typeof import('winston-transport');
  let config = current()?.config;
  if (!config) {
    const parsed = parseConfig(process.env);
    for (const e of parsed.errors) writeLine(formatConfigError(e));
    config = parsed.config;
  }
  const id = processIdentity(config);
  const service = { 'service.name': String(id['service.name']), 'service.instance.id': String(id['service.instance.id']) };

  const correlate = winston.format((info) => {
    Object.assign(info, { time: rfc3339Now(), ...correlationFields(), ...service });
    return info;
  });

  class OtelBridge extends TransportBase {
    private readonly otel = logs.getLogger('auditrace.logger', version);
    override log(info: Record<string | symbol, unknown>, next: () => void): void {
      try {
        const { message, level, time: _t, trace_id: _tr, span_id: _sp, ...rest } = info as Record<string, unknown>;
        const attributes: Record<string, string | number | boolean> = {};
        for (const [k, v] of Object.entries(rest)) {
          if (typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean') attributes[k] = v;
        }
        this.otel.emit({
          body: typeof message === 'string' ? message : JSON.stringify(message),
          severityText: String(level),
          severityNumber: SEVERITY[String(level)] ?? SeverityNumber.INFO,
          attributes,
        });
      } catch {
        // a log line must never break the application
      }
      next();
    }
  }

  const transports: import('winston-transport')[] = [new winston.transports.Console()];
  if (config.logs.exporters.length > 0 && current()) transports.push(new OtelBridge());
  instance = winston.createLogger({
    level: process.env.LOG_LEVEL ?? 'info',
    format: winston.format.combine(correlate(), winston.format.json()),
    transports,
    exitOnError: false,
  });
  return instance;
}
