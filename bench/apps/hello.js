'use strict';
// Hello world on node:http.
const http = require('node:http');
const probe = require('./probe');

const server = http.createServer((req, res) => {
  probe.served();
  res.writeHead(200, { 'content-type': 'text/plain' });
  res.end('hello world\n');
});
server.listen(Number(process.env.PORT ?? 0), '127.0.0.1', () => probe.ready(server.address().port));
