#!/usr/bin/env python3
"""benches/mass_start.py BIN_DIR N: starts N stamp workers under the clusterd in BIN_DIR and
reports the time to the Nth worker's stamp, the daemon main thread's time on the CPU, waiting
for one, and voluntary context switches until then (from /proc: what the load does not blur),
and the median of 20 `clusterctl status --json`. The worker is the bench's stamp_worker
(built by `cargo bench --bench supervisors` into its scratch directory; CLUSTERD_BENCH_SCRATCH).
Compare two builds by running it with each directory in turn."""
import os, sys, time, subprocess, json, signal, tempfile, statistics, shutil
bindir, n = sys.argv[1], int(sys.argv[2])
scratch = os.environ.get("CLUSTERD_BENCH_SCRATCH", "target/tmp/supervisors-bench")
worker = os.path.abspath(os.path.join(scratch, "stamp_worker"))
d = tempfile.mkdtemp(prefix="mass-start-")
os.makedirs(f"{d}/units")
stamps = f"{d}/stamps"
open(f"{d}/units/w.toml", "w").write(
    f'command = {json.dumps([worker, stamps])}\ninstances = {n}\nrestart = "always"\n'
    'restart_limit = { burst = 1000000, interval = "1s" }\n')
sock = f"{d}/sock"
log = open(f"{d}/clusterd.log", "w")
t0 = time.time_ns()
p = subprocess.Popen([f"{bindir}/clusterd", "--units", f"{d}/units", "--socket", sock,
                      "--log-dir", f"{d}/logs"], env=dict(os.environ, RUST_LOG="warn"),
                     stdin=subprocess.DEVNULL, stdout=log, stderr=log, process_group=0)
def task(field_file):
    return open(f"/proc/{p.pid}/task/{p.pid}/{field_file}").read()
def main_thread():
    on, rq, _ = map(int, task("schedstat").split())
    vol = [l for l in task("status").splitlines() if l.startswith("voluntary_ctxt")][0].split()[1]
    return on, rq, int(vol)
deadline = time.time() + 180
count = 0
try:
    while time.time() < deadline:
        try:
            lines = open(stamps).read().splitlines()
        except FileNotFoundError:
            lines = []
        count = len(lines)
        if count >= n:
            break
        time.sleep(0.002)
    t_seen = time.time_ns()
    on, rq, vol = main_thread()
    last = max(int(l.split()[1]) for l in lines[:n])
    wall = (last - t0) / 1e9
    print(f"{os.path.basename(bindir)}: {count}/{n} started, last start at {wall:.3f} s; "
          f"main thread until then+poll ({(t_seen-t0)/1e9:.3f} s): on-CPU {on/1e9:.3f} s, "
          f"runqueue {rq/1e9:.3f} s, voluntary switches {vol}")
    time.sleep(1)
    times = []
    for _ in range(20):
        a = time.perf_counter()
        subprocess.run([f"{bindir}/clusterctl", "--socket", sock, "status", "--json"],
                       stdout=subprocess.DEVNULL, check=True)
        times.append((time.perf_counter() - a) * 1000)
    print(f"  status --json x20: median {statistics.median(times):.1f} ms "
          f"[{min(times):.1f}-{max(times):.1f}]; load {os.getloadavg()[0]:.2f}")
finally:
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL); p.wait()
    shutil.rmtree(d, ignore_errors=True)
