// A small HTTP server run by clusterd (see ../node-web.toml), the Node version
// of web.py.
//
// It does not bind a port itself: clusterd binds 127.0.0.1:8081 and passes the
// listening socket as fd 3 (LISTEN_FDS=1), which Node accepts with
// `server.listen({ fd: 3 })`. Every instance accepts from that one socket.
//
// clusterd also sets NODE_CHANNEL_FD, so Node opens its IPC channel to
// clusterd: `process.send()` works as it does under PM2 or the cluster
// module. This worker sends {act: 'ready'} once it listens (the unit has
// ready = "notify"); `process.send({ act: 'suicide' })` would ask for a
// replacement before exiting.
'use strict';

const http = require('node:http');

const SD_LISTEN_FDS_START = 3;
const unit = process.env.CLUSTERD_UNIT || 'node-web';
const instance = process.env.CLUSTERD_INSTANCE || '?';

function log(message) {
  console.log(`${unit}[${instance}] pid ${process.pid}: ${message}`);
}

// Checked the way sd_listen_fds(3) does: the variables are meant for us.
if (process.env.LISTEN_PID !== String(process.pid) || Number(process.env.LISTEN_FDS || 0) < 1) {
  console.error('no listening socket from clusterd: run me under clusterd with `listen` set');
  process.exit(1);
}

const server = http.createServer((req, res) => {
  log(`${req.method} ${req.url}`);
  res.setHeader('Content-Type', 'text/plain; charset=utf-8');
  res.setHeader('Connection', 'close');
  res.end(`hello from ${unit} instance ${instance}, pid ${process.pid}\n`);
});

server.listen({ fd: SD_LISTEN_FDS_START }, () => {
  log('serving on the socket clusterd passed as fd 3');
  // Arrives at clusterd as the line {"act":"ready"}.
  if (process.send) process.send({ act: 'ready' });
});

// clusterd's kill_signal: stop accepting, let the requests in progress finish,
// then exit. Exiting explicitly also closes the IPC channel, which would
// otherwise keep the process alive.
process.on('SIGTERM', () => {
  log('SIGTERM: finishing the requests in progress, then exiting');
  server.close(() => {
    log('done');
    process.exit(0);
  });
});
