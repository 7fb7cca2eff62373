'use strict';
const assert = require('node:assert/strict');
const { execFile } = require('node:child_process');
const path = require('node:path');
const { cleanEnv, ROOT } = require('../helpers/run-app.js');

describe('npm run demo', () => {
  it('shows one trace through both services and both ending by SIGTERM', async () => {
    const out = await new Promise((resolve, reject) => {
      execFile(process.execPath, [path.join(ROOT, 'scripts', 'demo.js')], { env: cleanEnv(), timeout: 60000 },
        (err, stdout, stderr) => (err ? reject(new Error(`${err.message}\n${stdout}\n${stderr}`)) : resolve(stdout)));
    });
    assert.match(out, /GET \/profile\/u42 -> 200/);
    const tree = out.split('as the backend received it:\n')[1].split('\n\n')[0].split('\n');
    assert.equal(tree.length, 3, out);
    assert.match(tree[0], /^ {2}SERVER GET .*\[edge /);
    assert.match(tree[1], /^ {4}CLIENT GET .*\[edge /);
    assert.match(tree[2], /^ {6}SERVER GET .*\[users users-5c9d-7kq2p /);
    assert.match(out, /edge: ended by SIGTERM/);
    assert.match(out, /users: ended by SIGTERM/);
  });
});
