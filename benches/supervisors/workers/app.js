'use strict';
// Hello-world HTTP server. Under clusterd it serves the inherited fd 3 (LISTEN_FDS) and says
// ready over the worker channel; elsewhere it listens on $PORT (PM2 / Node cluster mode).
const http = require('http');
const net = require('net');
let closing = false;
const server = http.createServer((req, res) => {
  if (closing) res.setHeader('Connection', 'close');
  res.end('hello world\n');
});
const where = process.env.LISTEN_FDS ? { fd: 3 } : { port: +process.env.PORT, host: '127.0.0.1' };
server.listen(where, () => {
  if (process.env.CLUSTERD_UNIT && process.send) process.send({ act: 'ready' });
});
// Graceful stop: stop accepting, answer every request still arriving on open keep-alive
// connections with "Connection: close", exit once they are all closed (at most 4 s).
// net.Server.close (not http's) so that idle keep-alive connections are not cut mid-race.
function stop() {
  if (closing) return;
  closing = true;
  net.Server.prototype.close.call(server, () => process.exit(0));
  setTimeout(() => process.exit(0), 4000).unref();
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
// Never outlive the supervisor that started us.
const parent = process.ppid;
setInterval(() => { if (process.ppid !== parent) process.exit(1); }, 1000).unref();
