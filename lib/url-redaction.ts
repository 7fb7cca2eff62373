import { SpanKind } from '@opentelemetry/api';
import type { Context } from '@opentelemetry/api';
import type { ReadableSpan, Span, SpanProcessor } from '@opentelemetry/sdk-trace';

/**
 * What a URL may say in telemetry: its structure, not its values. Query values and path parameters
 * carry tokens, session ids and personal data (`?access_token=…`, `;jsessionid=…`, a bare
 * `?eyJ…` JWT), so keys stay and values become `REDACTED`.
 */
const REDACTED = 'REDACTED';
const QUERY_MAX = 1024;

/** `a=1&b&=c` → `a=REDACTED&REDACTED&=REDACTED`: a part without `=` may be a value on its own. */
export function redactQuery(query: string): string {
  return query.split('&').filter(Boolean).map((p) => {
    const eq = p.indexOf('=');
    return eq >= 0 ? `${p.slice(0, eq)}=${REDACTED}` : REDACTED;
  }).join('&').slice(0, QUERY_MAX);
}

/**
 * A path's parameters (RFC 3986 `;name=value` in a segment, as servlet containers put
 * `;jsessionid=` there) keep their names. Only paths with a `;` are rewritten.
 */
export function redactPathParams(path: string): string {
  if (path.indexOf(';') < 0) return path;
  return path.replace(/;([^;/]*)/g, (_m, p: string) => {
    const eq = p.indexOf('=');
    return eq >= 0 ? `;${p.slice(0, eq)}=${REDACTED}` : `;${REDACTED}`;
  });
}

/** A whole URL: its query's values redacted and its fragment dropped (OAuth puts tokens there). */
export function redactUrlQuery(url: string): string {
  const q = url.indexOf('?');
  const h = url.indexOf('#');
  if (q < 0 || (h >= 0 && h < q)) return h >= 0 ? url.slice(0, h) : url;
  const query = url.slice(q + 1, h >= 0 ? h : undefined);
  return `${url.slice(0, q)}${query ? `?${redactQuery(query)}` : ''}`;
}

/** The attributes of an outgoing call that hold a query (stable and old semantic conventions). */
const URL_KEYS = ['url.full', 'http.url'] as const;
const QUERY_KEYS = ['url.query'] as const;

/**
 * The client side's spans (instrumentation-http's and -undici's outgoing calls) carry the URL the
 * application called, query and all: their values are redacted as the span starts, where those
 * instrumentations set them, before any processor or exporter reads them.
 */
export function clientUrlRedaction(): SpanProcessor {
  return {
    onStart(span: Span, _parent: Context): void {
      if (span.kind !== SpanKind.CLIENT) return;
      try {
        const attrs = span.attributes;
        for (const k of URL_KEYS) {
          const v = attrs[k];
          if (typeof v === 'string' && (v.indexOf('?') >= 0 || v.indexOf('#') >= 0)) span.setAttribute(k, redactUrlQuery(v));
        }
        for (const k of QUERY_KEYS) {
          const v = attrs[k];
          if (typeof v === 'string' && v.length > 0) {
            const leading = v.charCodeAt(0) === 63 /* ? */;
            span.setAttribute(k, (leading ? '?' : '') + redactQuery(leading ? v.slice(1) : v));
          }
        }
      } catch {
        // a span that refuses: it keeps what it had, the application is not affected
      }
    },
    onEnd(_span: ReadableSpan): void {},
    forceFlush: () => Promise.resolve(),
    shutdown: () => Promise.resolve(),
  };
}
