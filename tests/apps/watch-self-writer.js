'use strict';
// Started with `--watch` from its own directory: at start it appends a line to
// `logs/app.log` under that directory (a log the operator forgot to put in
// ignore_watch), so each start changes a watched file and pm2 restarts it, forever.
const fs = require('fs');
const path = require('path');

const dir = path.join(__dirname, 'logs');
fs.mkdirSync(dir, { recursive: true });
// A moment after the start, as an app logs once it is up.
setTimeout(() => {
  fs.appendFileSync(path.join(dir, 'app.log'), `started pid=${process.pid}\n`);
  console.log(`watch-self-writer: pid=${process.pid} wrote logs/app.log`);
}, 200);
setInterval(() => {}, 1000);
process.on('SIGINT', () => process.exit(0));
process.on('SIGTERM', () => process.exit(0));
