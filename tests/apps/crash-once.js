'use strict';
// Serves on $PORT like well-behaved.js, except that when the file named by
// CRASH_MARKER exists at startup, it removes it and exits 1 at once with a
// message on stderr (think: a migration lock left behind, a cache that is
// rebuilt on the first failed start). Used to show early-exit-after-restart:
// create the marker, `pm2 restart web`, and the first new generation dies
// within min_uptime; pm2 restarts it and the second one serves (online).
const fs = require('fs');
const http = require('http');

const marker = process.env.CRASH_MARKER || '';
if (marker) {
  let present = false;
  try {
    fs.unlinkSync(marker);
    present = true;
  } catch (e) {
    if (e.code !== 'ENOENT') throw e;
  }
  if (present) {
    console.error(`crash-once: pid=${process.pid} found a stale lock file, removed it, exiting with code 2`);
    process.exit(2);
  }
}

const port = Number(process.env.PORT || 0);
const server = http.createServer((req, res) => {
  res.setHeader('Connection', 'close');
  res.end(`crash-once pid=${process.pid}\n`);
});
server.on('error', (err) => {
  console.error(`crash-once: listen on ${port} failed: ${err.code || err.message}`);
  process.exit(1);
});
server.listen(port, '127.0.0.1', () => {
  console.log(`crash-once: pid=${process.pid} listening on ${server.address().port}`);
});
function shutdown() {
  server.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 200).unref();
}
process.on('SIGINT', shutdown);
process.on('SIGTERM', shutdown);
