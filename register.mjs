// `node --import auditrace/register app.mjs`: start telemetry and hook ESM imports so that
// `import express from 'express'` is instrumented as `require('express')` would be.
import { createRequire, register as registerAsyncHook } from 'node:module';
import { pathToFileURL } from 'node:url';
import { isMainThread } from 'node:worker_threads';

const require = createRequire(import.meta.url);
const bundle = require.resolve('./dist/auditrace.js');
// With the code cache the build made for this Node (lib/code-cache.ts), as register.js does.
function load() {
  try {
    return require('./dist/lib/code-cache.js').loadBundle(bundle);
  } catch {
    return require(bundle);
  }
}
const { start, __current: current } = load();

// Use the import-in-the-middle copy the instrumentations use (the bundle's `require` of it, from
// dist/): hooks live in its module state.
const iitmRequire = createRequire(new URL('./dist/auditrace.js', import.meta.url));
const iitmUrl = (path) => pathToFileURL(iitmRequire.resolve(`import-in-the-middle/${path}`)).href;

async function main() {
  if (!isMainThread) return;
  const alreadyStarted = current() !== undefined;
  try {
    const sync = await import(iitmUrl('register-hooks.mjs'));
    if (sync.supportsSyncHooks()) {
      const telemetry = start('import');
      const include = telemetry && !alreadyStarted ? telemetry.hookedModules.flatMap((m) => [m, `node:${m}`]) : undefined;
      // An SDK started by --require already created its hooks; without an include list the
      // loader intercepts every module and still finds them.
      sync.register(include ? { include } : undefined);
      return;
    }
    // Older Node 22 lines: the loader runs on its own thread and learns the hooks by message.
    const { createAddHookMessageChannel } = iitmRequire('import-in-the-middle');
    const channel = alreadyStarted ? undefined : createAddHookMessageChannel();
    registerAsyncHook(iitmUrl('hook.mjs'), import.meta.url, channel?.registerOptions);
    start('import');
    await channel?.waitForAllMessagesAcknowledged();
  } catch (err) {
    process.stderr.write(`auditrace: error: could not register the ESM hooks (${err?.message ?? err}); ESM imports are not instrumented\n`);
    start('import');
  }
}

await main();
