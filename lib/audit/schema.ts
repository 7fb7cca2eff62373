import { catalogue, commonFields } from './catalogue';
import type { EventSpec, FieldSpec } from './catalogue';

const SCHEMA_ID = 'https://auditrace.dev/schemas/audit-record.schema.json';

function fieldSchema(f: FieldSpec | { type: 'object'; description: string }): Record<string, unknown> {
  switch (f.type) {
    case 'string': return { type: 'string', description: f.description, ...('enum' in f && f.enum ? { enum: [...f.enum] } : {}) };
    case 'integer': return { type: 'integer', description: f.description };
    case 'number': return { type: 'number', description: f.description };
    case 'boolean': return { type: 'boolean', description: f.description };
    case 'string[]': return { type: 'array', items: { type: 'string' }, description: f.description };
    case 'object': return { type: 'object', description: f.description };
  }
}

/** The fields every record has, in the order they are written. */
const head: Record<string, Record<string, unknown>> = {
  time: { type: 'string', pattern: '^\\d{4}-\\d{2}-\\d{2}T\\d{2}:\\d{2}:\\d{2}\\.\\d{6}Z$', description: 'When the event was recorded: RFC 3339, UTC, microseconds.' },
  'audit.id': { type: 'string', pattern: '^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$', description: 'UUIDv7 of this record: unique and time-ordered.' },
  'event.name': { type: 'string', pattern: '^[a-z][a-z0-9]*(_[a-z0-9]+)*$', maxLength: 64, description: 'The event, from the catalogue or the application\'s own.' },
  'event.outcome': { enum: ['success', 'failure'], description: 'From the point of view of the application.' },
  severity: { enum: ['INFO', 'WARN', 'ERROR', 'CRITICAL'], description: 'As in the OWASP logging vocabulary.' },
  'client.address': { type: 'string', description: 'Original external client address, resolved through trusted proxies only.' },
  'request.id': { type: 'string', description: 'Request id: ours or a trusted peer\'s, never an untrusted client\'s.' },
  trace_id: { type: 'string', pattern: '^[0-9a-f]{32}$', description: 'Trace of the active span.' },
  span_id: { type: 'string', pattern: '^[0-9a-f]{16}$', description: 'The active span.' },
  'service.name': { type: 'string', description: 'Service that wrote the record.' },
  'service.instance.id': { type: 'string', description: 'Instance that wrote the record.' },
  'k8s.pod.name': { type: 'string', description: 'Pod that wrote the record, on Kubernetes.' },
  'audit.chain': { type: 'string', description: 'Hash chain of the writing process (one per process start).' },
  'audit.seq': { type: 'integer', minimum: 0, description: 'Position in the chain, from 0.' },
  'audit.prev': { type: 'string', pattern: '^[0-9a-f]{64}$', description: 'SHA-256 (or HMAC-SHA256) of the previous record\'s RFC 8785 canonical form.' },
  'audit.problems': { type: 'array', items: { type: 'string' }, description: 'Fields the application passed that broke the catalogue\'s rules (left out of the record).' },
  'audit.truncated': { type: 'boolean', description: 'Some value was truncated or dropped to respect the size limits.' },
};

/** JSON Schema (2020-12) of an audit record, generated from the catalogue. */
export function auditRecordSchema(): Record<string, unknown> {
  const common: Record<string, unknown> = Object.fromEntries(Object.entries(commonFields).map(([k, f]) => [k, fieldSchema(f)]));
  // Over the record size limit, the free-form context is replaced by a marker string.
  common.context = { anyOf: [fieldSchema(commonFields.context), { type: 'string', pattern: '^\\[dropped: ' }], description: commonFields.context.description };
  const perEvent = Object.entries(catalogue as Record<string, EventSpec>).map(([name, spec]) => {
    const own = Object.fromEntries(Object.entries(spec.fields).map(([k, f]) => [k, fieldSchema(f)]));
    const required = Object.entries(spec.fields).filter(([, f]) => f.required).map(([k]) => k);
    return {
      if: { properties: { 'event.name': { const: name } }, required: ['event.name'] },
      then: {
        properties: { ...(spec.varies ? {} : { 'event.outcome': { const: spec.outcome }, severity: { const: spec.severity } }), ...own },
        propertyNames: { enum: [...Object.keys(head), ...Object.keys(common), ...Object.keys(own)] },
        // A record whose call missed a field is still written, and says so in audit.problems.
        ...(required.length > 0 ? { anyOf: [{ required }, { required: ['audit.problems'] }] } : {}),
      },
    };
  });
  return {
    $schema: 'https://json-schema.org/draft/2020-12/schema',
    $id: SCHEMA_ID,
    title: 'auditrace audit record',
    description: 'One line of an auditrace audit log. Generated from lib/audit/catalogue.ts by `npm run docs`.',
    type: 'object',
    required: ['time', 'audit.id', 'event.name', 'event.outcome', 'severity', 'service.name', 'service.instance.id'],
    properties: { ...head, ...common },
    // An application's own events may add dotted lower_snake_case fields of simple types.
    additionalProperties: {
      anyOf: [{ type: 'string' }, { type: 'number' }, { type: 'boolean' }, { type: 'array', items: { type: 'string' } }],
    },
    propertyNames: { pattern: '^[a-z_][a-z0-9_]*(\\.[a-z][a-z0-9_]*)*$' },
    allOf: perEvent,
  };
}
