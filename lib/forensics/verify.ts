import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import * as workerThreads from 'node:worker_threads';
import { Worker } from 'node:worker_threads';
import type { Input } from './inputs';
import { inInput, longLineMessage, readBlocks, where } from './read';
import type { Block, ReadEvents } from './read';
import { HAS_K, HAS_U, Hasher, processBlock } from './verify-block';
import type { BlockProblem, BlockResult, ChainMeta, Special } from './verify-block';

/**
 * `auditrace verify`: recomputes every hash chain found in the inputs and reports, with file and
 * line, every record that was deleted, inserted, modified or reordered, every chain whose start,
 * tail or end is missing or altered, and every checkpoint MAC that does not verify.
 *
 * One streaming pass. Lines are parsed, canonicalised and hashed by worker threads (verify-block.ts);
 * this thread keeps, per chain, 32-byte hashes and `audit.prev` values in typed arrays indexed by
 * seq (about 80 bytes per record), decides order and duplicates as results arrive in input order,
 * and checks gaps and links once everything is read, so records may arrive in any order (an
 * archive written by several collector consumers is not in seq order).
 */

export interface VerifyOptions {
  inputs: Input[];
  /** The HMAC key (from the environment); undefined when none was given. */
  key: Buffer | undefined;
  keyEnv: string;
  live: boolean;
  /** Milliseconds since the epoch; for `--live`. */
  now?: number;
  /** Worker threads; undefined: chosen from the input size and the CPUs. 0: all in this thread. */
  workers?: number | undefined;
  events: ReadEvents;
}

export type Severity = 'error' | 'notice';

export interface Finding {
  severity: Severity;
  kind: string;
  chain?: string;
  message: string;
  where?: string[];
}

export interface ChainReport {
  chain: string;
  service?: string;
  instance?: string;
  pod?: string;
  alg?: string;
  firstSeq: number;
  lastSeq: number;
  records: number;
  duplicates: number;
  firstTime?: string;
  lastTime?: string;
  previous?: string;
  status: 'closed' | 'open' | 'live';
  intact: boolean;
  files: string[];
}

export interface InputReport {
  path: string;
  kind: string;
  bytes: number;
  decompressedBytes: number;
  lines: number;
  records: number;
}

export interface VerifyReport {
  ok: boolean;
  inputs: InputReport[];
  chains: ChainReport[];
  findings: Finding[];
  /** Findings left out of `findings` (more than 20 of one kind in one chain). */
  omitted: number;
  stats: {
    bytes: number;
    decompressedBytes: number;
    records: number;
    chainRecords: number;
    duplicates: number;
    otlpCopies: number;
    seconds: number;
    mbPerSecond: number;
    workers: number;
  };
}

/**
 * A chain's records are kept in arrays indexed by seq, so memory follows the largest seq, which a
 * record can claim at will. The arrays of all chains together hold at most DENSE_FACTOR x the
 * chain records read + DENSE_SLACK entries: a record whose seq would grow them past that is set
 * aside (`ChainState.aside`) and judged once every record is read, kept if its chain's records
 * make the seq plausible and the bound allows, else reported. Memory thus follows the records
 * present (≈ 80 bytes x DENSE_FACTOR each), never a seq alone, however many chains claim one. The
 * slack admits a chain whose first records are not in the inputs (rotated away) or arrive last.
 */
const DENSE_FACTOR = 8;
const DENSE_SLACK = 1_000_000;
const plausibleSeq = (records: number): number => DENSE_FACTOR * records + DENSE_SLACK;
const DEFAULT_INTERVAL_MS = 60_000;
const MAX_PER_KIND = 20;

interface Candidate {
  k?: Buffer;
  u?: Buffer;
  prev?: Buffer;
  prevState: number;
  file: number;
  line: number;
  batch: number;
}

export interface Located<T> { seq: number; where: string; s: T }

/** A record set aside for its seq (see DENSE_FACTOR). */
interface Aside extends Candidate { has: number }

class ChainState {
  meta: ChainMeta;
  alg: string | undefined;
  cap = 0;
  present = new Uint8Array(0);
  has = new Uint8Array(0);
  hashK = new Uint8Array(0);
  hashU = new Uint8Array(0);
  prev = new Uint8Array(0);
  prevState = new Uint8Array(0);
  file = new Uint16Array(0);
  line = new Uint32Array(0);
  batch = new Int32Array(0);
  maxSeq = -1;
  count = 0;
  duplicates = 0;
  alternates = new Map<number, Candidate[]>();
  /** Records whose seq was too far ahead of the records read so far to be placed yet. */
  aside = new Map<number, Aside[]>();
  starts: Located<Special>[] = [];
  ends: Located<Special>[] = [];
  checkpoints: Located<Special>[] = [];
  tail: { seq: number; k?: Uint8Array; u?: Uint8Array } = { seq: -1 };
  /** For order within one file (local) or one export request (archive). */
  orderSource = '';
  orderLast = -1;
  files = new Set<number>();

  constructor(readonly id: string) {
    this.meta = { chain: id, maxSeq: -1 };
  }

  /** Hash arrays are allocated for the kinds of hash the records bring (keyed, plain, or both). */
  private useK = false;
  private useU = false;

  needK(): void {
    if (this.useK) return;
    this.useK = true;
    this.hashK = new Uint8Array(this.cap * 32);
  }

  needU(): void {
    if (this.useU) return;
    this.useU = true;
    this.hashU = new Uint8Array(this.cap * 32);
  }

  /** Entries the arrays would grow by to hold `seq`. */
  growthFor(seq: number): number {
    return seq < this.cap ? 0 : Math.max(seq + 1, Math.ceil(this.cap * 1.5), 1024) - this.cap;
  }

  ensure(seq: number): void {
    if (seq < this.cap) return;
    const cap = this.cap + this.growthFor(seq);
    const grow = <T extends Uint8Array | Uint16Array | Uint32Array | Int32Array>(a: T, per = 1): T => {
      const b = new (a.constructor as new (n: number) => T)(cap * per);
      b.set(a);
      return b;
    };
    this.present = grow(this.present);
    this.has = grow(this.has);
    if (this.useK) this.hashK = grow(this.hashK, 32);
    if (this.useU) this.hashU = grow(this.hashU, 32);
    this.prev = grow(this.prev, 32);
    this.prevState = grow(this.prevState);
    this.file = grow(this.file);
    this.line = grow(this.line);
    this.batch = grow(this.batch);
    this.cap = cap;
  }

  /** The hash of the record at `seq` by `alg`, if it was computed. */
  hashOf(seq: number, alg: string): Uint8Array | undefined {
    if (seq === this.tail.seq) {
      const t = alg === 'hmac-sha256' ? this.tail.k : this.tail.u;
      if (t) return t;
    }
    if (seq < 0 || seq > this.maxSeq || !this.present[seq]) return undefined;
    if (alg === 'hmac-sha256') return this.has[seq]! & HAS_K ? this.hashK.subarray(seq * 32, seq * 32 + 32) : undefined;
    return this.has[seq]! & HAS_U ? this.hashU.subarray(seq * 32, seq * 32 + 32) : undefined;
  }
}

function eq32(a: Uint8Array, ao: number, b: Uint8Array, bo: number): boolean {
  for (let i = 0; i < 32; i++) if (a[ao + i] !== b[bo + i]) return false;
  return true;
}

function range(a: number, b: number): string {
  return a === b ? `seq ${a}` : `seq ${a}..${b}`;
}

class Findings {
  readonly list: Finding[] = [];
  private readonly counts = new Map<string, number>();
  omitted = 0;
  errors = 0;
  /** Errors by chain: some are found while reading, before the chain is judged. */
  private readonly chainErrors = new Map<string, number>();

  add(f: Finding): void {
    if (f.severity === 'error') {
      this.errors++;
      if (f.chain !== undefined) this.chainErrors.set(f.chain, (this.chainErrors.get(f.chain) ?? 0) + 1);
    }
    const k = `${f.chain ?? ''}\0${f.kind}`;
    const n = (this.counts.get(k) ?? 0) + 1;
    this.counts.set(k, n);
    if (n > MAX_PER_KIND) {
      this.omitted++;
      return;
    }
    this.list.push(f);
  }

  errorsOf(chain: string): number {
    return this.chainErrors.get(chain) ?? 0;
  }
}

/** Node ≥ 21 says which buffers cannot be transferred; before it, a buffer wholly its own can be. */
const untransferable: (b: ArrayBufferLike) => boolean =
  (workerThreads as { isMarkedAsUntransferable?: (b: ArrayBufferLike) => boolean }).isMarkedAsUntransferable ?? (() => false);

/** Worker threads, results handed back in submission order. */
class Pool {
  private readonly workers: Worker[] = [];
  private readonly load: number[] = [];
  private readonly waiting = new Map<number, number>();
  private readonly done = new Map<number, BlockResult>();
  private next = 0;
  private inflight = 0;
  private slot: (() => void) | undefined;
  private failure: Error | undefined;
  private drained: (() => void) | undefined;

  constructor(n: number, key: Buffer | undefined, private readonly onResult: (r: BlockResult) => void) {
    for (let i = 0; i < n; i++) {
      const w = new Worker(join(__dirname, 'verify-worker.js'), { workerData: { key: key ? new Uint8Array(key) : undefined } });
      w.on('message', (r: BlockResult) => this.received(i, r));
      w.on('error', (e) => this.fail(e));
      w.on('exit', (code) => { if (code !== 0 && !this.closing) this.fail(new Error(`verify worker exited with code ${code}`)); });
      this.workers.push(w);
      this.load.push(0);
    }
  }

  private closing = false;

  private fail(e: Error): void {
    this.failure ??= e;
    this.slot?.();
    this.drained?.();
  }

  private received(worker: number, r: BlockResult): void {
    this.load[worker]!--;
    this.inflight--;
    this.done.set(r.id, r);
    try {
      while (this.done.has(this.next)) {
        const res = this.done.get(this.next)!;
        this.done.delete(this.next);
        this.next++;
        this.onResult(res);
      }
    } catch (e) {
      this.fail(e as Error);
    }
    const s = this.slot;
    this.slot = undefined;
    s?.();
    if (this.inflight === 0) this.drained?.();
  }

  broadcast(msg: unknown): void {
    for (const w of this.workers) w.postMessage(msg);
  }

  async submit(id: number, block: Block): Promise<void> {
    while (this.inflight >= this.workers.length * 3 && !this.failure) {
      await new Promise<void>((r) => { this.slot = r; });
    }
    if (this.failure) throw this.failure;
    let w = 0;
    for (let i = 1; i < this.workers.length; i++) if (this.load[i]! < this.load[w]!) w = i;
    this.load[w]!++;
    this.inflight++;
    this.waiting.set(id, w);
    // A block that is a view into a larger buffer is copied so only its own bytes are transferred;
    // the copy is a fresh ArrayBuffer: `Buffer.from` would put a small block into Node's shared
    // pool, which cannot be transferred (DataCloneError).
    const b = block.buf;
    const u8 = b.byteOffset === 0 && b.buffer.byteLength === b.length && !untransferable(b.buffer)
      ? new Uint8Array(b.buffer, 0, b.length)
      : new Uint8Array(b);
    this.workers[w]!.postMessage({ type: 'block', id, buf: u8, kind: block.input.kind, torn: block.torn }, [u8.buffer as ArrayBuffer]);
  }

  async drain(): Promise<void> {
    while (this.inflight > 0 && !this.failure) await new Promise<void>((r) => { this.drained = r; });
    if (this.failure) throw this.failure;
  }

  async close(): Promise<void> {
    this.closing = true;
    await Promise.all(this.workers.map((w) => w.terminate()));
  }
}

export async function verify(opts: VerifyOptions): Promise<VerifyReport> {
  const started = process.hrtime.bigint();
  const { key } = opts;
  // Spans carry no chain: traces files of the archive are not read.
  const inputs = opts.inputs.filter((i) => i.kind === 'local' || i.signal !== 'traces');
  const findings = new Findings();
  const chains = new Map<string, ChainState>();
  const inputReports: InputReport[] = inputs.map((i) => ({ path: i.display, kind: i.kind, bytes: i.size, decompressedBytes: 0, lines: 0, records: 0 }));
  const lineBase = inputs.map(() => 0);
  const blockMeta = new Map<number, { input: number; long: Block['long'] }>();
  let records = 0;
  let chainRecords = 0;
  let otlpCopies = 0;
  let pool: Pool | undefined;
  const localAlg = new Map<string, string>();

  const at = (file: number, line: number, batch: number): string => where(inputs[file]!.display, line, batch);
  const whereSeq = (st: ChainState, seq: number): string => {
    if (seq < st.cap) return at(st.file[seq]!, st.line[seq]!, st.batch[seq]!);
    const a = st.aside.get(seq)?.[0];
    return a ? at(a.file, a.line, a.batch) : `seq ${seq}`;
  };

  const chainOf = (id: string): ChainState => {
    let st = chains.get(id);
    if (!st) {
      st = new ChainState(id);
      chains.set(id, st);
    }
    return st;
  };

  const learnAlg = (st: ChainState, alg: string): void => {
    if (st.alg !== undefined) return;
    st.alg = alg;
    pool?.broadcast({ type: 'alg', chain: st.id, alg });
    localAlg.set(st.id, alg);
  };

  const problemFinding = (file: number, base: number, p: BlockProblem): void => {
    const w = at(file, base + p.line, p.batch);
    if (p.chain !== undefined) {
      // A record that disagrees with itself: a finding of its chain, not a problem of the input.
      findings.add({ severity: 'error', kind: 'modified', chain: p.chain, message: p.message, where: [w] });
      return;
    }
    opts.events.problem(inputs[file]!, `${w}: ${p.message}`);
    findings.add({
      severity: p.kind === 'torn' ? 'notice' : 'error',
      kind: p.kind === 'torn' ? 'torn-line' : p.kind === 'no-chain' ? 'no-chain' : 'corrupt-line',
      message: p.message,
      where: [w],
    });
  };

  const onResult = (r: BlockResult): void => {
    const meta = blockMeta.get(r.id)!;
    blockMeta.delete(r.id);
    const file = meta.input;
    const base = lineBase[file]! + 1;
    lineBase[file]! += r.lines;
    const ir = inputReports[file]!;
    ir.lines += r.lines;
    ir.records += r.records;
    records += r.records;
    chainRecords += r.n;
    otlpCopies += r.otlpCopies;
    // A line skipped unread (read.ts): its block is an empty line in its place.
    if (meta.long) problemFinding(file, base, { line: 0, batch: -1, kind: 'not-json', message: longLineMessage(meta.long) });
    for (const p of r.problems) problemFinding(file, base, p);
    const states = r.chains.map((m) => {
      const st = chainOf(m.chain);
      const sm = st.meta;
      sm.service ??= m.service;
      sm.instance ??= m.instance;
      sm.pod ??= m.pod;
      if (m.firstTime !== undefined && (sm.firstTime === undefined || m.firstTime < sm.firstTime)) sm.firstTime = m.firstTime;
      if (m.lastTime !== undefined && (sm.lastTime === undefined || m.lastTime > sm.lastTime)) sm.lastTime = m.lastTime;
      if (m.maxSeq > st.tail.seq && m.maxSeq >= 0) st.tail = { seq: m.maxSeq, ...(m.tailK ? { k: m.tailK } : {}), ...(m.tailU ? { u: m.tailU } : {}) };
      st.files.add(file);
      return st;
    });
    const special = new Map<number, Special>();
    for (const s of r.specials) special.set(s.i, s);
    const archive = inputs[file]!.kind === 'archive';
    for (let i = 0; i < r.n; i++) {
      const st = states[r.chainIdx[i]!]!;
      const seq = r.seq[i]!;
      const line = base + r.line[i]!;
      const batch = r.batch[i]!;
      const has = r.has[i]!;
      if (seq >= st.cap && !mayGrow(st, seq)) {
        const list = st.aside.get(seq);
        const c: Aside = { ...candidateOf(r, i, file, line, batch), has };
        if (list?.some((a) => sameCandidate(a, c))) { st.duplicates++; continue; }
        if (list) list.push(c);
        else st.aside.set(seq, [c]);
        if (list) continue;
        const sp = special.get(i);
        if (sp) noteSpecial(st, { seq, where: at(file, line, batch), s: sp });
        continue;
      }
      grow(st, seq);
      if (st.present[seq]) {
        const o = seq * 32;
        let same: boolean;
        if (has & HAS_K && st.has[seq]! & HAS_K) same = eq32(st.hashK, o, r.hashK, i * 32);
        else if (has & HAS_U && st.has[seq]! & HAS_U) same = eq32(st.hashU, o, r.hashU, i * 32);
        else same = false;
        if (same) {
          st.duplicates++;
        } else {
          const c = candidateOf(r, i, file, line, batch);
          const list = st.alternates.get(seq);
          if (list) list.push(c);
          else st.alternates.set(seq, [c]);
        }
        continue;
      }
      st.present[seq] = 1;
      st.has[seq] = has;
      if (has & HAS_K) { st.needK(); st.hashK.set(r.hashK.subarray(i * 32, i * 32 + 32), seq * 32); }
      if (has & HAS_U) { st.needU(); st.hashU.set(r.hashU.subarray(i * 32, i * 32 + 32), seq * 32); }
      st.prevState[seq] = r.prevState[i]!;
      if (r.prevState[i] === 1) st.prev.set(r.prev.subarray(i * 32, i * 32 + 32), seq * 32);
      st.file[seq] = file;
      st.line[seq] = line;
      st.batch[seq] = batch;
      if (seq > st.maxSeq) st.maxSeq = seq;
      st.count++;
      // Order: within one local file every chain is written in seq order; within one archive
      // batch, among the records tailed from one file, too. Across batches, or between files read
      // at once (a rotated file's tail and its successor's head), delivery order is free.
      const source = archive ? `${file}:${line}:${r.sub[i]}` : `${file}`;
      if (st.orderSource !== source) {
        st.orderSource = source;
        st.orderLast = seq;
      } else if (seq < st.orderLast) {
        findings.add({ severity: 'error', kind: 'reordered', chain: st.id,
          message: `reordered: seq ${st.orderLast} appears before seq ${seq}`,
          where: [whereSeq(st, st.orderLast), at(file, line, batch)] });
      } else {
        st.orderLast = seq;
      }
      const sp = special.get(i);
      if (sp) noteSpecial(st, { seq, where: at(file, line, batch), s: sp });
    }
  };

  /** Entries of all chains' arrays (see DENSE_FACTOR). */
  let dense = 0;
  const mayGrow = (st: ChainState, seq: number): boolean => dense + st.growthFor(seq) <= plausibleSeq(chainRecords);
  const grow = (st: ChainState, seq: number): void => {
    dense += st.growthFor(seq);
    st.ensure(seq);
  };

  const noteSpecial = (st: ChainState, loc: Located<Special>): void => {
    const sp = loc.s;
    if (sp.event === 'audit_chain_start') {
      st.starts.push(loc);
      if (sp.alg) learnAlg(st, sp.alg);
    } else if (sp.event === 'audit_chain_end') {
      st.ends.push(loc);
    } else if (sp.event === 'audit_checkpoint') {
      st.checkpoints.push(loc);
    }
    if (loc.seq === 0 && sp.event !== 'audit_chain_start') {
      findings.add({ severity: 'error', kind: 'chain-start', chain: st.id, message: `seq 0 is ${sp.event}, not audit_chain_start (modified record)`, where: [loc.where] });
    }
  };

  /**
   * Records set aside for their seq, once all are read: placed, in seq order, while the chain's
   * records make the seq plausible; the rest are reported and left out of the chain.
   */
  const placeAside = (st: ChainState): void => {
    if (st.aside.size === 0) return;
    let records = st.count;
    for (const list of st.aside.values()) records += list.length;
    const limit = plausibleSeq(records);
    const seqs = [...st.aside.keys()].sort((a, b) => a - b);
    for (const seq of seqs) {
      const list = st.aside.get(seq)!;
      if (seq > limit || !mayGrow(st, seq)) {
        for (const c of list) {
          findings.add({ severity: 'error', kind: 'inserted', chain: st.id,
            message: `record with implausible seq ${seq}: the chain has ${records} record(s) in the inputs (inserted or modified)`,
            where: [at(c.file, c.line, c.batch)] });
        }
        continue;
      }
      grow(st, seq);
      for (const c of list) placeCandidate(st, seq, c);
    }
    // Chain records of a seq left out do not take part in the chain's start, end or checkpoints.
    const kept = (l: Located<Special>): boolean => l.seq <= st.maxSeq;
    st.starts = st.starts.filter(kept);
    st.ends = st.ends.filter(kept);
    st.checkpoints = st.checkpoints.filter(kept);
    st.aside.clear();
  };

  // ---- read ----------------------------------------------------------------------------------
  const total = inputs.reduce((s, i) => s + i.size, 0);
  const workers = opts.workers ?? (total < 32 * 1024 * 1024 ? 0 : Math.min(8, availableParallelism()));
  const hasher = new Hasher(key);
  if (workers > 0) pool = new Pool(workers, key, onResult);
  // Damage to the input itself (a corrupt zstd stream) is a finding too: records were lost.
  const readEvents: ReadEvents = {
    ...opts.events,
    problem: (input, message) => {
      opts.events.problem(input, message);
      findings.add({ severity: 'error', kind: 'corrupt-zstd', message: message.startsWith(`${input.display}: `) ? message.slice(input.display.length + 2) : message, where: [input.display] });
    },
  };
  let blockId = 0;
  let decompressed = 0;
  try {
    let f = 0;
    try {
      for (; f < inputs.length; f++) {
        for await (const block of readBlocks(inputs[f]!, f, readEvents)) {
          const id = blockId++;
          blockMeta.set(id, { input: f, long: block.long });
          decompressed += block.buf.length;
          inputReports[f]!.decompressedBytes += block.buf.length;
          if (pool) await pool.submit(id, block);
          else onResult(processBlock(id, block.buf, block.input.kind, block.torn, hasher, localAlg));
        }
      }
      await pool?.drain();
    } catch (e) {
      throw inInput(e, inputs[Math.min(f, inputs.length - 1)]!);
    }
  } finally {
    await pool?.close();
  }

  // ---- decide --------------------------------------------------------------------------------
  for (const st of chains.values()) placeAside(st);
  const reports: ChainReport[] = [];
  const resolvedAlg = new Map<string, string | undefined>();
  for (const st of chains.values()) resolvedAlg.set(st.id, decideAlg(st, key));

  // Successors: chain starts that name a previous chain.
  const successorOf = new Map<string, { chain: ChainState; start: Located<Special> }>();
  for (const st of chains.values()) {
    const start = st.starts.find((s) => s.seq === 0);
    if (start?.s.previous) successorOf.set(start.s.previous, { chain: st, start });
  }
  const newestOfInstance = new Map<string, ChainState>();
  for (const st of chains.values()) {
    const inst = st.meta.instance ?? '';
    const cur = newestOfInstance.get(inst);
    if (!cur || (st.meta.firstTime ?? '') > (cur.meta.firstTime ?? '')) newestOfInstance.set(inst, st);
  }

  for (const st of chains.values()) {
    const alg = resolvedAlg.get(st.id);
    const chainLabel = `chain ${st.id}${st.meta.service ? ` (${st.meta.service})` : ''}`;
    const add = (f: Omit<Finding, 'chain'>): void => findings.add({ ...f, chain: st.id });
    const linkable = alg === 'sha256' || (alg === 'hmac-sha256' && key !== undefined);
    if (alg === 'hmac-sha256' && !key) {
      add({ severity: 'error', kind: 'keyed-no-key', message: `${chainLabel} is keyed (hmac-sha256): cannot verify keyed chain without --key-env (the variable ${opts.keyEnv} is not set)` });
    } else if (alg === undefined && !key) {
      add({ severity: 'error', kind: 'keyed-no-key', message: `${chainLabel} has no audit_chain_start and its links do not verify as SHA-256: probably keyed; cannot verify keyed chain without --key-env` });
    } else if (alg === 'sha256' && key) {
      add({ severity: 'error', kind: 'unkeyed', message: `${chainLabel} is not keyed (its audit_chain_start says sha256) although a key was given: its records are not authenticated, anyone able to edit the file could have rewritten it` });
    } else if (alg !== undefined && alg !== 'sha256' && alg !== 'hmac-sha256') {
      add({ severity: 'error', kind: 'chain-start', message: `${chainLabel}: unknown algorithm ${JSON.stringify(alg)} in audit_chain_start` });
    }
    const H = alg === 'hmac-sha256' ? st.hashK : st.hashU;
    const bit = alg === 'hmac-sha256' ? HAS_K : HAS_U;
    // A wrong key breaks every link and every MAC at once: one finding, not one per record.
    let wrongKey = false;
    if (alg === 'hmac-sha256' && key) {
      let links = 0;
      let good = 0;
      for (let s = 1; s <= st.maxSeq; s++) {
        if (!st.present[s] || !st.present[s - 1] || st.prevState[s] !== 1 || !(st.has[s - 1]! & HAS_K)) continue;
        links++;
        if (eq32(st.prev, s * 32, H, (s - 1) * 32)) good++;
      }
      const macs = [...st.starts, ...st.checkpoints, ...st.ends].filter((c) => c.s.mac === 'ok' || c.s.mac === 'bad');
      if (links > 0 && good === 0 && !macs.some((c) => c.s.mac === 'ok')) {
        wrongKey = true;
        add({ severity: 'error', kind: 'wrong-key',
          message: `${chainLabel}: none of its ${links} links${macs.length ? ` nor its ${macs.length} checkpoint MACs` : ''} verify with the key in ${opts.keyEnv}: a different key wrote it (or every record was re-hashed)` });
      }
    }

    // Different records with the same seq: the one that links into the chain is the original.
    for (const [seq, alts] of st.alternates) {
      const primary: Candidate = {
        prevState: st.prevState[seq]!, file: st.file[seq]!, line: st.line[seq]!, batch: st.batch[seq]!,
        ...(st.has[seq]! & HAS_K ? { k: Buffer.from(st.hashK.subarray(seq * 32, seq * 32 + 32)) } : {}),
        ...(st.has[seq]! & HAS_U ? { u: Buffer.from(st.hashU.subarray(seq * 32, seq * 32 + 32)) } : {}),
        ...(st.prevState[seq] === 1 ? { prev: Buffer.from(st.prev.subarray(seq * 32, seq * 32 + 32)) } : {}),
      };
      const all = [primary, ...alts];
      const score = (c: Candidate): number => {
        if (!linkable) return 0;
        const h = alg === 'hmac-sha256' ? c.k : c.u;
        let s = 0;
        if (seq > 0 && c.prev && st.present[seq - 1] && st.has[seq - 1]! & bit && eq32(c.prev, 0, H, (seq - 1) * 32)) s++;
        if (h && seq < st.maxSeq && st.present[seq + 1] && st.prevState[seq + 1] === 1 && eq32(h, 0, st.prev, (seq + 1) * 32)) s++;
        return s;
      };
      let best = 0;
      const scores = all.map(score);
      for (let i = 1; i < all.length; i++) if (scores[i]! > scores[best]!) best = i;
      if (best !== 0) {
        const b = all[best]!;
        st.prevState[seq] = b.prevState;
        if (b.prev) st.prev.set(b.prev, seq * 32);
        st.has[seq] = (b.k ? HAS_K : 0) | (b.u ? HAS_U : 0);
        if (b.k) { st.needK(); st.hashK.set(b.k, seq * 32); }
        if (b.u) { st.needU(); st.hashU.set(b.u, seq * 32); }
        st.file[seq] = b.file;
        st.line[seq] = b.line;
        st.batch[seq] = b.batch;
      }
      const genuine = all[best]!;
      for (let i = 0; i < all.length; i++) {
        if (i === best) continue;
        const c = all[i]!;
        add({
          severity: 'error', kind: 'inserted',
          message: scores[best]! > 0
            ? `inserted/forged record: a second seq ${seq} whose content differs from the one that links into the chain`
            : `inserted/forged record: two different records carry seq ${seq} (neither links into the chain)`,
          where: [at(c.file, c.line, c.batch), at(genuine.file, genuine.line, genuine.batch)],
        });
      }
    }

    // Gaps.
    let gapFrom = -1;
    for (let s = 0; s <= st.maxSeq + 1; s++) {
      const here = s <= st.maxSeq && st.present[s] === 1;
      if (!here && s <= st.maxSeq) {
        if (gapFrom < 0) gapFrom = s;
        continue;
      }
      if (gapFrom >= 0) {
        const around = [
          ...(gapFrom > 0 ? [whereSeq(st, gapFrom - 1)] : []),
          ...(s <= st.maxSeq ? [whereSeq(st, s)] : []),
        ];
        add({ severity: 'error', kind: 'deleted',
          message: `deleted record(s): ${range(gapFrom, s - 1)} missing (${s - gapFrom} record${s - gapFrom === 1 ? '' : 's'})${gapFrom === 0 ? ', the start of the chain included' : ''}, between the records at`,
          where: around });
        gapFrom = -1;
      }
    }

    // Links: seq s's audit.prev must be the hash of seq s-1 as written.
    if (linkable && !wrongKey) {
      let runStart = -1;
      const flush = (end: number): void => {
        // Links into runStart..end are broken.
        const n = end - runStart + 1;
        if (n === 1) {
          add({ severity: 'error', kind: 'modified',
            message: `modified record: seq ${runStart - 1} no longer hashes to audit.prev of seq ${runStart} (its content was changed)`,
            where: [whereSeq(st, runStart - 1), whereSeq(st, runStart)] });
        } else if (n === 2) {
          add({ severity: 'error', kind: 'modified',
            message: `modified record: seq ${runStart}: neither its audit.prev (seq ${runStart - 1}) nor its own hash (audit.prev of seq ${end}) match`,
            where: [whereSeq(st, runStart)] });
        } else {
          add({ severity: 'error', kind: 'modified',
            message: `chain rewritten: ${n} consecutive links broken, ${range(runStart - 1, end)}; the first record whose audit.prev fails is seq ${runStart} (records modified, inserted with renumbering, or re-hashed without the key)`,
            where: [whereSeq(st, runStart - 1), whereSeq(st, runStart), whereSeq(st, end)] });
        }
        runStart = -1;
      };
      let last = -2;
      for (let s = 1; s <= st.maxSeq; s++) {
        if (!st.present[s] || !st.present[s - 1]) continue;
        let ok = st.prevState[s] === 1 && (st.has[s - 1]! & bit) !== 0 && eq32(st.prev, s * 32, H, (s - 1) * 32);
        if (st.prevState[s] === 1 && !(st.has[s - 1]! & bit)) ok = true; // not hashed this way: undecidable, not a finding
        if (!ok) {
          if (runStart >= 0 && last !== s - 1) flush(last);
          if (runStart < 0) runStart = s;
          last = s;
        }
      }
      if (runStart >= 0) flush(last);
    }

    // Start.
    const start = st.starts.find((s) => s.seq === 0);
    for (const s of st.starts) {
      if (s.seq !== 0) add({ severity: 'error', kind: 'chain-start', message: `audit_chain_start at seq ${s.seq}: only seq 0 starts a chain (inserted or modified record)`, where: [s.where] });
    }
    if (start?.s.previous !== undefined) {
      const p = chains.get(start.s.previous);
      const pseq = start.s.previousSeq;
      if (!p) {
        add({ severity: 'notice', kind: 'previous-missing',
          message: `${chainLabel} names the previous chain ${start.s.previous} (last seq ${pseq ?? '?'}), which is not in the inputs: give its files to check that its tail is intact`,
          where: [start.where] });
      } else if (pseq === undefined) {
        add({ severity: 'error', kind: 'chain-start', message: `audit_chain_start names chain ${p.id} without audit.chain.previous_seq (modified record)`, where: [start.where] });
      } else if (p.maxSeq < pseq) {
        add({ severity: 'error', kind: 'tail',
          message: `tail of chain ${p.id} deleted: it ends at seq ${p.maxSeq} in the inputs, but ${chainLabel} started after its seq ${pseq}: ${range(p.maxSeq + 1, pseq)} deleted`,
          where: [p.maxSeq >= 0 && p.present[p.maxSeq] ? whereSeq(p, p.maxSeq) : '', start.where].filter(Boolean) });
      } else {
        if (p.maxSeq > pseq) {
          add({ severity: 'notice', kind: 'tail',
            message: `chain ${p.id} went on (seq ${pseq + 1}..${p.maxSeq}) after ${chainLabel} started: two processes wrote the same file?`,
            where: [start.where] });
        }
        const h = alg && linkable && !wrongKey ? p.hashOf(pseq, alg) : undefined;
        if (!p.present[pseq]) {
          // reported as a gap of that chain
        } else if (st.prevState[0] !== 1) {
          add({ severity: 'error', kind: 'chain-start', message: `audit_chain_start names chain ${p.id} but has no valid audit.prev (modified record)`, where: [start.where] });
        } else if (h === undefined) {
          if (linkable && !wrongKey) add({ severity: 'notice', kind: 'tail', message: `the hash of chain ${p.id} seq ${pseq} by ${alg} was not computed (the chains use different algorithms): its tail is not checked`, where: [start.where] });
        } else if (!eq32(st.prev, 0, h, 0)) {
          add({ severity: 'error', kind: 'tail',
            message: `tail of chain ${p.id} modified: its seq ${pseq} no longer hashes to the audit.prev of ${chainLabel}'s audit_chain_start`,
            where: [whereSeq(p, pseq), start.where] });
        }
      }
    } else if (start && st.prevState[0] !== 0) {
      add({ severity: 'error', kind: 'chain-start', message: 'audit_chain_start has audit.prev but names no previous chain (modified record)', where: [start.where] });
    }

    // Checkpoints and MACs.
    for (const c of [...st.checkpoints, ...st.ends]) {
      if (c.s.records !== undefined && c.s.records !== c.seq) {
        add({ severity: 'error', kind: 'checkpoint', message: `${c.s.event} at seq ${c.seq} counts ${c.s.records} records before it (modified record)`, where: [c.where] });
      }
      if (alg === 'hmac-sha256' && key && !wrongKey) {
        if (c.s.mac === 'bad') add({ severity: 'error', kind: 'mac', message: `forged or modified ${c.s.event}: the MAC of seq ${c.seq} does not verify with the key`, where: [c.where] });
        if (c.s.mac === 'missing') add({ severity: 'error', kind: 'mac', message: `${c.s.event} at seq ${c.seq} has no audit.checkpoint.mac in a keyed chain (modified record)`, where: [c.where] });
      }
    }
    // A chain start without a MAC was written before starts were signed: not an error, but not
    // authenticated either (`--live` does not trust its time).
    if (alg === 'hmac-sha256' && key && !wrongKey) {
      for (const s of st.starts) {
        if (s.s.mac === 'bad') add({ severity: 'error', kind: 'mac', message: `forged or modified audit_chain_start: the MAC of seq ${s.seq} does not verify with the key`, where: [s.where] });
      }
    }

    // End.
    let status: ChainReport['status'] = 'closed';
    const ends = st.ends.sort((a, b) => a.seq - b.seq);
    if (ends.length > 1) add({ severity: 'error', kind: 'chain-end', message: `${ends.length} audit_chain_end records (${ends.map((e) => e.seq).join(', ')}): inserted records`, where: ends.map((e) => e.where) });
    if (ends.length > 0) {
      const end = ends[0]!;
      if (end.seq < st.maxSeq) {
        add({ severity: 'error', kind: 'chain-end', message: `records after audit_chain_end: ${range(end.seq + 1, st.maxSeq)} (appended after the process ended: inserted)`, where: [end.where, whereSeq(st, st.maxSeq)] });
      }
    } else if (st.maxSeq >= 0) {
      status = 'open';
      const lastWhere = st.present[st.maxSeq] ? whereSeq(st, st.maxSeq) : '';
      const newest = newestOfInstance.get(st.meta.instance ?? '') === st;
      // With a key, only a time whose MAC verified: anyone who can write the file can write a time.
      const authenticated = alg === 'hmac-sha256' && key !== undefined;
      const mark = aliveMark(st.checkpoints, st.starts.find((s) => s.seq === 0), st.meta.firstTime, authenticated && !wrongKey);
      const live = opts.live && newest ? judgeLive(mark, opts.now ?? Date.now()) : undefined;
      if (live?.live) {
        status = 'live';
        add({ severity: 'notice', kind: 'live', message: `${chainLabel} is open (live): ${live.why}`, where: [lastWhere].filter(Boolean) });
      } else {
        const succ = successorOf.get(st.id);
        const confirmed = succ && succ.start.s.previousSeq === st.maxSeq
          ? ` (chain ${succ.chain.id}, started next, names seq ${st.maxSeq} as its last record)`
          : '';
        const liveNote = live ? `; not live: ${live.why}` : '';
        add({ severity: 'error', kind: 'chain-end',
          message: `${chainLabel} ends at seq ${st.maxSeq} without audit_chain_end: the process crashed or its tail was deleted${confirmed}${liveNote}`,
          where: [lastWhere].filter(Boolean) });
      }
    }
    reports.push({
      chain: st.id,
      ...(st.meta.service ? { service: st.meta.service } : {}),
      ...(st.meta.instance ? { instance: st.meta.instance } : {}),
      ...(st.meta.pod ? { pod: st.meta.pod } : {}),
      ...(alg ? { alg } : {}),
      firstSeq: firstPresent(st),
      lastSeq: st.maxSeq,
      records: st.count,
      duplicates: st.duplicates,
      ...(st.meta.firstTime ? { firstTime: st.meta.firstTime } : {}),
      ...(st.meta.lastTime ? { lastTime: st.meta.lastTime } : {}),
      ...(start?.s.previous ? { previous: start.s.previous } : {}),
      status,
      intact: findings.errorsOf(st.id) === 0,
      files: [...st.files].map((f) => inputs[f]!.display),
    });
  }

  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  const duplicates = reports.reduce((s, c) => s + c.duplicates, 0);
  if (duplicates > 0) {
    findings.add({ severity: 'notice', kind: 'duplicates', message: `${duplicates} identical duplicate record(s) (at-least-once delivery, or the same record in a file and the archive): counted, not an error` });
  }
  if (otlpCopies > 0) {
    findings.add({ severity: 'notice', kind: 'otlp-copies', message: `${otlpCopies} audit record(s) emitted over OTLP (AUDITRACE_AUDIT_OTLP) found in the archive: not the chain's bytes, not hashed` });
  }
  if (chains.size === 0 && findings.errors === 0) {
    findings.add({ severity: 'error', kind: 'empty', message: 'no audit record with a hash chain in the inputs' });
  }
  reports.sort((a, b) => (a.firstTime ?? '').localeCompare(b.firstTime ?? '') || a.chain.localeCompare(b.chain));
  return {
    ok: findings.errors === 0,
    inputs: inputReports,
    chains: reports,
    findings: findings.list,
    omitted: findings.omitted,
    stats: {
      bytes: total,
      decompressedBytes: decompressed,
      records,
      chainRecords,
      duplicates,
      otlpCopies,
      seconds,
      mbPerSecond: seconds > 0 ? decompressed / 1e6 / seconds : 0,
      workers,
    },
  };
}

/** The record an open chain's liveness is judged by (`--live`), and the interval it promises. */
export interface AliveMark {
  time: string;
  what: 'checkpoint' | 'chain start' | 'record';
  intervalMs: number;
}

/**
 * The newest checkpoint, else the chain start (else, without a key, the chain's first time). With
 * a key (`authenticated`), only a record whose MAC verified counts: a chain start written before
 * starts were signed, or a checkpoint whose MAC fails, proves nothing.
 */
export function aliveMark(checkpoints: readonly Located<Special>[], start: Located<Special> | undefined, firstTime: string | undefined,
  authenticated: boolean): AliveMark | undefined {
  let cp: Located<Special> | undefined;
  for (const c of checkpoints) {
    if (authenticated && c.s.mac !== 'ok') continue;
    if (!cp || c.seq > cp.seq) cp = c;
  }
  if (cp) return { time: cp.s.time, what: 'checkpoint', intervalMs: cp.s.intervalMs && cp.s.intervalMs > 0 ? cp.s.intervalMs : DEFAULT_INTERVAL_MS };
  if (authenticated) return start?.s.mac === 'ok' ? { time: start.s.time, what: 'chain start', intervalMs: DEFAULT_INTERVAL_MS } : undefined;
  return firstTime !== undefined ? { time: firstTime, what: 'record', intervalMs: DEFAULT_INTERVAL_MS } : undefined;
}

/**
 * Live: the mark is less than 2 x its interval old. A mark as far in the future is not live either
 * (a negative age would otherwise pass): a clock set wrong, or a time written to look alive.
 */
export function judgeLive(mark: AliveMark | undefined, now: number): { live: boolean; why: string } {
  if (!mark) return { live: false, why: 'no checkpoint or chain start whose MAC verifies with the key' };
  const t = Date.parse(mark.time);
  if (!Number.isFinite(t)) return { live: false, why: `its last ${mark.what} has no readable time` };
  const age = now - t;
  const limit = 2 * mark.intervalMs;
  const s = Math.round(Math.abs(age) / 1000);
  if (age < -limit) return { live: false, why: `its last ${mark.what} is ${s} s in the future, more than 2 x ${mark.intervalMs} ms ahead of now (a clock set wrong, or a forged time)` };
  if (age > limit) return { live: false, why: `its last ${mark.what} is ${s} s old, more than 2 x ${mark.intervalMs} ms` };
  return { live: true, why: `last ${mark.what} ${age < 0 ? `${s} s in the future` : `${s} s ago`}, within 2 x ${mark.intervalMs} ms` };
}

function candidateOf(r: BlockResult, i: number, file: number, line: number, batch: number): Candidate {
  const has = r.has[i]!;
  return {
    prevState: r.prevState[i]!, file, line, batch,
    ...(has & HAS_K ? { k: Buffer.from(r.hashK.subarray(i * 32, i * 32 + 32)) } : {}),
    ...(has & HAS_U ? { u: Buffer.from(r.hashU.subarray(i * 32, i * 32 + 32)) } : {}),
    ...(r.prevState[i] === 1 ? { prev: Buffer.from(r.prev.subarray(i * 32, i * 32 + 32)) } : {}),
  };
}

/** The same record: the same hash by a way both were hashed. */
function sameCandidate(a: Aside, b: Aside): boolean {
  if (a.k && b.k) return a.k.equals(b.k);
  if (a.u && b.u) return a.u.equals(b.u);
  return false;
}

/** A record set aside, placed at its seq as the reading loop places one (duplicate, alternate, or new). */
function placeCandidate(st: ChainState, seq: number, c: Aside): void {
  if (st.present[seq]) {
    const o = seq * 32;
    let same = false;
    if (c.k && st.has[seq]! & HAS_K) same = eq32(st.hashK, o, c.k, 0);
    else if (c.u && st.has[seq]! & HAS_U) same = eq32(st.hashU, o, c.u, 0);
    if (same) st.duplicates++;
    else {
      const list = st.alternates.get(seq);
      if (list) list.push(c);
      else st.alternates.set(seq, [c]);
    }
    return;
  }
  st.present[seq] = 1;
  st.has[seq] = c.has;
  if (c.k) { st.needK(); st.hashK.set(c.k, seq * 32); }
  if (c.u) { st.needU(); st.hashU.set(c.u, seq * 32); }
  st.prevState[seq] = c.prevState;
  if (c.prev) st.prev.set(c.prev, seq * 32);
  st.file[seq] = c.file;
  st.line[seq] = c.line;
  st.batch[seq] = c.batch;
  if (seq > st.maxSeq) st.maxSeq = seq;
  st.count++;
}

function firstPresent(st: ChainState): number {
  for (let s = 0; s <= st.maxSeq; s++) if (st.present[s]) return s;
  return -1;
}

/** The chain's algorithm: from its start; without one, the way its links verify. */
function decideAlg(st: ChainState, key: Buffer | undefined): string | undefined {
  if (st.alg !== undefined) return st.alg;
  let okK = 0;
  let okU = 0;
  let links = 0;
  for (let s = 1; s <= st.maxSeq && links < 1000; s++) {
    if (!st.present[s] || !st.present[s - 1] || st.prevState[s] !== 1) continue;
    links++;
    if (st.has[s - 1]! & HAS_K && eq32(st.prev, s * 32, st.hashK, (s - 1) * 32)) okK++;
    if (st.has[s - 1]! & HAS_U && eq32(st.prev, s * 32, st.hashU, (s - 1) * 32)) okU++;
  }
  if (key) return okU > okK ? 'sha256' : 'hmac-sha256';
  if (links === 0 || okU > 0) return 'sha256';
  return undefined;
}

/** Text report. */
export function formatVerify(r: VerifyReport): string {
  const lines: string[] = [];
  const mb = (n: number): string => `${(n / 1e6).toFixed(1)} MB`;
  const s = r.stats;
  lines.push(`auditrace verify: ${r.inputs.length} input(s), ${s.records} record(s) in ${r.chains.length} chain(s), ${mb(s.decompressedBytes)} in ${s.seconds.toFixed(2)} s (${s.mbPerSecond.toFixed(0)} MB/s${s.workers ? `, ${s.workers} worker threads` : ''})`);
  const byChain = new Map<string, Finding[]>();
  const general: Finding[] = [];
  for (const f of r.findings) {
    if (f.chain) {
      const l = byChain.get(f.chain);
      if (l) l.push(f); else byChain.set(f.chain, [f]);
    } else {
      general.push(f);
    }
  }
  const show = (f: Finding): void => {
    lines.push(`  ${f.severity === 'error' ? 'ERROR ' : 'notice'}  ${f.message}`);
    for (const w of f.where ?? []) lines.push(`            at ${w}`);
  };
  for (const c of r.chains) {
    const who = [c.service, c.instance ? `instance ${c.instance}` : '', c.pod ? `pod ${c.pod}` : ''].filter(Boolean).join(', ');
    const fs = byChain.get(c.chain) ?? [];
    const errors = fs.filter((f) => f.severity === 'error').length;
    lines.push(`chain ${c.chain}${who ? ` (${who})` : ''}: seq ${c.firstSeq}..${c.lastSeq}, ${c.records} record(s), ${c.alg ?? 'unknown algorithm'}, ${c.status}${c.firstTime ? `, ${c.firstTime} .. ${c.lastTime}` : ''}: ${c.intact ? 'intact' : `${errors} problem(s)`}`);
    for (const f of fs) show(f);
  }
  if (general.length > 0) {
    lines.push('inputs:');
    for (const f of general) show(f);
  }
  if (r.omitted > 0) lines.push(`(${r.omitted} more finding(s) of the same kinds not shown; --json lists up to 20 per kind and chain too)`);
  const errors = r.findings.filter((f) => f.severity === 'error').length;
  lines.push(r.ok ? 'RESULT: intact' : `RESULT: NOT INTACT (${errors}${r.omitted ? '+' : ''} problem(s))`);
  return `${lines.join('\n')}\n`;
}
