'use strict';
// Regenerates the generated parts of README.md from their single sources (the variable table in
// lib/config.ts). `npm run docs` writes; `--check` exits 1 when README.md is stale.
const fs = require('node:fs');
const path = require('node:path');

const README = path.join(__dirname, '..', 'README.md');

function escapeCell(s) {
  return String(s).replace(/\|/g, '\\|').replace(/\n/g, ' ');
}

function envTable() {
  const { variables } = require('../dist/lib/config.js');
  const rows = variables.map((v) => {
    const dflt = v.defaultText ?? (v.default === undefined ? 'unset' : v.default === '' ? 'empty' : `\`${v.default}\``);
    return `| \`${v.name}\` | ${escapeCell(dflt)} | ${escapeCell(v.meaning)} |`;
  });
  return ['| Variable | Default | Meaning |', '|---|---|---|', ...rows].join('\n');
}

const sections = { 'env-table': envTable };

function render(text) {
  let out = text;
  for (const [name, gen] of Object.entries(sections)) {
    const re = new RegExp(`(<!-- ${name}:start -->)[\\s\\S]*?(<!-- ${name}:end -->)`);
    if (!re.test(out)) throw new Error(`README.md lacks the <!-- ${name}:start/end --> markers`);
    out = out.replace(re, (_, a, b) => `${a}\n${gen()}\n${b}`);
  }
  return out;
}

if (require.main === module) {
  const current = fs.readFileSync(README, 'utf8');
  const next = render(current);
  if (process.argv.includes('--check')) {
    if (next !== current) {
      console.error('README.md is out of date: run `npm run docs`');
      process.exit(1);
    }
  } else if (next !== current) {
    fs.writeFileSync(README, next);
    console.log('README.md updated');
  }
}

module.exports = { render, envTable };
