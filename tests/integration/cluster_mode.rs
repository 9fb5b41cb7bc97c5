//! Cluster mode: units that `listen`, sharing one port among instances, readiness, rolling
//! reloads and scaling — with a real Python HTTP server on loopback.

use crate::common;

use std::collections::BTreeMap;
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::time::Duration;

use common::http_load::{get, Load};
use common::*;
use serde_json::Value;

/// A small HTTP server for the socket clusterd passes as fd 3. It polls the (shared,
/// non-blocking) socket so that SIGTERM can end it between requests: a graceful stop never
/// drops an accepted connection. It records what it received in $OUT/<pid>.json, and says
/// it is ready on the worker channel unless $OUT/not-ready exists.
const SERVER: &str = r#"
import json, os, select, signal, socket
listener = socket.socket(fileno=3)
listener.setblocking(False)
wake_r, wake_w = os.pipe()
os.set_blocking(wake_w, False)
signal.set_wakeup_fd(wake_w)
signal.signal(signal.SIGTERM, lambda *a: None)
pid = os.getpid()
out = os.environ["OUT"]
with open(os.path.join(out, "%d.json" % pid), "w") as f:
    json.dump({"pid": pid, "listen_pid": os.environ.get("LISTEN_PID"),
               "listen_fds": os.environ.get("LISTEN_FDS"),
               "listen_fdnames": os.environ.get("LISTEN_FDNAMES"),
               "inode": os.fstat(3).st_ino, "instance": os.environ.get("CLUSTERD_INSTANCE")}, f)
if not os.path.exists(os.path.join(out, "not-ready")):
    os.write(int(os.environ["CLUSTERD_CHANNEL_FD"]), b'{"act":"ready"}\n')
body = ("%d\n" % pid).encode()
while True:
    readable, _, _ = select.select([listener, wake_r], [], [])
    if wake_r in readable:
        break
    try:
        conn, _ = listener.accept()
    except BlockingIOError:
        continue
    conn.setblocking(True)
    conn.settimeout(5)
    try:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(4096)
            if not chunk:
                break
            data += chunk
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
    except OSError:
        pass
    finally:
        conn.close()
"#;

/// A web unit of `instances` servers on `port`, with extra TOML lines.
fn web_unit(dir: &Path, port: u16, instances: u32, extra: &str) -> String {
    std::fs::write(dir.join("server.py"), SERVER).expect("write server");
    std::fs::create_dir_all(dir.join("out")).expect("out dir");
    format!(
        "command = [\"python3\", \"{server}\"]\ninstances = {instances}\nlisten = [\"tcp://127.0.0.1:{port}\"]\nready = \"notify\"\nkill_timeout = \"5s\"\nenvironment = {{ OUT = \"{out}\" }}\n{extra}\n",
        server = toml_path(&dir.join("server.py")),
        out = toml_path(&dir.join("out")),
    )
}

fn start_web(port: u16, instances: u32, extra: &str) -> Daemon {
    let daemon = Daemon::start(&[]);
    let text = web_unit(daemon.dir.path(), port, instances, extra);
    daemon.write_unit("web", &text);
    let out = daemon.ctl(&["daemon-reload"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    daemon
}

fn instance_record(daemon: &Daemon, pid: u32) -> Value {
    let path = daemon.path("out").join(format!("{pid}.json"));
    let mut text = String::new();
    wait_for("the instance to record its environment", PATIENCE, || {
        text = std::fs::read_to_string(&path).unwrap_or_default();
        serde_json::from_str::<Value>(&text).is_ok()
    });
    serde_json::from_str(&text).expect("record")
}

#[test]
fn two_instances_share_one_port_and_both_answer() {
    let port = free_port();
    let daemon = start_web(port, 2, "");
    let pids = daemon.wait_running("web", 2);
    let mut answered = BTreeMap::new();
    wait_for("both instances to answer", PATIENCE, || {
        if let Ok(pid) = get(port) {
            *answered.entry(pid).or_insert(0) += 1;
        }
        answered.len() == 2
    });
    for pid in &pids {
        assert!(
            answered.contains_key(pid),
            "{pid} never answered: {answered:?}"
        );
        let record = instance_record(&daemon, *pid);
        // The socket-activation protocol: LISTEN_PID is the instance's own pid.
        assert_eq!(record["listen_pid"], pid.to_string());
        assert_eq!(record["listen_fds"], "1");
        assert_eq!(record["listen_fdnames"], format!("tcp-127.0.0.1-{port}"));
    }
    // One shared socket: every instance holds the same one.
    let inodes: Vec<Value> = pids
        .iter()
        .map(|pid| instance_record(&daemon, *pid)["inode"].clone())
        .collect();
    assert_eq!(inodes[0], inodes[1]);
}

#[test]
fn two_consecutive_reloads_under_load_fail_no_request() {
    let port = free_port();
    let daemon = start_web(port, 2, "");
    let before = daemon.wait_running("web", 2);
    let load = Load::start(port, Duration::from_secs(60));
    wait_for("the load to get answers", PATIENCE, || get(port).is_ok());
    for _ in 0..2 {
        let out = daemon.ctl(&["reload", "web"]);
        assert!(
            out.status.success(),
            "reload failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let report = load.finish();
    report.assert_every_request_served();
    let after = daemon.wait_running("web", 2);
    assert!(
        after.iter().all(|pid| !before.contains(pid)),
        "{before:?} {after:?}"
    );
    for pid in before {
        wait_for("old instances to be gone", PATIENCE, || !alive(pid));
    }
}

#[test]
fn a_changed_unit_applied_by_daemon_reload_under_load_fails_no_request() {
    let port = free_port();
    let daemon = start_web(port, 2, "");
    let before = daemon.wait_running("web", 2);
    let load = Load::start(port, Duration::from_secs(60));
    wait_for("the load to get answers", PATIENCE, || get(port).is_ok());
    // A new configuration (one more variable), same sockets: replaced one by one.
    let text = web_unit(daemon.dir.path(), port, 2, "") + "description = \"v2\"\n";
    daemon.write_unit("web", &text);
    let out = daemon.ctl(&["daemon-reload"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("reloaded web"));
    wait_for("every instance to be replaced", PATIENCE, || {
        let now = daemon.pids("web");
        now.len() == 2
            && now.iter().all(|p| !before.contains(p))
            && before.iter().all(|p| !alive(*p))
    });
    let report = load.finish();
    report.assert_every_request_served();
    assert_eq!(daemon.unit("web")["description"], "v2");
}

#[test]
fn sigkill_of_every_instance_under_load_refuses_no_connection() {
    let port = free_port();
    let daemon = start_web(port, 2, "");
    daemon.wait_running("web", 2);
    let load = Load::start(port, Duration::from_secs(60));
    for _ in 0..3 {
        let pids = daemon.wait_running("web", 2);
        for pid in &pids {
            send_signal(*pid, libc::SIGKILL);
        }
        wait_for("replacements", PATIENCE, || {
            let now = daemon.pids("web");
            now.len() == 2 && now.iter().all(|p| !pids.contains(p))
        });
    }
    daemon.wait_running("web", 2);
    let report = load.finish();
    // Connections that a killed instance had accepted are reset; none is ever refused,
    // because clusterd keeps the listening socket open while no instance runs.
    assert_eq!(report.refused, 0, "{report:?}");
    assert!(report.ok > 0, "{report:?}");
}

#[test]
fn reuseport_gives_each_instance_its_own_socket_kept_across_restarts() {
    let port = free_port();
    let daemon = start_web(port, 2, "balance = \"reuseport\"");
    let pids = daemon.wait_running("web", 2);
    let first = instance_record(&daemon, pids[0]);
    let second = instance_record(&daemon, pids[1]);
    assert_ne!(first["inode"], second["inode"], "instances share a socket");

    let mut answered = BTreeMap::new();
    wait_for("both instances to answer", PATIENCE, || {
        if let Ok(pid) = get(port) {
            *answered.entry(pid).or_insert(0) += 1;
        }
        answered.len() == 2
    });

    // Instance 0 crashes: its replacement gets the same socket.
    send_signal(pids[0], libc::SIGKILL);
    let mut replacement = 0;
    wait_for("instance 0 to be replaced", PATIENCE, || {
        let unit = daemon.unit("web");
        replacement = unit["instances"][0]["pid"].as_u64().unwrap_or(0) as u32;
        replacement != 0 && replacement != pids[0] && unit["instances"][0]["state"] == "running"
    });
    assert_eq!(
        instance_record(&daemon, replacement)["inode"],
        first["inode"]
    );
}

#[test]
fn scale_from_2_to_4_to_1() {
    let port = free_port();
    let daemon = start_web(port, 2, "");
    let two = daemon.wait_running("web", 2);
    let out = daemon.ctl(&["scale", "web", "+2"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // `scale` answers once the new instances are ready.
    assert_eq!(daemon.pids("web").len(), 4);
    let four = daemon.wait_running("web", 4);
    assert!(
        two.iter().all(|p| four.contains(p)),
        "scaling up replaced instances"
    );

    let out = daemon.ctl(&["scale", "web", "1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let one = daemon.wait_running("web", 1);
    assert_eq!(one, vec![two[0]], "index 0 is kept");
    for pid in &four[1..] {
        wait_for("scaled-away instances to stop", PATIENCE, || !alive(*pid));
    }
    assert_eq!(daemon.unit("web")["wanted_instances"], 1);
    assert!(get(port).is_ok());

    let out = daemon.ctl(&["scale", "web", "-5"]);
    assert!(out.status.success());
    assert_eq!(daemon.unit("web")["wanted_instances"], 0);
}

#[test]
fn a_notify_instance_is_ready_only_once_it_says_so() {
    let dir = tempfile::tempdir().expect("dir");
    let gate = dir.path().join("go");
    let unit = format!(
        "command = [\"sh\", \"-c\", \"while [ ! -e '{gate}' ]; do sleep 0.05; done; exec python3 -c 'import os, socket, time; s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); s.sendto(b\\\"READY=1\\\\nSTATUS=warm\\\", os.environ[\\\"NOTIFY_SOCKET\\\"]); time.sleep(300)'\"]\nready = \"notify\"\n",
        gate = gate.display()
    );
    let daemon = Daemon::start(&[("slow", &unit)]);
    wait_for("the instance to start", PATIENCE, || {
        daemon.unit("slow")["instances"][0]["pid"].is_u64()
    });
    // Started, but not ready: it has not said so.
    let unit = daemon.unit("slow");
    assert_eq!(unit["state"], "starting");
    assert_eq!(unit["instances"][0]["state"], "starting");
    std::fs::write(&gate, "").expect("gate");
    daemon.wait_running("slow", 1);
    // Its STATUS= is shown. (A sender that is a member of the instance's process group is
    // accepted too: see systemd_notify_ready_is_understood.)
    assert_eq!(daemon.unit("slow")["instances"][0]["status_text"], "warm");
}

#[test]
fn systemd_notify_ready_is_understood() {
    if !available("systemd-notify", runs("systemd-notify", &["--help"])) {
        return;
    }
    let unit = "command = [\"sh\", \"-c\", \"systemd-notify --ready --status=hello; exec sleep 300\"]\nready = \"notify\"\n";
    // systemd-notify is a child of the instance (sh): accepted as a member of its process
    // group. It waits (BARRIER=1) until clusterd has read the message, so it is still alive
    // when clusterd looks its group up.
    let daemon = Daemon::start(&[("sdn", unit)]);
    daemon.wait_running("sdn", 1);
    assert_eq!(daemon.unit("sdn")["instances"][0]["status_text"], "hello");
}

#[test]
fn a_reload_whose_new_instance_never_gets_ready_fails_and_keeps_the_old_one() {
    let port = free_port();
    let daemon = start_web(port, 1, "ready_timeout = \"1s\"");
    let old = daemon.wait_running("web", 1);
    std::fs::write(daemon.path("out").join("not-ready"), "").expect("flag");
    let out = daemon.ctl(&["reload", "web"]);
    assert_eq!(out.status.code(), Some(1));
    let error = String::from_utf8_lossy(&out.stderr);
    assert!(error.contains("not ready within 1s"), "{error}");
    assert_eq!(daemon.wait_running("web", 1), old);
    // The new instance, stopped when the reload gave up on it, may still be finishing (and
    // accepting from the shared socket) for a moment: ask once only the old one is left.
    wait_for("only the old instance to be left", PATIENCE, || {
        daemon.unit("web")["instances"]
            .as_array()
            .is_some_and(|list| list.len() == 1)
    });
    assert_eq!(get(port).expect("still served"), old[0]);
}

#[test]
fn a_port_in_use_fails_that_unit_with_a_clear_error_and_others_run() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let daemon = Daemon::start(&[
        (
            "busy",
            &format!("command = \"sleep 300\"\nlisten = [\"tcp://127.0.0.1:{port}\"]\n"),
        ),
        ("fine", "command = \"sleep 300\"\n"),
    ]);
    daemon.wait_running("fine", 1);
    let busy = daemon.unit("busy");
    assert_eq!(busy["state"], "failed");
    let error = busy["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(&format!("tcp://127.0.0.1:{port}"))
            && error.contains("Address already in use"),
        "{error}"
    );
    drop(taken);
    // Once the port is free, starting the unit by hand works.
    let out = daemon.ctl(&["start", "busy"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_unix_socket_is_created_for_the_unit_and_removed_when_it_stops() {
    let daemon = Daemon::start(&[]);
    let path = daemon.path("app.sock");
    daemon.write_unit(
        "app",
        &format!(
            "command = \"sleep 300\"\ninstances = 2\nlisten = [\"unix:{}\"]\n",
            toml_path(&path)
        ),
    );
    assert!(daemon.ctl(&["daemon-reload"]).status.success());
    daemon.wait_running("app", 2);
    assert!(std::os::unix::net::UnixStream::connect(&path).is_ok());
    assert!(daemon.ctl(&["stop", "app"]).status.success());
    assert!(!path.exists(), "socket file left behind");
}

/// Reports the options of the listening socket it got as fd 3, and of a connection it
/// accepts from it, as one line of JSON to each client.
const SOCKET_OPTIONS: &str = r#"
import json, socket
listener = socket.socket(fileno=3)
def options(s):
    return {"nodelay": s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0,
            "keepalive": s.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) != 0,
            "rcvbuf": s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)}
while True:
    conn, _ = listener.accept()
    conn.sendall((json.dumps({"listener": options(listener), "accepted": options(conn)}) + "\n").encode())
    conn.close()
"#;

fn socket_options(port: u16, extra: &str) -> Value {
    let daemon = Daemon::start(&[]);
    std::fs::write(daemon.path("options.py"), SOCKET_OPTIONS).expect("write script");
    daemon.write_unit(
        "web",
        &format!(
            "command = [\"python3\", \"{}\"]\nlisten = [\"tcp://127.0.0.1:{port}\"]\n{extra}",
            toml_path(&daemon.path("options.py"))
        ),
    );
    let out = daemon.ctl(&["daemon-reload"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut answer = String::new();
    wait_for("the instance to answer", PATIENCE, || {
        answer.clear();
        TcpStream::connect(("127.0.0.1", port))
            .and_then(|mut stream| stream.read_to_string(&mut answer))
            .is_ok_and(|n| n > 0)
    });
    serde_json::from_str(&answer).expect("options JSON")
}

#[test]
fn listen_sockets_have_nodelay_by_default_and_the_options_a_unit_asks_for() {
    // Default: TCP_NODELAY, inherited by every accepted connection (asyncio servers such as
    // uvicorn set it only on sockets they created themselves).
    let options = socket_options(free_port(), "");
    assert_eq!(options["listener"]["nodelay"], true, "{options}");
    assert_eq!(options["accepted"]["nodelay"], true, "{options}");
    assert_eq!(options["accepted"]["keepalive"], false, "{options}");

    let options = socket_options(
        free_port(),
        "listen_options = { nodelay = false, keepalive = true, receive_buffer = \"256KiB\", backlog = 16, defer_accept = \"0s\" }\n",
    );
    assert_eq!(options["listener"]["nodelay"], false, "{options}");
    assert_eq!(options["accepted"]["nodelay"], false, "{options}");
    assert_eq!(options["accepted"]["keepalive"], true, "{options}");
    // The kernel doubles the size it is given (for its bookkeeping), capped by rmem_max.
    let rmem_max: u64 = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(u64::MAX);
    assert_eq!(
        options["listener"]["rcvbuf"].as_u64(),
        Some(2 * rmem_max.min(256 << 10)),
        "{options}"
    );
}

#[test]
fn a_unit_that_gave_up_refuses_connections_until_it_is_started_again() {
    let port = free_port();
    let crashing = format!(
        "command = [\"sh\", \"-c\", \"exit 1\"]\nlisten = [\"tcp://127.0.0.1:{port}\"]\nrestart_limit = {{ burst = 2, interval = \"1m\" }}\n"
    );
    let daemon = Daemon::start(&[("web", &crashing)]);
    wait_for("web to give up", PATIENCE, || {
        daemon.unit("web")["gave_up"] == true
    });
    // Nobody accepts: refused at once, rather than left waiting in a backlog.
    wait_for("connections to be refused", PATIENCE, || {
        TcpStream::connect(("127.0.0.1", port))
            .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused)
    });
    let events = daemon.ctl(&["status", "web"]);
    assert!(
        String::from_utf8_lossy(&events.stdout).contains("closed its listening sockets"),
        "{}",
        String::from_utf8_lossy(&events.stdout)
    );
    // Fixed and started again (daemon-reload restarts a unit that gave up): the sockets are
    // bound again, and stay bound while an instance runs.
    daemon.write_unit(
        "web",
        &crashing.replace("[\"sh\", \"-c\", \"exit 1\"]", "[\"sleep\", \"100\"]"),
    );
    let out = daemon.ctl(&["daemon-reload"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    daemon.wait_running("web", 1);
    assert!(TcpStream::connect(("127.0.0.1", port)).is_ok());
}

/// `ready_after`: a server that never says it is ready (uvicorn) still gets a rolling reload
/// that waits for each new instance, instead of replacing every instance within a moment.
#[test]
fn ready_after_makes_a_rolling_reload_wait_for_each_new_instance() {
    let daemon = Daemon::start(&[(
        "web",
        "command = \"sleep 300\"\ninstances = 2\nready_after = \"1s\"\n",
    )]);
    let before = daemon.wait_running("web", 2);
    let started = std::time::Instant::now();
    let out = daemon.ctl(&["reload", "web"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // One instance after the other, each after a second of running.
    assert!(
        started.elapsed() >= Duration::from_millis(1900),
        "the reload took {:?}",
        started.elapsed()
    );
    let after = daemon.wait_running("web", 2);
    assert!(after.iter().all(|pid| !before.contains(pid)));
}

/// `watch`: a file written under a watched directory (a new subdirectory included) reloads
/// the unit, instance by instance; a change in an ignored directory does not.
#[test]
fn a_change_under_a_watched_directory_reloads_the_unit_and_an_ignored_one_does_not() {
    if !available("node", runs("node", &["--version"])) {
        return;
    }
    let daemon = Daemon::start(&[]);
    let src = daemon.path("src");
    std::fs::create_dir_all(src.join("node_modules")).expect("dirs");
    // A Node app, as PM2's `watch` users run.
    daemon.write_unit(
        "web",
        &format!(
            "command = [\"node\", \"-e\", \"setInterval(() => {{}}, 1000)\"]\ninstances = 2\nwatch = [\"{}\"]\nwatch_delay = \"200ms\"\n",
            toml_path(&src)
        ),
    );
    assert!(daemon.ctl(&["daemon-reload"]).status.success());
    let first = daemon.wait_running("web", 2);
    let reloads = || {
        let out = daemon.ctl(&["status", "web", "--json"]);
        let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        status["units"][0]["events"]
            .as_array()
            .map(|events| {
                events
                    .iter()
                    .filter(|e| e["text"] == "watched files changed; reloading")
                    .count()
            })
            .unwrap_or(0)
    };
    // Ignored: node_modules (a default of watch_ignore): never reported.
    std::fs::write(src.join("node_modules").join("dep.js"), "x").expect("write");
    // Watched: a new directory (a change itself, and watched from then on)...
    std::fs::create_dir(src.join("lib")).expect("mkdir");
    wait_for("the reload for the new directory", PATIENCE, || {
        reloads() == 1
    });
    let second = daemon.wait_running("web", 2);
    assert!(
        second.iter().all(|pid| !first.contains(pid)),
        "{first:?} {second:?}"
    );
    // ...and a file written in it.
    std::fs::write(src.join("lib").join("app.py"), "print(1)").expect("write");
    wait_for("the reload for the file", PATIENCE, || reloads() == 2);
    let log = daemon.log();
    assert!(log.contains("lib/app.py changed"), "{log}");
    assert!(
        !log.contains("dep.js"),
        "an ignored file was reported:\n{log}"
    );
}

/// `cron_restart` (PM2's), on the real clock: every minute, a rolling reload of a Node app.
/// The first one comes at the next minute boundary, so this test waits up to a minute.
#[test]
fn cron_restart_reloads_a_node_app_at_the_next_minute() {
    if !available("node", runs("node", &["--version"])) {
        return;
    }
    let daemon = Daemon::start(&[(
        "web",
        "command = [\"node\", \"-e\", \"setInterval(() => {}, 1000)\"]\ninstances = 2\ncron_restart = \"* * * * *\"\n",
    )]);
    let before = daemon.wait_running("web", 2);
    wait_for("the scheduled reload", Duration::from_secs(90), || {
        let now = daemon.pids("web");
        now.len() == 2 && now.iter().all(|pid| !before.contains(pid))
    });
    let out = daemon.ctl(&["status", "web"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("cron_restart: reloading"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
