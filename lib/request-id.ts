import { randomHex } from './random-hex';

/** 128 random bits as 32 lowercase hex characters. */
export function newRequestId(): string {
  return randomHex(32);
}

/** What a trusted peer may send: bounded, and only characters that are safe in any log or header. */
const WELL_FORMED = /^[A-Za-z0-9._:@/+=-]{8,128}$/;
const FORENSIC_MAX = 128;

export interface RequestIdDecision {
  requestId: string;
  /** An untrusted peer's value, kept for forensics only: truncated, never used as the id. */
  untrusted?: string;
  /** Why a trusted peer's value was not kept. */
  replaced?: 'malformed' | 'multiple';
}

/** Keeps what a value looked like without letting it forge anything: truncated, controls escaped. */
export function forensicCopy(value: string): string {
  const cut = value.length > FORENSIC_MAX ? `${value.slice(0, FORENSIC_MAX)}…` : value;
  return cut.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029"\\]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/**
 * An untrusted peer's request id is discarded and a fresh one made (any client could have chosen
 * it, to poison correlation); a trusted peer's is kept when well-formed.
 */
export function decideRequestId(incoming: string | string[] | undefined, peerTrusted: boolean): RequestIdDecision {
  if (incoming === undefined || incoming === '') return { requestId: newRequestId() };
  const value = Array.isArray(incoming) ? incoming.join(',') : incoming;
  if (!peerTrusted) return { requestId: newRequestId(), untrusted: forensicCopy(value) };
  if (Array.isArray(incoming) ? incoming.length > 1 : joinedRepeats(value)) return { requestId: newRequestId(), replaced: 'multiple', untrusted: forensicCopy(value) };
  if (!WELL_FORMED.test(value)) return { requestId: newRequestId(), replaced: 'malformed', untrusted: forensicCopy(value) };
  return { requestId: value };
}

/** Node joins a header sent on several lines with ", ", which no well-formed id contains. */
function joinedRepeats(value: string): boolean {
  return value.includes(', ') && value.split(', ').every((part) => WELL_FORMED.test(part));
}
