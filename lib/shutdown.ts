import { writeLine } from './diagnostics';

type Stop = () => Promise<void>;

/**
 * Flushes on SIGTERM/SIGINT and then lets the process end as it would have without us: when no
 * other handler listens, our handler removes itself and re-raises the signal, so the process dies
 * by that signal (shell status 128+n). When the application has its own handler, it decides.
 * Upstream's register keeps a SIGTERM'd server alive because it listens without exiting.
 */
export function installShutdownHooks(stop: Stop, quiet: boolean): () => void {
  const signals: NodeJS.Signals[] = ['SIGTERM', 'SIGINT'];
  const handlers = new Map<NodeJS.Signals, () => void>();
  for (const signal of signals) {
    const handler = () => {
      const othersListen = process.listenerCount(signal) > 1;
      if (othersListen) {
        void stop();
        return;
      }
      // Removed first, so a second signal while flushing ends the process at once.
      process.removeListener(signal, handler);
      stop().finally(() => {
        if (!quiet) writeLine(`auditrace: telemetry flushed after ${signal}`);
        if (process.listenerCount(signal) === 0) process.kill(process.pid, signal);
      });
    };
    handlers.set(signal, handler);
    process.on(signal, handler);
  }
  // Once the loop is empty the app is done: shut down (a flush here could re-arm the loop
  // forever, since every metrics flush is a network write). What is still pending after that is
  // ours alone (exporter retries to an unreachable collector), so it must not hold the exit.
  const onBeforeExit = () => {
    stop().finally(() => {
      process.exit();
    });
  };
  process.once('beforeExit', onBeforeExit);
  return () => {
    for (const [signal, handler] of handlers) process.removeListener(signal, handler);
    process.removeListener('beforeExit', onBeforeExit);
  };
}
