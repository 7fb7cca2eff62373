import { isMainThread } from 'node:worker_threads';
import { formatConfigError, parseConfig } from './config';
import type { Config } from './config';
import { writeLine } from './diagnostics';
import { buildTelemetry } from './sdk';
import type { Telemetry } from './sdk';
import { installShutdownHooks } from './shutdown';
import { startupLine } from './startup-line';

export type StartedVia = 'require' | 'import' | 'api';

interface State {
  via: StartedVia;
  telemetry: Telemetry | undefined;
  warnedTwice: boolean;
  removeHooks?: () => void;
}

// On globalThis, not in a module variable: `--require` and `--import` (or two copies of the
// package) must still see one another and initialise once.
const STATE = Symbol.for('auditrace.state');
type Global = typeof globalThis & { [STATE]?: State };

/** Exit status for a refused start: EX_CONFIG from sysexits.h. */
export const EXIT_CONFIG = 78;

/**
 * Starts telemetry once per process. Never throws into the application: a failure prints one
 * line and the app runs without telemetry. Only `AUDITRACE_STRICT=true` with an invalid variable
 * ends the process, before application code runs.
 */
export function start(via: StartedVia = 'api'): Telemetry | undefined {
  const g = globalThis as Global;
  const existing = g[STATE];
  if (existing) {
    if (!existing.warnedTwice) {
      existing.warnedTwice = true;
      writeLine(`auditrace: warning: already started (via ${existing.via}); ignoring the second start (via ${via})`);
    }
    return existing.telemetry;
  }
  // Worker threads share the process with the main thread's SDK; a second one would double-export.
  if (!isMainThread) return undefined;
  const state: State = { via, telemetry: undefined, warnedTwice: false };
  g[STATE] = state;
  try {
    const { config, errors } = parseConfig(process.env);
    for (const e of errors) writeLine(formatConfigError(e));
    if (errors.length > 0 && config.strict) {
      writeLine(`auditrace: AUDITRACE_STRICT=true and ${errors.length} invalid variable(s): refusing to start`);
      process.exit(EXIT_CONFIG);
    }
    if (config.sdkDisabled) {
      if (!isQuiet(config)) writeLine('auditrace: OTEL_SDK_DISABLED=true: telemetry is off');
      return undefined;
    }
    const telemetry = buildTelemetry(config);
    state.telemetry = telemetry;
    state.removeHooks = installShutdownHooks(telemetry.shutdown, telemetry.flushInBackground, isQuiet(config));
    if (!isQuiet(config)) writeLine(startupLine(telemetry));
    return telemetry;
  } catch (err) {
    writeLine(`auditrace: error: could not start telemetry (${err instanceof Error ? err.message : String(err)}); the application runs without it`);
    return undefined;
  }
}

export function isQuiet(config: Readonly<Config>): boolean {
  return config.quiet || config.logLevel === 'none';
}

/** Flushes and stops telemetry; resolves within AUDITRACE_SHUTDOWN_TIMEOUT_MS, never rejects. */
export async function shutdown(): Promise<void> {
  const state = (globalThis as Global)[STATE];
  if (!state?.telemetry) return;
  state.removeHooks?.();
  await state.telemetry.shutdown();
}

/** Exports what is buffered now; resolves within AUDITRACE_SHUTDOWN_TIMEOUT_MS, never rejects. */
export async function forceFlush(): Promise<void> {
  await (globalThis as Global)[STATE]?.telemetry?.forceFlush();
}

export function current(): Telemetry | undefined {
  return (globalThis as Global)[STATE]?.telemetry;
}
