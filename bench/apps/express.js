'use strict';
// An Express 5 route with a parameter.
const express = require('express');
const probe = require('./probe');

const app = express();
app.get('/users/:id', (req, res) => {
  probe.served();
  res.json({ id: req.params.id, name: 'Ada Lovelace', role: 'member' });
});
const server = app.listen(Number(process.env.PORT ?? 0), '127.0.0.1', () => probe.ready(server.address().port));
