/**
 * The pause after a failed export. Upstream's batch processors send the next batch as soon as the
 * last one failed, so while the collector is down every batch waits in the queue for the
 * exporter's retries of the one before it (≈ 7 s for a refused connection): each span lives that
 * long on the JS heap, survives the young generation and is collected only by a full GC. Measured
 * on the hello server at 1,000 req/s with the endpoint refusing connections, 120 s: RSS rose to
 * 267–283 MiB and kept rising (old space 40–60 MiB, array buffers 15–20 MiB); with this pause
 * (1 s, doubling to 5 s) it stayed at 225–226 MiB from the moment the young generation had grown
 * (old space 14–19 MiB). The batches that arrive during the pause are dropped at once, counted and
 * warned, which is what happened to nearly all of them before, only later.
 *
 * Only failures that say the collector is unreachable or overloaded start a pause (see
 * `pausesExports`): a batch the collector refused as invalid (HTTP 400, 413 …) says nothing about
 * the next one.
 *
 * Pure: the clock (monotonic, so that a step of the wall clock cannot stretch a pause) and the
 * jitter are passed in.
 */
export interface BackoffOptions {
  initialMs: number;
  maxMs: number;
  /** A fraction: each pause is stretched or shortened by up to this much, so that a fleet of
   * processes does not retry a recovering collector in step. */
  jitter: number;
}

export const EXPORT_BACKOFF: Readonly<BackoffOptions> = { initialMs: 1000, maxMs: 5000, jitter: 0.2 };

/**
 * Whether a failed export's error means "the collector cannot take data now": a network error
 * (it has a string `code`: ECONNREFUSED …), a timeout, or an HTTP status that asks to retry
 * (upstream's exporter reports those, after its own retries, as "retryable"). An HTTP 4xx other
 * than 429 is about that batch.
 */
export function pausesExports(error: unknown): boolean {
  const code = (error as { code?: unknown } | null | undefined)?.code;
  return !(typeof code === 'number' && code >= 400 && code < 500 && code !== 429);
}

export class ExportBackoff {
  private pauseMs = 0;
  private until = 0;
  /** Set for a flush the application or the shutdown asked for: those always send. */
  private bypassing = 0;

  constructor(
    private readonly options: Readonly<BackoffOptions> = EXPORT_BACKOFF,
    private readonly now: () => number = () => performance.now(),
    private readonly random: () => number = Math.random,
  ) {}

  /** Milliseconds until the next export may be sent (0: send now). */
  remainingMs(): number {
    if (this.bypassing > 0) return 0;
    return Math.max(0, this.until - this.now());
  }

  failed(): void {
    const { initialMs, maxMs, jitter } = this.options;
    this.pauseMs = this.pauseMs === 0 ? initialMs : Math.min(this.pauseMs * 2, maxMs);
    const stretch = 1 + (this.random() * 2 - 1) * jitter;
    this.until = this.now() + Math.round(this.pauseMs * stretch);
  }

  succeeded(): void {
    this.pauseMs = 0;
    this.until = 0;
  }

  /** Exports sent while `work` runs are not held back (a forced flush, the shutdown's flush). */
  async bypass<T>(work: () => Promise<T>): Promise<T> {
    this.bypassing++;
    try {
      return await work();
    } finally {
      this.bypassing--;
    }
  }
}
