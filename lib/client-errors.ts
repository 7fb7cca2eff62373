import { context, ROOT_CONTEXT } from '@opentelemetry/api';
import { getAuditor } from './audit/auditor';
import { normaliseAddress } from './client-address';
import { observeEmit } from './observe-emit';
import type { Emit } from './observe-emit';
import { setRequestContext } from './request-context';

/**
 * Connections that send something Node cannot parse as an HTTP request — a malformed request line
 * or header, headers over the size limit, headers that never complete — never reach the
 * application: Node answers 400/431/408 and closes. Scanners and protocol fuzzers produce exactly
 * these, so each becomes an `http_client_error` audit record.
 *
 * Node reports them as a `clientError` event on the server, and only answers itself when nobody
 * listens; a listener of ours would change that. So, as for TLS (tls-audit.ts), the event is
 * observed through `emit` of `http.Server.prototype` and `tls.Server.prototype` (observe-emit.ts),
 * which https servers inherit.
 *
 * A connection reset or broken by the client (ECONNRESET, EPIPE) is not a request error, and an
 * error on a connection whose request already reached the application (a client hanging up
 * mid-body) is that request's: its access record says `client_aborted`.
 *
 * The client: an untrusted peer is its own client; behind a trusted proxy the client is not known
 * (the request that would name it could not be read), so the record has only the peer.
 */

const MARK = Symbol.for('auditrace.client-errors');
const TYPE_MAX = 64;
const NOT_REQUEST_ERRORS = new Set(['ECONNRESET', 'EPIPE']);

/** The status Node writes when no `clientError` listener answers (lib/_http_server.js, socketOnError). */
export function nodeAnswer(code: string | undefined): number {
  if (code === 'HPE_HEADER_OVERFLOW') return 431;
  if (code === 'ERR_HTTP_REQUEST_TIMEOUT') return 408;
  return 400;
}

let installed: { undo: () => void; observe: (proto: object) => void; tls: boolean } | undefined;

/**
 * Starts recording unparseable requests on every http server of the process (idempotent), and on
 * every https server once `auditHttpsClientErrors()` was called too. `trusted(peer)`: whether the
 * peer is a trusted proxy.
 */
export function auditClientErrors(trusted: (peer: string) => boolean): () => void {
  if (installed) return installed.undo;
  const undos: (() => void)[] = [];
  // An https server re-emits a failed handshake's `tlsClientError` as `clientError`, with the
  // same error: that is a tls_handshake_fail record (tls-audit.ts), not a request Node could not parse.
  const handshakeErrors = new WeakSet<object>();
  const observe = (proto: object): void => {
    undos.push(observeEmit(proto as unknown as { emit: Emit }, MARK, (server, event, err, socket) => {
      if (event === 'tlsClientError') {
        if (err !== null && typeof err === 'object') handshakeErrors.add(err);
      } else if (event === 'clientError' && !(err !== null && typeof err === 'object' && handshakeErrors.has(err))) {
        record(server, err, socket, trusted);
      }
    }));
  };
  observe((require('node:http') as typeof import('node:http')).Server.prototype);
  const undo = (): void => {
    for (const u of undos.splice(0)) u();
    if (installed?.undo === undo) installed = undefined;
  };
  installed = { undo, observe, tls: false };
  return undo;
}

/**
 * Extends `auditClientErrors` to https servers. They inherit `emit` from tls.Server (https.Server
 * has none of its own), so tls.Server is observed; called when the app first loads `tls`,
 * `https` or `http2` (sdk.ts), which spares every other app loading `node:tls` at start.
 */
export function auditHttpsClientErrors(): void {
  if (!installed || installed.tls) return;
  installed.tls = true;
  installed.observe((require('node:tls') as typeof import('node:tls')).Server.prototype);
}

function record(server: unknown, error: unknown, socket: unknown, trusted: (peer: string) => boolean): void {
  try {
    const err = error !== null && typeof error === 'object' ? error as { code?: unknown } : undefined;
    const code = typeof err?.code === 'string' && err.code ? err.code.slice(0, TYPE_MAX) : 'unknown';
    if (NOT_REQUEST_ERRORS.has(code)) return;
    const s = socket !== null && typeof socket === 'object'
      ? socket as { remoteAddress?: unknown; writable?: unknown; _httpMessage?: unknown } : undefined;
    if (s?._httpMessage) return; // a request of this connection reached the app: its access record tells
    const peer = normaliseAddress(typeof s?.remoteAddress === 'string' ? s.remoteAddress : undefined);
    const fields: Record<string, unknown> = { 'network.peer.address': peer ?? 'unknown', 'error.type': code };
    // Node answers only when nobody listens and the connection can still take it.
    const listeners = (server as { listenerCount?: (e: string) => number } | null)?.listenerCount?.('clientError') ?? 0;
    if (listeners === 0 && s?.writable === true) fields['http.response.status_code'] = nodeAnswer(code);
    const client = peer !== undefined && !trusted(peer) ? peer : undefined;
    const ctx = client ? setRequestContext(ROOT_CONTEXT, { requestId: '', clientAddress: client, peerAddress: peer }) : ROOT_CONTEXT;
    context.with(ctx, () => getAuditor().emit('http_client_error', fields, { outcome: 'failure', severity: 'WARN' }));
  } catch {
    // never let auditing change what the server does
  }
}
