import { randomFillSync } from 'node:crypto';

/**
 * Random hex ids (request ids, trace and span ids) cut from a pooled hex string: one
 * `randomFillSync` per 4 KiB of randomness and one hex conversion per 64 bytes of it, instead of
 * a native call per id (the SDK's generator writes `Math.random()` into a buffer and converts it
 * per id; measured ≈ 1.5 µs of a server request's profile for its two ids plus the request id).
 *
 * An id is a slice of the current hex string. V8 keeps a slice of 13 or more characters as a view
 * of that string, which regexes, `charCodeAt` and the encoders read without flattening it (a
 * comparison with another string still goes through the runtime: see PooledIdGenerator). An id
 * joined from copied pieces with `+` was a cons string, which V8 flattened through the runtime on
 * its first read (≈ 1 µs of CPU per request on the hello server, bench/notes.md), and
 * `Array#join` cost about as much. A view keeps its string alive, so
 * the string is short: an id that lives on (a span in the export queue) keeps 128 characters, not
 * the 8 KiB of a whole pool's hex.
 */
const POOL_BYTES = 4096;
const CHUNK_BYTES = 64;
const bytes = Buffer.allocUnsafe(POOL_BYTES);
let used = POOL_BYTES;
let hex = '';
let offset = 0;

/** `chars` random lowercase hex characters. */
export function randomHex(chars: number): string {
  // A bad length would leave the offset NaN or negative, and every later id wrong.
  if (!Number.isSafeInteger(chars) || chars < 0) throw new RangeError(`randomHex: ${chars} is not a length`);
  if (offset + chars > hex.length) {
    if (chars > 2 * CHUNK_BYTES) return randomFillSync(Buffer.allocUnsafe((chars + 1) >>> 1)).toString('hex').slice(0, chars);
    if (used === POOL_BYTES) {
      randomFillSync(bytes);
      used = 0;
    }
    hex = bytes.toString('hex', used, used + CHUNK_BYTES);
    used += CHUNK_BYTES;
    offset = 0;
  }
  const start = offset;
  offset += chars;
  return hex.slice(start, offset);
}

const ZERO_TRACE = '0'.repeat(32);
const ZERO_SPAN = '0'.repeat(16);

/**
 * The SDK's `IdGenerator`, from the pool; never the all-zero (invalid) id. The first character is
 * looked at before the whole: V8 compares a slice with another string through the runtime.
 */
export class PooledIdGenerator {
  generateTraceId(): string {
    let id = randomHex(32);
    while (id.charCodeAt(0) === 48 && id === ZERO_TRACE) id = randomHex(32);
    return id;
  }

  generateSpanId(): string {
    let id = randomHex(16);
    while (id.charCodeAt(0) === 48 && id === ZERO_SPAN) id = randomHex(16);
    return id;
  }
}
