// Express 5: a route with a parameter that reads personal data, recorded as sensitive_read.
// Run: node --require auditrace/register server.js   (in this repository: --require ../../register.js)
const express = require('express');
const { audit } = require('auditrace');

const app = express();

app.get('/patients/:id', (req, res) => {
  // In a real app, user.id comes from your authentication middleware.
  const userId = req.get('x-demo-user') ?? 'u-17';
  audit.sensitiveRead({
    'user.id': userId,
    'user.target.id': req.params.id,
    'object.type': 'patient',
    'object.id': req.params.id,
    fields: ['name', 'diagnosis'],
    context: { purpose: 'consultation' },
  });
  res.json({ id: req.params.id, name: 'Jane Doe', diagnosis: 'healthy' });
});

const server = app.listen(Number(process.env.PORT ?? 3000), process.env.HOST ?? '127.0.0.1', () => {
  console.log(`listening on http://${server.address().address}:${server.address().port}`);
});
