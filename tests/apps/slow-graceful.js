'use strict';
// One process whose graceful shutdown takes SHUTDOWN_MS (default 3000 ms)
// after SIGINT/SIGTERM. It stops listening at once (the port is free for the
// next generation) but keeps working on "in-flight" jobs, so pm2's
// kill_timeout (default 1600 ms) cuts it with SIGKILL: graceful-shutdown-killed.
const http = require('http');

const port = Number(process.env.PORT || 0);
const shutdownMs = Number(process.env.SHUTDOWN_MS || 3000);
const server = http.createServer((req, res) => {
  res.setHeader('Connection', 'close');
  res.end(`slow-graceful pid=${process.pid}\n`);
});
server.on('error', (err) => {
  console.error(`slow-graceful: listen on ${port} failed: ${err.code || err.message}`);
  process.exit(1);
});
server.listen(port, '127.0.0.1', () => {
  console.log(`slow-graceful: pid=${process.pid} listening on ${server.address().port}`);
});

let stopping = false;
function shutdown(sig) {
  if (stopping) return;
  stopping = true;
  const t0 = Date.now();
  console.log(`slow-graceful: ${sig}, flushing jobs for ${shutdownMs} ms`);
  server.close();
  const tick = setInterval(() => {
    console.log(`slow-graceful: still flushing after ${Date.now() - t0} ms`);
  }, 500);
  setTimeout(() => {
    clearInterval(tick);
    console.log(`slow-graceful: flushed after ${Date.now() - t0} ms, exiting 0`);
    process.exit(0);
  }, shutdownMs);
}
process.on('SIGINT', () => shutdown('SIGINT'));
process.on('SIGTERM', () => shutdown('SIGTERM'));
