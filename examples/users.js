// The users service: holds personal data. Run: node --require auditrace/register examples/users.js
const http = require('node:http');

const server = http.createServer((req, res) => {
  const m = req.url.match(/^\/users\/(\w+)$/);
  if (!m) { res.writeHead(404).end(); return; }
  res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ id: m[1], plan: 'pro' }));
});
server.listen(Number(process.env.PORT ?? 0), '127.0.0.1', () => console.log(`listening ${server.address().port}`));
