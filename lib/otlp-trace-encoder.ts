import type { ReadableSpan } from '@opentelemetry/sdk-trace';

/**
 * OTLP/protobuf `ExportTraceServiceRequest` from finished spans, byte for byte what
 * `@opentelemetry/otlp-transformer`'s `ProtobufTraceSerializer` writes (a property test compares
 * the two), at a fraction of its cost.
 *
 * Why: on the hello server the upstream serializer was the largest single cost auditrace added
 * to a request (bench/notes.md, "Where the time goes"). It walks every span twice (once to
 * estimate the size, once to write), and writes each attribute key, the same few dozen strings
 * in every span, a byte at a time through a field of the writer. Here a span is walked once into
 * a buffer kept between exports; a key's encoded bytes are cached and copied in; a long string
 * is written by Node's native UTF-8 encoder.
 *
 * Length-delimited fields reserve one byte for their length and move their contents up when it
 * needs more (as upstream's writer does), so every length is the shortest varint: the same bytes.
 */

type HrTime = [number, number];
type Attributes = Record<string, unknown>;
interface ScopeLike { name: string; version?: string; schemaUrl?: string; attributes?: Attributes; droppedAttributesCount?: number }
interface ResourceLike { attributes?: Attributes; schemaUrl?: string }
interface SpanContextLike { traceId: string; spanId: string; traceFlags: number; isRemote?: boolean; traceState?: { serialize(): string } }

const MIN_INT64 = -(2 ** 63);
const MAX_INT64 = 2 ** 63;
const TWO_32 = 4294967296;
/** Keys longer than this are encoded each time; past this many the cache starts afresh. */
const KEY_CACHE_MAX_LENGTH = 100;
const KEY_CACHE_MAX_ENTRIES = 4096;
/** Below this many UTF-16 units a JS loop beats the call into Node's encoder. */
const NATIVE_STRING_FROM = 32;
/** A scratch buffer grown past this by one large export is not kept for the next. */
const SCRATCH_KEEP_MAX = 4 * 1024 * 1024;

function varintSize(v: number): number {
  if (v < 128) return 1;
  if (v < 16384) return 2;
  if (v < 2097152) return 3;
  if (v < 268435456) return 4;
  return 5; // lengths and 32-bit values only
}

class Writer {
  buf: Buffer;
  pos = 0;
  private readonly keyCache = new Map<string, Buffer>();
  readonly attributeMemo = new Map<string, AttributeMemo>();

  constructor(size: number) {
    this.buf = Buffer.allocUnsafe(size);
  }

  reset(): void {
    this.pos = 0;
    if (this.buf.length > SCRATCH_KEEP_MAX) this.buf = Buffer.allocUnsafe(64 * 1024);
  }

  ensure(n: number): void {
    const need = this.pos + n;
    if (need <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < need) size *= 2;
    const next = Buffer.allocUnsafe(size);
    this.buf.copy(next, 0, 0, this.pos);
    this.buf = next;
  }

  byte(b: number): void {
    this.ensure(1);
    this.buf[this.pos++] = b;
  }

  /** An unsigned varint of up to 32 bits (tags, lengths, counts, enums). */
  uvarint32(value: number): void {
    this.ensure(5);
    let v = value >>> 0;
    const buf = this.buf;
    let p = this.pos;
    while (v > 127) {
      buf[p++] = (v & 127) | 128;
      v >>>= 7;
    }
    buf[p++] = v;
    this.pos = p;
  }

  /** A varint of any integer-valued number in the int64 range (negative: ten bytes, two's complement). */
  varint(value: number): void {
    if (value >= 0 && value <= 4294967295) {
      this.uvarint32(value);
      return;
    }
    this.ensure(10);
    let low: number;
    let high: number;
    if (value >= 0) {
      low = value >>> 0;
      high = (value / TWO_32) >>> 0;
    } else {
      const abs = -value;
      low = (~(abs >>> 0)) >>> 0;
      high = (~((abs / TWO_32) >>> 0)) >>> 0;
      low = (low + 1) >>> 0;
      if (low === 0) high = (high + 1) >>> 0;
    }
    const buf = this.buf;
    let p = this.pos;
    while (high > 0 || low > 127) {
      buf[p++] = (low & 127) | 128;
      low = ((low >>> 7) | (high << 25)) >>> 0;
      high >>>= 7;
    }
    buf[p++] = low & 127;
    this.pos = p;
  }

  fixed32(value: number): void {
    this.ensure(4);
    this.u32(value >>> 0);
  }

  /**
   * Nanoseconds since the epoch of an HrTime, as fixed64, exactly past 2^53: seconds split at 16
   * bits, each part times 1e9 exact in a double. The same integer conversions as upstream (a
   * 32-bit mask, truncating shifts), so that even a negative or fractional time (a user's
   * `span.end(-1500)`) gives upstream's bytes.
   */
  hrTime(t: HrTime): void {
    this.ensure(8);
    const seconds = t[0];
    const nanos = t[1];
    const fromLow16 = (seconds & 0xffff) * 1e9;
    const fromHigh = ((seconds / 65536) >>> 0) * 1e9; // its product with 65536 is the rest
    const sum = (fromLow16 >>> 0) + (((fromHigh & 0xffff) * 65536) >>> 0) + nanos;
    const carry = Math.floor(sum / TWO_32);
    this.u32(sum >>> 0);
    this.u32((Math.floor(fromLow16 / TWO_32) + ((fromHigh / 65536) >>> 0) + carry) >>> 0);
  }

  /** Four bytes, little-endian (capacity ensured by the caller). */
  private u32(v: number): void {
    const buf = this.buf;
    const p = this.pos;
    buf[p] = v & 255;
    buf[p + 1] = (v >>> 8) & 255;
    buf[p + 2] = (v >>> 16) & 255;
    buf[p + 3] = v >>> 24;
    this.pos = p + 4;
  }

  double(value: number): void {
    this.ensure(8);
    this.buf.writeDoubleLE(value, this.pos);
    this.pos += 8;
  }

  /** Starts a length-delimited field's contents; returns where its length goes. */
  open(): number {
    this.ensure(1);
    return this.pos++;
  }

  /** Writes the length of the contents begun at `at`, moving them up if it takes more than a byte. */
  close(at: number): void {
    const length = this.pos - at - 1;
    if (length < 128) {
      this.buf[at] = length;
      return;
    }
    const size = varintSize(length);
    this.ensure(size - 1);
    this.buf.copyWithin(at + size, at + 1, this.pos);
    this.pos += size - 1;
    let v = length;
    let p = at;
    while (v > 127) {
      this.buf[p++] = (v & 127) | 128;
      v >>>= 7;
    }
    this.buf[p] = v;
  }

  /**
   * A string as a length-delimited field's contents (its length, then its UTF-8). Anything else
   * (a span named by a number from untyped code) is written as its `String()`: upstream writes a
   * malformed field for it, and doubles its buffer on each.
   */
  string(value: string): void {
    const s = typeof value === 'string' ? value : safeString(value);
    const n = s.length;
    if (n >= NATIVE_STRING_FROM) {
      this.nativeString(s);
      return;
    }
    // At most 3 bytes per UTF-16 unit; under 32 units the length is one byte as long as it is ASCII.
    this.ensure(1 + 3 * n);
    const buf = this.buf;
    const start = this.pos;
    let p = start + 1;
    for (let i = 0; i < n; i++) {
      const c = s.charCodeAt(i);
      if (c > 127) {
        this.nativeString(s);
        return;
      }
      buf[p++] = c;
    }
    buf[start] = n;
    this.pos = p;
  }

  private nativeString(s: string): void {
    this.ensure(5 + 3 * s.length);
    const at = this.open();
    this.pos += this.buf.write(s, this.pos, 'utf8');
    this.close(at);
  }

  bytes(b: Uint8Array): void {
    this.uvarint32(b.length);
    this.ensure(b.length);
    this.buf.set(b, this.pos);
    this.pos += b.length;
  }

  /** A hex id as bytes (as upstream decodes it: 0-9, a-f, and A-F alike). */
  hexBytes(hex: string): void {
    const n = hex.length >>> 1;
    if (n > 127) this.uvarint32(n);
    else this.byte(n);
    this.ensure(n);
    const buf = this.buf;
    let p = this.pos;
    for (let i = 0; i < 2 * n; i += 2) buf[p++] = (nibble(hex.charCodeAt(i)) << 4) | nibble(hex.charCodeAt(i + 1));
    this.pos = p;
  }

  /** `KeyValue.key` (field 1): its encoded bytes cached for the keys that recur in every span. */
  key(k: string): void {
    let cached = this.keyCache.get(k);
    if (cached === undefined) {
      const start = this.pos;
      this.byte(0x0a);
      this.string(k);
      if (k.length > KEY_CACHE_MAX_LENGTH) return;
      // Full (keys made of ids, say): start afresh, so the keys of every span are cached again.
      if (this.keyCache.size >= KEY_CACHE_MAX_ENTRIES) this.keyCache.clear();
      cached = Buffer.from(this.buf.subarray(start, this.pos));
      this.keyCache.set(k, cached);
      return;
    }
    this.raw(cached);
  }

  /** Bytes encoded before. A loop: Buffer#copy costs more than it saves on a few dozen bytes. */
  raw(bytes: Buffer): void {
    const n = bytes.length;
    this.ensure(n);
    const buf = this.buf;
    let p = this.pos;
    for (let i = 0; i < n; i++) buf[p++] = bytes[i]!;
    this.pos = p;
  }
}

/**
 * Per attribute key, the last short string or number value written under it, and once the same
 * value came again, the whole attribute's encoding (tag, length, key, value): a server's spans
 * repeat most of their values (method, path, addresses, ports, status), which are then copied,
 * not encoded. A value that changes every span (a request id) allocates nothing.
 */
interface AttributeMemo {
  tag: number;
  value: unknown;
  bytes: Buffer | undefined;
}
const ATTRIBUTE_MEMO_MAX_ENTRIES = 1024;
const ATTRIBUTE_MEMO_MAX_VALUE = 128;

function safeString(v: unknown): string {
  try {
    return String(v);
  } catch {
    return '';
  }
}

function nibble(c: number): number {
  return c >= 48 && c <= 57 ? c - 48 : c >= 97 && c <= 102 ? c - 87 : c - 55;
}

function attributes(w: Writer, attrs: Attributes, field: number): void {
  const tag = (field << 3) | 2;
  for (const k in attrs) {
    if (!Object.prototype.hasOwnProperty.call(attrs, k)) continue;
    const v = attrs[k];
    if (typeof v === 'string' ? v.length > ATTRIBUTE_MEMO_MAX_VALUE : typeof v !== 'number') {
      attribute(w, tag, k, v);
      continue;
    }
    const memo = w.attributeMemo.get(k);
    if (memo !== undefined && memo.tag === tag && Object.is(memo.value, v)) {
      if (memo.bytes !== undefined) {
        w.raw(memo.bytes);
      } else {
        const start = w.pos;
        attribute(w, tag, k, v);
        memo.bytes = Buffer.from(w.buf.subarray(start, w.pos));
      }
      continue;
    }
    attribute(w, tag, k, v);
    if (memo !== undefined) {
      memo.tag = tag;
      memo.value = v;
      memo.bytes = undefined;
    } else if (k.length <= KEY_CACHE_MAX_LENGTH) {
      if (w.attributeMemo.size >= ATTRIBUTE_MEMO_MAX_ENTRIES) w.attributeMemo.clear();
      w.attributeMemo.set(k, { tag, value: v, bytes: undefined });
    }
  }
}

function attribute(w: Writer, tag: number, k: string, v: unknown): void {
  w.byte(tag);
  const kv = w.open();
  keyValue(w, k, v);
  w.close(kv);
}

function keyValue(w: Writer, k: string, value: unknown): void {
  w.key(k);
  w.byte(0x12); // value: AnyValue
  const at = w.open();
  anyValue(w, value);
  w.close(at);
}

/** AnyValue's contents: string 1, bool 2, int 3, double 4, array 5, kvlist 6, bytes 7. */
function anyValue(w: Writer, value: unknown): void {
  switch (typeof value) {
    case 'string':
      w.byte(0x0a);
      w.string(value);
      return;
    case 'boolean':
      w.byte(0x10);
      w.byte(value ? 1 : 0);
      return;
    case 'number':
      if (Number.isInteger(value) && value >= MIN_INT64 && value < MAX_INT64) {
        w.byte(0x18);
        w.varint(value);
      } else {
        w.byte(0x21);
        w.double(value);
      }
      return;
    case 'object':
      break;
    default:
      return;
  }
  if (value === null) return;
  if (value instanceof Uint8Array) {
    w.byte(0x3a);
    w.bytes(value);
  } else if (Array.isArray(value)) {
    w.byte(0x2a);
    const list = w.open();
    for (const item of value) {
      w.byte(0x0a);
      const at = w.open();
      anyValue(w, item);
      w.close(at);
    }
    w.close(list);
  } else {
    w.byte(0x32);
    const list = w.open();
    const obj = value as Attributes;
    for (const k in obj) {
      if (!Object.prototype.hasOwnProperty.call(obj, k)) continue;
      w.byte(0x0a);
      const kv = w.open();
      // Nested keys are the app's own: not cached.
      w.byte(0x0a);
      w.string(k);
      w.byte(0x12);
      const at = w.open();
      anyValue(w, obj[k]);
      w.close(at);
      w.close(kv);
    }
    w.close(list);
  }
}

/** A field (`tag`, length-delimited) holding one message. */
function embedded<T>(w: Writer, tag: number, item: T, encode: (w: Writer, item: T) => void): void {
  w.byte(tag);
  const at = w.open();
  encode(w, item);
  w.close(at);
}

function spanFlags(traceFlags: number, isRemote: boolean | undefined): number {
  // 0x100: the flags say whether the parent is remote; 0x200: it is.
  return (traceFlags & 255) | 0x100 | (isRemote ? 0x200 : 0);
}

function event(w: Writer, e: ReadableSpan['events'][number]): void {
  w.byte(0x09);
  w.hrTime(e.time as HrTime);
  w.byte(0x12);
  w.string(e.name);
  if (e.attributes) attributes(w, e.attributes as Attributes, 3);
  w.byte(0x20);
  w.varint(e.droppedAttributesCount || 0);
}

/** trace_id (1), span_id (2) and trace_state (3): the same fields in a Span and in a Span.Link. */
function contextFields(w: Writer, c: SpanContextLike): void {
  w.byte(0x0a);
  w.hexBytes(c.traceId);
  w.byte(0x12);
  w.hexBytes(c.spanId);
  const state = c.traceState?.serialize();
  if (state) {
    w.byte(0x1a);
    w.string(state);
  }
}

function link(w: Writer, l: ReadableSpan['links'][number]): void {
  const c = l.context as SpanContextLike;
  contextFields(w, c);
  if (l.attributes) attributes(w, l.attributes as Attributes, 4);
  w.byte(0x28);
  w.varint(l.droppedAttributesCount || 0);
  w.byte(0x35);
  w.fixed32(spanFlags(c.traceFlags, c.isRemote));
}

function span(w: Writer, s: ReadableSpan): void {
  const ctx = s.spanContext() as SpanContextLike;
  contextFields(w, ctx);
  const parent = s.parentSpanContext as SpanContextLike | undefined;
  if (parent?.spanId) {
    w.byte(0x22);
    w.hexBytes(parent.spanId);
  }
  w.byte(0x2a);
  w.string(s.name);
  const kind = s.kind == null ? 0 : s.kind + 1;
  if (kind !== 0) {
    w.byte(0x30);
    w.varint(kind);
  }
  w.byte(0x39);
  w.hrTime(s.startTime as HrTime);
  w.byte(0x41);
  w.hrTime(s.endTime as HrTime);
  if (s.attributes) attributes(w, s.attributes as Attributes, 9);
  w.byte(0x50);
  w.varint(s.droppedAttributesCount);
  for (const e of s.events) embedded(w, 0x5a, e, event);
  w.byte(0x60);
  w.varint(s.droppedEventsCount);
  for (const l of s.links) embedded(w, 0x6a, l, link);
  w.byte(0x70);
  w.varint(s.droppedLinksCount);
  w.byte(0x7a); // status
  const status = w.open();
  if (s.status.message) {
    w.byte(0x12);
    w.string(s.status.message);
  }
  w.byte(0x18);
  w.varint(s.status.code);
  w.close(status);
  w.byte(0x85); // field 16, fixed32: two bytes of tag
  w.byte(0x01);
  w.fixed32(spanFlags(ctx.traceFlags, parent?.isRemote));
}

function scopeOf(w: Writer, scope: ScopeLike): void {
  w.byte(0x0a);
  const at = w.open();
  w.byte(0x0a);
  w.string(scope.name);
  if (scope.version) {
    w.byte(0x12);
    w.string(scope.version);
  }
  if (scope.attributes) attributes(w, scope.attributes, 3);
  if (scope.droppedAttributesCount) {
    w.byte(0x20);
    w.varint(scope.droppedAttributesCount);
  }
  w.close(at);
}

function resourceSpans(w: Writer, resource: ResourceLike, scopes: Map<unknown, ReadableSpan[]>): void {
  w.byte(0x0a);
  const r = w.open();
  if (resource.attributes) attributes(w, resource.attributes, 1);
  w.byte(0x10);
  w.byte(0);
  w.close(r);
  for (const spans of scopes.values()) {
    w.byte(0x12);
    const ss = w.open();
    const scope = spans[0]!.instrumentationScope as ScopeLike;
    scopeOf(w, scope);
    for (const s of spans) embedded(w, 0x12, s, span);
    if (scope.schemaUrl) {
      w.byte(0x1a);
      w.string(scope.schemaUrl);
    }
    w.close(ss);
  }
  if (resource.schemaUrl) {
    w.byte(0x1a);
    w.string(resource.schemaUrl);
  }
}

const scratch = new Writer(64 * 1024);

/** The request's bytes (a copy: the scratch buffer is reused by the next export). */
export function encodeTraceExport(spans: readonly ReadableSpan[]): Uint8Array {
  // Grouped by resource, then scope, by identity and in order of first appearance, as upstream.
  const byResource = new Map<unknown, Map<unknown, ReadableSpan[]>>();
  for (const s of spans) {
    let scopes = byResource.get(s.resource);
    if (scopes === undefined) byResource.set(s.resource, scopes = new Map());
    const list = scopes.get(s.instrumentationScope);
    if (list === undefined) scopes.set(s.instrumentationScope, [s]);
    else list.push(s);
  }
  const w = scratch;
  w.reset();
  try {
    for (const [resource, scopes] of byResource) {
      w.byte(0x0a); // resource_spans
      const at = w.open();
      resourceSpans(w, resource as ResourceLike, scopes);
      w.close(at);
    }
    return new Uint8Array(w.buf.subarray(0, w.pos));
  } finally {
    w.pos = 0;
  }
}
