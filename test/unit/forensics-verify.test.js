'use strict';
// auditrace verify (lib/forensics/verify.ts): intact chains pass; each kind of tampering is found
// and located, from local files and from the archive form of the same records.
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawnSync } = require('node:child_process');
const { verify } = require('../../dist/lib/forensics/verify.js');
const { resolveInputs } = require('../../dist/lib/forensics/inputs.js');
const { canonicalize, recordHash } = require('../../dist/lib/audit/chain.js');
const { runApp, ROOT } = require('../helpers/run-app.js');
const gen = require('../fixtures/forensics/gen.js');

const KEY = Buffer.from('forensics-test-key-0123456789');
const BIN = path.join(ROOT, 'bin', 'auditrace.js');

let dir;
beforeEach(() => { dir = fs.mkdtempSync(path.join(os.tmpdir(), 'auditrace-verify-')); });
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

/** Runs verify over files and archive dirs; returns the report and what went to stderr. */
async function check({ files = [], archives = [], key, live, now, workers = 0 } = {}) {
  const problems = [];
  const report = await verify({
    inputs: resolveInputs(files, archives), key, keyEnv: 'AUDITRACE_AUDIT_HMAC_KEY', live: !!live, now, workers,
    events: { problem: (_i, m) => problems.push(m), progress() {} },
  });
  return { report, problems, errors: report.findings.filter((f) => f.severity === 'error') };
}

const kinds = (r) => r.errors.map((f) => f.kind).sort();
const write = (name, lines) => { const p = path.join(dir, name); gen.writeLines(p, lines); return p; };
const parse = (lines) => lines.map((l) => JSON.parse(l));
const sha = (r) => crypto.createHash('sha256').update(canonicalize(r)).digest('hex');

/** The same lines as an archive directory (OTLP/JSON in zstd frames). */
function archiveOf(name, lines, { batch = 7, perFrame = 2, seed = 3 } = {}) {
  const d = path.join(dir, name);
  fs.mkdirSync(d, { recursive: true });
  gen.writeZstd(path.join(d, 'audit.jsonl.zst'), gen.archiveLines(lines, { batch, seed }), perFrame);
  return d;
}

/** Two processes appending to one file: the second chain names the first. */
function twoChains(key, count = 40) {
  const a = gen.chainLines({ count, key, checkpointEvery: 10, service: 'orders' });
  const last = JSON.parse(a.lines.at(-1));
  // The second process starts after the first ended: its times (and so the report's order) follow.
  const b = gen.chainLines({ count, key, checkpointEvery: 10, service: 'orders', startMicros: a.nextMicros + 1000, previous: { chain: a.chain, seq: last['audit.seq'], hash: recordHash(last, key) } });
  return { a, b, lines: [...a.lines, ...b.lines] };
}

describe('forensics: verify', function () {
  this.timeout(60000);

  for (const keyed of [false, true]) {
    const key = keyed ? KEY : undefined;
    const label = keyed ? 'keyed (HMAC-SHA256)' : 'unkeyed (SHA-256)';

    describe(`${label} chains`, () => {
      // 'canonical': local lines as auditrace's sink writes them (RFC 8785 key order), which verify
      // hashes as they are once the next record confirms them; the fixture's lines are in
      // catalogue order, which verify canonicalises first.
      for (const form of ['local', 'canonical', 'archive']) {
        const asCanonical = (l) => { try { return canonicalize(JSON.parse(l)); } catch { return l; } };
        const inputs = (name, lines) => (form === 'archive'
          ? { archives: [archiveOf(name, lines)] }
          : { files: [write(`${name}.jsonl`, form === 'canonical' ? lines.map(asCanonical) : lines)] });
        const loc = (name, line) => (form !== 'archive' ? `${path.join(dir, `${name}.jsonl`)}:${line}` : undefined);
        const local = form !== 'archive';

        describe(`from ${{ local: 'local files', canonical: 'local files in canonical key order', archive: 'the archive' }[form]}`, () => {
          it('passes two untouched chains (the second names the first)', async () => {
            const { lines } = twoChains(key);
            const r = await check({ ...inputs('ok', lines), key });
            assert.deepEqual(r.errors, [], JSON.stringify(r.errors, null, 1));
            assert.equal(r.report.ok, true);
            assert.equal(r.report.chains.length, 2);
            assert.ok(r.report.chains.every((c) => c.status === 'closed' && c.intact && c.alg === (keyed ? 'hmac-sha256' : 'sha256')));
            assert.equal(r.report.chains[1].previous, r.report.chains[0].chain);
            assert.equal(r.report.stats.chainRecords, lines.length);
          });

          it('finds one byte changed in one record and names that record', async () => {
            const { lines } = twoChains(key);
            lines[12] = lines[12].replace('"event.outcome":"success"', '"event.outcome":"failure"');
            const r = await check({ ...inputs('mod', lines), key });
            assert.deepEqual(kinds(r), ['modified']);
            assert.match(r.errors[0].message, /modified record: seq 12 no longer hashes to audit\.prev of seq 13/);
            if (local) assert.equal(r.errors[0].where[0], loc('mod', 13));
            else assert.match(r.errors[0].where[0], /audit\.jsonl\.zst:2#5$/); // line 2 of the stream, 6th record of its batch
          });

          it('finds a deleted record', async () => {
            const { lines } = twoChains(key);
            lines.splice(20, 1);
            const r = await check({ ...inputs('del', lines), key });
            assert.deepEqual(kinds(r), ['deleted']);
            assert.match(r.errors[0].message, /deleted record\(s\): seq 20 missing \(1 record\)/);
            if (local) assert.deepEqual(r.errors[0].where, [loc('del', 20), loc('del', 21)]);
          });

          it('finds two swapped records', async () => {
            const { lines } = twoChains(key);
            [lines[15], lines[16]] = [lines[16], lines[15]]; // same archive batch (14..20)
            const r = await check({ ...inputs('swap', lines), key });
            assert.deepEqual(kinds(r), ['reordered']);
            assert.match(r.errors[0].message, /reordered: seq 16 appears before seq 15/);
            if (local) assert.deepEqual(r.errors[0].where, [loc('swap', 16), loc('swap', 17)]);
          });

          it('finds the tail cut off (no audit_chain_end)', async () => {
            const { lines } = gen.chainLines({ count: 40, key, checkpointEvery: 10 });
            const r = await check({ ...inputs('cut', lines.slice(0, -10)), key });
            assert.deepEqual(kinds(r), ['chain-end']);
            assert.match(r.errors[0].message, /ends at seq 35 without audit_chain_end: the process crashed or its tail was deleted/);
          });

          it('finds the tail of the previous chain deleted, named by the next chain\'s start', async () => {
            const { a, b } = twoChains(key);
            const r = await check({ ...inputs('tail', [...a.lines.slice(0, -3), ...b.lines]), key });
            assert.deepEqual(kinds(r), ['chain-end', 'tail']);
            const tail = r.errors.find((f) => f.kind === 'tail');
            assert.match(tail.message, new RegExp(`tail of chain ${a.chain} deleted: it ends at seq 42 in the inputs, .* seq 43\\.\\.45 deleted`));
          });

          it('finds the previous chain\'s last record modified', async () => {
            const { a, b } = twoChains(key);
            const rec = JSON.parse(a.lines.at(-1));
            rec.severity = 'WARN';
            const r = await check({ ...inputs('tailmod', [...a.lines.slice(0, -1), JSON.stringify(rec), ...b.lines]), key });
            assert.ok(kinds(r).includes('tail'), JSON.stringify(r.errors));
            assert.match(r.errors.find((f) => f.kind === 'tail').message, /tail of chain .* modified/);
          });

          it('tolerates identical duplicates (at-least-once delivery) and counts them', async () => {
            const { lines } = twoChains(key);
            const r = await check({ ...inputs('dup', [...lines, ...lines.slice(30, 37)]), key });
            assert.deepEqual(r.errors, []);
            assert.equal(r.report.stats.duplicates, 7);
            assert.ok(r.report.findings.some((f) => f.kind === 'duplicates'));
          });
        });
      }

      it('passes a chain whose archive batches arrived out of order', async () => {
        const { lines } = twoChains(key);
        const batches = gen.archiveLines(lines, { batch: 5 });
        batches.reverse();
        fs.mkdirSync(path.join(dir, 'shuffled'));
        gen.writeZstd(path.join(dir, 'shuffled', 'audit.jsonl.zst'), batches, 3);
        const r = await check({ archives: [path.join(dir, 'shuffled')], key });
        assert.deepEqual(r.errors, []);
      });
    });
  }

  describe('with a key', () => {
    it('finds a forged record inserted with a recomputed unkeyed hash (a second seq)', async () => {
      const { lines } = gen.chainLines({ count: 30, key: KEY, checkpointEvery: 10 });
      const recs = parse(lines);
      const forged = { ...recs[6], 'audit.id': gen.uuidv7(Date.now()), 'user.id': 'mallory', 'audit.prev': sha(recs[5]) };
      lines.splice(6, 0, JSON.stringify(forged));
      for (const archive of [false, true]) {
        const r = archive ? await check({ archives: [archiveOf('forged', lines)], key: KEY }) : await check({ files: [write('forged.jsonl', lines)], key: KEY });
        assert.deepEqual(kinds(r), ['inserted']);
        assert.match(r.errors[0].message, /inserted\/forged record: a second seq 6/);
        if (!archive) assert.deepEqual(r.errors[0].where, [`${path.join(dir, 'forged.jsonl')}:7`, `${path.join(dir, 'forged.jsonl')}:8`]);
      }
    });

    it('finds a forged record inserted with the rest of the chain renumbered and re-hashed without the key', async () => {
      const { lines } = gen.chainLines({ count: 30, key: KEY, checkpointEvery: 10 });
      const recs = parse(lines);
      recs.splice(6, 0, { ...recs[6], 'audit.id': gen.uuidv7(Date.now()), 'user.id': 'mallory' });
      for (let i = 6; i < recs.length; i++) {
        recs[i]['audit.seq'] = i;
        recs[i]['audit.prev'] = sha(recs[i - 1]);
        if (recs[i]['audit.checkpoint.records'] !== undefined) recs[i]['audit.checkpoint.records'] = i;
      }
      const r = await check({ files: [write('rehashed.jsonl', recs.map((x) => JSON.stringify(x)))], key: KEY });
      assert.ok(r.errors.length > 0);
      const chain = r.errors.find((f) => f.kind === 'modified');
      assert.match(chain.message, /the first record whose audit\.prev fails is seq 6/);
      assert.ok(r.errors.some((f) => f.kind === 'mac' && /audit_chain_end/.test(f.message)), 'the chain end\'s MAC cannot be forged');
      // Without the key the same file looks intact: the key is what makes this detectable.
      const unkeyedView = await check({ files: [path.join(dir, 'rehashed.jsonl')] });
      assert.deepEqual(kinds(unkeyedView), ['keyed-no-key']);
    });

    it('refuses to call a keyed chain intact without the key', async () => {
      const { lines } = gen.chainLines({ count: 5, key: KEY });
      const r = await check({ files: [write('k.jsonl', lines)] });
      assert.deepEqual(kinds(r), ['keyed-no-key']);
      assert.match(r.errors[0].message, /cannot verify keyed chain without --key-env/);
    });

    it('reports a wrong key once per chain, not once per record', async () => {
      const { lines } = gen.chainLines({ count: 30, key: KEY, checkpointEvery: 10 });
      const r = await check({ files: [write('k.jsonl', lines)], key: Buffer.from('another-key-0123456789') });
      assert.deepEqual(kinds(r), ['wrong-key']);
    });

    it('finds a forged checkpoint (MAC does not verify)', async () => {
      const { lines } = gen.chainLines({ count: 30, key: KEY, checkpointEvery: 10 });
      const recs = parse(lines);
      const i = recs.findIndex((x) => x['event.name'] === 'audit_checkpoint');
      recs[i]['audit.checkpoint.mac'] = crypto.createHmac('sha256', 'guess').update('x').digest('hex');
      // Re-chain from there with the real key, as if only the MAC had been swapped in transit.
      const chain = recs.map((x) => JSON.stringify(x));
      const r = await check({ files: [write('cp.jsonl', chain)], key: KEY });
      assert.ok(r.errors.some((f) => f.kind === 'mac' && /forged or modified audit_checkpoint/.test(f.message)), JSON.stringify(r.errors));
    });

    it('finds a forged chain start (its MAC does not verify), and accepts one without a MAC (written before starts were signed)', async () => {
      const { lines } = gen.chainLines({ count: 5, key: KEY });
      const recs = parse(lines);
      recs[0]['process.pid'] = 1;
      const forged = await check({ files: [write('start.jsonl', recs.map((x) => JSON.stringify(x)))], key: KEY });
      assert.ok(forged.errors.some((f) => f.kind === 'mac' && /forged or modified audit_chain_start: the MAC of seq 0/.test(f.message)), JSON.stringify(forged.errors));
      const old = gen.chainLines({ count: 5, key: KEY, startMac: false });
      assert.equal(JSON.parse(old.lines[0])['audit.checkpoint.mac'], undefined);
      assert.deepEqual((await check({ files: [write('old.jsonl', old.lines)], key: KEY })).errors, []);
    });

    it('flags an unkeyed chain when a key is given (a downgrade would otherwise pass)', async () => {
      const { lines } = gen.chainLines({ count: 5 });
      const r = await check({ files: [write('plain.jsonl', lines)], key: KEY });
      assert.deepEqual(kinds(r), ['unkeyed']);
    });
  });

  describe('live chains', () => {
    const open = () => gen.chainLines({ count: 20, checkpointEvery: 10, intervalMs: 1000, end: false, startMicros: Date.now() * 1000 - 100_000 });

    it('--live accepts the newest open chain whose last checkpoint is recent', async () => {
      const { lines } = open();
      const r = await check({ files: [write('live.jsonl', lines)], live: true });
      assert.deepEqual(r.errors, []);
      assert.equal(r.report.chains[0].status, 'live');
    });

    it('--live with a key trusts only a time whose MAC verifies: a chain start, not a forged one-record chain', async () => {
      const now = Date.now();
      const signed = gen.chainLines({ count: 0, key: KEY, end: false, startMicros: now * 1000 - 5_000_000 });
      const ok = await check({ files: [write('signed.jsonl', signed.lines)], key: KEY, live: true, now });
      assert.deepEqual(ok.errors, []);
      assert.match(ok.report.findings.find((f) => f.kind === 'live').message, /open \(live\): last chain start 5 s ago/);
      // A chain start without a MAC (as anyone can write one) is not authenticated: no liveness.
      const forged = gen.chainLines({ count: 0, key: KEY, end: false, startMac: false, startMicros: now * 1000 - 5_000_000 });
      const r = await check({ files: [write('forged.jsonl', forged.lines)], key: KEY, live: true, now });
      assert.deepEqual(kinds(r), ['chain-end']);
      assert.match(r.errors[0].message, /not live: no checkpoint or chain start whose MAC verifies with the key/);
    });

    it('--live with a key ignores a checkpoint whose MAC fails and judges by the last one that verifies', async () => {
      const now = Date.now();
      const { lines } = gen.chainLines({ count: 20, key: KEY, checkpointEvery: 10, intervalMs: 1000, end: false, startMicros: now * 1000 - 100_000_000 });
      const recs = parse(lines);
      const last = recs.findLastIndex((x) => x['event.name'] === 'audit_checkpoint');
      recs[last].time = new Date(now).toISOString(); // made to look alive; its MAC no longer verifies
      const r = await check({ files: [write('cp.jsonl', recs.map((x) => JSON.stringify(x)))], key: KEY, live: true, now });
      assert.ok(r.errors.some((f) => f.kind === 'chain-end' && /not live: its last checkpoint is 100 s old/.test(f.message)), JSON.stringify(r.errors));
    });

    it('--live: a last checkpoint more than 2 x its interval in the future is not live', async () => {
      const { lines } = gen.chainLines({ count: 20, checkpointEvery: 10, intervalMs: 1000, end: false, startMicros: Date.now() * 1000 + 3_600_000_000 });
      const r = await check({ files: [write('future.jsonl', lines)], live: true });
      assert.deepEqual(kinds(r), ['chain-end']);
      assert.match(r.errors[0].message, /not live: its last checkpoint is \d+ s in the future, more than 2 x 1000 ms ahead of now/);
    });

    it('without --live, or with a stale checkpoint, an open chain is an error', async () => {
      const { lines } = open();
      const file = write('live.jsonl', lines);
      assert.deepEqual(kinds(await check({ files: [file] })), ['chain-end']);
      const stale = await check({ files: [file], live: true, now: Date.now() + 60000 });
      assert.deepEqual(kinds(stale), ['chain-end']);
      assert.match(stale.errors[0].message, /more than 2 x 1000 ms/);
    });
  });

  describe('damaged input', () => {
    it('reports a corrupt line with file and line, verifies the rest, never throws', async () => {
      const { lines } = gen.chainLines({ count: 10 });
      lines.splice(4, 0, '{"time":"2026-11-22T05:48:36.514465Z","audit.id":');
      const file = write('corrupt.jsonl', lines);
      const r = await check({ files: [file] });
      assert.deepEqual(kinds(r), ['corrupt-line']);
      assert.deepEqual(r.problems, [`${file}:5: not JSON (skipped)`]);
    });

    it('skips a line longer than 8 MiB as damage, with file and line, and verifies the rest (one thread or workers)', async () => {
      const { lines } = gen.chainLines({ count: 10 });
      lines.splice(4, 0, JSON.stringify({ pad: 'x'.repeat(9 * 1024 * 1024) }));
      const file = write('long.jsonl', lines);
      for (const workers of [0, 2]) {
        const r = await check({ files: [file], workers });
        assert.deepEqual(kinds(r), ['corrupt-line']);
        assert.match(r.errors[0].message, /^line longer than 8388608 bytes \(9437194 bytes\) \(skipped\)$/);
        assert.deepEqual(r.errors[0].where, [`${file}:5`]);
        assert.equal(r.report.chains[0].records, 12);
      }
    });

    it('bounds memory by the records present, not by a seq: records claiming seqs far beyond them are reported, not allocated for', async () => {
      // 30 chains of one record each, every one at a seq that alone would be plausible.
      const lines = Array.from({ length: 30 }, (_, c) => {
        const rec = JSON.parse(gen.chainLines({ count: 1, end: false }).lines[1]);
        rec['audit.seq'] = 999_999;
        rec['audit.chain'] = `chain-${c}`;
        return JSON.stringify(rec);
      });
      const r = await check({ files: [write('bomb.jsonl', lines)] });
      // The arrays of all chains hold at most 8 x the records + 1M entries: one chain's worth here.
      assert.ok(r.report.chains.filter((c) => c.records > 0).length <= 1, JSON.stringify(r.report.chains));
      const inserted = r.errors.filter((f) => f.kind === 'inserted');
      assert.ok(inserted.length >= 29);
      assert.match(inserted[0].message, /record with implausible seq 999999: the chain has 1 record\(s\) in the inputs \(inserted or modified\)/);
    });

    it('reads an archive with export requests of the wrong shape, reports what it lost, verifies the rest', async () => {
      const { lines } = gen.chainLines({ count: 30 });
      const batches = gen.archiveLines(lines, { batch: 10 });
      // The middle request's lists are damaged (they once made verify throw and report nothing).
      const middle = JSON.parse(batches[1]);
      middle.resourceLogs[0].scopeLogs[0].logRecords[0].attributes = 'oops';
      middle.resourceLogs[0].scopeLogs[0].logRecords[1] = null;
      middle.resourceLogs.push({ scopeLogs: {} }, { scopeLogs: [{ logRecords: {} }] });
      const damaged = [batches[0], JSON.stringify(middle), ...batches.slice(2)];
      fs.mkdirSync(path.join(dir, 'shape'));
      gen.writeZstd(path.join(dir, 'shape', 'audit.jsonl.zst'), damaged, 1);
      for (const workers of [0, 2]) {
        const r = await check({ archives: [path.join(dir, 'shape')], workers });
        // Two records unreadable: reported where they stand, and missing from their chain.
        assert.deepEqual(kinds(r), ['deleted', 'no-chain', 'no-chain'], JSON.stringify(r.report.findings));
        assert.equal(r.report.stats.chainRecords, lines.length - 2);
      }
    });

    it('reports a torn last line as a notice (the crash shows as a missing chain end)', async () => {
      const { lines } = gen.chainLines({ count: 10, end: false });
      const file = path.join(dir, 'torn.jsonl');
      fs.writeFileSync(file, `${lines.join('\n')}\n${lines[3].slice(0, 50)}`);
      const r = await check({ files: [file] });
      assert.deepEqual(kinds(r), ['chain-end']);
      assert.match(r.problems[0], /torn\.jsonl:12: torn last line/);
    });

    it('reports a torn line that the next process ended (crash mid-write, then restart) as a notice; elsewhere a line that is not JSON stays an error', async () => {
      const a = gen.chainLines({ count: 10, end: false });
      const last = JSON.parse(a.lines.at(-1));
      const b = gen.chainLines({ count: 5, startMicros: a.nextMicros + 1000, previous: { chain: a.chain, seq: last['audit.seq'], hash: recordHash(last, undefined) } });
      const fragment = a.lines[3].slice(0, 100);
      const file = write('restart.jsonl', [...a.lines, fragment, ...b.lines]);
      const r = await check({ files: [file] });
      assert.deepEqual(kinds(r), ['chain-end']); // the crash: chain a has no end
      const torn = r.report.findings.find((f) => f.kind === 'torn-line');
      assert.equal(torn.severity, 'notice');
      assert.match(torn.message, /^torn line \(100 bytes without its end: a crash mid-write, ended by the next process, whose audit_chain_start follows\) \(skipped\)$/);
      assert.deepEqual(torn.where, [`${file}:${a.lines.length + 1}`]);
      // The same fragment before any other record is damage, not a restart.
      const elsewhere = await check({ files: [write('fragment.jsonl', [...a.lines.slice(0, 5), fragment, ...a.lines.slice(5)])] });
      assert.deepEqual(kinds(elsewhere), ['chain-end', 'corrupt-line']);
    });

    it('reports a corrupt zstd stream with file and offset and verifies the frames around it', async () => {
      const { lines } = gen.chainLines({ count: 40 });
      const batches = gen.archiveLines(lines, { batch: 10 });
      fs.mkdirSync(path.join(dir, 'z'));
      const f = path.join(dir, 'z', 'audit.jsonl.zst');
      const sizes = gen.writeZstd(f, batches, 1);
      const bytes = fs.readFileSync(f);
      // Garbage in the middle of the second frame's compressed data.
      const at = sizes[0] + 20;
      bytes.fill(0xff, at, at + 40);
      fs.writeFileSync(f, bytes);
      const r = await check({ archives: [path.join(dir, 'z')] });
      assert.ok(r.problems.some((p) => p.startsWith(`${f}: byte offset ${sizes[0]}:`)), r.problems.join('\n'));
      // The records of the lost frame show as deleted; nothing else is wrong.
      assert.deepEqual([...new Set(kinds(r))], ['corrupt-zstd', 'deleted']);
      assert.match(r.errors.find((e) => e.kind === 'deleted').message, /seq 10\.\.19 missing/);
    });

    it('reports bytes that are no zstd frame and resynchronises on the next frame', async () => {
      const { lines } = gen.chainLines({ count: 20 });
      fs.mkdirSync(path.join(dir, 'g'));
      const f = path.join(dir, 'g', 'audit.jsonl.zst');
      const sizes = gen.writeZstd(f, gen.archiveLines(lines, { batch: 11 }), 1);
      const bytes = fs.readFileSync(f);
      fs.writeFileSync(f, Buffer.concat([bytes.subarray(0, sizes[0]), Buffer.from('garbage!'), bytes.subarray(sizes[0])]));
      const r = await check({ archives: [path.join(dir, 'g')] });
      assert.deepEqual(r.problems, [`${f}: byte offset ${sizes[0]}: not a zstd frame (bad magic number); 8 byte(s) skipped up to the next frame at offset ${sizes[0] + 8}`]);
      assert.deepEqual(kinds(r), ['corrupt-zstd']);
    });
  });

  describe('archived records: the body the agent kept is the record of the attributes', () => {
    /** An archive of one chain in one export request, whose log records `edit` may change. */
    function archiveEdited(name, edit, { canonicalBody = false } = {}) {
      const { lines } = gen.chainLines({ count: 10 });
      const req = JSON.parse(gen.archiveLines(lines, { batch: lines.length })[0]);
      const logRecords = req.resourceLogs[0].scopeLogs[0].logRecords;
      // auditrace writes its lines in canonical form, so that is what the agent keeps as the body.
      if (canonicalBody) for (const lr of logRecords) lr.body.stringValue = canonicalize(JSON.parse(lr.body.stringValue));
      edit(logRecords);
      fs.mkdirSync(path.join(dir, name));
      gen.writeZstd(path.join(dir, name, 'audit.jsonl.zst'), [JSON.stringify(req)]);
      return path.join(dir, name);
    }
    const editBody = (lr, from, to) => { lr.body.stringValue = lr.body.stringValue.replace(from, to); };

    for (const canonicalBody of [true, false]) {
      it(`finds a record whose body was edited while its attributes were not (body ${canonicalBody ? 'in canonical form' : 'in another key order'}), and keeps it in the chain`, async () => {
        const d = archiveEdited(`body-${canonicalBody}`, (lrs) => editBody(lrs[4], '"event.outcome":"success"', '"event.outcome":"failure"'), { canonicalBody });
        const r = await check({ archives: [d] });
        assert.deepEqual(kinds(r), ['modified']);
        assert.match(r.errors[0].message, /the record's body differs from its attributes: modified record \(seq 4\)/);
        assert.match(r.errors[0].where[0], /audit\.jsonl\.zst:1#4$/);
        assert.equal(r.report.chains[0].records, r.report.chains[0].lastSeq + 1); // no gap
        assert.equal(r.report.chains[0].intact, false);
      });
    }

    it('passes bodies that are the same record written another way, and records without a body (older archives)', async () => {
      const d = archiveEdited('ok', (lrs) => {
        delete lrs[2].body;
        lrs[3].body = { kvlistValue: { values: [] } }; // not a line: nothing to compare
        lrs[5].body.stringValue = JSON.stringify(JSON.parse(lrs[5].body.stringValue), null, 1);
      });
      const r = await check({ archives: [d] });
      assert.deepEqual(r.errors, []);
    });

    it('finds an attribute repeated in one log record (the agent writes each key once)', async () => {
      const d = archiveEdited('dup', (lrs) => {
        const lr = lrs[6];
        const outcome = lr.attributes.find((kv) => kv.key === 'event.outcome');
        lr.attributes.unshift({ key: 'event.outcome', value: { stringValue: 'failure' } }, { ...outcome });
      }, { canonicalBody: true });
      const r = await check({ archives: [d] });
      assert.deepEqual(kinds(r), ['modified']);
      assert.match(r.errors[0].message, /attribute "event\.outcome" appears more than once in the log record.*\(seq 6\)/);
      assert.match(r.errors[0].where[0], /:1#6$/);
    });
  });

  it('does not call records of two files tailed at once "reordered" (a rotated file\'s tail after its successor\'s head)', async () => {
    const { lines } = gen.chainLines({ count: 20 });
    const rnd = gen.seeded(5);
    const rec = (l, file) => gen.logRecord(JSON.parse(l), file, rnd);
    const batch = [...lines.slice(12).map((l) => rec(l, '/logs/app.jsonl')), ...lines.slice(6, 12).map((l) => rec(l, '/logs/app.jsonl.1'))];
    const first = gen.archiveLines(lines.slice(0, 6));
    const mixed = JSON.stringify({ resourceLogs: [{ resource: {}, scopeLogs: [{ scope: {}, logRecords: batch }] }] });
    fs.mkdirSync(path.join(dir, 'rot'));
    gen.writeZstd(path.join(dir, 'rot', 'audit.jsonl.zst'), [...first, mixed]);
    const r = await check({ archives: [path.join(dir, 'rot')] });
    assert.deepEqual(r.errors, []);
  });

  it('ignores the OTLP copies of audit records (AUDITRACE_AUDIT_OTLP) in the archive', async () => {
    const { lines } = gen.chainLines({ count: 6 });
    const copy = JSON.stringify({ resourceLogs: [{ resource: {}, scopeLogs: [{ scope: { name: 'auditrace.audit' }, logRecords: [{ timeUnixNano: '1795328074801053000', attributes: [{ key: 'audit.id', value: { stringValue: 'x' } }, { key: 'audit.chain', value: { stringValue: JSON.parse(lines[0])['audit.chain'] } }, { key: 'audit.seq', value: { intValue: '1' } }] }] }] }] });
    fs.mkdirSync(path.join(dir, 'o'));
    gen.writeZstd(path.join(dir, 'o', 'audit.jsonl.zst'), [...gen.archiveLines(lines), copy]);
    const r = await check({ archives: [path.join(dir, 'o')] });
    assert.deepEqual(r.errors, []);
    assert.equal(r.report.stats.otlpCopies, 1);
  });

  it('gives the same findings for lines in canonical key order (hashed as they are) as in another order, across blocks', async () => {
    // > 4 MiB: several read blocks, so raw hashes whose confirming record is in the next block too.
    const { lines } = gen.chainLines({ count: 9000, checkpointEvery: 500 });
    const tampered = [...lines];
    for (const i of [5, 2999, 6001, 8990]) tampered[i] = tampered[i].replace('"event.outcome":"success"', '"event.outcome":"failure"');
    tampered.splice(4000, 1);
    [tampered[7000], tampered[7001]] = [tampered[7001], tampered[7000]];
    tampered.push(...tampered.slice(100, 110)); // at-least-once duplicates
    const canonical = tampered.map((l) => canonicalize(JSON.parse(l)));
    // Canonical content, not canonical bytes: the raw hash cannot confirm it, the canonical one does.
    canonical[3500] = canonical[3500].replace('":"', '": "');
    canonical[3501] = canonical[3501].replace(/"severity":"INFO"/, '"severity":"\\u0049NFO"');
    const findings = async (name, ls) => {
      const r = await check({ files: [write(name, ls)] });
      return r.report.findings.map((f) => `${f.severity} ${f.kind} ${f.message}`).sort();
    };
    const other = await findings('other.jsonl', tampered);
    const asIs = await findings('canonical.jsonl', canonical);
    assert.deepEqual(asIs, other.map((f) => f.replaceAll('other.jsonl', 'canonical.jsonl')));
    assert.deepEqual([...new Set(other.filter((f) => f.startsWith('error')).map((f) => f.split(' ')[1]))].sort(), ['deleted', 'modified', 'reordered']);
    assert.equal(other.filter((f) => f.startsWith('error modified')).length, 4, other.join('\n'));
    // Untouched, both forms pass.
    const clean = await check({ files: [write('clean.jsonl', lines.map((l) => canonicalize(JSON.parse(l))))] });
    assert.equal(clean.report.ok, true, JSON.stringify(clean.report.findings.slice(0, 3)));
  });

  it('gives the same findings with worker threads as in one thread', async () => {
    const { lines } = twoChains(KEY, 3000);
    lines.splice(2500, 1);
    lines[100] = lines[100].replace('"event.outcome":"success"', '"event.outcome":"failure"');
    const file = write('big.jsonl', lines);
    const one = await check({ files: [file], key: KEY, workers: 0 });
    const two = await check({ files: [file], key: KEY, workers: 2 });
    assert.deepEqual(two.report.findings, one.report.findings);
    assert.deepEqual(kinds(one), ['deleted', 'modified']);
    assert.equal(two.report.stats.workers, 2);
  });

  it('gives the same findings with worker threads over an archive of small zstd frames (one per export, as a collector writes)', async () => {
    const { lines } = twoChains(undefined, 1500);
    lines.splice(1200, 1);
    lines[700] = lines[700].replace('"event.outcome":"success"', '"event.outcome":"failure"');
    // Small frames are the case that once failed: a copy of a small block into Node's shared
    // buffer pool cannot be transferred to a worker (DataCloneError).
    const archive = archiveOf('small-frames', lines, { batch: 3, perFrame: 1 });
    // And an archive of one small frame: its only block is a view into the decoder's output, a
    // few KiB, which must reach a worker as a copy of its own.
    const tiny = gen.chainLines({ count: 4, service: 'tiny' }).lines;
    const small = archiveOf('one-frame', tiny, { batch: 4, perFrame: 1 });
    const one = await check({ archives: [archive, small], workers: 0 });
    const two = await check({ archives: [archive, small], workers: 2 });
    assert.deepEqual(two.report.findings, one.report.findings);
    assert.deepEqual(kinds(one), ['deleted', 'modified']);
    assert.equal(two.report.stats.workers, 2);
    assert.equal(two.report.stats.records, lines.length + tiny.length);
  });

  describe('audit files written by the real Auditor (child process)', () => {
    async function writeWith(env) {
      const file = path.join(dir, 'app.jsonl');
      const res = await runApp(path.join(ROOT, 'test/fixtures/forensics/writer.js'), {
        preload: 'none', env: { AUDITRACE_AUDIT_FILE: file, COUNT: '60', OTEL_SDK_DISABLED: 'true', ...env },
      });
      return { file, res };
    }

    it('passes untouched, and finds the last 10 records cut off a file whose process exited cleanly', async () => {
      const { file, res } = await writeWith({});
      assert.equal(res.code, 0, res.stderr);
      const lines = fs.readFileSync(file, 'utf8').trimEnd().split('\n');
      assert.equal(JSON.parse(lines.at(-1))['event.name'], 'audit_chain_end');
      assert.deepEqual((await check({ files: [file] })).errors, []);
      fs.writeFileSync(file, `${lines.slice(0, -10).join('\n')}\n`);
      const r = await check({ files: [file] });
      assert.deepEqual(kinds(r), ['chain-end']);
      assert.match(r.errors[0].message, /ends at seq 51 without audit_chain_end/);
    });

    it('passes a keyed chain with the key and finds a forged unkeyed insert', async function () {
      const { file, res } = await writeWith({ AUDITRACE_AUDIT_HMAC_KEY: KEY.toString() });
      if (/Cannot freeze array buffer views/.test(res.stderr)) {
        // lib/config.ts deep-freezes the key Buffer, which throws: no record is written with a key.
        this.skip();
      }
      const lines = fs.readFileSync(file, 'utf8').trimEnd().split('\n');
      // The chain start is signed like checkpoints and the chain end: --live trusts its time.
      assert.match(JSON.parse(lines[0])['audit.checkpoint.mac'], /^[0-9a-f]{64}$/);
      assert.deepEqual((await check({ files: [file], key: KEY })).errors, []);
      const recs = parse(lines);
      lines.splice(9, 0, JSON.stringify({ ...recs[9], 'audit.id': gen.uuidv7(Date.now()), 'audit.prev': sha(recs[8]) }));
      gen.writeLines(file, lines);
      assert.deepEqual(kinds(await check({ files: [file], key: KEY })), ['inserted']);
    });
  });

  describe('the command', () => {
    const cli = (args, env = {}) => spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', env: { PATH: process.env.PATH, ...env } });

    it('exits 0 when intact, 1 when not, 2 on a usage error; never prints the key', () => {
      const { lines } = gen.chainLines({ count: 8, key: KEY });
      const file = write('c.jsonl', lines);
      const ok = cli(['verify', '--file', file, '--key-env', 'MY_KEY'], { MY_KEY: KEY.toString() });
      assert.equal(ok.status, 0, ok.stdout + ok.stderr);
      assert.match(ok.stdout, /RESULT: intact/);
      assert.match(ok.stdout, /MB\/s/);
      const bad = cli(['verify', '--file', file]);
      assert.equal(bad.status, 1);
      assert.match(bad.stdout, /cannot verify keyed chain without --key-env/);
      const json = cli(['verify', '--file', file, '--json', '--key-env', 'MY_KEY'], { MY_KEY: 'wrong-key-but-long-enough' });
      assert.equal(json.status, 1);
      const report = JSON.parse(json.stdout);
      assert.equal(report.ok, false);
      assert.equal(report.findings[0].kind, 'wrong-key');
      for (const r of [ok, bad, json]) assert.ok(!(r.stdout + r.stderr).includes(KEY.toString()));
      assert.equal(cli(['verify']).status, 2);
      assert.equal(cli(['verify', '--file', path.join(dir, 'nope.jsonl')]).status, 2);
      assert.equal(cli(['verify', '--file', file, '--key-env', 'UNSET_VAR']).status, 2);
      const short = cli(['verify', '--file', file, '--key-env', 'K'], { K: 'tiny-k3y' });
      assert.equal(short.status, 2);
      assert.ok(!short.stderr.includes('tiny-k3y'));
      assert.equal(cli(['frobnicate']).status, 2);
      assert.equal(cli(['--help']).status, 0);
    });

    it('verifies a small file of seqs climbing by millions in bounded memory (it once reserved ≈ 10 GB)', () => {
      const { lines } = gen.chainLines({ count: 40 });
      const recs = parse(lines).map((x, i) => ({ ...x, 'audit.seq': i * 9_999_999 }));
      const file = write('climb.jsonl', recs.map((x) => JSON.stringify(x)));
      const res = spawnSync('bash', ['-c', `ulimit -v 16000000; exec "${process.execPath}" "${BIN}" verify --file "${file}"`], { encoding: 'utf8', env: { PATH: process.env.PATH } });
      assert.equal(res.status, 1, res.stdout + res.stderr);
      assert.match(res.stdout, /record with implausible seq 9999999: the chain has 42 record\(s\) in the inputs/);
    });

    it('prints no stack trace on a corrupt input', () => {
      const file = write('junk.jsonl', ['not json', '{"a":1}', '[1,2]']);
      const r = cli(['verify', '--file', file]);
      assert.equal(r.status, 1);
      assert.match(r.stderr, /junk\.jsonl:1: not JSON \(skipped\)/);
      assert.ok(!/\n\s+at /.test(r.stderr), r.stderr);
    });
  });
});
