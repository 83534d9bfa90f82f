'use strict';
// Control app: one process, one HTTP server on $PORT, closes quickly on
// SIGINT/SIGTERM. Restarting it any number of times must never end errored.
const http = require('http');

const port = Number(process.env.PORT || 0);
const server = http.createServer((req, res) => {
  res.setHeader('Connection', 'close');
  res.end(`well-behaved pid=${process.pid}\n`);
});

server.on('error', (err) => {
  console.error(`well-behaved: listen on ${port} failed: ${err.code || err.message}`);
  process.exit(1);
});

server.listen(port, '127.0.0.1', () => {
  console.log(`well-behaved: pid=${process.pid} listening on ${server.address().port}`);
});

function shutdown(sig) {
  console.log(`well-behaved: ${sig}, closing`);
  server.close(() => process.exit(0));
  // Idle keep-alive sockets must not hold us up.
  setTimeout(() => process.exit(0), 200).unref();
}
process.on('SIGINT', () => shutdown('SIGINT'));
process.on('SIGTERM', () => shutdown('SIGTERM'));
