// users: holds personal data. Every read and change of a profile is an audit record with the actor
// (user.id) and the data subject (user.target.id), never the data itself.
const http = require('node:http');
const { audit } = require('auditrace');

const profiles = new Map([['u-17', { name: 'Ada Example', email: 'ada@example.com', plan: 'pro' }]]);

function json(res, status, body) {
  res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
}

const server = http.createServer((req, res) => {
  const m = req.url.match(/^\/users\/([\w-]+)$/);
  const actor = req.headers['x-demo-user'];
  if (!m) return json(res, 404, { error: 'not found' });
  const subject = m[1];
  if (!profiles.has(subject)) return json(res, 404, { error: 'no such user' });
  if (actor !== subject) {
    audit.authzFail({ 'user.id': String(actor ?? ''), 'user.target.id': subject, 'authz.action': 'profile:read', 'object.type': 'profile' });
    return json(res, 403, { error: 'forbidden' });
  }
  if (req.method === 'GET') {
    audit.sensitiveRead({ 'user.id': actor, 'user.target.id': subject, 'object.type': 'profile', fields: ['name', 'email', 'plan'] });
    return json(res, 200, profiles.get(subject));
  }
  let body = '';
  req.on('data', (d) => { body += d; });
  req.on('end', () => {
    let changes;
    try { changes = JSON.parse(body); } catch { changes = null; }
    if (!changes || typeof changes !== 'object') {
      audit.inputValidationFail({ 'user.id': actor, fields: ['body'] });
      return json(res, 400, { error: 'bad body' });
    }
    Object.assign(profiles.get(subject), changes);
    audit.sensitiveUpdate({ 'user.id': actor, 'user.target.id': subject, 'object.type': 'profile', fields: Object.keys(changes) });
    return json(res, 200, profiles.get(subject));
  });
});
server.listen(Number(process.env.PORT ?? 0), '127.0.0.1', () => console.log(`listening ${server.address().port}`));
