/**
 * Instance identity: the resource attributes that say which service, which
 * process and which machine/pod/container produced a span or log record.
 *
 * All I/O is injectable so the detection rules can be tested without a real
 * container or Kubernetes pod, and every probe is best effort: a missing or
 * unreadable source only means the attribute is omitted. Nothing here touches
 * the network (no cloud metadata endpoints), so start-up never blocks.
 */
import { createHash, randomUUID as cryptoRandomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

export type ReadFile = (path: string) => string | undefined;
export type AttributeValue = string | number | string[];

export interface IdentityInput {
  /** Usually process.env. */
  env: Record<string, string | undefined>;
  /** OTEL_SERVICE_NAME, already validated by the caller. */
  serviceName?: string;
  /** OTEL_RESOURCE_ATTRIBUTES, already parsed by the caller. */
  resourceAttributes: Record<string, string>;
  /** Returns undefined when the file cannot be read. */
  readFile?: ReadFile;
  /** Entry script, used to find the application's package.json. Default: argv[1]. */
  mainModulePath?: string;
  cwd?: string;
  randomUUID?: () => string;
  hostname?: string;
  /** Node.js arch name (process.arch). */
  arch?: string;
  /** Node.js platform name (process.platform). */
  platform?: string;
  pid?: number;
  /** process.versions.node */
  nodeVersion?: string;
  argv?: readonly string[];
}

/** Namespace the OpenTelemetry semantic conventions define for service.instance.id in Kubernetes. */
export const K8S_INSTANCE_ID_NAMESPACE = '4d63009a-8d0f-11ee-aad7-4c796ed8e320';

// Downward-API variable names (the documented Pod spec snippet). Generic names such as NODE_NAME
// or CONTAINER_NAME are deliberately not read: CI agents and sandboxes set them, and a wrong
// container name would give every process there the same derived service.instance.id.
const K8S_ENV: ReadonlyArray<[attribute: string, names: string[]]> = [
  ['k8s.pod.name', ['K8S_POD_NAME']],
  ['k8s.pod.uid', ['K8S_POD_UID']],
  ['k8s.namespace.name', ['K8S_NAMESPACE_NAME']],
  ['k8s.node.name', ['K8S_NODE_NAME']],
  ['k8s.container.name', ['K8S_CONTAINER_NAME']],
];

// Node.js names -> semantic-convention enum values; unknown names pass through.
const HOST_ARCH: Record<string, string> = {
  x64: 'amd64',
  arm: 'arm32',
  arm64: 'arm64',
  ia32: 'x86',
  ppc: 'ppc32',
  ppc64: 'ppc64',
  s390x: 's390x',
};
const OS_TYPE: Record<string, string> = { win32: 'windows', sunos: 'solaris' };

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** RFC 9562 name-based UUID, version 5 (SHA-1). */
export function uuidv5(name: string, namespace: string): string {
  if (!UUID_RE.test(namespace)) throw new TypeError(`invalid namespace UUID: ${namespace}`);
  const hash = createHash('sha1')
    .update(Buffer.from(namespace.replace(/-/g, ''), 'hex'))
    .update(name, 'utf8')
    .digest();
  const bytes = hash.subarray(0, 16);
  bytes[6] = (bytes[6]! & 0x0f) | 0x50;
  bytes[8] = (bytes[8]! & 0x3f) | 0x80;
  const hex = bytes.toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

// The last cgroup path segment is the container itself in every runtime
// layout we know: "/docker/<id>", ".../<id>" (dockershim), "docker-<id>.scope",
// "cri-containerd-<id>.scope", "crio-<id>.scope" (systemd driver) and
// "...slice:cri-containerd:<id>" (containerd with the cgroupfs driver).
const CGROUP_ID_RE = /(?:^|[-:])([0-9a-f]{64})(?:\.scope)?$/;
// With cgroup v2 and a private cgroup namespace /proc/self/cgroup is just
// "0::/", but the runtime bind-mounts per-container files from its state
// directory. Only those mounts are trusted: overlay layer directories are also
// 64 hex digits, and Kubernetes' /etc/hostname comes from the pod *sandbox*
// directory ("sandboxes/<id>"), whose id is not this container's.
const MOUNT_ID_RE = /(?:^|\/)(?:overlay-)?containers\/([0-9a-f]{64})\//;
const RUNTIME_MOUNT_POINTS = new Set(['/etc/hostname', '/etc/hosts', '/etc/resolv.conf']);

/** Container id from /proc/self/cgroup (v1 or v2 without namespace) else /proc/self/mountinfo. */
export function containerIdFrom(cgroup: string | undefined, mountinfo: string | undefined): string | undefined {
  for (const raw of (cgroup ?? '').split('\n')) {
    const line = raw.trim();
    if (!line.includes('/')) continue;
    const match = CGROUP_ID_RE.exec(line.slice(line.lastIndexOf('/') + 1));
    if (match) return match[1];
  }
  for (const line of (mountinfo ?? '').split('\n')) {
    // mountinfo fields: id parent major:minor root mount-point options ...
    const [, , , root, mountPoint] = line.trim().split(' ');
    if (root === undefined || !RUNTIME_MOUNT_POINTS.has(mountPoint ?? '')) continue;
    const match = MOUNT_ID_RE.exec(root);
    if (match) return match[1];
  }
  return undefined;
}

/**
 * The application's own package.json: the nearest one at or above startPath
 * that is outside node_modules (so a CLI run from node_modules/.bin or a
 * dependency's directory still resolves to the app) and that has a name
 * (files like dist/package.json containing only {"type": "module"} are
 * markers, not the package).
 */
export function appPackageJson(
  startPath: string,
  readFile: ReadFile = defaultReadFile,
): { name?: string; version?: string } | undefined {
  for (let dir = path.resolve(startPath); ; dir = path.dirname(dir)) {
    if (!dir.split(path.sep).includes('node_modules')) {
      const pkg = parseJsonObject(safeRead(readFile, path.join(dir, 'package.json')));
      if (pkg && typeof pkg.name === 'string' && pkg.name !== '') {
        return typeof pkg.version === 'string' && pkg.version !== ''
          ? { name: pkg.name, version: pkg.version }
          : { name: pkg.name };
      }
    }
    if (path.dirname(dir) === dir) return undefined;
  }
}

export function instanceIdentity(input: IdentityInput): Record<string, AttributeValue> {
  const readFile = input.readFile ?? defaultReadFile;
  const fromConfig = input.resourceAttributes ?? {};
  const argv = input.argv ?? process.argv;
  const env = input.env ?? {};
  const attrs: Record<string, AttributeValue> = {};
  const set = (key: string, value: AttributeValue | undefined) => {
    if (value !== undefined && value !== '') attrs[key] = value;
  };

  for (const [attribute, names] of K8S_ENV) {
    set(attribute, names.map((n) => env[n]?.trim()).find((v) => v));
  }
  // Configured k8s values win, and must also be the ones the id is derived from.
  const k8s = (key: string) => fromConfig[key] || (attrs[key] as string | undefined);
  const [namespace, pod, container] = [k8s('k8s.namespace.name'), k8s('k8s.pod.name'), k8s('k8s.container.name')];
  // Stable across restarts of the same container in the same pod, as the
  // semantic conventions recommend; elsewhere there is no stable identity to
  // derive from, so each process is its own instance.
  set(
    'service.instance.id',
    namespace && pod && container
      ? uuidv5(`${namespace}.${pod}.${container}`, K8S_INSTANCE_ID_NAMESPACE)
      : attempt(input.randomUUID ?? cryptoRandomUUID),
  );

  set(
    'container.id',
    containerIdFrom(safeRead(readFile, '/proc/self/cgroup'), undefined) ??
      containerIdFrom(undefined, safeRead(readFile, '/proc/self/mountinfo')),
  );

  set('host.name', input.hostname ?? attempt(os.hostname));
  const arch = input.arch ?? process.arch;
  set('host.arch', HOST_ARCH[arch] ?? arch);
  // Container images often ship an empty /etc/machine-id, hence trim before falling back.
  set('host.id', safeRead(readFile, '/etc/machine-id')?.trim() || safeRead(readFile, '/var/lib/dbus/machine-id')?.trim());
  const platform = input.platform ?? process.platform;
  set('os.type', OS_TYPE[platform] ?? platform);

  set('process.pid', input.pid ?? process.pid);
  set('process.executable.name', 'node');
  set('process.command', argv[1]);
  set('process.runtime.name', 'nodejs');
  set('process.runtime.version', input.nodeVersion ?? process.versions.node);
  set('process.runtime.description', 'Node.js');

  Object.assign(attrs, fromConfig);

  const configuredName = input.serviceName || fromConfig['service.name'];
  const pkg = configuredName && fromConfig['service.version'] ? undefined : findAppPackage(input, argv, readFile);
  attrs['service.name'] = configuredName || pkg?.name || 'unknown_service:node';
  set('service.version', fromConfig['service.version'] || pkg?.version);
  return attrs;
}

function findAppPackage(input: IdentityInput, argv: readonly string[], readFile: ReadFile) {
  const cwd = input.cwd ?? attempt(process.cwd);
  const main = input.mainModulePath ?? argv[1];
  // From the entry script first: the app may be started from any directory.
  // Without one (REPL, `node -e`) or outside any package, cwd is the best guess.
  const fromMain = main ? attempt(() => appPackageJson(path.dirname(path.resolve(cwd ?? '/', main)), readFile)) : undefined;
  return fromMain ?? (cwd ? attempt(() => appPackageJson(cwd, readFile)) : undefined);
}

function defaultReadFile(file: string): string | undefined {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
}

// Injected readers are not trusted to keep the "never throws" promise.
function safeRead(readFile: ReadFile, file: string): string | undefined {
  return attempt(() => readFile(file));
}

function attempt<T>(fn: () => T): T | undefined {
  try {
    return fn();
  } catch {
    return undefined;
  }
}

function parseJsonObject(text: string | undefined): Record<string, unknown> | undefined {
  const value = text === undefined ? undefined : attempt(() => JSON.parse(text) as unknown);
  return value !== null && typeof value === 'object' && !Array.isArray(value)
    ? (value as Record<string, unknown>)
    : undefined;
}
