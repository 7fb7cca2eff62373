'use strict';
// Fallback when /usr/bin/time is missing: the process reports its own peak RSS when it exits.
const { peakRssKiB } = require('./peak-rss');

process.on('exit', () => process.stderr.write(`maxrss_kib=${peakRssKiB()}\n`));
