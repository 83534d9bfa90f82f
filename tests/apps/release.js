'use strict';
// A release of a web app, as a deploy switches it: serves on $PORT (one HTTP server, closes
// quickly on SIGINT/SIGTERM, like well-behaved.js), except that when the file named by
// RELEASE_FILE says `broken` at startup, this release crashes at start (a missing
// configuration, a failed migration): it prints why on stderr and exits 1 before listening.
// Switch a running cluster app to the broken release by writing `broken` into the file, then
// `pm2 reload web`.
//
// READY=send: after listening, tell pm2 `process.send('ready')` (for --wait-ready).
// The `shutdown` message of a graceful reload closes it like SIGINT.
// Without it the app never sends ready: under --wait-ready pm2 waits listen_timeout.
const fs = require('fs');
const http = require('http');

const releaseFile = process.env.RELEASE_FILE || '';
let release = 'good';
if (releaseFile) {
  try {
    release = fs.readFileSync(releaseFile, 'utf8').trim() || 'good';
  } catch (e) {
    if (e.code !== 'ENOENT') throw e;
  }
}
if (release === 'broken') {
  console.error(`release: pid=${process.pid} fatal: configuration missing in this release, exiting with code 1`);
  process.exit(1);
}

const port = Number(process.env.PORT || 0);
const server = http.createServer((req, res) => {
  res.setHeader('Connection', 'close');
  res.end(`release ${release} pid=${process.pid}\n`);
});
server.on('error', (err) => {
  console.error(`release: listen on ${port} failed: ${err.code || err.message}`);
  process.exit(1);
});
server.listen(port, '127.0.0.1', () => {
  console.log(`release: pid=${process.pid} listening on ${server.address().port}`);
  if (process.env.READY === 'send' && process.send) process.send('ready');
});

function shutdown() {
  server.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 200).unref();
}
process.on('SIGINT', shutdown);
process.on('SIGTERM', shutdown);
// A graceful reload (softReloadProcessId) asks the old worker to leave with a message.
process.on('message', (m) => {
  if (m === 'shutdown') shutdown();
});
