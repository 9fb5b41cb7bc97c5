//! Hung instances: `watchdog` (WATCHDOG=1 on NOTIFY_SOCKET, `{"act":"watchdog"}` on the
//! channel, WATCHDOG=trigger) and `[health]` checks (a command, an HTTP GET) replace an
//! instance that runs but no longer works — its replacement ready first — within the restart
//! budget; status, events and metrics say why. Hostile cases: pings from another instance
//! or from outside, floods of WATCHDOG=1, check targets that stall or never stop answering.

use crate::common;
use common::*;

use std::fs;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Appends `line` to `DIR/events.log`; pings as its arguments say. argv: DIR MODE where MODE
/// is `notify` (WATCHDOG=1 on NOTIFY_SOCKET) or `channel` (`{"act":"watchdog"}`). The first
/// process (it creates DIR/first) pings for 1.5 s then stops (hung); later ones ping for
/// ever. Each logs `env PID WATCHDOG_USEC WATCHDOG_PID`, `ready PID` (just before READY=1),
/// and `term PID` on SIGTERM (then exits).
const PINGER_PY: &str = r#"
import os, signal, socket, sys, time
d, mode = sys.argv[1], sys.argv[2]
pid = os.getpid()
def log(line):
    with open(os.path.join(d, "events.log"), "a") as f:
        f.write(line + "\n")
def term(*_):
    log("term %d" % pid)
    sys.exit(0)
signal.signal(signal.SIGTERM, term)
try:
    os.close(os.open(os.path.join(d, "first"), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    first = True
except FileExistsError:
    first = False
log("env %d %s %s" % (pid, os.environ.get("WATCHDOG_USEC"), os.environ.get("WATCHDOG_PID")))
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.connect(os.environ["NOTIFY_SOCKET"])
# Logged before it is sent: clusterd may stop the old one as soon as it arrives.
log("ready %d" % pid)
s.send(b"READY=1")
channel = int(os.environ["CLUSTERD_CHANNEL_FD"])
start = time.time()
while True:
    if not first or time.time() - start < 1.5:
        if mode == "notify":
            s.send(b"WATCHDOG=1")
        else:
            os.write(channel, b'{"act":"watchdog"}\n')
    time.sleep(0.2)
"#;

fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("clusterd-health-")
        .tempdir()
        .expect("scratch dir")
}

fn python() -> bool {
    available("python3", runs("python3", &["--version"]))
}

fn events(dir: &std::path::Path) -> Vec<String> {
    fs::read_to_string(dir.join("events.log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn position(lines: &[String], line: &str) -> Option<usize> {
    lines.iter().position(|l| l == line)
}

/// The unit's events (`status UNIT`), as text.
fn unit_events(d: &Daemon, unit: &str) -> String {
    let out = d.ctl(&["status", unit, "--json"]);
    let status: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    status["units"][0]["events"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .filter_map(|e| e["text"].as_str().map(str::to_string))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

fn instance(unit: &Value, index: u64) -> Value {
    unit["instances"]
        .as_array()
        .and_then(|list| {
            list.iter()
                .find(|i| i["index"] == index && !i["draining"].as_bool().unwrap_or(false))
                .cloned()
        })
        .unwrap_or(Value::Null)
}

/// A program that stops pinging is replaced: its replacement is ready before it gets
/// SIGTERM; systemd's variables are set; the unit counts one health replacement.
fn stops_pinging_and_is_replaced(mode: &str) {
    if !python() {
        return;
    }
    let dir = scratch();
    let script = dir.path().join("pinger.py");
    fs::write(&script, PINGER_PY).unwrap();
    let unit = format!(
        "command = [\"python3\", \"{}\", \"{}\", \"{mode}\"]\nready = \"notify\"\nwatchdog = \"1s\"\n",
        script.display(),
        dir.path().display()
    );
    let d = Daemon::start(&[("web", &unit)]);
    let first = d.wait_running("web", 1)[0];
    let state = d.unit("web")["instances"][0]["health"]["state"].clone();
    assert!(state == "unknown" || state == "ok", "{state}");
    wait_for("the first process to be replaced", PATIENCE, || {
        d.pids("web").first().is_some_and(|&p| p != first)
            && position(&events(dir.path()), &format!("term {first}")).is_some()
    });
    let second = d.pids("web")[0];
    let lines = events(dir.path());
    let ready = position(&lines, &format!("ready {second}")).expect("replacement ready");
    let term = position(&lines, &format!("term {first}")).expect("old one stopped");
    assert!(
        ready < term,
        "the replacement was ready before the hung one was stopped: {lines:?}"
    );
    assert!(
        lines.contains(&format!("env {first} 1000000 {first}")),
        "WATCHDOG_USEC and WATCHDOG_PID as systemd sets them: {lines:?}"
    );
    // The replacement keeps pinging: it stays, and its health is ok.
    wait_for("the replacement to be healthy", PATIENCE, || {
        d.unit("web")["instances"][0]["health"]["state"] == "ok"
    });
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(d.pids("web"), vec![second], "{}", d.log());
    let unit = d.unit("web");
    assert_eq!(unit["health_replacements"], 1, "{unit}");
    let events = unit_events(&d, "web");
    assert!(
        events.contains("no sign of life") && events.contains("starting its replacement"),
        "{events}"
    );
}

#[test]
fn a_program_that_stops_sending_watchdog_1_is_replaced_after_its_replacement_is_ready() {
    stops_pinging_and_is_replaced("notify");
}

#[test]
fn a_program_that_stops_sending_act_watchdog_on_its_channel_is_replaced() {
    stops_pinging_and_is_replaced("channel");
}

/// Pings for ever and ignores SIGTERM (a stopped process would not see it anyway).
const STUBBORN_PINGER_PY: &str = r#"
import os, signal, socket, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.connect(os.environ["NOTIFY_SOCKET"])
s.send(b"READY=1")
while True:
    s.send(b"WATCHDOG=1")
    time.sleep(0.1)
"#;

#[test]
fn a_sigstopped_instance_with_a_watchdog_is_replaced_and_finally_sigkilled() {
    if !python() {
        return;
    }
    let unit = format!(
        "command = [\"python3\", \"-c\", {:?}]\nready = \"notify\"\nwatchdog = \"1s\"\nkill_timeout = \"1s\"\n",
        STUBBORN_PINGER_PY
    );
    let d = Daemon::start(&[("web", &unit)]);
    let first = d.wait_running("web", 1)[0];
    send_signal(first, libc::SIGSTOP);
    wait_for("a replacement to run", PATIENCE, || {
        d.pids("web").first().is_some_and(|&p| p != first)
    });
    wait_for("the stopped one to be gone", PATIENCE, || !alive(first));
    let events = unit_events(&d, "web");
    assert!(
        events.contains(&format!("pid {first} killed by SIGKILL")),
        "{events}"
    );
    assert!(events.contains("watchdog 1s"), "{events}");
}

#[test]
fn watchdog_trigger_replaces_the_instance_at_once() {
    if !python() {
        return;
    }
    let dir = scratch();
    // The first process says it is hung right after it is ready.
    let script = format!(
        r#"
import os, socket, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.connect(os.environ["NOTIFY_SOCKET"])
s.send(b"READY=1")
try:
    os.close(os.open("{}/first", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    time.sleep(0.3)
    s.send(b"WATCHDOG=trigger")
except FileExistsError:
    pass
while True:
    s.send(b"WATCHDOG=1")
    time.sleep(1)
"#,
        dir.path().display()
    );
    let unit = format!(
        "command = [\"python3\", \"-c\", {script:?}]\nready = \"notify\"\nwatchdog = \"1h\"\n"
    );
    let d = Daemon::start(&[("web", &unit)]);
    let first = d.wait_running("web", 1)[0];
    wait_for("the trigger to replace it", PATIENCE, || {
        d.pids("web").first().is_some_and(|&p| p != first) && !alive(first)
    });
    assert!(unit_events(&d, "web").contains("WATCHDOG=trigger"));
}

/// Hostile: instance 1 floods NOTIFY_SOCKET with WATCHDOG=1 (and a process outside every
/// instance sends it too); instance 0 never pings. Only instance 0 is replaced, and clusterd
/// keeps answering during the flood.
#[test]
fn watchdog_pings_count_only_for_their_sender_and_a_flood_costs_nothing() {
    if !python() {
        return;
    }
    let script = r#"
import os, socket, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.connect(os.environ["NOTIFY_SOCKET"])
s.send(b"READY=1")
if os.environ["CLUSTERD_INSTANCE"] == "1":
    while True:
        try:
            s.send(b"WATCHDOG=1\nMAINPID=1")
        except BlockingIOError:
            pass
while True:
    time.sleep(1)
"#;
    let unit = format!(
        "command = [\"python3\", \"-c\", {script:?}]\ninstances = 2\nready = \"notify\"\nwatchdog = \"1s\"\nrestart_limit = {{ burst = 100, interval = \"60s\" }}\n"
    );
    let d = Daemon::start(&[("web", &unit)]);
    let pids = d.wait_running("web", 2);
    let notify = format!("{}.notify", d.socket.display());
    // Someone outside every instance speaks for everybody.
    let outsider = std::process::Command::new("python3")
        .args([
            "-c",
            "import socket,sys,time\ns=socket.socket(socket.AF_UNIX,socket.SOCK_DGRAM)\ns.connect(sys.argv[1])\nend=time.time()+4\nwhile time.time()<end:\n  s.send(b'WATCHDOG=1')\n  time.sleep(0.01)\n",
            &notify,
        ])
        .spawn()
        .expect("outsider");
    let mut outsider = scopeguard(outsider);
    wait_for("instance 0 to be replaced", PATIENCE, || {
        let unit = d.unit("web");
        instance(&unit, 0)["pid"]
            .as_u64()
            .is_some_and(|p| p as u32 != pids[0])
    });
    // clusterd answers at once while the flood goes on.
    let started = Instant::now();
    let _ = d.status();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(2), "status took {took:?}");
    let unit = d.unit("web");
    assert_eq!(
        instance(&unit, 1)["pid"].as_u64(),
        Some(u64::from(pids[1])),
        "the flooding instance is alive and well: {unit}"
    );
    assert_eq!(instance(&unit, 1)["health"]["state"], "ok", "{unit}");
    let _ = outsider.0.kill();
    let _ = outsider.0.wait();
}

/// Kills and reaps a child when dropped.
struct Guarded(std::process::Child);
impl Drop for Guarded {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
fn scopeguard(child: std::process::Child) -> Guarded {
    Guarded(child)
}

#[test]
fn a_unit_whose_every_instance_hangs_gives_up_after_its_restart_limit() {
    let dir = scratch();
    let alarm = dir.path().join("alarm");
    let unit = format!(
        "command = [\"sh\", \"-c\", \"exec sleep 1000\"]\nwatchdog = \"300ms\"\nkill_timeout = \"500ms\"\nrestart_limit = {{ burst = 2, interval = \"60s\" }}\non_giveup = [\"sh\", \"-c\", \"echo $CLUSTERD_REASON > {}\"]\n",
        alarm.display()
    );
    let d = Daemon::start(&[("web", &unit)]);
    wait_for("the unit to give up", PATIENCE, || {
        d.unit("web")["gave_up"] == true
    });
    wait_for("the alarm", PATIENCE, || alarm.exists());
    wait_for("no instance left", PATIENCE, || d.pids("web").is_empty());
    let unit = d.unit("web");
    assert_eq!(unit["health_replacements"], 2, "{unit}");
}

/// `[health] command`: fails for the instance whose DIR/sick-INDEX exists; logs its
/// environment.
fn health_command(dir: &std::path::Path) -> String {
    format!(
        "[\"sh\", \"-c\", \"echo $CLUSTERD_UNIT $CLUSTERD_INSTANCE $MAINPID >> {d}/checks; test ! -e {d}/sick-$CLUSTERD_INSTANCE\"]",
        d = dir.display()
    )
}

#[test]
fn a_health_command_failing_for_instance_1_replaces_instance_1_only() {
    let dir = scratch();
    let unit = format!(
        "command = [\"sleep\", \"1000\"]\ninstances = 2\n[health]\ncommand = {}\ninterval = \"200ms\"\nfailures = 2\n",
        health_command(dir.path())
    );
    let d = Daemon::start(&[("web", &unit)]);
    let pids = d.wait_running("web", 2);
    wait_for("both healthy", PATIENCE, || {
        let unit = d.unit("web");
        instance(&unit, 0)["health"]["state"] == "ok"
            && instance(&unit, 1)["health"]["state"] == "ok"
    });
    let checks = fs::read_to_string(dir.path().join("checks")).unwrap_or_default();
    assert!(
        checks.contains(&format!("web 0 {}", pids[0]))
            && checks.contains(&format!("web 1 {}", pids[1])),
        "{checks}"
    );
    fs::write(dir.path().join("sick-1"), "").unwrap();
    wait_for("instance 1 to be replaced", PATIENCE, || {
        instance(&d.unit("web"), 1)["pid"]
            .as_u64()
            .is_some_and(|p| p as u32 != pids[1])
    });
    fs::remove_file(dir.path().join("sick-1")).unwrap();
    wait_for("the old instance 1 to be gone", PATIENCE, || {
        !alive(pids[1])
    });
    let unit = d.unit("web");
    assert_eq!(instance(&unit, 0)["pid"].as_u64(), Some(u64::from(pids[0])));
    assert_eq!(unit["health_replacements"], 1, "{unit}");
    let events = unit_events(&d, "web");
    assert!(
        events.contains("health check failed 2 time(s) in a row (check exited with code 1)"),
        "{events}"
    );
}

#[test]
fn a_health_command_that_hangs_is_killed_at_its_timeout_and_never_runs_twice_at_once() {
    let dir = scratch();
    let marker = format!("{}/check-running", dir.path().display());
    // Each check counts itself in, then hangs.
    let unit = format!(
        "command = [\"sleep\", \"1000\"]\n[health]\ncommand = [\"sh\", \"-c\", \"echo x >> {marker}; exec sleep 1000\"]\ninterval = \"50ms\"\ntimeout = \"300ms\"\nfailures = 1000\n"
    );
    let d = Daemon::start(&[("web", &unit)]);
    d.wait_running("web", 1);
    wait_for("three checks to have timed out", PATIENCE, || {
        instance(&d.unit("web"), 0)["health"]["failures"]
            .as_u64()
            .is_some_and(|f| f >= 3)
    });
    let unit = d.unit("web");
    assert_eq!(
        instance(&unit, 0)["health"]["reason"],
        "no answer within 300ms",
        "{unit}"
    );
    // The hung checks were killed: at most one `sleep 1000` besides the instance, among
    // clusterd's children (other tests run `sleep 1000` too).
    let parent = d.pid().to_string();
    let sleepers = fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            fs::read_to_string(e.path().join("stat")).is_ok_and(|stat| {
                stat.rsplit_once(") ")
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                    == Some(parent.as_str())
            })
        })
        .filter_map(|e| fs::read(e.path().join("cmdline")).ok())
        .filter(|c| c == b"sleep\x001000\x00")
        .count();
    assert!(
        sleepers <= 2,
        "{sleepers} sleeps: the hung checks were not killed"
    );
}

/// An HTTP server per instance on port `PORT` followed by the index ("{port}{index}"), ready
/// (READY=1) once it listens; 500 while DIR/sick-INDEX exists.
const HTTP_SERVER_PY: &str = r#"
import http.server, os, sys
d = sys.argv[1]
i = os.environ["CLUSTERD_INSTANCE"]
port = int(os.environ["PORT"] + i)
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        sick = os.path.exists(os.path.join(d, "sick-" + i))
        self.send_response(500 if sick else 200)
        self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *a):
        pass
server = http.server.HTTPServer(("127.0.0.1", port), H)
import socket
n = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
n.connect(os.environ["NOTIFY_SOCKET"])
n.send(b"READY=1")
server.serve_forever()
"#;

/// A base such that base*10 and base*10+1 are both free.
fn port_base() -> u16 {
    for _ in 0..200 {
        let base = 2000 + (free_port() % 4000);
        let free = |p: u16| TcpListener::bind(("127.0.0.1", p)).is_ok();
        if free(base * 10) && free(base * 10 + 1) {
            return base;
        }
    }
    panic!("no pair of free ports");
}

#[test]
fn an_http_check_on_a_per_instance_port_replaces_the_failing_instance() {
    if !python() {
        return;
    }
    let dir = scratch();
    let script = dir.path().join("server.py");
    fs::write(&script, HTTP_SERVER_PY).unwrap();
    let base = port_base();
    let unit = format!(
        "command = [\"python3\", \"{}\", \"{}\"]\ninstances = 2\nready = \"notify\"\nenvironment = {{ PORT = {base} }}\n[health]\nhttp = \"http://127.0.0.1:{{port}}{{index}}/healthz\"\ninterval = \"200ms\"\ntimeout = \"1s\"\nfailures = 2\n",
        script.display(),
        dir.path().display()
    );
    let d = Daemon::start(&[("web", &unit)]);
    let pids = d.wait_running("web", 2);
    wait_for("both healthy", PATIENCE, || {
        let unit = d.unit("web");
        instance(&unit, 0)["health"]["state"] == "ok"
            && instance(&unit, 1)["health"]["state"] == "ok"
    });
    fs::write(dir.path().join("sick-1"), "").unwrap();
    wait_for("instance 1 to be replaced", PATIENCE, || {
        instance(&d.unit("web"), 1)["pid"]
            .as_u64()
            .is_some_and(|p| p as u32 != pids[1])
    });
    fs::remove_file(dir.path().join("sick-1")).unwrap();
    wait_for("the replacement to be healthy", PATIENCE, || {
        instance(&d.unit("web"), 1)["health"]["state"] == "ok"
    });
    let unit = d.unit("web");
    assert_eq!(instance(&unit, 0)["pid"].as_u64(), Some(u64::from(pids[0])));
    assert!(unit_events(&d, "web").contains("HTTP status 500"));
}

/// Hostile check targets: one accepts and never answers, one streams bytes without end and
/// without a newline, one trickles a byte a second. Each check fails by its timeout, clusterd
/// answers at once meanwhile, and its threads do not pile up.
#[test]
fn hostile_http_check_targets_fail_by_their_timeout_and_cost_clusterd_nothing() {
    let stall = TcpListener::bind("127.0.0.1:0").unwrap();
    let flood = TcpListener::bind("127.0.0.1:0").unwrap();
    let trickle = TcpListener::bind("127.0.0.1:0").unwrap();
    let ports = [&stall, &flood, &trickle].map(|l| l.local_addr().unwrap().port());
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut servers = Vec::new();
    for (kind, listener) in [(0, stall), (1, flood), (2, trickle)] {
        let stop = stop.clone();
        listener.set_nonblocking(true).unwrap();
        servers.push(std::thread::spawn(move || {
            let mut held = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok((mut conn, _)) = listener.accept() {
                    let _ = conn.set_nonblocking(false);
                    let _ = conn.set_write_timeout(Some(Duration::from_millis(50)));
                    let mut buf = [0u8; 1024];
                    let _ = conn.set_read_timeout(Some(Duration::from_millis(100)));
                    let _ = conn.read(&mut buf);
                    held.push(conn);
                }
                for conn in &mut held {
                    match kind {
                        1 => {
                            let _ = conn.write(&[b'x'; 65536]);
                        }
                        2 => {
                            let _ = conn.write(b"H");
                        }
                        _ => {}
                    }
                }
                std::thread::sleep(Duration::from_millis(if kind == 2 { 300 } else { 5 }));
            }
        }));
    }
    let units: Vec<(String, String)> = ports
        .iter()
        .enumerate()
        .map(|(i, port)| {
            (
                format!("u{i}"),
                format!(
                    "command = [\"sleep\", \"1000\"]\ninstances = 3\n[health]\nhttp = \"http://127.0.0.1:{port}/\"\ninterval = \"100ms\"\ntimeout = \"500ms\"\nfailures = 1000\n"
                ),
            )
        })
        .collect();
    let refs: Vec<(&str, &str)> = units
        .iter()
        .map(|(n, t)| (n.as_str(), t.as_str()))
        .collect();
    let d = Daemon::start(&refs);
    for (name, _) in &units {
        d.wait_running(name, 3);
    }
    let threads = || -> u64 {
        fs::read_to_string(format!("/proc/{}/status", d.pid()))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("Threads:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    let mut most_threads = 0;
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        let started = Instant::now();
        let _ = d.status();
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "status took {:?}",
            started.elapsed()
        );
        most_threads = most_threads.max(threads());
        std::thread::sleep(Duration::from_millis(100));
    }
    for (name, _) in &units {
        let unit = d.unit(name);
        for i in 0..3 {
            let health = &instance(&unit, i)["health"];
            assert_eq!(health["state"], "failing", "{name}: {unit}");
            assert!(health["failures"].as_u64().unwrap_or(0) >= 2, "{unit}");
        }
    }
    let reasons: Vec<String> = units
        .iter()
        .map(|(n, _)| instance(&d.unit(n), 0)["health"]["reason"].to_string())
        .collect();
    assert!(
        reasons[0].contains("no answer within the timeout"),
        "{reasons:?}"
    );
    assert!(reasons[1].contains("no status line"), "{reasons:?}");
    assert!(
        reasons[2].contains("no answer within the timeout"),
        "{reasons:?}"
    );
    // At most one check in flight per instance: 9 instances, and clusterd's own threads.
    assert!(most_threads <= 9 + 16, "{most_threads} threads");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for server in servers {
        let _ = server.join();
    }
}

/// An unmodified Node app: `/block` answers, then blocks its event loop for good.
const BLOCKING_NODE_APP: &str = r#"
const http = require('http');
http.createServer((req, res) => {
  res.end(String(process.pid));
  if (req.url === '/block') {
    setTimeout(() => { for (;;) {} }, 50);
  }
}).listen(+process.env.PORT, '127.0.0.1');
"#;

/// One GET of `path`; the pid in the answer.
fn node_get(port: u16, path: &str) -> Result<u32, String> {
    let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = std::net::TcpStream::connect_timeout(&address, Duration::from_secs(5))
        .map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .map_err(|e| e.to_string())?;
    answer
        .split_once("\r\n\r\n")
        .filter(|(head, _)| head.starts_with("HTTP/1.1 200"))
        .and_then(|(_, body)| body.trim().parse().ok())
        .ok_or_else(|| format!("bad answer {answer:?}"))
}

/// Without any change to the app, a Node worker whose event loop is blocked is detected by
/// clusterd's own check on the IPC channel and replaced; under round-robin load every
/// request started after the detection is served, by another worker.
#[test]
fn an_unmodified_node_worker_that_blocks_its_event_loop_is_replaced_under_round_robin_load() {
    if !available("node", runs("node", &["--version"])) {
        return;
    }
    let dir = scratch();
    let script = dir.path().join("app.js");
    fs::write(&script, BLOCKING_NODE_APP).unwrap();
    let port = free_port();
    let unit = format!(
        "command = [\"node\", \"{}\"]\ninstances = 2\nnode_cluster = \"round-robin\"\nwatchdog = \"1s\"\nkill_timeout = \"1s\"\nenvironment = {{ PORT = \"{port}\" }}\n",
        script.display()
    );
    let d = Daemon::start(&[("web", &unit)]);
    d.wait_running("web", 2);
    wait_for("both workers' event loops to answer", PATIENCE, || {
        let unit = d.unit("web");
        instance(&unit, 0)["health"]["state"] == "ok"
            && instance(&unit, 1)["health"]["state"] == "ok"
    });
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    let load = std::thread::spawn(move || {
        let mut results = Vec::new();
        let end = Instant::now() + Duration::from_secs(60);
        while !flag.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < end {
            let started = Instant::now();
            results.push((started, node_get(port, "/")));
            std::thread::sleep(Duration::from_millis(5));
        }
        results
    });
    std::thread::sleep(Duration::from_millis(300));
    let blocked = node_get(port, "/block").expect("the block request is answered");
    let mut detected = Instant::now();
    wait_for("the blocked worker to be found hung", PATIENCE, || {
        detected = Instant::now();
        d.unit("web")["health_replacements"] == 1
    });
    wait_for("the blocked worker to be gone", PATIENCE, || {
        !alive(blocked)
    });
    std::thread::sleep(Duration::from_millis(1000));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let results = load.join().expect("load thread");
    // A request the worker had taken before it blocked dies with it (reset when it is
    // killed); one it was handed but never took goes to another worker.
    let failed: Vec<_> = results.iter().filter(|(_, r)| r.is_err()).collect();
    assert!(
        failed.len() <= 2 && failed.iter().all(|(at, _)| *at < detected),
        "requests failed: {failed:?}"
    );
    let after: Vec<_> = results.iter().filter(|(at, _)| *at > detected).collect();
    assert!(
        after.len() > 10,
        "{} requests after the detection",
        after.len()
    );
    assert!(
        after
            .iter()
            .all(|(_, r)| r.as_ref().is_ok_and(|&p| p != blocked)),
        "a request after the detection went to the blocked worker"
    );
    assert!(
        unit_events(&d, "web").contains("no sign of life"),
        "{}",
        unit_events(&d, "web")
    );
    d.wait_running("web", 2);
}

/// Context switches of every thread of `pid` so far.
fn context_switches(pid: u32) -> u64 {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(|t| t.ok())
        .filter_map(|t| fs::read_to_string(t.path().join("status")).ok())
        .flat_map(|status| {
            status
                .lines()
                .filter(|l| l.contains("ctxt_switches:"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .collect::<Vec<_>>()
        })
        .sum()
}

/// Health checking costs nothing where no unit uses it: no timer, no thread, no wake-up.
#[test]
fn units_without_watchdog_or_health_leave_clusterd_asleep() {
    let d = Daemon::start(&[("web", "command = [\"sleep\", \"1000\"]\ninstances = 3\n")]);
    d.wait_running("web", 3);
    std::thread::sleep(Duration::from_millis(500));
    let before = context_switches(d.pid());
    std::thread::sleep(Duration::from_secs(5));
    let woke = context_switches(d.pid()) - before;
    // 0 is what it should be; a little room for the kernel's own doings.
    assert!(woke <= 2, "clusterd woke up {woke} times in 5 s of idling");
}

/// `process.send({act: 'watchdog'})` from an unmodified Node runtime (not a `node_cluster`
/// unit, so clusterd does not check its event loop itself): the first process pings for
/// 1.5 s, then stops and is replaced; later ones ping for ever.
#[test]
fn a_node_program_that_stops_calling_process_send_watchdog_is_replaced() {
    if !available("node", runs("node", &["--version"])) {
        return;
    }
    let dir = scratch();
    let script = format!(
        r#"
const fs = require('fs');
let first = true;
try {{ fs.closeSync(fs.openSync('{}/first', 'wx')); }} catch (e) {{ first = false; }}
const start = Date.now();
setInterval(() => {{
  if (!first || Date.now() - start < 1500) process.send({{act: 'watchdog'}});
}}, 200);
"#,
        dir.path().display()
    );
    // 3 s: the replacement's first ping comes once Node has started, which on a loaded
    // machine (the whole suite beside it) has taken more than a second.
    let unit = format!("command = [\"node\", \"-e\", {script:?}]\nwatchdog = \"3s\"\n");
    let d = Daemon::start(&[("web", &unit)]);
    let first = d.wait_running("web", 1)[0];
    wait_for("the silent one to be replaced", PATIENCE, || {
        d.pids("web").first().is_some_and(|&p| p != first) && !alive(first)
    });
    let second = d.pids("web")[0];
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(d.pids("web"), vec![second], "the pinging one stays");
}
