import { createHash, hash } from 'node:crypto';
import type { Hash } from 'node:crypto';
import { canonicalize, checkpointMac, isCanonicalShape } from '../audit/chain';
import { canonicalOfSorted, CHAIN_EVENTS, notRecordField, recordsOfLogsRequest } from './otlp';
import type { KeyValue } from './otlp';

/**
 * The per-line work of `auditrace verify`, free of shared state so that worker threads can do it:
 * parse each line once, canonicalise the record (RFC 8785, `canonicalize` of lib/audit/chain.ts),
 * hash it (SHA-256, and HMAC-SHA256 when a key is given), verify checkpoint MACs, and hand back
 * compact typed arrays. Everything that needs the whole input (order, gaps, duplicates, links) is
 * decided by the caller from these results (verify.ts).
 */

export type BlockKind = 'local' | 'archive';

export interface Special {
  /** Index of the record in the block result. */
  i: number;
  event: string;
  time: string;
  alg?: string;
  previous?: string;
  previousSeq?: number;
  /** `audit.checkpoint.records`. */
  records?: number;
  intervalMs?: number;
  /** MAC of a chain start/checkpoint/chain end: verified with the key, not verifiable (no key), or absent. */
  mac?: 'ok' | 'bad' | 'missing' | 'unchecked';
}

export interface ChainMeta {
  chain: string;
  service?: string;
  instance?: string;
  pod?: string;
  firstTime?: string;
  lastTime?: string;
  /** Highest seq in the block, and its hashes both ways when a key is given (for the next chain's start). */
  maxSeq: number;
  tailK?: Uint8Array;
  tailU?: Uint8Array;
}

export type ProblemKind = 'not-json' | 'torn' | 'no-chain' | 'bad-chain-field' | 'not-otlp' | 'body' | 'repeated-key';

export interface BlockProblem {
  /** Line offset within the block (0-based). */
  line: number;
  batch: number;
  kind: ProblemKind;
  message: string;
  /** The chain of a record kept in it despite the problem (its archived copy disagrees with itself). */
  chain?: string;
}

export interface BlockResult {
  id: number;
  lines: number;
  /** Records with chain fields. */
  n: number;
  /** All records seen (with or without chain fields). */
  records: number;
  otlpCopies: number;
  chains: ChainMeta[];
  chainIdx: Uint32Array;
  seq: Float64Array;
  line: Uint32Array;
  batch: Int32Array;
  /**
   * Within an archive batch, which audit file the record was tailed from (0, 1, … per line): the
   * agent reads several files at once, so only records of one file keep their order in a batch.
   */
  sub: Uint16Array;
  /** Bit 1: keyed hash present, bit 2: plain hash present. */
  has: Uint8Array;
  hashK: Uint8Array;
  hashU: Uint8Array;
  prev: Uint8Array;
  /** 0: no `audit.prev`, 1: read, 2: not 64 hex digits. */
  prevState: Uint8Array;
  specials: Special[];
  problems: BlockProblem[];
}

export const HAS_K = 1;
export const HAS_U = 2;

/** HMAC-SHA256 with the key's pads hashed once: RFC 2104 on `createHash` states that are copied per record. */
export class Hasher {
  private readonly inner: Hash | undefined;
  private readonly outer: Hash | undefined;

  constructor(readonly key: Buffer | undefined) {
    if (!key) return;
    let k = key;
    if (k.length > 64) k = createHash('sha256').update(k).digest();
    const ipad = Buffer.alloc(64, 0x36);
    const opad = Buffer.alloc(64, 0x5c);
    for (let i = 0; i < k.length; i++) {
      ipad[i]! ^= k[i]!;
      opad[i]! ^= k[i]!;
    }
    this.inner = createHash('sha256').update(ipad);
    this.outer = createHash('sha256').update(opad);
  }

  plain(canonical: string): Buffer {
    return hash('sha256', canonical, 'buffer');
  }

  keyed(canonical: string): Buffer {
    return this.outer!.copy().update(this.inner!.copy().update(canonical).digest()).digest();
  }
}


class Growable {
  n = 0;
  cap: number;
  chainIdx: Uint32Array; seq: Float64Array; line: Uint32Array; batch: Int32Array; sub: Uint16Array; has: Uint8Array;
  hashK: Uint8Array; hashU: Uint8Array; prev: Uint8Array; prevState: Uint8Array;
  /** Raw-line hashing: 1 hashed raw, not confirmed; 2 confirmed; 0 hashed canonically. Not sent back. */
  rawState: Uint8Array;

  constructor(cap: number) {
    this.cap = cap;
    this.chainIdx = new Uint32Array(cap); this.seq = new Float64Array(cap); this.line = new Uint32Array(cap);
    this.batch = new Int32Array(cap); this.sub = new Uint16Array(cap); this.has = new Uint8Array(cap); this.hashK = new Uint8Array(cap * 32);
    this.hashU = new Uint8Array(cap * 32); this.prev = new Uint8Array(cap * 32); this.prevState = new Uint8Array(cap);
    this.rawState = new Uint8Array(cap);
  }

  grow(): void {
    const cap = this.cap * 2;
    const g = <T extends Uint8Array | Uint16Array | Uint32Array | Int32Array | Float64Array>(a: T, per = 1): T => {
      const b = new (a.constructor as new (n: number) => T)(cap * per);
      b.set(a);
      return b;
    };
    this.chainIdx = g(this.chainIdx); this.seq = g(this.seq); this.line = g(this.line); this.batch = g(this.batch); this.sub = g(this.sub);
    this.has = g(this.has); this.hashK = g(this.hashK, 32); this.hashU = g(this.hashU, 32); this.prev = g(this.prev, 32);
    this.prevState = g(this.prevState); this.rawState = g(this.rawState);
    this.cap = cap;
  }

  private prevView: Buffer | undefined;

  /** `prev` as a Buffer, for hex writes without a copy. */
  prevBytes(): Buffer {
    if (!this.prevView || this.prevView.buffer !== this.prev.buffer) this.prevView = Buffer.from(this.prev.buffer, this.prev.byteOffset, this.prev.byteLength);
    return this.prevView;
  }

  trimmed<T extends Uint8Array | Uint16Array | Uint32Array | Int32Array | Float64Array>(a: T, per = 1): T {
    return a.slice(0, this.n * per) as T;
  }
}

const HEX64 = /^[0-9a-f]{64}$/;

/**
 * Processes one block. `knownAlg` is the caller's (worker's) knowledge of each chain's algorithm,
 * learnt from chain starts: with a key, a record of a chain of unknown algorithm is hashed both
 * ways; once known, only the one way.
 */
export function processBlock(id: number, buf: Uint8Array, kind: BlockKind, torn: boolean, hasher: Hasher,
  knownAlg: Map<string, string>): BlockResult {
  const text = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength).toString('utf8');
  const key = hasher.key;
  const out = new Growable(Math.max(64, Math.ceil(text.length / 400)));
  const chains: ChainMeta[] = [];
  const chainIndex = new Map<string, number>();
  const tailCanonical: (string | undefined)[] = [];
  const specials: Special[] = [];
  const problems: BlockProblem[] = [];
  let records = 0;
  let otlpCopies = 0;
  /** The last line of a local file that was not JSON: a torn write if a new chain starts right after it. */
  let notJson: { problem: number; line: number; bytes: number } | undefined;

  // Raw-line hashing (local files, no key): a line whose record has its keys in canonical order and
  // only plain values is hashed as it is, and that hash stands only once the chain's next record
  // names it as its `audit.prev` — a SHA-256 match of the raw bytes with the hash the writer took
  // of the canonical form means they are the same bytes. Any other line (no such successor in the
  // block, a different prev, a gap) is canonicalised after the block, as every line used to be.
  const raw = kind === 'local' && !key;
  const rawStart: number[] = [];
  const rawEnd: number[] = [];
  /** Per chain, the index of its last record hashed raw and not yet confirmed; -1: none. */
  const pendingRaw: number[] = [];

  const addRecord = (rec: Record<string, unknown>, lineNo: number, batch: number, sub = 0, line?: string, start = 0, sorted?: KeyValue[],
    body?: string): void => {
    records++;
    const chain = rec['audit.chain'];
    const seq = rec['audit.seq'];
    if (typeof chain !== 'string' || seq === undefined) {
      problems.push({ line: lineNo, batch, kind: 'no-chain', message: rec['audit.id'] === undefined
        ? 'not an audit record (no audit.id, audit.chain, audit.seq)'
        : `record ${String(rec['audit.id'])} has no audit.chain/audit.seq: not written by auditrace's hash chain (inserted?)` });
      return;
    }
    if (typeof seq !== 'number' || !Number.isSafeInteger(seq) || seq < 0) {
      problems.push({ line: lineNo, batch, kind: 'bad-chain-field', message: `audit.seq ${JSON.stringify(seq)} is not a non-negative integer (modified record)` });
      return;
    }
    let c = chainIndex.get(chain);
    if (c === undefined) {
      c = chains.length;
      chainIndex.set(chain, c);
      chains.push({ chain, maxSeq: -1 });
      tailCanonical.push(undefined);
      pendingRaw.push(-1);
    }
    const meta = chains[c]!;
    const time = typeof rec.time === 'string' ? rec.time : undefined;
    if (meta.service === undefined && typeof rec['service.name'] === 'string') meta.service = rec['service.name'];
    if (meta.instance === undefined && typeof rec['service.instance.id'] === 'string') meta.instance = rec['service.instance.id'];
    if (meta.pod === undefined && typeof rec['k8s.pod.name'] === 'string') meta.pod = rec['k8s.pod.name'];
    if (time !== undefined) {
      if (meta.firstTime === undefined || time < meta.firstTime) meta.firstTime = time;
      if (meta.lastTime === undefined || time > meta.lastTime) meta.lastTime = time;
    }
    const event = rec['event.name'];
    if (event === 'audit_chain_start' && seq === 0 && notJson?.line === lineNo - 1) {
      // A process that crashed mid-write left a fragment; the next one ended it with a newline
      // before its chain start (the crash itself shows as the previous chain's missing end).
      problems[notJson.problem] = { line: notJson.line, batch: -1, kind: 'torn',
        message: `torn line (${notJson.bytes} bytes without its end: a crash mid-write, ended by the next process, whose audit_chain_start follows) (skipped)` };
    }
    if (event === 'audit_chain_start' && typeof rec['audit.chain.alg'] === 'string' && !knownAlg.has(chain)) {
      knownAlg.set(chain, rec['audit.chain.alg']);
    }
    const asIs = raw && line !== undefined && isCanonicalShape(rec);
    let canon = '';
    let repeated: string | undefined;
    if (!asIs) {
      try {
        // An archived record's canonical form is written from its attributes, which arrive in no
        // fixed order: sorted once, they need no plan of their own per record (otlp.ts).
        canon = sorted ? canonicalOfSorted(sorted, notRecordField, (k) => { repeated ??= k; }) : canonicalize(rec);
      } catch (err) {
        problems.push({ line: lineNo, batch, kind: 'bad-chain-field', message: `cannot be canonicalised (${(err as Error).message})` });
        return;
      }
    }
    // The chain is checked on the attributes; the record stays in it (its links decide whether
    // the attributes were changed), and a second, different record beside it is reported here.
    if (repeated !== undefined) {
      problems.push({ line: lineNo, batch, kind: 'repeated-key', chain,
        message: `attribute ${JSON.stringify(repeated)} appears more than once in the log record (the collector writes each once): modified record (seq ${seq})` });
    }
    if (body !== undefined && !sameRecord(body, canon)) {
      problems.push({ line: lineNo, batch, kind: 'body', chain,
        message: `the record's body differs from its attributes: modified record (seq ${seq})` });
    }
    if (out.n === out.cap) out.grow();
    const i = out.n++;
    out.chainIdx[i] = c;
    out.seq[i] = seq;
    out.line[i] = lineNo;
    out.batch[i] = batch;
    out.sub[i] = sub;
    const alg = knownAlg.get(chain);
    let has = 0;
    if (key && alg !== 'sha256') {
      out.hashK.set(hasher.keyed(canon), i * 32);
      has |= HAS_K;
    }
    if (!key || alg !== 'hmac-sha256') {
      out.hashU.set(hasher.plain(asIs ? line! : canon), i * 32);
      has |= HAS_U;
    }
    out.has[i] = has;
    const prev = rec['audit.prev'];
    if (prev === undefined) {
      out.prevState[i] = 0;
    } else if (typeof prev === 'string' && prev.length === 64 && out.prevBytes().write(prev, i * 32, 32, 'hex') === 32 && HEX64.test(prev)) {
      out.prevState[i] = 1;
    } else {
      out.prevState[i] = 2;
    }
    if (raw) {
      const p = pendingRaw[c]!;
      if (p >= 0 && out.seq[p] === seq - 1 && out.prevState[i] === 1 && sameHash(out.hashU, p * 32, out.prev, i * 32)) out.rawState[p] = 2;
      if (asIs) {
        out.rawState[i] = 1;
        rawStart[i] = start;
        rawEnd[i] = start + line!.length;
      }
      pendingRaw[c] = asIs ? i : -1;
    }
    if (seq > meta.maxSeq) {
      meta.maxSeq = seq;
      tailCanonical[c] = canon;
    }
    if (seq === 0 || (typeof event === 'string' && CHAIN_EVENTS.has(event))) {
      const s: Special = { i, event: String(event), time: time ?? '' };
      if (event === 'audit_chain_start') {
        if (typeof rec['audit.chain.alg'] === 'string') s.alg = rec['audit.chain.alg'];
        if (typeof rec['audit.chain.previous'] === 'string') s.previous = rec['audit.chain.previous'];
        if (typeof rec['audit.chain.previous_seq'] === 'number') s.previousSeq = rec['audit.chain.previous_seq'];
      } else if (event === 'audit_checkpoint' || event === 'audit_chain_end') {
        if (typeof rec['audit.checkpoint.records'] === 'number') s.records = rec['audit.checkpoint.records'];
        if (typeof rec['audit.checkpoint.interval_ms'] === 'number') s.intervalMs = rec['audit.checkpoint.interval_ms'];
      }
      if (event === 'audit_chain_start' || event === 'audit_checkpoint' || event === 'audit_chain_end') {
        const mac = rec['audit.checkpoint.mac'];
        if (typeof mac !== 'string') s.mac = 'missing';
        else if (!key) s.mac = 'unchecked';
        else s.mac = checkpointMac(rec, key) === mac ? 'ok' : 'bad';
      }
      specials.push(s);
    }
  };

  let lineNo = 0;
  let pos = 0;
  const len = text.length;
  while (pos < len) {
    let nl = text.indexOf('\n', pos);
    if (nl < 0) nl = len;
    const start = pos;
    const line = text.slice(pos, nl);
    pos = nl + 1;
    const ln = lineNo++;
    if (line.length === 0 || (line.length === 1 && line === '\r')) continue;
    if (kind === 'archive' && (line.startsWith('{"resourceSpans"') || line.startsWith('{"resourceMetrics"'))) continue;
    let parsed: unknown;
    try {
      parsed = JSON.parse(line);
    } catch {
      if (kind === 'local' && !torn) notJson = { problem: problems.length, line: ln, bytes: Buffer.byteLength(line) };
      problems.push(torn
        ? { line: ln, batch: -1, kind: 'torn', message: kind === 'local'
          ? `torn last line (${Buffer.byteLength(line)} bytes without newline: a crash mid-write?) (skipped)`
          : `incomplete line (${Buffer.byteLength(line)} bytes) cut by damage to the zstd stream (skipped)` }
        : { line: ln, batch: -1, kind: 'not-json', message: 'not JSON (skipped)' });
      continue;
    }
    if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
      problems.push({ line: ln, batch: -1, kind: 'not-json', message: 'not a JSON object (skipped)' });
      continue;
    }
    if (kind === 'local') {
      addRecord(parsed as Record<string, unknown>, ln, -1, 0, line, start);
      continue;
    }
    const obj = parsed as Record<string, unknown>;
    if (obj.resourceLogs !== undefined) {
      const sources = new Map<string, number>();
      let archived: ReturnType<typeof recordsOfLogsRequest>;
      try {
        archived = recordsOfLogsRequest(obj, true);
      } catch (err) {
        // Damage no reader foresaw (nesting deeper than the stack): this line, not the whole run.
        problems.push({ line: ln, batch: -1, kind: 'not-otlp', message: `not a readable OTLP/JSON logs export request (${(err as Error).message}) (skipped)` });
        continue;
      }
      for (const r of archived) {
        if (!r.tailed) { otlpCopies++; continue; }
        let sub = sources.get(r.source);
        if (sub === undefined) { sub = Math.min(sources.size, 0xffff); sources.set(r.source, sub); }
        addRecord(r.record, ln, r.index, sub, undefined, 0, r.sorted, r.body);
      }
    } else if (obj.resourceSpans === undefined && obj.resourceMetrics === undefined) {
      problems.push({ line: ln, batch: -1, kind: 'not-otlp', message: 'not an OTLP/JSON export request (skipped)' });
    }
  }

  if (raw) {
    for (let i = 0; i < out.n; i++) {
      if (out.rawState[i] !== 1) continue;
      // Parsed and checked once already: the same text parses and canonicalises again.
      const canon = canonicalize(JSON.parse(text.slice(rawStart[i], rawEnd[i])));
      out.hashU.set(hasher.plain(canon), i * 32);
    }
  }

  for (let c = 0; c < chains.length; c++) {
    const canon = tailCanonical[c];
    if (canon !== undefined && key) {
      chains[c]!.tailK = hasher.keyed(canon);
      chains[c]!.tailU = hasher.plain(canon);
    }
  }
  return {
    id, lines: lineNo, n: out.n, records, otlpCopies, chains,
    chainIdx: out.trimmed(out.chainIdx), seq: out.trimmed(out.seq), line: out.trimmed(out.line), batch: out.trimmed(out.batch), sub: out.trimmed(out.sub),
    has: out.trimmed(out.has), hashK: key ? out.trimmed(out.hashK, 32) : new Uint8Array(0), hashU: out.trimmed(out.hashU, 32),
    prev: out.trimmed(out.prev, 32), prevState: out.trimmed(out.prevState), specials, problems,
  };
}

/**
 * Whether an archived record's body (the line the agent tailed) is the record whose canonical form
 * is `canon`. auditrace writes its lines in canonical form, so a string comparison decides nearly
 * every record; a line written otherwise (or by an older version) is parsed and canonicalised.
 */
export function sameRecord(body: string, canon: string): boolean {
  if (body === canon) return true;
  try {
    return canonicalize(JSON.parse(body)) === canon;
  } catch {
    return false;
  }
}

function sameHash(a: Uint8Array, ai: number, b: Uint8Array, bi: number): boolean {
  for (let k = 0; k < 32; k++) if (a[ai + k] !== b[bi + k]) return false;
  return true;
}

/** The ArrayBuffers of a result, for a zero-copy postMessage. */
export function transferList(r: BlockResult): ArrayBuffer[] {
  return [r.chainIdx, r.seq, r.line, r.batch, r.sub, r.has, r.hashK, r.hashU, r.prev, r.prevState]
    .map((a) => a.buffer as ArrayBuffer);
}
