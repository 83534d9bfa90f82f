'use strict';
// Serves on $PORT unless FEATURE_MODE=broken, in which case it exits 1 at
// startup with a message on stderr. Used with
// `FEATURE_MODE=broken pm2 restart web --update-env` to show a restart that
// fails because the environment changed (restart-env-changed). It never
// prints the environment, only the one variable it reads.
const http = require('http');

const mode = process.env.FEATURE_MODE || 'default';
if (mode === 'broken') {
  console.error(`env-sensitive: pid=${process.pid} FEATURE_MODE=broken is not supported, exiting with code 1`);
  process.exit(1);
}

const port = Number(process.env.PORT || 0);
const server = http.createServer((req, res) => {
  res.setHeader('Connection', 'close');
  res.end(`env-sensitive pid=${process.pid} mode=${mode}\n`);
});
server.on('error', (err) => {
  console.error(`env-sensitive: listen on ${port} failed: ${err.code || err.message}`);
  process.exit(1);
});
server.listen(port, '127.0.0.1', () => {
  console.log(`env-sensitive: pid=${process.pid} mode=${mode} listening on ${server.address().port}`);
});
function shutdown() {
  server.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 200).unref();
}
process.on('SIGINT', shutdown);
process.on('SIGTERM', shutdown);
