'use strict';
const assert = require('node:assert/strict');
const { execFile } = require('node:child_process');
const path = require('node:path');
const { cleanEnv, ROOT } = require('../helpers/run-app.js');

describe('npm run demo', function () {
  let out;
  before(async function () {
    this.timeout(180000);
    out = await new Promise((resolve, reject) => {
      execFile(process.execPath, [path.join(ROOT, 'scripts', 'demo.js')], { env: cleanEnv(), timeout: 170000, maxBuffer: 16 << 20 },
        (err, stdout, stderr) => (err ? reject(new Error(`${err.message}\n${stdout}\n${stderr}`)) : resolve(stdout)));
    });
  });

  it('tells the story: login, personal data, consent, a forged request, a scanner, a replayed token', () => {
    assert.match(out, /POST \/login -> 200/);
    assert.match(out, /GET \/profile -> 200/);
    assert.match(out, /PUT \/profile -> 200/);
    assert.match(out, /POST \/consent -> 200/);
    assert.match(out, /the edge gave it request id [0-9a-f]{32}, not "totally-legit-0001"/);
    assert.match(out, /revoked token -> 401/);
  });

  it('rebuilds the forged request across edge → orders → users from the local files', () => {
    const trail = out.split('(from the local audit files)\n')[1].split('\n▶')[0];
    assert.match(trail, /path: edge -> orders -> users/);
    assert.match(trail, /client 127\.0\.0\.2 \(original external address\)/);
    assert.match(trail, /sensitive_read/);
    assert.match(trail, /request\.id\.untrusted=totally-legit-0001/);
    assert.match(trail, /^edge {2}instance [\s\S]*^\S+ orders {2}instance [\s\S]*^\S+ +\S+ users {2}instance /m, 'users nested under orders under edge');
  });

  it('finds every hash chain intact', () => {
    assert.match(out, /RESULT: intact/);
    assert.doesNotMatch(out, /NOT INTACT/);
  });

  it('with the collector built, also rebuilds it from the central archive, spans included', function () {
    if (!out.includes('(from the central archive)')) {
      if (process.env.CI) assert.fail('the collector is not built in CI');
      this.skip();
    }
    const trail = out.split('(from the central archive)\n')[1].split('\n▶')[0];
    assert.match(trail, /path: edge -> orders -> users/);
    assert.match(trail, /SERVER {2}GET {2}\/orders/);
    assert.match(trail, /audit\.jsonl\.zst/);
  });
});
