import { isIP } from 'node:net';
import ipaddr from 'ipaddr.js';
import type { Trust } from './trust';

/**
 * Normalises one hop as written in a header or seen on a socket: strips brackets, ports and IPv6
 * zones, maps IPv4-mapped IPv6 to IPv4, and refuses anything that is not an IP address (so an
 * obfuscated `Forwarded` identifier or garbage never becomes a "client address").
 */
export function normaliseAddress(raw: string | undefined): string | undefined {
  if (!raw) return undefined;
  // The same few socket and proxy addresses arrive on every request: parse each once.
  const known = normalised.get(raw);
  if (known !== undefined || normalised.has(raw)) return known;
  const result = parseAddress(raw);
  if (normalised.size >= NORMALISED_MAX) normalised.clear();
  normalised.set(raw, result);
  return result;
}

/** Bounded: a flood of distinct values only costs the parse again, never memory. */
const NORMALISED_MAX = 4096;
const normalised = new Map<string, string | undefined>();

function parseAddress(raw: string): string | undefined {
  let a = raw.trim();
  if (a.length === 0 || a.length > 64) return undefined;
  if (a.startsWith('"') && a.endsWith('"') && a.length >= 2) a = a.slice(1, -1);
  if (a.startsWith('[')) {
    const end = a.indexOf(']');
    if (end < 0) return undefined;
    const after = a.slice(end + 1);
    if (after !== '' && !/^:\d{1,5}$/.test(after)) return undefined;
    a = a.slice(1, end);
  } else if (/^\d{1,3}(\.\d{1,3}){3}:\d+$/.test(a)) {
    a = a.slice(0, a.lastIndexOf(':'));
  }
  const zone = a.indexOf('%');
  if (zone >= 0) a = a.slice(0, zone);
  if (isIP(a) === 0) return undefined;
  // One spelling per address: IPv4-mapped IPv6 in any notation becomes IPv4, IPv6 is canonical.
  try {
    return ipaddr.process(a).toString();
  } catch {
    return undefined;
  }
}

/** `X-Forwarded-For` hops, nearest proxy first. */
export function xffHops(header: string | string[] | undefined): string[] {
  if (header === undefined) return [];
  const text = Array.isArray(header) ? header.join(',') : header;
  return text.split(',').map((s) => s.trim()).filter(Boolean).reverse();
}

/** RFC 7239 `Forwarded: for=` hops, nearest proxy first. Tolerant: a broken element yields a
 * hop that is not an address, which stops the walk there. */
export function forwardedHops(header: string | string[] | undefined): string[] {
  if (header === undefined) return [];
  const text = Array.isArray(header) ? header.join(',') : header;
  const hops: string[] = [];
  for (const element of splitOutsideQuotes(text, ',')) {
    let forValue = '';
    for (const pair of splitOutsideQuotes(element, ';')) {
      const eq = pair.indexOf('=');
      if (eq > 0 && pair.slice(0, eq).trim().toLowerCase() === 'for') forValue = pair.slice(eq + 1).trim();
    }
    hops.push(forValue);
  }
  return hops.reverse();
}

/**
 * Splits at `sep` outside RFC 7230 quoted strings (a backslash escapes the next character inside
 * one). A quote left open at the end is a client's malformed element, not a string: honoured, it
 * would swallow the elements the trusted proxies appended after it, so the header is then split
 * at every `sep` instead.
 */
function splitOutsideQuotes(s: string, sep: string): string[] {
  const out: string[] = [];
  let cur = '';
  let quoted = false;
  for (let i = 0; i < s.length; i++) {
    const c = s[i]!;
    if (quoted && c === '\\' && i + 1 < s.length) {
      cur += c + s[++i]!;
      continue;
    }
    if (c === '"') quoted = !quoted;
    if (c === sep && !quoted) {
      out.push(cur);
      cur = '';
    } else {
      cur += c;
    }
  }
  if (quoted) return s.split(sep);
  out.push(cur);
  return out;
}

export interface ClientResolution {
  /** The original client: the nearest hop that is not a trusted proxy. */
  clientAddress: string | undefined;
  /** The socket peer. */
  peerAddress: string | undefined;
  /**
   * Whether the request's headers come from a trusted proxy — the socket peer, or behind a PROXY
   * protocol balancer the source it reported: only then are they believed at all.
   */
  peerTrusted: boolean;
}

/**
 * The proxy-addr walk: start at the socket peer; while the current hop is a trusted proxy, step to
 * the address it says it received the request from (PROXY protocol source, then `Forwarded` or
 * `X-Forwarded-For`, right to left). The first untrusted hop is the client. Headers from an
 * untrusted peer are never read, so a client cannot choose its own address.
 */
export function resolveClientAddress(input: {
  socketAddress: string | undefined;
  /** Source address from a PROXY protocol header, already accepted only from a trusted peer. */
  proxySource?: string | undefined;
  /**
   * The server reads PROXY protocol (AUDITRACE_PROXY_PROTOCOL): a trusted peer is a TCP balancer,
   * which writes no HTTP headers, so the request's headers are its PROXY source's. They are
   * believed only if that source is itself a trusted proxy; with no source (`PROXY UNKNOWN`, a
   * v2 LOCAL connection) nobody vouches for them.
   */
  proxyProtocol?: boolean;
  xForwardedFor?: string | string[] | undefined;
  forwarded?: string | string[] | undefined;
  trust: Trust;
  /** Walks stop after this many hops; longer chains are cut (the last trusted hop is reported). */
  maxHops?: number;
  /** Which forwarding header the trusted proxies append: reading the other would let a client
   * choose its own address through a proxy that passes it on untouched. */
  header?: 'x-forwarded-for' | 'forwarded';
}): ClientResolution {
  const peer = normaliseAddress(input.socketAddress);
  const peerTrusted = peer !== undefined && input.trust(peer);
  if (!peer || !peerTrusted) return { clientAddress: peer, peerAddress: peer, peerTrusted: false };
  let current = peer;
  if (input.proxyProtocol) {
    const source = normaliseAddress(input.proxySource);
    if (!source) return { clientAddress: peer, peerAddress: peer, peerTrusted: false };
    if (!input.trust(source)) return { clientAddress: source, peerAddress: peer, peerTrusted: false };
    current = source;
  }
  const headerHops = input.header === 'forwarded' ? forwardedHops(input.forwarded) : xffHops(input.xForwardedFor);
  const hops = !input.proxyProtocol && input.proxySource ? [input.proxySource, ...headerHops] : headerHops;
  const maxHops = input.maxHops ?? 32;
  for (let i = 0; i < hops.length && i < maxHops; i++) {
    if (!input.trust(current)) break;
    const next = normaliseAddress(hops[i]);
    if (!next) break; // garbage, `unknown` or an obfuscated id: the last good hop stays the answer
    current = next;
  }
  return { clientAddress: current, peerAddress: peer, peerTrusted: true };
}
