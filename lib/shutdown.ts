import { writeLine } from './diagnostics';

/** Flushes and stops telemetry; resolves `true` when it finished in time, `false` on timeout. */
type Stop = () => Promise<boolean>;
type Flush = () => Promise<unknown>;

const finalizers: (() => void)[] = [];

/**
 * Synchronous work that must happen on every way out: 'exit' (process.exit, natural end) and right
 * before we re-raise a signal, where 'exit' never fires. Runs once.
 */
export function onFinalExit(fn: () => void): void {
  let done = false;
  const once = () => {
    if (done) return;
    done = true;
    try {
      fn();
    } catch {
      // the last act of a dying process must not throw
    }
  };
  finalizers.push(once);
  process.once('exit', once);
}

function runFinalizers(): void {
  for (const f of finalizers) f();
}

/**
 * Flushes on SIGTERM/SIGINT and then lets the process end as it would have without us: when no
 * other handler listens, our handler removes itself and re-raises the signal, so the process dies
 * by that signal (shell status 128+n). When the application has its own handler, it decides: we
 * only export what is buffered and keep recording, because a graceful drain that follows still
 * produces spans; the final shutdown then happens at `beforeExit`.
 * Upstream's register keeps a SIGTERM'd server alive because it listens without exiting.
 */
export function installShutdownHooks(stop: Stop, flush: Flush, quiet: boolean): () => void {
  const signals: NodeJS.Signals[] = ['SIGTERM', 'SIGINT'];
  const handlers = new Map<NodeJS.Signals, () => void>();
  for (const signal of signals) {
    const handler = () => {
      if (process.listenerCount(signal) > 1) {
        void flush();
        return;
      }
      // Removed first, so a second signal while flushing ends the process at once.
      process.removeListener(signal, handler);
      stop().finally(() => {
        if (!quiet) writeLine(`auditrace: telemetry flushed after ${signal}`);
        if (process.listenerCount(signal) === 0) {
          runFinalizers();
          process.kill(process.pid, signal);
        }
      });
    };
    handlers.set(signal, handler);
    process.on(signal, handler);
  }
  // Once the loop is empty the app is done: shut down (a mere flush here could re-arm the loop
  // forever, since every metrics flush is a network write). Only when the shutdown ran out of time
  // do we end the process: what still holds it then is our exporters retrying an unreachable
  // collector, for up to their own timeout.
  const onBeforeExit = () => {
    stop().then((finished) => {
      if (!finished) {
        if (!quiet) writeLine('auditrace: warning: telemetry not fully exported within AUDITRACE_SHUTDOWN_TIMEOUT_MS; exiting');
        process.exit();
      }
    }, () => undefined);
  };
  process.once('beforeExit', onBeforeExit);
  return () => {
    for (const [signal, handler] of handlers) process.removeListener(signal, handler);
    process.removeListener('beforeExit', onBeforeExit);
  };
}
