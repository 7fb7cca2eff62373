import { randomFillSync } from 'node:crypto';

/**
 * Random hex ids (request ids, trace and span ids) cut from one pooled hex string: one
 * `randomFillSync` and one hex conversion per 4 KiB of randomness instead of a native call per id
 * (the SDK's generator writes `Math.random()` into a buffer and converts it per id; measured ≈ 1.5
 * µs of a server request's profile for its two ids plus the request id). V8 keeps a slice of 13
 * or more characters as a view of the whole pool string, so an id that lives on (a span in the
 * export queue) would keep 8 KiB alive: an id is joined from pieces of at most 12 characters,
 * which are copies. Joined by `Array#join`, which writes one flat string: `+` made a cons string,
 * which V8 flattens through the runtime the first time a regex, a comparison or `charCodeAt`
 * reads it (the SDK's id checks, the encoder, the record's hash), ≈ 1.3 µs of CPU per request
 * on the hello server (bench/notes.md, http-hello).
 */
const POOL_BYTES = 4096;
const PIECE = 12;
let pool = '';
let offset = 0;

/** `chars` (even, at most 2 × 4096) random lowercase hex characters. */
export function randomHex(chars: number): string {
  if (offset + chars > pool.length) {
    pool = randomFillSync(Buffer.allocUnsafe(POOL_BYTES)).toString('hex');
    offset = 0;
  }
  const start = offset;
  const end = start + chars;
  offset = end;
  if (chars <= PIECE) return pool.slice(start, end);
  // Array literals of the usual sizes (span and trace ids): `length = 0` on a kept array is a
  // runtime call in optimised code.
  const second = start + PIECE;
  if (chars <= 2 * PIECE) return [pool.slice(start, second), pool.slice(second, end)].join('');
  const third = second + PIECE;
  if (chars <= 3 * PIECE) return [pool.slice(start, second), pool.slice(second, third), pool.slice(third, end)].join('');
  const pieces: string[] = [];
  for (let at = start; at < end; at += PIECE) pieces.push(pool.slice(at, Math.min(at + PIECE, end)));
  return pieces.join('');
}

const ZERO_TRACE = '0'.repeat(32);
const ZERO_SPAN = '0'.repeat(16);

/** The SDK's `IdGenerator`, from the pool; never the all-zero (invalid) id. */
export class PooledIdGenerator {
  generateTraceId(): string {
    let id = randomHex(32);
    while (id === ZERO_TRACE) id = randomHex(32);
    return id;
  }

  generateSpanId(): string {
    let id = randomHex(16);
    while (id === ZERO_SPAN) id = randomHex(16);
    return id;
  }
}
