/**
 * A progress bar on stderr, only when stderr is a terminal and the input is large (> 50 MB):
 * never on a pipe or a file, where it would be noise in a log.
 */
export class Progress {
  private done = 0;
  private last = 0;
  private label = '';
  private readonly enabled: boolean;
  private drawn = false;

  constructor(private total: number, private readonly stream: NodeJS.WriteStream = process.stderr) {
    this.enabled = stream.isTTY === true && total > 50 * 1024 * 1024;
  }

  phase(label: string, total?: number): void {
    this.label = label;
    this.done = 0;
    if (total !== undefined) this.total = total;
    this.draw(true);
  }

  advance(bytes: number): void {
    this.done += bytes;
    this.draw(false);
  }

  private draw(force: boolean): void {
    if (!this.enabled) return;
    const now = Date.now();
    if (!force && now - this.last < 100) return;
    this.last = now;
    const f = this.total > 0 ? Math.min(1, this.done / this.total) : 0;
    const width = 30;
    const bar = '#'.repeat(Math.round(f * width)).padEnd(width, '.');
    this.stream.write(`\r[${bar}] ${(f * 100).toFixed(0).padStart(3)}% ${(this.done / 1e6).toFixed(0)}/${(this.total / 1e6).toFixed(0)} MB ${this.label}\x1b[K`);
    this.drawn = true;
  }

  /** Clears the bar before anything else is printed. */
  clear(): void {
    if (this.drawn) this.stream.write('\r\x1b[K');
    this.drawn = false;
  }
}
