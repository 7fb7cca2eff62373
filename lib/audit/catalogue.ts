/**
 * The audit event catalogue: the one source of every event's name, outcome, severity and fields.
 * The `audit.*()` functions and their TypeScript parameter types are derived from it (below), the
 * JSON Schema and the README table are generated from it (`npm run docs`).
 *
 * Names follow the OWASP Application Logging Vocabulary where it has one; consent, terms,
 * preferences and token events are named in the same style. Fields hold identifiers and names,
 * never personal data itself: `user.target.id` is the data subject's id, `fields` the names of the
 * fields touched, not their values.
 */

export type FieldType = 'string' | 'integer' | 'number' | 'boolean' | 'string[]';
export type Severity = 'INFO' | 'WARN' | 'ERROR' | 'CRITICAL';
export type Outcome = 'success' | 'failure';

export interface FieldSpec {
  type: FieldType;
  description: string;
  required?: boolean;
  /** For strings: the accepted values. */
  enum?: readonly string[];
}

export interface EventSpec {
  description: string;
  outcome: Outcome;
  severity: Severity;
  /** The OWASP vocabulary event this one is, or `auditrace` when the vocabulary has none. */
  source: 'owasp' | 'auditrace';
  /** Written by auditrace itself with an outcome and severity per record (the access record). */
  varies?: boolean;
  /** Written only by auditrace itself: no `audit.*()` function, refused from `audit.event()`. */
  internal?: boolean;
  fields: Readonly<Record<string, FieldSpec>>;
}

const actor = (required = true): FieldSpec => ({ type: 'string', required, description: 'Id of the user who acted (the application\'s internal id).' });
const subject = (required = true): FieldSpec => ({ type: 'string', required, description: 'Id of the person whose data or account was acted on (the data subject).' });
const objectType: FieldSpec = { type: 'string', required: true, description: 'Kind of record touched, e.g. `patient`, `invoice`.' };
const objectId: FieldSpec = { type: 'string', description: 'Id of the record touched.' };
const fieldNames: FieldSpec = { type: 'string[]', description: 'Names of the fields touched (never their values).' };
const reason: FieldSpec = { type: 'string', description: 'Why, in a few words or a code.' };

const personalData = (verb: string): EventSpec => ({
  description: `Personal data ${verb}.`,
  outcome: 'success',
  severity: 'WARN',
  source: 'owasp',
  fields: { 'user.id': actor(), 'user.target.id': subject(), 'object.type': objectType, 'object.id': objectId, fields: fieldNames },
});

/** Fields every event accepts besides its own. */
export const commonFields = {
  context: { type: 'object', description: 'Free-form: what the application was trying to do. Deny-listed keys are redacted.' },
  'error.message': { type: 'string', description: 'A human-readable error received from another service, truncated.' },
  'error.type': { type: 'string', description: 'A low-cardinality error class or code.' },
} as const;

export const catalogue = {
  sensitive_create: personalData('created'),
  sensitive_read: personalData('read'),
  sensitive_update: personalData('updated'),
  sensitive_delete: personalData('deleted'),

  consent_granted: {
    description: 'The data subject consented to a use of their personal data.',
    outcome: 'success', severity: 'INFO', source: 'auditrace',
    fields: {
      'user.id': actor(), 'user.target.id': subject(false),
      'consent.purpose': { type: 'string', required: true, description: 'The purpose consented to, e.g. `marketing_email`.' },
      'consent.version': { type: 'string', description: 'Version of the consent text shown.' },
    },
  },
  consent_withdrawn: {
    description: 'The data subject withdrew a consent.',
    outcome: 'success', severity: 'INFO', source: 'auditrace',
    fields: {
      'user.id': actor(), 'user.target.id': subject(false),
      'consent.purpose': { type: 'string', required: true, description: 'The purpose withdrawn.' },
    },
  },
  terms_accepted: {
    description: 'Terms of use accepted.',
    outcome: 'success', severity: 'INFO', source: 'auditrace',
    fields: { 'user.id': actor(), 'terms.version': { type: 'string', required: true, description: 'Version of the terms accepted.' } },
  },
  preferences_changed: {
    description: 'Communication preferences changed.',
    outcome: 'success', severity: 'INFO', source: 'auditrace',
    fields: {
      'user.id': actor(), 'user.target.id': subject(false),
      'preferences.changed': { type: 'string[]', required: true, description: 'Names of the preferences changed, e.g. `newsletter`.' },
    },
  },

  authn_login_success: {
    description: 'A user logged in.', outcome: 'success', severity: 'INFO', source: 'owasp',
    fields: { 'user.id': actor(), 'authn.method': { type: 'string', description: 'e.g. `password`, `oidc`, `mtls`.' } },
  },
  authn_login_successafterfail: {
    description: 'A user logged in after failed attempts.', outcome: 'success', severity: 'INFO', source: 'owasp',
    fields: { 'user.id': actor(), 'authn.retries': { type: 'integer', required: true, description: 'Failed attempts before this one.' } },
  },
  authn_login_fail: {
    description: 'A login failed.', outcome: 'failure', severity: 'WARN', source: 'owasp',
    fields: { 'user.id': { type: 'string', description: 'The user id tried, when it names an existing user.' }, reason, 'authn.method': { type: 'string', description: 'e.g. `password`.' } },
  },
  authn_login_fail_max: {
    description: 'A user reached the maximum of failed logins.', outcome: 'failure', severity: 'WARN', source: 'owasp',
    fields: { 'user.id': actor(), 'authn.max_attempts': { type: 'integer', required: true, description: 'The limit reached.' } },
  },
  authn_login_lock: {
    description: 'An account was locked.', outcome: 'failure', severity: 'WARN', source: 'owasp',
    fields: { 'user.id': actor(), reason },
  },
  authn_password_change: {
    description: 'A password was changed.', outcome: 'success', severity: 'INFO', source: 'owasp',
    fields: { 'user.id': actor(), 'user.target.id': subject(false) },
  },
  authn_password_change_fail: {
    description: 'A password change failed.', outcome: 'failure', severity: 'CRITICAL', source: 'owasp',
    fields: { 'user.id': actor(), reason },
  },
  authn_token_invalid: {
    description: 'A session or access token failed validation.', outcome: 'failure', severity: 'WARN', source: 'auditrace',
    fields: {
      'user.id': { type: 'string', description: 'The user the token claims, if it could be read.' },
      'token.failure': { type: 'string', required: true, enum: ['expired', 'bad_signature', 'revoked', 'malformed', 'wrong_audience', 'unknown_issuer', 'not_yet_valid', 'other'], description: 'Why the token was refused.' },
      'token.type': { type: 'string', description: 'e.g. `session`, `jwt`, `api_key`.' },
      'token.hash': { type: 'string', description: 'A hash of the token (never the token), to link reuse.' },
    },
  },
  authn_token_reuse: {
    description: 'A revoked token was used again.', outcome: 'failure', severity: 'CRITICAL', source: 'owasp',
    fields: { 'user.id': actor(false), 'token.hash': { type: 'string', description: 'A hash of the token (never the token).' } },
  },
  authz_fail: {
    description: 'An action was refused by authorisation.', outcome: 'failure', severity: 'CRITICAL', source: 'owasp',
    fields: {
      'user.id': actor(false), 'user.target.id': subject(false),
      'authz.action': { type: 'string', required: true, description: 'What was attempted, e.g. `orders:delete`.' },
      'object.type': { ...objectType, required: false }, 'object.id': objectId, reason,
    },
  },
  authz_change: {
    description: 'A user\'s privileges or role changed.', outcome: 'success', severity: 'WARN', source: 'owasp',
    fields: {
      'user.id': actor(), 'user.target.id': subject(),
      'authz.from': { type: 'string[]', required: true, description: 'Roles or privileges before.' },
      'authz.to': { type: 'string[]', required: true, description: 'Roles or privileges after.' },
    },
  },
  authz_admin: {
    description: 'A privileged (administrative) action.', outcome: 'success', severity: 'WARN', source: 'owasp',
    fields: { 'user.id': actor(), 'user.target.id': subject(false), 'authz.action': { type: 'string', required: true, description: 'The administrative action.' } },
  },

  session_created: {
    description: 'A session was created.', outcome: 'success', severity: 'INFO', source: 'owasp',
    fields: { 'user.id': actor() },
  },
  session_renewed: {
    description: 'A session was renewed.', outcome: 'success', severity: 'INFO', source: 'owasp',
    fields: { 'user.id': actor() },
  },
  session_expired: {
    description: 'A session ended by timeout or revocation.', outcome: 'success', severity: 'INFO', source: 'owasp',
    fields: { 'user.id': actor(), reason: { ...reason, enum: ['timeout', 'revoked', 'logout', 'other'] } },
  },
  session_logout: {
    description: 'A user logged out.', outcome: 'success', severity: 'INFO', source: 'owasp',
    fields: { 'user.id': actor() },
  },
  session_use_after_expire: {
    description: 'An expired session was used.', outcome: 'failure', severity: 'CRITICAL', source: 'owasp',
    fields: { 'user.id': actor(false) },
  },

  backend_call_fail: {
    description: 'A call to another service or backend failed.', outcome: 'failure', severity: 'WARN', source: 'auditrace',
    fields: {
      'user.id': actor(false),
      'server.address': { type: 'string', required: true, description: 'The service called (host or logical name).' },
      'url.path': { type: 'string', description: 'Path called, without query.' },
      'http.response.status_code': { type: 'integer', description: 'Status received, if any.' },
    },
  },
  http_request: {
    description: 'An incoming HTTP request and its response (written by auditrace for every request, also one Node answers without asking the application, such as a 417 for an unknown `Expect`, whose record has no span; failure with WARN for 4xx, ERROR for 5xx).',
    outcome: 'success', severity: 'INFO', source: 'auditrace', varies: true, internal: true,
    fields: {
      'user.id': actor(false),
      'http.request.method': { type: 'string', required: true, description: 'Request method.' },
      'http.route': { type: 'string', description: 'Route template, when the framework knows it.' },
      'url.path': { type: 'string', required: true, description: 'Path, without the query string.' },
      'http.response.status_code': { type: 'integer', description: 'Status sent (absent when the client went away first).' },
      'http.server.request.duration': { type: 'number', required: true, description: 'Seconds from request to response end.' },
      'http.request.body.size': { type: 'integer', description: 'Request body size from its Content-Length (absent for chunked bodies).' },
      'http.response.body.size': { type: 'integer', description: 'Response body size from its Content-Length (absent for chunked bodies).' },
      'user_agent.original': { type: 'string', description: 'User agent, truncated to 256 characters.' },
      'network.peer.address': { type: 'string', required: true, description: 'The socket peer (a proxy, or the client itself).' },
      'request.id.untrusted': { type: 'string', description: 'A request id sent by an untrusted peer: kept for forensics, never used (truncated, escaped).' },
      'request.id.replaced': { type: 'string', enum: ['malformed', 'multiple'], description: 'Why a trusted peer\'s request id was replaced.' },
      'trace.untrusted_parent': { type: 'string', description: 'Trace id an untrusted peer asked to continue; the new trace links to it.' },
    },
  },
  authn_fail: {
    description: 'A request was refused for missing or invalid authentication (HTTP 401) and the application recorded no authentication event for it.',
    outcome: 'failure', severity: 'WARN', source: 'auditrace', internal: true,
    fields: { 'user.id': actor(false), 'http.route': { type: 'string', description: 'Route template.' }, 'url.path': { type: 'string', required: true, description: 'Path, without the query string.' } },
  },
  tls_handshake_fail: {
    description: 'A TLS handshake with a client failed, including a missing or rejected client certificate (mTLS).',
    outcome: 'failure', severity: 'WARN', source: 'auditrace', internal: true,
    fields: {
      'network.peer.address': { type: 'string', required: true, description: 'The peer that attempted the handshake.' },
      'tls.failure': { type: 'string', required: true, description: 'Error code, e.g. `ERR_SSL_PEER_DID_NOT_RETURN_A_CERTIFICATE`.' },
    },
  },
  http_client_error: {
    description: 'A connection sent bytes that are not a valid HTTP request (malformed request line or headers, headers too large, headers not complete in time); Node answered it without the application seeing a request. `error.type` is Node\'s error code (e.g. `HPE_INVALID_METHOD`, `HPE_HEADER_OVERFLOW`); `client.address` is the peer unless the peer is a trusted proxy.',
    outcome: 'failure', severity: 'WARN', source: 'auditrace', internal: true,
    fields: {
      'network.peer.address': { type: 'string', required: true, description: 'The connection\'s peer (the client, or a proxy in front of it).' },
      'http.response.status_code': { type: 'integer', description: 'What Node answered (400, 408 or 431); absent when the application handles `clientError` itself or the connection was no longer writable.' },
    },
  },
  audit_chain_start: {
    description: 'A process began a new hash chain; names the previous chain found in the same file.',
    outcome: 'success', severity: 'INFO', source: 'auditrace', internal: true,
    fields: {
      'audit.chain.alg': { type: 'string', required: true, enum: ['sha256', 'hmac-sha256'], description: 'How `audit.prev` is computed.' },
      'audit.chain.previous': { type: 'string', description: 'Chain id of the last record already in the file.' },
      'audit.chain.previous_seq': { type: 'integer', description: 'Its sequence number; `audit.prev` of this record is its hash.' },
      'process.pid': { type: 'integer', description: 'The process that writes this chain.' },
      'audit.checkpoint.mac': { type: 'string', description: 'HMAC-SHA256 of this record without this field (with a key; absent in files written before chain starts were signed).' },
    },
  },
  audit_checkpoint: {
    description: 'Periodic checkpoint of the hash chain, written even when idle (signed with the HMAC key when set).',
    outcome: 'success', severity: 'INFO', source: 'auditrace', internal: true,
    fields: {
      'audit.checkpoint.records': { type: 'integer', required: true, description: 'Records in this chain before this checkpoint.' },
      'audit.checkpoint.interval_ms': { type: 'integer', required: true, description: 'Interval at which checkpoints are written.' },
      'audit.checkpoint.mac': { type: 'string', description: 'HMAC-SHA256 of this record without this field.' },
    },
  },
  audit_chain_end: {
    description: 'The process ended its hash chain cleanly (a chain without it ended by a crash, or lost its tail).',
    outcome: 'success', severity: 'INFO', source: 'auditrace', internal: true,
    fields: {
      'audit.checkpoint.records': { type: 'integer', required: true, description: 'Records in this chain before this one.' },
      'audit.checkpoint.mac': { type: 'string', description: 'HMAC-SHA256 of this record without this field.' },
    },
  },
  input_validation_fail: {
    description: 'Input failed validation.', outcome: 'failure', severity: 'WARN', source: 'owasp',
    fields: { 'user.id': actor(false), fields: { ...fieldNames, required: true, description: 'Names of the fields that failed (never their values).' } },
  },
} as const satisfies Record<string, EventSpec>;

export type EventName = keyof typeof catalogue;

// ---- TypeScript types derived from the catalogue ---------------------------------------------

type TypeOf<T extends FieldType> =
  T extends 'string' ? string : T extends 'integer' | 'number' ? number : T extends 'boolean' ? boolean : readonly string[];
type FieldsOf<E extends EventName> = (typeof catalogue)[E]['fields'];
type ValueOf<F> = F extends { enum: readonly (infer V)[] } ? V : F extends { type: infer T extends FieldType } ? TypeOf<T> : never;
type RequiredKeys<F> = { [K in keyof F]: F[K] extends { required: true } ? K : never }[keyof F];

/** What the app passes: the event's own fields plus the common ones, keyed by record field name. */
export type CommonFields = {
  context?: Record<string, unknown>;
  'error.message'?: string;
  'error.type'?: string;
};
export type AuditFields<E extends EventName> =
  & { [K in RequiredKeys<FieldsOf<E>>]: ValueOf<FieldsOf<E>[K]> }
  & { [K in Exclude<keyof FieldsOf<E>, RequiredKeys<FieldsOf<E>>>]?: ValueOf<FieldsOf<E>[K]> }
  & CommonFields;

type Camel<S extends string> = S extends `${infer H}_${infer T}` ? `${H}${Capitalize<Camel<T>>}` : S;

/** `audit.sensitiveRead({...})` for `sensitive_read`, and so on; each returns the record's `audit.id`. */
type PublicEvent = { [E in EventName]: (typeof catalogue)[E] extends { internal: true } ? never : E }[EventName];
export type AuditFunctions = { [E in PublicEvent as Camel<E>]: (fields: AuditFields<E>) => string };

export function functionName(event: string): string {
  return event.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase());
}
