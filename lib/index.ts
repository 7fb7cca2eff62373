export { start, shutdown, forceFlush } from './start';
export { nodeSdkOptions } from './node-sdk';
export { parseConfig, variables } from './config';
export type { Config } from './config';
export { version } from './version';
