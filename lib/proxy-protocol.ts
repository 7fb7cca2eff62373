import * as http from 'node:http';
import * as https from 'node:https';
import * as net from 'node:net';
import * as tls from 'node:tls';

/**
 * HAProxy PROXY protocol v1 (text) and v2 (binary), for servers behind an L4 load balancer that
 * prepends the original client's address to each TCP connection. The header is only ever read
 * from peers the caller trusts: from anyone else it is ordinary (garbage) application data.
 */

export type Endpoint = { address: string; port: number };

export type ProxyHeader =
  | { status: 'incomplete' }
  | { status: 'invalid'; reason: string }
  | { status: 'ok'; length: number; version: 1 | 2; command: 'PROXY' | 'LOCAL'; source?: Endpoint; destination?: Endpoint };

const V1_PREFIX = Buffer.from('PROXY ', 'latin1');
/** The spec's longest v1 line, CRLF included: a receiver need not look further for the CRLF. */
const V1_MAX = 107;
const V2_SIGNATURE = Buffer.from('\r\n\r\n\0\r\nQUIT\n', 'latin1');
/** Addresses (at most 216 bytes) plus a reasonable TLV allowance; the spec's 16-bit length allows 64 KiB. */
const V2_MAX_LENGTH = 2048;
/** Address block size per v2 family/transport byte; any other byte is refused, as the spec asks. */
const V2_ADDRESS_BYTES = new Map([[0x00, 0], [0x11, 12], [0x12, 12], [0x21, 36], [0x22, 36], [0x31, 216], [0x32, 216]]);

// Frozen: it is shared by every call.
const INCOMPLETE: ProxyHeader = Object.freeze({ status: 'incomplete' as const });
const invalid = (reason: string): ProxyHeader => ({ status: 'invalid', reason });

/** Pure parser over the first bytes of a connection. Never throws, whatever the bytes. */
export function parseProxyHeader(buf: Buffer): ProxyHeader {
  try {
    const input: unknown = buf; // JavaScript callers can pass anything
    if (!(input instanceof Uint8Array)) return invalid('not a buffer');
    const b = Buffer.isBuffer(input) ? input : Buffer.from(input.buffer, input.byteOffset, input.byteLength);
    if (b.length === 0) return INCOMPLETE;
    if (b[0] === V1_PREFIX[0]) return parseV1(b);
    if (b[0] === V2_SIGNATURE[0]) return parseV2(b);
    return invalid('no PROXY signature');
  } catch {
    // Belt and braces: the parsers index within bounds, but a parser on the edge must not throw.
    return invalid('unparseable header');
  }
}

/** Whether the bytes seen so far agree with `signature` (so a short prefix is "incomplete"). */
function agreesWith(b: Buffer, signature: Buffer): boolean {
  const n = Math.min(b.length, signature.length);
  return b.subarray(0, n).equals(signature.subarray(0, n));
}

function printable(b: Buffer, end: number): boolean {
  for (let i = 0; i < end; i++) if (b[i]! < 0x20 || b[i]! > 0x7e) return false;
  return true;
}

function parseV1(b: Buffer): ProxyHeader {
  if (!agreesWith(b, V1_PREFIX)) return invalid('no PROXY signature');
  const window = b.subarray(0, V1_MAX);
  const lf = window.indexOf(0x0a);
  // Only printable ASCII before the CRLF (a CR may end what we have): binary garbage is refused
  // at once rather than after the header timeout.
  const end = lf < 0 ? window.length : lf;
  if (!printable(window, window[end - 1] === 0x0d ? end - 1 : end)) return invalid('v1 bad character');
  if (lf < 0) return window.length >= V1_MAX ? invalid('v1 line too long') : INCOMPLETE;
  if (window[lf - 1] !== 0x0d) return invalid('v1 line not CRLF-terminated');
  const length = lf + 1;
  const fields = window.toString('latin1', 0, lf - 1).split(' ');
  // "PROXY UNKNOWN": the receiver must ignore whatever follows, up to the CRLF.
  if (fields[1] === 'UNKNOWN') return { status: 'ok', length, version: 1, command: 'PROXY' };
  if (fields.length !== 6) return invalid('v1 wrong field count');
  const family = fields[1] === 'TCP4' ? 4 : fields[1] === 'TCP6' ? 6 : 0;
  if (family === 0) return invalid('v1 unknown protocol');
  const src = v1Address(fields[2]!, family);
  const dst = v1Address(fields[3]!, family);
  if (src === undefined || dst === undefined) return invalid('v1 bad address');
  const sport = v1Port(fields[4]!);
  const dport = v1Port(fields[5]!);
  if (sport === undefined || dport === undefined) return invalid('v1 bad port');
  return {
    status: 'ok', length, version: 1, command: 'PROXY',
    source: { address: src, port: sport }, destination: { address: dst, port: dport },
  };
}

/** An address of exactly the announced family, in the canonical form Node uses for remoteAddress. */
function v1Address(text: string, family: 4 | 6): string | undefined {
  if (family === 4) return net.isIPv4(text) ? text : undefined; // isIPv4 already refuses leading zeroes
  // isIPv6 accepts a zone ("%eth0"), which has no meaning on the balancer's far side.
  if (!net.isIPv6(text) || text.includes('%')) return undefined;
  return canonicalIPv6(text);
}

/** Decimal 0..65535; the spec forbids leading zeroes (octal confusion). */
function v1Port(text: string): number | undefined {
  if (!/^(?:0|[1-9][0-9]{0,4})$/.test(text)) return undefined;
  const port = Number(text);
  return port <= 65535 ? port : undefined;
}

function canonicalIPv6(text: string): string {
  return new net.SocketAddress({ address: text, family: 'ipv6' }).address;
}

function parseV2(b: Buffer): ProxyHeader {
  if (!agreesWith(b, V2_SIGNATURE)) return invalid('no PROXY signature');
  if (b.length < 13) return INCOMPLETE;
  if (b[12]! >> 4 !== 2) return invalid('v2 bad version');
  const command = b[12]! & 0x0f;
  if (command > 1) return invalid('v2 bad command');
  if (b.length < 14) return INCOMPLETE;
  const family = b[13]!;
  const addressBytes = V2_ADDRESS_BYTES.get(family);
  // LOCAL (balancer health checks) ignores the family byte, as the spec requires.
  if (command === 1 && addressBytes === undefined) return invalid('v2 bad family');
  if (b.length < 16) return INCOMPLETE;
  const bodyLength = b.readUInt16BE(14);
  if (bodyLength > V2_MAX_LENGTH) return invalid('v2 header too long');
  const length = 16 + bodyLength;
  // LOCAL: the block is skipped whatever it holds; the real connection endpoints apply.
  if (command === 0) return b.length < length ? INCOMPLETE : { status: 'ok', length, version: 2, command: 'LOCAL' };
  if (bodyLength < addressBytes!) return invalid('v2 length shorter than addresses');
  if (b.length < length) return INCOMPLETE;
  // Past the addresses come TLVs that must exactly fill the block: a length that "lies" (claims the
  // application's own first bytes) nearly always breaks this instead of silently eating them.
  // UNSPEC's block has no defined layout, so it is only skipped.
  if (family !== 0x00 && !tlvsFill(b, 16 + addressBytes!, length)) return invalid('v2 malformed TLVs');
  const ok: ProxyHeader = { status: 'ok', length, version: 2, command: 'PROXY' };
  if (family >> 4 === 1) {
    ok.source = { address: ipv4At(b, 16), port: b.readUInt16BE(24) };
    ok.destination = { address: ipv4At(b, 20), port: b.readUInt16BE(26) };
  } else if (family >> 4 === 2) {
    ok.source = { address: ipv6At(b, 16), port: b.readUInt16BE(48) };
    ok.destination = { address: ipv6At(b, 32), port: b.readUInt16BE(50) };
  }
  // UNIX and UNSPEC: accepted, but there is no IP client to report.
  return ok;
}

function tlvsFill(b: Buffer, start: number, end: number): boolean {
  let i = start;
  while (i < end) {
    if (end - i < 3) return false;
    i += 3 + b.readUInt16BE(i + 1);
  }
  return i === end;
}

function ipv4At(b: Buffer, at: number): string {
  return `${b[at]}.${b[at + 1]}.${b[at + 2]}.${b[at + 3]}`;
}

function ipv6At(b: Buffer, at: number): string {
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(b.readUInt16BE(at + i).toString(16));
  return canonicalIPv6(groups.join(':'));
}

/** Sources read from trusted balancers, keyed by the raw TCP socket the header arrived on. */
const sources = new WeakMap<object, Readonly<Endpoint>>();
/** Sockets a patched emit already decided about: the patches stack per prototype, and only the outermost acts. */
const claimed = new WeakSet<object>();

/** The original client a trusted load balancer reported for this socket, if any. */
export function proxySourceOf(socket: object): { address: string; port: number } | undefined {
  // An https request's socket is the TLSSocket; the header arrived on the raw socket under it (`_parent`).
  let s: unknown = socket;
  for (let hops = 0; hops < 3 && typeof s === 'object' && s !== null; hops++) {
    const found = sources.get(s);
    if (found) return { ...found };
    s = (s as { _parent?: unknown })._parent;
  }
  return undefined;
}

type Emit = (this: net.Server, event: string | symbol, ...args: unknown[]) => boolean;
type Emitter = { emit: Emit };

function noop(): void {}

/**
 * Makes every net/http/https/tls server in the process read a PROXY header at the start of each
 * connection whose socket peer is trusted, before the server's own 'connection' handling sees it.
 * Returns a function that undoes the patch (for tests).
 */
export function enableProxyProtocol(opts: {
  trust: (address: string) => boolean;
  headerTimeoutMs?: number;
  onRejected?: (peer: string | undefined, reason: string) => void;
}): () => void {
  const timeoutMs = opts.headerTimeoutMs ?? 5000;
  let active = true;

  const trusted = (address: string | undefined): boolean => {
    try {
      return address !== undefined && opts.trust(address) === true;
    } catch {
      return false;
    }
  };
  const reject = (peer: string | undefined, reason: string): void => {
    try {
      opts.onRejected?.(peer, reason);
    } catch {
      // a failing callback must not take the server down
    }
  };

  /** Holds the socket until a whole header arrived, then hands the stream after it to `proceed`. */
  const readHeader = (socket: net.Socket, peer: string, proceed: () => void): void => {
    let buffered: Buffer = Buffer.alloc(0);
    const cleanup = (): void => {
      clearTimeout(timer);
      socket.removeListener('readable', onReadable);
      socket.removeListener('end', onGone);
      socket.removeListener('close', onGone);
      socket.removeListener('error', onGone);
    };
    const drop = (reason?: string): void => {
      cleanup();
      socket.on('error', noop); // the socket is finished; nothing may surface from it as an uncaught 'error'
      socket.destroy();
      if (reason !== undefined) reject(peer, reason);
    };
    // The peer left (or reset) before a whole header: not a refusal, and TCP health checks do it all day.
    const onGone = (): void => drop();
    const onReadable = (): void => {
      let chunk: Buffer | null;
      while ((chunk = socket.read() as Buffer | null) !== null) {
        buffered = buffered.length === 0 ? chunk : Buffer.concat([buffered, chunk]);
        // The parser caps the header (107 bytes for v1, 16 + 2048 for v2), so `buffered` stays bounded.
        const header = parseProxyHeader(buffered);
        if (header.status === 'incomplete') continue;
        if (header.status === 'invalid') return drop(header.reason);
        cleanup();
        if (header.source) sources.set(socket, Object.freeze(header.source));
        // The bytes after the header belong to the application protocol (HTTP, a TLS ClientHello).
        if (buffered.length > header.length) socket.unshift(buffered.subarray(header.length));
        return proceed();
      }
    };
    const timer = setTimeout(() => drop('header timeout'), timeoutMs);
    timer.unref();
    socket.on('error', onGone);
    socket.on('end', onGone);
    socket.on('close', onGone);
    socket.on('readable', onReadable); // also pauses the flow: nothing reaches 'data' listeners meanwhile
  };

  const patch = (proto: Emitter): (() => void) => {
    const hadOwn = Object.hasOwn(proto, 'emit');
    const previous = proto.emit;
    const patched: Emit = function (this: net.Server, event, ...args) {
      const socket = args[0];
      if (event !== 'connection' || !active || !(socket instanceof net.Socket) || claimed.has(socket)) {
        return previous.call(this, event, ...args);
      }
      claimed.add(socket);
      const peer = socket.remoteAddress;
      // Untrusted peers pass untouched: a header from them is just bytes the app's parser will refuse.
      // A TLSSocket re-emitted into a server carries decrypted data, where no header can be; and a
      // pauseOnConnect server hands raw sockets on, so the reading is the receiver's business.
      if (socket instanceof tls.TLSSocket || (this as { pauseOnConnect?: boolean }).pauseOnConnect || !trusted(peer)) {
        return previous.call(this, event, ...args);
      }
      try {
        readHeader(socket, peer!, () => {
          previous.call(this, event, ...args);
        });
      } catch {
        socket.destroy();
      }
      return this.listenerCount('connection') > 0;
    };
    proto.emit = patched;
    return () => {
      // If something wrapped our emit since (an instrumentation), leave its wrapper in place:
      // `active = false` already turned ours into a pass-through.
      if (proto.emit !== patched) return;
      if (hadOwn) proto.emit = previous;
      else Reflect.deleteProperty(proto, 'emit');
    };
  };

  // http.Server, https.Server and tls.Server inherit net.Server's emit, but instrumentations (OTel's
  // http one among them) give http/https their own emit that calls EventEmitter's directly, skipping
  // net.Server's: so each prototype gets the patch, and `claimed` makes all but the outermost pass through.
  const prototypes = [net.Server.prototype, tls.Server.prototype, http.Server.prototype, https.Server.prototype];
  const undos = prototypes.map((proto) => patch(proto as unknown as Emitter));
  return () => {
    active = false;
    for (const undo of undos.reverse()) undo();
  };
}
