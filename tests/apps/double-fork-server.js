'use strict';
// The pm2 process (the "owner") starts the real HTTP server through a double
// fork: it spawns a detached intermediate, which spawns the server (detached,
// own session) and exits at once, so the server is reparented to init and is
// no longer in the process tree that pm2 kills and waits for.
//
// The server reports back over an inherited socketpair (fd 3): a line
// `listening <port> <pid>` or `error <CODE>`. The owner exits 1 when the
// server could not listen (e.g. EADDRINUSE), and exits at once on SIGINT/
// SIGTERM after forwarding SIGTERM to the server. The server keeps the port
// for DRAIN_MS (default 12000 ms) after SIGINT/SIGTERM or after its owner is
// gone (fd 3 closed or owner pid dead), then exits; HARD_CAP_MS (default
// 20000) bounds the drain, so nothing leaks even if a harness fails. With
// DRAIN_UNTIL=<file>, the drain also ends as soon as that file exists.
//
// pm2 7.0.4 (and 5.4.3) `pm2 restart`: the owner dies, pm2 sees its tree dead and starts
// the next generation while the old server still holds the port; the new
// server fails with EADDRINUSE, its owner exits 1 within milliseconds, and the
// app crash-loops into `errored`. `pm2 stop; sleep 13; pm2 start` works.
const fs = require('fs');
const http = require('http');
const net = require('net');
const { spawn } = require('child_process');

const role = process.argv[2] || '--owner';
const port = Number(process.env.PORT || 0);
const drainMs = Number(process.env.DRAIN_MS || 12000);
const hardCapMs = Number(process.env.HARD_CAP_MS || 20000);
const drainUntil = process.env.DRAIN_UNTIL || '';
const tag = `double-fork-server[${role.replace(/^--/, '')} pid=${process.pid}]`;

// Writes to a pipe whose reader is gone must not crash anyone.
process.stdout.on('error', () => {});
process.stderr.on('error', () => {});

if (role === '--intermediate') {
  const server = spawn(process.execPath, [__filename, '--server'], {
    detached: true,
    stdio: ['ignore', 'inherit', 'inherit', 3],
  });
  server.unref();
  process.exit(0);
} else if (role === '--server') {
  const ownerPid = Number(process.env.DOUBLE_FORK_OWNER_PID || 0);
  let ch = null;
  try {
    ch = new net.Socket({ fd: 3, readable: true, writable: true });
    ch.on('error', () => {});
  } catch (e) {
    ch = null;
  }
  const report = (line) => {
    if (ch && !ch.destroyed) ch.write(line + '\n');
  };
  let draining = false;
  const server = http.createServer((req, res) => {
    res.setHeader('Connection', 'close');
    if (draining) { res.statusCode = 503; res.end('draining\n'); return; }
    res.end(`double-fork-server server pid=${process.pid}\n`);
  });
  server.on('error', (err) => {
    console.error(`${tag}: listen on ${port} failed: ${err.code || err.message}`);
    report(`error ${err.code || 'EUNKNOWN'}`);
    // Let the line reach the owner before we go.
    setTimeout(() => process.exit(1), 20);
  });
  server.listen(port, '127.0.0.1', () => {
    console.log(`${tag}: listening on ${server.address().port} (ppid=${process.ppid})`);
    report(`listening ${server.address().port} ${process.pid}`);
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
  if (ch) {
    ch.on('end', () => drain('owner gone (channel closed)'));
    ch.on('close', () => drain('owner gone (channel closed)'));
    ch.resume();
  }
  setInterval(() => {
    if (!ownerPid) return;
    try { process.kill(ownerPid, 0); } catch (e) { drain('owner gone (pid dead)'); }
  }, 250).unref();
  // Absolute bound on the life of a server whose owner never said anything.
  if (!ch && !ownerPid) setTimeout(() => drain('no owner'), hardCapMs).unref();
} else {
  // The owner: the process pm2 started.
  const inter = spawn(process.execPath, [__filename, '--intermediate'], {
    detached: true,
    stdio: ['ignore', 'inherit', 'inherit', 'pipe'],
    env: Object.assign({}, process.env, { DOUBLE_FORK_OWNER_PID: String(process.pid) }),
  });
  const ch = inter.stdio[3];
  let serverPid = 0;
  let buf = '';
  ch.setEncoding('utf8');
  ch.on('data', (d) => {
    buf += d;
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      const m = /^listening (\d+) (\d+)$/.exec(line);
      if (m) {
        serverPid = Number(m[2]);
        console.log(`${tag}: server pid=${serverPid} is up on ${m[1]}`);
      } else if (line.startsWith('error ')) {
        console.error(`${tag}: server failed to start: ${line.slice(6)}, exiting 1`);
        process.exit(1);
      }
    }
  });
  ch.on('error', () => {});
  ch.on('close', () => {
    console.error(`${tag}: server went away, exiting 1`);
    process.exit(1);
  });
  const stop = (sig) => {
    console.log(`${tag}: ${sig}, telling server pid=${serverPid} to stop, exiting at once`);
    if (serverPid) { try { process.kill(serverPid, 'SIGTERM'); } catch (e) {} }
    process.exit(0);
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
}
