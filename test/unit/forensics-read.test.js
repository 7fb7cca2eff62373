'use strict';
// Reading the inputs of auditrace trail/verify: concatenated zstd frames, damage, rotated files,
// and OTLP/JSON attributes back to the record auditrace wrote (same canonical form).
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const zlib = require('node:zlib');
const fc = require('fast-check');
const { zstdFile } = require('../../dist/lib/forensics/zstd.js');
const { readBlocks, inInput } = require('../../dist/lib/forensics/read.js');
const { resolveInputs, UsageError } = require('../../dist/lib/forensics/inputs.js');
const { recordsOfLogsRequest, anyValue, timeFromNanos } = require('../../dist/lib/forensics/otlp.js');
const { canonicalize } = require('../../dist/lib/audit/chain.js');
const { Progress } = require('../../dist/lib/forensics/progress.js');
const gen = require('../fixtures/forensics/gen.js');

let dir;
beforeEach(() => { dir = fs.mkdtempSync(path.join(os.tmpdir(), 'auditrace-read-')); });
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

async function decompress(file) {
  const problems = [];
  const parts = [];
  for await (const b of zstdFile(file, { corrupt: (o, m) => problems.push([o, m]), progress() {} })) parts.push(b);
  return { text: Buffer.concat(parts).toString(), problems };
}

async function blocksOf(file, kind = 'local', maxLine = undefined) {
  const problems = [];
  const input = { path: file, display: path.basename(file), kind, signal: 'logs', size: fs.statSync(file).size };
  const out = [];
  for await (const b of readBlocks(input, 0, { problem: (_i, m) => problems.push(m), progress() {} }, 1024, maxLine)) out.push(b);
  return { blocks: out, problems };
}

/** Bytes copied by Buffer.concat while `fn` runs. */
async function concatBytes(fn) {
  const concat = Buffer.concat;
  let copied = 0;
  Buffer.concat = (list, n) => { const b = concat(list, n); copied += b.length; return b; };
  try {
    await fn();
  } finally {
    Buffer.concat = concat;
  }
  return copied;
}

const lines = (n, width = 60) => Array.from({ length: n }, (_, i) => JSON.stringify({ i, pad: 'x'.repeat(width) }));

describe('forensics: reading inputs', function () {
  this.timeout(60000);

  describe('zstd archives (concatenated frames)', () => {
    it('decodes every frame, where Node\'s own decoder stops after the first', async () => {
      const f = path.join(dir, 'a.zst');
      const ls = lines(50);
      gen.writeZstd(f, ls, 3);
      assert.equal(zlib.zstdDecompressSync(fs.readFileSync(f)).toString(), `${ls.slice(0, 3).join('\n')}\n`);
      const { text, problems } = await decompress(f);
      assert.deepEqual(problems, []);
      assert.equal(text, `${ls.join('\n')}\n`);
    });

    it('decodes small (sync), medium (thread pool) and large (streamed) frames alike', async () => {
      const f = path.join(dir, 'b.zst');
      const noise = (n) => crypto.randomBytes(n).toString('base64');
      const small = `${JSON.stringify({ s: noise(100) })}\n`;
      const medium = `${JSON.stringify({ m: noise(300_000) })}\n`;
      const large = `${Array.from({ length: 60 }, () => JSON.stringify({ l: noise(100_000) })).join('\n')}\n`; // > 4 MiB compressed
      const frames = [small, medium, large, small].map((s) => zlib.zstdCompressSync(Buffer.from(s)));
      assert.ok(frames[2].length > 4 * 1024 * 1024);
      fs.writeFileSync(f, Buffer.concat(frames));
      const { text, problems } = await decompress(f);
      assert.deepEqual(problems, []);
      assert.equal(text, small + medium + large + small);
    });

    it('skips skippable frames', async () => {
      const f = path.join(dir, 'c.zst');
      const skippable = Buffer.alloc(8 + 5);
      skippable.writeUInt32LE(0x184d2a53, 0);
      skippable.writeUInt32LE(5, 4);
      fs.writeFileSync(f, Buffer.concat([zlib.zstdCompressSync(Buffer.from('a\n')), skippable, zlib.zstdCompressSync(Buffer.from('b\n'))]));
      assert.deepEqual(await decompress(f), { text: 'a\nb\n', problems: [] });
    });

    it('reports a corrupt frame with its offset and goes on with the next', async () => {
      const f = path.join(dir, 'd.zst');
      const ls = lines(30, 400);
      const sizes = gen.writeZstd(f, ls, 10);
      const bytes = fs.readFileSync(f);
      bytes.fill(0x00, sizes[0] + 12, sizes[0] + 60);
      fs.writeFileSync(f, bytes);
      const { text, problems } = await decompress(f);
      assert.equal(problems.length, 1);
      assert.equal(problems[0][0], sizes[0]);
      assert.match(problems[0][1], /corrupt zstd/);
      assert.equal(text, `${[...ls.slice(0, 10), ...ls.slice(20)].join('\n')}\n`);
    });

    it('keeps what a truncated last frame still decodes and says the file ends inside it', async () => {
      const f = path.join(dir, 'e.zst');
      const ls = lines(4000, 100);
      const sizes = gen.writeZstd(f, ls, 2000);
      fs.truncateSync(f, sizes[0] + Math.floor(sizes[1] / 2));
      const { text, problems } = await decompress(f);
      assert.equal(problems.length, 1);
      assert.equal(problems[0][0], sizes[0]);
      assert.match(problems[0][1], /truncated zstd frame/);
      assert.ok(text.startsWith(`${ls.slice(0, 2000).join('\n')}\n`));
    });

    it('reports trailing bytes that are not a frame', async () => {
      const f = path.join(dir, 'g.zst');
      fs.writeFileSync(f, Buffer.concat([zlib.zstdCompressSync(Buffer.from('a\n')), Buffer.from('xy')]));
      const { text, problems } = await decompress(f);
      assert.equal(text, 'a\n');
      assert.equal(problems.length, 1);
      assert.match(problems[0][1], /2 trailing byte\(s\)/);
    });
  });

  describe('blocks of whole lines', () => {
    it('cuts at newlines only, numbers nothing twice, and hands a torn last line back flagged', async () => {
      const f = path.join(dir, 'l.jsonl');
      const ls = lines(100);
      fs.writeFileSync(f, `${ls.join('\n')}\n{"torn":`);
      const { blocks } = await blocksOf(f);
      assert.ok(blocks.length >= 2);
      const whole = blocks.filter((b) => !b.torn);
      for (const b of whole) assert.equal(b.buf[b.buf.length - 1], 10);
      assert.equal(Buffer.concat(whole.map((b) => b.buf)).toString(), `${ls.join('\n')}\n`);
      assert.deepEqual(blocks.filter((b) => b.torn).map((b) => b.buf.toString()), ['{"torn":']);
    });

    it('gathers a line of many blocks whole, copying it once, not once per chunk read', async () => {
      const f = path.join(dir, 'long.jsonl');
      const ls = lines(30);
      const long = JSON.stringify({ pad: 'y'.repeat(16 * 1024 * 1024) }); // 16 chunks of the file stream
      fs.writeFileSync(f, `${ls.join('\n')}\n${long}\n${ls.join('\n')}\n`);
      let blocks;
      const copied = await concatBytes(async () => { ({ blocks } = await blocksOf(f, 'local', 64 * 1024 * 1024)); });
      assert.ok(blocks.some((b) => b.buf.toString().split('\n').includes(long)));
      assert.equal(Buffer.concat(blocks.map((b) => b.buf)).toString(), fs.readFileSync(f, 'utf8'));
      // Re-joining everything gathered so far at each chunk copied ≈ 8.5 x the line.
      assert.ok(copied < 2 * fs.statSync(f).size, `${copied} bytes copied`);
    });

    it('skips a line longer than the limit as it streams by, in its place an empty line flagged with its length', async () => {
      const f = path.join(dir, 'over.jsonl');
      const ls = lines(30);
      const long = 'z'.repeat(3 * 1024 * 1024);
      fs.writeFileSync(f, `${ls.join('\n')}\n${long}\n${ls.join('\n')}\n${long}`);
      const { blocks } = await blocksOf(f, 'local', 100_000);
      const longs = blocks.filter((b) => b.long);
      assert.deepEqual(longs.map((b) => [b.buf.toString(), b.long]), [['\n', { bytes: long.length, limit: 100_000 }], ['\n', { bytes: long.length, limit: 100_000 }]]);
      // Line numbers stay right: the skipped line is an empty one in the stream of blocks.
      assert.equal(Buffer.concat(blocks.map((b) => b.buf)).toString(), `${ls.join('\n')}\n\n${ls.join('\n')}\n\n`);
      assert.ok(blocks.every((b) => b.buf.length <= 100_000 + 1024));
    });

    it('names the input in an error that ends the run (the command prints no stack)', () => {
      const input = { display: 'logs/app.jsonl' };
      assert.equal(inInput(new RangeError('Array buffer allocation failed'), input).message, 'logs/app.jsonl: Array buffer allocation failed');
      assert.equal(inInput(new Error('logs/app.jsonl: x'), input).message, 'logs/app.jsonl: x');
    });

    it('reads a plain (uncompressed) archive file as lines', async () => {
      const f = path.join(dir, 'audit.jsonl');
      fs.writeFileSync(f, 'a\nb\n');
      const { blocks } = await blocksOf(f, 'archive');
      assert.equal(Buffer.concat(blocks.map((b) => b.buf)).toString(), 'a\nb\n');
    });
  });

  describe('inputs', () => {
    it('takes a file with its rotated siblings, oldest first', () => {
      for (const n of ['app.jsonl', 'app.jsonl.1', 'app.jsonl.2', 'app.jsonl.10', 'other.jsonl']) fs.writeFileSync(path.join(dir, n), '');
      const got = resolveInputs([path.join(dir, 'app.jsonl')], []).map((i) => path.basename(i.path));
      assert.deepEqual(got, ['app.jsonl.10', 'app.jsonl.2', 'app.jsonl.1', 'app.jsonl']);
      const all = resolveInputs([dir], []).map((i) => path.basename(i.path));
      assert.deepEqual(all, ['app.jsonl.10', 'app.jsonl.2', 'app.jsonl.1', 'app.jsonl', 'other.jsonl']);
    });

    it('takes the archive\'s audit and traces files, rotated backups before the live file', () => {
      for (const n of ['audit.jsonl.zst', 'audit.jsonl-2026-11-01T00-00-00.000.zst', 'traces.jsonl.zst', 'README']) fs.writeFileSync(path.join(dir, n), '');
      const got = resolveInputs([], [dir]).map((i) => [path.basename(i.path), i.signal]);
      assert.deepEqual(got, [['audit.jsonl-2026-11-01T00-00-00.000.zst', 'logs'], ['audit.jsonl.zst', 'logs'], ['traces.jsonl.zst', 'traces']]);
    });

    it('refuses what does not exist', () => {
      assert.throws(() => resolveInputs([path.join(dir, 'none.jsonl')], []), UsageError);
      assert.throws(() => resolveInputs([], [path.join(dir, 'none')]), UsageError);
    });
  });

  describe('progress', () => {
    const stream = (isTTY) => {
      const s = { isTTY, out: '', write(x) { s.out += x; return true; } };
      return s;
    };

    it('draws on a terminal for inputs over 50 MB, and clears itself', () => {
      const s = stream(true);
      const p = new Progress(60 * 1024 * 1024, s);
      p.phase('reading');
      p.advance(30 * 1024 * 1024);
      assert.match(s.out, /\r\[#*\.*\] +\d+% /);
      p.clear();
      assert.ok(s.out.endsWith('\r\x1b[K'));
    });

    it('never draws on a pipe, nor for small inputs', () => {
      for (const [tty, total] of [[false, 1e9], [true, 10 * 1024 * 1024]]) {
        const s = stream(tty);
        const p = new Progress(total, s);
        p.phase('reading');
        p.advance(total);
        p.clear();
        assert.equal(s.out, '');
      }
    });
  });

  describe('OTLP attributes back to the record', () => {
    it('converts every AnyValue kind', () => {
      assert.equal(anyValue({ stringValue: 's' }), 's');
      assert.equal(anyValue({ boolValue: false }), false);
      assert.equal(anyValue({ intValue: '200' }), 200);
      assert.equal(anyValue({ intValue: 7 }), 7);
      assert.equal(anyValue({ doubleValue: 200 }), 200);
      assert.deepEqual(anyValue({ arrayValue: { values: [{ stringValue: 'a' }, { intValue: '1' }] } }), ['a', 1]);
      assert.deepEqual(anyValue({ arrayValue: {} }), []);
      assert.deepEqual({ ...anyValue({ kvlistValue: { values: [{ key: 'k', value: { doubleValue: 1.5 } }] } }) }, { k: 1.5 });
      assert.deepEqual({ ...anyValue({ kvlistValue: {} }) }, {});
      assert.equal(anyValue({}), null);
    });

    it('gives a record with the canonical form of the original line, whatever the attribute order and number encoding', () => {
      const key = fc.stringMatching(/^[a-z_][a-z0-9_.]{0,12}$/);
      const scalar = fc.oneof(fc.string(), fc.boolean(), fc.integer({ min: -1e9, max: 1e9 }), fc.double({ noNaN: true, noDefaultInfinity: true }));
      const value = fc.letrec((tie) => ({
        v: fc.oneof({ depthSize: 'small' }, scalar, fc.array(fc.string(), { maxLength: 4 }), fc.dictionary(key, tie('v'), { maxKeys: 4 })),
      })).v;
      fc.assert(fc.property(fc.dictionary(key, value, { minKeys: 1, maxKeys: 12 }), fc.integer({ min: 1, max: 1000 }), (fields, seed) => {
        const record = { time: '2026-11-22T05:48:36.514465Z', 'audit.id': 'x', ...fields };
        const line = JSON.stringify(record);
        const [req] = gen.archiveLines([line], { seed });
        const [back] = recordsOfLogsRequest(JSON.parse(req));
        assert.equal(back.tailed, true);
        assert.equal(canonicalize(back.record), canonicalize(JSON.parse(line)));
      }), { numRuns: 300 });
    });

    it('keeps a __proto__ key as a key', () => {
      const req = { resourceLogs: [{ scopeLogs: [{ logRecords: [{ attributes: [{ key: '__proto__', value: { stringValue: 'p' } }, { key: 'log.file.name', value: { stringValue: 'f' } }] }] }] }] };
      const [r] = recordsOfLogsRequest(req);
      assert.equal(canonicalize(r.record), canonicalize(JSON.parse('{"__proto__":"p"}')));
    });

    it('formats timeUnixNano the way auditrace writes time', () => {
      assert.equal(timeFromNanos('1795328074801053000'), '2026-11-22T06:14:34.801053Z');
    });
  });
});
