import type { Input } from './inputs';
import { recordsOfLogsRequest, spansOfTracesRequest, stringAttr } from './otlp';
import type { Json, SpanInfo } from './otlp';
import { inInput, longLineMessage, readBlocks, where } from './read';
import type { Block, ReadEvents } from './read';
import { buildTrail, isoMicros, parseTimeMicros } from './tree';
import type { Trail, TrailRecord } from './tree';

/**
 * `auditrace trail <id>`: every audit record of a request (by request id, trace id, or the audit id
 * of one of its records) and every span of its traces, from local audit files and the gateway
 * archive, as the request's path through the services (tree.ts).
 *
 * Streaming: a line is parsed only when its raw bytes contain one of the ids searched (ids are
 * plain hex/UUID strings, written verbatim in both JSON forms), so a pass costs little more than
 * reading and decompressing. Memory holds the matching records and spans, and a bounded index of
 * the five request ids nearest in time, for when nothing matches. Passes: one over the audit
 * inputs (a second, for the request's other ids, only when the id given was an audit id or a
 * trace id whose records carry no request id yet seen), then one over the traces.
 */

export interface TrailOptions {
  id: string;
  inputs: Input[];
  events: ReadEvents;
}

export interface Suggestion {
  requestId: string;
  time: string;
  service: string;
}

export interface NotFound {
  found: false;
  id: string;
  message: string;
  /** What "nearest" was measured from. */
  reference: { kind: 'uuidv7'; time: string } | { kind: 'most-recent' };
  suggestions: Suggestion[];
}

export type TrailResult = Trail | NotFound;

/** Characters both JSON writers (auditrace's and the collector's) put in a string verbatim. */
const VERBATIM = /^[A-Za-z0-9._:/+=@-]{1,256}$/;
const UUIDV7 = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/i;

/** The millisecond timestamp inside a UUIDv7. */
export function uuidv7Millis(id: string): number | undefined {
  if (!UUIDV7.test(id)) return undefined;
  return parseInt(id.slice(0, 8) + id.slice(9, 13), 16);
}

/** The up-to-five request ids whose records are nearest to a reference time. */
class Nearest {
  private readonly best = new Map<string, { d: number; time: string | number; service: string }>();
  private worst = Infinity;

  constructor(private readonly target: number | undefined, private readonly size = 5) {}

  /** Distance of a record time (micros) to the reference: with no reference, the newest is nearest. */
  distance(micros: number): number {
    return this.target === undefined ? -micros : Math.abs(micros - this.target);
  }

  /** Whether a record at this distance could enter. */
  wants(d: number): boolean {
    return this.best.size < this.size || d < this.worst;
  }

  /** `time`: as written, or microseconds (formatted only for the five kept). */
  offer(requestId: string, d: number, time: string | number, service: string): void {
    const cur = this.best.get(requestId);
    if (cur) {
      if (d < cur.d) this.best.set(requestId, { d, time, service });
      else return;
    } else {
      if (!this.wants(d)) return;
      this.best.set(requestId, { d, time, service });
      if (this.best.size > this.size) {
        let worstKey = '';
        let worstD = -Infinity;
        for (const [k, v] of this.best) if (v.d > worstD) { worstD = v.d; worstKey = k; }
        this.best.delete(worstKey);
      }
    }
    let worst = -Infinity;
    for (const v of this.best.values()) if (v.d > worst) worst = v.d;
    this.worst = this.best.size < this.size ? Infinity : worst;
  }

  list(): Suggestion[] {
    return [...this.best.entries()].sort((a, b) => a[1].d - b[1].d)
      .map(([requestId, v]) => ({ requestId, time: typeof v.time === 'number' ? isoMicros(v.time) : v.time, service: v.service }));
  }
}

const LOCAL_REQ = Buffer.from('"request.id":"');
const LOCAL_TIME = Buffer.from('"time":"');
const LOCAL_SERVICE = Buffer.from('"service.name":"');
const OTLP_REQ = Buffer.from('{"key":"request.id","value":{"stringValue":"');
const OTLP_SERVICE = Buffer.from('{"key":"service.name","value":{"stringValue":"');
const OTLP_TIME = Buffer.from('"timeUnixNano":"');
const QUOTE = 0x22;
const NL = 0x0a;

function stringAt(buf: Buffer, start: number, limit: number): string | undefined {
  const end = buf.indexOf(QUOTE, start);
  if (end < 0 || end > limit || end - start > 256) return undefined;
  return buf.toString('utf8', start, end);
}

/** Feeds the nearest-request index from a block without parsing it. */
function indexBlock(block: Block, nearest: Nearest): void {
  const buf = block.buf;
  if (block.input.kind === 'local') {
    for (let p = buf.indexOf(LOCAL_REQ); p >= 0; p = buf.indexOf(LOCAL_REQ, p + 1)) {
      const lineStart = buf.lastIndexOf(NL, p) + 1;
      let lineEnd = buf.indexOf(NL, p);
      if (lineEnd < 0) lineEnd = buf.length;
      const t = buf.indexOf(LOCAL_TIME, lineStart);
      if (t < 0 || t > lineEnd) continue;
      const time = stringAt(buf, t + LOCAL_TIME.length, lineEnd);
      if (!time) continue;
      const d = nearest.distance(parseTimeMicros(time));
      if (!Number.isFinite(d) || !nearest.wants(d)) { p = lineEnd; continue; }
      const rid = stringAt(buf, p + LOCAL_REQ.length, lineEnd);
      if (!rid) continue;
      const s = buf.indexOf(LOCAL_SERVICE, lineStart);
      const service = s >= 0 && s < lineEnd ? stringAt(buf, s + LOCAL_SERVICE.length, lineEnd) ?? '' : '';
      nearest.offer(rid, d, time, service);
      p = lineEnd;
    }
    return;
  }
  if (block.input.signal === 'traces') return;
  // Archive: each request id attribute, with the timeUnixNano that opens its log record (a short
  // scan back) and, only for a candidate, the service name after it. Never a scan back to the start
  // of a line: a batch line holds thousands of records.
  let prevReq = -1;
  for (let p = buf.indexOf(OTLP_REQ); p >= 0; p = buf.indexOf(OTLP_REQ, p + OTLP_REQ.length)) {
    const t = buf.lastIndexOf(OTLP_TIME, p);
    const floor = prevReq;
    prevReq = p;
    if (t < 0 || t < floor) continue; // a record without timeUnixNano: no time to rank it by
    const nanos = stringAt(buf, t + OTLP_TIME.length, p);
    const micros = nanos && nanos.length > 3 ? Number(nanos.slice(0, -3)) : NaN;
    const d = nearest.distance(micros);
    if (!Number.isFinite(d) || !nearest.wants(d)) continue;
    const rid = stringAt(buf, p + OTLP_REQ.length, buf.length);
    if (!rid) continue;
    let next = buf.indexOf(OTLP_TIME, p);
    if (next < 0) next = buf.length;
    const s = buf.indexOf(OTLP_SERVICE, t);
    const service = s >= 0 && s < next ? stringAt(buf, s + OTLP_SERVICE.length, next) ?? '' : '';
    nearest.offer(rid, d, micros, service);
  }
}

interface LineHit { line: number; text: string }

/**
 * auditrace writes flat records (a field may hold a list or a small object): a value nested deeper
 * than this was made by someone else, and printing it (tree.ts, --json) would exhaust the stack.
 */
const MAX_DEPTH = 64;
const TOO_DEEP = `unreadable record: nested deeper than ${MAX_DEPTH} levels`;

function nestedDeeper(v: unknown, max: number): boolean {
  if (v === null || typeof v !== 'object') return false;
  if (max === 0) return true;
  for (const x of Object.values(v)) if (nestedDeeper(x, max - 1)) return true;
  return false;
}

/**
 * Lines of a block that contain one of `needles` (all lines when `needles` is undefined), with their
 * line numbers; every line that cannot be a JSON object is reported. Returns the block's line count.
 */
function scanBlock(block: Block, firstLine: number, needles: Buffer[] | undefined, events: ReadEvents,
  onLine: (hit: LineHit) => void): number {
  if (block.long) {
    // A line skipped unread (read.ts): its block is an empty line in its place.
    events.problem(block.input, `${where(block.input.display, firstLine)}: ${longLineMessage(block.long)}`);
    return 1;
  }
  const buf = block.buf;
  const starts: number[] = [];
  if (needles) {
    for (const n of needles) {
      for (let p = buf.indexOf(n); p >= 0; p = buf.indexOf(n, p + n.length)) {
        const s = buf.lastIndexOf(NL, p) + 1;
        starts.push(s);
        const e = buf.indexOf(NL, p);
        if (e < 0) break;
        p = e - n.length + 1;
      }
    }
    starts.sort((a, b) => a - b);
  }
  let hit = 0;
  let line = firstLine;
  let pos = 0;
  while (pos < buf.length) {
    let end = buf.indexOf(NL, pos);
    if (end < 0) end = buf.length;
    let last = end - 1;
    if (last >= pos && buf[last] === 0x0d) last--;
    if (last >= pos) {
      if (block.torn) {
        events.problem(block.input, `${where(block.input.display, line)}: ${block.input.kind === 'local'
          ? 'torn last line (no newline: a crash mid-write?)' : 'incomplete line cut by damage to the zstd stream'} (skipped)`);
      } else if (buf[pos] !== 0x7b || buf[last] !== 0x7d) {
        events.problem(block.input, `${where(block.input.display, line)}: not JSON (skipped)`);
      } else {
        let wanted = needles === undefined;
        while (hit < starts.length && starts[hit]! < pos) hit++;
        if (hit < starts.length && starts[hit] === pos) {
          wanted = true;
          while (hit < starts.length && starts[hit] === pos) hit++;
        }
        if (wanted) onLine({ line, text: buf.toString('utf8', pos, last + 1) });
      }
    }
    line++;
    pos = end + 1;
  }
  return line - firstLine;
}

interface Wanted {
  requestIds: Set<string>;
  traceIds: Set<string>;
  auditIds: Set<string>;
}

function needlesOf(ids: Iterable<string>): Buffer[] | undefined {
  const list = [...new Set(ids)];
  if (list.some((i) => !VERBATIM.test(i))) return undefined;
  return list.map((i) => Buffer.from(i));
}

export async function trail(opts: TrailOptions): Promise<TrailResult> {
  const { id, inputs, events } = opts;
  const t0 = uuidv7Millis(id);
  const nearest = new Nearest(t0 === undefined ? undefined : t0 * 1000);
  const recordInputs = inputs.filter((i) => i.kind === 'local' || i.signal !== 'traces');
  const traceInputs = inputs.filter((i) => i.kind === 'archive' && i.signal !== 'logs');

  const kept = new Map<string, TrailRecord>();
  const matchedAs = new Set<string>();

  const keep = (rec: Record<string, Json>, at: string, source: 'local' | 'archive', w: Wanted, input: Input, report: boolean): void => {
    const rid = rec['request.id'];
    const tid = rec.trace_id;
    const aid = rec['audit.id'];
    const byRid = typeof rid === 'string' && w.requestIds.has(rid);
    const byTid = typeof tid === 'string' && w.traceIds.has(tid);
    const byAid = typeof aid === 'string' && w.auditIds.has(aid);
    if (!byRid && !byTid && !byAid) return;
    if (nestedDeeper(rec, MAX_DEPTH)) {
      if (report) events.problem(input, `${at}: ${TOO_DEEP} (skipped)`);
      return;
    }
    if (byRid && rid === id) matchedAs.add('request.id');
    if (byTid && tid === id) matchedAs.add('trace_id');
    if (byAid && aid === id) matchedAs.add('audit.id');
    const k = typeof aid === 'string' ? aid : at;
    if (kept.has(k)) return;
    kept.set(k, { record: rec, where: at, source, time: parseTimeMicros(typeof rec.time === 'string' ? rec.time : '') });
  };

  const recordPass = async (w: Wanted, withIndex: boolean): Promise<void> => {
    const needles = needlesOf([...w.requestIds, ...w.traceIds, ...w.auditIds]);
    for (let f = 0; f < recordInputs.length; f++) {
      const input = recordInputs[f]!;
      let line = 1;
      try {
        for await (const block of readBlocks(input, f, withIndex ? events : { ...events, problem: () => {} })) {
          if (withIndex) indexBlock(block, nearest);
          line += scanBlock(block, line, needles, withIndex ? events : { ...events, problem: () => {} }, (hit) => {
            let parsed: unknown;
            try {
              parsed = JSON.parse(hit.text);
            } catch {
              if (withIndex) events.problem(input, `${where(input.display, hit.line)}: not JSON (skipped)`);
              return;
            }
            if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) return;
            if (input.kind === 'local') {
              keep(parsed as Record<string, Json>, where(input.display, hit.line), 'local', w, input, withIndex);
            } else if ((parsed as { resourceLogs?: unknown }).resourceLogs !== undefined) {
              let archived: ReturnType<typeof recordsOfLogsRequest>;
              try {
                archived = recordsOfLogsRequest(parsed);
              } catch (err) {
                if (withIndex) events.problem(input, `${where(input.display, hit.line)}: not a readable OTLP/JSON export request (${(err as Error).message}) (skipped)`);
                return;
              }
              for (const r of archived) keep(r.record, where(input.display, hit.line, r.index), 'archive', w, input, withIndex);
            }
          });
        }
      } catch (e) {
        throw inInput(e, input);
      }
    }
  };

  // Pass 1: the id as any of the three.
  const first: Wanted = { requestIds: new Set([id]), traceIds: new Set([id]), auditIds: new Set([id]) };
  await recordPass(first, true);

  // An audit id stands for its request (or, without a request id, its trace): a second pass for
  // the request's other records, which may come before it in the inputs.
  const more: Wanted = { requestIds: new Set(), traceIds: new Set(), auditIds: new Set() };
  if (matchedAs.has('audit.id') && !matchedAs.has('request.id') && !matchedAs.has('trace_id')) {
    for (const r of kept.values()) {
      if (r.record['audit.id'] !== id) continue;
      const rid = r.record['request.id'];
      if (typeof rid === 'string') more.requestIds.add(rid);
      else if (typeof r.record.trace_id === 'string') more.traceIds.add(r.record.trace_id);
    }
  }
  if (more.requestIds.size > 0 || more.traceIds.size > 0) {
    events.phase?.('second pass: the records of the request', recordInputs.reduce((n, i) => n + i.size, 0));
    await recordPass(more, false);
  }

  // Spans of every trace the records belong to (and of the id itself, if it is a trace id).
  const traceIds = new Set<string>([id]);
  const requestIds = new Set<string>([id]);
  for (const r of kept.values()) {
    if (typeof r.record.trace_id === 'string') traceIds.add(r.record.trace_id);
    if (typeof r.record['request.id'] === 'string') requestIds.add(r.record['request.id']);
  }
  const spans = new Map<string, SpanInfo>();
  if (traceInputs.length > 0) events.phase?.('spans', traceInputs.reduce((n, i) => n + i.size, 0));
  const spanNeedles = needlesOf([...traceIds, ...requestIds]);
  for (let f = 0; f < traceInputs.length; f++) {
    const input = traceInputs[f]!;
    let line = 1;
    const quiet = input.signal === 'any' ? { ...events, problem: () => {} } : events;
    try {
      for await (const block of readBlocks(input, f, quiet)) {
        line += scanBlock(block, line, spanNeedles, quiet, (hit) => {
          let parsed: unknown;
          try {
            parsed = JSON.parse(hit.text);
          } catch {
            events.problem(input, `${where(input.display, hit.line)}: not JSON (skipped)`);
            return;
          }
          let found: SpanInfo[];
          try {
            found = spansOfTracesRequest(parsed, where(input.display, hit.line), (traceId, attrs) => {
              if (traceIds.has(traceId)) return true;
              const rid = stringAttr(attrs, 'request.id');
              return rid !== undefined && requestIds.has(rid);
            });
          } catch (err) {
            events.problem(input, `${where(input.display, hit.line)}: not a readable OTLP/JSON export request (${(err as Error).message}) (skipped)`);
            return;
          }
          for (const s of found) {
            if (nestedDeeper(s.attributes, MAX_DEPTH)) {
              events.problem(input, `${s.where}: ${TOO_DEEP} (skipped)`);
              continue;
            }
            const k = `${s.traceId}/${s.spanId}`;
            if (!spans.has(k)) spans.set(k, s);
            if (s.traceId === id) matchedAs.add('trace_id');
            else if (s.attributes['request.id'] === id) matchedAs.add('request.id');
          }
        });
      }
    } catch (e) {
      throw inInput(e, input);
    }
  }

  if (kept.size === 0 && spans.size === 0) {
    return {
      found: false,
      id,
      message: `no record with id ${id}`,
      reference: t0 === undefined ? { kind: 'most-recent' } : { kind: 'uuidv7', time: new Date(t0).toISOString() },
      suggestions: nearest.list(),
    };
  }
  return buildTrail({
    id,
    matchedAs: [...matchedAs],
    records: [...kept.values()],
    spans: [...spans.values()],
    spansAvailable: traceInputs.length > 0,
  });
}

export function formatNotFound(r: NotFound): string {
  const lines = [r.message];
  if (r.suggestions.length === 0) {
    lines.push('no request ids in the inputs to suggest');
  } else {
    lines.push(r.reference.kind === 'uuidv7'
      ? `nearest requests to ${r.reference.time} (the time inside the UUIDv7 ${r.id}):`
      : 'most recent requests:');
    for (const s of r.suggestions) lines.push(`  ${s.requestId}  ${s.time}  ${s.service}`);
  }
  return `${lines.join('\n')}\n`;
}
