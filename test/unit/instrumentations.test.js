'use strict';
const assert = require('node:assert/strict');
const { instrumentationNames, loadInstrumentations, selectInstrumentations, defaultOffInstrumentations } = require('../../dist/lib/instrumentations.js');

describe('instrumentations', () => {
  it('our table names exactly the instrumentations of auto-instrumentations-node', () => {
    // Upstream's default set leaves out fs and host-metrics; everything else is in it.
    const { getNodeAutoInstrumentations } = require('@opentelemetry/auto-instrumentations-node');
    const saved = { e: process.env.OTEL_NODE_ENABLED_INSTRUMENTATIONS, d: process.env.OTEL_NODE_DISABLED_INSTRUMENTATIONS };
    delete process.env.OTEL_NODE_ENABLED_INSTRUMENTATIONS;
    delete process.env.OTEL_NODE_DISABLED_INSTRUMENTATIONS;
    try {
      const upstream = getNodeAutoInstrumentations().map((i) => i.instrumentationName.replace('@opentelemetry/instrumentation-', ''));
      for (const i of getNodeAutoInstrumentations()) i.disable();
      assert.deepEqual([...upstream, 'fs', 'host-metrics'].sort(), [...instrumentationNames].sort());
    } finally {
      if (saved.e !== undefined) process.env.OTEL_NODE_ENABLED_INSTRUMENTATIONS = saved.e;
      if (saved.d !== undefined) process.env.OTEL_NODE_DISABLED_INSTRUMENTATIONS = saved.d;
    }
  });

  it('every entry loads and constructs', () => {
    const { instrumentations, failed } = loadInstrumentations(instrumentationNames);
    for (const i of instrumentations) i.disable();
    assert.deepEqual(failed, []);
    assert.equal(instrumentations.length, instrumentationNames.length);
  });

  it('by default all but the noisy fs, dns, net and host-metrics', () => {
    const on = selectInstrumentations(undefined, []);
    for (const n of defaultOffInstrumentations) assert.ok(!on.includes(n), n);
    assert.ok(on.includes('http') && on.includes('express') && on.includes('undici'));
  });

  it('the enabled list replaces the default; the disabled list removes', () => {
    assert.deepEqual(selectInstrumentations(['http', 'fs'], []), ['http', 'fs']);
    assert.deepEqual(selectInstrumentations(['http', 'fs'], ['fs']), ['http']);
  });

  it('loads only what is asked for', () => {
    const { instrumentations } = loadInstrumentations(['http']);
    for (const i of instrumentations) i.disable();
    assert.deepEqual(instrumentations.map((i) => i.instrumentationName), ['@opentelemetry/instrumentation-http']);
  });
});
