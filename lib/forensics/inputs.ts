import { readdirSync, statSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';

/**
 * The files `auditrace trail` and `auditrace verify` read, from `--file` and `--archive`.
 *
 * - `local`: audit files as auditrace writes them (one record per line). `--file F` also takes the
 *   rotated `F.1`, `F.2`, … (oldest first); a directory means every `*.jsonl` / `*.jsonl.N` in it.
 * - `archive`: the gateway's archive (`audit.jsonl.zst*`, `traces.jsonl.zst*`, with or without
 *   `.zst`): one OTLP/JSON export request per line, zstd frames or plain. Compression is detected
 *   from the bytes, not the name. `signal` says what the name promises; a line is still dispatched
 *   on its own content (`resourceLogs` / `resourceSpans`).
 */
export type InputKind = 'local' | 'archive';
export type Signal = 'logs' | 'traces' | 'any';

export interface Input {
  path: string;
  /** As shown in reports: the path as given, relative names stay relative. */
  display: string;
  kind: InputKind;
  signal: Signal;
  size: number;
}

/** A command-line mistake: exit code 2. */
export class UsageError extends Error {}

const LOCAL_NAME = /\.jsonl(?:\.\d+)?$/;
const ROTATED = /^(.*)\.(\d+)$/;

function stat(path: string): ReturnType<typeof statSync> | undefined {
  try {
    return statSync(path);
  } catch {
    return undefined;
  }
}

/** `F`'s rotated siblings `F.1` … `F.N`, highest (oldest) number first. */
function rotatedSiblings(file: string): string[] {
  const dir = dirname(file);
  const base = basename(file);
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return [];
  }
  const found: [number, string][] = [];
  for (const n of names) {
    if (!n.startsWith(`${base}.`)) continue;
    const rest = n.slice(base.length + 1);
    if (/^\d+$/.test(rest)) found.push([Number(rest), join(dir, n)]);
  }
  return found.sort((a, b) => b[0] - a[0]).map(([, p]) => p);
}

/** Audit files in a directory: grouped by base name, each group oldest rotation first. */
function localFilesIn(dir: string): string[] {
  const names = readdirSync(dir).filter((n) => LOCAL_NAME.test(n) && stat(join(dir, n))?.isFile());
  const key = (n: string): [string, number] => {
    const m = ROTATED.exec(n);
    return m && /\.jsonl$/.test(m[1]!) ? [m[1]!, Number(m[2])] : [n, 0];
  };
  return names.sort((a, b) => {
    const [ba, ra] = key(a);
    const [bb, rb] = key(b);
    return ba < bb ? -1 : ba > bb ? 1 : rb - ra;
  }).map((n) => join(dir, n));
}

function archiveSignal(name: string): Signal {
  if (name.startsWith('traces')) return 'traces';
  if (name.startsWith('audit') || name.startsWith('logs')) return 'logs';
  return 'any';
}

/** Archive files in a directory: `audit*` and `traces*` files that are JSON lines (`.jsonl` in the name). */
function archiveFilesIn(dir: string): string[] {
  const names = readdirSync(dir).filter((n) => n.includes('.jsonl') && (n.startsWith('audit') || n.startsWith('traces'))
    && stat(join(dir, n))?.isFile());
  // Rotated backups (`audit.jsonl-<time>.zst`) sort before the live file ('-' < '.'); by time within.
  return names.sort().map((n) => join(dir, n));
}

export function resolveInputs(files: readonly string[], archives: readonly string[]): Input[] {
  const out: Input[] = [];
  const seen = new Set<string>();
  const add = (path: string, kind: InputKind, signal: Signal, display: string): void => {
    const abs = resolve(path);
    if (seen.has(abs)) return;
    const st = stat(abs);
    if (!st?.isFile()) return;
    seen.add(abs);
    out.push({ path: abs, display, kind, signal, size: Number(st.size) });
  };
  for (const f of files) {
    const st = stat(f);
    if (st?.isDirectory()) {
      const list = localFilesIn(f);
      if (list.length === 0) throw new UsageError(`--file ${f}: the directory holds no *.jsonl audit file`);
      for (const p of list) add(p, 'local', 'logs', p);
      continue;
    }
    const rotated = rotatedSiblings(f);
    if (!st && rotated.length === 0) throw new UsageError(`--file ${f}: no such file`);
    if (st && !st.isFile()) throw new UsageError(`--file ${f}: not a regular file`);
    for (const p of rotated) add(p, 'local', 'logs', p);
    if (st) add(f, 'local', 'logs', f);
  }
  for (const a of archives) {
    const st = stat(a);
    if (!st) throw new UsageError(`--archive ${a}: no such directory`);
    if (st.isDirectory()) {
      const list = archiveFilesIn(a);
      if (list.length === 0) throw new UsageError(`--archive ${a}: no audit.jsonl* or traces.jsonl* file in it`);
      for (const p of list) add(p, 'archive', archiveSignal(basename(p)), p);
    } else if (st.isFile()) {
      add(a, 'archive', archiveSignal(basename(a)), a);
    } else {
      throw new UsageError(`--archive ${a}: not a directory or file`);
    }
  }
  return out;
}
