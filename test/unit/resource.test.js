'use strict';

const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const {
  instanceIdentity,
  uuidv5,
  containerIdFrom,
  appPackageJson,
  K8S_INSTANCE_ID_NAMESPACE,
} = require('../../dist/lib/resource.js');

const FIXTURES = path.join(__dirname, '..', 'fixtures', 'cgroup');
const fixture = (name) => fs.readFileSync(path.join(FIXTURES, name), 'utf8');

const DOCKER_ID = 'a3b1c2d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9c';
const CONTAINERD_ID = '5f2e8c1d9b7a6e4f3c2b1a0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f';
const PODMAN_ID = 'e7d6c5b4a39281706f5e4d3c2b1a0f9e8d7c6b5a493827160f5e4d3c2b1a0f9e';
const UUID_V4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

/** readFile backed by an in-memory file table; anything else is "unreadable". */
function filesystem(files) {
  const reads = [];
  const readFile = (p) => {
    reads.push(p);
    return Object.prototype.hasOwnProperty.call(files, p) ? files[p] : undefined;
  };
  return { readFile, reads };
}

/** Deterministic input: no real process, host or file system leaks in. */
function input(overrides = {}) {
  return {
    env: {},
    resourceAttributes: {},
    readFile: () => undefined,
    mainModulePath: '/nonexistent/app/server.js',
    cwd: '/nonexistent',
    argv: ['/usr/local/bin/node', '/nonexistent/app/server.js'],
    randomUUID: () => '3b241101-e2bb-4255-8caf-4136c566a962',
    hostname: 'web-01',
    arch: 'x64',
    platform: 'linux',
    pid: 4242,
    nodeVersion: '24.1.0',
    ...overrides,
  };
}

describe('resource: instance identity', () => {
  describe('uuidv5 (RFC 9562, SHA-1 name-based)', () => {
    it('matches the well-known vector uuid5(NAMESPACE_DNS, "python.org")', () => {
      assert.equal(
        uuidv5('python.org', '6ba7b810-9dad-11d1-80b4-00c04fd430c8'),
        '886313e1-3b8a-5372-9b90-0c9aee199e5d',
      );
    });

    it('hashes the name as UTF-8', () => {
      // python3 -c "import uuid; print(uuid.uuid5(uuid.NAMESPACE_URL, 'https://例え.jp/ü'))"
      assert.equal(
        uuidv5('https://例え.jp/ü', '6ba7b811-9dad-11d1-80b4-00c04fd430c8'),
        'c629319a-f7d1-511d-9fc4-a6a18d5eab4b',
      );
    });

    it('rejects a namespace that is not a UUID', () => {
      assert.throws(() => uuidv5('x', 'not-a-uuid'), TypeError);
    });
  });

  describe('Kubernetes (downward API environment variables)', () => {
    const downwardApi = {
      K8S_POD_NAME: 'checkout-7d9f8b6c5-x2k4q',
      K8S_POD_UID: '8a4c3f2e-7b1d-4e9a-b6c5-0d1e2f3a4b5c',
      K8S_NAMESPACE_NAME: 'payments',
      K8S_NODE_NAME: 'ip-10-0-3-17.eu-west-1.compute.internal',
      K8S_CONTAINER_NAME: 'api',
    };

    it('maps the variables to k8s.* attributes', () => {
      const attrs = instanceIdentity(input({ env: downwardApi }));
      assert.equal(attrs['k8s.pod.name'], 'checkout-7d9f8b6c5-x2k4q');
      assert.equal(attrs['k8s.pod.uid'], '8a4c3f2e-7b1d-4e9a-b6c5-0d1e2f3a4b5c');
      assert.equal(attrs['k8s.namespace.name'], 'payments');
      assert.equal(attrs['k8s.node.name'], 'ip-10-0-3-17.eu-west-1.compute.internal');
      assert.equal(attrs['k8s.container.name'], 'api');
    });

    it('derives service.instance.id as UUIDv5 of "<namespace>.<pod>.<container>"', () => {
      // python3 -c "import uuid; print(uuid.uuid5(uuid.UUID('4d63009a-8d0f-11ee-aad7-4c796ed8e320'), 'payments.checkout-7d9f8b6c5-x2k4q.api'))"
      const expected = '2eec5e96-ea42-53da-8812-fae4e28e9bed';
      assert.equal(K8S_INSTANCE_ID_NAMESPACE, '4d63009a-8d0f-11ee-aad7-4c796ed8e320');
      const attrs = instanceIdentity(input({ env: downwardApi, randomUUID: () => assert.fail('must not be random') }));
      assert.equal(attrs['service.instance.id'], expected);
      // Same pod and container after a restart -> same instance id.
      assert.equal(instanceIdentity(input({ env: downwardApi }))['service.instance.id'], expected);
    });

    it('ignores generic names that CI agents and sandboxes set (NODE_NAME, CONTAINER_NAME, POD_NAME)', () => {
      const attrs = instanceIdentity(
        input({ env: { POD_NAME: 'web-0', POD_UID: 'u-1', POD_NAMESPACE: 'prod', NODE_NAME: 'n1', CONTAINER_NAME: 'app' } }),
      );
      for (const k of ['k8s.pod.name', 'k8s.pod.uid', 'k8s.namespace.name', 'k8s.node.name', 'k8s.container.name']) {
        assert.equal(attrs[k], undefined, k);
      }
      assert.equal(attrs['service.instance.id'], '3b241101-e2bb-4255-8caf-4136c566a962', 'random, not derived');
    });

    it('lets OTEL_RESOURCE_ATTRIBUTES win over the environment, also for the derived id', () => {
      const attrs = instanceIdentity(
        input({
          env: downwardApi,
          resourceAttributes: { 'k8s.namespace.name': 'prod', 'k8s.pod.name': 'web-0', 'k8s.container.name': 'app' },
        }),
      );
      assert.equal(attrs['k8s.namespace.name'], 'prod');
      assert.equal(attrs['k8s.pod.name'], 'web-0');
      assert.equal(attrs['k8s.container.name'], 'app');
      assert.equal(attrs['k8s.node.name'], 'ip-10-0-3-17.eu-west-1.compute.internal');
      assert.equal(attrs['service.instance.id'], '62bd1332-6f77-5504-8cd1-03d561702a4a');
    });

    it('uses a configured service.instance.id as is', () => {
      const attrs = instanceIdentity(
        input({ env: downwardApi, resourceAttributes: { 'service.instance.id': 'blue-7' } }),
      );
      assert.equal(attrs['service.instance.id'], 'blue-7');
    });

    it('falls back to a random id when the container name is unknown', () => {
      const { K8S_CONTAINER_NAME, ...partial } = downwardApi;
      const attrs = instanceIdentity(input({ env: partial }));
      assert.equal(attrs['service.instance.id'], '3b241101-e2bb-4255-8caf-4136c566a962');
      assert.equal(attrs['k8s.container.name'], undefined);
    });

    it('ignores empty downward-API values', () => {
      const attrs = instanceIdentity(input({ env: { K8S_POD_NAME: '  ' } }));
      assert.equal(attrs['k8s.pod.name'], undefined);
    });
  });

  describe('outside Kubernetes', () => {
    it('gives each process a random UUIDv4 service.instance.id', () => {
      const { randomUUID, ...defaults } = input();
      const first = instanceIdentity(defaults)['service.instance.id'];
      const second = instanceIdentity(defaults)['service.instance.id'];
      assert.match(first, UUID_V4);
      assert.match(second, UUID_V4);
      assert.notEqual(first, second);
    });

    it('sets no k8s.* attributes', () => {
      const attrs = instanceIdentity(input());
      assert.deepEqual(Object.keys(attrs).filter((k) => k.startsWith('k8s.')), []);
    });
  });

  describe('application package.json discovery', () => {
    let root;
    before(() => {
      root = fs.mkdtempSync(path.join(os.tmpdir(), 'auditrace-resource-'));
      const write = (rel, content) => {
        fs.mkdirSync(path.dirname(path.join(root, rel)), { recursive: true });
        fs.writeFileSync(path.join(root, rel), typeof content === 'string' ? content : JSON.stringify(content));
      };
      write('app/package.json', { name: 'billing-api', version: '2.3.1' });
      write('app/src/server.js', '');
      write('app/dist/package.json', { type: 'commonjs' });
      write('app/dist/main.js', '');
      write('app/node_modules/some-cli/package.json', { name: 'some-cli', version: '9.9.9' });
      write('app/node_modules/some-cli/bin/cli.js', '');
      write('noversion/package.json', { name: 'tool' });
      write('noversion/index.js', '');
      write('broken/package.json', '{ not json');
      write('broken/index.js', '');
      write('empty/index.js', '');
    });
    after(() => fs.rmSync(root, { recursive: true, force: true }));

    // The default (real) readFile, for walks that end inside the temp dir.
    const realFs = () => ({ readFile: undefined, cwd: path.join(root, 'empty') });
    // Walks that would leave the temp dir must not see a stray /package.json
    // (common in container images built with WORKDIR /).
    const onlyTemp = (p) => (p.startsWith(root + path.sep) ? fs.readFileSync(p, 'utf8') : undefined);

    it('walks up from the main module to the nearest package.json', () => {
      const attrs = instanceIdentity(input({ ...realFs(), mainModulePath: path.join(root, 'app/src/server.js') }));
      assert.equal(attrs['service.name'], 'billing-api');
      assert.equal(attrs['service.version'], '2.3.1');
    });

    it('skips package.json files inside node_modules', () => {
      const main = path.join(root, 'app/node_modules/some-cli/bin/cli.js');
      assert.deepEqual(appPackageJson(path.dirname(main)), { name: 'billing-api', version: '2.3.1' });
      assert.equal(instanceIdentity(input({ ...realFs(), mainModulePath: main }))['service.name'], 'billing-api');
    });

    it('skips name-less marker files such as dist/package.json {"type": ...}', () => {
      assert.deepEqual(appPackageJson(path.join(root, 'app/dist')), { name: 'billing-api', version: '2.3.1' });
    });

    it('omits service.version when the package has none', () => {
      const attrs = instanceIdentity(input({ ...realFs(), mainModulePath: path.join(root, 'noversion/index.js') }));
      assert.equal(attrs['service.name'], 'tool');
      assert.equal('service.version' in attrs, false);
    });

    it('falls back to the working directory without a main module (REPL, node -e)', () => {
      const attrs = instanceIdentity(
        input({ readFile: onlyTemp, mainModulePath: undefined, argv: ['node'], cwd: path.join(root, 'app/src') }),
      );
      assert.equal(attrs['service.name'], 'billing-api');
    });

    it('falls back to the working directory when the main module is outside any package', () => {
      const attrs = instanceIdentity(
        input({ readFile: onlyTemp, mainModulePath: path.join(root, 'empty/index.js'), cwd: path.join(root, 'noversion') }),
      );
      assert.equal(attrs['service.name'], 'tool');
    });

    it('uses unknown_service:node when no package.json is found', () => {
      // A read-nothing file system: the walk must also terminate at the root.
      const { readFile, reads } = filesystem({});
      const attrs = instanceIdentity(input({ readFile, mainModulePath: '/a/b/c/main.js', cwd: '/w' }));
      assert.equal(attrs['service.name'], 'unknown_service:node');
      assert.equal('service.version' in attrs, false);
      assert.ok(reads.includes('/a/b/c/package.json'));
      assert.ok(reads.includes('/package.json'));
      assert.ok(reads.includes('/w/package.json'));
    });

    it('ignores an unparseable package.json', () => {
      const { readFile } = filesystem({ '/srv/broken/package.json': '{ not json', '/srv/package.json': '[]' });
      const attrs = instanceIdentity(input({ readFile, mainModulePath: '/srv/broken/index.js', cwd: '/srv' }));
      assert.equal(attrs['service.name'], 'unknown_service:node');
    });
  });

  describe('service.name / service.version precedence', () => {
    const { readFile } = filesystem({ '/srv/app/package.json': JSON.stringify({ name: 'from-pkg', version: '1.0.0' }) });
    const base = { readFile, mainModulePath: '/srv/app/index.js' };

    it('OTEL_SERVICE_NAME beats resource attributes and package.json', () => {
      const attrs = instanceIdentity(
        input({ ...base, serviceName: 'from-env', resourceAttributes: { 'service.name': 'from-attrs' } }),
      );
      assert.equal(attrs['service.name'], 'from-env');
    });

    it('resource attribute service.name beats package.json', () => {
      const attrs = instanceIdentity(input({ ...base, resourceAttributes: { 'service.name': 'from-attrs' } }));
      assert.equal(attrs['service.name'], 'from-attrs');
    });

    it('package.json name is used when neither is configured', () => {
      assert.equal(instanceIdentity(input(base))['service.name'], 'from-pkg');
    });

    it('service.version: resource attribute beats package.json, which is used whenever found', () => {
      assert.equal(
        instanceIdentity(input({ ...base, resourceAttributes: { 'service.version': '7.0.0' } }))['service.version'],
        '7.0.0',
      );
      assert.equal(instanceIdentity(input({ ...base, serviceName: 'from-env' }))['service.version'], '1.0.0');
    });

    it('does not read package.json when name and version are both configured', () => {
      const { readFile: spy, reads } = filesystem({});
      instanceIdentity(
        input({ readFile: spy, serviceName: 's', resourceAttributes: { 'service.version': '1' } }),
      );
      assert.deepEqual(reads.filter((p) => p.endsWith('package.json')), []);
    });

    it('passes service.namespace and deployment.environment.name through from resource attributes', () => {
      const attrs = instanceIdentity(
        input({ resourceAttributes: { 'service.namespace': 'shop', 'deployment.environment.name': 'production' } }),
      );
      assert.equal(attrs['service.namespace'], 'shop');
      assert.equal(attrs['deployment.environment.name'], 'production');
    });
  });

  describe('container.id', () => {
    it('cgroup v1, Docker: /docker/<id>', () => {
      assert.equal(containerIdFrom(fixture('v1-docker.cgroup'), undefined), DOCKER_ID);
    });

    it('cgroup v1, Kubernetes + containerd, systemd driver: cri-containerd-<id>.scope', () => {
      assert.equal(containerIdFrom(fixture('v1-cri-containerd-systemd.cgroup'), undefined), CONTAINERD_ID);
    });

    it('cgroup v1, Kubernetes + containerd, cgroupfs driver: ...slice:cri-containerd:<id>', () => {
      assert.equal(containerIdFrom(fixture('v1-cri-containerd-cgroupfs.cgroup'), undefined), CONTAINERD_ID);
    });

    it('cgroup v2 in the host cgroup namespace: docker-<id>.scope', () => {
      assert.equal(containerIdFrom(fixture('v2-host-namespace-docker.cgroup'), undefined), DOCKER_ID);
    });

    it('cgroup v2 with a private namespace ("0::/") falls back to mountinfo: Docker', () => {
      assert.equal(containerIdFrom(fixture('v2-private-namespace.cgroup'), fixture('v2-docker.mountinfo')), DOCKER_ID);
    });

    it('cgroup v2 mountinfo: Podman overlay-containers/<id>/userdata', () => {
      assert.equal(containerIdFrom('0::/\n', fixture('v2-podman.mountinfo')), PODMAN_ID);
    });

    it('does not report the pod sandbox id or overlay layer ids from mountinfo', () => {
      assert.equal(containerIdFrom('0::/\n', fixture('v2-k8s-containerd.mountinfo')), undefined);
      const layersOnly = fixture('v2-docker.mountinfo')
        .split('\n')
        .filter((l) => !l.includes('/containers/'))
        .join('\n');
      assert.equal(containerIdFrom(undefined, layersOnly), undefined);
    });

    it('finds nothing on a plain host', () => {
      assert.equal(containerIdFrom(fixture('host-systemd.cgroup'), undefined), undefined);
      assert.equal(containerIdFrom(undefined, undefined), undefined);
      assert.equal(containerIdFrom('', ''), undefined);
    });

    it('is read from /proc/self/cgroup, then /proc/self/mountinfo', () => {
      const v1 = filesystem({ '/proc/self/cgroup': fixture('v1-docker.cgroup') });
      assert.equal(instanceIdentity(input({ readFile: v1.readFile }))['container.id'], DOCKER_ID);
      assert.equal(v1.reads.includes('/proc/self/mountinfo'), false);

      const v2 = filesystem({
        '/proc/self/cgroup': fixture('v2-private-namespace.cgroup'),
        '/proc/self/mountinfo': fixture('v2-podman.mountinfo'),
      });
      assert.equal(instanceIdentity(input({ readFile: v2.readFile }))['container.id'], PODMAN_ID);
    });

    it('is omitted when the files are unreadable', () => {
      assert.equal('container.id' in instanceIdentity(input()), false);
    });
  });

  describe('host, os and process', () => {
    it('reads host.id from /etc/machine-id, trimmed', () => {
      const { readFile } = filesystem({ '/etc/machine-id': 'b08dfa6083e7567a1921a715000001fb\n' });
      assert.equal(instanceIdentity(input({ readFile }))['host.id'], 'b08dfa6083e7567a1921a715000001fb');
    });

    it('falls back to /var/lib/dbus/machine-id', () => {
      const { readFile } = filesystem({ '/var/lib/dbus/machine-id': '4c4c4544004c3510804bb4c04f333232\n' });
      assert.equal(instanceIdentity(input({ readFile }))['host.id'], '4c4c4544004c3510804bb4c04f333232');
    });

    it('falls back when /etc/machine-id exists but is empty (common in container images)', () => {
      const { readFile } = filesystem({ '/etc/machine-id': '\n', '/var/lib/dbus/machine-id': '4c4c4544004c3510804bb4c04f333232\n' });
      assert.equal(instanceIdentity(input({ readFile }))['host.id'], '4c4c4544004c3510804bb4c04f333232');
      assert.equal('host.id' in instanceIdentity(input({ readFile: filesystem({ '/etc/machine-id': '' }).readFile })), false);
    });

    it('omits host.id when neither file is readable', () => {
      assert.equal('host.id' in instanceIdentity(input()), false);
    });

    it('sets host, os and process attributes with semantic-convention values', () => {
      const attrs = instanceIdentity(input());
      assert.equal(attrs['host.name'], 'web-01');
      assert.equal(attrs['host.arch'], 'amd64');
      assert.equal(attrs['os.type'], 'linux');
      assert.equal(attrs['process.pid'], 4242);
      assert.equal(attrs['process.executable.name'], 'node');
      assert.equal(attrs['process.command'], '/nonexistent/app/server.js');
      assert.equal(attrs['process.runtime.name'], 'nodejs');
      assert.equal(attrs['process.runtime.version'], '24.1.0');
      assert.equal(attrs['process.runtime.description'], 'Node.js');
      assert.equal('process.owner' in attrs, false);
    });

    it('maps Node.js arch and platform names', () => {
      const arch = (a) => instanceIdentity(input({ arch: a }))['host.arch'];
      assert.equal(arch('arm64'), 'arm64');
      assert.equal(arch('ia32'), 'x86');
      assert.equal(arch('arm'), 'arm32');
      assert.equal(arch('ppc'), 'ppc32');
      assert.equal(arch('riscv64'), 'riscv64');
      const osType = (p) => instanceIdentity(input({ platform: p }))['os.type'];
      assert.equal(osType('win32'), 'windows');
      assert.equal(osType('sunos'), 'solaris');
      assert.equal(osType('darwin'), 'darwin');
    });

    it('omits process.command when there is no script (REPL)', () => {
      assert.equal('process.command' in instanceIdentity(input({ argv: ['node'] })), false);
    });

    it('uses the real process and host by default', () => {
      const attrs = instanceIdentity({ env: {}, resourceAttributes: {} });
      assert.equal(attrs['process.pid'], process.pid);
      assert.equal(attrs['host.name'], os.hostname());
      assert.equal(attrs['process.runtime.version'], process.versions.node);
      assert.match(attrs['service.instance.id'], UUID_V4);
      assert.equal(typeof attrs['service.name'], 'string');
    });
  });

  describe('resource attributes and failure handling', () => {
    it('passes other resource attributes through and lets them override detected values', () => {
      const { readFile } = filesystem({
        '/etc/machine-id': 'b08dfa6083e7567a1921a715000001fb\n',
        '/proc/self/cgroup': fixture('v1-docker.cgroup'),
      });
      const attrs = instanceIdentity(
        input({
          readFile,
          resourceAttributes: { 'host.name': 'configured', 'host.id': 'h-1', 'container.id': 'c-1', team: 'payments' },
        }),
      );
      assert.equal(attrs['host.name'], 'configured');
      assert.equal(attrs['host.id'], 'h-1');
      assert.equal(attrs['container.id'], 'c-1');
      assert.equal(attrs.team, 'payments');
    });

    it('never throws, even when every probe fails', () => {
      const attrs = instanceIdentity(
        input({
          readFile: () => {
            throw new Error('EACCES');
          },
          randomUUID: () => {
            throw new Error('no entropy');
          },
        }),
      );
      assert.equal(attrs['service.name'], 'unknown_service:node');
      assert.equal('service.instance.id' in attrs, false);
      assert.equal('host.id' in attrs, false);
      assert.equal('container.id' in attrs, false);
    });
  });
});
