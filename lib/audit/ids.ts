import { randomFillSync } from 'node:crypto';
import { randomHex } from '../random-hex';

// Random bytes come from a pool refilled 4 KiB at a time: one syscall per ~450 ids, not per id.
const POOL_SIZE = 4096;
const pool = Buffer.allocUnsafe(POOL_SIZE);
let poolOffset = POOL_SIZE;
function randomBytes(n: number): number {
  if (poolOffset + n > POOL_SIZE) {
    randomFillSync(pool);
    poolOffset = 0;
  }
  const at = poolOffset;
  poolOffset += n;
  return at;
}

const HEX: string[] = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'));
let lastMs = -1;
let counter = 0;

/**
 * A UUIDv7 (RFC 9562): 48-bit Unix milliseconds, then a 12-bit counter (method 1 of §6.2) so ids
 * made in the same millisecond still sort in creation order, then 62 random bits. Time-ordered ids
 * let a pipeline that delivers at least once be checked for loss and de-duplicated.
 */
export function uuidv7(nowMs: number = Date.now()): string {
  let ms = nowMs;
  if (ms <= lastMs) {
    ms = lastMs;
    counter++;
    if (counter > 0xfff) {
      // Counter exhausted within one millisecond: borrow the next one, as §6.2 allows.
      ms = ++lastMs;
      counter = 0;
    }
  } else {
    lastMs = ms;
    const r = randomBytes(2);
    counter = ((pool[r]! << 8) | pool[r + 1]!) & 0x7ff; // random start in the lower half leaves room to count
  }
  if (ms !== prefixMs) {
    prefixMs = ms;
    const hi = Math.floor(ms / 0x10000);
    const lo = ms % 0x10000;
    prefix = HEX[(hi >>> 24) & 0xff]! + HEX[(hi >>> 16) & 0xff]! + HEX[(hi >>> 8) & 0xff]! + HEX[hi & 0xff]! + '-' +
      HEX[(lo >>> 8) & 0xff]! + HEX[lo & 0xff]! + '-';
  }
  // 64 random bits as hex; the variant (10xx) takes the top two bits of the first digit's place.
  const h = randomHex(16);
  return prefix + HEX[0x70 | (counter >>> 8)]! + HEX[counter & 0xff]! + '-'
    + VARIANT[nibble(h.charCodeAt(0)) & 3]! + h.slice(1, 4) + '-' + h.slice(4);
}

/** The time part of the ids of one millisecond (`tttttttt-tttt-`): the same for all of them. */
let prefixMs = -1;
let prefix = '';
const VARIANT = ['8', '9', 'a', 'b'];
function nibble(c: number): number {
  return c <= 57 ? c - 48 : c - 87; // '0'-'9', 'a'-'f'
}

/**
 * `000` … `999`: a record's fraction of a second and the access record's duration are written from
 * these rather than converted from a number, a conversion whose result V8 caches per number and so
 * missed for every record (bench/notes.md, http-express).
 */
export const DIGITS3 = Array.from({ length: 1000 }, (_, i) => String(i).padStart(3, '0'));

let cachedSecond = -1;
let cachedPrefix = '';
let lastMicros = 0;
let clockOffset = performance.timeOrigin;

/**
 * RFC 3339 UTC with microseconds, e.g. `2026-11-22T05:12:51.123456Z`. The monotonic clock, anchored
 * at the process's time origin, gives the microseconds, so two processes on one host agree to well
 * under a millisecond (the trail nests services by these times). The wall clock keeps it honest:
 * whenever the anchored time leaves the wall clock's current millisecond (NTP steps or slews), the
 * anchor moves by the least amount that brings it back. The date part is formatted once per second.
 */
export function rfc3339Now(): string {
  const mono = performance.now();
  const wall = Date.now();
  let t = clockOffset + mono;
  if (t < wall) {
    clockOffset = wall - mono;
    t = wall;
  } else if (t >= wall + 1) {
    clockOffset = wall + 0.999 - mono;
    t = clockOffset + mono;
  }
  // Records of one process never go back in time, whatever the wall clock does.
  let total = Math.floor(t * 1000);
  if (total < lastMicros) total = lastMicros;
  lastMicros = total;
  const ms = Math.floor(total / 1000);
  const sec = Math.floor(ms / 1000);
  if (sec !== cachedSecond) {
    cachedSecond = sec;
    cachedPrefix = new Date(sec * 1000).toISOString().slice(0, 19);
  }
  const micros = total - sec * 1_000_000;
  return `${cachedPrefix}.${DIGITS3[Math.floor(micros / 1000)]!}${DIGITS3[micros % 1000]!}Z`;
}
