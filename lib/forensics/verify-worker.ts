import { parentPort, workerData } from 'node:worker_threads';
import { Hasher, processBlock, transferList } from './verify-block';
import type { BlockKind } from './verify-block';

/** A worker thread of `auditrace verify`: blocks in, compact results out (see verify-block.ts). */
interface Task { type: 'block'; id: number; buf: Uint8Array; kind: BlockKind; torn: boolean }
interface Alg { type: 'alg'; chain: string; alg: string }

const data = workerData as { key?: Uint8Array };
const hasher = new Hasher(data.key ? Buffer.from(data.key) : undefined);
const knownAlg = new Map<string, string>();
// When the CLI exposed the collector (memory.ts), the heap of parsed lines is collected every
// 32 MB of input instead of growing until V8 decides to.
const gc = (globalThis as { gc?: (o?: { type: string }) => void }).gc;
let since = 0;

parentPort!.on('message', (msg: Task | Alg) => {
  if (msg.type === 'alg') {
    knownAlg.set(msg.chain, msg.alg);
    return;
  }
  const result = processBlock(msg.id, msg.buf, msg.kind, msg.torn, hasher, knownAlg);
  parentPort!.postMessage(result, transferList(result));
  since += msg.buf.byteLength;
  if (gc && since >= 32 * 1024 * 1024) {
    since = 0;
    gc({ type: 'major' });
  }
});
