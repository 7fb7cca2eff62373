/**
 * Free text that reaches a record (`error.message`: what a backend answered, what an exception
 * said) can quote credentials: `db error: password=…`, `{"token":"…"}`, `Bearer …`. The values of
 * deny-listed keys written as `key=value` or `key: value` (quoted or not), bearer tokens and JWTs
 * are replaced by `[REDACTED]`; the rest of the text stays as it was.
 */
// A key starts where no key character precedes it: inside a long run of them the search moves on
// at once instead of trying every 64-character window (linear in the text).
const KEY_SEP = /(?<![A-Za-z0-9_.-])(["']?)([A-Za-z0-9_.-]{1,64})\1[ \t]*[:=][ \t]*/g;
const VALUE_END = /[\s,;&}\])"'<>]/g;
const BEARER = /\bbearer[ \t]+[A-Za-z0-9._~+/-]{8,}=*/gi;
const JWT = /\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}/g;
const REDACTED = '[REDACTED]';

/**
 * `keep`: how many characters of the result a record can hold (AUDITRACE_AUDIT_MAX_FIELD_BYTES):
 * the text past the point where the result has that many is never written, so it is not read.
 */
export function scrubSecrets(text: string, isRedacted: (key: string) => boolean, keep = Infinity): string {
  let out = '';
  let last = 0;
  KEY_SEP.lastIndex = 0;
  for (let m = KEY_SEP.exec(text); m !== null; m = KEY_SEP.exec(text)) {
    if (out.length + (m.index - last) > keep) break;
    if (m[0].length === 0) { KEY_SEP.lastIndex++; continue; }
    if (!isRedacted(m[2]!)) continue; // the value may itself be `key=…`: the search goes on from it
    const start = KEY_SEP.lastIndex;
    const end = valueEnd(text, start);
    if (end === start) continue;
    const quote = text[start] === '"' || text[start] === "'" ? text[start]! : '';
    out += `${text.slice(last, start)}${quote}${REDACTED}${quote}`;
    last = end;
    KEY_SEP.lastIndex = end;
  }
  out += text.slice(last);
  return out.replace(BEARER, `Bearer ${REDACTED}`).replace(JWT, REDACTED);
}

/** An authorization scheme before its credentials (`Authorization: Bearer …`): both are the value. */
const SCHEME = /^(?:bearer|basic|digest|token|apikey)[ \t]+(?=[^\s])/i;

/** Where a value that starts at `i` ends: its closing quote, or the first separator. */
function valueEnd(text: string, i: number): number {
  const scheme = SCHEME.exec(text.slice(i, i + 16));
  if (scheme) i += scheme[0].length;
  const q = text[i];
  if (q === '"' || q === "'") {
    for (let j = i + 1; j < text.length; j++) {
      if (text[j] === '\\') { j++; continue; }
      if (text[j] === q) return j + 1;
    }
    return text.length;
  }
  VALUE_END.lastIndex = i;
  const m = VALUE_END.exec(text);
  return m ? m.index : text.length;
}
