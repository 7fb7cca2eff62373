import { logs, SeverityNumber, trace } from '@opentelemetry/api';
import type { Logger as WinstonLogger } from 'winston';
import { processIdentity } from './identity';
import { formatConfigError, parseConfig } from './config';
import { writeLine } from './diagnostics';
import { rfc3339Now } from './audit/ids';
import { createRedactor, escapeRawJson, sanitize } from './audit/serialize';
import type { SerializeLimits } from './audit/serialize';
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

  // The application's values pass the audit serialiser's rules before they are written or
  // exported: deny-listed keys (password, token, authorization, cookie, …) at any depth, the
  // string limit, cycles, getters and Proxies. `level` is winston's own.
  const limits: SerializeLimits = { maxFieldBytes: config.audit.maxFieldBytes, maxRecordBytes: config.audit.maxRecordBytes, maxDepth: 8, maxKeys: 200 };
  const isRedacted = createRedactor(config.audit.redactKeys);
  const safe = winston.format((info) => {
    const fields = info as Record<string, unknown>;
    for (const key of Object.keys(fields)) {
      if (key === 'level') continue;
      fields[key] = key !== 'message' && isRedacted(key) ? '[REDACTED]' : sanitize(fields[key], limits, isRedacted);
    }
    return info;
  });
  // After winston's JSON: what JSON.stringify leaves raw (U+2028, C1 controls, bidi overrides) is
  // escaped, as in the audit file: a value cannot start a line of its own or restyle a terminal.
  const MESSAGE = Symbol.for('message');
  const escaped = winston.format((info) => {
    const line = (info as Record<symbol, unknown>)[MESSAGE];
    if (typeof line === 'string') (info as Record<symbol, unknown>)[MESSAGE] = escapeRawJson(line);
    return info;
  });

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
    format: winston.format.combine(safe(), correlate(), winston.format.json(), escaped()),
    transports,
    exitOnError: false,
  });
  return instance;
}
