/**
 * auditrace's own lines on stderr. Each is one line, prefixed `auditrace:`, and writing it never
 * throws: a closed stderr must not take the application down.
 */
export function writeLine(line: string): void {
  try {
    process.stderr.write(`${line}\n`);
  } catch {
    // stderr is gone; there is nowhere left to report to
  }
}

/**
 * Prints a warning at most once per interval per key, and says how many were held back, so an
 * unreachable collector produces one line a minute instead of one per export.
 */
export class RateLimitedWarnings {
  private readonly last = new Map<string, { at: number; suppressed: number }>();
  constructor(
    private readonly intervalMs: number,
    private readonly sink: (line: string) => void = writeLine,
    private readonly now: () => number = Date.now,
  ) {}

  warn(key: string, message: string): void {
    const t = this.now();
    const entry = this.last.get(key);
    if (entry && t - entry.at < this.intervalMs) {
      entry.suppressed++;
      return;
    }
    const held = entry && entry.suppressed > 0 ? ` (${entry.suppressed} more like this since the last warning)` : '';
    this.last.set(key, { at: t, suppressed: 0 });
    this.sink(`auditrace: warning: ${message}${held}`);
  }
}

/**
 * A URL as it may be printed: credentials and query values removed (both are where people put
 * tokens). Unparseable input is not echoed at all.
 */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.username || u.password) {
      u.username = '[redacted]';
      u.password = '';
    }
    for (const key of [...u.searchParams.keys()]) u.searchParams.set(key, '[redacted]');
    return u.toString().replace(/%5Bredacted%5D/g, '[redacted]');
  } catch {
    return '[unparseable URL]';
  }
}
