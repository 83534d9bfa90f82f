'use strict';
// Plain crash loop: prints one line on stderr and exits with code 3 well
// within 100 ms of starting. pm2 counts every exit as an unstable restart and
// ends in `errored` after max_restarts (default 16).
console.error(`crash-on-start: pid=${process.pid} fatal: configuration missing, exiting with code 3`);
process.exitCode = 3;
setTimeout(() => process.exit(3), 10);
