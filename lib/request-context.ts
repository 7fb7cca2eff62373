import { context, createContextKey } from '@opentelemetry/api';
import type { Context } from '@opentelemetry/api';

/** What the edge learned about the request being handled; carried in the OTel context. */
export interface RequestContext {
  /** Chosen by us or by a trusted peer; never an untrusted client's value. */
  requestId: string;
  /** The original external client, as resolved through trusted proxies. */
  clientAddress?: string;
  /** The socket peer. */
  peerAddress?: string;
  /** Set when the application recorded an authentication/authorisation failure for this request. */
  authFailureRecorded?: boolean;
}

const KEY = createContextKey('auditrace.request');

export function currentRequest(): RequestContext | undefined {
  return context.active().getValue(KEY) as RequestContext | undefined;
}

export function withRequest<T>(request: RequestContext, fn: () => T): T {
  return context.with(context.active().setValue(KEY, request), fn);
}

export function requestFromContext(ctx: Context): RequestContext | undefined {
  return ctx.getValue(KEY) as RequestContext | undefined;
}

export function setRequestContext(ctx: Context, request: RequestContext): Context {
  return ctx.setValue(KEY, request);
}
