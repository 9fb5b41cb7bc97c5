'use strict';
// Node's own cluster module: a primary forking 2 workers of the same app (round-robin).
const cluster = require('cluster');
if (cluster.isPrimary) {
  for (let i = 0; i < 2; i++) cluster.fork();
  cluster.on('exit', (w, code, sig) => { if (!process.exitCode) cluster.fork(); });
  const parent = process.ppid;
  setInterval(() => { if (process.ppid !== parent) process.exit(1); }, 1000).unref();
} else {
  require('./app.js');
}
