import * as nodeFs from 'node:fs';
import * as nodePath from 'node:path';

/**
 * The durable path of audit records: one JSON line appended with one `write(2)` so that, when
 * `write()` returns, the whole line is in the kernel (page cache, or the pipe for stdout). A crash
 * of the process (even SIGKILL) after that loses nothing; `fsync` only adds protection against a
 * crash of the machine.
 *
 * Nothing here throws into the application: a failing destination (disk full, permissions, the
 * directory removed, a closed pipe) turns into an in-memory FIFO that is retried, bounded, and
 * counted, and into one diagnostic line per failure episode.
 */

export type FsyncPolicy = 'always' | 'interval' | 'never';

/** The part of `node:fs` the sink uses; tests inject a wrapper to spy on or fail calls. */
export type SinkFs = Pick<
  typeof nodeFs,
  | 'openSync'
  | 'writeSync'
  | 'closeSync'
  | 'fstatSync'
  | 'statSync'
  | 'lstatSync'
  | 'renameSync'
  | 'unlinkSync'
  | 'mkdirSync'
  | 'fsyncSync'
  | 'fdatasyncSync'
  | 'readSync'
> & Partial<Pick<typeof nodeFs, 'fdatasync' | 'close'>>;

export interface SinkOptions {
  /** A file path (resolved against the working directory once, at open), or `stdout`. */
  destination: string;
  /** `always`: fsync after every write; `interval`: fdatasync at most every fsyncIntervalMs (and on close); `never`. */
  fsync: FsyncPolicy;
  /** Default 1000. */
  fsyncIntervalMs?: number;
  /** Rotate when the next line would make the file exceed this (0 = never). A line is never split across files. */
  maxFileBytes: number;
  /** Rotated files kept (`.1` … `.N`); 0 keeps all: audit data is not deleted unless asked to. */
  maxFiles: number;
  /** While the destination fails: lines kept in memory and retried, at most this many; beyond, dropped and counted. */
  bufferRecords: number;
  /** Default 1000. */
  retryIntervalMs?: number;
  /** One line per failure episode (and at most one reminder a minute while it lasts). */
  onError: (message: string) => void;
  onRecovered?: (message: string) => void;
  /** For tests: replaces `node:fs`. */
  fs?: SinkFs;
  /** For tests: replaces `Date.now`. */
  now?: () => number;
}

export interface SinkStats {
  /** Lines that reached the destination. */
  written: number;
  /** Lines that could not be written when offered (then buffered, or dropped). */
  writeFailures: number;
  /** Lines held in memory now, waiting for the destination. */
  buffered: number;
  /** Lines lost: the buffer was full, or they were still undeliverable at close. */
  dropped: number;
  rotations: number;
  /** Bytes that reached the destination. */
  bytes: number;
}

export interface AuditSink {
  /** Appends one line (ending in "\n"; one is added if missing). Never throws. */
  write(line: string): void;
  /**
   * The UTF-8 bytes, without the newline, of the line the last `write()` appended with one
   * write(2) of its own; undefined when that line was corked, buffered or written otherwise. A
   * view of the sink's encoding buffer: valid until the next call into the sink.
   */
  lastLineBytes(): Uint8Array | undefined;
  /**
   * Until `uncork()`, lines are collected instead of written; `uncork()` writes them in order, as
   * few write(2)s as whole lines, the size limit and rotation allow. For a run of records that
   * nobody is waiting on (the access records of one event-loop turn). Never throws.
   */
  cork(): void;
  uncork(): void;
  /** Retries buffered lines now, then fsyncs unless the policy is `never`. Never throws. */
  flush(): void;
  /** Final flush and fsync, closes the file. A write after close still appends (open, write, close). */
  close(): void;
  stats(): SinkStats;
}

const DEFAULT_INTERVAL_MS = 1000;
/** While a failure lasts, a reminder at most this often. */
const REMINDER_MS = 60_000;
/** A file path is compared with the open descriptor (renamed or deleted under us?) at most this often. */
const IDENTITY_CHECK_MS = 1000;
/** A drained batch is written with one write(2) of at most this many bytes (always at least one line). */
const MAX_BATCH_BYTES = 1 << 20;
/**
 * A line of at most ENCODE_CHARS UTF-16 units (≤ 3 bytes each) is encoded once into the sink's
 * buffer and written from it, and the chain hashes the same bytes: one encoding instead of one
 * for write(2), one for the hash and a length count.
 */
const ENCODE_BYTES = 64 * 1024;
const ENCODE_CHARS = Math.floor((ENCODE_BYTES - 1) / 3);
/**
 * EAGAIN (a non-blocking pipe that is full): wait and retry, at most this long in total, before the
 * line is treated as failed and buffered. Shorter on the retries of a failure episode, so a stalled
 * reader costs the application at most this much per retry interval.
 */
const EAGAIN_BUDGET_MS = 1000;
const EAGAIN_RETRY_BUDGET_MS = 100;
const EAGAIN_MAX_TRIES = 1000;

const NEWLINE = Buffer.from('\n');
const SLEEP_CELL = new Int32Array(new SharedArrayBuffer(4));
function sleepSync(ms: number): void {
  try {
    Atomics.wait(SLEEP_CELL, 0, 0, ms);
  } catch {
    // Atomics.wait not allowed here: retry without sleeping (still bounded by the try count)
  }
}

function errorCode(err: unknown): string {
  if (err && typeof err === 'object') {
    const e = err as NodeJS.ErrnoException;
    if (typeof e.code === 'string' && e.code) return e.code;
    if (typeof e.message === 'string' && e.message) return e.message;
  }
  return String(err);
}

/** A write(2) loop that failed after `written` bytes of its buffer reached the destination. */
class PartialWrite {
  constructor(
    readonly cause: unknown,
    readonly written: number,
  ) {}
}

function unwrap(err: unknown): unknown {
  return err instanceof PartialWrite ? err.cause : err;
}

function duration(ms: number): string {
  if (ms < 1000) return `${Math.max(0, Math.round(ms))} ms`;
  const s = ms / 1000;
  if (s < 120) return `${Number.isInteger(s) ? s : Number(s.toFixed(1))} s`;
  const m = s / 60;
  if (m < 120) return `${Math.round(m)} min`;
  return `${Number((m / 60).toFixed(1))} h`;
}

function count(n: number, what: string): string {
  return `${n} ${what}${n === 1 ? '' : 's'}`;
}

function positive(v: unknown, fallback: number): number {
  return typeof v === 'number' && Number.isFinite(v) && v > 0 ? v : fallback;
}

function nonNegativeInt(v: unknown, fallback: number): number {
  return typeof v === 'number' && Number.isFinite(v) && v >= 0 ? Math.floor(v) : fallback;
}

interface Episode {
  since: number;
  code: string;
  lastReportAt: number;
  droppedAtStart: number;
  overflowReported: boolean;
}

/** A filesystem or descriptor that cannot be synced at all (a pipe, tmpfs quirks, read-only): not a failure. */
function syncUnsupported(code: string | undefined): boolean {
  return code === 'EINVAL' || code === 'ENOTSUP' || code === 'EROFS';
}

/**
 * `mkdir -p`, one directory at a time from the deepest one that exists: Node's recursive mkdir
 * loops for ever where a directory can neither be made nor found (under /proc it spun the event
 * loop at full CPU, deaf to SIGTERM). Here each level is tried once and the first failure throws,
 * which the sink handles like any unwritable destination.
 */
export function makeParents(fs: Pick<SinkFs, 'mkdirSync' | 'statSync'>, dir: string): void {
  const missing: string[] = [];
  for (let d = dir; ; d = nodePath.dirname(d)) {
    try {
      if (fs.statSync(d).isDirectory()) break;
      throw Object.assign(new Error(`ENOTDIR: not a directory, '${d}'`), { code: 'ENOTDIR' });
    } catch (err) {
      if (errorCode(err) !== 'ENOENT') throw err;
    }
    missing.push(d);
    if (nodePath.dirname(d) === d || missing.length > 256) break;
  }
  for (let i = missing.length - 1; i >= 0; i--) {
    try {
      fs.mkdirSync(missing[i]!, { mode: 0o700 });
    } catch (err) {
      if (errorCode(err) !== 'EEXIST') throw err;
    }
  }
}

/** fd 1 is the null device (Node reopens a closed standard output as /dev/null). */
function stdoutIsDevNull(): boolean {
  try {
    const out = nodeFs.fstatSync(1);
    const nul = nodeFs.statSync('/dev/null');
    return out.isCharacterDevice() && out.rdev === nul.rdev;
  } catch {
    return false;
  }
}

export function openSink(opts: SinkOptions): AuditSink {
  const fs: SinkFs = opts.fs ?? nodeFs;
  const now = opts.now ?? Date.now;
  const isStdout = opts.destination === 'stdout';
  const path = isStdout ? 'stdout' : nodePath.resolve(String(opts.destination));
  const label = isStdout ? 'stdout' : path;
  const policy: FsyncPolicy = opts.fsync === 'never' || opts.fsync === 'interval' || opts.fsync === 'always' ? opts.fsync : 'always';
  const fsyncIntervalMs = positive(opts.fsyncIntervalMs, DEFAULT_INTERVAL_MS);
  const retryIntervalMs = positive(opts.retryIntervalMs, DEFAULT_INTERVAL_MS);
  const maxFileBytes = nonNegativeInt(opts.maxFileBytes, 0);
  const maxFiles = nonNegativeInt(opts.maxFiles, 0);
  const bufferRecords = nonNegativeInt(opts.bufferRecords, 0);

  const stats: SinkStats = { written: 0, writeFailures: 0, buffered: 0, dropped: 0, rotations: 0, bytes: 0 };

  // The destination. For a file: our descriptor, the size we believe it has, and the identity of
  // the file it refers to (kept across closes, to tell "reopened the same file" from "a new one").
  let fd: number | null = null;
  /** Where appendLine encodes a line (made on first use), and the length of the line `write()` last wrote from it (-1: none). */
  let encodeBuf: Buffer | undefined;
  let lastLength = -1;
  /** Inside appendLine (a nested call must not reuse `encodeBuf`). */
  let appending = false;
  let size = 0;
  let ino = -1;
  let dev = -1;
  let regular = false;
  let lastIdentityCheck = 0;
  let rotateBlockedUntil = 0;
  /** The file we opened ends in a fragment (a crash mid-line, before us): terminate it first. */
  let needNewline = false;
  let dirty = false;
  let syncTimer: NodeJS.Timeout | null = null;
  // The `interval` policy's syncs run on libuv's thread pool, so the event loop does not wait for
  // the disk: measured on the hello server, ≈ 6 MB/s of access records, the synchronous
  // fdatasync held the loop ≈ 19 ms every second (and a slow or network disk holds it for as long
  // as it takes). One task at a time, in order: fdatasync a descriptor, then, for a file closed or
  // rotated away, close it. Only this queue closes a descriptor it holds, after every sync of it
  // queued before, so no background sync runs on a closed or reused number. `held`: descriptor →
  // tasks queued or running for it; `syncQueued`: a sync of the current `fd` is queued or running
  // (a tick meanwhile waits for the next).
  interface BackgroundTask {
    fd: number;
    close: boolean;
  }
  const background: BackgroundTask[] = [];
  let backgroundRunning = false;
  const held = new Map<number, number>();
  /**
   * Descriptor → its tasks whose fdatasync has not answered yet: what flush() and close() sync in
   * place. Not `held`: a close task's close(2) may have run before its callback, and a number
   * still counted there may already be closed, or another file's.
   */
  const unsynced = new Map<number, number>();
  let syncQueued = false;

  // Lines that failed, oldest first (a queue with a moving head, compacted now and then).
  // `headWritten`: bytes of the head line already in the current file after a torn (short, then
  // failed) write; they are completed, not rewritten, so the file never holds half a line
  // followed by another line.
  let queue: string[] = [];
  let qHead = 0;
  let headWritten = 0;

  let episode: Episode | null = null;
  let lastAttemptAt = 0;
  let retryTimer: NodeJS.Timeout | null = null;
  let closed = false;
  const lastNotice = new Map<string, number>();

  const notify = (fn: ((m: string) => void) | undefined, message: string): void => {
    try {
      if (typeof fn === 'function') fn(message);
    } catch {
      // a failing callback must not break the write path
    }
  };

  if (isStdout && !opts.fs && stdoutIsDevNull()) {
    // Every write "succeeds", so nothing else would ever say so.
    notify(opts.onError, 'audit destination stdout is /dev/null (standard output was closed or discarded at launch): every audit record is thrown away by the system; set AUDITRACE_AUDIT_FILE to a file');
  }

  /** For problems that are not a failure episode (fsync, rotation): once a minute per kind. */
  const notice = (kind: string, message: string): void => {
    const t = now();
    const last = lastNotice.get(kind);
    if (last !== undefined && t - last < REMINDER_MS) return;
    lastNotice.set(kind, t);
    notify(opts.onError, message);
  };

  const buffered = (): number => queue.length - qHead;

  // ---- the destination -------------------------------------------------------------------

  const inBackground = (): boolean =>
    policy === 'interval' && regular && typeof fs.fdatasync === 'function' && typeof fs.close === 'function';

  const closeFd = (): void => {
    if (fd === null) return;
    const old = fd;
    fd = null;
    syncQueued = false;
    if (isStdout) {
      dirty = false;
      return; // fd 1 is not ours to close
    }
    // Under `interval` a dirty file is synced by the queue, not here; after close(), in place.
    if (dirty && (closed || !inBackground()) && policy !== 'never' && regular) syncFd(old, 'current');
    const queued = dirty && !closed && inBackground();
    dirty = false;
    if (queued || held.has(old)) {
      toBackground({ fd: old, close: true }); // synced and closed by the queue, after what it holds for it
      return;
    }
    try {
      fs.closeSync(old);
    } catch {
      // nothing more to do with it
    }
  };

  const syncFailed = (err: unknown, which: 'current' | 'closed'): void => {
    const code = errorCode(err);
    if (syncUnsupported(code)) return;
    notice('fsync', which === 'current'
      ? `audit destination ${label}: fsync failed (${code}): records written since the last successful fsync may not survive a machine crash`
      : `audit destination ${label}: fsync of a file closed or rotated away failed (${code}): its last records may not survive a machine crash`);
  };

  function syncFd(target: number, which: 'current' | 'closed'): void {
    try {
      if (policy === 'always') fs.fsyncSync(target);
      else fs.fdatasyncSync(target);
    } catch (err) {
      syncFailed(err, which);
    }
  }

  /** fsync (`always`) or fdatasync (`interval`) the open file, per the policy. */
  function syncNow(): void {
    dirty = false;
    if (fd === null || policy === 'never' || !regular) return;
    syncFd(fd, 'current');
  }

  const toBackground = (task: BackgroundTask): void => {
    background.push(task);
    held.set(task.fd, (held.get(task.fd) ?? 0) + 1);
    unsynced.set(task.fd, (unsynced.get(task.fd) ?? 0) + 1);
    runBackground();
  };

  const synced = (target: number): void => {
    const n = (unsynced.get(target) ?? 1) - 1;
    if (n > 0) unsynced.set(target, n);
    else unsynced.delete(target);
  };

  function runBackground(): void {
    if (backgroundRunning) return;
    const task = background.shift();
    if (task === undefined) return;
    backgroundRunning = true;
    const finish = (): void => {
      const n = (held.get(task.fd) ?? 1) - 1;
      if (n > 0) held.set(task.fd, n);
      else held.delete(task.fd);
      if (!task.close && task.fd === fd) syncQueued = false;
      backgroundRunning = false;
      runBackground();
    };
    const closeIt = (): void => {
      if (!task.close) {
        finish();
        return;
      }
      try {
        fs.close!(task.fd, () => finish());
      } catch {
        finish();
      }
    };
    try {
      fs.fdatasync!(task.fd, (err) => {
        synced(task.fd);
        if (err) syncFailed(err, task.close ? 'closed' : 'current');
        closeIt();
      });
    } catch (err) {
      synced(task.fd);
      syncFailed(err, task.close ? 'closed' : 'current');
      closeIt();
    }
  }

  /** flush() and close(): the files closed or rotated away whose background sync has not answered, synced in place. */
  const syncUnanswered = (): void => {
    for (const old of unsynced.keys()) if (old !== fd) syncFd(old, 'closed');
  };

  /** The `interval` policy's timer: at most fsyncIntervalMs after a write, everything written is synced. */
  const scheduleSync = (): void => {
    if (syncTimer !== null || closed) return;
    syncTimer = setTimeout(() => {
      syncTimer = null;
      try {
        if (!dirty || fd === null) return;
        if (!inBackground()) {
          syncNow();
        } else if (syncQueued) {
          scheduleSync(); // the last sync still running (a slow disk): this one waits for the next tick
        } else {
          dirty = false;
          syncQueued = true;
          toBackground({ fd, close: false });
        }
      } catch {
        // never throws out of a timer either
      }
    }, fsyncIntervalMs);
    syncTimer.unref();
  };

  const afterWrite = (): void => {
    if (policy === 'always') {
      dirty = true;
      syncNow();
    } else if (policy === 'interval' && regular) {
      dirty = true;
      scheduleSync();
    }
  };

  /**
   * A new file's name (and a rotation's renames) live in the directory: without fsyncing it, a
   * machine crash can lose the whole file although its data was fsynced.
   */
  const syncDir = (): void => {
    if (policy === 'never') return;
    let dfd: number | null = null;
    try {
      dfd = fs.openSync(nodePath.dirname(path), 'r');
      fs.fsyncSync(dfd);
    } catch (err) {
      const code = errorCode(err);
      if (!syncUnsupported(code) && code !== 'EISDIR' && code !== 'EPERM' && code !== 'EACCES') {
        notice('dirsync', `audit destination ${label}: fsync of its directory failed (${code}): a machine crash may lose the file's name`);
      }
    } finally {
      if (dfd !== null) {
        try {
          fs.closeSync(dfd);
        } catch {
          // ignore
        }
      }
    }
  };

  const openFile = (): void => {
    let newFd: number;
    try {
      newFd = fs.openSync(path, 'a', 0o600);
    } catch (err) {
      if (errorCode(err) !== 'ENOENT') throw err;
      // Missing parent directories (first start, or removed since): create them, private.
      makeParents(fs, nodePath.dirname(path));
      newFd = fs.openSync(path, 'a', 0o600);
    }
    let st: nodeFs.Stats;
    try {
      st = fs.fstatSync(newFd);
    } catch (err) {
      try {
        fs.closeSync(newFd);
      } catch {
        // ignore
      }
      throw err;
    }
    // A different file than the one a torn line started in: the whole line is written again.
    const other = st.ino !== ino || st.dev !== dev;
    if (other) headWritten = 0;
    fd = newFd;
    ino = st.ino;
    dev = st.dev;
    size = st.size;
    regular = st.isFile();
    lastIdentityCheck = now();
    if (other && regular) syncDir();
    // A file that does not end in "\n" holds a fragment (a process killed inside a write that
    // crossed a page boundary, a full disk): our first line must not be glued onto it. When the
    // fragment is our own torn line (headWritten > 0), it is completed instead.
    needNewline = false;
    if (regular && size > 0 && headWritten === 0) needNewline = !endsWithNewline(size);
  };

  /** Our descriptor is write-only (O_APPEND): the last byte is read through a second one. */
  const endsWithNewline = (at: number): boolean => {
    let rfd: number | null = null;
    try {
      rfd = fs.openSync(path, 'r');
      const st = fs.fstatSync(rfd);
      if (st.ino !== ino || st.dev !== dev) return true; // replaced meanwhile: not ours to judge
      const last = Buffer.alloc(1);
      return fs.readSync(rfd, last, 0, 1, at - 1) !== 1 || last[0] === 0x0a;
    } catch {
      return true; // unreadable: nothing we can repair
    } finally {
      if (rfd !== null) {
        try {
          fs.closeSync(rfd);
        } catch {
          // ignore
        }
      }
    }
  };

  /** Terminates a fragment left at the end of the file by someone else, once, before our lines. */
  const terminateFragment = (budgetMs: number): void => {
    if (!needNewline || headWritten > 0) return;
    writeAll(NEWLINE, budgetMs);
    needNewline = false;
    size += 1;
    stats.bytes += 1;
  };

  /** Makes `fd` usable; throws when the destination cannot be opened. */
  const ensureOpen = (forceCheck: boolean): void => {
    if (isStdout) {
      if (fd === null) {
        fd = 1;
        try {
          regular = fs.fstatSync(1).isFile();
        } catch {
          regular = false;
        }
      }
      return;
    }
    if (fd !== null && regular && (forceCheck || now() - lastIdentityCheck >= IDENTITY_CHECK_MS)) {
      lastIdentityCheck = now();
      let st: nodeFs.Stats | undefined;
      let known = true;
      try {
        st = fs.statSync(path, { throwIfNoEntry: false });
      } catch {
        known = false; // cannot look (permissions): keep the descriptor that works
      }
      // Renamed (rotated by someone else) or deleted under us: lines written to our descriptor
      // would go to a file nobody reads, or to nothing. Reopen the path.
      if (known && (!st || st.ino !== ino || st.dev !== dev)) closeFd();
    }
    if (fd === null) openFile();
  };

  const writeAll = (data: Buffer, budgetMs: number, from = 0): void => {
    let off = from;
    let waited = 0; // total, bounded by budgetMs
    let tries = 0; // total, bounded by EAGAIN_MAX_TRIES
    let backoff = 0; // since the last progress: 1, 2, 4 … 25 ms
    while (off < data.length) {
      let n = 0;
      try {
        n = fs.writeSync(fd!, data, off, data.length - off);
      } catch (err) {
        const code = errorCode(err);
        if ((code === 'EAGAIN' || code === 'EWOULDBLOCK' || code === 'EINTR') && tries < EAGAIN_MAX_TRIES && waited < budgetMs) {
          tries++;
          if (code !== 'EINTR') {
            const ms = Math.min(1 << Math.min(backoff++, 5), 25, budgetMs - waited);
            sleepSync(ms);
            waited += ms;
          }
          continue;
        }
        throw new PartialWrite(err, off);
      }
      if (n > 0) {
        off += n;
        backoff = 0;
      } else if (tries < EAGAIN_MAX_TRIES && waited < budgetMs) {
        tries++; // wrote nothing without an error: treat as EAGAIN
        sleepSync(1);
        waited += 1;
      } else {
        throw new PartialWrite(new Error('write returned 0'), off);
      }
    }
  };

  /** The line encoded in `encodeBuf` (`length` bytes) with one write(2); a short write goes on as writeString's does. */
  const writeEncoded = (length: number, budgetMs: number): void => {
    let n = 0;
    try {
      n = fs.writeSync(fd!, encodeBuf!, 0, length);
    } catch (err) {
      const code = errorCode(err);
      if (code !== 'EAGAIN' && code !== 'EWOULDBLOCK' && code !== 'EINTR') throw new PartialWrite(err, 0);
    }
    if (n !== length) writeAll(encodeBuf!.subarray(0, length), budgetMs, n);
  };

  /**
   * `line` (of `length` UTF-8 bytes) with one write(2) of the string itself, for a drained batch
   * of lines or a line too long for `encodeBuf`: Node encodes it without a Buffer object (a new
   * Buffer per line measured ≈ 4 % fewer records/s). A short write, or EAGAIN/EINTR, goes on
   * through writeAll from the byte where it stopped.
   */
  const writeString = (line: string, length: number, budgetMs: number): void => {
    let n = 0;
    try {
      n = fs.writeSync(fd!, line);
    } catch (err) {
      const code = errorCode(err);
      if (code !== 'EAGAIN' && code !== 'EWOULDBLOCK' && code !== 'EINTR') throw new PartialWrite(err, 0);
    }
    if (n !== length) writeAll(Buffer.from(line, 'utf8'), budgetMs, n);
  };

  // ---- rotation --------------------------------------------------------------------------

  const rotatedName = (i: number): string => `${path}.${i}`;

  const exists = (p: string): boolean => fs.lstatSync(p, { throwIfNoEntry: false }) !== undefined;

  /**
   * path → path.1, path.1 → path.2, … by rename only (collectors tailing by fingerprint follow a
   * rename; copy/truncate would race with them). Shifts only up to the first free number, top
   * down, so a failure half-way never overwrites a file; aborts (throws) before renaming `path`
   * if any shift failed. Deletes `path.maxFiles` only when maxFiles > 0 and all slots are taken.
   */
  const shiftAndRename = (): void => {
    let free = 1;
    while ((maxFiles === 0 || free <= maxFiles) && exists(rotatedName(free))) free++;
    if (maxFiles > 0 && free > maxFiles) {
      fs.unlinkSync(rotatedName(maxFiles));
      free = maxFiles;
    }
    for (let i = free - 1; i >= 1; i--) fs.renameSync(rotatedName(i), rotatedName(i + 1));
    fs.renameSync(path, rotatedName(1));
  };

  /** Before appending `bytes` to the file: rotate if they would make it exceed maxFileBytes. */
  const maybeRotate = (bytes: number): void => {
    if (isStdout || !regular || maxFileBytes === 0 || headWritten > 0) return;
    if (size === 0 || size + bytes <= maxFileBytes) return;
    if (now() < rotateBlockedUntil) return;
    // Rotated by someone else since we looked? Then the path is a new file: just use it.
    ensureOpen(true);
    if (size === 0 || size + bytes <= maxFileBytes) return;
    try {
      size = fs.fstatSync(fd!).size; // other writers may share the file
    } catch {
      // keep our count
    }
    if (size === 0 || size + bytes <= maxFileBytes) return;
    // The file being rotated away is complete on disk (unless the policy is never): now under
    // `always`; under `interval` by the background queue (closeFd), like every other write (the
    // record that triggered the rotation does not wait for a second's worth of records to reach the disk).
    if (policy !== 'interval') syncNow();
    try {
      shiftAndRename();
    } catch (err) {
      // Keep appending past the limit rather than lose records; try again after a retry interval.
      rotateBlockedUntil = now() + retryIntervalMs;
      notice('rotate', `audit file ${path} could not be rotated (${errorCode(err)}): still appending to it beyond ${maxFileBytes} bytes; rotation is retried every ${duration(retryIntervalMs)}`);
      return;
    }
    stats.rotations++;
    closeFd(); // under `interval`, synced and closed by the background queue
    openFile(); // may throw: then the line is buffered and the open retried
  };

  // ---- appending -------------------------------------------------------------------------

  /** One line, one write(2). Throws PartialWrite (or an open error) when it did not all land. */
  const appendLine = (line: string, budgetMs: number): void => {
    ensureOpen(false);
    // A callback reached from here (onError on a rotation or sync notice) that wrote to this sink
    // again would find `encodeBuf` holding this line: such a nested line goes from its string.
    const outer = !appending;
    const encoded = outer && line.length <= ENCODE_CHARS;
    appending = true;
    try {
      const length = encoded ? (encodeBuf ??= Buffer.allocUnsafeSlow(ENCODE_BYTES)).write(line, 0, 'utf8') : Buffer.byteLength(line, 'utf8');
      maybeRotate(length + (needNewline ? 1 : 0));
      terminateFragment(budgetMs);
      try {
        if (encoded) {
          writeEncoded(length, budgetMs);
          lastLength = length;
        } else {
          writeString(line, length, budgetMs);
        }
      } catch (err) {
        const written = err instanceof PartialWrite ? err.written : 0;
        size += written;
        stats.bytes += written;
        throw err;
      }
      size += length;
      stats.bytes += length;
      stats.written++;
      afterWrite();
    } finally {
      if (outer) appending = false;
    }
  };

  const removeHead = (n: number): void => {
    for (let i = 0; i < n; i++) queue[qHead + i] = '';
    qHead += n;
    if (qHead === queue.length) {
      queue = [];
      qHead = 0;
    } else if (qHead >= 1024 && qHead * 2 >= queue.length) {
      queue = queue.slice(qHead);
      qHead = 0;
    }
    stats.buffered = buffered();
  };

  /**
   * Writes the buffered lines in order, in batches of whole lines (one write(2) each) that never
   * cross a rotation boundary. Throws on the first failure, leaving the rest queued (and a torn
   * head line marked, to be completed).
   */
  const drain = (budgetMs: number): void => {
    while (buffered() > 0) {
      ensureOpen(false);
      // The batch's lines as strings, each one's UTF-8 length: written as one string (Node encodes
      // it once, without a Buffer per line), or as bytes when a torn head line is to be completed.
      const lines: string[] = [];
      const lens: number[] = [];
      let total = 0;
      const head = queue[qHead]!;
      const headBytes = Buffer.byteLength(head, 'utf8');
      const skip = Math.min(headWritten, headBytes);
      if (skip === 0) maybeRotate(headBytes + (needNewline ? 1 : 0)); // else: the rest of a torn line, same file, no rotation
      terminateFragment(budgetMs);
      lines.push(head);
      lens.push(headBytes - skip);
      total += headBytes - skip;
      for (let i = qHead + 1; i < queue.length; i++) {
        const line = queue[i]!;
        const bytes = Buffer.byteLength(line, 'utf8');
        if (total + bytes > MAX_BATCH_BYTES) break;
        if (maxFileBytes > 0 && regular && size + total + bytes > maxFileBytes) break;
        lines.push(line);
        lens.push(bytes);
        total += bytes;
      }
      try {
        if (skip === 0) {
          writeString(lines.length === 1 ? head : lines.join(''), total, budgetMs);
        } else {
          const data = Buffer.from(lines.join(''), 'utf8').subarray(skip);
          writeAll(data, budgetMs);
        }
      } catch (err) {
        const written = err instanceof PartialWrite ? err.written : 0;
        size += written;
        stats.bytes += written;
        let full = 0;
        let acc = 0;
        while (full < lens.length && acc + lens[full]! <= written) acc += lens[full++]!;
        // Bytes of the (new) head line now in the file: completed on the next attempt.
        const torn = written - acc;
        stats.written += full;
        removeHead(full);
        headWritten = (full === 0 ? skip : 0) + torn;
        if (full > 0) afterWrite();
        throw err;
      }
      size += total;
      stats.bytes += total;
      stats.written += lens.length;
      headWritten = 0;
      removeHead(lens.length);
      afterWrite();
    }
  };

  // ---- failure episodes ------------------------------------------------------------------

  const ensureRetryTimer = (): void => {
    if (retryTimer !== null || closed) return;
    retryTimer = setInterval(() => {
      try {
        retry();
      } catch {
        // never throws out of a timer
      }
    }, retryIntervalMs);
    retryTimer.unref();
  };

  const stopRetryTimer = (): void => {
    if (retryTimer !== null) clearInterval(retryTimer);
    retryTimer = null;
  };

  const bufferPolicy = (): string =>
    bufferRecords > 0
      ? `records are buffered in memory (${buffered()} so far, at most ${bufferRecords}) and retried every ${duration(retryIntervalMs)}`
      : `records are dropped (no memory buffer configured) until it works again; retried every ${duration(retryIntervalMs)}`;

  /**
   * A write or retry failed. Starts an episode (returns true: the caller reports it once the line
   * is queued, so the count includes it) or updates the running one.
   */
  const failed = (err: unknown): boolean => {
    const code = errorCode(unwrap(err));
    if (!isStdout && fd !== null) {
      // Reopen on the next attempt (EBADF, EIO, the file replaced…); same file → torn line completed.
      const keep = headWritten;
      closeFd();
      headWritten = keep;
    }
    const t = now();
    if (episode === null) {
      episode = { since: t, code, lastReportAt: t, droppedAtStart: stats.dropped, overflowReported: false };
      ensureRetryTimer();
      return true;
    }
    episode.code = code;
    return false;
  };

  const reportStart = (): void => {
    if (episode === null) return;
    notify(opts.onError, `audit destination ${label} unwritable (${episode.code}): ${bufferPolicy()}`);
  };

  const remind = (): void => {
    if (episode === null) return;
    const t = now();
    if (t - episode.lastReportAt < REMINDER_MS) return;
    episode.lastReportAt = t;
    const dropped = stats.dropped - episode.droppedAtStart;
    notify(
      opts.onError,
      `audit destination ${label} still unwritable (${episode.code}) after ${duration(t - episode.since)}: ` +
        `${count(buffered(), 'record')} buffered in memory, ${count(dropped, 'record')} dropped; retried every ${duration(retryIntervalMs)}`,
    );
  };

  /**
   * Queues a line that could not be written. When the buffer is full the NEWEST line is dropped
   * (and counted), never an older one: for forensics the oldest records of an incident — what
   * happened as things started to fail — matter most, what was kept stays one contiguous run in
   * order, and a flood of new events (possibly provoked on purpose) cannot push the evidence of
   * earlier ones out of memory. A torn line (part of it already in the file) is always kept, so
   * it can be completed before anything else is appended.
   */
  const enqueue = (line: string, torn: number): void => {
    stats.writeFailures++;
    if (buffered() < bufferRecords || torn > 0) {
      if (buffered() === 0) headWritten = torn;
      queue.push(line);
      stats.buffered = buffered();
      return;
    }
    stats.dropped++;
    if (episode !== null && !episode.overflowReported && bufferRecords > 0) {
      episode.overflowReported = true;
      episode.lastReportAt = now();
      notify(
        opts.onError,
        `audit buffer for ${label} is full (${bufferRecords} records): newer records are dropped and counted until the destination recovers (${episode.code})`,
      );
    }
  };

  const recovered = (): void => {
    const ep = episode;
    if (ep === null) return;
    episode = null;
    stopRetryTimer();
    const dropped = stats.dropped - ep.droppedAtStart;
    notify(
      opts.onRecovered,
      `audit destination ${label} writable again after ${duration(now() - ep.since)} (was ${ep.code}); buffered records written in order` +
        (dropped > 0 ? `; ${count(dropped, 'record')} were dropped during the outage` : ''),
    );
  };

  /** Retries the buffer (the timer, flush). Returns true when nothing is left pending. */
  function retry(budgetMs = EAGAIN_RETRY_BUDGET_MS): boolean {
    if (buffered() === 0) {
      // Nothing to prove the destination with (bufferRecords 0): the next write decides.
      remind();
      return episode === null;
    }
    lastAttemptAt = now();
    try {
      drain(budgetMs);
    } catch (err) {
      if (failed(err)) reportStart();
      else remind();
      return false;
    }
    recovered();
    return true;
  }

  // ---- the sink --------------------------------------------------------------------------

  /** After close(): open, append, close; nothing is kept in memory (no timer would retry it). */
  const writeAfterClose = (line: string): void => {
    try {
      appendLine(line, EAGAIN_BUDGET_MS);
    } catch (err) {
      stats.writeFailures++;
      stats.dropped++;
      notice('closed', `audit destination ${label} unwritable (${errorCode(unwrap(err))}) after the sink was closed: record dropped and counted`);
    }
    if (policy !== 'never') syncNow();
    closeFd();
  };

  /** Lines written while corked. */
  let corked: { lines: string[] } | null = null;

  const cork = (): void => {
    if (corked === null && !closed) corked = { lines: [] };
  };

  const uncork = (): void => {
    const c = corked;
    corked = null;
    if (c === null || c.lines.length === 0) return;
    try {
      if (c.lines.length === 1 || episode !== null || buffered() > 0 || closed || !regular) {
        // One line, a failing destination, or a pipe (another process may share it, and a write
        // over PIPE_BUF can interleave with theirs): each line takes the ordinary path, in order.
        for (let i = 0; i < c.lines.length; i++) write(c.lines[i]!);
        return;
      }
      // A healthy destination and an empty buffer: the lines go out the way a recovery drains the
      // buffer, in batches of whole lines that never cross a rotation boundary.
      for (const line of c.lines) queue.push(line);
      try {
        drain(EAGAIN_BUDGET_MS);
      } catch (err) {
        lastAttemptAt = now();
        const isNew = failed(err);
        // What is left was not written when offered: it is queued again line by line, exactly as
        // if each had been offered alone (counted, kept up to the buffer's bound, a torn head kept).
        const rest = queue.slice(qHead);
        const torn = headWritten;
        queue = [];
        qHead = 0;
        headWritten = 0;
        for (let i = 0; i < rest.length; i++) enqueue(rest[i]!, i === 0 ? torn : 0);
        if (isNew) reportStart();
        else remind();
      }
    } catch {
      // uncork never throws, whatever happens
    }
  };

  const write = (raw: string): void => {
    lastLength = -1;
    try {
      let line = typeof raw === 'string' ? raw : String(raw);
      if (!line.endsWith('\n')) line += '\n';
      if (closed) {
        writeAfterClose(line);
        return;
      }
      if (corked !== null) {
        corked.lines.push(line);
        return;
      }
      if (episode !== null || buffered() > 0) {
        // Failing: touch the destination at most once per retry interval, and keep the order:
        // the buffer goes first, then this line.
        if (now() - lastAttemptAt >= retryIntervalMs) {
          lastAttemptAt = now();
          try {
            drain(EAGAIN_RETRY_BUDGET_MS);
            appendLine(line, EAGAIN_RETRY_BUDGET_MS);
            recovered();
            return;
          } catch (err) {
            const torn = buffered() === 0 && err instanceof PartialWrite ? err.written : 0;
            const isNew = failed(err);
            enqueue(line, torn);
            if (isNew) reportStart();
            else remind();
            return;
          }
        }
        enqueue(line, 0);
        remind();
        return;
      }
      try {
        appendLine(line, EAGAIN_BUDGET_MS);
      } catch (err) {
        lastAttemptAt = now();
        const isNew = failed(err);
        enqueue(line, err instanceof PartialWrite ? err.written : 0);
        if (isNew) reportStart();
        else remind();
      }
    } catch {
      // write never throws, whatever happens
    }
  };

  const flush = (): void => {
    try {
      if (closed) return;
      if (buffered() > 0) retry(EAGAIN_BUDGET_MS);
      syncUnanswered();
      if (policy !== 'never' && fd !== null) syncNow();
    } catch {
      // never throws
    }
  };

  const close = (): void => {
    if (closed) return;
    uncork();
    try {
      stopRetryTimer();
      if (buffered() > 0) {
        try {
          drain(EAGAIN_BUDGET_MS);
          recovered();
        } catch (err) {
          failed(err);
        }
      }
      closed = true;
      stopRetryTimer();
      if (syncTimer !== null) clearTimeout(syncTimer);
      syncTimer = null;
      const left = buffered();
      if (left > 0) {
        stats.dropped += left;
        const code = episode?.code ?? 'unknown';
        queue = [];
        qHead = 0;
        headWritten = 0;
        stats.buffered = 0;
        notify(opts.onError, `audit sink for ${label} closed with ${count(left, 'record')} still undeliverable (${code}): they are lost and counted as dropped`
          + (stats.dropped > left ? `; ${count(stats.dropped, 'record')} lost in all since the start` : ''));
      } else if (stats.dropped > 0) {
        // A short-lived process may end before the periodic reminder: the total is said once here.
        notify(opts.onError, `audit sink for ${label} closed: ${count(stats.dropped, 'record')} lost in all since the start (counted as dropped)`);
      }
      episode = null;
      syncUnanswered();
      if (policy !== 'never') syncNow();
      closeFd();
    } catch {
      closed = true;
    }
  };

  return {
    write,
    lastLineBytes: () => (lastLength > 0 ? encodeBuf!.subarray(0, lastLength - 1) : undefined),
    cork,
    uncork,
    flush,
    close,
    stats: () => ({ ...stats, buffered: buffered() }),
  };
}
