#!/usr/bin/env python3
"""A worker that retires itself every ~30 s, run by clusterd (see ../suicide.toml).

Programs that leak memory, or that must pick up new certificates, often exit
on purpose now and then. If they simply exited, their slot would be empty
until clusterd noticed the exit and started a new one. Instead, this worker
first tells clusterd "I am about to exit" by writing the line

    {"act":"suicide"}

on its worker channel (the fd number is in CLUSTERD_CHANNEL_FD). clusterd
starts the replacement at once; this process then has kill_timeout to finish
its work (here it drains for a second) before clusterd would SIGKILL it. Its
own exit causes no second restart. In the log, the replacement's
"started" line comes before this process's exit line.
"""

import json
import os
import signal
import sys
import time

INSTANCE = int(os.environ.get("CLUSTERD_INSTANCE", "0"))
UNIT = os.environ.get("CLUSTERD_UNIT", "suicide")
# Stagger the instances so they do not retire at the same moment.
LIFETIME = 30 + 5 * INSTANCE


def log(message):
    print(f"{UNIT}[{INSTANCE}] pid {os.getpid()}: {message}", flush=True)


def announce_exit():
    """Writes one JSON line on the worker channel."""
    fd = int(os.environ["CLUSTERD_CHANNEL_FD"])
    line = json.dumps({"act": "suicide"}, separators=(",", ":")) + "\n"
    os.write(fd, line.encode())


def main():
    # A stop (clusterctl stop, SIGTERM to clusterd) ends us at once and cleanly.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    log(f"working; I will retire in {LIFETIME} s")
    started = time.monotonic()
    while time.monotonic() - started < LIFETIME:
        time.sleep(5)
        log(f"working ({int(time.monotonic() - started)} s)")
    log('announcing my exit: {"act":"suicide"}')
    announce_exit()
    log("draining for 1 s while my replacement starts")
    time.sleep(1)
    log("exiting")


if __name__ == "__main__":
    main()
