/**
 * The access record (`http_request`) written from a fixed template.
 *
 * Every request gets one, so it is the one record whose cost is paid at the server's request rate.
 * Its fields are known in advance, with their types, so when every value is plain (printable ASCII
 * other than `"` and `\`, within the field limit) the line can be written straight in RFC 8785 key
 * order: no record object, no catalogue check per field, no key plan. Anything else — a value that
 * needs an escape or a cut, a value of the wrong type, a line over the record limit — gets
 * `undefined`, and the caller writes the record the general way (builder and serialiser), which is
 * the reference this template is held to byte for byte (test/unit/access-line.test.js).
 */

import { DIGITS3 } from './ids';
import { PLAIN_ASCII } from './serialize';

/** What the edge knows of one request and its response. */
export interface AccessFields {
  method: string;
  path: string;
  /** Seconds. */
  duration: number;
  /** The same in whole nanoseconds, when known (`duration` is `durationNs / 1e9`): the template writes it without a number conversion. */
  durationNs?: number | undefined;
  peer: string;
  route?: string | undefined;
  status?: number | undefined;
  requestBodySize?: number | undefined;
  responseBodySize?: number | undefined;
  userAgent?: string | undefined;
  untrustedRequestId?: string | undefined;
  requestIdReplaced?: string | undefined;
  untrustedParent?: string | undefined;
  errorType?: string | undefined;
}

/** What surrounds the record: the auditor's clock, ids, request, identity and chain. */
export interface AccessAmbient {
  time: string;
  auditId: string;
  outcome: 'success' | 'failure';
  severity: 'INFO' | 'WARN' | 'ERROR' | 'CRITICAL';
  traceId?: string | undefined;
  spanId?: string | undefined;
  requestId?: string | undefined;
  clientAddress?: string | undefined;
  identity: { 'service.name': string; 'service.instance.id': string; 'k8s.pod.name'?: string | undefined };
  /** The chain's stamp, when the chain is on. */
  chain?: { id: string; seq: number; prev: string | undefined } | undefined;
}

/** The record's own fields as the general path takes them (`audit.emit('http_request', …)`). */
export function accessRecordFields(f: AccessFields): Record<string, unknown> {
  const fields: Record<string, unknown> = {
    'http.request.method': f.method,
    'url.path': f.path,
    'http.server.request.duration': f.duration,
    'network.peer.address': f.peer,
  };
  if (f.route) fields['http.route'] = f.route;
  if (f.status !== undefined) fields['http.response.status_code'] = f.status;
  if (f.requestBodySize !== undefined) fields['http.request.body.size'] = f.requestBodySize;
  if (f.responseBodySize !== undefined) fields['http.response.body.size'] = f.responseBodySize;
  if (f.userAgent !== undefined) fields['user_agent.original'] = f.userAgent;
  if (f.untrustedRequestId !== undefined) fields['request.id.untrusted'] = f.untrustedRequestId;
  if (f.requestIdReplaced) fields['request.id.replaced'] = f.requestIdReplaced;
  if (f.untrustedParent) fields['trace.untrusted_parent'] = f.untrustedParent;
  if (f.errorType !== undefined) fields['error.type'] = f.errorType;
  return fields;
}

/** Below this many seconds a double is finer than a nanosecond's half: only one 9-decimal value rounds to it. */
const EXACT_BELOW_NS = 2 ** 21 * 1e9;

/**
 * `String(ns / 1e9)` for whole nanoseconds, without converting the double: V8 formats a double
 * through its shortest-digits algorithm (≈ 0.4 µs per access record, bench/notes.md). From 1 µs
 * (below it JavaScript writes an exponent) to 2^21 s the shortest form of `ns / 1e9` is the 9-decimal
 * fraction without its trailing zeros, because no other 9-decimal value rounds to the same double;
 * outside that range, or for anything but a whole number, the double is converted after all.
 */
export function secondsText(ns: number): string {
  if (!(ns >= 1000 && ns < EXACT_BELOW_NS) || !Number.isInteger(ns)) return String(ns / 1e9);
  const sec = Math.floor(ns / 1e9);
  let frac = ns - sec * 1e9;
  if (frac === 0) return String(sec);
  // Trailing zeros dropped a group of three at a time, then one at a time.
  let digits = 9;
  while (frac % 1000 === 0) { frac /= 1000; digits -= 3; }
  while (frac % 10 === 0) { frac /= 10; digits -= 1; }
  const hi = Math.floor(frac / 1e6);
  const mid = Math.floor(frac / 1000) % 1000;
  const lo = frac % 1000;
  // `frac` now has at most `digits` digits: written zero-padded to that width.
  const text = digits > 6 ? DIGITS3[hi]! + DIGITS3[mid]! + DIGITS3[lo]! : digits > 3 ? DIGITS3[mid]! + DIGITS3[lo]! : DIGITS3[lo]!;
  return sec + '.' + text.slice(text.length - digits);
}

/** A string the template may write: plain (written as is, by RFC 8785 too), and short enough that the general path would not cut it. */
function plain(s: unknown, maxFieldBytes: number): s is string {
  return typeof s === 'string' && s.length <= maxFieldBytes && PLAIN_ASCII.test(s);
}

/**
 * The values that repeat from one request to the next (method, path, peer, route, user agent,
 * identity …), by slot: the last one found plain is compared, not scanned again.
 */
const remembered: (string | undefined)[] = [];
let rememberedFor = -1;

function plainAgain(slot: number, s: unknown, maxFieldBytes: number): s is string {
  if (s === remembered[slot] && s !== undefined) return true;
  if (!plain(s, maxFieldBytes)) return false;
  remembered[slot] = s;
  return true;
}

/**
 * The line (without its newline) the general path would write for this access record, or
 * `undefined` when the template cannot tell. The line is its own RFC 8785 form: the chain hashes
 * it as it is.
 */
export function accessLine(f: AccessFields, a: AccessAmbient, maxFieldBytes: number, maxRecordBytes: number): string | undefined {
  if (maxFieldBytes !== rememberedFor) {
    remembered.length = 0;
    rememberedFor = maxFieldBytes;
  }
  const m = maxFieldBytes;
  const id = a.identity;
  const chain = a.chain;
  if (!plain(a.time, m) || !plain(a.auditId, m) || !plainAgain(0, f.method, m) || !plainAgain(1, f.path, m)
    || !plainAgain(2, f.peer, m) || !plainAgain(3, id['service.name'], m) || !plainAgain(4, id['service.instance.id'], m)
    || typeof f.duration !== 'number' || !Number.isFinite(f.duration)) return undefined;
  if (chain !== undefined && (!plainAgain(5, chain.id, m) || !Number.isSafeInteger(chain.seq)
    || (chain.prev !== undefined && !plain(chain.prev, m)))) return undefined;
  const { route, status, requestBodySize: reqSize, responseBodySize: resSize, userAgent, untrustedRequestId, untrustedParent, errorType } = f;
  const replaced = f.requestIdReplaced;
  if ((route && !plainAgain(6, route, m)) || (status !== undefined && !Number.isSafeInteger(status))
    || (reqSize !== undefined && !Number.isSafeInteger(reqSize)) || (resSize !== undefined && !Number.isSafeInteger(resSize))
    || (userAgent !== undefined && !plainAgain(7, userAgent, m)) || (untrustedRequestId !== undefined && !plain(untrustedRequestId, m))
    || (replaced && replaced !== 'malformed' && replaced !== 'multiple')
    || (untrustedParent && !plain(untrustedParent, m)) || (errorType !== undefined && !plainAgain(8, errorType, m))
    || (a.traceId && !plain(a.traceId, m)) || (a.spanId && !plain(a.spanId, m))
    || (a.requestId && !plain(a.requestId, m)) || (a.clientAddress && !plainAgain(9, a.clientAddress, m))
    || (id['k8s.pod.name'] && !plainAgain(10, id['k8s.pod.name'], m))) return undefined;

  // Members in RFC 8785 order (UTF-16 code units of the keys); optional ones only when present,
  // with the same tests for presence as the builder's.
  let s = '{';
  if (chain !== undefined) s += '"audit.chain":"' + chain.id + '",';
  s += '"audit.id":"' + a.auditId + '",';
  if (chain !== undefined) {
    if (chain.prev !== undefined) s += '"audit.prev":"' + chain.prev + '",';
    s += '"audit.seq":' + chain.seq + ',';
  }
  if (a.clientAddress) s += '"client.address":"' + a.clientAddress + '",';
  if (errorType !== undefined) s += '"error.type":"' + errorType + '",';
  s += '"event.name":"http_request","event.outcome":"' + a.outcome + '",';
  if (reqSize !== undefined) s += '"http.request.body.size":' + reqSize + ',';
  s += '"http.request.method":"' + f.method + '",';
  if (resSize !== undefined) s += '"http.response.body.size":' + resSize + ',';
  if (status !== undefined) s += '"http.response.status_code":' + status + ',';
  if (route) s += '"http.route":"' + route + '",';
  s += '"http.server.request.duration":' + (f.durationNs !== undefined ? secondsText(f.durationNs) : f.duration) + ',';
  if (id['k8s.pod.name']) s += '"k8s.pod.name":"' + id['k8s.pod.name'] + '",';
  s += '"network.peer.address":"' + f.peer + '",';
  if (a.requestId) s += '"request.id":"' + a.requestId + '",';
  if (replaced) s += '"request.id.replaced":"' + replaced + '",';
  if (untrustedRequestId !== undefined) s += '"request.id.untrusted":"' + untrustedRequestId + '",';
  s += '"service.instance.id":"' + id['service.instance.id'] + '","service.name":"' + id['service.name']
    + '","severity":"' + a.severity + '",';
  if (a.spanId) s += '"span_id":"' + a.spanId + '",';
  s += '"time":"' + a.time + '",';
  if (untrustedParent) s += '"trace.untrusted_parent":"' + untrustedParent + '",';
  if (a.traceId) s += '"trace_id":"' + a.traceId + '",';
  s += '"url.path":"' + f.path + '"';
  if (userAgent !== undefined) s += ',"user_agent.original":"' + userAgent + '"';
  s += '}';
  // ASCII: one byte per unit.
  return s.length <= maxRecordBytes ? s : undefined;
}
