'use strict';
// A leak that max_memory_restart catches: allocates GROW_MB (default 80) MB of
// Buffers, 8 MB every 100 ms (so within 1-2 s of starting), keeps them, and stays
// alive. Under `--max-memory-restart 50M` the daemon's worker (every
// PM2_WORKER_INTERVAL ms) sees the RSS over the limit and restarts it, again and again.
const total = Number(process.env.GROW_MB || 80);
const kept = [];
const grow = setInterval(() => {
  kept.push(Buffer.alloc(8 * 1024 * 1024, 1));
  if (kept.length * 8 >= total) {
    clearInterval(grow);
    console.log(`memory-grower: pid=${process.pid} holds ${kept.length * 8} MB`);
  }
}, 100);
setInterval(() => {}, 1000);
process.on('SIGINT', () => process.exit(0));
process.on('SIGTERM', () => process.exit(0));
