import type { Config } from './config';
import { instanceIdentity } from './resource';

let cached: Record<string, string | number | string[]> | undefined;

/**
 * This process's identity attributes, computed once: the resource of every signal and every audit
 * record must name the same `service.instance.id`.
 */
export function processIdentity(config: Readonly<Config>): Readonly<Record<string, string | number | string[]>> {
  cached ??= Object.freeze(instanceIdentity({
    env: process.env,
    serviceName: config.serviceName,
    resourceAttributes: { ...config.resourceAttributes },
  }));
  return cached;
}
