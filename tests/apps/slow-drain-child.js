'use strict';
// The pm2 process (parent) forks a child with child_process.fork; the child
// owns the HTTP server on $PORT. On SIGINT/SIGTERM the parent exits at once,
// while the child keeps the listening socket for DRAIN_MS (default 12000 ms)
// to drain in-flight requests, then exits.
//
// pm2 5.4.3 waits only for the parent pid, starts the next generation at once,
// whose child fails with EADDRINUSE; the parent then exits 1, and the fast
// crashes pile up to `errored`. pm2 7.0.4 waits for the whole tree and
// SIGKILLs the draining child at kill_timeout (1600 ms): online, drain cut.
//
// The child also starts draining when its parent goes away without a signal
// (IPC channel closed), and exits at the latest HARD_CAP_MS (default 20000)
// after that, so it can never outlive a broken harness for long. With
// DRAIN_UNTIL=<file>, the drain also ends as soon as that file exists (a test
// says when it has seen what it waited for).
const fs = require('fs');
const http = require('http');
const { fork } = require('child_process');

const port = Number(process.env.PORT || 0);
const drainMs = Number(process.env.DRAIN_MS || 12000);
const hardCapMs = Number(process.env.HARD_CAP_MS || 20000);
const drainUntil = process.env.DRAIN_UNTIL || '';
const tag = `slow-drain-child[${process.argv[2] === '--child' ? 'child' : 'parent'} pid=${process.pid}]`;

if (process.argv[2] === '--child') {
  let draining = false;
  const server = http.createServer((req, res) => {
    res.setHeader('Connection', 'close');
    if (draining) { res.statusCode = 503; res.end('draining\n'); return; }
    res.end(`slow-drain-child child pid=${process.pid}\n`);
  });
  server.on('error', (err) => {
    console.error(`${tag}: listen on ${port} failed: ${err.code || err.message}`);
    process.exit(1);
  });
  server.listen(port, '127.0.0.1', () => {
    console.log(`${tag}: listening on ${server.address().port}`);
    if (process.send) process.send({ listening: server.address().port });
  });
  const drain = (why) => {
    if (draining) return;
    draining = true;
    const t0 = Date.now();
    console.log(`${tag}: ${why}, draining for ${drainMs} ms with the port still open`);
    const done = () => {
      console.log(`${tag}: drained after ${Date.now() - t0} ms, closing port and exiting`);
      process.exit(0);
    };
    setTimeout(done, Math.min(drainMs, hardCapMs));
    if (drainUntil) setInterval(() => { if (fs.existsSync(drainUntil)) done(); }, 50);
  };
  process.on('SIGINT', () => drain('SIGINT'));
  process.on('SIGTERM', () => drain('SIGTERM'));
  process.on('disconnect', () => drain('parent gone'));
  // Belt and braces: never stay around more than HARD_CAP_MS without a parent.
  const parent = process.ppid;
  setInterval(() => {
    if (process.ppid !== parent) drain('reparented');
  }, 250).unref();
} else {
  const child = fork(__filename, ['--child'], { stdio: 'inherit' });
  console.log(`${tag}: forked child pid=${child.pid}`);
  child.on('exit', (code, signal) => {
    console.error(`${tag}: child exited code=${code} signal=${signal}, exiting`);
    process.exit(code || 1);
  });
  const stop = (sig) => {
    console.log(`${tag}: ${sig}, exiting at once (child drains on its own)`);
    process.exit(0);
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
}
