// Fastify 5: a route with a parameter that reads personal data, recorded as sensitive_read.
// Run: node --require auditrace/register server.js   (in this repository: --require ../../register.js)
const fastify = require('fastify');
const { audit } = require('auditrace');

const app = fastify({ logger: false });

app.get('/patients/:id', async (req) => {
  // In a real app, user.id comes from your authentication hook.
  const userId = req.headers['x-demo-user'] ?? 'u-17';
  audit.sensitiveRead({
    'user.id': userId,
    'user.target.id': req.params.id,
    'object.type': 'patient',
    'object.id': req.params.id,
    fields: ['name', 'diagnosis'],
    context: { purpose: 'consultation' },
  });
  return { id: req.params.id, name: 'Jane Doe', diagnosis: 'healthy' };
});

app.listen({ port: Number(process.env.PORT ?? 3000), host: process.env.HOST ?? '127.0.0.1' }).then(() => {
  const { address, port } = app.server.address();
  console.log(`listening on http://${address}:${port}`);
});
