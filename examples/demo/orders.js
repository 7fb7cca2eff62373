// orders: lists a user's orders and asks the users service who they are.
const http = require('node:http');
const { audit } = require('auditrace');

const USERS = process.env.USERS_URL;
const server = http.createServer(async (req, res) => {
  const m = req.url.match(/^\/orders\/([\w-]+)$/);
  if (!m) { res.writeHead(404).end(); return; }
  const actor = String(req.headers['x-demo-user'] ?? '');
  const r = await fetch(`${USERS}/users/${m[1]}`, { headers: { 'x-demo-user': actor } });
  const owner = await r.json();
  if (r.status !== 200) {
    res.writeHead(r.status, { 'content-type': 'application/json' }).end(JSON.stringify(owner));
    return;
  }
  audit.event('orders_listed', { 'user.id': actor, 'orders.count': 2 });
  res.writeHead(200, { 'content-type': 'application/json' })
    .end(JSON.stringify({ owner: owner.name, orders: [{ id: 'o-1', total: 42 }, { id: 'o-2', total: 7 }] }));
});
server.listen(Number(process.env.PORT ?? 0), '127.0.0.1', () => console.log(`listening ${server.address().port}`));
