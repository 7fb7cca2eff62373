'use strict';
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { instrumentationNames, instrumentationModules, loadInstrumentations, selectInstrumentations, defaultOffInstrumentations, instrumentationTargets,
  presentInstrumentations, nodeModulesDirs, packageOf, patchesOnlyPackages, deferInstrumentations } = require('../../dist/lib/instrumentations.js');

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

  it('every instrumentation but host-metrics is required by its literal name (so the bundle carries it)', () => {
    assert.deepEqual(Object.keys(instrumentationModules).sort(), instrumentationNames.filter((n) => n !== 'host-metrics').sort());
    for (const [name, load] of Object.entries(instrumentationModules)) {
      assert.match(load.toString(), new RegExp(`require\\(['"]@opentelemetry/instrumentation-${name.replace('.', '\\.')}['"]\\)`), name);
    }
  });

  it('every entry loads and constructs', () => {
    const { instrumentations, failed } = loadInstrumentations(instrumentationNames);
    for (const i of instrumentations) i.disable();
    assert.deepEqual(failed, []);
    assert.equal(instrumentations.length, instrumentationNames.length);
  });

  it('by default all but the noisy fs, dns, net and host-metrics, and router (nothing but layer spans)', () => {
    const on = selectInstrumentations(undefined, []);
    for (const n of defaultOffInstrumentations) assert.ok(!on.includes(n), n);
    assert.ok(!on.includes('router'));
    assert.ok(on.includes('http') && on.includes('express') && on.includes('undici'));
    assert.equal(on.length, instrumentationNames.length - defaultOffInstrumentations.length - 1);
  });

  it('with layer spans on, router is in the default set; a list that names it runs it either way', () => {
    const on = selectInstrumentations(undefined, [], true);
    assert.ok(on.includes('router') && on.includes('express'));
    for (const n of defaultOffInstrumentations) assert.ok(!on.includes(n), n);
    assert.deepEqual(selectInstrumentations(['http', 'router'], [], false), ['http', 'router']);
    assert.deepEqual(selectInstrumentations(undefined, ['router'], true).includes('router'), false);
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

  it('names the package of a bare specifier, and nothing for paths, URLs, built-ins and subpath imports', () => {
    assert.equal(packageOf('express'), 'express');
    assert.equal(packageOf('express/lib/router'), 'express');
    assert.equal(packageOf('@grpc/grpc-js'), '@grpc/grpc-js');
    assert.equal(packageOf('@smithy/core/dist/x.js'), '@smithy/core');
    for (const s of ['./express', '../pg', '/abs/node_modules/pg/index.js', 'node:http', 'file:///x/pg.js', '#internal', 'C:\\x\\pg', '@scope', '']) {
      assert.equal(packageOf(s), undefined, s);
    }
  });

  it('waits only for instrumentations that patch npm packages alone', () => {
    assert.ok(patchesOnlyPackages('express') && patchesOnlyPackages('pg') && patchesOnlyPackages('aws-sdk'));
    for (const n of ['http', 'undici', 'runtime-node', 'fs', 'aws-lambda', 'host-metrics']) assert.ok(!patchesOnlyPackages(n), n);
  });

  describe('deferred creation', () => {
    /** A module system in miniature: `require` on a prototype, and registerHooks with resolve hooks. */
    function fakeLoader() {
      const resolved = [];
      const hooks = [];
      const loader = { prototype: { require(id) { resolved.push(id); for (const h of [...hooks]) h.resolve(id, {}, (s) => s); return `exports of ${id}`; } } };
      const registerHooks = (h) => { hooks.push(h); return { deregister() { hooks.splice(hooks.indexOf(h), 1); } }; };
      return { loader, registerHooks, hooks, resolved, require: (id) => loader.prototype.require.call({}, id) };
    }
    const settle = () => new Promise((r) => setImmediate(r));

    it('creates each one when one of its packages is first required, once, and steps aside when all are created', async () => {
      const f = fakeLoader();
      const original = f.loader.prototype.require;
      const created = [];
      const stop = deferInstrumentations(['express', 'pg'], (n) => created.push(n), { registerHooks: f.registerHooks, loader: f.loader, host: {} });
      assert.equal(typeof stop, 'function');
      assert.equal(f.require('./local'), 'exports of ./local');
      assert.equal(f.require('koa'), 'exports of koa');
      assert.deepEqual(created, []);
      assert.equal(f.require('express/lib/router'), 'exports of express/lib/router');
      f.require('express');
      assert.deepEqual(created, ['express']);
      f.require('pg-pool'); // pg patches pg and pg-pool: either one brings it
      assert.deepEqual(created, ['express', 'pg']);
      await settle();
      assert.equal(f.loader.prototype.require, original);
      assert.equal(f.hooks.length, 0);
    });

    it('an import (the resolve hook alone) creates it too', () => {
      const f = fakeLoader();
      const created = [];
      deferInstrumentations(['koa'], (n) => created.push(n), { registerHooks: f.registerHooks, loader: f.loader, host: {} });
      f.hooks[0].resolve('koa', {}, (s) => s);
      assert.deepEqual(created, ['koa']);
    });

    it('the require that created one goes through the require hook the new instrumentation installed', () => {
      const f = fakeLoader();
      const seenByNewHook = [];
      deferInstrumentations(['express'], () => {
        const below = f.loader.prototype.require;
        f.loader.prototype.require = function (id) { seenByNewHook.push(id); return below.call(this, id); };
      }, { registerHooks: f.registerHooks, loader: f.loader, host: {} });
      f.require('express');
      f.require('koa');
      assert.deepEqual(seenByNewHook, ['express', 'koa']);
      assert.deepEqual(f.resolved, ['express', 'koa']); // each loaded once
    });

    it('a failing creation never fails the application\'s require', () => {
      const f = fakeLoader();
      deferInstrumentations(['express'], () => { throw new Error('boom'); }, { registerHooks: f.registerHooks, loader: f.loader, host: {} });
      assert.equal(f.require('express'), 'exports of express');
    });

    it('after stop() nothing is created; without module hooks the caller is told to create them now', () => {
      const f = fakeLoader();
      const created = [];
      const stop = deferInstrumentations(['express'], (n) => created.push(n), { registerHooks: f.registerHooks, loader: f.loader, host: {} });
      stop();
      f.require('express');
      assert.deepEqual(created, []);
      assert.equal(deferInstrumentations(['express'], () => undefined, { registerHooks: null, loader: f.loader }), undefined);
    });

    it('other work can wait for built-in modules: by require, by import with or without node:, by process.getBuiltinModule', async () => {
      const targetsOf = (n) => ({ tls: ['tls', 'https'], pg: ['pg'] })[n];
      for (const load of [
        (f) => f.require('https'),
        (f) => f.require('node:tls'),
        (f) => f.hooks[0].resolve('node:https', {}, (s) => s),
        (f, host) => host.getBuiltinModule('node:tls'),
      ]) {
        const f = fakeLoader();
        const original = (id) => `builtin ${id}`;
        const host = { getBuiltinModule: original };
        const created = [];
        deferInstrumentations(['tls'], (n) => created.push(n), { registerHooks: f.registerHooks, loader: f.loader, host, targetsOf });
        assert.notEqual(host.getBuiltinModule, original);
        f.require('http');
        host.getBuiltinModule('node:net');
        assert.deepEqual(created, [], load.toString());
        load(f, host);
        assert.deepEqual(created, ['tls'], load.toString());
        assert.equal(host.getBuiltinModule('node:https'), 'builtin node:https');
        assert.deepEqual(created, ['tls'], 'once');
        await settle();
        assert.equal(host.getBuiltinModule, original, 'process.getBuiltinModule restored once nothing waits');
      }
    });
  });
});
