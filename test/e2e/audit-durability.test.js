'use strict';
// Crash tests of the audit sink with real processes: what survives a SIGKILL is exactly what
// write() had returned for. test/fixtures/audit/sink-writer.js writes ~300-byte JSON lines with a
// sequence number through dist/lib/audit/sink.js.
const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const WRITER = path.join(__dirname, '..', 'fixtures', 'audit', 'sink-writer.js');
const COUNT = 10000;
const PAGE = 4096;
/** Kills per fsync mode in the random-kill test; raise it for a stress run. */
const ROUNDS = Number(process.env.SINK_CRASH_ROUNDS) || 3;

/** Runs the writer; resolves when it has ended, with how, and everything it printed. */
function runWriter(args, { onStdout, onStderr, stdin = 'ignore' } = {}) {
  const child = spawn(process.execPath, [WRITER, JSON.stringify(args)], { stdio: [stdin, 'pipe', 'pipe'] });
  const out = [];
  let stderr = '';
  child.stdout.on('data', (d) => { out.push(d); onStdout?.(d, child); });
  child.stderr.on('data', (d) => { stderr += d; onStderr?.(stderr, child); });
  const done = new Promise((resolve) => {
    child.on('close', (code, signal) => resolve({ code, signal, stdout: Buffer.concat(out).toString('utf8'), stderr }));
  });
  return { child, done };
}

/**
 * Parses an audit file strictly: every line whole JSON, in sequence from 0. Returns the sequence
 * numbers and the unterminated tail, if any (see the random-kill test for when one may exist).
 */
function readAudit(text) {
  const end = text.lastIndexOf('\n') + 1;
  const tail = text.slice(end);
  const body = text.slice(0, end);
  const seqs = body === '' ? [] : body.slice(0, -1).split('\n').map((l, i) => {
    let rec;
    try {
      rec = JSON.parse(l);
    } catch {
      assert.fail(`line ${i + 1} is not valid JSON: ${l.slice(0, 80)}…`);
    }
    return rec.seq;
  });
  return { seqs, tail, tailOffset: Buffer.byteLength(body) };
}

const expectSequence = (seqs, n) => {
  assert.equal(seqs.length, n, `${seqs.length} lines, expected ${n}`);
  for (let i = 0; i < n; i++) if (seqs[i] !== i) assert.fail(`line ${i + 1} has seq ${seqs[i]}, expected ${i}`);
};

describe('audit durability (real processes, SIGKILL)', function () {
  this.timeout(120000);
  let dir;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'auditrace-durability-'));
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  describe('SIGKILL right after the last write() returns', () => {
    for (const fsync of ['never', 'interval', 'always']) {
      it(`fsync '${fsync}': the file holds all ${COUNT} lines, whole, each sequence once`, async () => {
        const file = path.join(dir, 'audit.jsonl');
        const { signal, stderr } = await runWriter({ destination: file, fsync, count: COUNT, end: 'selfkill' }).done;
        assert.equal(signal, 'SIGKILL');
        assert.equal(stderr, '');
        const text = fs.readFileSync(file, 'utf8');
        assert.ok(text.endsWith('\n'), 'no partial line at the end');
        const { seqs, tail } = readAudit(text);
        assert.equal(tail, '');
        expectSequence(seqs, COUNT);
      });
    }

    it('with rotation (256 KB files): the union of all files is every sequence once, in order', async () => {
      const file = path.join(dir, 'audit.jsonl');
      const max = 256 * 1024;
      const { signal } = await runWriter({ destination: file, fsync: 'never', count: COUNT, maxFileBytes: max, end: 'selfkill' }).done;
      assert.equal(signal, 'SIGKILL');
      const rotated = fs.readdirSync(dir).filter((f) => f !== 'audit.jsonl').map((f) => Number(f.split('.').pop())).sort((a, b) => b - a);
      assert.ok(rotated.length >= 10, `${rotated.length} rotated files`);
      assert.deepEqual(rotated, rotated.map((_, i) => rotated.length - i), 'numbered 1..N');
      const all = [];
      for (const f of [...rotated.map((n) => `${file}.${n}`), file]) {
        const text = fs.readFileSync(f, 'utf8');
        assert.ok(text.endsWith('\n'), `${path.basename(f)} ends with a newline`);
        assert.ok(Buffer.byteLength(text) <= max);
        all.push(...readAudit(text).seqs);
      }
      expectSequence(all, COUNT);
    });
  });

  describe('SIGKILL from the parent at a random moment mid-stream', () => {
    /**
     * The file after a kill: whole JSON lines with seq 0..m-1. At most one unterminated fragment
     * at the end, and only the one the kernel can produce: a write(2) that crosses a page boundary
     * stops at that boundary when a fatal signal is pending (generic_perform_write checks between
     * pages), so the record whose write() had not returned may be cut there. Anything else would
     * be a bug of the sink. Then a second writer appends 100 records: it terminates the fragment
     * and every new record is whole.
     */
    async function checkAfterKill(file, fsync) {
      const text = fs.readFileSync(file, 'utf8');
      const { seqs, tail, tailOffset } = readAudit(text);
      expectSequence(seqs, seqs.length); // whole lines, 0..m-1, no gap, no duplicate
      if (tail !== '') {
        const end = tailOffset + Buffer.byteLength(tail);
        assert.equal(end % PAGE, 0, `the fragment (${Buffer.byteLength(tail)} bytes at ${tailOffset}) ends on a page boundary`);
        const head = `{"seq":${seqs.length},`;
        assert.ok(tail.startsWith(head) || head.startsWith(tail), `the fragment is the start of seq ${seqs.length}`);
        if (process.env.SINK_CRASH_VERBOSE) console.log(`      torn by the kernel at ${end}: ${Buffer.byteLength(tail)} bytes of seq ${seqs.length}`);
      }
      const again = await runWriter({ destination: file, fsync, count: 100, end: 'selfkill' }).done;
      assert.equal(again.signal, 'SIGKILL');
      const after = fs.readFileSync(file, 'utf8');
      assert.ok(after.endsWith('\n'));
      assert.equal(after.slice(0, text.length), text, 'what was there is untouched');
      const added = after.slice(text.length);
      if (tail !== '') assert.ok(added.startsWith('\n{'), 'the fragment is terminated first');
      expectSequence(readAudit(added.replace(/^\n/, '')).seqs, 100);
      return { seqs, tail };
    }

    for (const fsync of ['never', 'interval']) {
      for (let round = 1; round <= ROUNDS; round++) {
        it(`fsync '${fsync}', round ${round}: every sequence whose write() returned is in the file, whole and in order`, async () => {
          const file = path.join(dir, 'audit.jsonl');
          const killAfter = 500 + crypto.randomInt(30000); // acknowledged sequences before the kill
          let newlines = 0;
          let killed = false;
          const { done } = runWriter({ destination: file, fsync, count: 1e6, report: true, end: 'exit' }, {
            onStdout: (d, child) => {
              for (const b of d) if (b === 0x0a) newlines++;
              if (!killed && newlines >= killAfter) {
                killed = true;
                child.kill('SIGKILL');
              }
            },
          });
          const { signal, stdout, stderr } = await done;
          assert.equal(signal, 'SIGKILL', `killed mid-stream (after ${killAfter} acknowledged); stderr: ${stderr}`);
          assert.equal(stderr, '');
          const acked = stdout.split('\n').filter(Boolean).map(Number);
          expectSequence(acked, acked.length);
          assert.ok(acked.length >= killAfter);
          const { seqs } = await checkAfterKill(file, fsync);
          // Every acknowledged record is there; at most one more (written, killed before it was reported).
          assert.ok(seqs.length - acked.length === 0 || seqs.length - acked.length === 1,
            `file has ${seqs.length} whole lines, ${acked.length} were acknowledged`);
        });
      }
    }

    for (let round = 1; round <= ROUNDS; round++) {
      it(`writing flat out, killed after a random delay, round ${round}: whole lines in sequence, a fragment only where the kernel cuts`, async () => {
        const file = path.join(dir, 'audit.jsonl');
        const run = runWriter({ destination: file, fsync: 'never', count: 1e7, end: 'exit' });
        // Wait for the first line, then let it write for a random while.
        for (let i = 0; i < 500 && !(fs.existsSync(file) && fs.statSync(file).size > 0); i++) await new Promise((r) => setTimeout(r, 10));
        await new Promise((r) => setTimeout(r, 20 + crypto.randomInt(200)));
        run.child.kill('SIGKILL');
        const { signal, stderr } = await run.done;
        assert.equal(signal, 'SIGKILL', stderr);
        const { seqs } = await checkAfterKill(file, 'never');
        assert.ok(seqs.length > 0);
      });
    }
  });

  describe('stdout', () => {
    it(`a SIGKILL right after the last write(): the parent receives all ${COUNT} lines`, async () => {
      const { signal, stdout, stderr } = await runWriter({ destination: 'stdout', fsync: 'always', count: COUNT, end: 'selfkill' }).done;
      assert.equal(signal, 'SIGKILL');
      assert.equal(stderr, '');
      assert.ok(stdout.endsWith('\n'));
      expectSequence(readAudit(stdout).seqs, COUNT);
    });

    it('a non-blocking stdout (the app used process.stdout) and a reader that pauses: EAGAIN is waited out, nothing lost', async () => {
      const run = runWriter({ destination: 'stdout', fsync: 'never', count: COUNT, touchStdout: true, end: 'selfkill' });
      run.child.stdout.pause();
      setTimeout(() => run.child.stdout.resume(), 300);
      const { signal, stdout, stderr } = await run.done;
      assert.equal(signal, 'SIGKILL');
      assert.equal(stderr, '', 'a 300 ms stall is within the EAGAIN budget');
      expectSequence(readAudit(stdout).seqs, COUNT);
    });

    it('a reader stalled beyond the EAGAIN budget: lines are buffered, reported once, and delivered in order on close', async () => {
      let resumed = false;
      const run = runWriter({ destination: 'stdout', fsync: 'never', count: COUNT, touchStdout: true, end: 'close' }, {
        onStderr: (err, child) => {
          if (!resumed && /sink-error: .*\(EAGAIN\)/.test(err)) {
            resumed = true;
            child.stdout.resume();
          }
        },
      });
      run.child.stdout.pause();
      const { code, stdout, stderr } = await run.done;
      assert.equal(code, 0, stderr);
      const errors = stderr.split('\n').filter((l) => l.startsWith('sink-error: '));
      assert.equal(errors.length, 1, stderr);
      assert.match(errors[0], /^sink-error: audit destination stdout unwritable \(EAGAIN\): records are buffered in memory/);
      assert.match(stderr, /sink-recovered: audit destination stdout writable again/);
      const stats = JSON.parse(stderr.match(/^stats (.*)$/m)[1]);
      assert.ok(stats.writeFailures > 0);
      assert.equal(stats.dropped, 0);
      assert.equal(stats.written, COUNT);
      expectSequence(readAudit(stdout).seqs, COUNT);
    });

    it('EPIPE (the reader is gone): no crash, no unhandled error, one report, failures counted', async () => {
      const run = runWriter({ destination: 'stdout', fsync: 'always', count: 1000, touchStdout: true, waitStdin: true, end: 'exit' }, { stdin: 'pipe' });
      run.child.stdout.destroy();
      run.child.stdin.end('go\n');
      const { code, signal, stderr } = await run.done;
      assert.equal(signal, null);
      assert.equal(code, 0, stderr);
      const lines = stderr.split('\n').filter(Boolean);
      assert.equal(lines.length, 2, stderr);
      assert.match(lines[0], /^sink-error: audit destination stdout unwritable \(EPIPE\): records are buffered in memory \(1 so far, at most 10000\) and retried every 1 s$/);
      const stats = JSON.parse(lines[1].replace(/^stats /, ''));
      assert.deepEqual(stats, { written: 0, writeFailures: 1000, buffered: 1000, dropped: 0, rotations: 0, bytes: 0 });
    });
  });
});
