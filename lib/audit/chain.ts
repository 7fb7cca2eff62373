import { createHmac, hash } from 'node:crypto';
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { sequenceMemo } from '../sequence-memo';

/**
 * Tamper evidence: every record of a process carries its chain id, a sequence number and the hash
 * of the previous record's canonical form (RFC 8785), keyed with HMAC-SHA256 when a key is set so
 * that someone who can edit the file cannot recompute the chain. `auditrace verify` recomputes it.
 */

export type ChainAlgorithm = 'sha256' | 'hmac-sha256';

/**
 * How to write an object with a given key order canonically: its keys sorted (UTF-16 order), each
 * already quoted. Records of one kind share their key order, so the sort and the quoting are done
 * once per kind, found through a trie of the keys in their original order (no string is built to
 * look it up). The trie is bounded: input written by someone else cannot grow it without limit.
 */
export interface Plan {
  keys: string[];
  member: string[];
  /** For each sorted position, the key's index in the original order. */
  order: number[];
  /** The serialiser's own data for objects of these keys (lib/audit/serialize.ts), made on first use. */
  writer?: unknown;
}
const plans = sequenceMemo(20_000, makePlan);

function makePlan(keys: readonly string[]): Plan {
  const order = keys.map((_, i) => i).sort((a, b) => (keys[a]! < keys[b]! ? -1 : keys[a]! > keys[b]! ? 1 : 0));
  const sorted = order.map((i) => keys[i]!);
  return { keys: sorted, member: sorted.map((k) => `${JSON.stringify(k)}:`), order };
}

/**
 * The two plans used last, by their keys in original order: a record and the object inside it
 * alternate, and comparing the keys (interned strings: pointer compares) is cheaper than a trie
 * lookup per key (measured ≈ 15 % of a record's serialisation).
 */
let recentKeys0: readonly string[] = [];
let recentPlan0: Plan | undefined;
let recentKeys1: readonly string[] = [];
let recentPlan1: Plan | undefined;

function sameKeys(a: readonly string[], b: readonly string[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function planOf(keys: readonly string[]): Plan {
  if (recentPlan0 !== undefined && sameKeys(keys, recentKeys0)) return recentPlan0;
  if (recentPlan1 !== undefined && sameKeys(keys, recentKeys1)) return recentPlan1;
  const p = plans.get(keys);
  recentKeys1 = recentKeys0;
  recentPlan1 = recentPlan0;
  recentKeys0 = keys.slice();
  recentPlan0 = p;
  return p;
}

/**
 * Whether `canonicalize` of this object would keep its keys in the order they have and recurse
 * into nothing: every key already in sorted order, every value a string, a finite number, a
 * boolean or null. A line of such a record, as JSON.parse read it, may be its canonical form
 * (lib/forensics/verify-block.ts checks that by the hash); it need not be (spacing, escapes,
 * number forms).
 */
export function isCanonicalShape(value: Record<string, unknown>): boolean {
  const keys = Object.keys(value);
  const order = planOf(keys).order;
  for (let i = 0; i < order.length; i++) if (order[i] !== i) return false;
  for (const k of keys) {
    const v = value[k];
    const t = typeof v;
    if (t === 'string' || t === 'boolean' || v === null) continue;
    if (t === 'number' && Number.isFinite(v)) continue;
    return false;
  }
  return true;
}

/** RFC 8785 JSON Canonicalization: sorted keys (UTF-16 order), ECMAScript number and string form. */
export function canonicalize(value: unknown): string {
  if (value === null || typeof value !== 'object') {
    if (typeof value === 'number' && !Number.isFinite(value)) throw new TypeError('JCS: non-finite number');
    return JSON.stringify(value) ?? 'null';
  }
  if (Array.isArray(value)) {
    let out = '[';
    for (let i = 0; i < value.length; i++) out += (i ? ',' : '') + canonicalize(value[i]);
    return `${out}]`;
  }
  const keys = Object.keys(value);
  if (keys.length === 0) return '{}';
  // One native call for the values, in the keys' order; the plan maps sorted positions to them
  // (cheaper than a keyed lookup per member).
  const values = Object.values(value) as unknown[];
  const plan = planOf(keys);
  let out = '{';
  let written = 0;
  for (let i = 0; i < plan.order.length; i++) {
    const v = values[plan.order[i]!];
    if (v === undefined) continue;
    if (written++) out += ',';
    out += plan.member[i]!;
    out += typeof v === 'string' ? JSON.stringify(v) : canonicalize(v);
  }
  return `${out}}`;
}

/**
 * How the serialiser writes an object with these keys in canonical order: `order[j]` is the index
 * in `keys` of sorted position `j` (RFC 8785: UTF-16 code units), `keys` and `member` the keys in
 * that order and each as RFC 8785 writes it with its `:`. `keys` must be distinct (an object's or
 * a Map's string keys).
 */
export function keyPlan(keys: readonly string[]): Plan {
  return planOf(keys);
}

/** The hash of one record as the chain sees it. */
export function recordHash(record: unknown, key: Buffer | undefined): string {
  return canonicalHash(canonicalize(record), key);
}

function canonicalHash(canonical: string | Uint8Array, key: Buffer | undefined): string {
  return key ? createHmac('sha256', key).update(canonical).digest('hex') : hash('sha256', canonical, 'hex');
}

/** Fields a checkpoint's own MAC covers: the checkpoint record without its `audit.checkpoint.mac`. */
export function checkpointMac(record: Record<string, unknown>, key: Buffer): string {
  const { 'audit.checkpoint.mac': _omit, ...rest } = record;
  return createHmac('sha256', key).update(canonicalize(rest)).digest('hex');
}

export interface PreviousChain {
  chain: string;
  seq: number;
  hash: string;
}

/**
 * The last complete record of an existing audit file, read from its tail: the next process's chain
 * start names it, so a tail deleted between two runs is detectable.
 */
export function readPreviousChain(path: string, key: Buffer | undefined): PreviousChain | undefined {
  let fd: number | undefined;
  try {
    fd = openSync(path, 'r');
    const size = fstatSync(fd).size;
    if (size === 0) return undefined;
    const len = Math.min(size, 256 * 1024);
    const buf = Buffer.allocUnsafe(len);
    readSync(fd, buf, 0, len, size - len);
    const lines = buf.toString('utf8').split('\n');
    // A last line without its newline was torn by a crash: the record before it is the last whole one.
    for (let i = lines.length - 2; i >= 0 && i >= lines.length - 64; i--) {
      try {
        const r = JSON.parse(lines[i]!) as Record<string, unknown>;
        if (typeof r['audit.chain'] === 'string' && typeof r['audit.seq'] === 'number') {
          return { chain: r['audit.chain'], seq: r['audit.seq'], hash: recordHash(r, key) };
        }
      } catch {
        // not a record (or cut by the 256 KiB window): look one line further back
      }
    }
    return undefined;
  } catch {
    return undefined;
  } finally {
    if (fd !== undefined) {
      try { closeSync(fd); } catch { /* nothing to do */ }
    }
  }
}

/** The writer's side of the chain: stamps each record, then remembers its hash. */
export class HashChain {
  readonly alg: ChainAlgorithm;
  private seq = 0;
  private prev: string | undefined;

  constructor(readonly id: string, private readonly key: Buffer | undefined, previous?: PreviousChain) {
    this.alg = key ? 'hmac-sha256' : 'sha256';
    this.prev = previous?.hash;
  }

  /** Adds `audit.chain`, `audit.seq` and `audit.prev` to a record about to be written. */
  stamp(record: Record<string, unknown>): void {
    record['audit.chain'] = this.id;
    record['audit.seq'] = this.seq;
    if (this.prev !== undefined) record['audit.prev'] = this.prev;
  }

  /** Called with the record exactly as written (parsed back from its line). */
  commit(written: unknown): void {
    this.commitCanonical(canonicalize(written));
  }

  /** Called with the canonical form of the record exactly as written (text, or its UTF-8 bytes). */
  commitCanonical(canonical: string | Uint8Array): void {
    this.prev = canonicalHash(canonical, this.key);
    this.seq++;
  }

  get nextSeq(): number {
    return this.seq;
  }

  /** The hash the next record's `audit.prev` names (none before a chain's first record with no predecessor). */
  get previous(): string | undefined {
    return this.prev;
  }

  mac(record: Record<string, unknown>): string | undefined {
    return this.key ? checkpointMac(record, this.key) : undefined;
  }
}
