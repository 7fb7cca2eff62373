import { createReadStream } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { open } from 'node:fs/promises';
import { createZstdDecompress, zstdDecompress, zstdDecompressSync } from 'node:zlib';
import { promisify } from 'node:util';

/**
 * Reads a file made of concatenated zstd frames (what the collector's file exporter writes with
 * native compression: one complete frame per write) and yields the decompressed bytes.
 *
 * Node's zstd decoder stops after the first frame of a buffer or stream, so frames are found here
 * by walking the frame format (RFC 8878 §3.1: header, then blocks whose 3-byte headers give their
 * sizes, then an optional checksum) without decompressing, and each frame is decompressed on its
 * own: small ones in one call, large ones (or of unknown size beyond the window) as a stream, so
 * memory stays bounded by the window and the decoder's own buffers.
 *
 * Damage is reported with the byte offset and skipped: bytes that are not a frame (the reader
 * resynchronises on the next frame magic), a frame whose structure or content is corrupt, a frame
 * cut short by the end of the file (what it still decodes is kept).
 */

export const ZSTD_MAGIC = 0xfd2fb528;
const MAGIC_BYTES = Buffer.from([0x28, 0xb5, 0x2f, 0xfd]);
const MAX_BLOCK = 128 * 1024;
const WINDOW = 2 * 1024 * 1024;
/** Frames up to this size (compressed) and with a known or small output are decoded in one call. */
const ONE_SHOT_MAX = 4 * 1024 * 1024;
const ONE_SHOT_OUTPUT_MAX = 64 * 1024 * 1024;
/** Tiny frames are decoded synchronously: a thread-pool round trip costs more than the work. */
const SYNC_MAX = Number(process.env.FX_SYNC_MAX ?? 64 * 1024);

/** Output is produced in chunks of this size: Node's 16 KiB default costs a round trip per 16 KiB. */
const CHUNK = 1024 * 1024;

const decompressAsync = promisify(zstdDecompress) as (buf: Buffer, opts: { maxOutputLength: number; chunkSize: number }) => Promise<Buffer>;

export interface ZstdEvents {
  /** Damage: `offset` is the byte offset in the compressed file. */
  corrupt(offset: number, message: string): void;
  /** Compressed bytes consumed (for progress). */
  progress(bytes: number): void;
}

/** A sliding read window over a file. */
class Window {
  private buf = Buffer.alloc(0);
  private spare = Buffer.alloc(0);
  private start = 0;

  constructor(private readonly fh: FileHandle, readonly size: number) {}

  /** Makes [pos, pos+len) available (as much of it as the file has); returns how many bytes are. */
  async ensure(pos: number, len: number): Promise<number> {
    const end = Math.min(pos + len, this.size);
    if (pos >= this.start && end <= this.start + this.buf.length) return end - pos;
    const want = Math.max(0, Math.min(Math.max(len, WINDOW), this.size - pos));
    // The window's memory is reused: what was handed out of it has been consumed or copied.
    if (this.spare.length < want) this.spare = Buffer.allocUnsafe(Math.max(want, WINDOW));
    const buf = this.spare;
    let got = 0;
    while (got < want) {
      const { bytesRead } = await this.fh.read(buf, got, want - got, pos + got);
      if (bytesRead === 0) break;
      got += bytesRead;
    }
    this.buf = buf.subarray(0, got);
    this.start = pos;
    return Math.max(0, Math.min(end, pos + got) - pos);
  }

  byte(pos: number): number {
    return this.buf[pos - this.start]!;
  }

  u32(pos: number): number {
    return this.buf.readUInt32LE(pos - this.start);
  }

  slice(pos: number, len: number): Buffer {
    return this.buf.subarray(pos - this.start, pos - this.start + len);
  }

  /** Offset of the next frame magic at or after `pos`, or -1. */
  async findMagic(pos: number): Promise<number> {
    let p = pos;
    while (p < this.size) {
      const n = await this.ensure(p, WINDOW);
      const at = this.slice(p, n).indexOf(MAGIC_BYTES);
      if (at >= 0) return p + at;
      if (p + n >= this.size) return -1;
      p += Math.max(1, n - 3);
    }
    return -1;
  }
}

interface Frame {
  offset: number;
  length: number;
  /** Decompressed size when the header states it. */
  contentSize: number | undefined;
  /** The file ended inside the frame. */
  truncated: boolean;
}

type Scan = { frame: Frame } | { skip: number; corrupt?: string };

/** Walks one frame's structure from `pos`. */
async function scanFrame(w: Window, pos: number): Promise<Scan> {
  const have = await w.ensure(pos, 18);
  if (have < 4) return { skip: w.size - pos, corrupt: `${have} trailing byte(s) that are not a zstd frame` };
  const magic = w.u32(pos);
  if ((magic & 0xfffffff0) === 0x184d2a50) {
    if (have < 8) return { skip: w.size - pos, corrupt: 'skippable frame cut short' };
    return { skip: Math.min(8 + w.u32(pos + 4), w.size - pos) };
  }
  if (magic !== ZSTD_MAGIC) return { skip: 0, corrupt: 'not a zstd frame (bad magic number)' };
  if (have < 5) return { frame: { offset: pos, length: w.size - pos, contentSize: undefined, truncated: true } };
  const fhd = w.byte(pos + 4);
  const fcsFlag = fhd >> 6;
  const single = (fhd >> 5) & 1;
  const checksum = (fhd >> 2) & 1;
  const dictFlag = fhd & 3;
  if ((fhd >> 3) & 1) return { skip: 0, corrupt: 'corrupt zstd frame header (reserved bit set)' };
  const dictBytes = [0, 1, 2, 4][dictFlag]!;
  const fcsBytes = [single ? 1 : 0, 2, 4, 8][fcsFlag]!;
  const headerLen = 5 + (single ? 0 : 1) + dictBytes + fcsBytes;
  if (have < headerLen) return { frame: { offset: pos, length: w.size - pos, contentSize: undefined, truncated: true } };
  let contentSize: number | undefined;
  const f = pos + headerLen - fcsBytes;
  if (fcsBytes === 1) contentSize = w.byte(f);
  else if (fcsBytes === 2) contentSize = (w.byte(f) | (w.byte(f + 1) << 8)) + 256;
  else if (fcsBytes === 4) contentSize = w.u32(f);
  else if (fcsBytes === 8) contentSize = w.u32(f) + w.u32(f + 4) * 2 ** 32;
  let p = pos + headerLen;
  for (;;) {
    if (await w.ensure(p, 3) < 3) return { frame: { offset: pos, length: w.size - pos, contentSize, truncated: true } };
    const bh = w.byte(p) | (w.byte(p + 1) << 8) | (w.byte(p + 2) << 16);
    const last = bh & 1;
    const type = (bh >> 1) & 3;
    const size = bh >>> 3;
    if (type === 3) return { skip: 0, corrupt: `corrupt zstd block at offset ${p} (reserved block type)` };
    if (size > MAX_BLOCK) return { skip: 0, corrupt: `corrupt zstd block at offset ${p} (size ${size} > 128 KiB)` };
    p += 3 + (type === 1 ? 1 : size);
    if (p > w.size) return { frame: { offset: pos, length: w.size - pos, contentSize, truncated: true } };
    if (last) break;
  }
  if (checksum) p += 4;
  if (p > w.size) return { frame: { offset: pos, length: w.size - pos, contentSize, truncated: true } };
  return { frame: { offset: pos, length: p - pos, contentSize, truncated: false } };
}

/** Decodes a frame (or what exists of it) as a stream, straight from the file. */
async function* streamFrame(path: string, frame: Frame, events: ZstdEvents): AsyncGenerator<Buffer> {
  const source = createReadStream(path, { start: frame.offset, end: frame.offset + frame.length - 1, highWaterMark: 1024 * 1024 });
  const dec = createZstdDecompress({ chunkSize: CHUNK });
  source.on('error', (e) => dec.destroy(e));
  source.pipe(dec);
  try {
    for await (const chunk of dec) yield chunk as Buffer;
  } catch (err) {
    if (!frame.truncated) events.corrupt(frame.offset, `corrupt zstd frame (${(err as Error).message}); the rest of the frame is skipped`);
  } finally {
    source.destroy();
    dec.destroy();
  }
}

/** Frames decoded at once on the thread pool, ahead of the one being consumed. */
const AHEAD = 2;

type Pending =
  | { kind: 'data'; offset: number; length: number; out: Promise<Buffer | Error> }
  | { kind: 'corrupt'; offset: number; message: string; progress: number };

/** Output in one chunk when the frame states its size: no concatenation of 1 MiB pieces. */
function chunkFor(frame: Frame): number {
  return Math.min(Math.max(frame.contentSize !== undefined ? frame.contentSize + 1 : CHUNK, 16 * 1024), ONE_SHOT_OUTPUT_MAX);
}

/** Yields the decompressed content of every frame of a zstd file, in order. */
export async function* zstdFile(path: string, events: ZstdEvents): AsyncGenerator<Buffer> {
  const fh = await open(path, 'r');
  const queue: Pending[] = [];
  // Hands back queued items in order: data, or damage found while scanning ahead.
  async function* drain(keep: number): AsyncGenerator<Buffer> {
    while (queue.length > keep) {
      const item = queue.shift()!;
      if (item.kind === 'corrupt') {
        events.corrupt(item.offset, item.message);
        events.progress(item.progress);
        continue;
      }
      const out = await item.out;
      events.progress(item.length);
      if (out instanceof Error) {
        const e = out as NodeJS.ErrnoException;
        if (e.code === 'ERR_BUFFER_TOO_LARGE') yield* streamFrame(path, { offset: item.offset, length: item.length, contentSize: undefined, truncated: false }, events);
        else events.corrupt(item.offset, `corrupt zstd frame of ${item.length} bytes (${e.message}); skipped`);
      } else {
        yield out;
      }
    }
  }
  try {
    const size = (await fh.stat()).size;
    const w = new Window(fh, size);
    let pos = 0;
    while (pos < size) {
      const scan = await scanFrame(w, pos);
      if ('skip' in scan) {
        if (scan.corrupt === undefined) {
          events.progress(scan.skip);
          pos += scan.skip;
          continue;
        }
        const next = await w.findMagic(pos + Math.max(1, scan.skip));
        const end = next < 0 ? size : next;
        queue.push({ kind: 'corrupt', offset: pos, progress: end - pos,
          message: `${scan.corrupt}; ${end - pos} byte(s) skipped${next < 0 ? ' to the end of the file' : ` up to the next frame at offset ${next}`}` });
        pos = end;
        continue;
      }
      const frame = scan.frame;
      pos = frame.offset + frame.length;
      if (!frame.truncated && frame.length <= ONE_SHOT_MAX && (frame.contentSize ?? 0) <= ONE_SHOT_OUTPUT_MAX
        && await w.ensure(frame.offset, frame.length) === frame.length) {
        const opts = { maxOutputLength: ONE_SHOT_OUTPUT_MAX, chunkSize: chunkFor(frame) };
        let out: Promise<Buffer | Error>;
        if (frame.length <= SYNC_MAX) {
          try {
            out = Promise.resolve(zstdDecompressSync(w.slice(frame.offset, frame.length), opts));
          } catch (err) {
            out = Promise.resolve(err as Error);
          }
        } else {
          // A copy: the window moves on while the thread pool works.
          out = decompressAsync(Buffer.from(w.slice(frame.offset, frame.length)), opts).catch((err: Error) => err);
        }
        queue.push({ kind: 'data', offset: frame.offset, length: frame.length, out });
        yield* drain(AHEAD);
        continue;
      }
      yield* drain(0);
      if (frame.truncated) {
        events.corrupt(frame.offset, `truncated zstd frame: the file ends ${frame.length} byte(s) into it (the writer was interrupted); what it still decodes is kept`);
      }
      yield* streamFrame(path, frame, events);
      events.progress(frame.length);
    }
    yield* drain(0);
  } finally {
    await Promise.all(queue.map((q) => (q.kind === 'data' ? q.out : undefined)));
    await fh.close();
  }
}

/** Whether a file starts with a zstd (or skippable) frame. */
export async function isZstd(path: string): Promise<boolean> {
  const fh = await open(path, 'r');
  try {
    const b = Buffer.alloc(4);
    const { bytesRead } = await fh.read(b, 0, 4, 0);
    if (bytesRead < 4) return false;
    const m = b.readUInt32LE(0);
    return m === ZSTD_MAGIC || (m & 0xfffffff0) === 0x184d2a50;
  } finally {
    await fh.close();
  }
}
