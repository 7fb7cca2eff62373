import { randomFillSync } from 'node:crypto';

/**
 * Random hex ids (request ids, trace and span ids) cut from one pooled hex string: one
 * `randomFillSync` and one hex conversion per 4 KiB of randomness instead of a native call per id
 * (the SDK's generator writes `Math.random()` into a buffer and converts it per id; measured ≈ 1.5
 * µs of a server request's profile for its two ids plus the request id). An id is a slice of the
 * pool's string, which V8 keeps as a view of it.
 */
const POOL_BYTES = 4096;
let pool = '';
let offset = 0;

/** `chars` (even, at most 2 × 4096) random lowercase hex characters. */
export function randomHex(chars: number): string {
  if (offset + chars > pool.length) {
    pool = randomFillSync(Buffer.allocUnsafe(POOL_BYTES)).toString('hex');
    offset = 0;
  }
  const id = pool.slice(offset, offset + chars);
  offset += chars;
  return id;
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
