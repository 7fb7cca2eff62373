import type { ExportConfig } from './config';
import type { Telemetry } from './sdk';
import { redactUrl } from './diagnostics';
import { version } from './version';

function signal(name: string, cfg: ExportConfig): string {
  if (cfg.exporters.length === 0) return `${name}=off`;
  const where = cfg.exporters.map((e) => (e === 'otlp' ? `${redactUrl(cfg.endpoint)} (${cfg.protocol})` : e)).join('+');
  const headers = Object.keys(cfg.headers);
  // Header values are usually credentials: show that they are set, never what they are.
  return headers.length > 0 ? `${name}=${where} headers[${headers.map((h) => `${h}=[redacted]`).join(',')}]` : `${name}=${where}`;
}

/** The one line printed at start-up: enough to tell from a log what this process is and sends. */
export function startupLine(t: Telemetry): string {
  const attrs = t.resource.attributes;
  const c = t.config;
  return [
    `auditrace ${version}:`,
    `service.name=${JSON.stringify(attrs['service.name'])}`,
    `service.instance.id=${JSON.stringify(attrs['service.instance.id'])}`,
    signal('traces', c.traces),
    signal('metrics', c.metrics),
    signal('logs', c.logs),
    `instrumentations=${t.instrumentationNames.join(',') || 'none'}`,
    // Counted, not listed: the default set waits for ~30 packages; OTEL_LOG_LEVEL=info names each as it comes.
    ...(t.deferredInstrumentations.length > 0 ? [`on-first-load=${t.deferredInstrumentations.length}`] : []),
  ].join(' ');
}
