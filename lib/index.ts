export { start, shutdown, forceFlush } from './start';
export { nodeSdkOptions } from './node-sdk';
export { parseConfig, variables } from './config';
export type { Config } from './config';
export { audit } from './audit/auditor';
export type { Audit } from './audit/auditor';
export type { AuditFields, EventName } from './audit/catalogue';
export { catalogue } from './audit/catalogue';
export { correlationFields } from './logger';
export { version } from './version';
import type { Logger } from 'winston';
import { getLogger } from './logger';

/** The preconfigured winston logger, created on first use. */
export const logger: Logger = new Proxy({} as Logger, {
  get(_t, prop) {
    const l = getLogger() as unknown as Record<string | symbol, unknown>;
    const v = l[prop];
    return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(l) : v;
  },
});
