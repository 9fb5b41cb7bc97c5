//! Hung instances (docs/health.md): how long from the last sign of life to the replacement
//! running — for a `watchdog` and for an HTTP `[health]` check — and what 200 instances with
//! watchdogs cost clusterd when nothing goes wrong.

use super::*;

/// The first instance pings (`WATCHDOG=1`) every 100 ms until `go`
/// exists, stamps its last ping, and falls silent.
const SILENT_PY: &str = r#"
import os, socket, time
here = os.path.dirname(os.path.abspath(__file__))
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.connect(os.environ["NOTIFY_SOCKET"])
s.send(b"READY=1")
s.send(b"WATCHDOG=1")
last = time.time_ns()
first = not os.path.exists(os.path.join(here, "silent"))
if first:
    open(os.path.join(here, "ready"), "w").close()
while True:
    if first and os.path.exists(os.path.join(here, "go")):
        with open(os.path.join(here, "silent.tmp"), "w") as f:
            f.write(str(last))
        os.rename(os.path.join(here, "silent.tmp"), os.path.join(here, "silent"))
        first = False
        while True:
            time.sleep(1)
    s.send(b"WATCHDOG=1")
    last = time.time_ns()
    time.sleep(0.1)
"#;

/// Every instance serves `/` on `PORT`: 200, or 500 once `go` exists (for an instance started
/// before it).
const FAILING_HTTP_PY: &str = r#"
import http.server, os, time
here = os.path.dirname(os.path.abspath(__file__))
first = not os.path.exists(os.path.join(here, "go"))
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        sick = first and os.path.exists(os.path.join(here, "go"))
        self.send_response(500 if sick else 200)
        self.end_headers()
    def log_message(self, *a):
        pass
server = http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), H)
server.serve_forever()
"#;

/// A minimal sd_notify pinger: READY=1, then WATCHDOG=1 every 5 s.
const PINGER_C: &str = r#"
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
int main(void) {
    const char *path = getenv("NOTIFY_SOCKET");
    if (!path) return 1;
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    strncpy(a.sun_path, path, sizeof a.sun_path - 1);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) return 1;
    send(fd, "READY=1", 7, 0);
    for (;;) {
        send(fd, "WATCHDOG=1", 10, 0);
        sleep(5);
    }
}
"#;

/// The time stamp of start number `n` (from 0).
fn nth_start(starts: &Path, n: usize) -> Result<i64, String> {
    fs::read_to_string(starts)
        .map_err(|e| e.to_string())?
        .lines()
        .nth(n)
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("no start number {n}"))
}

/// Writes `unit` (whose `"python3", APP` runs `script`, each start stamped) and `script`
/// into a fresh directory and starts clusterd on it; waits for the first start stamp.
fn start_one(env: &Env, name: &str, script: &str, unit: &str) -> Result<(PathBuf, Daemon), String> {
    let dir = env.tmp.join(name);
    let _ = fs::remove_dir_all(&dir);
    let units = dir.join("units");
    fs::create_dir_all(&units).map_err(|e| e.to_string())?;
    let path = dir.join("app.py");
    fs::write(&path, script).map_err(|e| e.to_string())?;
    // Each start is stamped by a shell before the interpreter starts: what is measured is
    // clusterd's reaction, not how long Python takes to boot on a loaded machine.
    let stamp = format!(
        "\"sh\", \"-c\", \"echo $$ $(date +%s%N) >> {}/starts; exec python3 {}\"",
        dir.display(),
        path.display()
    );
    let unit = unit.replace("\"python3\", APP", &stamp);
    fs::write(units.join("h.toml"), unit).map_err(|e| e.to_string())?;
    let socket = dir.join("clusterd.sock");
    let daemon = launch_clusterd(env, &units, &socket, &dir)?;
    let starts = dir.join("starts");
    if !wait_for(Duration::from_secs(10), Duration::from_millis(5), || {
        fs::read_to_string(&starts).is_ok_and(|t| t.lines().count() == 1)
    }) {
        return Err("the instance did not start".into());
    }
    Ok((dir, daemon))
}

/// Milliseconds from the last `WATCHDOG=1` to the replacement's start (`watchdog = "1s"`).
pub(super) fn watchdog_reaction(env: &Env, run: usize) -> Result<f64, String> {
    let unit = "command = [\"python3\", APP]\nready = \"notify\"\nwatchdog = \"1s\"\nrestart_limit = { burst = 100, interval = \"1m\" }\n";
    let (dir, _daemon) = start_one(env, &format!("watchdog-{run}"), SILENT_PY, unit)?;
    if !wait_for(Duration::from_secs(10), Duration::from_millis(5), || {
        dir.join("ready").exists()
    }) {
        return Err("the instance did not get ready".into());
    }
    sleep(Duration::from_millis(300));
    fs::write(dir.join("go"), "").map_err(|e| e.to_string())?;
    let starts = dir.join("starts");
    if !wait_for(Duration::from_secs(15), Duration::from_millis(5), || {
        fs::read_to_string(&starts).is_ok_and(|t| t.lines().count() >= 2)
            && dir.join("silent").exists()
    }) {
        return Err("no replacement within 15 s".into());
    }
    let silent: i64 = fs::read_to_string(dir.join("silent"))
        .map_err(|e| e.to_string())?
        .trim()
        .parse()
        .map_err(|e| format!("silent: {e}"))?;
    Ok((nth_start(&starts, 1)? - silent) as f64 / 1e6)
}

/// Milliseconds from the first failing answer being due (`go`) to the replacement's start,
/// with `interval = "1s"` and `failures = 1`.
pub(super) fn http_check_reaction(env: &Env, run: usize) -> Result<f64, String> {
    let port = free_port();
    let unit = format!(
        "command = [\"python3\", APP]\nenvironment = {{ PORT = {port} }}\nrestart_limit = {{ burst = 100, interval = \"1m\" }}\n[health]\nhttp = \"http://127.0.0.1:{{port}}/\"\ninterval = \"1s\"\ntimeout = \"1s\"\nfailures = 1\n"
    );
    let (dir, _daemon) = start_one(env, &format!("httpcheck-{run}"), FAILING_HTTP_PY, &unit)?;
    // A check has passed (a slow start may have been replaced already: counted from here).
    let socket = dir.join("clusterd.sock");
    let healthy = || {
        status_json(env, &socket)
            .is_some_and(|v| v["units"][0]["instances"][0]["health"]["state"] == "ok")
    };
    if !wait_for(Duration::from_secs(20), Duration::from_millis(20), healthy) {
        return Err("the instance never passed its check".into());
    }
    let starts = dir.join("starts");
    let before = fs::read_to_string(&starts)
        .map_err(|e| e.to_string())?
        .lines()
        .count();
    let go = realtime_ns();
    fs::write(dir.join("go"), "").map_err(|e| e.to_string())?;
    if !wait_for(Duration::from_secs(15), Duration::from_millis(5), || {
        fs::read_to_string(&starts).is_ok_and(|t| t.lines().count() > before)
    }) {
        return Err("no replacement within 15 s".into());
    }
    Ok((nth_start(&starts, before)? - go) as f64 / 1e6)
}

/// Instances of the idle watchdog row.
const IDLE_INSTANCES: usize = 200;

/// clusterd's context switches (all threads) per 30 s with 200 instances of a unit with
/// `watchdog = "10s"` that ping every 5 s (1200 pings per 30 s), and the same instances
/// without a watchdog for comparison: (with, without).
pub(super) fn watchdog_idle(
    env: &Env,
    opts: &Opts,
    run: usize,
    r: &mut Results,
) -> Result<(), String> {
    let dir = env.tmp.join(format!("watchdog-idle-{run}"));
    let _ = fs::remove_dir_all(&dir);
    let units = dir.join("units");
    fs::create_dir_all(&units).map_err(|e| e.to_string())?;
    let src = dir.join("pinger.c");
    let bin = dir.join("pinger");
    fs::write(&src, PINGER_C).map_err(|e| e.to_string())?;
    let built = Command::new("gcc")
        .args(["-O2", "-o"])
        .arg(&bin)
        .arg(&src)
        .status()
        .is_ok_and(|s| s.success());
    if !built {
        return Err("gcc could not build the pinger".into());
    }
    let secs = if opts.quick { 3 } else { 10 };
    let scale = 30.0 / secs as f64;
    for (key, watchdog) in [
        (
            "watchdog_idle_csw",
            "watchdog = \"10s\"\nready = \"notify\"\n",
        ),
        ("watchdog_off_idle_csw", "ready = \"notify\"\n"),
    ] {
        fs::write(
            units.join("w.toml"),
            format!(
                "command = [{:?}]\ninstances = {IDLE_INSTANCES}\n{watchdog}",
                bin.display().to_string()
            ),
        )
        .map_err(|e| e.to_string())?;
        let socket = dir.join("clusterd.sock");
        let daemon = launch_clusterd(env, &units, &socket, &dir)?;
        let running =
            || status_json(env, &socket).is_some_and(|v| v["units"][0]["state"] == "running");
        if !wait_for(Duration::from_secs(30), Duration::from_millis(50), running) {
            return Err(format!("{IDLE_INSTANCES} instances did not get ready"));
        }
        sleep(Duration::from_secs(1));
        let gone = || "clusterd disappeared".to_string();
        let (csw0, _) = thread_counters(daemon.pid).ok_or_else(gone)?;
        sleep(Duration::from_secs(secs));
        let (csw1, _) = thread_counters(daemon.pid).ok_or_else(gone)?;
        r.add(key, Peer::Clusterd, (csw1 - csw0).max(0.0) * scale);
        drop(daemon);
        sweep_descendants();
    }
    Ok(())
}
