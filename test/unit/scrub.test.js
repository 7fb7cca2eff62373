'use strict';
// Free text in a record (error.message) never carries a credential it quotes (lib/audit/scrub.ts).
const assert = require('node:assert/strict');
const fc = require('fast-check');
const { scrubSecrets } = require('../../dist/lib/audit/scrub.js');
const { createRedactor } = require('../../dist/lib/audit/serialize.js');
const { buildRecord } = require('../../dist/lib/audit/record.js');

const isRedacted = createRedactor([]);
const scrub = (t) => scrubSecrets(t, isRedacted);

describe('secrets quoted in free text', () => {
  it('values of deny-listed keys, bearer tokens and JWTs become [REDACTED]; the rest stays', () => {
    assert.equal(scrub('db error: password=ECHOEDSECRET'), 'db error: password=[REDACTED]');
    assert.equal(scrub('{"user":"bob","token":"tok-123","code":7}'), '{"user":"bob","token":"[REDACTED]","code":7}');
    assert.equal(scrub("auth failed: api_key: 'k-999' for user bob"), "auth failed: api_key: '[REDACTED]' for user bob");
    assert.equal(scrub('upstream said Authorization: Bearer abcdefgh12345678 (expired)'), 'upstream said Authorization: [REDACTED] (expired)');
    assert.equal(scrub('rejected Bearer abcdefgh12345678 at gateway'), 'rejected Bearer [REDACTED] at gateway');
    assert.equal(scrub('jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjMifQ.c2lnbmF0dXJlMTIz expired'), 'jwt [REDACTED] expired');
    assert.equal(scrub('timeout after 30s: status=503 host=db-1'), 'timeout after 30s: status=503 host=db-1');
    assert.equal(scrub('sessionid=abc; path=/; dbPassword="p\\"w"'), 'sessionid=[REDACTED]; path=/; dbPassword="[REDACTED]"');
  });

  it('no value written after a deny-listed key survives, for any text around it', () => {
    const key = fc.constantFrom('password', 'token', 'api_key', 'Authorization', 'client_secret', 'set-cookie');
    const value = fc.stringMatching(/^[A-Za-z0-9]{6,20}$/).map((v) => `S3${v}`);
    const filler = fc.string({ maxLength: 20 }).map((s) => s.replace(/[=:"']/g, ' '));
    fc.assert(fc.property(filler, key, fc.constantFrom('=', ': ', ':'), value, filler, (a, k, sep, v, b) => {
      const out = scrub(`${a} ${k}${sep}${v} ${b}`);
      assert.ok(!out.includes(v), `${v} in ${out}`);
    }), { numRuns: 300 });
  });

  it('a record\'s error.message is scrubbed, whoever wrote it; other fields are as given', () => {
    const ambient = { time: '2026-11-24T00:00:00.000000Z', auditId: 'a', identity: { 'service.name': 's', 'service.instance.id': 'i' } };
    const { record } = buildRecord('backend_call_fail', { 'server.address': 'db', 'error.message': 'db error: password=ECHOEDSECRET' }, ambient, isRedacted);
    assert.equal(record['error.message'], 'db error: password=[REDACTED]');
    const own = buildRecord('invoice_failed', { 'error.message': 'token=abc12345', 'invoice.id': 'token=keep' }, ambient, isRedacted).record;
    assert.equal(own['error.message'], 'token=[REDACTED]');
    assert.equal(own['invoice.id'], 'token=keep');
  });
});

describe('secrets quoted in free text: cost', () => {
  it('a 10 MB message: the secret after 5 MB is found too, the rest is as it was', () => {
    const out = scrub(`${'x'.repeat(5_000_000)} password=${'y'.repeat(5_000_000)} end`);
    assert.equal(out, `${'x'.repeat(5_000_000)} password=[REDACTED] end`);
    assert.equal(scrub('ab1'.repeat(3_000_000)), 'ab1'.repeat(3_000_000));
  });

  it('with `keep`, text past what the result can hold is left unread, but no secret moves into it', () => {
    const long = `token=${'y'.repeat(10_000)} and password=p4ss ${'z'.repeat(100)}`;
    const out = scrubSecrets(long, isRedacted, 64);
    assert.ok(out.startsWith('token=[REDACTED] and password=[REDACTED] '), out.slice(0, 80));
    const far = `${'x'.repeat(100)} password=FAR`;
    assert.equal(scrubSecrets(far, isRedacted, 64), far, 'a key starting past the kept part is not read (never written)');
  });
});
