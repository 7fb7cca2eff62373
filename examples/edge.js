// The edge API: receives outside requests and asks the users service.
// Run: USERS_URL=http://127.0.0.1:3001 node --require auditrace/register examples/edge.js
const http = require('node:http');

const usersUrl = process.env.USERS_URL ?? 'http://127.0.0.1:3001';
const server = http.createServer(async (req, res) => {
  const m = req.url.match(/^\/profile\/(\w+)$/);
  if (!m) { res.writeHead(404).end(); return; }
  try {
    const r = await fetch(`${usersUrl}/users/${m[1]}`);
    res.writeHead(r.status, { 'content-type': 'application/json' }).end(await r.text());
  } catch {
    res.writeHead(502).end();
  }
});
server.listen(Number(process.env.PORT ?? 0), '127.0.0.1', () => console.log(`listening ${server.address().port}`));
