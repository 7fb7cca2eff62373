// The smallest instrumented service: plain node:http and one audit call.
// Run: node --require auditrace/register server.js   (in this repository: --require ../../register.js)
const http = require('node:http');
const { audit } = require('auditrace');

const server = http.createServer((req, res) => {
  // One synchronous JSON line in AUDITRACE_AUDIT_FILE, linked to this request's span.
  audit.event('greeting_sent', { 'user.id': 'anonymous', context: { language: 'en' } });
  res.writeHead(200, { 'content-type': 'text/plain' }).end('hello\n');
});

server.listen(Number(process.env.PORT ?? 3000), process.env.HOST ?? '127.0.0.1', () => {
  console.log(`listening on http://${server.address().address}:${server.address().port}`);
});
