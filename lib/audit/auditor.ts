import { context, logs, metrics, ROOT_CONTEXT, SeverityNumber, trace } from '@opentelemetry/api';
import type { Attributes, Context, Span } from '@opentelemetry/api';
import { formatConfigError, parseConfig } from '../config';
import type { Config } from '../config';
import { RateLimitedWarnings, writeLine } from '../diagnostics';
import { processIdentity } from '../identity';
import { requestFromContext } from '../request-context';
import { current } from '../start';
import { onFinalExit } from '../shutdown';
import { version } from '../version';
import { catalogue, functionName } from './catalogue';
import type { AuditFunctions, EventName, Outcome, Severity } from './catalogue';
import { rfc3339Now, uuidv7 } from './ids';
import { buildRecord } from './record';
import { openSink } from './sink';
import type { AuditSink } from './sink';
import { appliedLimits, createRedactor, toJsonLine, toJsonLineCanonical } from './serialize';
import { accessLine, accessRecordFields } from './access-line';
import type { AccessFields } from './access-line';
import { HashChain, readPreviousChain } from './chain';
import type { SerializeLimits } from './serialize';

/** Free-form fields: dropped first when a record is over the size limit. */
const FREE_FORM: readonly string[] = Object.freeze(['context']);

/** Distinct client addresses one process labels failure metrics with. */
const MAX_ADDRESSES = 1000;

const SEVERITY_NUMBER: Record<string, SeverityNumber> = {
  INFO: SeverityNumber.INFO, WARN: SeverityNumber.WARN, ERROR: SeverityNumber.ERROR, CRITICAL: SeverityNumber.FATAL,
};

/** Keys that stay off spans: free text and free-form data may carry what a span must not. */
const NOT_ON_SPANS = new Set(['context', 'error.message', 'audit.problems', 'time', 'trace_id', 'span_id', 'service.name', 'service.instance.id', 'k8s.pod.name']);

/**
 * Writes audit records: builds the record, serialises it to one line, appends it synchronously to
 * the durable destination, then links it to the active span and (optionally) emits it over OTLP.
 * Set up on first use, so an app that never audits opens no file.
 */
export class Auditor {
  private sink: AuditSink | undefined;
  private limits!: SerializeLimits;
  private isRedacted!: (key: string) => boolean;
  private config!: Readonly<Config>;
  private identity!: { 'service.name': string; 'service.instance.id': string; 'k8s.pod.name'?: string };
  private readonly warnings = new RateLimitedWarnings(60_000);
  private internalErrors = 0;
  private chain: HashChain | undefined;
  private events: Map<string, { attrs: Record<string, string>; n: number }> | undefined;
  /** The entries of `events` without address, route, status or token failure, by name and outcome. */
  private readonly plainEvents = new Map<string, Map<string, { attrs: Record<string, string>; n: number }>>();
  private readonly addresses = new Set<string>();
  /** The attributes `countParts` looked up last (status as given), and their entry. */
  private lastCounted: { name: string; outcome: string; address: string | undefined; route: string | undefined;
    status: unknown; tokenFailure: string | undefined; entry: { n: number } } | undefined;

  private init(): void {
    const started = current();
    if (started) {
      this.config = started.config;
    } else {
      // Used without the preload: the same variables, reported once here.
      const parsed = parseConfig(process.env);
      for (const e of parsed.errors) writeLine(formatConfigError(e));
      this.config = parsed.config;
    }
    const id = processIdentity(this.config);
    this.identity = {
      'service.name': String(id['service.name']),
      'service.instance.id': String(id['service.instance.id']),
      ...(id['k8s.pod.name'] ? { 'k8s.pod.name': String(id['k8s.pod.name']) } : {}),
    };
    const a = this.config.audit;
    this.limits = { maxFieldBytes: a.maxFieldBytes, maxRecordBytes: a.maxRecordBytes, maxDepth: 8, maxKeys: 200 };
    this.isRedacted = createRedactor(a.redactKeys);
    this.sink = openSink({
      destination: a.destination,
      fsync: a.fsync,
      fsyncIntervalMs: a.fsyncIntervalMs,
      maxFileBytes: a.maxFileBytes,
      maxFiles: a.maxFiles,
      bufferRecords: a.bufferRecords,
      retryIntervalMs: 1000,
      onError: (m) => writeLine(`auditrace: error: ${m}`),
      onRecovered: (m) => writeLine(`auditrace: ${m}`),
    });
    this.registerMetrics();
    this.startChain();
    // On every way out that runs JS at all (exit, or our re-raised SIGTERM): the chain's end and a
    // final fsync. A SIGKILL leaves the chain open, which `auditrace verify` reports as such.
    onFinalExit(() => {
      this.writePending();
      context.with(ROOT_CONTEXT, () => this.emit('audit_chain_end', { 'audit.checkpoint.records': this.chain?.nextSeq ?? 0 }, {}));
      this.sink?.close();
    });
  }

  /** Chain records belong to the process, not to whichever request happened to call first. */
  private startChain(): void {
    context.with(ROOT_CONTEXT, () => this.writeChainStart());
  }

  private writeChainStart(): void {
    const a = this.config.audit;
    const previous = a.destination === 'stdout' ? undefined : readPreviousChain(a.destination, a.hmacKey);
    this.chain = new HashChain(uuidv7(), a.hmacKey, previous);
    this.emit('audit_chain_start', {
      'audit.chain.alg': this.chain.alg,
      'process.pid': process.pid,
      ...(previous ? { 'audit.chain.previous': previous.chain, 'audit.chain.previous_seq': previous.seq } : {}),
    }, {});
    if (a.checkpointIntervalMs > 0) {
      setInterval(() => this.emit('audit_checkpoint', {
        'audit.checkpoint.records': this.chain?.nextSeq ?? 0,
        'audit.checkpoint.interval_ms': a.checkpointIntervalMs,
      }, {}), a.checkpointIntervalMs).unref();
    }
  }

  private registerMetrics(): void {
    const meter = metrics.getMeter('auditrace', version);
    const sink = () => this.sink?.stats();
    // Counted here and observed at collection: one Map lookup per record instead of the SDK's
    // attribute hashing on every add (measured ~1.5 µs of a record's cost).
    const counts = new Map<string, { attrs: Record<string, string>; n: number }>();
    this.events = counts;
    meter.createObservableCounter('auditrace.audit.events', {
      description: 'Audit events by name and outcome; failures also by client address (at most '
        + `${MAX_ADDRESSES} distinct addresses per process, the rest as "other")`,
      unit: '{event}',
    }).addCallback((r) => { for (const c of counts.values()) r.observe(c.n, c.attrs); });
    meter.createObservableCounter('auditrace.audit.records', {
      description: 'Audit records written to the durable destination', unit: '{record}',
    }).addCallback((r) => { const s = sink(); if (s) r.observe(s.written); });
    meter.createObservableCounter('auditrace.audit.write_failures', {
      description: 'Failed writes to the audit destination (records are buffered and retried)', unit: '{write}',
    }).addCallback((r) => { const s = sink(); if (s) r.observe(s.writeFailures); });
    meter.createObservableCounter('auditrace.audit.dropped', {
      description: 'Audit records lost because the destination failed and the memory buffer was full', unit: '{record}',
    }).addCallback((r) => { const s = sink(); if (s) r.observe(s.dropped); });
    meter.createObservableUpDownCounter('auditrace.audit.buffered', {
      description: 'Audit records held in memory waiting for the destination', unit: '{record}',
    }).addCallback((r) => { const s = sink(); if (s) r.observe(s.buffered); });
  }

  private pending: (() => void)[] = [];
  private pendingScheduled = false;

  /**
   * For auditrace's own record of something that has already happened and that nobody waits on (a
   * response that has been sent): `record` (which calls `emit`) runs at the end of this event-loop
   * turn together with the turn's other such records, and their lines go out in as few write(2)s
   * as whole lines allow; on every way out that runs JS (exit, an uncaught exception, our
   * re-raised signal) first. Measured on the hello-world server at saturation (12 alternated rounds):
   * 162 → 129 µs of CPU per request against writing each access record inside `res.end()`. The
   * application's `audit.*()` calls never come here: their record is written before they return.
   */
  later(record: () => void): void {
    try {
      if (!this.sink) this.init();
      this.pending.push(record);
      if (!this.pendingScheduled) {
        this.pendingScheduled = true;
        setImmediate(this.writePendingNow);
      }
    } catch (err) {
      this.internalErrors++;
      this.warnings.warn('internal', `audit record could not be queued (${err instanceof Error ? err.message : String(err)}); ${this.internalErrors} so far`);
    }
  }

  private readonly writePendingNow = (): void => this.writePending();

  private writePending(): void {
    this.pendingScheduled = false;
    const list = this.pending;
    if (list.length === 0) return;
    this.pending = [];
    this.sink?.cork();
    try {
      for (const record of list) {
        try {
          record();
        } catch (err) {
          this.internalErrors++;
          this.warnings.warn('internal', `audit record could not be written (${err instanceof Error ? err.message : String(err)}); ${this.internalErrors} so far`);
        }
      }
    } finally {
      this.sink?.uncork();
    }
  }

  /** Writes one record; returns its `audit.id` ('' only if auditrace itself failed). Never throws. */
  /** `own` is set only by auditrace's own records (access, TLS): the application's calls never pass it. */
  /** `own.time` is when the event happened, when that was before the record could be written. */
  emit(eventName: string, fields: unknown, own?: { outcome?: Outcome; severity?: Severity; time?: string; context?: Context }): string {
    try {
      if (!this.sink) this.init();
      // auditrace's own records may name their request's context rather than run in it (a
      // `context.with` per access record copies the async context frame).
      const active = own?.context ?? context.active();
      const span = trace.getSpan(active);
      const sc = span?.spanContext();
      const valid = sc !== undefined && sc.traceId !== '00000000000000000000000000000000';
      const request = requestFromContext(active);
      const { record, problems } = buildRecord(eventName, fields, {
        time: own?.time ?? rfc3339Now(),
        auditId: uuidv7(),
        traceId: valid ? sc.traceId : undefined,
        spanId: valid ? sc.spanId : undefined,
        requestId: request?.requestId,
        clientAddress: request?.clientAddress,
        identity: this.identity,
        keepChars: this.limits.maxFieldBytes,
        outcome: own?.outcome,
        severity: own?.severity,
        internal: own !== undefined,
      }, this.isRedacted);
      if (request && record['event.outcome'] === 'failure'
        && (String(record['event.name']).startsWith('authn_') || record['event.name'] === 'authz_fail')) {
        request.authFailureRecorded = true;
      }
      const chain = this.chain;
      if (chain) {
        chain.stamp(record);
        // The chain's own records are signed: with the key, the times `verify --live` trusts and
        // the chain's start and end cannot be forged without it.
        if (eventName === 'audit_chain_start' || eventName === 'audit_checkpoint' || eventName === 'audit_chain_end') {
          const mac = chain.mac(record);
          if (mac) record['audit.checkpoint.mac'] = mac;
        }
      }
      // The chain hashes the record as written (after sanitising and truncation), which is what
      // a verifier will read back from the file or the archive.
      if (chain) {
        const written = toJsonLineCanonical(record, this.limits, this.isRedacted, FREE_FORM);
        // `canonical` is the line itself without its newline unless the line had to differ from
        // RFC 8785 (then it is the record parsed back and canonicalised). A line the sink wrote
        // on its own is hashed in the bytes it was written from (encoded once for both).
        const sink = this.sink!;
        sink.write(written.line);
        chain.commitCanonical((written.lineIsCanonical ? sink.lastLineBytes() : undefined) ?? written.canonical);
      } else {
        this.sink!.write(toJsonLine(record, this.limits, this.isRedacted, FREE_FORM));
      }
      if (problems.length > 0) {
        this.warnings.warn(`problems:${record['event.name']}`,
          `audit ${String(record['event.name'])}: ${problems.join('; ')} (the record was written with audit.problems)`);
      }
      this.count(record);
      // The access record repeats what the server span already carries: no span event for it
      // (measured: ~15 more attributes to serialise per request).
      if (span?.isRecording() && eventName !== 'http_request') this.linkToSpan(span, record);
      if (this.config.audit.otlp) this.emitLog(record, active);
      return record['audit.id'] as string;
    } catch (err) {
      this.internalErrors++;
      this.warnings.warn('internal', `audit record could not be written (${err instanceof Error ? err.message : String(err)}); ${this.internalErrors} so far`);
      return '';
    }
  }

  /**
   * The access record of one request (`http_request`): from the fixed template when its values
   * allow (lib/audit/access-line.ts), else as any other record. Never throws.
   */
  access(fields: AccessFields, own: { outcome: Outcome; severity: Severity; time?: string | undefined; context: Context }): void {
    try {
      if (!this.sink) this.init();
      const chain = this.chain;
      const active = own.context;
      const sc = trace.getSpan(active)?.spanContext();
      const valid = sc !== undefined && sc.traceId !== '00000000000000000000000000000000';
      const request = requestFromContext(active);
      const limits = appliedLimits(this.limits);
      const line = accessLine(fields, {
        time: own.time ?? rfc3339Now(),
        auditId: uuidv7(),
        outcome: own.outcome,
        severity: own.severity,
        traceId: valid ? sc.traceId : undefined,
        spanId: valid ? sc.spanId : undefined,
        requestId: request?.requestId,
        clientAddress: request?.clientAddress,
        identity: this.identity,
        chain: chain && { id: chain.id, seq: chain.nextSeq, prev: chain.previous },
      }, limits.maxFieldBytes, limits.maxRecordBytes);
      if (line === undefined) {
        this.emit('http_request', accessRecordFields(fields), own);
        return;
      }
      // Hashed in the bytes the sink wrote it from; when it was corked (an access record waits
      // for the end of its turn) or buffered, as a slice of the text (a separate `line + '\n'`
      // would be flattened again by the sink).
      const text = line + '\n';
      const sink = this.sink!;
      sink.write(text);
      chain?.commitCanonical(sink.lastLineBytes() ?? text.slice(0, -1));
      this.countParts('http_request', own.outcome, request?.clientAddress || undefined, fields.route || undefined, fields.status, undefined);
      if (this.config.audit.otlp) this.emitLog(JSON.parse(line) as Record<string, unknown>, active);
    } catch (err) {
      this.internalErrors++;
      this.warnings.warn('internal', `audit record could not be written (${err instanceof Error ? err.message : String(err)}); ${this.internalErrors} so far`);
    }
  }

  /**
   * The security metric alerting runs on. Client addresses are labels only on failures (that is
   * where scanning and credential attacks show), and only for the first MAX_ADDRESSES distinct
   * ones, which bounds the series a process can create.
   */
  private count(record: Record<string, unknown>): void {
    const name = record['event.name'] as string;
    // A failed TLS handshake or an unparseable request has no request yet, so no resolved client:
    // its peer is the address.
    const addr = record['client.address']
      ?? (name === 'tls_handshake_fail' || name === 'http_client_error' ? record['network.peer.address'] : undefined);
    this.countParts(name, record['event.outcome'] as string, addr, record['http.route'], record['http.response.status_code'], record['token.failure']);
  }

  private countParts(name: string, outcome: string, addr: unknown, r: unknown, status: unknown, tf: unknown): void {
    if (!this.events) return;
    if (name.startsWith('audit_c')) return;
    let address: string | undefined;
    if (outcome === 'failure' && typeof addr === 'string') {
      if (this.addresses.has(addr) || this.addresses.size < MAX_ADDRESSES) {
        this.addresses.add(addr);
        address = addr;
      } else {
        address = 'other';
      }
    }
    const route = typeof r === 'string' && r.length <= 128 ? r : name === 'http_request' && status === 404 ? 'unmatched' : undefined;
    const statusText = typeof status === 'number' ? String(status) : undefined;
    const tokenFailure = typeof tf === 'string' ? tf : undefined;
    const plain = address === undefined && route === undefined && statusText === undefined && tokenFailure === undefined;
    if (plain) {
      // Most records are counted by name and outcome alone: found without building a key.
      const entry = this.plainEvents.get(name)?.get(outcome);
      if (entry !== undefined) {
        entry.n++;
        return;
      }
    }
    // A server's records mostly repeat the last one's attributes: found without building a key.
    const last = this.lastCounted;
    if (last !== undefined && last.name === name && last.outcome === outcome && last.address === address
      && last.route === route && last.status === status && last.tokenFailure === tokenFailure) {
      last.entry.n++;
      return;
    }
    // One part per attribute present, tagged: no two attribute sets share a key.
    let key = name + '\u0000' + outcome;
    if (address !== undefined) key += '\u0000a' + address;
    if (route !== undefined) key += '\u0000r' + route;
    if (statusText !== undefined) key += '\u0000s' + statusText;
    if (tokenFailure !== undefined) key += '\u0000t' + tokenFailure;
    const seen = this.events.get(key);
    if (seen) {
      seen.n++;
      this.lastCounted = { name, outcome, address, route, status, tokenFailure, entry: seen };
      return;
    }
    const attrs: Record<string, string> = { 'event.name': name, 'event.outcome': outcome };
    if (address !== undefined) attrs['client.address'] = address;
    if (route !== undefined) attrs['http.route'] = route;
    if (statusText !== undefined) attrs['http.response.status_code'] = statusText;
    if (tokenFailure !== undefined) attrs['token.failure'] = tokenFailure;
    const entry = { attrs, n: 1 };
    this.events.set(key, entry);
    this.lastCounted = { name, outcome, address, route, status, tokenFailure, entry };
    if (plain) {
      let byOutcome = this.plainEvents.get(name);
      if (byOutcome === undefined) this.plainEvents.set(name, byOutcome = new Map());
      byOutcome.set(outcome, entry);
    }
  }

  private linkToSpan(span: Span, record: Record<string, unknown>): void {
    const attrs: Attributes = {};
    for (const [k, v] of Object.entries(record)) {
      if (NOT_ON_SPANS.has(k) || k === 'event.name') continue;
      if (typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean') attrs[k] = v;
      else if (Array.isArray(v)) attrs[k] = v as string[];
    }
    span.addEvent(record['event.name'] as string, attrs);
    span.setAttribute('audit.event.name', record['event.name'] as string);
    if (typeof record['user.id'] === 'string') span.setAttribute('user.id', record['user.id']);
  }

  private emitLog(record: Record<string, unknown>, active: Context): void {
    const { time, trace_id: _t, span_id: _s, ...attributes } = record;
    logs.getLogger('auditrace.audit', version).emit({
      context: active,
      eventName: record['event.name'] as string,
      severityNumber: SEVERITY_NUMBER[record.severity as string] ?? SeverityNumber.INFO,
      severityText: record.severity as string,
      body: record['event.name'] as string,
      attributes: JSON.parse(toJsonLine(attributes, this.limits, this.isRedacted, FREE_FORM)) as Attributes,
      timestamp: new Date(time as string),
    });
  }

  flush(): void {
    try {
      this.writePending();
      this.sink?.flush();
    } catch {
      // flush is best effort; the sink counts its own failures
    }
  }

  stats() {
    return this.sink?.stats();
  }
}

let auditor: Auditor | undefined;
export function getAuditor(): Auditor {
  auditor ??= new Auditor();
  return auditor;
}

/** The audit API: one function per catalogue event, plus `event()` for the application's own. */
export type Audit = AuditFunctions & {
  /** An application-defined event, validated by the same rules. Returns the record's `audit.id`. */
  event(name: string, fields?: Record<string, unknown>): string;
  /** Retries buffered records and syncs the file now. */
  flush(): void;
};

export const audit: Audit = (() => {
  const api: Record<string, unknown> = {
    event: (name: string, fields?: Record<string, unknown>) => getAuditor().emit(name, fields ?? {}),
    flush: () => getAuditor().flush(),
  };
  for (const name of Object.keys(catalogue) as EventName[]) {
    if ((catalogue as Record<string, { internal?: boolean }>)[name]!.internal) continue;
    api[functionName(name)] = (fields: unknown) => getAuditor().emit(name, fields);
  }
  return Object.freeze(api) as Audit;
})();
