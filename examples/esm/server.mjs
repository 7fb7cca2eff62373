// An ES module service: `import` of node:http and of auditrace, both instrumented.
// Run: node --import auditrace/register server.mjs   (in this repository: --import ../../register.mjs)
import http from 'node:http';
import { audit, logger } from 'auditrace';

const server = http.createServer((req, res) => {
  audit.event('greeting_sent', { 'user.id': 'anonymous', context: { language: 'en' } });
  logger.info('greeting sent'); // a JSON line on stdout with trace_id, span_id and request.id
  res.writeHead(200, { 'content-type': 'text/plain' }).end('hello\n');
});

server.listen(Number(process.env.PORT ?? 3000), process.env.HOST ?? '127.0.0.1', () => {
  console.log(`listening on http://${server.address().address}:${server.address().port}`);
});
