// edge: the public API. Logs users in, checks session tokens, and calls orders and users.
const http = require('node:http');
const crypto = require('node:crypto');
const { audit } = require('auditrace');

const ORDERS = process.env.ORDERS_URL;
const USERS = process.env.USERS_URL;
const passwords = new Map([['u-17', 'correct horse']]);
const sessions = new Map(); // token -> user
const revoked = new Set();
const tokenHash = (t) => crypto.createHash('sha256').update(t).digest('hex').slice(0, 16);

function send(res, status, body) {
  res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
}

function readJson(req) {
  return new Promise((resolve) => {
    let b = '';
    req.on('data', (d) => { b += d; });
    req.on('end', () => { try { resolve(JSON.parse(b || '{}')); } catch { resolve({}); } });
  });
}

/** The user of a valid session token, or an audit record of why the token was refused. */
function authenticate(req) {
  const token = (req.headers.authorization ?? '').replace(/^Bearer /, '');
  if (!token) return undefined;
  if (revoked.has(token)) {
    audit.authnTokenReuse({ 'token.hash': tokenHash(token) });
    return undefined;
  }
  const user = sessions.get(token);
  if (!user) audit.authnTokenInvalid({ 'token.failure': 'bad_signature', 'token.type': 'session', 'token.hash': tokenHash(token) });
  return user;
}

async function forward(res, url, user, init = {}) {
  const r = await fetch(url, { ...init, headers: { ...(init.headers ?? {}), 'x-demo-user': user } });
  send(res, r.status, await r.json());
}

const server = http.createServer(async (req, res) => {
  if (req.method === 'POST' && req.url === '/login') {
    const { user, password } = await readJson(req);
    if (passwords.get(user) !== password) {
      audit.authnLoginFail({ 'user.id': String(user ?? ''), reason: 'bad_password', 'authn.method': 'password' });
      return send(res, 401, { error: 'bad credentials' });
    }
    const token = crypto.randomBytes(16).toString('hex');
    sessions.set(token, user);
    audit.authnLoginSuccess({ 'user.id': user, 'authn.method': 'password' });
    audit.sessionCreated({ 'user.id': user });
    return send(res, 200, { token });
  }
  const user = authenticate(req);
  if (!user) return send(res, 401, { error: 'login required' });
  if (req.method === 'POST' && req.url === '/logout') {
    const token = req.headers.authorization.replace(/^Bearer /, '');
    sessions.delete(token);
    revoked.add(token);
    audit.sessionLogout({ 'user.id': user });
    return send(res, 200, { ok: true });
  }
  if (req.method === 'POST' && req.url === '/consent') {
    const { purpose } = await readJson(req);
    audit.consentGranted({ 'user.id': user, 'consent.purpose': String(purpose), 'consent.version': '2026-10' });
    return send(res, 200, { ok: true });
  }
  if (req.url === '/profile' && req.method === 'GET') return forward(res, `${USERS}/users/${user}`, user);
  if (req.url === '/profile' && req.method === 'PUT') {
    const body = JSON.stringify(await readJson(req));
    return forward(res, `${USERS}/users/${user}`, user, { method: 'PUT', body, headers: { 'content-type': 'application/json' } });
  }
  if (req.url === '/orders' && req.method === 'GET') return forward(res, `${ORDERS}/orders/${user}`, user);
  return send(res, 404, { error: 'not found' });
});
server.listen(Number(process.env.PORT ?? 0), '127.0.0.1', () => console.log(`listening ${server.address().port}`));
