'use strict';
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { instrumentationNames, loadInstrumentations, selectInstrumentations, defaultOffInstrumentations, instrumentationTargets,
  presentInstrumentations, nodeModulesDirs } = require('../../dist/lib/instrumentations.js');

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

  it('the table of patched modules names exactly what each instrumentation hooks', () => {
    const { instrumentations } = loadInstrumentations(instrumentationNames);
    try {
      assert.deepEqual(Object.keys(instrumentationTargets).sort(), [...instrumentationNames].sort());
      for (const i of instrumentations) {
        const name = i.instrumentationName.replace('@opentelemetry/instrumentation-', '');
        const hooked = [...new Set(i.getModuleDefinitions().map((d) => d.name.replace(/\/promises$/, '')))].sort();
        assert.deepEqual([...instrumentationTargets[name]].sort(), hooked, name);
      }
    } finally {
      for (const i of instrumentations) i.disable();
    }
  });

  describe('the default set shrinks to what the app has installed', () => {
    let root;
    before(() => {
      root = fs.mkdtempSync(path.join(os.tmpdir(), 'auditrace-present-'));
      for (const m of ['express', '@redis/client', 'pg-pool']) {
        fs.mkdirSync(path.join(root, 'node_modules', m), { recursive: true });
        fs.writeFileSync(path.join(root, 'node_modules', m, 'package.json'), '{}');
      }
      fs.mkdirSync(path.join(root, 'node_modules', 'koa')); // a directory without package.json is no package
      fs.mkdirSync(path.join(root, 'app', 'src'), { recursive: true });
    });
    after(() => fs.rmSync(root, { recursive: true, force: true }));

    it('keeps built-in targets, channel/metric instrumentations and installed packages (any of their modules); drops the rest', () => {
      const dirs = nodeModulesDirs([path.join(root, 'app', 'src')], undefined);
      const on = presentInstrumentations(selectInstrumentations(undefined, []), dirs, {});
      assert.deepEqual(on.sort(), ['express', 'http', 'pg', 'redis', 'runtime-node', 'undici'].sort());
    });

    it('aws-lambda only inside Lambda; NODE_PATH is searched too', () => {
      const other = fs.mkdtempSync(path.join(os.tmpdir(), 'auditrace-present-np-'));
      try {
        const dirs = nodeModulesDirs([other], path.join(root, 'node_modules'));
        assert.ok(presentInstrumentations(['express'], dirs, {}).includes('express'));
        assert.deepEqual(presentInstrumentations(['aws-lambda'], dirs, { LAMBDA_TASK_ROOT: '/var/task', _HANDLER: 'index.handler' }), ['aws-lambda']);
        assert.deepEqual(presentInstrumentations(['aws-lambda'], dirs, {}), []);
      } finally {
        fs.rmSync(other, { recursive: true, force: true });
      }
    });

    it('walks up from each root to the file-system root, skipping node_modules themselves', () => {
      const dirs = nodeModulesDirs([path.join(root, 'app', 'src'), path.join(root, 'node_modules', 'express')], undefined);
      assert.equal(dirs[0], path.join(root, 'app', 'src', 'node_modules'));
      assert.ok(dirs.includes(path.join(root, 'node_modules')));
      assert.ok(dirs.includes(path.join(path.parse(root).root, 'node_modules')));
      assert.ok(!dirs.some((d) => d.endsWith(`node_modules${path.sep}node_modules`)));
      assert.equal(new Set(dirs).size, dirs.length);
    });
  });
});
