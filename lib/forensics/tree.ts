import type { Json, SpanInfo } from './otlp';

/**
 * The path of one request through the services, as a tree ordered by time:
 * service (one hop: an instance handling the request) → its spans (parent/child by parentSpanId,
 * SERVER/CLIENT) → the audit records written in each span (by span_id) and, under a CLIENT span,
 * the next service's hop. Without spans (local files only), hops come from the access records
 * (`http_request`: end time, duration, peer address), nested by time.
 */

export interface TrailRecord {
  record: Record<string, Json>;
  where: string;
  source: 'local' | 'archive';
  /** Microseconds since the epoch (NaN when the record has no readable time). */
  time: number;
}

export interface RecordNode {
  type: 'record';
  time: string;
  event: string;
  outcome?: string;
  severity?: string;
  auditId?: string;
  spanId?: string;
  userId?: string;
  /** The event's own fields, without the identity and chain fields every record has. */
  fields: Record<string, Json>;
  error?: string;
  where: string;
  record: Record<string, Json>;
}

export interface SpanNode {
  type: 'span';
  name: string;
  kind: string;
  spanId: string;
  parentSpanId: string;
  start: string;
  end: string;
  durationMs: number;
  status: string;
  statusMessage?: string;
  attributes: Record<string, Json>;
  links: { traceId: string; spanId: string }[];
  error?: string;
  where: string;
  children: TrailNode[];
}

export interface ServiceNode {
  type: 'service';
  service: string;
  instance?: string;
  pod?: string;
  /** The address this hop's request came from (`network.peer.address`). */
  peer?: string;
  /** The original external client (`client.address`) as this hop knew it. */
  clientAddress?: string;
  users: string[];
  start: string;
  end: string;
  durationMs: number;
  /** How the hop was placed: by span parentage, or by the access records' times. */
  placedBy: 'spans' | 'times';
  children: TrailNode[];
}

export type TrailNode = ServiceNode | SpanNode | RecordNode;

export interface TrailError {
  service: string;
  time: string;
  what: string;
  message: string;
  where: string;
}

export interface Trail {
  found: true;
  id: string;
  matchedAs: string[];
  requestIds: string[];
  traceIds: string[];
  clientAddress?: string;
  users: string[];
  /** Services in the order the request reached them (depth first, by time). */
  path: string[];
  start: string;
  end: string;
  durationMs: number;
  spansAvailable: boolean;
  counts: { records: number; spans: number; hops: number };
  errors: TrailError[];
  notes: string[];
  tree: ServiceNode[];
}

/** RFC 3339 (auditrace's `time`, microseconds) to microseconds since the epoch. */
export function parseTimeMicros(t: string): number {
  const ms = Date.parse(t);
  if (Number.isNaN(ms)) return NaN;
  const m = /\.(\d+)/.exec(t);
  const frac = m ? m[1]!.padEnd(6, '0').slice(3, 6) : '000';
  return ms * 1000 + Number(frac);
}

export function isoMicros(micros: number): string {
  if (!Number.isFinite(micros)) return '';
  micros = Math.round(micros);
  const ms = Math.floor(micros / 1000);
  return `${new Date(ms).toISOString().slice(0, 19)}.${String(((micros % 1_000_000) + 1_000_000) % 1_000_000).padStart(6, '0')}Z`;
}

const COMMON = new Set([
  'time', 'audit.id', 'event.name', 'event.outcome', 'severity', 'trace_id', 'span_id', 'service.name',
  'service.instance.id', 'k8s.pod.name', 'audit.chain', 'audit.seq', 'audit.prev', 'audit.checkpoint.mac', 'user.id',
]);

const str = (v: Json | undefined): string | undefined => (typeof v === 'string' ? v : undefined);
const num = (v: Json | undefined): number | undefined => (typeof v === 'number' ? v : undefined);

function recordError(r: Record<string, Json>): string | undefined {
  const msg = str(r['error.message']);
  const status = num(r['http.response.status_code']);
  if (msg) return msg;
  if (status !== undefined && status >= 400) return `HTTP ${status}`;
  if (r.severity === 'ERROR' || r.severity === 'CRITICAL') return `${String(r['event.name'])} (${String(r.severity)})`;
  if (r['error.type'] !== undefined) return String(r['error.type']);
  return undefined;
}

function recordNode(t: TrailRecord, trailRequestIds: Set<string>): RecordNode {
  const r = t.record;
  const fields: Record<string, Json> = {};
  for (const [k, v] of Object.entries(r)) {
    if (COMMON.has(k)) continue;
    if (k === 'request.id' && typeof v === 'string' && trailRequestIds.size === 1 && trailRequestIds.has(v)) continue;
    fields[k] = v;
  }
  const err = recordError(r);
  return {
    type: 'record',
    time: str(r.time) ?? isoMicros(t.time),
    event: str(r['event.name']) ?? '(no event.name)',
    ...(str(r['event.outcome']) ? { outcome: str(r['event.outcome'])! } : {}),
    ...(str(r.severity) ? { severity: str(r.severity)! } : {}),
    ...(str(r['audit.id']) ? { auditId: str(r['audit.id'])! } : {}),
    ...(str(r.span_id) ? { spanId: str(r.span_id)! } : {}),
    ...(str(r['user.id']) ? { userId: str(r['user.id'])! } : {}),
    fields,
    ...(err ? { error: err } : {}),
    where: t.where,
    record: r,
  };
}

const SPAN_ATTRS = ['request.id', 'client.address', 'network.peer.address', 'http.request.method', 'http.route', 'url.path',
  'url.full', 'server.address', 'server.port', 'http.response.status_code', 'user.id', 'audit.event.name', 'error.type'];

function spanNode(s: SpanInfo): SpanNode {
  const attributes: Record<string, Json> = {};
  for (const k of SPAN_ATTRS) if (s.attributes[k] !== undefined) attributes[k] = s.attributes[k]!;
  const status = num(s.attributes['http.response.status_code']);
  const err = s.status.code === 'ERROR' ? (s.status.message || 'status ERROR') : status !== undefined && status >= 400 ? `HTTP ${status}` : undefined;
  return {
    type: 'span',
    name: s.name,
    kind: s.kind,
    spanId: s.spanId,
    parentSpanId: s.parentSpanId,
    start: isoMicros(s.start),
    end: isoMicros(s.end),
    durationMs: Math.max(0, (s.end - s.start) / 1000),
    status: s.status.code,
    ...(s.status.message ? { statusMessage: s.status.message } : {}),
    attributes,
    links: s.links,
    ...(err ? { error: err } : {}),
    where: s.where,
    children: [],
  };
}

interface Hop {
  node: ServiceNode;
  instanceKey: string;
  start: number;
  end: number;
  spanId?: string;
  access?: TrailRecord;
  records: TrailRecord[];
}

function instanceKeyOf(r: Record<string, Json>): string {
  return str(r['service.instance.id']) ?? `service:${str(r['service.name']) ?? '?'}`;
}

function startOf(n: TrailNode): number {
  return n.type === 'record' ? parseTimeMicros(n.time) : parseTimeMicros(n.start);
}

function sortTree(nodes: TrailNode[]): void {
  nodes.sort((a, b) => (startOf(a) || 0) - (startOf(b) || 0));
  for (const n of nodes) if (n.type !== 'record') sortTree(n.children);
}

function serviceNode(service: string, instance: string | undefined, pod: string | undefined, placedBy: 'spans' | 'times'): ServiceNode {
  return {
    type: 'service', service, ...(instance ? { instance } : {}), ...(pod ? { pod } : {}),
    peer: undefined, clientAddress: undefined,
    users: [], start: '', end: '', durationMs: 0, placedBy, children: [],
  };
}

/** Hop times, users, peer and client address from what ended up inside it. */
function finishHop(h: ServiceNode): void {
  let lo = Infinity;
  let hi = -Infinity;
  const users = new Set<string>();
  const walk = (nodes: TrailNode[], top: boolean): void => {
    for (const n of nodes) {
      if (n.type === 'service') continue;
      if (n.type === 'record') {
        const t = parseTimeMicros(n.time);
        if (Number.isFinite(t)) { lo = Math.min(lo, t); hi = Math.max(hi, t); }
        if (n.userId) users.add(n.userId);
        if (n.event === 'http_request') {
          const dur = num(n.record['http.server.request.duration']);
          if (dur !== undefined && Number.isFinite(t)) lo = Math.min(lo, Math.round(t - dur * 1e6));
          h.peer ??= str(n.record['network.peer.address']);
        }
        h.clientAddress ??= str(n.record['client.address']);
      } else {
        const s = parseTimeMicros(n.start);
        const e = parseTimeMicros(n.end);
        if (Number.isFinite(s)) lo = Math.min(lo, s);
        if (Number.isFinite(e)) hi = Math.max(hi, e);
        if (top && n.kind === 'SERVER') {
          h.peer ??= str(n.attributes['network.peer.address']);
          h.clientAddress ??= str(n.attributes['client.address']);
        }
        if (str(n.attributes['user.id'])) users.add(str(n.attributes['user.id'])!);
        walk(n.children, false);
      }
    }
  };
  walk(h.children, true);
  h.users = [...users];
  if (Number.isFinite(lo)) {
    h.start = isoMicros(lo);
    h.end = isoMicros(hi);
    h.durationMs = Math.max(0, (hi - lo) / 1000);
  }
}

function withSpans(records: TrailRecord[], spans: SpanInfo[], ids: Set<string>, notes: string[]): ServiceNode[] {
  const byId = new Map<string, { span: SpanInfo; node: SpanNode; hop?: ServiceNode }>();
  for (const s of spans) byId.set(s.spanId, { span: s, node: spanNode(s) });
  const instanceOf = (s: SpanInfo): string => str(s.resource['service.instance.id']) ?? `service:${str(s.resource['service.name']) ?? '?'}`;
  const roots: ServiceNode[] = [];
  const hops: { hop: ServiceNode; key: string; start: number; end: number }[] = [];
  // Parents before children: a span's hop is its parent's, unless the parent is another instance.
  const ordered = [...byId.values()].sort((a, b) => a.span.start - b.span.start);
  const visiting = new Set<string>();
  const hopOf = (e: { span: SpanInfo; node: SpanNode; hop?: ServiceNode }): ServiceNode => {
    if (e.hop) return e.hop;
    let parent = byId.get(e.span.parentSpanId);
    if (parent && (parent === e || visiting.has(parent.span.spanId))) parent = undefined; // a cycle in damaged data
    if (parent && instanceOf(parent.span) === instanceOf(e.span)) {
      visiting.add(e.span.spanId);
      try {
        e.hop = hopOf(parent);
      } finally {
        visiting.delete(e.span.spanId);
      }
      parent.node.children.push(e.node);
      return e.hop;
    }
    if (parent && !parent.hop) {
      visiting.add(e.span.spanId);
      try {
        hopOf(parent);
      } finally {
        visiting.delete(e.span.spanId);
      }
    }
    const hop = serviceNode(str(e.span.resource['service.name']) ?? '?', str(e.span.resource['service.instance.id']),
      str(e.span.resource['k8s.pod.name']), 'spans');
    hop.children.push(e.node);
    e.hop = hop;
    hops.push({ hop, key: instanceOf(e.span), start: e.span.start, end: e.span.end });
    if (parent) parent.node.children.push(hop);
    else roots.push(hop);
    return hop;
  };
  for (const e of ordered) hopOf(e);
  let orphans = 0;
  for (const r of records) {
    const sid = str(r.record.span_id);
    const e = sid ? byId.get(sid) : undefined;
    if (e) {
      e.node.children.push(recordNode(r, ids));
      continue;
    }
    orphans++;
    const key = instanceKeyOf(r.record);
    const candidates = hops.filter((h) => h.key === key);
    let best = candidates.find((h) => r.time >= h.start && r.time <= h.end);
    if (!best && candidates.length > 0) {
      best = candidates.reduce((a, b) => (Math.abs(a.start - r.time) <= Math.abs(b.start - r.time) ? a : b));
    }
    if (best) {
      best.hop.children.push(recordNode(r, ids));
    } else {
      const hop = serviceNode(str(r.record['service.name']) ?? '?', str(r.record['service.instance.id']), str(r.record['k8s.pod.name']), 'times');
      hop.children.push(recordNode(r, ids));
      hops.push({ hop, key, start: r.time, end: r.time });
      roots.push(hop);
    }
  }
  if (orphans > 0) notes.push(`${orphans} record(s) were written in spans that are not in the archive (sampled out or not exported): placed by service and time`);
  return roots;
}

function withoutSpans(records: TrailRecord[], ids: Set<string>, clientAddress: string | undefined): ServiceNode[] {
  const hops: Hop[] = [];
  const mk = (r: TrailRecord): Hop => ({
    node: serviceNode(str(r.record['service.name']) ?? '?', str(r.record['service.instance.id']), str(r.record['k8s.pod.name']), 'times'),
    instanceKey: instanceKeyOf(r.record),
    start: r.time,
    end: r.time,
    records: [],
  });
  for (const r of records) {
    if (r.record['event.name'] !== 'http_request') continue;
    const h = mk(r);
    const dur = num(r.record['http.server.request.duration']) ?? 0;
    h.start = Math.round(r.time - dur * 1e6);
    const sid = str(r.record.span_id);
    if (sid) h.spanId = sid;
    h.access = r;
    h.records.push(r);
    hops.push(h);
  }
  for (const r of records) {
    if (r.record['event.name'] === 'http_request') continue;
    const key = instanceKeyOf(r.record);
    const sid = str(r.record.span_id);
    const same = hops.filter((h) => h.instanceKey === key);
    let h = sid ? same.find((x) => x.spanId === sid) : undefined;
    h ??= same.filter((x) => r.time >= x.start && r.time <= x.end).sort((a, b) => (a.end - a.start) - (b.end - b.start))[0];
    if (!h && same.length > 0) h = same.reduce((a, b) => (Math.abs(a.start - r.time) <= Math.abs(b.start - r.time) ? a : b));
    if (!h) {
      h = mk(r);
      hops.push(h);
    }
    h.records.push(r);
    if (!h.access) {
      h.start = Math.min(h.start, r.time);
      h.end = Math.max(h.end, r.time);
    }
  }
  // Nesting: a hop lies inside the hop that called it (its interval within the caller's); the
  // innermost such hop is the caller. A hop whose peer is the external client is where it entered.
  const TOL = 1000; // 1 ms of clock difference
  const roots: ServiceNode[] = [];
  for (const b of hops) {
    for (const r of b.records) b.node.children.push(recordNode(r, ids));
    let parent: Hop | undefined;
    const peer = b.access ? str(b.access.record['network.peer.address']) : undefined;
    const entered = clientAddress !== undefined && peer === clientAddress;
    if (!entered) {
      for (const a of hops) {
        if (a === b || (a.instanceKey === b.instanceKey && a.spanId === b.spanId)) continue;
        if (a.start <= b.start + TOL && a.end + TOL >= b.end && (a.end - a.start) >= (b.end - b.start)) {
          if (a.end - a.start === b.end - b.start && hops.indexOf(a) > hops.indexOf(b)) continue;
          if (!parent || (a.end - a.start) < (parent.end - parent.start)) parent = a;
        }
      }
    }
    if (parent) parent.node.children.push(b.node);
    else roots.push(b.node);
  }
  return roots;
}

export interface TrailInput {
  id: string;
  matchedAs: string[];
  records: TrailRecord[];
  spans: SpanInfo[];
  spansAvailable: boolean;
}

export function buildTrail(input: TrailInput): Trail {
  const { records, spans } = input;
  records.sort((a, b) => (a.time || 0) - (b.time || 0));
  const requestIds = [...new Set(records.map((r) => str(r.record['request.id'])).filter((x): x is string => !!x)
    .concat(spans.map((s) => str(s.attributes['request.id'])).filter((x): x is string => !!x)))];
  const traceIds = [...new Set(records.map((r) => str(r.record.trace_id)).filter((x): x is string => !!x)
    .concat(spans.map((s) => s.traceId)))];
  const ids = new Set(requestIds);
  const notes: string[] = [];
  // The original client: as the first service that saw the request recorded it.
  const firstAccess = records.find((r) => r.record['event.name'] === 'http_request');
  const rootSpan = [...spans].sort((a, b) => a.start - b.start).find((s) => s.kind === 'SERVER');
  const clientAddress = str(rootSpan?.attributes['client.address']) ?? str(firstAccess?.record['client.address'])
    ?? records.map((r) => str(r.record['client.address'])).find((x) => x !== undefined);

  let tree: ServiceNode[];
  if (spans.length > 0) {
    tree = withSpans(records, spans, ids, notes);
  } else {
    tree = withoutSpans(records, ids, clientAddress);
    notes.push(input.spansAvailable
      ? 'no span of this request in the traces archive: services ordered and nested by the times of their access records'
      : 'spans were not available (no traces archive given): services ordered and nested by the times of their access records (http_request) and peer addresses; records grouped by service in time order');
  }
  const hopsList: ServiceNode[] = [];
  const collect = (nodes: TrailNode[]): void => {
    for (const n of nodes) {
      if (n.type === 'service') hopsList.push(n);
      if (n.type !== 'record') collect(n.children);
    }
  };
  collect(tree);
  for (const h of hopsList) finishHop(h);
  sortTree(tree);
  const path: string[] = [];
  const errors: TrailError[] = [];
  const users = new Set<string>();
  const walk = (nodes: TrailNode[], service: string): void => {
    for (const n of nodes) {
      if (n.type === 'service') {
        path.push(n.service);
        for (const u of n.users) users.add(u);
        walk(n.children, n.service);
      } else if (n.type === 'span') {
        if (n.error) errors.push({ service, time: n.start, what: `${n.kind} span ${n.name}`, message: n.error, where: n.where });
        walk(n.children, service);
      } else if (n.error) {
        errors.push({ service, time: n.time, what: n.event, message: n.error, where: n.where });
      }
    }
  };
  walk(tree, '');
  let lo = Infinity;
  let hi = -Infinity;
  for (const h of hopsList) {
    const s = parseTimeMicros(h.start);
    const e = parseTimeMicros(h.end);
    if (Number.isFinite(s)) lo = Math.min(lo, s);
    if (Number.isFinite(e)) hi = Math.max(hi, e);
  }
  const fromArchive = records.filter((r) => r.source === 'archive').length;
  if (fromArchive > 0 && fromArchive < records.length) notes.push(`${records.length - fromArchive} record(s) from local files, ${fromArchive} from the archive (each audit id once)`);
  return {
    found: true,
    id: input.id,
    matchedAs: input.matchedAs.length > 0 ? input.matchedAs : ['span'],
    requestIds,
    traceIds,
    ...(clientAddress ? { clientAddress } : {}),
    users: [...users],
    path,
    start: Number.isFinite(lo) ? isoMicros(lo) : '',
    end: Number.isFinite(hi) ? isoMicros(hi) : '',
    durationMs: Number.isFinite(lo) ? (hi - lo) / 1000 : 0,
    spansAvailable: spans.length > 0,
    counts: { records: records.length, spans: spans.length, hops: hopsList.length },
    errors,
    notes,
    tree,
  };
}

// ---- text --------------------------------------------------------------------------------------

const ms = (n: number): string => (n >= 100 ? `${n.toFixed(0)} ms` : n >= 10 ? `${n.toFixed(1)} ms` : `${n.toFixed(2)} ms`);
const clock = (iso: string): string => iso.slice(11, 26) || '?';

function show(v: Json): string {
  if (typeof v === 'string') {
    const s = v.length > 80 ? `${v.slice(0, 77)}...` : v;
    return /^[\w.:/@+-]+$/.test(s) ? s : JSON.stringify(s);
  }
  if (Array.isArray(v) && v.every((x) => typeof x === 'string')) return `[${v.join(',')}]`;
  const j = JSON.stringify(v);
  return j.length > 80 ? `${j.slice(0, 77)}...` : j;
}

function recordLine(n: RecordNode, trail: Trail): string {
  const f = n.fields;
  const parts: string[] = [clock(n.time), n.event, n.outcome ?? ''];
  const used = new Set<string>();
  const take = (k: string): Json | undefined => { used.add(k); return f[k]; };
  if (n.event === 'http_request') {
    const method = take('http.request.method');
    const route = take('http.route');
    const path = take('url.path');
    const status = take('http.response.status_code');
    const dur = take('http.server.request.duration');
    parts.push(`${method ?? ''} ${path ?? ''}${route && route !== path ? ` (${route})` : ''} -> ${status ?? 'no response'}`);
    if (typeof dur === 'number') parts.push(ms(dur * 1000));
    const peer = take('network.peer.address');
    if (peer !== undefined) parts.push(`peer ${show(peer)}`);
  }
  if (n.userId) parts.push(`user ${n.userId}`);
  const subject = take('user.target.id');
  if (subject !== undefined) parts.push(`subject ${show(subject)}`);
  const client = take('client.address');
  if (client !== undefined && client !== trail.clientAddress) parts.push(`client ${show(client)}`);
  const errMsg = take('error.message');
  take('user_agent.original');
  for (const [k, v] of Object.entries(f)) if (!used.has(k)) parts.push(`${k}=${show(v)}`);
  if (errMsg !== undefined) parts.push(`error ${show(errMsg)}`);
  let line = parts.filter(Boolean).join('  ');
  if (n.error) line = `! ${line}`;
  return `${line}  [${n.where}]`;
}

function spanLine(n: SpanNode): string {
  const a = n.attributes;
  const parts = [n.kind, n.name];
  const route = a['http.route'] ?? a['url.path'];
  if (route !== undefined && !n.name.includes(String(route))) parts.push(String(route));
  if (n.kind === 'CLIENT' && a['server.address'] !== undefined) parts.push(`to ${String(a['server.address'])}${a['server.port'] !== undefined ? `:${String(a['server.port'])}` : ''}`);
  if (a['http.response.status_code'] !== undefined) parts.push(String(a['http.response.status_code']));
  parts.push(ms(n.durationMs));
  if (n.kind === 'SERVER' && a['network.peer.address'] !== undefined) parts.push(`peer ${String(a['network.peer.address'])}`);
  parts.push(`span ${n.spanId}`);
  if (n.status === 'ERROR') parts.push(`status ERROR${n.statusMessage ? ` ${JSON.stringify(n.statusMessage)}` : ''}`);
  const line = parts.join('  ');
  return n.error ? `! ${line}` : line;
}

function serviceLine(n: ServiceNode, trail: Trail): string {
  const parts = [n.service];
  if (n.instance) parts.push(`instance ${n.instance}`);
  if (n.pod) parts.push(`pod ${n.pod}`);
  if (n.peer) parts.push(`from ${n.peer}`);
  if (n.clientAddress && n.clientAddress !== trail.clientAddress) parts.push(`client ${n.clientAddress}`);
  if (n.users.length) parts.push(`user ${n.users.join(',')}`);
  if (n.start) parts.push(`${clock(n.start)}  ${ms(n.durationMs)}`);
  return parts.join('  ');
}

export function formatTrail(t: Trail): string {
  const out: string[] = [];
  const ids = [
    t.requestIds.length ? `request ${t.requestIds.join(', ')}` : '',
    t.traceIds.length ? `trace ${t.traceIds.join(', ')}` : '',
  ].filter(Boolean).join('  ');
  out.push(`${ids}  (matched ${t.id} as ${t.matchedAs.join(', ')})`);
  out.push(`${t.start || '?'} .. ${t.end || '?'}  ${ms(t.durationMs)}  ${t.counts.hops} hop(s), ${t.counts.spans} span(s), ${t.counts.records} audit record(s)`);
  out.push(`client ${t.clientAddress ?? 'unknown'} (original external address)${t.users.length ? `  user ${t.users.join(', ')}` : ''}`);
  out.push(`path: ${t.path.join(' -> ')}`);
  for (const n of t.notes) out.push(`note: ${n}`);
  out.push('');
  const walk = (nodes: TrailNode[], prefix: string): void => {
    nodes.forEach((n, i) => {
      const last = i === nodes.length - 1;
      const text = n.type === 'service' ? serviceLine(n, t) : n.type === 'span' ? spanLine(n) : recordLine(n, t);
      out.push(`${prefix}${last ? '└─ ' : '├─ '}${text}`);
      if (n.type !== 'record') walk(n.children, `${prefix}${last ? '   ' : '│  '}`);
    });
  };
  t.tree.forEach((root, i) => {
    if (i > 0) out.push('');
    out.push(serviceLine(root, t));
    walk(root.children, '');
  });
  out.push('');
  if (t.errors.length === 0) {
    out.push('errors: none');
  } else {
    out.push(`errors (${t.errors.length}):`);
    for (const e of t.errors) out.push(`  ${clock(e.time)}  ${e.service}  ${e.what}: ${e.message}  [${e.where}]`);
  }
  return `${out.map(oneLine).join('\n')}\n`;
}

/**
 * Each entry of the view is one line: a line break a client put into a recorded value (a user id,
 * a path) is shown escaped, so it cannot start a line that reads like a node of the tree.
 */
export function oneLine(line: string): string {
  return line.replace(/[\r\n\u0085\u2028\u2029]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}
