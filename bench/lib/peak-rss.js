'use strict';
/**
 * This process's own peak RSS in KiB. On Linux `getrusage`'s `ru_maxrss` (Node's
 * `resourceUsage().maxRSS`) keeps the peak of the memory a spawned process was forked from, its
 * parent's at the fork, across the `exec`: a child of a 500 MB process reports ≥ 500 MB whatever
 * it uses. `VmHWM` in /proc/self/status is the peak of this program's own memory only.
 */
function peakRssKiB() {
  try {
    const m = /^VmHWM:\s+(\d+) kB$/m.exec(require('node:fs').readFileSync('/proc/self/status', 'utf8'));
    if (m) return Number(m[1]);
  } catch {
    // not Linux
  }
  return process.resourceUsage().maxRSS;
}

module.exports = { peakRssKiB };
