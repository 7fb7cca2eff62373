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

/** The blocks of one input. A `'break'` from the source (corrupt frame) ends the current line. */
export async function* readBlocks(input: Input, inputIndex: number, events: ReadEvents, blockBytes = BLOCK_BYTES): AsyncGenerator<Block> {
  let parts: Buffer[] = [];
  let size = 0;
  const take = (): Buffer => {
    const b = parts.length === 1 ? parts[0]! : Buffer.concat(parts, size);
    parts = [];
    size = 0;
    return b;
  };
  for await (const chunk of rawChunks(input, events)) {
    if (chunk !== 'break') reclaim(chunk.length);
    if (chunk === 'break') {
      if (size > 0) {
        const all = take();
        const nl = all.lastIndexOf(10);
        if (nl >= 0) yield { input, inputIndex, buf: all.subarray(0, nl + 1), torn: false };
        if (nl + 1 < all.length) yield { input, inputIndex, buf: all.subarray(nl + 1), torn: true };
      }
      continue;
    }
    if (size === 0 && chunk.length >= blockBytes / 2 && chunk.length <= blockBytes && chunk[chunk.length - 1] === 10) {
      // Whole lines already (a zstd frame is one or more whole lines) and large enough to be a
      // block on its own: no copy. Small frames (a collector writes one per export) are gathered
      // into blocks, or each would be a worker round trip of its own.
      yield { input, inputIndex, buf: chunk, torn: false };
      continue;
    }
    parts.push(chunk);
    size += chunk.length;
    if (size < blockBytes) continue;
    const all = take();
    const nl = all.lastIndexOf(10);
    if (nl < 0) {
      // One line longer than a block: keep accumulating (it is bounded by what was written).
      parts.push(all);
      size = all.length;
      continue;
    }
    yield { input, inputIndex, buf: all.subarray(0, nl + 1), torn: false };
    if (nl + 1 < all.length) {
      // Copy the remainder so the (large) block can be released or transferred on its own.
      const rest = Buffer.from(all.subarray(nl + 1));
      parts.push(rest);
      size = rest.length;
    }
  }
  if (size > 0) {
    const all = take();
    const nl = all.lastIndexOf(10);
    if (nl >= 0) yield { input, inputIndex, buf: all.subarray(0, nl + 1), torn: false };
    if (nl + 1 < all.length) yield { input, inputIndex, buf: all.subarray(nl + 1), torn: true };
  }
}

/** `file:line` or, inside an archive batch, `file:line#index`. */
export function where(display: string, line: number, batchIndex?: number): string {
  return batchIndex === undefined || batchIndex < 0 ? `${display}:${line}` : `${display}:${line}#${batchIndex}`;
}
