#!/usr/bin/env python3
"""A small HTTP server run by clusterd (see ../web.toml).

It does not bind a port itself: clusterd binds 127.0.0.1:8080 once and passes
the listening socket to every instance as fd 3, with the systemd
socket-activation variables LISTEN_FDS, LISTEN_PID and LISTEN_FDNAMES. All
instances accept from that one socket, so they share the port, and the socket
stays open while an instance restarts: no connection is refused.

It answers every request with its pid and CLUSTERD_INSTANCE, says READY=1 on
NOTIFY_SOCKET once it serves (the unit has ready = "notify"), and on SIGTERM
stops accepting, finishes the requests in progress and exits 0.
"""

import http.server
import os
import signal
import socket
import sys
import threading

SD_LISTEN_FDS_START = 3

INSTANCE = os.environ.get("CLUSTERD_INSTANCE", "?")
UNIT = os.environ.get("CLUSTERD_UNIT", "web")


def log(message):
    print(f"{UNIT}[{INSTANCE}] pid {os.getpid()}: {message}", flush=True)


def listening_socket():
    """The socket clusterd passed, checked the way sd_listen_fds(3) does."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        sys.exit("LISTEN_PID is not my pid: run me under clusterd with `listen` set")
    if int(os.environ.get("LISTEN_FDS", "0")) < 1:
        sys.exit("LISTEN_FDS is not set: the unit needs a `listen` address")
    # Family and type are read from the fd itself.
    return socket.socket(fileno=SD_LISTEN_FDS_START)


def sd_notify(state):
    """Sends one sd_notify datagram; does nothing without NOTIFY_SOCKET."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return
    if path.startswith("@"):
        path = "\0" + path[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.sendto(state.encode(), path)


class Handler(http.server.BaseHTTPRequestHandler):
    # HTTP/1.0: one request per connection, so a stopping server has no idle
    # keep-alive connections to wait for.
    protocol_version = "HTTP/1.0"

    def do_GET(self):
        body = f"hello from {UNIT} instance {INSTANCE}, pid {os.getpid()}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        log(f"{self.address_string()} {format % args}")


class Server(http.server.ThreadingHTTPServer):
    # Wait for the request threads in server_close(): finish what was accepted.
    daemon_threads = False
    block_on_close = True


def main():
    # Do not bind: take the socket clusterd listens on.
    server = Server(("127.0.0.1", 0), Handler, bind_and_activate=False)
    server.socket.close()  # the unbound socket the constructor made
    server.socket = listening_socket()
    # Every instance waits on the same socket, so all of them wake up for a new
    # connection and only one gets it. With a blocking socket the others would
    # then sit in accept() until the next connection, deaf to shutdown(). A
    # non-blocking accept just fails and serve_forever() goes back to waiting.
    # (O_NONBLOCK belongs to the socket, which all instances share: they all
    # set it, and Node sets it too.)
    server.socket.setblocking(False)
    server.server_address = server.socket.getsockname()

    def on_sigterm(signum, frame):
        log("SIGTERM: finishing the requests in progress, then exiting")
        # shutdown() waits for serve_forever() to return: call it from another thread.
        threading.Thread(target=server.shutdown).start()

    signal.signal(signal.SIGTERM, on_sigterm)
    log(f"serving on http://{server.server_address[0]}:{server.server_address[1]}/ (fd 3)")
    sd_notify("READY=1\nSTATUS=serving")
    server.serve_forever()
    server.server_close()  # joins the request threads
    log("done")


if __name__ == "__main__":
    main()
