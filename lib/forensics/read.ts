import { createReadStream } from 'node:fs';
import type { Input } from './inputs';
import { reclaim } from './memory';
import { isZstd, zstdFile } from './zstd';

/**
 * Every input as a sequence of blocks of whole lines, streamed: a block holds complete lines (each
 * ending in `\n`) and is at most a few MiB, so memory does not grow with the input. The last piece
 * of a file without its newline (a write torn by a crash) comes as a block of its own, flagged.
 * Line numbers are those of the file (for archives: of the decompressed stream).
 */

export interface Block {
  input: Input;
  /** Index of the input in the list given to `readBlocks`. */
  inputIndex: number;
  buf: Buffer;
  /** The piece after the last newline of the file (or before a corrupt zstd frame). */
  torn: boolean;
  /**
   * This block stands for one line longer than `limit` bytes, skipped unread: `buf` is an empty
   * line in its place, so that the lines after it keep their numbers.
   */
  long?: { bytes: number; limit: number };
}

export interface ReadEvents {
  /** A problem with the input itself (not a record): printed to stderr by the CLI. */
  problem(input: Input, message: string): void;
  /** Bytes of the input (as stored, compressed or not) consumed. */
  progress(bytes: number): void;
  /** A new pass over (some of) the inputs begins: `bytes` in all. */
  phase?(name: string, bytes: number): void;
}

export const BLOCK_BYTES = 4 * 1024 * 1024;

/**
 * The longest line read. The agent cuts what it tails at 1 MiB (`max_log_size`), and one export
 * request of the archive holds a batch of such records; a longer line is damage or a line made to
 * exhaust memory (a JavaScript string cannot exceed ≈ 512 MiB anyway): skipped and reported.
 */
export const MAX_LINE_BYTES = 8 * 1024 * 1024;

async function* rawChunks(input: Input, events: ReadEvents): AsyncGenerator<Buffer | 'break'> {
  if (input.kind === 'archive' && await isZstd(input.path)) {
    const corrupt: string[] = [];
    const gen = zstdFile(input.path, {
      corrupt: (offset, message) => corrupt.push(`${input.display}: byte offset ${offset}: ${message}`),
      progress: (n) => events.progress(n),
    });
    for await (const chunk of gen) {
      if (corrupt.length > 0) {
        for (const m of corrupt.splice(0)) events.problem(input, m);
        yield 'break';
      }
      yield chunk;
    }
    for (const m of corrupt.splice(0)) events.problem(input, m);
    return;
  }
  const stream = createReadStream(input.path, { highWaterMark: 1024 * 1024 });
  for await (const chunk of stream) {
    events.progress((chunk as Buffer).length);
    yield chunk as Buffer;
  }
}

/**
 * The blocks of one input. A `'break'` from the source (corrupt frame) ends the current line.
 * Each chunk is searched for a newline once, on arrival: a line longer than a block is gathered
 * in linear time, and one longer than `maxLine` is skipped as it streams by (a `long` block).
 */
export async function* readBlocks(input: Input, inputIndex: number, events: ReadEvents, blockBytes = BLOCK_BYTES,
  maxLine = MAX_LINE_BYTES): AsyncGenerator<Block> {
  let parts: Buffer[] = [];
  let size = 0;
  /** Bytes of `parts` up to and including their last newline: the whole lines among them. */
  let whole = 0;
  /** Bytes of an over-long line skipped so far; -1: not inside one. */
  let skipped = -1;
  const take = (): Buffer => {
    const b = parts.length === 1 ? parts[0]! : Buffer.concat(parts, size);
    parts = [];
    size = 0;
    whole = 0;
    return b;
  };
  const longLine = (bytes: number): Block => ({ input, inputIndex, buf: Buffer.from('\n'), torn: false, long: { bytes, limit: maxLine } });
  function* rest(): Generator<Block> {
    if (size === 0) return;
    const all = take();
    const nl = all.lastIndexOf(10);
    if (nl >= 0) yield { input, inputIndex, buf: all.subarray(0, nl + 1), torn: false };
    if (nl + 1 < all.length) yield { input, inputIndex, buf: all.subarray(nl + 1), torn: true };
  }
  for await (const raw of rawChunks(input, events)) {
    if (raw === 'break') {
      if (skipped >= 0) yield longLine(skipped);
      skipped = -1;
      yield* rest();
      continue;
    }
    reclaim(raw.length);
    let chunk = raw;
    if (skipped >= 0) {
      const nl = chunk.indexOf(10);
      if (nl < 0) {
        skipped += chunk.length;
        continue;
      }
      yield longLine(skipped + nl);
      skipped = -1;
      chunk = chunk.subarray(nl + 1);
      if (chunk.length === 0) continue;
    }
    if (size === 0 && chunk.length >= blockBytes / 2 && chunk.length <= blockBytes && chunk[chunk.length - 1] === 10) {
      // Whole lines already (a zstd frame is one or more whole lines) and large enough to be a
      // block on its own: no copy. Small frames (a collector writes one per export) are gathered
      // into blocks, or each would be a worker round trip of its own.
      yield { input, inputIndex, buf: chunk, torn: false };
      continue;
    }
    const nl = chunk.lastIndexOf(10);
    if (nl >= 0) whole = size + nl + 1;
    parts.push(chunk);
    size += chunk.length;
    if (size - whole > maxLine) {
      // The line being gathered is too long: the whole lines before it go on, it is skipped.
      const cut = whole;
      skipped = size - cut;
      const all = cut > 0 ? take() : undefined;
      parts = [];
      size = 0;
      whole = 0;
      if (all) yield { input, inputIndex, buf: all.subarray(0, cut), torn: false };
      continue;
    }
    // A line longer than a block is gathered without copying until its newline comes.
    if (whole === 0 || size < blockBytes) continue;
    const cut = whole;
    const all = take();
    yield { input, inputIndex, buf: all.subarray(0, cut), torn: false };
    if (cut < all.length) {
      // Copy the remainder so the (large) block can be released or transferred on its own.
      const tail = Buffer.from(all.subarray(cut));
      parts.push(tail);
      size = tail.length;
    }
  }
  if (skipped >= 0) yield longLine(skipped);
  yield* rest();
}

/** What verify and trail report of a `long` block, after its place (`file:line: `). */
export function longLineMessage(long: { bytes: number; limit: number }): string {
  return `line longer than ${long.limit} bytes (${long.bytes} bytes) (skipped)`;
}

/**
 * An error that ends the run, named by the input being read when it happened: the CLI prints the
 * message alone, never a stack, so the message must say where.
 */
export function inInput(e: unknown, input: Input): Error {
  const err = e instanceof Error ? e : new Error(String(e));
  if (!err.message.startsWith(`${input.display}: `)) err.message = `${input.display}: ${err.message}`;
  return err;
}

/** `file:line` or, inside an archive batch, `file:line#index`. */
export function where(display: string, line: number, batchIndex?: number): string {
  return batchIndex === undefined || batchIndex < 0 ? `${display}:${line}` : `${display}:${line}#${batchIndex}`;
}
