import { scrubSecrets } from './scrub';
import { catalogue, commonFields } from './catalogue';
import type { EventSpec, FieldSpec, Outcome, Severity } from './catalogue';

/** What surrounds a call to `audit.*()`: filled by the caller from the clock, context and identity. */
export interface Ambient {
  time: string;
  auditId: string;
  traceId?: string | undefined;
  spanId?: string | undefined;
  requestId?: string | undefined;
  clientAddress?: string | undefined;
  /** auditrace's own records (the access record) decide these per call; applications cannot. */
  outcome?: Outcome | undefined;
  /** Set when auditrace itself writes the record: only then are internal events accepted. */
  internal?: boolean | undefined;
  severity?: Severity | undefined;
  /** Characters of a string field a record can hold: free text past them is not scrubbed (never written). */
  keepChars?: number | undefined;
  identity: {
    'service.name': string;
    'service.instance.id': string;
    'k8s.pod.name'?: string | undefined;
  };
}

/** Fields the record builder fills itself: an application cannot set or override them. */
export const reservedFields: ReadonlySet<string> = new Set([
  'time', 'audit.id', 'event.name', 'event.outcome', 'severity', 'client.address', 'request.id',
  'trace_id', 'span_id', 'service.name', 'service.instance.id', 'k8s.pod.name', 'audit.problems',
  'audit.truncated', 'audit.seq', 'audit.prev', 'audit.chain',
]);

const EVENT_NAME = /^[a-z][a-z0-9]*(?:_[a-z0-9]+)*$/;
const FIELD_NAME = /^[a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)*$/;
const SEVERITIES: readonly Severity[] = ['INFO', 'WARN', 'ERROR', 'CRITICAL'];
const OUTCOMES: readonly Outcome[] = ['success', 'failure'];

export interface BuiltRecord {
  record: Record<string, unknown>;
  /** Fields the application passed that were refused or missing; also written into the record. */
  problems: string[];
}

function typeProblem(name: string, value: unknown, spec: FieldSpec | { type: 'object' }): string | undefined {
  switch (spec.type) {
    case 'string':
      if (typeof value !== 'string') return `${name}: expected a string`;
      if ('enum' in spec && spec.enum && !spec.enum.includes(value)) return `${name}: expected one of ${spec.enum.join('|')}`;
      return undefined;
    case 'integer':
      return Number.isSafeInteger(value) ? undefined : `${name}: expected an integer`;
    case 'number':
      return typeof value === 'number' && Number.isFinite(value) ? undefined : `${name}: expected a number`;
    case 'boolean':
      return typeof value === 'boolean' ? undefined : `${name}: expected a boolean`;
    case 'string[]':
      return isStringArray(value) ? undefined : `${name}: expected an array of strings`;
    case 'object':
      return isPlainObject(value) ? undefined : `${name}: expected a plain object`;
  }
}

/** A dense array of strings; a hostile array (throwing getters, revoked Proxy, holes) is not. */
function isStringArray(v: unknown): boolean {
  try {
    if (!Array.isArray(v)) return false;
    for (let i = 0; i < v.length; i++) {
      if (!Object.hasOwn(v, i) || typeof v[i] !== 'string') return false;
    }
    return true;
  } catch {
    return false;
  }
}

/** Only `{...}` objects: boxed primitives, Dates, Sets, Buffers and class instances would not
 * serialise as the object the schema promises. */
function isPlainObject(v: unknown): boolean {
  try {
    if (v === null || typeof v !== 'object' || Array.isArray(v)) return false;
    const proto = Object.getPrototypeOf(v);
    return proto === Object.prototype || proto === null;
  } catch {
    return false;
  }
}

function isScalarOrStrings(v: unknown): boolean {
  const t = typeof v;
  if (t === 'string' || t === 'boolean') return true;
  if (t === 'number') return Number.isFinite(v);
  return isStringArray(v);
}

function describeName(name: unknown): string {
  try {
    return JSON.stringify(String(name).slice(0, 64));
  } catch {
    return 'an unprintable value';
  }
}

const UNREADABLE = Symbol('unreadable');

/**
 * Own enumerable keys and their values, flat (key, value, key, value …: one array per record),
 * each read once; none when the object refuses to be read (a hostile Proxy).
 */
function safeEntries(fields: unknown): unknown[] {
  if (fields === null || typeof fields !== 'object') return [];
  let keys: string[];
  try {
    keys = Object.keys(fields);
  } catch {
    return [];
  }
  const out: unknown[] = new Array(keys.length * 2);
  for (let i = 0; i < keys.length; i++) {
    const k = keys[i]!;
    out[2 * i] = k;
    try {
      out[2 * i + 1] = (fields as Record<string, unknown>)[k];
    } catch {
      out[2 * i + 1] = UNREADABLE;
    }
  }
  return out;
}

/**
 * What one valid event name allows, worked out once: its catalogue entry (none for an
 * application's own event), its required fields, and each accepted field with its rule (common
 * fields first, as the checks below; an event's own field only if auditrace does not own the
 * name). A record's fields are then one table lookup each.
 */
interface EventRules {
  spec: EventSpec | undefined;
  required: readonly string[];
  fields: ReadonlyMap<string, FieldSpec | { type: 'object' }>;
}

const RULES_MAX = 1000;
const rulesByName = new Map<string, EventRules>();

function rulesFor(name: string): EventRules {
  let rules = rulesByName.get(name);
  if (rules === undefined) {
    // Own properties only: `constructor` or `toString` must not find Object.prototype's.
    const spec = Object.hasOwn(catalogue, name) ? (catalogue as Record<string, EventSpec>)[name] : undefined;
    const fields = new Map<string, FieldSpec | { type: 'object' }>();
    for (const [k, rule] of Object.entries(commonFields)) fields.set(k, rule);
    const required: string[] = [];
    if (spec) {
      for (const [k, rule] of Object.entries(spec.fields)) {
        if (rule.required) required.push(k);
        if (!fields.has(k) && !reservedFields.has(k)) fields.set(k, rule);
      }
    }
    rules = { spec, required, fields };
    // Application event names are the application's; still, never an unbounded table.
    if (rulesByName.size >= RULES_MAX) rulesByName.clear();
    rulesByName.set(name, rules);
  }
  return rules;
}

/**
 * Builds one audit record: the fixed head (time, ids, event, outcome, severity, who, where), the
 * event's own fields, `context` and `error.*` (the line writes them in RFC 8785 key order, whatever
 * the order here). Never throws and never drops the event:
 * a field that breaks the catalogue's rules is left out and named in `audit.problems`, so the
 * record of what happened is written even when the call was wrong.
 */
/** The one free-text field: what another service or an exception said (lib/audit/scrub.ts). */
const FREE_TEXT = 'error.message';

export function buildRecord(eventName: string, input: unknown, ambient: Ambient,
  isRedacted: (key: string) => boolean = () => false): BuiltRecord {
  const problems: string[] = [];
  let name = eventName;
  let rules = typeof name === 'string' ? rulesByName.get(name) : undefined;
  if (rules === undefined) {
    if (typeof name !== 'string' || !EVENT_NAME.test(name) || name.length > 64) {
      problems.push(`event.name: ${describeName(name)} is not lower_snake_case of at most 64 characters`);
      name = 'invalid_event';
    }
    rules = rulesFor(name);
  }
  let spec = rules.spec;
  if (spec?.internal && !ambient.internal) {
    // An application must not be able to forge auditrace's own access or TLS records.
    problems.push(`event.name: ${name} is written by auditrace itself`);
    name = 'invalid_event';
    rules = rulesFor(name);
    spec = undefined;
  }
  // The event's fields go straight into the record (the line is written in RFC 8785 key order
  // whatever the order here). No key reaching it can be `__proto__`: catalogue fields are fixed
  // names, an application's must match FIELD_NAME, and auditrace's own are in reservedFields.
  const record: Record<string, unknown> = {
    time: ambient.time,
    'audit.id': ambient.auditId,
    'event.name': name,
    'event.outcome': undefined,
    severity: undefined,
  };
  let outcome: unknown = ambient.outcome ?? spec?.outcome ?? 'success';
  let severity: unknown = ambient.severity ?? spec?.severity ?? 'INFO';

  const entries = safeEntries(input);
  for (let e = 0; e < entries.length; e += 2) {
    const key = entries[e] as string;
    const value = entries[e + 1];
    if (value === undefined) continue;
    if (value === UNREADABLE) {
      problems.push(`${key.slice(0, 64)}: could not be read (its getter threw)`);
      continue;
    }
    const rule = rules.fields.get(key);
    if (rule !== undefined) {
      const p = typeProblem(key, value, rule);
      if (p) problems.push(p);
      else record[key] = key === FREE_TEXT && typeof value === 'string' ? scrubSecrets(value, isRedacted, ambient.keepChars) : value;
      continue;
    }
    if (!spec && (key === 'event.outcome' || key === 'severity')) {
      // Only an application's own events choose these; a catalogue event's are fixed.
      if (key === 'event.outcome') outcome = value;
      else severity = value;
      continue;
    }
    if (reservedFields.has(key)) {
      problems.push(`${key}: set by auditrace, not by the application`);
      continue;
    }
    if (spec) {
      const fieldSpec = Object.hasOwn(spec.fields, key) ? spec.fields[key] : undefined;
      if (!fieldSpec) {
        problems.push(`${key.slice(0, 64)}: not a field of ${name}`);
        continue;
      }
      const p = typeProblem(key, value, fieldSpec);
      if (p) problems.push(p);
      else record[key] = key === FREE_TEXT && typeof value === 'string' ? scrubSecrets(value, isRedacted, ambient.keepChars) : value;
    } else if (!FIELD_NAME.test(key) || key.length > 64) {
      problems.push(`${JSON.stringify(key.slice(0, 64))}: not a dotted lower_snake_case field name`);
    } else if (isRedacted(key)) {
      // An application's own field named like a secret is refused, not written redacted:
      // the name alone says the call is carrying something it must not.
      problems.push(`${key}: a deny-listed name (secrets are never recorded)`);
    } else if (!isScalarOrStrings(value)) {
      problems.push(`${key}: expected a string, number, boolean or array of strings`);
    } else {
      record[key] = key === FREE_TEXT && typeof value === 'string' ? scrubSecrets(value, isRedacted, ambient.keepChars) : value;
    }
  }
  for (const key of rules.required) {
    if (!Object.hasOwn(record, key)) problems.push(`${key}: required by ${name}, missing`);
  }
  if (!OUTCOMES.includes(outcome as Outcome)) {
    problems.push('event.outcome: expected success|failure');
    outcome = 'success';
  }
  if (!SEVERITIES.includes(severity as Severity)) {
    problems.push('severity: expected INFO|WARN|ERROR|CRITICAL');
    severity = 'INFO';
  }

  record['event.outcome'] = outcome;
  record.severity = severity;
  if (ambient.clientAddress) record['client.address'] = ambient.clientAddress;
  if (ambient.requestId) record['request.id'] = ambient.requestId;
  if (ambient.traceId) record.trace_id = ambient.traceId;
  if (ambient.spanId) record.span_id = ambient.spanId;
  record['service.name'] = ambient.identity['service.name'];
  record['service.instance.id'] = ambient.identity['service.instance.id'];
  if (ambient.identity['k8s.pod.name']) record['k8s.pod.name'] = ambient.identity['k8s.pod.name'];
  if (problems.length > 0) record['audit.problems'] = problems;
  return { record, problems };
}
