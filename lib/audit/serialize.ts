/**
 * One audit record → exactly one JSON line, whatever the application passed.
 *
 * The serialiser writes JSON text itself in a single pass over the input instead of copying the
 * input and handing the copy to `JSON.stringify`:
 *  - every property of the application's objects is read exactly once (a getter cannot show one
 *    value to the checks and another to the writer), and no `toJSON` is ever called;
 *  - nothing is copied on the fast path: a record of short strings, numbers and a small plain
 *    `context` object costs one key lookup and one regular-expression test per string.
 *
 * `sanitize()` is the same walk, parsed back (`JSON.parse` of what the walk wrote), so the values
 * it returns are exactly the values a line carries.
 *
 * Guarantees of `toJsonLine()` (each is covered by test/unit/serialize*.test.js):
 *  - it never throws; the result is valid JSON followed by exactly one `\n`, with no other raw line
 *    terminator (`\r`, U+0085, U+2028, U+2029) and no raw control character (C0, DEL, C1) or
 *    bidirectional-override character: those are written as `\uXXXX` escapes;
 *  - lone UTF-16 surrogates are written as `\udXXX` escapes, so the bytes are valid UTF-8;
 *  - the line is at most `maxRecordBytes` UTF-8 bytes before its newline;
 *  - values under deny-listed keys are never written, at any depth below the record's own keys.
 *
 * Redaction is by key. The record's top-level keys are the record builder's field names (checked
 * there against the event catalogue) and are not matched against the deny-list: catalogue fields
 * such as `token.type` or `token.hash` must survive. Every key below them — inside `context`, and
 * inside any object- or array-valued field — is checked.
 */
import { Buffer } from 'node:buffer';
import { types } from 'node:util';
import { canonicalize, keyPlan } from './chain';
import type { Plan } from './chain';

export interface SerializeLimits {
  /** Per string value, in UTF-8 bytes; a longer string is cut and ends with `…[truncated N bytes]`. */
  maxFieldBytes: number;
  /** Whole line, in UTF-8 bytes without the newline; over it, free-form parts are dropped first. */
  maxRecordBytes: number;
  /** Nesting depth of objects/arrays under a field (the field's own object is depth 1). */
  maxDepth: number;
  /** Keys per object and items per array; the rest are counted in a `"…": "[N more]"` entry. */
  maxKeys: number;
}

export const defaultLimits: SerializeLimits = Object.freeze({
  maxFieldBytes: 4096,
  maxRecordBytes: 16384,
  maxDepth: 8,
  maxKeys: 200,
});

/**
 * Deny-list of keys whose values are never written. Matching is case-insensitive and ignores `-`,
 * `_`, `.` and white space, so `Set-Cookie`, `set_cookie`, `setCookie`, `api key`, `X-Api-Key` and
 * `apiKey` all match. These match the whole (normalised) key; a key that merely contains one of
 * {@link redactedSubstrings} is redacted too.
 */
export const defaultRedactKeys: readonly string[] = Object.freeze([
  'password', 'passwd', 'pwd', 'passphrase', 'passcode',
  'secret', 'clientsecret', 'apisecret',
  'token', 'accesstoken', 'refreshtoken', 'idtoken', 'authtoken', 'sessiontoken', 'csrf', 'xsrf',
  'authorization', 'proxyauthorization', 'auth', 'bearer', 'jwt', 'credential', 'credentials',
  'cookie', 'cookies', 'setcookie',
  'apikey', 'xapikey',
  'sessionid', 'sid',
  'privatekey', 'otp', 'totp', 'mfacode',
  'ssn', 'socialsecuritynumber',
  'cardnumber', 'creditcard', 'creditcardnumber', 'ccnumber', 'cvv', 'cvv2', 'cvc', 'cvc2', 'pin', 'iban',
]);

/** A (normalised) key containing one of these is redacted: `dbPassword`, `csrf_token`, `x-api-key`. */
export const redactedSubstrings: readonly string[] = Object.freeze([
  'password', 'passwd', 'secret', 'token', 'apikey', 'cookie', 'authorization', 'privatekey',
]);

const SEPARATORS = /[-_.\s]/g;
const REDACT_CACHE_MAX = 10_000;
const REDACT_CACHE_KEY_MAX = 256;

function normaliseKey(key: string): string {
  return key.toLowerCase().replace(SEPARATORS, '');
}

/**
 * Returns `isRedacted(key)`: true when the value under `key` must be written as `"[REDACTED]"`.
 * `extraKeys` (e.g. from configuration) are matched like {@link defaultRedactKeys}: whole key,
 * case-insensitive, separators ignored. Decisions are cached per key string (bounded: the cache
 * is emptied when it reaches 10,000 keys, so random keys from request bodies cannot grow it).
 */
export function createRedactor(extraKeys: readonly string[]): (key: string) => boolean {
  const exact = new Set<string>();
  for (const k of defaultRedactKeys) exact.add(k);
  if (Array.isArray(extraKeys)) {
    for (const k of extraKeys) {
      if (typeof k !== 'string') continue;
      const n = normaliseKey(k);
      if (n !== '') exact.add(n);
    }
  }
  const subs = redactedSubstrings;
  const cache = new Map<string, boolean>();
  const decide = (key: string): boolean => {
    const n = normaliseKey(key);
    if (exact.has(n)) return true;
    for (let i = 0; i < subs.length; i++) if (n.includes(subs[i]!)) return true;
    return false;
  };
  return (key: string): boolean => {
    const hit = cache.get(key);
    if (hit !== undefined) return hit;
    if (typeof key !== 'string') return true;
    const d = decide(key);
    if (key.length <= REDACT_CACHE_KEY_MAX) {
      if (cache.size >= REDACT_CACHE_MAX) cache.clear();
      cache.set(key, d);
    }
    return d;
  };
}

// ---------------------------------------------------------------------------------------------
// Strings

/** Needs `JSON.stringify` (quotes, backslash, C0, surrogates) or a post-escape (the rest). */
const NEEDS_ESCAPE = /["\\\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ufeff\ud800-\udfff]/;
/**
 * Left raw by `JSON.stringify` but escaped here: DEL and C1 controls (U+0085 is a line break for
 * some readers, U+009B is a CSI for some terminals), the line/paragraph separators U+2028/U+2029,
 * bidirectional marks and overrides (they make a line display other than it reads), and BOM.
 */
const EXTRA_ESCAPE = /[\u007f-\u009f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ufeff]/;
const EXTRA_ESCAPE_G = /[\u007f-\u009f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ufeff]/g;

function escapeChar(c: string): string {
  return '\\u' + c.charCodeAt(0).toString(16).padStart(4, '0');
}

/** Printable ASCII other than `"` and `\`: nothing in it needs an escape of any kind. */
export const PLAIN_ASCII = /^[\x20\x21\x23-\x5b\x5d-\x7e]*$/;

/**
 * NEEDS_ESCAPE.test(s). A string of plain ASCII (ids, times, hashes, most values) is recognised by
 * the anchored class, about twice as fast as a loop or NEEDS_ESCAPE from 12 characters on (measured
 * on 27- to 64-character ids: 45 vs 80–100 ns); a plain loop is faster for shorter strings.
 */
function needsEscape(s: string): boolean {
  const n = s.length;
  if (n > 12) return !PLAIN_ASCII.test(s) && NEEDS_ESCAPE.test(s);
  for (let i = 0; i < n; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x20 || c === 0x22 || c === 0x5c) return true;
    if (c >= 0x7f) return NEEDS_ESCAPE.test(s);
  }
  return false;
}

/** The JSON string literal of `s`, containing no raw line terminator or control character. */
function quote(s: string): string {
  if (!needsEscape(s)) return '"' + s + '"';
  const r = JSON.stringify(s); // escapes C0, `"`, `\` and lone surrogates (ES2019 well-formed)
  return EXTRA_ESCAPE.test(r) ? r.replace(EXTRA_ESCAPE_G, escapeChar) : r;
}

/**
 * JSON text with the characters `JSON.stringify` leaves raw (C1, DEL, U+2028/U+2029, bidirectional
 * marks and overrides, BOM) escaped: the same JSON value, safe for line-oriented readers and
 * terminals. They can only occur inside strings, where `\uXXXX` means the same character.
 */
export function escapeRawJson(json: string): string {
  return EXTRA_ESCAPE.test(json) ? json.replace(EXTRA_ESCAPE_G, escapeChar) : json;
}

/**
 * `quote(s)` differs from the RFC 8785 form of `s` (which is `JSON.stringify(s)`) only when it
 * escaped a character JSON leaves raw; those all lie at or above U+007F.
 */
function quotedCanonical(s: string, quoted: string): boolean {
  return quoted.length === s.length + 2 || quoted === JSON.stringify(s);
}

const KEY_MAX_BYTES = 256;
/** A key of at most this many UTF-16 units is at most KEY_MAX_BYTES UTF-8 bytes. */
const KEY_FAST_LEN = Math.floor(KEY_MAX_BYTES / 3);
const KEY_CACHE_MAX = 5_000;
const keyCache = new Map<string, string>();

/** `kj` (keyJson(key)) is the key as RFC 8785 writes it: no escape, or only JSON's own. */
function canonicalKeyJson(key: string, kj: string): boolean {
  return kj.length === key.length + 3 || kj === JSON.stringify(key) + ':';
}

/**
 * The keys written before position `j` of `order` (or of `keys` itself), plus `extra`: the names a
 * renamed key must not repeat.
 */
function namesWritten(keys: readonly string[], order: readonly number[] | null, j: number, extra: string | null): Set<string> {
  const seen = new Set<string>();
  if (extra !== null) seen.add(extra);
  for (let p = 0; p < j; p++) seen.add(keys[order !== null ? order[p]! : p]!);
  return seen;
}

/**
 * What the serialiser keeps per key plan (objects with the same keys in the same order). `plain`:
 * every key is at most KEY_FAST_LEN units and `quote` writes it as RFC 8785 does, so
 * `plan.member[j]` is the `"key":` of sorted position `j`, no key can be cut or renamed, and the
 * keys need no cache lookup; `comma[j]` is `,` + that. `lastValue[j]`/`lastJson[j]`: the last
 * short string written plain at top-level position `j` and its JSON (a record's service name,
 * chain id and event name repeat on every record: compared, not scanned again).
 * `redactedBy`/`redacted`: the redactor's answers for these keys, for the last redactor used.
 */
interface Shape {
  /** The plan's keys and members (sorted). */
  keys: readonly string[];
  member: readonly string[];
  plain: boolean;
  comma: string[];
  lastValue: unknown[];
  lastJson: string[];
  redactedBy: unknown;
  redacted: boolean[];
}

function shapeOf(plan: Plan): Shape {
  let shape = plan.writer as Shape | undefined;
  if (shape === undefined) {
    let plain = true;
    for (let i = 0; i < plan.keys.length; i++) {
      const k = plan.keys[i]!;
      if (k.length > KEY_FAST_LEN || quote(k) + ':' !== plan.member[i]) {
        plain = false;
        break;
      }
    }
    const n = plan.keys.length;
    shape = {
      keys: plan.keys,
      member: plan.member,
      plain,
      comma: plan.member.map((m) => ',' + m),
      lastValue: new Array<unknown>(n).fill(undefined),
      lastJson: new Array<string>(n).fill(''),
      redactedBy: undefined,
      redacted: [],
    };
    plan.writer = shape;
  }
  return shape;
}

/** `"key":` for a key of at most KEY_FAST_LEN units (never truncated), cached. */
function keyJson(key: string): string {
  let kj = keyCache.get(key);
  if (kj === undefined) {
    kj = quote(key) + ':';
    if (keyCache.size >= KEY_CACHE_MAX) keyCache.clear();
    keyCache.set(key, kj);
  }
  return kj;
}

/** End index of the longest prefix of `s` of at most `maxBytes` UTF-8 bytes, never splitting a pair. */
function utf8PrefixEnd(s: string, maxBytes: number): number {
  const n = s.length;
  let bytes = 0;
  let i = 0;
  while (i < n) {
    const c = s.charCodeAt(i);
    let w = 3;
    let step = 1;
    if (c < 0x80) w = 1;
    else if (c < 0x800) w = 2;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < n && (s.charCodeAt(i + 1) & 0xfc00) === 0xdc00) {
      w = 4;
      step = 2;
    }
    if (bytes + w > maxBytes) break;
    bytes += w;
    i += step;
  }
  return i;
}

// \u2026, not the character: the bundle stays ASCII, so V8 holds its text in one byte per character.
const MARKER_RE = /\u2026\[truncated (\d+) bytes\]$/;

/**
 * `s` (of `bytes` UTF-8 bytes) cut at a code-point boundary so that it plus its marker
 * `…[truncated <original bytes> bytes]` fits in `maxBytes`. Returns `s` itself when cutting would
 * not make it shorter. With `again`, a string already ending in a marker keeps its original count.
 */
function cut(s: string, bytes: number, maxBytes: number, again: boolean): string {
  let original = bytes;
  let content = s;
  if (again) {
    const m = MARKER_RE.exec(s);
    if (m !== null) {
      original = Number(m[1]);
      content = s.slice(0, m.index);
    }
  }
  const marker = '…[truncated ' + original + ' bytes]';
  const room = maxBytes - (marker.length + 2); // "…" is one unit, three bytes
  const out = (room > 0 ? content.slice(0, utf8PrefixEnd(content, room)) : '') + marker;
  return Buffer.byteLength(out, 'utf8') < bytes ? out : s;
}

function fits(line: string, maxBytes: number): boolean {
  if (line.length * 3 <= maxBytes) return true; // a UTF-16 unit is at most 3 UTF-8 bytes
  if (line.length > maxBytes) return false; // and at least 1
  return Buffer.byteLength(line, 'utf8') <= maxBytes;
}

// ---------------------------------------------------------------------------------------------
// Limits

function clampInt(v: unknown, def: number, min: number, max: number): number {
  if (typeof v !== 'number' || v !== v) return def;
  const f = Math.floor(v);
  return f < min ? min : f > max ? max : f;
}

interface Norm {
  maxFieldBytes: number;
  maxRecordBytes: number;
  maxDepth: number;
  maxKeys: number;
}

let lastLimits: unknown = null;
let lastRaw: unknown[] = [];
let lastNorm: Norm | null = null;

/** `normaliseNow`, remembered for the last limits object while its four values stay the same. */
function normalise(limits: SerializeLimits | undefined | null): Norm {
  if (limits === lastLimits && lastNorm !== null && limits !== null && typeof limits === 'object'
    && limits.maxFieldBytes === lastRaw[0] && limits.maxRecordBytes === lastRaw[1]
    && limits.maxDepth === lastRaw[2] && limits.maxKeys === lastRaw[3]) return lastNorm;
  const norm = normaliseNow(limits);
  if (limits !== null && typeof limits === 'object') {
    lastLimits = limits;
    lastRaw = [limits.maxFieldBytes, limits.maxRecordBytes, limits.maxDepth, limits.maxKeys];
    lastNorm = norm;
  }
  return norm;
}

/** The field and record limits as the serialiser applies them (after clamping). */
export function appliedLimits(limits: SerializeLimits): { maxFieldBytes: number; maxRecordBytes: number } {
  const n = normalise(limits);
  return { maxFieldBytes: n.maxFieldBytes, maxRecordBytes: n.maxRecordBytes };
}

/**
 * Limits as used: non-numbers take the default; `maxRecordBytes` is at least 128 and
 * `maxFieldBytes` between 64 and `maxRecordBytes`; `maxDepth` at most 100; `maxKeys` at most 100,000.
 */
function normaliseNow(limits: SerializeLimits | undefined | null): Norm {
  const l = (limits !== null && typeof limits === 'object' ? limits : defaultLimits) as Partial<SerializeLimits>;
  const maxRecordBytes = clampInt(l.maxRecordBytes, defaultLimits.maxRecordBytes, 128, 2 ** 30);
  return {
    maxRecordBytes,
    maxFieldBytes: clampInt(l.maxFieldBytes, Math.min(defaultLimits.maxFieldBytes, maxRecordBytes), 64, maxRecordBytes),
    maxDepth: clampInt(l.maxDepth, defaultLimits.maxDepth, 0, 100),
    maxKeys: clampInt(l.maxKeys, defaultLimits.maxKeys, 0, 100_000),
  };
}

// ---------------------------------------------------------------------------------------------
// The walk

const UNREADABLE = '"[Unreadable]"';
const REDACTED = '"[REDACTED]"';
const CIRCULAR = '"[Circular]"';
const MAX_DEPTH = '"[MaxDepth]"';
const FUNCTION = '"[Function]"';
const SYMBOL = '"[Symbol]"';
const MORE_KEY = '…';
/** Stands for a value whose read threw. */
const UNREADABLE_VALUE: object = Object.freeze({});

const getter = (proto: object, name: string): ((this: unknown) => number) =>
  Object.getOwnPropertyDescriptor(proto, name)!.get as (this: unknown) => number;
const typedArrayByteLength = getter(Object.getPrototypeOf(Uint8Array.prototype) as object, 'byteLength');
const dataViewByteLength = getter(DataView.prototype, 'byteLength');
const arrayBufferByteLength = getter(ArrayBuffer.prototype, 'byteLength');
const sharedArrayBufferByteLength = getter(SharedArrayBuffer.prototype, 'byteLength');
const setSize = getter(Set.prototype, 'size');
const dateGetTime = Date.prototype.getTime;
const dateToISOString = Date.prototype.toISOString;

function binaryLength(v: object): number {
  if (types.isTypedArray(v)) return typedArrayByteLength.call(v);
  if (types.isDataView(v)) return dataViewByteLength.call(v);
  if (types.isSharedArrayBuffer(v)) return sharedArrayBufferByteLength.call(v);
  return arrayBufferByteLength.call(v);
}

/** A key that does not collide with `seen` (or, without `seen`, with `keys[0..lim)`). */
function freeKey(name: string, seen: Set<string> | null, keys: readonly string[], lim: number): string {
  let u = name;
  for (let n = 2; ; n++) {
    const taken = seen !== null ? seen.has(u) : keys.indexOf(u) !== -1 && keys.indexOf(u) < lim;
    if (!taken) return u;
    u = name + '~' + n;
  }
}

class Walker {
  /** The JSON text written so far (of the current top-level field, in toJsonLine). */
  out = '';
  /** Something was cut: a string, a key, an object/array (maxKeys, budget) or a subtree (maxDepth). */
  truncated = false;
  /** Something was written other than RFC 8785 would: an escape JSON does not make, a renamed key, unsorted keys. */
  nonCanonical = false;
  private readonly stack: object[] = [];
  /** Strings up to this many UTF-16 units cannot exceed maxFieldBytes. */
  readonly fastFieldLen: number;

  constructor(
    private readonly maxFieldBytes: number,
    private readonly maxDepth: number,
    private readonly maxKeys: number,
    /** Containers stop taking entries once `out` is longer than this (UTF-16 units). */
    private readonly budget: number,
    private readonly isRedacted: ((key: string) => boolean) | null,
    /** Re-walking our own output to shrink it: markers already present keep their counts. */
    private readonly again: boolean,
  ) {
    this.fastFieldLen = Math.floor(maxFieldBytes / 3);
  }

  value(v: unknown, depth: number): void {
    switch (typeof v) {
      case 'string':
        this.string(v);
        return;
      case 'number':
        this.out += Number.isFinite(v) ? '' + v : 'null';
        return;
      case 'boolean':
        this.out += v ? 'true' : 'false';
        return;
      case 'object':
        if (v === null) this.out += 'null';
        else this.object(v, depth);
        return;
      case 'bigint':
        this.string(String(v));
        return;
      case 'undefined':
        this.out += 'null';
        return;
      case 'symbol':
        this.out += SYMBOL;
        return;
      default:
        this.out += FUNCTION;
    }
  }

  string(s: string): void {
    if (s.length > this.fastFieldLen) {
      const bytes = Buffer.byteLength(s, 'utf8');
      if (bytes > this.maxFieldBytes) {
        const c = cut(s, bytes, this.maxFieldBytes, this.again);
        if (c !== s) {
          this.truncated = true;
          s = c;
        }
      }
    }
    const q = quote(s);
    if (!quotedCanonical(s, q)) this.nonCanonical = true;
    this.out += q;
  }

  /**
   * `"key":` of an object member. `seen` stays null while every key is short (no key can be cut,
   * so none can collide); from the first long key on it holds the names written, and each later
   * key is checked against it.
   */
  memberKey(key: string, seen: Set<string> | null): string {
    if (seen === null) {
      const kj = keyJson(key);
      if (!canonicalKeyJson(key, kj)) this.nonCanonical = true;
      return kj;
    }
    this.nonCanonical = true;
    return this.slowKey(key, seen);
  }

  /** `"key":` for a key longer than KEY_FAST_LEN units, or when keys of this object must be deduplicated. */
  private slowKey(key: string, seen: Set<string>): string {
    let name = key;
    if (key.length > KEY_FAST_LEN) {
      const bytes = Buffer.byteLength(key, 'utf8');
      if (bytes > KEY_MAX_BYTES) {
        name = cut(key, bytes, KEY_MAX_BYTES, false);
        if (name !== key) this.truncated = true;
      }
    }
    name = freeKey(name, seen, [], 0);
    seen.add(name);
    return quote(name) + ':';
  }

  /** Pushes `v` on the ancestor stack, or writes why not (circular, too deep) and returns false. */
  private enter(v: object, depth: number): boolean {
    if (this.stack.includes(v)) {
      this.out += CIRCULAR;
      return false;
    }
    if (depth >= this.maxDepth) {
      this.out += MAX_DEPTH;
      this.truncated = true;
      return false;
    }
    this.stack.push(v);
    return true;
  }

  private object(v: object, depth: number): void {
    const mark = this.out;
    const stackLen = this.stack.length;
    try {
      if (Array.isArray(v)) {
        if (this.enter(v, depth)) {
          let len: unknown = v.length;
          if (typeof len !== 'number' || !(len >= 0)) len = 0;
          this.items(v, Math.min(Math.floor(len as number), 2 ** 32 - 1), depth + 1);
          this.stack.pop();
        }
        return;
      }
      const proto: unknown = Object.getPrototypeOf(v);
      if (proto === Object.prototype || proto === null) {
        if (this.enter(v, depth)) {
          const keys = Object.keys(v);
          this.entries(v, keys, null, keys.length, depth + 1);
          this.stack.pop();
        }
        return;
      }
      this.special(v, depth);
    } catch {
      // A Proxy trap or a getter threw (or the walk ran out of stack): this value only.
      this.stack.length = stackLen;
      this.out = mark + UNREADABLE;
    }
  }

  /** Anything that is neither an array nor a plain object. */
  private special(v: object, depth: number): void {
    if (types.isDate(v)) {
      const t = dateGetTime.call(v);
      this.out += t === t ? '"' + dateToISOString.call(v) + '"' : 'null';
      return;
    }
    if (ArrayBuffer.isView(v) || types.isAnyArrayBuffer(v)) {
      this.out += '"[Binary ' + binaryLength(v) + ' bytes]"';
      return;
    }
    if (types.isBoxedPrimitive(v)) {
      if (types.isStringObject(v)) this.string(String.prototype.valueOf.call(v));
      else if (types.isNumberObject(v)) this.value(Number.prototype.valueOf.call(v), depth);
      else if (types.isBooleanObject(v)) this.out += Boolean.prototype.valueOf.call(v) ? 'true' : 'false';
      else if (types.isBigIntObject(v)) this.string(String(BigInt.prototype.valueOf.call(v)));
      else this.out += SYMBOL;
      return;
    }
    if (!this.enter(v, depth)) return;
    if (types.isNativeError(v) || v instanceof Error) {
      // name and message only: a stack holds paths and data, other properties anything.
      // (In canonical order: "message" sorts before "name".)
      this.out += '{';
      const name = read(v, 'name');
      const message = read(v, 'message');
      let sep = '';
      if (message !== undefined) {
        this.out += '"message":';
        this.readValue(message, depth + 1);
        sep = ',';
      }
      if (name !== undefined) {
        this.out += sep + '"name":';
        this.readValue(name, depth + 1);
      }
      this.out += '}';
    } else if (types.isMap(v)) {
      const keys: string[] = [];
      const vals: unknown[] = [];
      let total = 0;
      for (const [k, val] of Map.prototype.entries.call(v) as IterableIterator<[unknown, unknown]>) {
        if (typeof k !== 'string') continue;
        if (total < this.maxKeys) {
          keys.push(k);
          vals.push(val);
        }
        total++;
      }
      this.entries(null, keys, vals, total, depth + 1);
    } else if (types.isSet(v)) {
      const vals: unknown[] = [];
      if (this.maxKeys > 0) {
        for (const x of Set.prototype.values.call(v) as IterableIterator<unknown>) {
          vals.push(x);
          if (vals.length >= this.maxKeys) break;
        }
      }
      this.items(vals, setSize.call(v), depth + 1, vals.length);
    } else {
      // Class instances, Proxies, arguments, …: own enumerable properties, as JSON would (minus toJSON).
      const keys = Object.keys(v);
      this.entries(v, keys, null, keys.length, depth + 1);
    }
    this.stack.pop();
  }

  private readValue(val: unknown, depth: number): void {
    if (val === UNREADABLE_VALUE) this.out += UNREADABLE;
    else this.value(val, depth);
  }

  /**
   * An object's entries: `keys` read from `obj`, or paired with `vals` (a Map's), written in RFC
   * 8785 order. Over maxKeys, the first keys in the object's own order are kept, unsorted.
   */
  private entries(obj: object | null, keys: readonly string[], vals: readonly unknown[] | null, total: number, depth: number): void {
    const lim = keys.length < this.maxKeys ? keys.length : this.maxKeys;
    const plan = total <= lim && lim > 1 ? keyPlan(keys) : null;
    const order = plan !== null ? plan.order : null;
    const shape = plan !== null ? shapeOf(plan) : null;
    const plain = shape !== null && shape.plain;
    if (order === null && lim > 1) this.nonCanonical = true;
    const isRedacted = this.isRedacted;
    // The redactor's answer for each key of a plain plan, asked once per plan and redactor.
    if (plain && isRedacted !== null && shape.redactedBy !== isRedacted) {
      const answers: boolean[] = [];
      for (let j = 0; j < shape.keys.length; j++) {
        let r: boolean;
        try {
          r = !!isRedacted(shape.keys[j]!);
        } catch {
          r = true; // fail closed
        }
        answers.push(r);
      }
      shape.redacted = answers;
      shape.redactedBy = isRedacted;
    }
    let sep = '{';
    let seen: Set<string> | null = null;
    let j = 0;
    for (; j < lim; j++) {
      if (this.out.length > this.budget) break;
      const i = order !== null ? order[j]! : j;
      const key = keys[i]!;
      let redacted = false;
      if (plain && isRedacted !== null) {
        redacted = shape.redacted[j]!;
      } else if (isRedacted !== null) {
        try {
          redacted = !!isRedacted(key);
        } catch {
          redacted = true; // fail closed
        }
      }
      let val: unknown;
      if (!redacted) {
        val = vals !== null ? vals[i] : read(obj!, key);
        if (val === undefined) continue;
      }
      if (plain) {
        this.out += sep === '{' ? '{' + shape.member[j]! : shape.comma[j]!;
      } else {
        if (seen === null && key.length > KEY_FAST_LEN) seen = namesWritten(keys, order, j, null);
        this.out += sep + this.memberKey(key, seen);
      }
      sep = ',';
      if (redacted) this.out += REDACTED;
      else this.readValue(val, depth);
    }
    if (total > j) {
      this.truncated = true;
      this.nonCanonical = true;
      this.out += sep + quote(freeKey(MORE_KEY, seen, keys, lim)) + ':"[' + (total - j) + ' more]"';
      sep = ',';
    }
    this.out += sep === '{' ? '{}' : '}';
  }

  /** Array items (holes and undefined → null); `n` items are read, `total` exist. */
  private items(a: ArrayLike<unknown>, total: number, depth: number, n?: number): void {
    const max = n !== undefined ? n : total;
    const lim = max < this.maxKeys ? max : this.maxKeys;
    let sep = '[';
    let i = 0;
    for (; i < lim; i++) {
      if (this.out.length > this.budget) break;
      this.out += sep;
      sep = ',';
      const val = read(a, i);
      if (val === undefined) this.out += 'null';
      else this.readValue(val, depth);
    }
    if (total > i) {
      this.truncated = true;
      this.out += sep + '"[' + (total - i) + ' more]"';
      sep = ',';
    }
    this.out += sep === '[' ? '[]' : ']';
  }
}

/** `obj[key]`, or UNREADABLE_VALUE when a getter or Proxy trap throws. */
function read(obj: object, key: string | number): unknown {
  try {
    return (obj as Record<string | number, unknown>)[key];
  } catch {
    return UNREADABLE_VALUE;
  }
}

function safeRedactor(isRedacted: unknown): (key: string) => boolean {
  // Not a function: everything below the top level is redacted rather than nothing.
  return typeof isRedacted === 'function' ? (isRedacted as (key: string) => boolean) : () => true;
}

// ---------------------------------------------------------------------------------------------
// Public API

/**
 * A JSON-safe plain value for `value` (the developer's `context`, or any field value), following
 * the same rules as {@link toJsonLine}: strings cut to `maxFieldBytes`, deny-listed keys redacted,
 * cycles, depth, key counts, binary data, errors, getters and Proxies handled. `undefined` stays
 * `undefined`. Never throws.
 */
export function sanitize(value: unknown, limits: SerializeLimits, isRedacted: (key: string) => boolean): unknown {
  if (value === undefined) return undefined;
  try {
    const l = normalise(limits);
    const w = new Walker(l.maxFieldBytes, l.maxDepth, l.maxKeys, l.maxRecordBytes, safeRedactor(isRedacted), false);
    w.value(value, 0);
    return JSON.parse(w.out) as unknown;
  } catch {
    return '[Unreadable]';
  }
}

const TOP_LEVEL_MAX_KEYS = 1000;
const TRUNCATED_FIELD = 'audit.truncated';
/** Written when even the fallback failed (should be unreachable). */
const FAILED_LINE = '{"audit.truncated":true,"audit.serialize_error":true}\n';

function assemble(kjs: readonly string[], vjs: readonly string[], tail: string | null): string {
  let s = '{';
  for (let i = 0; i < kjs.length; i++) s += (i === 0 ? '' : ',') + kjs[i] + vjs[i];
  if (tail !== null) s += (kjs.length === 0 ? '' : ',') + '"audit.truncated":' + tail;
  return s + '}';
}

/**
 * Serialises one record to a JSON line ending in `\n`. The record's own keys are field names
 * (not redacted; see the module comment); `freeForm` names the keys holding arbitrary developer
 * data (e.g. `['context']`), dropped first when the line would exceed `maxRecordBytes`. When
 * anything was cut or dropped the line ends with `"audit.truncated":true` (replacing any
 * `audit.truncated` the record had). Never throws.
 *
 * Object members are written in RFC 8785 order (keys sorted by UTF-16 code units), so a line is
 * normally its own canonical form: the hash chain then hashes the very text written, and anyone
 * can recompute a record's hash from the bytes on disk.
 */
export function toJsonLine(
  record: Record<string, unknown>,
  limits: SerializeLimits,
  isRedacted: (key: string) => boolean,
  freeForm?: readonly string[],
): string {
  return jsonLine(record, limits, isRedacted, freeForm, false);
}

function jsonLine(record: unknown, limits: SerializeLimits, isRedacted: unknown, freeForm: unknown, general: boolean): string {
  try {
    return line(record, normalise(limits), safeRedactor(isRedacted), Array.isArray(freeForm) ? freeForm : [], general).text + '\n';
  } catch {
    return FAILED_LINE;
  }
}

/**
 * `toJsonLine`, and the RFC 8785 canonical form of the record the line holds (what the hash chain
 * hashes), equal to `canonicalize(JSON.parse(line))`. That is the line itself without its newline
 * (`lineIsCanonical`) unless the line had to differ from canonical JSON: an escape JSON would not write
 * (line separators, C1 and bidirectional controls), a renamed or cut key, an `audit.truncated`
 * member or a `"…"` entry. Only those lines are parsed back and canonicalised.
 */
export function toJsonLineCanonical(
  record: Record<string, unknown>,
  limits: SerializeLimits,
  isRedacted: (key: string) => boolean,
  freeForm?: readonly string[],
): { line: string; canonical: string; lineIsCanonical: boolean } {
  let written: Written;
  try {
    written = line(record, normalise(limits), safeRedactor(isRedacted), Array.isArray(freeForm) ? freeForm : []);
  } catch {
    return { line: FAILED_LINE, canonical: canonicalize(JSON.parse(FAILED_LINE)), lineIsCanonical: false };
  }
  const text = written.text;
  if (written.canonical) return { line: text + '\n', canonical: text, lineIsCanonical: true };
  return { line: text + '\n', canonical: canonicalize(JSON.parse(text)), lineIsCanonical: false };
}

interface Written {
  text: string;
  /** `text` is its own RFC 8785 canonical form. */
  canonical: boolean;
}

/**
 * `toJsonLine` by the general path alone, never the one for plain keys: the reference the tests
 * hold that faster path to (same text for any record, any limits, any call order).
 */
export function toJsonLineReference(
  record: Record<string, unknown>,
  limits: SerializeLimits,
  isRedacted: (key: string) => boolean,
  freeForm?: readonly string[],
): string {
  return jsonLine(record, limits, isRedacted, freeForm, true);
}

function line(record: unknown, l: Norm, isRedacted: (key: string) => boolean, freeForm: readonly string[], general = false): Written {
  if (record === null || typeof record !== 'object') record = { 'audit.invalid_record': record };
  let keys: string[];
  try {
    keys = Object.keys(record as object);
  } catch {
    return { text: '{"audit.invalid_record":"[Unreadable]","audit.truncated":true}', canonical: false };
  }
  const w = new Walker(l.maxFieldBytes, l.maxDepth, l.maxKeys, l.maxRecordBytes, isRedacted, false);
  if (keys.length <= TOP_LEVEL_MAX_KEYS) {
    const plan = keyPlan(keys);
    const shape = shapeOf(plan);
    if (shape.plain && !general) return plainLine(record as object, plan, shape, w, l, freeForm);
    return generalLine(record as object, keys, plan.order, w, l, freeForm);
  }
  return generalLine(record as object, keys, null, w, l, freeForm);
}

/** Longest top-level string value remembered per position (see Shape). */
const LAST_VALUE_MAX = 64;

function walked(w: Walker, v: unknown): string {
  w.out = '';
  w.value(v, 0);
  return w.out;
}

/**
 * A record whose keys are a plain plan (every record auditrace builds): its members are appended
 * to one string in canonical order. Where each ended is kept, so that a line over the size limit
 * can still be cut field by field without reading the record again.
 */
function plainLine(record: object, plan: Plan, shape: Shape, w: Walker, l: Norm, freeForm: readonly string[]): Written {
  const fastLen = w.fastFieldLen;
  const keys = plan.keys;
  const written: number[] = [];
  const ends: number[] = [];
  let ownTruncated: string | null = null;
  let s = '{';
  for (let j = 0; j < keys.length; j++) {
    const key = keys[j]!;
    const val = read(record, key);
    if (val === undefined) continue;
    let vj: string;
    if (typeof val === 'string' && val.length <= fastLen) {
      if (val === shape.lastValue[j]) {
        vj = shape.lastJson[j]!;
      } else if (!needsEscape(val)) {
        vj = '"' + val + '"';
        if (val.length <= LAST_VALUE_MAX) {
          shape.lastValue[j] = val;
          shape.lastJson[j] = vj;
        }
      } else {
        vj = walked(w, val);
      }
    } else {
      vj = walked(w, val === UNREADABLE_VALUE ? '[Unreadable]' : val);
    }
    if (key === TRUNCATED_FIELD) {
      ownTruncated = vj;
      continue;
    }
    s += written.length === 0 ? plan.member[j]! : shape.comma[j]!;
    s += vj;
    written.push(j);
    ends.push(s.length);
  }
  const tail = w.truncated ? 'true' : ownTruncated;
  if (tail !== null) s += (written.length === 0 ? '' : ',') + '"audit.truncated":' + tail;
  s += '}';
  if (fits(s, l.maxRecordBytes)) return { text: s, canonical: !w.nonCanonical && tail === null };
  const kjs: string[] = [];
  const vjs: string[] = [];
  const ffs: boolean[] = [];
  let from = 1;
  for (let m = 0; m < written.length; m++) {
    const kj = plan.member[written[m]!]!;
    kjs.push(kj);
    vjs.push(s.slice(from + (m === 0 ? 0 : 1) + kj.length, ends[m]));
    ffs.push(freeForm.includes(keys[written[m]!]!));
    from = ends[m]!;
  }
  return { text: shrink(kjs, vjs, ffs, l), canonical: false };
}

/**
 * Any other record: keys that may need cutting or renaming, an escape RFC 8785 would not write,
 * or more than TOP_LEVEL_MAX_KEYS of them (`order` null: the first ones are kept in the caller's
 * order, and the line is not canonical).
 */
function generalLine(record: object, keys: readonly string[], order: readonly number[] | null, w: Walker, l: Norm, freeForm: readonly string[]): Written {
  const kjs: string[] = [];
  const vjs: string[] = [];
  const ffs: boolean[] = [];
  let ownTruncated: string | null = null;
  let seen: Set<string> | null = null;
  const lim = keys.length < TOP_LEVEL_MAX_KEYS ? keys.length : TOP_LEVEL_MAX_KEYS;
  for (let j = 0; j < lim; j++) {
    const i = order !== null ? order[j]! : j;
    const key = keys[i]!;
    const val = read(record, key);
    if (val === undefined) continue;
    const vj = walked(w, val === UNREADABLE_VALUE ? '[Unreadable]' : val);
    if (key === TRUNCATED_FIELD) {
      ownTruncated = vj;
      continue;
    }
    if (seen === null && key.length > KEY_FAST_LEN) seen = namesWritten(keys, order, j, TRUNCATED_FIELD);
    kjs.push(w.memberKey(key, seen));
    vjs.push(vj);
    ffs.push(freeForm.includes(key));
  }
  if (keys.length > lim) {
    w.truncated = true;
    kjs.push(quote(freeKey(MORE_KEY, seen, keys, lim)) + ':');
    vjs.push('"[' + (keys.length - lim) + ' more]"');
    ffs.push(false);
  }
  const tail = w.truncated ? 'true' : ownTruncated;
  const s = assemble(kjs, vjs, tail);
  if (!fits(s, l.maxRecordBytes)) return { text: shrink(kjs, vjs, ffs, l), canonical: false };
  return { text: s, canonical: !w.nonCanonical && tail === null && order !== null };
}

/** The record is over maxRecordBytes: make it fit, dropping free-form data first. */
function shrink(kjs: string[], vjs: string[], ffs: readonly boolean[], l: Norm): string {
  const max = l.maxRecordBytes;
  const dropped = '"[dropped: record over ' + max + ' bytes]"';

  // 1. Free-form fields.
  for (let i = 0; i < vjs.length; i++) if (ffs[i]) vjs[i] = dropped;
  let s = assemble(kjs, vjs, 'true');
  if (fits(s, max)) return s;

  // 2. The longest strings, cut shorter and shorter (re-walking our own, already sanitised output).
  const parsed = vjs.map((v) => JSON.parse(v) as unknown);
  for (let cap = Math.floor(l.maxFieldBytes / 2); cap >= 32; cap = Math.floor(cap / 2)) {
    const w = new Walker(cap, l.maxDepth, l.maxKeys + 1, Infinity, null, true);
    for (let i = 0; i < parsed.length; i++) {
      w.out = '';
      w.value(parsed[i], 0);
      vjs[i] = w.out;
    }
    s = assemble(kjs, vjs, 'true');
    if (fits(s, max)) return s;
  }

  // 3. Whole field values, largest first, keeping their JSON type (a string, array or object
  //    field stays one, for the record schema); 4. then whole fields, last first.
  const size = (i: number): number => Buffer.byteLength(kjs[i]!, 'utf8') + Buffer.byteLength(vjs[i]!, 'utf8') + 1;
  const sizes = kjs.map((_, i) => size(i));
  const overhead = 2 + '"audit.truncated":true'.length;
  let total = overhead + sizes.reduce((a, b) => a + b, 0);
  const order = sizes.map((_, i) => i).sort((a, b) => sizes[b]! - sizes[a]!);
  for (const i of order) {
    if (total <= max) break;
    const v = vjs[i]!;
    const c = v.charCodeAt(0);
    const replacement = c === 0x22 ? dropped : c === 0x5b ? '[' + dropped + ']' : c === 0x7b ? '{"…":' + dropped + '}' : v;
    if (replacement.length >= v.length) continue;
    vjs[i] = replacement;
    total -= sizes[i]!;
    sizes[i] = size(i);
    total += sizes[i]!;
  }
  while (total > max && kjs.length > 0) {
    total -= sizes.pop()!;
    kjs.pop();
    vjs.pop();
  }
  s = assemble(kjs, vjs, 'true');
  return fits(s, max) ? s : '{"audit.truncated":true}';
}
