'use strict';
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { execFileSync } = require('node:child_process');
const YAML = require('yaml');
const { ROOT } = require('../helpers/run-app.js');

const K8S = path.join(ROOT, 'collector-config', 'k8s');
const COLLECTOR = path.join(ROOT, 'collector-build', 'auditrace-collector');
const manifests = ['gateway.yaml', 'agent-daemonset.yaml', 'agent-sidecar.yaml'];
const docsOf = (f) => YAML.parseAllDocuments(fs.readFileSync(path.join(K8S, f), 'utf8')).map((d) => {
  assert.deepEqual(d.errors, [], `${f}: YAML errors`);
  return d.toJS();
});

describe('Kubernetes manifests (collector-config/k8s)', () => {
  for (const f of manifests) {
    it(`${f}: every object has apiVersion, kind, name and namespace; workloads have containers with images`, () => {
      for (const o of docsOf(f)) {
        assert.ok(o.apiVersion && o.kind && o.metadata?.name, JSON.stringify(o).slice(0, 200));
        if (o.kind !== 'Namespace') assert.equal(o.metadata.namespace, 'auditrace', `${o.kind}/${o.metadata.name}`);
        if (['Deployment', 'DaemonSet', 'StatefulSet'].includes(o.kind)) {
          const spec = o.spec.template.spec;
          assert.deepEqual(o.spec.selector.matchLabels, o.spec.template.metadata.labels);
          for (const c of spec.containers) assert.ok(c.name && c.image, `${o.kind}: container without name/image`);
          const volumes = new Set((spec.volumes ?? []).map((v) => v.name));
          const claims = new Set((o.spec.volumeClaimTemplates ?? []).map((v) => v.metadata.name));
          for (const c of spec.containers) for (const m of c.volumeMounts ?? []) assert.ok(volumes.has(m.name) || claims.has(m.name), `${c.name}: mount ${m.name} has no volume`);
          const configMaps = docsOf(f).filter((x) => x.kind === 'ConfigMap').map((x) => x.metadata.name);
          for (const v of spec.volumes ?? []) if (v.configMap) assert.ok(configMaps.includes(v.configMap.name), `volume ${v.name}: ConfigMap ${v.configMap.name} not in ${f}`);
          if (spec.serviceAccountName) assert.ok(docsOf(f).some((x) => x.kind === 'ServiceAccount' && x.metadata.name === spec.serviceAccountName));
        }
      }
    });
  }

  it('the ConfigMaps carry the shipped configs, byte for byte', () => {
    const gw = docsOf('gateway.yaml').find((o) => o.kind === 'ConfigMap');
    assert.equal(gw.data['gateway.yaml'].trimEnd(), fs.readFileSync(path.join(ROOT, 'collector-config', 'gateway.yaml'), 'utf8').trimEnd());
    for (const f of ['agent-daemonset.yaml', 'agent-sidecar.yaml']) {
      const cm = docsOf(f).find((o) => o.kind === 'ConfigMap');
      assert.equal(cm.data['agent.yaml'].trimEnd(), fs.readFileSync(path.join(K8S, 'agent.collector.yaml'), 'utf8').trimEnd());
    }
  });

  it('the apps get their identity from the downward API (sidecar example)', () => {
    const app = docsOf('agent-sidecar.yaml').find((o) => o.kind === 'Deployment').spec.template.spec.containers[0];
    const env = Object.fromEntries(app.env.map((e) => [e.name, e.valueFrom?.fieldRef?.fieldPath ?? e.value]));
    assert.equal(env.K8S_POD_NAME, 'metadata.name');
    assert.equal(env.K8S_POD_UID, 'metadata.uid');
    assert.equal(env.K8S_NAMESPACE_NAME, 'metadata.namespace');
    assert.equal(env.K8S_NODE_NAME, 'spec.nodeName');
    assert.ok(env.K8S_CONTAINER_NAME);
  });

  it('every embedded collector config passes the collector\'s own validate', function () {
    if (!fs.existsSync(COLLECTOR)) {
      if (process.env.CI) assert.fail('collector-build/auditrace-collector is not built');
      this.skip();
    }
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'auditrace-k8s-'));
    try {
      for (const f of manifests) {
        for (const cm of docsOf(f).filter((o) => o.kind === 'ConfigMap')) {
          for (const [key, text] of Object.entries(cm.data)) {
            const file = path.join(dir, `${cm.metadata.name}-${key}`);
            fs.writeFileSync(file, text);
            execFileSync(COLLECTOR, ['validate', '--feature-gates=exporter.file.nativeCompression', `--config=${file}`], { stdio: 'pipe' });
          }
        }
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
