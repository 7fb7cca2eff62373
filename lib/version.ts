/** The package's own version, read once from its package.json (shipped in the tarball). */
export const version: string = (() => {
  try {
    return (require('../../package.json') as { version: string }).version;
  } catch {
    return 'unknown';
  }
})();
