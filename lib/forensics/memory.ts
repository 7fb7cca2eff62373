import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

/**
 * Keeps the CLI's memory flat. Every block read or decompressed is a fresh Buffer that is garbage a
 * moment later; V8 collects such external memory only once about 64 MB of it has piled up, so the
 * peak RSS of a streaming pass is mostly garbage. When enabled (by the CLI, never by the library
 * on its own), a full collection runs after every `every` bytes of input: a few milliseconds each
 * on a heap that holds almost nothing.
 */
let collect: (() => void) | undefined;
let every = 0;
let since = 0;

export function enableReclaim(bytes = 32 * 1024 * 1024): void {
  try {
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as ((o?: { type: string }) => void) | undefined;
    if (typeof gc === 'function') {
      collect = () => gc({ type: 'major' });
      every = bytes;
    }
  } catch {
    collect = undefined;
  }
}

/** Counts bytes handed out; collects when enough have passed. */
export function reclaim(bytes: number): void {
  if (!collect) return;
  since += bytes;
  if (since < every) return;
  since = 0;
  collect();
}
