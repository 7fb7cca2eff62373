import { canonicalize } from '../audit/chain';

/**
 * OTLP/JSON (as the collector's file exporter writes it) back to what auditrace wrote.
 *
 * An audit record tailed by the agent arrives as a log record whose attributes are the original
 * record's fields (the agent's `json_parser` parses the line into attributes and keeps every field,
 * `time`, `severity`, `trace_id`, `span_id` included); the collector adds `log.file.*`, which is not
 * part of the record. Converting the attributes back gives an object whose RFC 8785 form is the
 * original line's, so the hash chain verifies from the archive as from the file: integers that
 * arrive as doubles (200.0) are the same JavaScript number, and canonical form prints numbers the
 * ECMAScript way.
 */

export type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

interface AnyValue {
  stringValue?: string;
  boolValue?: boolean;
  intValue?: string | number;
  doubleValue?: number | string;
  arrayValue?: { values?: AnyValue[] };
  kvlistValue?: { values?: KeyValue[] };
  bytesValue?: string;
}
export interface KeyValue { key: string; value?: AnyValue }

/** A plain object without prototype: a `__proto__` key stays an ordinary key, as JSON.parse makes it. */
function record(): Record<string, Json> {
  return Object.create(null) as Record<string, Json>;
}

/** A number as OTLP/JSON writes it (a number or a decimal string); an object is no number (and `Number` of it may throw). */
function num(x: unknown): number {
  return typeof x === 'object' && x !== null ? Number.NaN : Number(x);
}

export function anyValue(v: AnyValue | undefined | null): Json {
  if (v === undefined || v === null || typeof v !== 'object') return null;
  if (v.stringValue !== undefined) return v.stringValue;
  if (v.boolValue !== undefined) return v.boolValue;
  if (v.intValue !== undefined) return num(v.intValue);
  if (v.doubleValue !== undefined) return num(v.doubleValue);
  if (v.arrayValue !== undefined) return Array.isArray(v.arrayValue?.values) ? v.arrayValue.values.map((x) => anyValue(x)) : [];
  if (v.kvlistValue !== undefined) return kvlist(v.kvlistValue?.values);
  if (v.bytesValue !== undefined) return v.bytesValue;
  return null;
}

export function kvlist(values: KeyValue[] | undefined, skip?: (key: string) => boolean): Record<string, Json> {
  const out = record();
  if (!Array.isArray(values)) return out;
  for (const kv of values) {
    if (!kv || typeof kv.key !== 'string') continue;
    if (skip && skip(kv.key)) continue;
    out[kv.key] = anyValue(kv.value);
  }
  return out;
}

export const notRecordField = (key: string): boolean => key.startsWith('log.file.');

export interface OtlpLogRecord {
  timeUnixNano?: string | number;
  observedTimeUnixNano?: string | number;
  severityText?: string;
  attributes?: KeyValue[];
  traceId?: string;
  spanId?: string;
  eventName?: string;
  body?: AnyValue;
}

export interface ArchivedRecord {
  record: Record<string, Json>;
  /** Index of the log record within the export request (across resources and scopes). */
  index: number;
  /**
   * The record as tailed from an audit file (`log.file.*` present, or not emitted by auditrace's
   * own OTLP logger): the chain's bytes. A copy emitted over OTLP (`AUDITRACE_AUDIT_OTLP=true`)
   * lacks `time`/`trace_id`/`span_id` and is not hashed; trail still uses it.
   */
  tailed: boolean;
  /** The audit file it was tailed from (`log.file.path`, else `log.file.name`), '' if unknown. */
  source: string;
  /**
   * The log record's attributes in key order (`inKeyOrder`). For a tailed record,
   * `canonicalOfSorted(sorted, notRecordField)` is `canonicalize(record)`; an OTLP copy's record
   * has fields from outside its attributes as well.
   */
  sorted: KeyValue[];
  /**
   * The log record's body when it is a string: the agent keeps the line it tailed there (the
   * json_parser parses it into the attributes), and investigators read it, so `verify` checks that
   * it is the same record as the attributes.
   */
  body: string | undefined;
}

/** RFC 3339 with microseconds, as auditrace writes `time`, from Unix nanoseconds. */
export function timeFromNanos(nanos: string | number): string | undefined {
  if (typeof nanos !== 'string' && typeof nanos !== 'number') return undefined;
  const s = String(nanos);
  if (!/^\d{10,}$/.test(s)) return undefined;
  const micros = Number(s.slice(0, -3));
  const ms = Math.floor(micros / 1000);
  const d = new Date(ms);
  if (Number.isNaN(d.getTime())) return undefined;
  return `${d.toISOString().slice(0, 19)}.${String(micros % 1_000_000).padStart(6, '0')}Z`;
}

const keyOf = (kv: KeyValue | undefined): string => (typeof kv?.key === 'string' ? kv.key : '');

/**
 * The attributes sorted by key (UTF-16 order, as RFC 8785 sorts), stable so that a repeated key
 * still ends with its last value. The collector hands a record's fields over in no fixed order
 * (the agent's json_parser fills a map), so records of one kind would each make a new key order for
 * `canonicalize` to plan; made in sorted order they share one, and the object is the same.
 */
export function inKeyOrder(attrs: KeyValue[]): KeyValue[] {
  if (!Array.isArray(attrs)) return attrs;
  let sorted = true;
  for (let i = 1; i < attrs.length; i++) {
    if (keyOf(attrs[i - 1]) > keyOf(attrs[i])) { sorted = false; break; }
  }
  if (sorted) return attrs;
  return byRank(attrs) ?? attrs.slice().sort(compareKeys);
}

function compareKeys(a: KeyValue, b: KeyValue): number {
  const x = keyOf(a);
  const y = keyOf(b);
  return x < y ? -1 : x > y ? 1 : 0;
}

/**
 * Keys seen so far, sorted, and each one's rank: a record's attributes are then ordered by a
 * numeric sort of rank and position (stable, no comparator calls), ≈ 40 % cheaper than comparing
 * the strings. Bounded: past RANKED_MAX distinct keys, or for a key longer than RANKED_KEY_MAX
 * (input written by someone else), the comparator sort is used.
 */
const RANKED_MAX = 4096;
/** Longer keys are not kept (memory bounded by size, not only count): they take the comparator sort. */
const RANKED_KEY_MAX = 256;
const MAX_POSITIONS = 0x10000;
const known: string[] = [];
const rank = new Map<string, number>();
let scratch = new Float64Array(64);

function learn(key: string): boolean {
  if (known.length >= RANKED_MAX || key.length > RANKED_KEY_MAX) return false;
  let lo = 0;
  let hi = known.length;
  while (lo < hi) {
    const m = (lo + hi) >> 1;
    if (known[m]! < key) lo = m + 1;
    else hi = m;
  }
  known.splice(lo, 0, key);
  for (let i = lo; i < known.length; i++) rank.set(known[i]!, i);
  return true;
}

function byRank(attrs: KeyValue[]): KeyValue[] | undefined {
  const n = attrs.length;
  if (n >= MAX_POSITIONS) return undefined;
  // Keys not seen before are learnt first: learning one shifts the ranks of those after it.
  for (let i = 0; i < n; i++) {
    const k = keyOf(attrs[i]);
    if (!rank.has(k) && !learn(k)) return undefined;
  }
  if (scratch.length < n) scratch = new Float64Array(n * 2);
  const packed = scratch;
  for (let i = 0; i < n; i++) packed[i] = rank.get(keyOf(attrs[i]))! * MAX_POSITIONS + i;
  const order = packed.subarray(0, n).sort();
  const out = new Array<KeyValue>(n);
  for (let i = 0; i < n; i++) out[i] = attrs[order[i]! % MAX_POSITIONS]!;
  return out;
}

const MEMBERS_MAX = 10_000;
const members = new Map<string, string>();

/** A key as RFC 8785 writes it, with its `:` (bounded memo: keys repeat from record to record). */
function member(key: string): string {
  let m = members.get(key);
  if (m === undefined) {
    m = `${JSON.stringify(key)}:`;
    if (members.size < MEMBERS_MAX && key.length <= RANKED_KEY_MAX) members.set(key, m);
  }
  return m;
}

/**
 * `canonicalize(kvlist(attrs, skip))` written straight from attributes already in key order
 * (`inKeyOrder`), without the object: what `verify` hashes of an archived record. A repeated key
 * keeps its last value, as `kvlist` does, and is told to `repeated` (the agent's json_parser fills
 * a map, so a tailed record never has one: someone added it). Throws where `canonicalize` throws
 * (a non-finite number).
 */
export function canonicalOfSorted(sorted: KeyValue[], skip: (key: string) => boolean, repeated?: (key: string) => void): string {
  if (!Array.isArray(sorted)) return '{}';
  let out = '{';
  let written = 0;
  const n = sorted.length;
  outer:
  for (let i = 0; i < n; i++) {
    const kv = sorted[i];
    if (!kv || typeof kv.key !== 'string') continue;
    const key = kv.key;
    for (let j = i + 1; j < n && keyOf(sorted[j]) === key; j++) {
      if (typeof sorted[j]?.key === 'string') {
        // Overwritten, as in kvlist, which still reads the value: the same input fails the same way.
        anyValue(kv.value);
        repeated?.(key);
        continue outer;
      }
    }
    if (skip(key)) continue;
    if (written++) out += ',';
    out += member(key);
    const v = kv.value;
    out += typeof v?.stringValue === 'string' ? JSON.stringify(v.stringValue) : canonicalize(anyValue(v));
  }
  return `${out}}`;
}

/** The fields `verify` reads of a record that is not a chain event (lib/forensics/verify-block.ts). */
const CHAIN_FIELDS = new Set(['audit.chain', 'audit.seq', 'audit.id', 'audit.prev', 'audit.chain.alg', 'audit.chain.previous',
  'audit.chain.previous_seq', 'event.name', 'time', 'service.name', 'service.instance.id', 'k8s.pod.name']);
/** The events a chain writes about itself: its start, its checkpoints and its end. */
export const CHAIN_EVENTS: ReadonlySet<string> = new Set(['audit_chain_start', 'audit_checkpoint', 'audit_chain_end']);

/**
 * What `verify` needs of a tailed record, from its attributes in key order: the chain's fields,
 * or, for a chain event (whose MAC covers every field), the whole record. Converting only a dozen
 * of ≈ 40 fields is most of `kvlist`'s cost saved; the hash is taken by `canonicalOfSorted`.
 */
export function chainFields(sorted: KeyValue[]): Record<string, Json> {
  const out = record();
  for (const kv of sorted) {
    if (!kv || typeof kv.key !== 'string' || !CHAIN_FIELDS.has(kv.key)) continue;
    out[kv.key] = anyValue(kv.value);
  }
  const event = out['event.name'];
  return typeof event === 'string' && CHAIN_EVENTS.has(event) ? kvlist(sorted, notRecordField) : out;
}

/**
 * The audit records of one logs export request. `lean`: a tailed record holds only what `verify`
 * reads (`chainFields`).
 */
export function recordsOfLogsRequest(req: unknown, lean = false): ArchivedRecord[] {
  const out: ArchivedRecord[] = [];
  const resourceLogs = (req as { resourceLogs?: unknown[] })?.resourceLogs;
  if (!Array.isArray(resourceLogs)) return out;
  let index = 0;
  for (const rl of resourceLogs as { scopeLogs?: { scope?: { name?: string }; logRecords?: OtlpLogRecord[] }[] }[]) {
    if (!Array.isArray(rl?.scopeLogs)) continue;
    for (const sl of rl.scopeLogs) {
      const otlpCopy = sl?.scope?.name === 'auditrace.audit';
      if (!Array.isArray(sl?.logRecords)) continue;
      for (const lr of sl.logRecords) {
        const attrs = Array.isArray(lr?.attributes) ? lr.attributes : [];
        const tailed = !otlpCopy || attrs.some((kv) => typeof kv?.key === 'string' && kv.key.startsWith('log.file.'));
        const sorted = inKeyOrder(attrs);
        const rec = lean && tailed ? chainFields(sorted) : kvlist(sorted, notRecordField);
        if (!tailed) {
          // auditrace's own OTLP copy: what the log record carries outside its attributes.
          if (rec.time === undefined && lr?.timeUnixNano !== undefined) {
            const t = timeFromNanos(lr.timeUnixNano);
            if (t) rec.time = t;
          }
          if (rec.trace_id === undefined && typeof lr?.traceId === 'string' && lr.traceId) rec.trace_id = lr.traceId;
          if (rec.span_id === undefined && typeof lr?.spanId === 'string' && lr.spanId) rec.span_id = lr.spanId;
        }
        let source = '';
        for (const kv of attrs) {
          if (kv?.key === 'log.file.path' && typeof kv.value?.stringValue === 'string') { source = kv.value.stringValue; break; }
          if (kv?.key === 'log.file.name' && typeof kv.value?.stringValue === 'string') source = kv.value.stringValue;
        }
        const body = lr?.body?.stringValue;
        out.push({ record: rec, index, tailed, source, sorted, body: typeof body === 'string' ? body : undefined });
        index++;
      }
    }
  }
  return out;
}

export const SPAN_KINDS = ['UNSPECIFIED', 'INTERNAL', 'SERVER', 'CLIENT', 'PRODUCER', 'CONSUMER'] as const;

export interface SpanInfo {
  traceId: string;
  spanId: string;
  parentSpanId: string;
  name: string;
  kind: string;
  /** Microseconds since the epoch. */
  start: number;
  end: number;
  status: { code: 'UNSET' | 'OK' | 'ERROR'; message?: string };
  attributes: Record<string, Json>;
  resource: Record<string, Json>;
  links: { traceId: string; spanId: string }[];
  /** Where it was read. */
  where: string;
}

function micros(nanos: unknown): number {
  const s = String(nanos ?? '');
  return /^\d{4,}$/.test(s) ? Number(s.slice(0, -3)) : 0;
}

function spanKind(k: unknown): string {
  if (typeof k === 'number') return SPAN_KINDS[k] ?? 'UNSPECIFIED';
  if (typeof k === 'string') return k.replace(/^SPAN_KIND_/, '');
  return 'UNSPECIFIED';
}

function statusCode(c: unknown): 'UNSET' | 'OK' | 'ERROR' {
  if (c === 1 || c === 'STATUS_CODE_OK') return 'OK';
  if (c === 2 || c === 'STATUS_CODE_ERROR') return 'ERROR';
  return 'UNSET';
}

interface OtlpSpan {
  traceId?: string; spanId?: string; parentSpanId?: string; name?: string; kind?: number | string;
  startTimeUnixNano?: string | number; endTimeUnixNano?: string | number; attributes?: KeyValue[];
  status?: { code?: number | string; message?: string }; links?: { traceId?: string; spanId?: string }[];
}

/** The spans of one traces export request that `want` accepts (decided before anything is copied). */
export function spansOfTracesRequest(req: unknown, where: string, want: (traceId: string, attrs: KeyValue[]) => boolean): SpanInfo[] {
  const out: SpanInfo[] = [];
  const resourceSpans = (req as { resourceSpans?: unknown[] })?.resourceSpans;
  if (!Array.isArray(resourceSpans)) return out;
  let index = 0;
  for (const rs of resourceSpans as { resource?: { attributes?: KeyValue[] }; scopeSpans?: { spans?: OtlpSpan[] }[] }[]) {
    let resource: Record<string, Json> | undefined;
    if (!Array.isArray(rs?.scopeSpans)) continue;
    for (const ss of rs.scopeSpans) {
      if (!Array.isArray(ss?.spans)) continue;
      for (const s of ss.spans) {
        const i = index++;
        if (!s || typeof s.traceId !== 'string' || !want(s.traceId, Array.isArray(s.attributes) ? s.attributes : [])) continue;
        resource ??= kvlist(rs.resource?.attributes);
        const status = statusCode(s.status?.code);
        out.push({
          traceId: s.traceId,
          spanId: String(s.spanId ?? ''),
          parentSpanId: String(s.parentSpanId ?? ''),
          name: String(s.name ?? ''),
          kind: spanKind(s.kind),
          start: micros(s.startTimeUnixNano),
          end: micros(s.endTimeUnixNano),
          status: s.status?.message ? { code: status, message: s.status.message } : { code: status },
          attributes: kvlist(s.attributes),
          resource,
          links: (Array.isArray(s.links) ? s.links : []).map((l) => ({ traceId: String(l?.traceId ?? ''), spanId: String(l?.spanId ?? '') })),
          where: `${where}#${i}`,
        });
      }
    }
  }
  return out;
}

/** A string attribute's value without converting the whole list. */
export function stringAttr(attrs: KeyValue[], key: string): string | undefined {
  for (const kv of attrs) if (kv?.key === key) return kv.value?.stringValue;
  return undefined;
}
