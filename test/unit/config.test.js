'use strict';
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { parseConfig, variables, formatConfigError } = require('../../dist/lib/config.js');
const { envTable } = require('../../scripts/docs.js');

const ROOT = path.join(__dirname, '..', '..');
const names = variables.map((v) => v.name);

describe('configuration', () => {
  describe('one table of variables', () => {
    it('the README table is exactly the table generated from lib/config.ts', () => {
      const readme = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8');
      const m = readme.match(/<!-- env-table:start -->\n([\s\S]*?)\n<!-- env-table:end -->/);
      assert.ok(m, 'README.md has the env-table markers');
      assert.equal(m[1], envTable());
    });

    it('the parser reads every documented variable and nothing else', () => {
      const { read } = parseConfig({});
      assert.deepEqual([...read].sort(), [...names].sort());
    });

    it('no module reads an OTEL_/AUDITRACE_ variable that the table does not document', () => {
      const found = new Set();
      const walk = (dir) => {
        for (const f of fs.readdirSync(dir, { withFileTypes: true })) {
          const p = path.join(dir, f.name);
          if (f.isDirectory()) walk(p);
          else if (p.endsWith('.ts')) {
            for (const [name] of fs.readFileSync(p, 'utf8').matchAll(/\b(?:OTEL|AUDITRACE)_[A-Z0-9_]*[A-Z0-9]\b/g)) found.add(name);
          }
        }
      };
      walk(path.join(ROOT, 'lib'));
      // Names built from a template (`OTEL_${S}_EXPORTER`) appear as fragments; skip the prefixes.
      const undocumented = [...found].filter((n) => !names.includes(n) && !/^OTEL_(BSP|BLRP|EXPORTER_OTLP)$/.test(n));
      assert.deepEqual(undocumented, []);
    });

    it('names are unique', () => {
      assert.equal(new Set(names).size, names.length);
    });
  });

  describe('defaults', () => {
    const { config, errors } = parseConfig({});
    it('an empty environment is valid', () => assert.deepEqual(errors, []));
    it('exports all three signals over OTLP/HTTP protobuf to localhost:4318', () => {
      assert.deepEqual(config.traces.exporters, ['otlp']);
      assert.equal(config.traces.endpoint, 'http://localhost:4318/v1/traces');
      assert.equal(config.metrics.endpoint, 'http://localhost:4318/v1/metrics');
      assert.equal(config.logs.endpoint, 'http://localhost:4318/v1/logs');
      assert.equal(config.traces.protocol, 'http/protobuf');
      assert.equal(config.traces.timeoutMs, 10000);
    });
    it('uses the spec batch defaults', () => {
      assert.deepEqual(config.traces.batch, { scheduleDelayMs: 5000, exportTimeoutMs: 30000, maxQueueSize: 2048, maxExportBatchSize: 512 });
      assert.deepEqual(config.logs.batch, { scheduleDelayMs: 1000, exportTimeoutMs: 30000, maxQueueSize: 2048, maxExportBatchSize: 512 });
    });
    it('samples parent-based always-on and propagates tracecontext and baggage', () => {
      assert.deepEqual(config.sampler, { name: 'parentbased_always_on', ratio: 1 });
      assert.deepEqual(config.propagators, ['tracecontext', 'baggage']);
    });
    it('shuts down within 5 s', () => assert.equal(config.shutdownTimeoutMs, 5000));
    it('accepts an HMAC key (a Buffer inside the frozen config) and never shows it', () => {
      const { config, errors } = parseConfig({ AUDITRACE_AUDIT_HMAC_KEY: 'a-long-enough-secret-key' });
      assert.deepEqual(errors, []);
      assert.equal(config.audit.hmacKey.toString(), 'a-long-enough-secret-key');
      const short = parseConfig({ AUDITRACE_AUDIT_HMAC_KEY: 'short' });
      assert.equal(short.config.audit.hmacKey, undefined);
      assert.ok(!JSON.stringify(short.errors).includes('short'), 'the rejected key is not echoed');
    });

    it('is frozen, deeply', () => {
      assert.ok(Object.isFrozen(config));
      assert.ok(Object.isFrozen(config.traces.headers));
      assert.throws(() => { 'use strict'; config.traces.endpoint = 'x'; });
    });
  });

  describe('standard variables as the specification defines them', () => {
    it('appends /v1/<signal> to the base endpoint, once, whatever its trailing slash', () => {
      const { config } = parseConfig({ OTEL_EXPORTER_OTLP_ENDPOINT: 'https://c.example:4318/base/' });
      assert.equal(config.traces.endpoint, 'https://c.example:4318/base/v1/traces');
    });
    it('uses a signal endpoint as given', () => {
      const { config } = parseConfig({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://a:4318', OTEL_EXPORTER_OTLP_LOGS_ENDPOINT: 'http://b:9999/custom' });
      assert.equal(config.logs.endpoint, 'http://b:9999/custom');
      assert.equal(config.traces.endpoint, 'http://a:4318/v1/traces');
    });
    it('merges signal headers over base headers and percent-decodes values', () => {
      const { config } = parseConfig({ OTEL_EXPORTER_OTLP_HEADERS: 'a=1,authorization=Bearer%20x', OTEL_EXPORTER_OTLP_TRACES_HEADERS: 'a=2' });
      assert.deepEqual({ ...config.traces.headers }, { a: '2', authorization: 'Bearer x' });
      assert.deepEqual({ ...config.logs.headers }, { a: '1', authorization: 'Bearer x' });
    });
    it('takes signal timeout, protocol and compression over the base ones', () => {
      const { config } = parseConfig({
        OTEL_EXPORTER_OTLP_TIMEOUT: '2000', OTEL_EXPORTER_OTLP_METRICS_TIMEOUT: '500',
        OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json', OTEL_EXPORTER_OTLP_LOGS_PROTOCOL: 'http/protobuf',
        OTEL_EXPORTER_OTLP_COMPRESSION: 'gzip',
      });
      assert.equal(config.traces.timeoutMs, 2000);
      assert.equal(config.metrics.timeoutMs, 500);
      assert.equal(config.traces.protocol, 'http/json');
      assert.equal(config.logs.protocol, 'http/protobuf');
      assert.equal(config.metrics.compression, 'gzip');
    });
    it('turns a signal off with `none` and accepts console', () => {
      const { config } = parseConfig({ OTEL_TRACES_EXPORTER: 'none', OTEL_LOGS_EXPORTER: 'console,otlp' });
      assert.deepEqual(config.traces.exporters, []);
      assert.deepEqual(config.logs.exporters, ['console', 'otlp']);
    });
    it('reads the sampler and its ratio', () => {
      const { config } = parseConfig({ OTEL_TRACES_SAMPLER: 'parentbased_traceidratio', OTEL_TRACES_SAMPLER_ARG: '0.25' });
      assert.deepEqual(config.sampler, { name: 'parentbased_traceidratio', ratio: 0.25 });
    });
    it('reads propagators, `none` meaning none', () => {
      assert.deepEqual(parseConfig({ OTEL_PROPAGATORS: 'b3,tracecontext' }).config.propagators, ['b3', 'tracecontext']);
      assert.deepEqual(parseConfig({ OTEL_PROPAGATORS: 'none' }).config.propagators, []);
    });
    it('reads enabled and disabled instrumentation lists', () => {
      const { config } = parseConfig({ OTEL_NODE_ENABLED_INSTRUMENTATIONS: 'http, express', OTEL_NODE_DISABLED_INSTRUMENTATIONS: 'express' });
      assert.deepEqual(config.instrumentations, { enabled: ['http', 'express'], disabled: ['express'], layerSpans: false });
    });
    it('leaves framework layer spans off unless AUDITRACE_LAYER_SPANS=true', () => {
      assert.equal(parseConfig({}).config.instrumentations.layerSpans, false);
      assert.equal(parseConfig({ AUDITRACE_LAYER_SPANS: 'true' }).config.instrumentations.layerSpans, true);
    });
    it('treats an empty value as unset', () => {
      const { config, errors } = parseConfig({ OTEL_EXPORTER_OTLP_ENDPOINT: '', OTEL_TRACES_SAMPLER_ARG: ' ' });
      assert.deepEqual(errors, []);
      assert.equal(config.traces.endpoint, 'http://localhost:4318/v1/traces');
    });
    it('clamps the metric export timeout to the interval', () => {
      const { config } = parseConfig({ OTEL_METRIC_EXPORT_INTERVAL: '1000' });
      assert.equal(config.metrics.exportTimeoutMs, 1000);
    });
    it('reads resource attributes, percent-decoded', () => {
      const { config } = parseConfig({ OTEL_RESOURCE_ATTRIBUTES: 'deployment.environment.name=prod,team=a%2Cb' });
      assert.deepEqual({ ...config.resourceAttributes }, { 'deployment.environment.name': 'prod', team: 'a,b' });
    });
  });

  describe('invalid values: one error naming the variable, the value, the accepted form and the fallback', () => {
    const cases = [
      ['OTEL_TRACES_SAMPLER_ARG', 'abc', /a number from 0 to 1/, (c) => c.sampler.ratio === 1],
      ['OTEL_TRACES_SAMPLER_ARG', '1.5', /a number from 0 to 1/, (c) => c.sampler.ratio === 1],
      ['OTEL_EXPORTER_OTLP_ENDPOINT', '::nope', /absolute http/, (c) => c.traces.endpoint === 'http://localhost:4318/v1/traces'],
      ['OTEL_EXPORTER_OTLP_ENDPOINT', 'ftp://x', /absolute http/, (c) => c.traces.endpoint === 'http://localhost:4318/v1/traces'],
      ['OTEL_NODE_ENABLED_INSTRUMENTATIONS', 'http,nosuch', /instrumentation names.*"nosuch"/, (c) => c.instrumentations.enabled === undefined],
      ['OTEL_EXPORTER_OTLP_TIMEOUT', '-5', /integer from 1 to 2147483647/, (c) => c.traces.timeoutMs === 10000],
      ['OTEL_EXPORTER_OTLP_TRACES_TIMEOUT', '10s', /integer from 1 to 2147483647/, (c) => c.traces.timeoutMs === 10000],
      // Longer than Node's longest timer: Node would run it after 1 ms.
      ['OTEL_EXPORTER_OTLP_TIMEOUT', '3000000000', /integer from 1 to 2147483647/, (c) => c.traces.timeoutMs === 10000],
      ['OTEL_METRIC_EXPORT_INTERVAL', '3000000000', /integer from 1 to 2147483647/, (c) => c.metrics.intervalMs === 60000],
      ['AUDITRACE_SHUTDOWN_TIMEOUT_MS', '2147483648', /integer from 1 to 2147483647/, (c) => c.shutdownTimeoutMs === 5000],
      ['OTEL_BSP_SCHEDULE_DELAY', '9999999999', /integer from 0 to 2147483647/, (c) => c.traces.batch.scheduleDelayMs === 5000],
      ['OTEL_SDK_DISABLED', 'maybe', /`true` or `false`/, (c) => c.sdkDisabled === false],
      ['OTEL_EXPORTER_OTLP_PROTOCOL', 'grpc', /`http\/protobuf`, `http\/json`/, (c) => c.traces.protocol === 'http/protobuf'],
      ['OTEL_TRACES_SAMPLER', 'sometimes', /one of/, (c) => c.sampler.name === 'parentbased_always_on'],
      ['OTEL_EXPORTER_OTLP_HEADERS', 'novalue', /key=value/, (c) => Object.keys(c.traces.headers).length === 0],
      ['OTEL_LOG_LEVEL', 'loud', /one of/, (c) => c.logLevel === undefined],
      ['OTEL_BSP_MAX_QUEUE_SIZE', '0', /integer of at least 1/, (c) => c.traces.batch.maxQueueSize === 2048],
      ['OTEL_PROPAGATORS', 'w3c', /propagators/, (c) => c.propagators.length === 2],
      ['AUDITRACE_SHUTDOWN_TIMEOUT_MS', '-1', /integer/, (c) => c.shutdownTimeoutMs === 5000],
      ['AUDITRACE_LAYER_SPANS', 'yes', /`true` or `false`/, (c) => c.instrumentations.layerSpans === false],
      // Not an empty list (that would turn every instrumentation off): it names none.
      ['OTEL_NODE_ENABLED_INSTRUMENTATIONS', ',,,', /names none/, (c) => c.instrumentations.enabled === undefined],
    ];
    for (const [name, value, expected, fellBack] of cases) {
      it(`${name}=${JSON.stringify(value)}`, () => {
        const { config, errors } = parseConfig({ [name]: value });
        assert.equal(errors.length, 1, JSON.stringify(errors));
        assert.equal(errors[0].variable, name);
        assert.equal(errors[0].value, value);
        assert.match(errors[0].expected, expected);
        assert.ok(fellBack(config), 'falls back to the default');
        const line = formatConfigError(errors[0]);
        assert.match(line, new RegExp(`^auditrace: invalid ${name}=`));
        assert.match(line, /expected .*; using /);
      });
    }

    it('escapes a hostile value so it cannot forge a second line', () => {
      const { errors } = parseConfig({ OTEL_TRACES_SAMPLER_ARG: 'x\n\u001b[31mauditrace: all good' });
      const line = formatConfigError(errors[0]);
      assert.doesNotMatch(line, /[\n\r\u001b]/);
    });

    it('truncates a huge value in the message', () => {
      const { errors } = parseConfig({ OTEL_TRACES_SAMPLER_ARG: 'a'.repeat(100000) });
      assert.ok(formatConfigError(errors[0]).length < 400);
    });

    it('collects several errors at once', () => {
      const { errors } = parseConfig({ OTEL_TRACES_SAMPLER_ARG: 'abc', OTEL_EXPORTER_OTLP_TIMEOUT: '-5', AUDITRACE_STRICT: 'true' });
      assert.deepEqual(errors.map((e) => e.variable).sort(), ['OTEL_EXPORTER_OTLP_TIMEOUT', 'OTEL_TRACES_SAMPLER_ARG']);
    });
  });
});
