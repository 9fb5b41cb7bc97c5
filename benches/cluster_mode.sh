#!/usr/bin/env bash
# Cluster mode, measured: how units/web.toml's connections spread over its instances with
# balance = "shared" and "reuseport", and its throughput with 1 and 2 instances.
#
#   benches/cluster_mode.sh            (needs python3; wrk for throughput, else that part is skipped)
#
# It runs the release clusterd on a scratch copy of units/web.toml (port 8080 on loopback) and
# stops it when done, also on Ctrl-C. Results are printed; docs/cluster-mode.md quotes a run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

cargo build --release --quiet
scratch=$(mktemp -d)
clusterd_pid=""
cleanup() {
    if [ -n "$clusterd_pid" ]; then kill -TERM "$clusterd_pid" 2>/dev/null || true; wait "$clusterd_pid" 2>/dev/null || true; fi
    rm -rf "$scratch"
}
trap cleanup EXIT INT TERM

# A client that counts which instance answered (web.py says "... instance N, pid P").
cat > "$scratch/spread.py" <<'PY'
import collections, sys, threading, urllib.request
total, clients = int(sys.argv[1]), int(sys.argv[2])
counts, lock = collections.Counter(), threading.Lock()
def client(n):
    for _ in range(n):
        body = urllib.request.urlopen("http://127.0.0.1:8080/", timeout=10).read().decode()
        with lock:
            counts["instance " + body.split()[4].rstrip(",")] += 1
threads = [threading.Thread(target=client, args=(total // clients,)) for _ in range(clients)]
for t in threads: t.start()
for t in threads: t.join()
print(", ".join(f"{k}: {v}" for k, v in sorted(counts.items())))
PY

run_mode() {
    local mode=$1 dir="$scratch/$1"
    mkdir -p "$dir"
    cp -r units/workers "$dir/"
    sed "s/^balance = .*/balance = \"$mode\"/" units/web.toml > "$dir/web.toml"
    target/release/clusterd --units "$dir" --socket "$dir/ctl.sock" >/dev/null 2>&1 &
    clusterd_pid=$!
    local ctl="target/release/clusterctl --socket $dir/ctl.sock"
    for _ in $(seq 100); do $ctl status web >/dev/null 2>&1 && break; sleep 0.1; done
    $ctl start web >/dev/null   # returns once both instances are ready
    echo "balance = \"$mode\""
    echo "  1000 sequential requests:      $(python3 "$scratch/spread.py" 1000 1)"
    echo "  2000 requests from 4 clients:  $(python3 "$scratch/spread.py" 2000 4)"
    if command -v wrk >/dev/null 2>&1; then
        for n in 1 2; do
            $ctl scale web "$n" >/dev/null
            rps=$(wrk -t1 -c20 -d10s http://127.0.0.1:8080/ | awk '/Requests\/sec/ {print $2}')
            echo "  wrk -t1 -c20 -d10s, $n instance(s): $rps requests/s"
        done
    fi
    kill -TERM "$clusterd_pid"; wait "$clusterd_pid" || true
    clusterd_pid=""
}

echo "machine: $(nproc) cores, $(uname -r), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
run_mode shared
run_mode reuseport
