import { createRequire } from 'node:module';
import type { Instrumentation } from '@opentelemetry/instrumentation';

/**
 * The instrumentations of `@opentelemetry/auto-instrumentations-node`, by the short name that
 * `OTEL_NODE_{ENABLED,DISABLED}_INSTRUMENTATIONS` uses. We keep our own table instead of calling
 * `getNodeAutoInstrumentations()` because that function requires all ~41 packages (≈ 180 ms)
 * even when one is enabled; a test checks this table against the upstream map.
 */
export const instrumentationClasses: Readonly<Record<string, string>> = Object.freeze({
  amqplib: 'AmqplibInstrumentation',
  'aws-lambda': 'AwsLambdaInstrumentation',
  'aws-sdk': 'AwsInstrumentation',
  bunyan: 'BunyanInstrumentation',
  'cassandra-driver': 'CassandraDriverInstrumentation',
  connect: 'ConnectInstrumentation',
  cucumber: 'CucumberInstrumentation',
  dataloader: 'DataloaderInstrumentation',
  dns: 'DnsInstrumentation',
  express: 'ExpressInstrumentation',
  fs: 'FsInstrumentation',
  'generic-pool': 'GenericPoolInstrumentation',
  graphql: 'GraphQLInstrumentation',
  grpc: 'GrpcInstrumentation',
  hapi: 'HapiInstrumentation',
  'host-metrics': 'HostMetricsInstrumentation',
  http: 'HttpInstrumentation',
  ioredis: 'IORedisInstrumentation',
  kafkajs: 'KafkaJsInstrumentation',
  knex: 'KnexInstrumentation',
  koa: 'KoaInstrumentation',
  'lru-memoizer': 'LruMemoizerInstrumentation',
  memcached: 'MemcachedInstrumentation',
  mongodb: 'MongoDBInstrumentation',
  mongoose: 'MongooseInstrumentation',
  mysql2: 'MySQL2Instrumentation',
  mysql: 'MySQLInstrumentation',
  'nestjs-core': 'NestInstrumentation',
  net: 'NetInstrumentation',
  openai: 'OpenAIInstrumentation',
  oracledb: 'OracleInstrumentation',
  pg: 'PgInstrumentation',
  pino: 'PinoInstrumentation',
  redis: 'RedisInstrumentation',
  restify: 'RestifyInstrumentation',
  router: 'RouterInstrumentation',
  'runtime-node': 'RuntimeNodeInstrumentation',
  'socket.io': 'SocketIoInstrumentation',
  tedious: 'TediousInstrumentation',
  undici: 'UndiciInstrumentation',
  winston: 'WinstonInstrumentation',
});

export const instrumentationNames: readonly string[] = Object.freeze(Object.keys(instrumentationClasses));

/**
 * Off unless named in OTEL_NODE_ENABLED_INSTRUMENTATIONS: `fs`, `dns` and `net` make a span per
 * syscall-sized operation (hundreds of MiB at start-up in some apps), `host-metrics` is a metrics
 * poller rather than an instrumentation.
 */
export const defaultOffInstrumentations: readonly string[] = Object.freeze(['fs', 'dns', 'net', 'host-metrics']);

/** Which instrumentations run, given the two environment lists (already validated). */
export function selectInstrumentations(enabled: readonly string[] | undefined, disabled: readonly string[]): string[] {
  const base = enabled ?? instrumentationNames.filter((n) => !defaultOffInstrumentations.includes(n));
  return base.filter((n) => !disabled.includes(n));
}

// The instrumentation packages are dependencies of auto-instrumentations-node; resolving from there
// finds them even when npm did not hoist them next to us.
let resolveFromAuto: NodeJS.Require | undefined;
function autoRequire(): NodeJS.Require {
  if (!resolveFromAuto) {
    const local = createRequire(__filename);
    resolveFromAuto = createRequire(local.resolve('@opentelemetry/auto-instrumentations-node'));
  }
  return resolveFromAuto;
}

export interface LoadedInstrumentations {
  instrumentations: Instrumentation[];
  failed: { name: string; error: string }[];
}

/** Requires and constructs only the named instrumentations. */
export function loadInstrumentations(names: readonly string[], configs: Record<string, object> = {}): LoadedInstrumentations {
  const instrumentations: Instrumentation[] = [];
  const failed: { name: string; error: string }[] = [];
  for (const name of names) {
    const className = instrumentationClasses[name];
    if (!className) continue;
    try {
      const mod = autoRequire()(`@opentelemetry/instrumentation-${name}`) as Record<string, new (c: object) => Instrumentation>;
      const Ctor = mod[className];
      if (typeof Ctor !== 'function') throw new Error(`export ${className} not found`);
      instrumentations.push(new Ctor(configs[name] ?? {}));
    } catch (err) {
      failed.push({ name, error: err instanceof Error ? err.message : String(err) });
    }
  }
  return { instrumentations, failed };
}
