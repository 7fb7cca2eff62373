'use strict';
// The audit sink on its own: order, permissions, rotation, failure buffering and recovery, fsync
// policies, short writes and EAGAIN. Real files in a temporary directory; an injected `fs` only
// where a failure cannot be produced for real (tests run as root: chmod does not stop writes).
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { openSink } = require('../../dist/lib/audit/sink.js');

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** A 300-byte JSON line with a sequence number (the same length for every seq < 10^9). */
const record = (seq) => `${JSON.stringify({ seq, pad: 'x'.repeat(280 - String(seq).length) })}\n`;
const LEN = Buffer.byteLength(record(0));

function lines(file) {
  const text = fs.readFileSync(file, 'utf8');
  if (text === '') return [];
  assert.ok(text.endsWith('\n'), `${file} ends with a newline`);
  return text.slice(0, -1).split('\n');
}
const seqs = (file) => lines(file).map((l) => JSON.parse(l).seq);
const range = (from, to) => Array.from({ length: to - from }, (_, i) => from + i);

/** Options with collected onError/onRecovered messages. */
function options(destination, extra = {}) {
  const errors = [];
  const recoveries = [];
  return {
    errors,
    recoveries,
    opts: {
      destination,
      fsync: 'never',
      fsyncIntervalMs: 1000,
      maxFileBytes: 0,
      maxFiles: 0,
      bufferRecords: 1000,
      retryIntervalMs: 1000,
      onError: (m) => errors.push(m),
      onRecovered: (m) => recoveries.push(m),
      ...extra,
    },
  };
}

/** An `openSync` that also collects the descriptors of `file` (descriptor numbers are reused). */
const opensOf = (file, fds) => (p, ...rest) => {
  const fd = fs.openSync(p, ...rest);
  if (p === file) fds.push(fd);
  return fd;
};

/** A controllable clock. */
function clock(start = 1_000_000) {
  let t = start;
  const now = () => t;
  now.advance = (ms) => { t += ms; };
  return now;
}

/** The real fs with some calls wrapped; `calls[name]` counts them. */
function spyFs(overrides = {}) {
  const calls = {};
  const wrapped = {};
  for (const name of ['openSync', 'writeSync', 'closeSync', 'fstatSync', 'statSync', 'lstatSync', 'renameSync', 'unlinkSync', 'mkdirSync', 'fsyncSync', 'fdatasyncSync', 'readSync', 'fdatasync', 'close']) {
    calls[name] = 0;
    wrapped[name] = (...args) => {
      calls[name]++;
      // The sink hands a line to write(2) as a string; the fakes below see its bytes, as the
      // sink itself does when it goes on after a short write.
      if (name === 'writeSync' && typeof args[1] === 'string') {
        const b = Buffer.from(args[1], 'utf8');
        args = [args[0], b, 0, b.length];
      }
      return (overrides[name] ?? fs[name])(...args);
    };
  }
  return { fs: wrapped, calls };
}

function eno(code) {
  const err = new Error(`${code}: simulated`);
  err.code = code;
  return err;
}

describe('audit sink', function () {
  let dir;
  const sinks = [];
  const open = (opts) => {
    const s = openSink(opts);
    sinks.push(s);
    return s;
  };
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'auditrace-sink-'));
  });
  afterEach(() => {
    for (const s of sinks.splice(0)) s.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  describe('appending', () => {
    it('appends lines in order, after what the file already held', () => {
      const file = path.join(dir, 'audit.jsonl');
      fs.writeFileSync(file, record(-1));
      const sink = open(options(file).opts);
      for (let i = 0; i < 1000; i++) sink.write(record(i));
      assert.deepEqual(seqs(file), range(-1, 1000));
      const st = sink.stats();
      assert.equal(st.written, 1000);
      assert.equal(st.bytes, 1000 * LEN);
      assert.deepEqual([st.writeFailures, st.buffered, st.dropped, st.rotations], [0, 0, 0, 0]);
    });

    it('every line is on disk (page cache) when write() returns, without flush or close', () => {
      const file = path.join(dir, 'audit.jsonl');
      const sink = open(options(file).opts);
      for (let i = 0; i < 50; i++) {
        sink.write(record(i));
        assert.equal(lines(file).length, i + 1);
      }
    });

    it('a file ending in a fragment (a crash mid-line before us) is terminated, not glued onto', () => {
      const file = path.join(dir, 'audit.jsonl');
      fs.writeFileSync(file, `${record(0)}{"seq":1,"pad":"xx`);
      const sink = open(options(file).opts);
      sink.write(record(2));
      sink.write(record(3));
      assert.deepEqual(lines(file), [record(0).trim(), '{"seq":1,"pad":"xx', record(2).trim(), record(3).trim()]);
      // A clean file gets no extra newline.
      const clean = path.join(dir, 'clean.jsonl');
      fs.writeFileSync(clean, record(0));
      open(options(clean).opts).write(record(1));
      assert.equal(fs.readFileSync(clean, 'utf8'), record(0) + record(1));
    });

    it('creates missing parent directories (0700) and the file (0600)', () => {
      const file = path.join(dir, 'a', 'b', 'c', 'audit.jsonl');
      const old = process.umask(0);
      try {
        const sink = open(options(file).opts);
        sink.write(record(0));
      } finally {
        process.umask(old);
      }
      assert.deepEqual(seqs(file), [0]);
      assert.equal(fs.statSync(file).mode & 0o777, 0o600);
      for (const d of ['a', 'a/b', 'a/b/c']) assert.equal(fs.statSync(path.join(dir, d)).mode & 0o777, 0o700, d);
    });

    it('a directory that can be neither made nor found (under /proc) is an unwritable destination, not a hang', function () {
      // Node's recursive mkdir loops for ever there, at full CPU and deaf to signals.
      if (!fs.existsSync('/proc/self')) this.skip();
      const { errors, opts } = options('/proc/auditrace-nope/x/audit.jsonl', { bufferRecords: 10 });
      const sink = open(opts);
      sink.write(record(0));
      assert.equal(sink.stats().writeFailures, 1);
      assert.equal(sink.stats().buffered, 1);
      assert.match(errors[0], /^audit destination \/proc\/auditrace-nope\/x\/audit\.jsonl unwritable \(E[A-Z]+\)/);
      sink.close();
    });

    it('a relative destination is resolved once: a later chdir does not move the file', () => {
      const cwd = process.cwd();
      const other = path.join(dir, 'elsewhere');
      fs.mkdirSync(other);
      process.chdir(dir);
      try {
        const sink = open(options('rel/audit.jsonl').opts);
        sink.write(record(0));
        process.chdir(other);
        sink.close();
        sink.write(record(1)); // after close: reopened by path
      } finally {
        process.chdir(cwd);
      }
      assert.deepEqual(seqs(path.join(dir, 'rel', 'audit.jsonl')), [0, 1]);
      assert.equal(fs.existsSync(path.join(other, 'rel')), false);
    });

    it('adds a missing newline and never throws on odd input', () => {
      const file = path.join(dir, 'audit.jsonl');
      const sink = open(options(file).opts);
      sink.write('{"seq":0}');
      sink.write(undefined);
      sink.write('{"seq":1}\n');
      assert.deepEqual(lines(file), ['{"seq":0}', 'undefined', '{"seq":1}']);
    });

    it('lastLineBytes(): the bytes of a line written on its own, else undefined (corked, failing, or too long to encode)', () => {
      const file = path.join(dir, 'audit.jsonl');
      let failing = false;
      const { fs: spy } = spyFs({ writeSync: (...a) => { if (failing) throw eno('ENOSPC'); return fs.writeSync(...a); } });
      const sink = open({ ...options(file).opts, fs: spy });
      assert.equal(sink.lastLineBytes(), undefined, 'nothing written yet');
      const multi = '{"v":"é€\u{1F600}\\u2028"}';
      sink.write(`${multi}\n`);
      assert.ok(Buffer.from(sink.lastLineBytes()).equals(Buffer.from(multi, 'utf8')), 'its UTF-8 bytes, without the newline');
      sink.write('{"seq":1}'); // the newline is added by the sink
      assert.equal(Buffer.from(sink.lastLineBytes()).toString('utf8'), '{"seq":1}');
      sink.cork();
      sink.write(record(2));
      assert.equal(sink.lastLineBytes(), undefined, 'corked: not written yet');
      sink.uncork();
      const long = `${JSON.stringify({ pad: '€'.repeat(30_000) })}\n`;
      sink.write(long);
      assert.equal(sink.lastLineBytes(), undefined, 'a line past the encoding buffer is written from the string');
      failing = true;
      sink.write(record(3));
      assert.equal(sink.lastLineBytes(), undefined, 'buffered: not written');
      failing = false;
      sink.flush();
      assert.deepEqual(lines(file), [multi, '{"seq":1}', record(2).trim(), long.trim(), record(3).trim()]);
    });

    it('a line written from inside another line\'s append (an onError callback) leaves both whole; lastLineBytes() names the outer one', () => {
      const file = path.join(dir, 'audit.jsonl');
      const { fs: spy } = spyFs({ renameSync: () => { throw eno('EACCES'); } });
      let sink;
      let nested = 0;
      // The third line needs a rotation, whose failed rename is a notice: the callback writes.
      const { opts } = options(file, { maxFileBytes: LEN * 2 });
      sink = open({ ...opts, fs: spy, onError: () => { if (nested++ === 0) sink.write(record(100)); } });
      sink.write(record(0));
      sink.write(record(1));
      sink.write(record(2));
      assert.equal(nested, 1, 'the callback ran once, inside the append');
      assert.deepEqual(seqs(file), [0, 1, 100, 2]);
      assert.equal(Buffer.from(sink.lastLineBytes()).toString('utf8'), record(2).trim());
    });

    it('write, flush and close never throw, even when every fs call throws (also non-Errors)', () => {
      const { errors, opts } = options(path.join(dir, 'audit.jsonl'));
      const bad = {};
      for (const name of ['openSync', 'writeSync', 'closeSync', 'fstatSync', 'statSync', 'lstatSync', 'renameSync', 'unlinkSync', 'mkdirSync', 'fsyncSync', 'fdatasyncSync', 'readSync']) {
        bad[name] = () => { throw 'not even an Error'; };
      }
      const sink = open({ ...opts, fs: bad, fsync: 'always', onError: (m) => { errors.push(m); throw new Error('callback fails too'); } });
      for (let i = 0; i < 10; i++) sink.write(record(i));
      sink.flush();
      sink.close();
      sink.close();
      sink.write(record(10));
      assert.equal(sink.stats().writeFailures, 11);
      assert.ok(errors.length >= 1);
    });

    it('a write after close() still reaches the file (open, append, close)', () => {
      const file = path.join(dir, 'audit.jsonl');
      const { fs: spy, calls } = spyFs();
      const sink = open({ ...options(file).opts, fs: spy });
      sink.write(record(0));
      sink.close();
      sink.write(record(1));
      assert.deepEqual(seqs(file), [0, 1]);
      assert.equal(calls.openSync, calls.closeSync, 'no descriptor left open');
      assert.equal(Buffer.from(sink.lastLineBytes()).toString('utf8'), record(1).trim(), 'the bytes of the line appended after close');
    });
  });

  describe('rotation', () => {
    it('50 MB through a 5 MB limit: no split line, every file ≤ the limit, every sequence exactly once', function () {
      this.timeout(120000);
      const file = path.join(dir, 'audit.jsonl');
      const max = 5 * 1024 * 1024;
      const sink = open(options(file, { maxFileBytes: max }).opts);
      const total = Math.ceil((50 * 1024 * 1024) / LEN);
      for (let i = 0; i < total; i++) sink.write(record(i));
      const st = sink.stats();
      sink.close();
      const files = fs.readdirSync(dir).sort();
      // maxFiles 0 keeps all: audit.jsonl plus audit.jsonl.1 … .N
      assert.equal(files.length, st.rotations + 1);
      assert.ok(st.rotations >= 10, `${st.rotations} rotations`);
      const seen = new Set();
      for (const f of files) {
        const p = path.join(dir, f);
        const size = fs.statSync(p).size;
        assert.ok(size <= max, `${f} is ${size} bytes`);
        const text = fs.readFileSync(p, 'utf8');
        assert.ok(text.endsWith('\n'), `${f} ends with a newline`);
        for (const l of text.slice(0, -1).split('\n')) {
          const { seq } = JSON.parse(l); // a split line would not parse
          assert.ok(!seen.has(seq), `seq ${seq} twice`);
          seen.add(seq);
        }
      }
      assert.equal(seen.size, total);
      // Numbered oldest-last: .N holds the first records, the live file the last ones.
      const n = st.rotations;
      assert.equal(seqs(path.join(dir, `audit.jsonl.${n}`))[0], 0);
      assert.equal(seqs(file).at(-1), total - 1);
      const order = [...range(1, n + 1).reverse().map((i) => `audit.jsonl.${i}`), 'audit.jsonl'].flatMap((f) => seqs(path.join(dir, f)));
      assert.deepEqual(order, range(0, total));
      for (const f of files) assert.equal(fs.statSync(path.join(dir, f)).mode & 0o777, 0o600);
    });

    it('maxFiles > 0 keeps only that many rotated files, the newest', () => {
      const file = path.join(dir, 'audit.jsonl');
      const sink = open(options(file, { maxFileBytes: LEN * 10, maxFiles: 3 }).opts);
      for (let i = 0; i < 100; i++) sink.write(record(i));
      assert.equal(sink.stats().rotations, 9);
      assert.deepEqual(fs.readdirSync(dir).sort(), ['audit.jsonl', 'audit.jsonl.1', 'audit.jsonl.2', 'audit.jsonl.3']);
      assert.deepEqual(seqs(file), range(90, 100));
      assert.deepEqual(seqs(`${file}.1`), range(80, 90));
      assert.deepEqual(seqs(`${file}.3`), range(60, 70));
    });

    it('maxFiles 0 keeps every rotated file', () => {
      const file = path.join(dir, 'audit.jsonl');
      const sink = open(options(file, { maxFileBytes: LEN * 10, maxFiles: 0 }).opts);
      for (let i = 0; i < 100; i++) sink.write(record(i));
      assert.equal(fs.readdirSync(dir).length, 10);
      assert.deepEqual(seqs(`${file}.9`), range(0, 10));
    });

    it('a line longer than maxFileBytes gets a file of its own, whole', () => {
      const file = path.join(dir, 'audit.jsonl');
      const sink = open(options(file, { maxFileBytes: 100 }).opts);
      sink.write('{"seq":0}\n');
      sink.write(record(1));
      sink.write('{"seq":2}\n');
      assert.deepEqual(seqs(`${file}.2`), [0]);
      assert.deepEqual(seqs(`${file}.1`), [1]);
      assert.deepEqual(seqs(file), [2]);
    });

    it('rotated by someone else (renamed away): the sink reopens the path instead of writing into the old file', () => {
      const file = path.join(dir, 'audit.jsonl');
      const now = clock();
      const sink = open(options(file, { now }).opts);
      sink.write(record(0));
      fs.renameSync(file, `${file}.external`);
      now.advance(1001); // the path is compared with the descriptor at most once a second
      sink.write(record(1));
      assert.deepEqual(seqs(`${file}.external`), [0]);
      assert.deepEqual(seqs(file), [1]);
      assert.equal(sink.stats().rotations, 0);
    });

    it('rotated by someone else near the limit: the new file is used, not rotated again', () => {
      const file = path.join(dir, 'audit.jsonl');
      const sink = open(options(file, { maxFileBytes: LEN * 3 }).opts);
      for (let i = 0; i < 3; i++) sink.write(record(i));
      fs.renameSync(file, `${file}.1`);
      sink.write(record(3)); // would exceed: checks the path first, finds a new (absent) file
      assert.equal(sink.stats().rotations, 0);
      assert.deepEqual(seqs(`${file}.1`), [0, 1, 2]);
      assert.deepEqual(seqs(file), [3]);
      assert.equal(fs.existsSync(`${file}.2`), false);
    });

    it('the directory removed under the sink: recreated, no line goes to the deleted file', () => {
      const sub = path.join(dir, 'logs');
      const file = path.join(sub, 'audit.jsonl');
      const now = clock();
      const sink = open(options(file, { now }).opts);
      sink.write(record(0));
      fs.rmSync(sub, { recursive: true });
      now.advance(1001);
      sink.write(record(1));
      assert.deepEqual(seqs(file), [1]);
    });

    it('a rotation that cannot rename keeps appending past the limit (nothing lost, nothing overwritten)', () => {
      const file = path.join(dir, 'audit.jsonl');
      const now = clock();
      let failRename = true;
      const { fs: spy } = spyFs({ renameSync: (a, b) => { if (failRename) throw eno('EPERM'); return fs.renameSync(a, b); } });
      const { errors, opts } = options(file, { maxFileBytes: LEN * 2, fs: spy, now });
      const sink = open(opts);
      for (let i = 0; i < 6; i++) sink.write(record(i));
      assert.deepEqual(seqs(file), range(0, 6));
      assert.equal(errors.length, 1);
      assert.match(errors[0], /could not be rotated \(EPERM\)/);
      failRename = false;
      now.advance(1001);
      sink.write(record(6));
      assert.equal(sink.stats().rotations, 1);
      assert.deepEqual(seqs(`${file}.1`), range(0, 6));
      assert.deepEqual(seqs(file), [6]);
    });
  });

  describe('a failing destination', () => {
    it('parent is a regular file (ENOTDIR): buffered, one onError, then recovered in order', () => {
      const obstacle = path.join(dir, 'logs');
      fs.writeFileSync(obstacle, 'not a directory');
      const file = path.join(obstacle, 'audit.jsonl');
      const now = clock();
      const { errors, recoveries, opts } = options(file, { now });
      const sink = open(opts);
      for (let i = 0; i < 12; i++) sink.write(record(i));
      let st = sink.stats();
      assert.equal(st.writeFailures, 12);
      assert.equal(st.buffered, 12);
      assert.equal(st.written, 0);
      assert.equal(errors.length, 1, errors.join('\n'));
      assert.match(errors[0], new RegExp(`^audit destination ${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} unwritable \\(ENOTDIR\\): records are buffered in memory \\(1 so far, at most 1000\\) and retried every 1 s$`));

      fs.rmSync(obstacle);
      sink.flush();
      st = sink.stats();
      assert.equal(st.buffered, 0);
      assert.equal(st.written, 12);
      sink.write(record(12));
      assert.deepEqual(seqs(file), range(0, 13));
      assert.equal(recoveries.length, 1);
      assert.match(recoveries[0], /writable again after .* \(was ENOTDIR\)/);
      assert.equal(errors.length, 1);
    });

    it('while failing, the filesystem is tried at most once per retry interval; buffered lines go before new ones', () => {
      const obstacle = path.join(dir, 'logs');
      fs.writeFileSync(obstacle, 'x');
      const file = path.join(obstacle, 'audit.jsonl');
      const now = clock();
      const { fs: spy, calls } = spyFs();
      const sink = open(options(file, { now, fs: spy }).opts);
      for (let i = 0; i < 100; i++) sink.write(record(i));
      assert.equal(calls.openSync, 1, 'one attempt for 100 writes');
      now.advance(999);
      sink.write(record(100));
      assert.equal(calls.openSync, 1);
      now.advance(1);
      sink.write(record(101));
      assert.equal(calls.openSync, 2, 'retried once the interval passed');
      fs.rmSync(obstacle);
      sink.write(record(102)); // within the interval: queued, not tried
      assert.equal(fs.existsSync(file), false);
      assert.equal(sink.lastLineBytes(), undefined, 'queued: not written');
      now.advance(1000);
      sink.write(record(103)); // retried: the buffer first, then this line
      assert.deepEqual(seqs(file), range(0, 104));
      assert.equal(sink.stats().buffered, 0);
      assert.equal(Buffer.from(sink.lastLineBytes()).toString('utf8'), record(103).trim(), 'the line written after the drain, on its own');
    });

    it('a directory where the file should be (EISDIR): the retry timer recovers without new writes', async () => {
      const file = path.join(dir, 'audit.jsonl');
      fs.mkdirSync(file);
      const { errors, recoveries, opts } = options(file, { retryIntervalMs: 50 });
      const sink = open(opts);
      for (let i = 0; i < 5; i++) sink.write(record(i));
      assert.equal(sink.stats().buffered, 5);
      assert.match(errors[0], /\(EISDIR\)/);
      fs.rmdirSync(file);
      for (let i = 0; i < 40 && sink.stats().buffered > 0; i++) await sleep(25);
      assert.equal(sink.stats().buffered, 0);
      assert.deepEqual(seqs(file), range(0, 5));
      assert.equal(recoveries.length, 1);
      assert.equal(errors.length, 1);
    });

    it('the retry and fsync timers do not keep the process alive (unref)', () => {
      const file = path.join(dir, 'audit.jsonl');
      fs.mkdirSync(file);
      const { execFileSync } = require('node:child_process');
      const script = `const {openSink}=require(${JSON.stringify(require.resolve('../../dist/lib/audit/sink.js'))});
        const failing=openSink({destination:${JSON.stringify(file)},fsync:'interval',maxFileBytes:0,maxFiles:0,bufferRecords:10,onError(){}});
        const ok=openSink({destination:${JSON.stringify(path.join(dir, 'ok.jsonl'))},fsync:'interval',fsyncIntervalMs:60000,maxFileBytes:0,maxFiles:0,bufferRecords:10,onError(){}});
        failing.write('{}\\n'); ok.write('{}\\n');`;
      // Referenced, the retry interval would keep it alive for ever and the 60 s fsync timer for
      // a minute: the timeout would throw.
      execFileSync(process.execPath, ['-e', script], { timeout: 10000 });
    });

    it('a full buffer drops the NEWEST lines and counts exactly the overflow; the oldest land first on recovery', () => {
      const obstacle = path.join(dir, 'logs');
      fs.writeFileSync(obstacle, 'x');
      const file = path.join(obstacle, 'audit.jsonl');
      const now = clock();
      const { errors, recoveries, opts } = options(file, { now, bufferRecords: 10 });
      const sink = open(opts);
      for (let i = 0; i < 25; i++) sink.write(record(i));
      const st = sink.stats();
      assert.equal(st.buffered, 10);
      assert.equal(st.dropped, 15);
      assert.equal(st.writeFailures, 25);
      assert.equal(errors.length, 2, errors.join('\n')); // the failure, then "buffer full" once
      assert.match(errors[1], /buffer .* is full \(10 records\): newer records are dropped and counted/);
      fs.rmSync(obstacle);
      now.advance(1000);
      sink.write(record(25));
      assert.deepEqual(seqs(file), [...range(0, 10), 25]);
      assert.equal(sink.stats().dropped, 15);
      assert.match(recoveries[0], /15 records were dropped during the outage/);
    });

    it('bufferRecords 0: every failed line is dropped and counted', () => {
      const file = path.join(dir, 'audit.jsonl');
      fs.mkdirSync(file);
      const now = clock();
      const { errors, recoveries, opts } = options(file, { now, bufferRecords: 0 });
      const sink = open(opts);
      for (let i = 0; i < 7; i++) sink.write(record(i));
      assert.deepEqual([sink.stats().buffered, sink.stats().dropped, sink.stats().writeFailures], [0, 7, 7]);
      assert.equal(errors.length, 1);
      assert.match(errors[0], /dropped \(no memory buffer configured\)/);
      fs.rmdirSync(file);
      now.advance(1000);
      sink.write(record(7));
      assert.deepEqual(seqs(file), [7]);
      assert.equal(recoveries.length, 1);
    });

    it('a lasting failure is reported again at most once a minute, with counts', () => {
      const file = path.join(dir, 'audit.jsonl');
      fs.mkdirSync(file);
      const now = clock();
      const { errors, opts } = options(file, { now, bufferRecords: 5 });
      const sink = open(opts);
      sink.write(record(0));
      assert.equal(errors.length, 1);
      const noticeAt = [];
      for (let s = 1; s <= 200; s++) {
        now.advance(1000);
        const before = errors.length;
        sink.write(record(s));
        if (errors.length > before) noticeAt.push(s);
      }
      // s=5: the buffer-full notice; then a reminder each minute after the last line.
      assert.deepEqual(noticeAt, [5, 65, 125, 185]);
      assert.match(errors[1], /is full \(5 records\)/);
      assert.match(errors[2], /^audit destination .* still unwritable \(EISDIR\) after 65 s: 5 records buffered in memory, 61 records dropped; retried every 1 s$/);
      assert.match(errors[3], /after 2 min: 5 records buffered in memory, 121 records dropped/);
    });

    it('/dev/full (ENOSPC on every write): counted, buffered, no throw; lost lines counted at close', () => {
      const { errors, opts } = options('/dev/full', { bufferRecords: 100, fsync: 'always' });
      const sink = open(opts);
      for (let i = 0; i < 150; i++) sink.write(record(i));
      sink.flush();
      const st = sink.stats();
      assert.equal(st.writeFailures, 150);
      assert.equal(st.buffered, 100);
      assert.equal(st.dropped, 50);
      assert.equal(st.written, 0);
      assert.match(errors[0], /^audit destination \/dev\/full unwritable \(ENOSPC\)/);
      sink.close();
      assert.equal(sink.stats().dropped, 150);
      assert.equal(sink.stats().buffered, 0);
      assert.match(errors.at(-1), /closed with 100 records still undeliverable \(ENOSPC\): they are lost and counted as dropped; 150 records lost in all since the start$/);
    });

    it('no memory buffer: every lost record is still counted in one line at close', () => {
      const { errors, opts } = options('/dev/full', { bufferRecords: 0, fsync: 'always' });
      const sink = open(opts);
      for (let i = 0; i < 13; i++) sink.write(record(i));
      sink.close();
      assert.equal(sink.stats().dropped, 13);
      assert.match(errors.at(-1), /closed: 13 records lost in all since the start \(counted as dropped\)$/);
    });

    it('a torn write (part of a line, then ENOSPC) is completed on recovery: no partial line, no duplicate', () => {
      const file = path.join(dir, 'audit.jsonl');
      const now = clock();
      // As the kernel does when the disk fills mid-line: a short write, then ENOSPC.
      let state = 'ok';
      const { fs: spy } = spyFs({
        writeSync: (fd, buf, off, len) => {
          if (state === 'tear') { state = 'full'; return fs.writeSync(fd, buf, off, Math.min(len, 100)); }
          if (state === 'full') throw eno('ENOSPC');
          return fs.writeSync(fd, buf, off, len);
        },
      });
      const sink = open(options(file, { now, fs: spy }).opts);
      sink.write(record(0));
      state = 'tear';
      sink.write(record(1));
      sink.write(record(2));
      assert.equal(fs.readFileSync(file, 'utf8').length, LEN + 100);
      assert.equal(sink.stats().buffered, 2);
      state = 'ok';
      now.advance(1000);
      sink.write(record(3));
      assert.deepEqual(seqs(file), range(0, 4));
      assert.equal(sink.stats().written, 4);
    });

    it('recovery drains the buffer in batches (one write per batch, not per line)', () => {
      const file = path.join(dir, 'audit.jsonl');
      fs.mkdirSync(file);
      const now = clock();
      const { fs: spy, calls } = spyFs();
      const sink = open(options(file, { now, fs: spy }).opts);
      for (let i = 0; i < 1000; i++) sink.write(record(i));
      fs.rmdirSync(file);
      const before = calls.writeSync;
      sink.flush();
      assert.ok(calls.writeSync - before <= 2, `${calls.writeSync - before} writes`);
      assert.deepEqual(seqs(file), range(0, 1000));
    });

    it('recovery with rotation: batches never cross the size limit', () => {
      const file = path.join(dir, 'audit.jsonl');
      fs.mkdirSync(file);
      const now = clock();
      const sink = open(options(file, { now, maxFileBytes: LEN * 7 }).opts);
      for (let i = 0; i < 50; i++) sink.write(record(i));
      fs.rmdirSync(file);
      sink.flush();
      const n = sink.stats().rotations;
      assert.equal(n, 7);
      const all = [...range(1, n + 1).reverse().map((i) => `${file}.${i}`), file];
      for (const f of all) assert.ok(fs.statSync(f).size <= LEN * 7);
      assert.deepEqual(all.flatMap(seqs), range(0, 50));
    });
  });

  describe('corked runs (the access records of one event-loop turn)', () => {
    it('lines written while corked reach the file at uncork(), in order, in one write(2)', () => {
      const file = path.join(dir, 'audit.jsonl');
      const { fs: spy, calls } = spyFs();
      const sink = open(options(file, { fs: spy }).opts);
      sink.write(record(0));
      const before = calls.writeSync;
      sink.cork();
      for (let i = 1; i <= 100; i++) sink.write(record(i));
      assert.deepEqual(seqs(file), [0], 'nothing of the run is written before uncork()');
      sink.uncork();
      assert.equal(calls.writeSync - before, 1);
      assert.deepEqual(seqs(file), range(0, 101));
      const st = sink.stats();
      assert.deepEqual([st.written, st.bytes, st.writeFailures, st.buffered, st.dropped], [101, 101 * LEN, 0, 0, 0]);
      sink.write(record(101));
      assert.deepEqual(seqs(file), range(0, 102), 'uncorked: written at once again');
    });

    it('a corked run with rotation: no split line, no file over the limit, every line once', () => {
      const file = path.join(dir, 'audit.jsonl');
      const sink = open(options(file, { maxFileBytes: LEN * 7 }).opts);
      for (let i = 0; i < 3; i++) sink.write(record(i));
      sink.cork();
      for (let i = 3; i < 50; i++) sink.write(record(i));
      sink.uncork();
      const n = sink.stats().rotations;
      assert.equal(n, 7);
      const all = [...range(1, n + 1).reverse().map((i) => `${file}.${i}`), file];
      for (const f of all) assert.ok(fs.statSync(f).size <= LEN * 7, `${f}: ${fs.statSync(f).size}`);
      assert.deepEqual(all.flatMap(seqs), range(0, 50));
    });

    it('the destination fails mid-run (a torn batch): the rest is buffered and counted, then completed in order', () => {
      const file = path.join(dir, 'audit.jsonl');
      const now = clock();
      let state = 'ok';
      const { fs: spy } = spyFs({
        writeSync: (fd, buf, off, len) => {
          if (state === 'tear') { state = 'full'; return fs.writeSync(fd, buf, off, Math.min(len, LEN * 3 + 100)); }
          if (state === 'full') throw eno('ENOSPC');
          return fs.writeSync(fd, buf, off, len);
        },
      });
      const { opts, errors } = options(file, { now, fs: spy });
      const sink = open(opts);
      sink.write(record(0));
      state = 'tear';
      sink.cork();
      for (let i = 1; i <= 10; i++) sink.write(record(i));
      sink.uncork();
      assert.equal(fs.readFileSync(file, 'utf8').length, LEN * 4 + 100, 'three whole lines and a torn one landed');
      let st = sink.stats();
      assert.deepEqual([st.written, st.writeFailures, st.buffered, st.dropped], [4, 7, 7, 0]);
      assert.equal(errors.length, 1, errors.join('\n'));
      state = 'ok';
      now.advance(1000);
      sink.write(record(11));
      // Byte for byte: the torn line completed from exactly where it stopped.
      assert.equal(fs.readFileSync(file, 'utf8'), range(0, 12).map(record).join(''));
      st = sink.stats();
      assert.deepEqual([st.written, st.buffered, st.dropped], [12, 0, 0]);
    });

    it('a failing run beyond the buffer keeps the oldest and counts exactly the overflow as dropped', () => {
      const file = path.join(dir, 'audit.jsonl');
      fs.mkdirSync(file); // EISDIR: nothing can be written
      const now = clock();
      const { opts, errors } = options(file, { now, bufferRecords: 5 });
      const sink = open(opts);
      sink.cork();
      for (let i = 0; i < 12; i++) sink.write(record(i));
      sink.uncork();
      const st = sink.stats();
      assert.deepEqual([st.written, st.writeFailures, st.buffered, st.dropped], [0, 12, 5, 7]);
      assert.ok(errors.some((m) => /buffer .* is full/.test(m)), errors.join('\n'));
      fs.rmdirSync(file);
      now.advance(1000);
      sink.flush();
      assert.deepEqual(seqs(file), range(0, 5));
    });

    it('uncork() without cork(), an empty run and a run of one are harmless; close() while corked loses nothing', () => {
      const file = path.join(dir, 'audit.jsonl');
      const sink = open(options(file).opts);
      sink.uncork();
      sink.cork();
      sink.uncork();
      sink.cork();
      sink.write(record(0));
      sink.uncork();
      assert.deepEqual(seqs(file), [0]);
      sink.cork();
      sink.write(record(1));
      sink.close();
      sink.uncork();
      assert.deepEqual(seqs(file), [0, 1]);
    });
  });

  describe('short writes and EAGAIN', () => {
    it('short writes and EAGAIN are retried until the whole line is written', () => {
      const file = path.join(dir, 'audit.jsonl');
      let n = 0;
      const { fs: spy, calls } = spyFs({
        writeSync: (fd, buf, off, len) => {
          if (n++ % 3 === 1) throw eno('EAGAIN');
          return fs.writeSync(fd, buf, off, Math.min(len, 7));
        },
      });
      const sink = open(options(file, { fs: spy }).opts);
      for (let i = 0; i < 20; i++) sink.write(record(i));
      assert.deepEqual(seqs(file), range(0, 20));
      assert.equal(sink.stats().writeFailures, 0);
      assert.ok(calls.writeSync > 20 * 40);
    });

    it('EAGAIN for ever is bounded: the line is buffered after about a second and written later', () => {
      const file = path.join(dir, 'audit.jsonl');
      const now = clock();
      let stuck = true;
      const { fs: spy } = spyFs({
        writeSync: (fd, buf, off, len) => {
          if (stuck) throw eno('EAGAIN');
          return fs.writeSync(fd, buf, off, len);
        },
      });
      const { errors, opts } = options(file, { fs: spy, now });
      const sink = open(opts);
      const t0 = Date.now();
      sink.write(record(0));
      const took = Date.now() - t0;
      assert.ok(took >= 900 && took < 3000, `blocked ${took} ms`);
      assert.equal(sink.stats().buffered, 1);
      assert.match(errors[0], /\(EAGAIN\)/);
      const t1 = Date.now();
      now.advance(1000);
      sink.write(record(1)); // a retry while stuck waits much less
      assert.ok(Date.now() - t1 < 500);
      stuck = false;
      now.advance(1000);
      sink.write(record(2));
      assert.deepEqual(seqs(file), [0, 1, 2]);
    });

    it('stdout: EPIPE (and EBADF) are caught and buffered; lines go to fd 1 otherwise', () => {
      const written = [];
      let fail = 'EPIPE';
      const { fs: spy } = spyFs({
        fstatSync: (fd) => (fd === 1 ? { isFile: () => false } : fs.fstatSync(fd)),
        writeSync: (fd, buf, off, len) => {
          assert.equal(fd, 1);
          if (fail) throw eno(fail);
          written.push(Buffer.from(buf.subarray(off, off + len)).toString());
          return len;
        },
        fsyncSync: () => assert.fail('no fsync on a pipe'),
        closeSync: () => assert.fail('fd 1 is never closed'),
      });
      const now = clock();
      const { errors, recoveries, opts } = options('stdout', { fs: spy, now, fsync: 'always' });
      const sink = open(opts);
      sink.write(record(0));
      fail = 'EBADF';
      now.advance(1000);
      sink.write(record(1));
      assert.equal(errors.length, 1);
      assert.match(errors[0], /^audit destination stdout unwritable \(EPIPE\)/);
      fail = null;
      now.advance(1000);
      sink.write(record(2));
      sink.close();
      assert.deepEqual(written.join('').split('\n').filter(Boolean).map((l) => JSON.parse(l).seq), [0, 1, 2]);
      assert.equal(recoveries.length, 1);
    });
  });

  describe('fsync policies', () => {
    const run = (fsync, count = 10) => {
      const file = path.join(dir, `audit-${fsync}.jsonl`);
      const { fs: spy, calls } = spyFs();
      const sink = open({ ...options(file, { fsync, fsyncIntervalMs: 50 }).opts, fs: spy });
      for (let i = 0; i < count; i++) sink.write(record(i));
      return { sink, calls, file };
    };

    it("'always' fsyncs after every write (and the directory once, for the new file's name)", () => {
      const { calls, file } = run('always');
      assert.equal(calls.fsyncSync, 10 + 1);
      assert.equal(calls.fdatasyncSync, 0);
      assert.equal(seqs(file).length, 10);
    });

    it("'interval' fdatasyncs at most once per interval (timer, off the event loop), and on close (in place)", async () => {
      const { sink, calls } = run('interval', 100);
      assert.equal(calls.fdatasyncSync + calls.fdatasync, 0, 'not on the write path');
      for (let i = 0; i < 200 && calls.fdatasync === 0; i++) await sleep(10);
      assert.equal(calls.fdatasync, 1, 'one for 100 writes, on the thread pool');
      assert.equal(calls.fdatasyncSync, 0, 'the timer never blocks the event loop on the disk');
      await sleep(100);
      assert.equal(calls.fdatasync, 1, 'nothing new, no sync');
      sink.write(record(100));
      sink.close();
      assert.equal(calls.fdatasyncSync, 1, 'on close, in place');
      assert.equal(calls.fsyncSync, 1, 'the directory, once');
    });

    it("'interval': a tick while the last sync still runs waits; closing then syncs in place, and the queue closes the file after its sync", async () => {
      const file = path.join(dir, 'slow-disk.jsonl');
      const pending = [];
      const { fs: spy, calls } = spyFs({ fdatasync: (fd, cb) => { pending.push(() => fs.fdatasync(fd, cb)); } });
      const { opts, errors } = options(file, { fs: spy, fsync: 'interval', fsyncIntervalMs: 20 });
      const sink = open(opts);
      sink.write(record(0));
      for (let i = 0; i < 200 && calls.fdatasync === 0; i++) await sleep(5);
      assert.equal(calls.fdatasync, 1);
      sink.write(record(1)); // dirty again while the disk has not answered
      await sleep(100);
      assert.equal(calls.fdatasync, 1, 'no second sync of the file while the first is in flight');
      assert.equal(calls.fdatasyncSync, 0);
      const closesBefore = calls.closeSync; // the directory's, after its fsync
      sink.close();
      assert.equal(calls.fdatasyncSync, 1, 'close syncs in place');
      assert.equal(calls.closeSync, closesBefore, 'the descriptor stays open while a sync of it is out: no sync runs on a closed number');
      for (let round = 0; round < 3; round++) {
        for (const go of pending.splice(0)) go();
        await sleep(20);
      }
      assert.equal(calls.close, 1, 'closed by the queue once its syncs answered');
      assert.deepEqual(errors, []);
      assert.deepEqual(seqs(file), [0, 1]);
    });

    it("'interval': flush() between a rotated file's close(2) and its callback does not sync the closed number", async () => {
      const file = path.join(dir, 'rot-closing.jsonl');
      const dataFds = [];
      const lateCallbacks = [];
      const { fs: spy, calls } = spyFs({
        openSync: opensOf(file, dataFds),
        close: (fd, cb) => { fs.closeSync(fd); lateCallbacks.push(cb); }, // closed at once, answered late
      });
      const { opts, errors } = options(file, { fs: spy, fsync: 'interval', fsyncIntervalMs: 60_000, maxFileBytes: LEN * 2 });
      const sink = open(opts);
      for (let i = 0; i < 3; i++) sink.write(record(i)); // one rotation: the first file goes to the queue
      for (let i = 0; i < 200 && calls.close === 0; i++) await sleep(5);
      assert.equal(calls.close, 1, 'the queue synced and closed the rotated file');
      const syncsBefore = calls.fdatasyncSync;
      sink.flush();
      assert.equal(calls.fdatasyncSync, syncsBefore + 1, 'only the current file: the rotated one is synced and closed');
      assert.deepEqual(errors, [], 'no EBADF from syncing a closed number');
      for (const cb of lateCallbacks.splice(0)) cb(null);
      sink.close();
      assert.deepEqual([`${file}.1`, file].flatMap(seqs), [0, 1, 2]);
      assert.equal(dataFds.length, 2);
    });

    it("'interval': a background sync's failure is reported even when flush() synced the file in place meanwhile", async () => {
      const file = path.join(dir, 'eio-overlap.jsonl');
      const answers = [];
      const { fs: spy, calls } = spyFs({ fdatasync: (fd, cb) => { answers.push(cb); } });
      const { opts, errors } = options(file, { fs: spy, fsync: 'interval', fsyncIntervalMs: 20 });
      const sink = open(opts);
      sink.write(record(0));
      for (let i = 0; i < 200 && calls.fdatasync === 0; i++) await sleep(5);
      sink.flush(); // in place, succeeds
      assert.deepEqual(errors, []);
      answers.shift()(eno('EIO')); // the kernel reports a writeback error to one of the two syncs only
      assert.match(errors.join('\n'), /fsync failed \(EIO\)/);
      sink.close();
    });

    it("'interval': a rotation while a sync is out hands the file to the queue (nothing synced on the write path); close() reports a failed in-place sync of it", async () => {
      const file = path.join(dir, 'rot-busy.jsonl');
      const answers = [];
      const dataFds = [];
      const { fs: spy, calls } = spyFs({
        openSync: opensOf(file, dataFds),
        fdatasync: (fd, cb) => { answers.push(cb); },
        fdatasyncSync: (fd) => { if (fd === dataFds[0]) throw eno('EIO'); return fs.fdatasyncSync(fd); },
      });
      const { opts, errors } = options(file, { fs: spy, fsync: 'interval', fsyncIntervalMs: 20, maxFileBytes: LEN * 2 });
      const sink = open(opts);
      sink.write(record(0));
      sink.write(record(1));
      for (let i = 0; i < 200 && calls.fdatasync === 0; i++) await sleep(5);
      sink.write(record(2)); // rotates while the first file's sync is out
      assert.equal(dataFds.length, 2);
      assert.equal(calls.fdatasyncSync, 0, 'the write path waits for no disk');
      sink.close();
      assert.match(errors.join('\n'), /fsync of a file closed or rotated away failed \(EIO\)/);
      for (let round = 0; round < 3; round++) {
        for (const cb of answers.splice(0)) cb(null);
        await sleep(20);
      }
      assert.deepEqual([`${file}.1`, file].flatMap(seqs), [0, 1, 2]);
    });

    it("'interval': a failed background sync is reported (once a minute), and writing goes on", async () => {
      const file = path.join(dir, 'eio-sync.jsonl');
      const { fs: spy, calls } = spyFs({ fdatasync: (fd, cb) => setImmediate(cb, eno('EIO')) });
      const { opts, errors } = options(file, { fs: spy, fsync: 'interval', fsyncIntervalMs: 20 });
      const sink = open(opts);
      sink.write(record(0));
      for (let i = 0; i < 200 && errors.length === 0; i++) await sleep(5);
      assert.match(errors.join('\n'), /fsync failed \(EIO\)/);
      sink.write(record(1));
      for (let i = 0; i < 200 && calls.fdatasync < 2; i++) await sleep(5);
      await sleep(20);
      assert.equal(errors.length, 1, 'once a minute');
      sink.close();
      assert.deepEqual(seqs(file), [0, 1]);
    });

    it("'interval': a file rotated away is fdatasynced by the timer, not on the write path, then closed", async () => {
      const file = path.join(dir, 'rot-sync.jsonl');
      // Descriptor numbers are reused (the directory's, then a data file's): track data files only.
      const dataFds = [];
      const live = new Set();
      const synced = [];
      const closedFds = [];
      const { fs: spy, calls } = spyFs({
        openSync: (p, ...rest) => { const fd = fs.openSync(p, ...rest); if (p === file) { dataFds.push(fd); live.add(fd); } return fd; },
        fdatasync: (fd, cb) => { if (live.has(fd)) synced.push(fd); return fs.fdatasync(fd, cb); },
        close: (fd, cb) => { if (live.delete(fd)) closedFds.push(fd); return fs.close(fd, cb); },
        closeSync: (fd) => { if (live.delete(fd)) closedFds.push(fd); return fs.closeSync(fd); },
      });
      const sink = open(options(file, { fs: spy, fsync: 'interval', fsyncIntervalMs: 50, maxFileBytes: LEN * 2 }).opts);
      for (let i = 0; i < 6; i++) sink.write(record(i)); // 2 per file: 2 rotations
      assert.equal(dataFds.length, 3, 'three files written');
      assert.equal(calls.fdatasyncSync, 0, 'the write path waits for no sync, rotations included (theirs run in the background)');
      assert.ok(!closedFds.includes(dataFds[0]) && !closedFds.includes(dataFds[1]), 'the rotated files stay open until synced');
      for (let i = 0; i < 200 && (calls.fdatasync < 3 || closedFds.length < 2); i++) await sleep(10);
      assert.deepEqual([...synced].sort(), [...dataFds].sort(), 'each file once: the two rotated away and the current one');
      assert.ok(closedFds.includes(dataFds[0]) && closedFds.includes(dataFds[1]), 'closed once synced');
      sink.close();
      assert.deepEqual([`${file}.2`, `${file}.1`, file].flatMap(seqs), range(0, 6));
    });

    it("'interval': close() syncs a file rotated away before the timer ran", () => {
      const file = path.join(dir, 'rot-close.jsonl');
      const { fs: spy, calls } = spyFs();
      const sink = open(options(file, { fs: spy, fsync: 'interval', fsyncIntervalMs: 60_000, maxFileBytes: LEN * 2 }).opts);
      for (let i = 0; i < 3; i++) sink.write(record(i)); // one rotation
      assert.equal(calls.fdatasyncSync, 0);
      sink.close();
      assert.equal(calls.fdatasyncSync, 2, 'the file rotated away and the current one');
    });

    it("'never' never syncs, not even on flush or close", () => {
      const { sink, calls } = run('never');
      sink.flush();
      sink.close();
      assert.equal(calls.fsyncSync + calls.fdatasyncSync, 0);
    });

    it('flush() syncs unless the policy is never', () => {
      const { sink, calls } = run('interval');
      sink.flush();
      assert.equal(calls.fdatasyncSync, 1);
    });

    it('an fsync failure is reported (once a minute), the line is not written twice', () => {
      const file = path.join(dir, 'audit.jsonl');
      const { fs: spy } = spyFs({ fsyncSync: () => { throw eno('EIO'); } });
      const { errors, opts } = options(file, { fs: spy, fsync: 'always' });
      const sink = open(opts);
      for (let i = 0; i < 5; i++) sink.write(record(i));
      assert.equal(errors.length, 2, errors.join('\n'));
      assert.match(errors[0], /fsync of its directory failed \(EIO\)/);
      assert.match(errors[1], /: fsync failed \(EIO\)/);
      assert.deepEqual(seqs(file), range(0, 5));
    });

    it('a new file and each rotation fsync the directory (the names survive a machine crash); never with never', () => {
      for (const fsync of ['interval', 'never']) {
        const file = path.join(dir, `rot-${fsync}.jsonl`);
        const dirFds = new Set();
        let dirSyncs = 0;
        const { fs: spy } = spyFs({
          openSync: (p, ...rest) => { const fd = fs.openSync(p, ...rest); if (p === dir) dirFds.add(fd); return fd; },
          fsyncSync: (fd) => { if (dirFds.has(fd)) dirSyncs++; return fs.fsyncSync(fd); },
          closeSync: (fd) => { dirFds.delete(fd); return fs.closeSync(fd); },
        });
        const sink = open(options(file, { fs: spy, fsync, maxFileBytes: LEN * 2 }).opts);
        for (let i = 0; i < 6; i++) sink.write(record(i)); // 2 per file: 2 rotations
        sink.close();
        assert.ok(fs.existsSync(`${file}.2`), 'rotated twice');
        assert.equal(dirSyncs, fsync === 'never' ? 0 : 3, fsync);
      }
    });
  });
});
