import { parentPort, workerData } from 'node:worker_threads';
import { Hasher, processBlock, transferList } from './verify-block';
import type { BlockKind } from './verify-block';

/** A worker thread of `auditrace verify`: blocks in, compact results out (see verify-block.ts). */
interface Task { type: 'block'; id: number; buf: Uint8Array; kind: BlockKind; torn: boolean }
interface Alg { type: 'alg'; chain: string; alg: string }

const data = workerData as { key?: Uint8Array };
const hasher = new Hasher(data.key ? Buffer.from(data.key) : undefined);
const knownAlg = new Map<string, string>();

parentPort!.on('message', (msg: Task | Alg) => {
  if (msg.type === 'alg') {
    knownAlg.set(msg.chain, msg.alg);
    return;
  }
  const result = processBlock(msg.id, msg.buf, msg.kind, msg.torn, hasher, knownAlg);
  parentPort!.postMessage(result, transferList(result));
});
