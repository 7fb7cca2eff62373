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

function eventTable() {
  const { catalogue, functionName, commonFields } = require('../dist/lib/audit/catalogue.js');
  const rows = Object.entries(catalogue).map(([name, e]) => {
    const fields = Object.entries(e.fields)
      .map(([k, f]) => (f.required ? `**\`${k}\`**` : `\`${k}\``) + (f.type === 'string' ? '' : ` (${f.type})`))
      .join(', ');
    const src = e.source === 'owasp' ? 'OWASP' : 'auditrace';
    // Events auditrace writes itself have no function: the application cannot forge them.
    const fn = e.internal ? 'none (written by auditrace)' : `\`audit.${functionName(name)}()\``;
    return `| \`${name}\` | ${fn} | ${e.outcome} | ${e.severity} | ${fields} | ${escapeCell(e.description)} (${src}) |`;
  });
  const common = Object.keys(commonFields).map((k) => `\`${k}\``).join(', ');
  return ['| Event | Function | Outcome | Severity | Fields (**required**) | Meaning |', '|---|---|---|---|---|---|', ...rows,
    '', `Every function also takes ${common}. \`audit.event(name, fields)\` records an application's own event by the same rules.`].join('\n');
}

const sections = { 'env-table': envTable, 'event-table': eventTable };

const SCHEMA = path.join(__dirname, '..', 'audit-record.schema.json');
function schemaText() {
  const { auditRecordSchema } = require('../dist/lib/audit/schema.js');
  return `${JSON.stringify(auditRecordSchema(), null, 2)}\n`;
}

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
  const targets = [
    [README, (text) => render(text)],
    [SCHEMA, () => schemaText()],
  ];
  let stale = false;
  for (const [file, gen] of targets) {
    const current = fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : '';
    const next = gen(current);
    if (next === current) continue;
    if (process.argv.includes('--check')) {
      console.error(`${path.basename(file)} is out of date: run \`npm run docs\``);
      stale = true;
    } else {
      fs.writeFileSync(file, next);
      console.log(`${path.basename(file)} updated`);
    }
  }
  if (!require('./k8s.js').run(process.argv.includes('--check'))) stale = true;
  if (stale) process.exit(1);
}

module.exports = { render, envTable, eventTable, schemaText };
