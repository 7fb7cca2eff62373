'use strict';
// Fallback when /usr/bin/time is missing: the process reports its own peak RSS when it exits.
process.on('exit', () => process.stderr.write(`maxrss_kib=${process.resourceUsage().maxRSS}\n`));
