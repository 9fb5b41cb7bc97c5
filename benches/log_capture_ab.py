#!/usr/bin/env python3
"""Log capture, side by side: `writer | cat > file` and builds of clusterd in turn, every round.

The bench's writer (benches/supervisors/workers/log_writer.c: 200 MB of 100-byte lines in
64 000-byte writes) into cat or into clusterd's log file; the order is reversed every other
round, `sync` runs before each burst and the output is deleted after it. Prints, per burst and
as medians: MB/s of the writer's output, CPU ms (user, system) and context switches
(voluntary, not) of cat or clusterd (`sup`), of clusterd's log thread (`lt`) and of the writer
(`wr`), and each build's ratio to cat in the same round. PERF=1 records `perf record -g` of
cat and of clusterd during each burst (perf-*.data in the scratch directory's parent).

usage: benches/log_capture_ab.py ROUNDS VARIANT...
       VARIANT = name:bindir:timestamps[:ENV=VAL,ENV=VAL]   (bindir holds `clusterd`)
e.g.   benches/log_capture_ab.py 6 old:/tmp/old:1 new:target/release:1 newOff:target/release:0
"""
import os, sys, time, subprocess, shutil, statistics, signal

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HERE = os.path.join(ROOT, "target", "tmp", "log-ab")
os.makedirs(HERE, exist_ok=True)
TOTAL = 200_000_000
TCK = os.sysconf("SC_CLK_TCK")
WRITER = os.path.join(HERE, "log_writer")
SRC = os.path.join(ROOT, "benches", "supervisors", "workers", "log_writer.c")
if not os.path.exists(WRITER):
    subprocess.check_call(["gcc", "-O2", "-o", WRITER, SRC])
SCR = os.path.join(HERE, "scratch")


def cpu(pid, tid=None):
    p = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    f = open(p).read().rsplit(")", 1)[1].split()
    return int(f[11]) * 1000 / TCK, int(f[12]) * 1000 / TCK  # utime, stime ms


def ctx(pid, tid=None):
    p = f"/proc/{pid}/status" if tid is None else f"/proc/{pid}/task/{tid}/status"
    v = nv = 0
    for l in open(p):
        if l.startswith("voluntary_ctxt_switches"):
            v = int(l.split()[1])
        if l.startswith("nonvoluntary_ctxt_switches"):
            nv = int(l.split()[1])
    return v, nv


def ends_done(path):
    try:
        with open(path, "rb") as f:
            f.seek(-5, 2)
            return f.read(5) == b"done\n"
    except OSError:
        return False


def burst(go, out, procs):
    subprocess.call(["sync"])
    before = {k: (cpu(*v), ctx(*v)) for k, v in procs.items()}
    perf = None
    if os.environ.get("PERF"):
        pid = procs["sup"][0]
        perf = subprocess.Popen(["perf", "record", "-F", "4000", "-g", "-q", "-o",
                                 os.path.join(HERE, f"perf-{os.path.basename(os.path.dirname(go))}.data"),
                                 "-p", str(pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
    t0 = time.monotonic()
    open(go, "w").close()
    while not ends_done(out):
        if time.monotonic() - t0 > 120:
            raise RuntimeError("timeout")
        time.sleep(0.001)
    el = time.monotonic() - t0
    if perf:
        perf.send_signal(signal.SIGINT); perf.wait()
    res = {"mbs": TOTAL / 1e6 / el}
    for k, v in procs.items():
        (u0, s0), (v0, n0) = before[k]
        (u1, s1), (v1, n1) = cpu(*v), ctx(*v)
        res[k + ".u"] = u1 - u0
        res[k + ".s"] = s1 - s0
        res[k + ".cpu"] = u1 - u0 + s1 - s0
        res[k + ".vcs"] = v1 - v0
        res[k + ".ncs"] = n1 - n0
    return res


def fresh(name):
    d = os.path.join(SCR, name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    return d


def run_cat(i):
    d = fresh(f"cat-{i}")
    go, out = os.path.join(d, "go"), os.path.join(d, "out.log")
    w = subprocess.Popen([WRITER, str(TOTAL), go], stdout=subprocess.PIPE)
    c = subprocess.Popen(["cat"], stdin=w.stdout, stdout=open(out, "wb"))
    w.stdout.close()
    try:
        return burst(go, out, {"sup": (c.pid,), "wr": (w.pid,)})
    finally:
        w.kill(); w.wait(); c.wait()
        shutil.rmtree(d, ignore_errors=True)


def run_clusterd(i, name, bindir, ts, env):
    d = fresh(f"cd-{name}-{i}")
    units = os.path.join(d, "units"); os.makedirs(units)
    go = os.path.join(d, "go")
    with open(os.path.join(units, "w.toml"), "w") as f:
        f.write(f'command = ["{WRITER}", "{TOTAL}", "{go}"]\nrestart = "never"\n'
                f'log = {{ timestamps = {"true" if ts else "false"} }}\n')
    e = dict(os.environ, RUST_LOG="warn", **env)
    log = open(os.path.join(d, "clusterd.log"), "wb")
    p = subprocess.Popen([os.path.join(bindir, "clusterd"), "--units", units, "--socket",
                          os.path.join(d, "s.sock"), "--log-dir", os.path.join(d, "logs")],
                         env=e, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                         start_new_session=True)
    out = os.path.join(d, "logs", "w.log")
    try:
        t0 = time.monotonic()
        while not os.path.exists(out):
            if time.monotonic() - t0 > 10:
                raise RuntimeError("no start")
            time.sleep(0.002)
        time.sleep(0.05)
        ltid = None
        for t in os.listdir(f"/proc/{p.pid}/task"):
            if open(f"/proc/{p.pid}/task/{t}/comm").read().strip() == "logs":
                ltid = t
        wpid = None
        for c in open(f"/proc/{p.pid}/task/{p.pid}/children").read().split():
            wpid = int(c)
        procs = {"sup": (p.pid,), "lt": (p.pid, ltid), "wr": (wpid,)}
        r = burst(go, out, procs)
        logs = os.path.dirname(out)
        r["MB"] = sum(os.path.getsize(os.path.join(logs, f)) for f in os.listdir(logs)) / 1e6
        return r
    finally:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        shutil.rmtree(d, ignore_errors=True)


def main():
    rounds = int(sys.argv[1])
    variants = []
    for v in sys.argv[2:]:
        parts = v.split(":")
        env = {}
        if len(parts) > 3 and parts[3]:
            for kv in parts[3].split(","):
                k, val = kv.split("=", 1)
                env[k] = val
        variants.append((parts[0], parts[1], parts[2] in ("1", "true", "on"), env))
    results = {"cat": []}
    for v in variants:
        results[v[0]] = []
    print("load at start:", open("/proc/loadavg").read().strip(), flush=True)
    for i in range(rounds):
        order = [("cat", None)] + [(v[0], v) for v in variants]
        if i % 2:
            order = order[::-1]
        for name, v in order:
            try:
                r = run_cat(i) if v is None else run_clusterd(i, *v)
            except Exception as ex:
                print(name, "failed", ex, flush=True)
                continue
            results[name].append(r)
            print(i, name, " ".join(f"{k}={x:.0f}" for k, x in r.items()), flush=True)
    print("load at end:", open("/proc/loadavg").read().strip())
    cat_med = statistics.median(r["mbs"] for r in results["cat"]) if results["cat"] else None
    for name, rs in results.items():
        if not rs:
            continue
        keys = rs[0].keys()
        meds = {k: statistics.median(r[k] for r in rs) for k in keys}
        line = f"MEDIAN {name:10s} " + " ".join(f"{k}={x:.0f}" for k, x in meds.items())
        if name != "cat" and results["cat"]:
            # ratio per round, to that round's cat
            ratios = [r["mbs"] / c["mbs"] for r, c in zip(rs, results["cat"])]
            line += f" vs_cat_med={statistics.median(ratios):.2f} [{min(ratios):.2f}-{max(ratios):.2f}]"
        print(line)


main()
