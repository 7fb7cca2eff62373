import { context, ROOT_CONTEXT } from '@opentelemetry/api';
import { getAuditor } from './audit/auditor';
import { normaliseAddress } from './client-address';
import { observeEmit } from './observe-emit';
import type { Emit } from './observe-emit';

/**
 * Failed TLS handshakes with clients — a missing or rejected client certificate (mTLS), plain HTTP
 * sent to a TLS port, a protocol or cipher mismatch — become `tls_handshake_fail` audit records.
 *
 * Node reports them as a `tlsClientError` event on the `tls.Server` (https and http2 secure servers
 * are `tls.Server`s). We observe that event by wrapping `tls.Server.prototype.emit`: the original
 * `emit` is called with the same arguments and its value returned, so listeners, the return value
 * and what Node does without a listener (it destroys the socket) are unchanged.
 *
 * The peer address: when `tlsClientError` fires the TLS socket is often already destroyed, and a
 * destroyed socket only knows its peer if it was asked before. So the address of every raw
 * connection is read when the server's `connection` event passes (one getpeername, cached by Node
 * on the socket) and found again through the TLS socket's `_parent` (the raw socket it wraps).
 *
 * A client certificate that fails verification on a server with `rejectUnauthorized: true` does
 * not produce a handshake error: OpenSSL completes the handshake, Node sees `authorizationError`,
 * destroys the socket and then reports a synthetic `ECONNRESET` "socket hang up". For that case the
 * record's `tls.failure` is the verification code (e.g. `UNABLE_TO_VERIFY_LEAF_SIGNATURE`), which is
 * what an investigator needs, not the synthetic reset.
 *
 * A connection closed or reset before the client sent a single byte is not recorded: Node reports it
 * as a `tlsClientError` (ECONNRESET) too, but no handshake was attempted — it is what TCP health
 * checks and port probes do, and would otherwise write a record per probe.
 */

const MARK = Symbol.for('auditrace.tls-audit');
const FAILURE_MAX = 64;

interface SocketLike {
  remoteAddress?: unknown;
  authorizationError?: unknown;
  _parent?: unknown;
}

let installed: { undo: () => void } | undefined;

/**
 * Starts recording failed TLS handshakes on every `tls.Server` of the process (idempotent).
 * Returns an undo that restores `tls.Server.prototype.emit` (or, when something wrapped it after
 * us, turns our wrapper into a plain pass-through).
 */
export function auditTlsFailures(): () => void {
  if (installed) return installed.undo;
  const tls = require('node:tls') as typeof import('node:tls');
  const peers = new WeakMap<object, string>();
  const restore = observeEmit(tls.Server.prototype as unknown as { emit: Emit }, MARK, (_server, event, first, second) => {
    if (event === 'connection') rememberPeer(peers, first);
    else if (event === 'tlsClientError') record(peers, first, second);
  });
  const undo = (): void => {
    restore();
    if (installed?.undo === undo) installed = undefined;
  };
  installed = { undo };
  return undo;
}

function rememberPeer(peers: WeakMap<object, string>, socket: unknown): void {
  try {
    if (socket === null || typeof socket !== 'object') return;
    const address = (socket as SocketLike).remoteAddress;
    if (typeof address === 'string' && address) peers.set(socket, address);
  } catch {
    // an exotic stream handed to emit('connection'): no address then
  }
}

function peerOf(peers: WeakMap<object, string>, socket: SocketLike | undefined): string {
  if (!socket) return 'unknown';
  const direct = normaliseAddress(typeof socket.remoteAddress === 'string' ? socket.remoteAddress : undefined);
  if (direct) return direct;
  const parent = socket._parent;
  if (parent !== null && typeof parent === 'object') {
    const remembered = normaliseAddress(peers.get(parent));
    if (remembered) return remembered;
    const raw = (parent as SocketLike).remoteAddress;
    const fromParent = normaliseAddress(typeof raw === 'string' ? raw : undefined);
    if (fromParent) return fromParent;
  }
  return 'unknown';
}

/**
 * OpenSSL's error text without its per-thread prefix and source location:
 * `40CD8AEC967F0000:error:0A0000C7:SSL routines:tls_process_client_certificate:peer did not return
 * a certificate:../deps/openssl/.../statem_srvr.c:3764:` → `SSL routines:tls_process_client_certificate:
 * peer did not return a certificate`. Any other text is returned as it is.
 */
export function opensslReason(message: string): string {
  const m = /^[0-9A-Fa-f]+:error:[0-9A-Fa-f]+:([^:]*):([^:]*):([^:]*):[^:]*:\d+:([\s\S]*)$/.exec(message.trim());
  if (!m) return message.trim();
  const extra = m[4]!.trim();
  return `${m[1]}:${m[2]}:${m[3]}${extra ? ` (${extra})` : ''}`;
}

/** Bytes the client sent on the raw connection (the TLS socket itself counts decrypted bytes). */
function bytesReadOf(socket: SocketLike | undefined): number | undefined {
  const parent = socket?._parent;
  if (parent === null || typeof parent !== 'object') return undefined;
  const n = (parent as { bytesRead?: unknown }).bytesRead;
  return typeof n === 'number' ? n : undefined;
}

function record(peers: WeakMap<object, string>, error: unknown, socket: unknown): void {
  try {
    const s = socket !== null && typeof socket === 'object' ? socket as SocketLike : undefined;
    const err = error !== null && typeof error === 'object' ? error as { code?: unknown; message?: unknown } : undefined;
    const rejected = typeof s?.authorizationError === 'string' && s.authorizationError ? s.authorizationError : undefined;
    const code = typeof err?.code === 'string' && err.code ? err.code : undefined;
    // Closed or reset before the client sent a byte: no handshake was attempted (a TCP port check,
    // a load balancer's health check). A client that sends nothing until the handshake times out
    // is still recorded.
    if (!rejected && code === 'ECONNRESET' && bytesReadOf(s) === 0) return;
    const message = typeof err?.message === 'string' ? err.message.trim() : undefined;
    const fields: Record<string, unknown> = {
      'network.peer.address': peerOf(peers, s),
      'tls.failure': (rejected ?? code ?? 'tls_error').slice(0, FAILURE_MAX),
    };
    if (rejected) fields['error.message'] = `client certificate rejected: ${rejected}`;
    else if (message) fields['error.message'] = opensslReason(message);
    // Outside whatever request context the server happened to be created in.
    // `own` marks the record as auditrace's (the application cannot write this event).
    context.with(ROOT_CONTEXT, () => getAuditor().emit('tls_handshake_fail', fields, { outcome: 'failure', severity: 'WARN' }));
  } catch {
    // never let auditing change what the server does
  }
}
