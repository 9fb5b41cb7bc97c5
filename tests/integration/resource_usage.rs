//! What an instance uses, in `clusterctl status`: the CPU and memory of the whole instance —
//! children included, exited ones' CPU too — not only of the process clusterd started, with
//! cgroups and with process groups alike.

use crate::common;

use common::*;

use std::fs;

/// `sh` (the instance's own process) starts a Python child that holds 64 MiB, and a busy
/// loop that burns about a second of CPU and exits; then waits.
const UNIT: &str = r#"command = ["sh", "-c", "python3 -c 'import time; x = bytearray(64 << 20); x[::4096] = b\"x\" * len(x[::4096]); time.sleep(300)' & python3 -c 'import time; t = time.process_time(); exec(\"while time.process_time() - t < 1.0: pass\")'; echo burnt > burnt; wait"]
"#;

fn the_whole_instance_is_measured(args: &[&str]) {
    let files = tempfile::tempdir().expect("tmp");
    let unit = format!(
        "{UNIT}working_directory = \"{}\"\n",
        toml_path(files.path())
    );
    let daemon = Daemon::start_with_args(&[("hungry", &unit)], args);
    daemon.wait_running("hungry", 1);
    wait_for("the busy child to have burnt its second", PATIENCE, || {
        files.path().join("burnt").exists()
    });
    wait_for("64 MiB and a second of CPU counted", PATIENCE, || {
        let unit = daemon.unit("hungry");
        let instance = &unit["instances"][0];
        let memory = instance["memory_bytes"].as_u64().unwrap_or(0);
        let cpu = instance["cpu_seconds"].as_f64().unwrap_or(0.0);
        memory >= 64 << 20 && cpu >= 0.8
    });
    let unit = daemon.unit("hungry");
    let instance = &unit["instances"][0];
    assert!(instance["cpu_percent"].as_f64().is_some(), "{unit}");
    assert_eq!(unit["memory_bytes"], instance["memory_bytes"], "{unit}");
    // The human table has the columns.
    let out = daemon.ctl(&["status", "hungry"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("CPU") && text.contains("MEM") && text.contains('M'),
        "{text}"
    );
}

#[test]
fn an_instance_s_children_count_in_its_cpu_and_memory_with_cgroups() {
    the_whole_instance_is_measured(&["--isolation", "auto"]);
}

#[test]
fn an_instance_s_children_count_in_its_cpu_and_memory_with_process_groups() {
    the_whole_instance_is_measured(&["--isolation", "process-group"]);
}

/// Grows by 16 MiB every 100 ms; on SIGTERM writes `term-PID` and exits.
const GROWER: &str = r#"
import os, signal, sys, time
def bye(*_):
    open(f"term-{os.getpid()}", "w").close()
    sys.exit(0)
signal.signal(signal.SIGTERM, bye)
hoard = []
while True:
    if len(hoard) < 40:
        chunk = bytearray(16 << 20)
        chunk[::4096] = b"x" * len(chunk[::4096])
        hoard.append(chunk)
    time.sleep(0.1)
"#;

#[test]
fn an_instance_above_memory_max_is_replaced_before_it_is_stopped() {
    let files = tempfile::tempdir().expect("tmp");
    std::fs::write(files.path().join("grow.py"), GROWER).expect("script");
    let unit = format!(
        "command = [\"python3\", \"grow.py\"]\nworking_directory = \"{}\"\nmemory_max = \"100MiB\"\nmemory_check_interval = \"200ms\"\nrestart_limit = {{ burst = 100, interval = \"1m\" }}\n",
        toml_path(files.path())
    );
    let daemon = Daemon::start(&[("grow", &unit)]);
    let first = daemon.wait_running("grow", 1)[0];
    wait_for("the first instance to be told to stop", PATIENCE, || {
        files.path().join(format!("term-{first}")).exists()
    });
    // The log thread writes clusterd's events a moment after they happen.
    let mut log = String::new();
    wait_for("the log to tell of the stop", PATIENCE, || {
        log = std::fs::read_to_string(daemon.log_dir().join("grow.log")).unwrap_or_default();
        log.contains(&format!("clusterd | stopping pid {first}"))
    });
    let over = log.find("above memory_max 100.0 MiB").expect(&log);
    let replacement = log[over..]
        .find("clusterd | started, pid")
        .map(|i| i + over);
    let stopping = log.find(&format!("clusterd | stopping pid {first}"));
    assert!(
        replacement.is_some() && stopping.is_some() && replacement < stopping,
        "the old instance was stopped before its replacement ran:\n{log}"
    );
    let unit = daemon.unit("grow");
    assert!(
        unit["memory_replacements"].as_u64().unwrap_or(0) >= 1,
        "{unit}"
    );
    assert!(unit["restarts"].as_u64().unwrap_or(0) >= 1, "{unit}");
    let out = daemon.ctl(&["metrics"]);
    assert!(String::from_utf8_lossy(&out.stdout)
        .contains("clusterd_unit_memory_limit_replacements_total{unit=\"grow\"}"));
}

/// An HTTP server on the shared socket (fd 3) that keeps 4 MiB per request it served; on
/// SIGTERM it stops accepting and exits once the request in hand is answered.
const HOARDING_SERVER: &str = r#"
import os, signal, socket, sys, time
sock = socket.socket(fileno=3)
sock.settimeout(0.05)
stopping = False
def stop(*_):
    global stopping
    stopping = True
signal.signal(signal.SIGTERM, stop)
hoard = []
while not stopping:
    try:
        conn, _ = sock.accept()
    except (socket.timeout, InterruptedError):
        continue
    conn.settimeout(5)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    chunk = bytearray(4 << 20)
    chunk[::4096] = b"x" * len(chunk[::4096])
    hoard.append(chunk)
    body = str(os.getpid()).encode()
    conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    conn.close()
sys.exit(0)
"#;

#[test]
fn memory_max_replaces_a_server_under_load_without_failing_a_request() {
    use std::io::{Read, Write};
    let files = tempfile::tempdir().expect("tmp");
    std::fs::write(files.path().join("server.py"), HOARDING_SERVER).expect("script");
    let port = free_port();
    let unit = format!(
        "command = [\"python3\", \"server.py\"]\nworking_directory = \"{}\"\ninstances = 2\nlisten = [\"tcp://127.0.0.1:{port}\"]\nmemory_max = \"80MiB\"\nmemory_check_interval = \"100ms\"\nrestart_limit = {{ burst = 100, interval = \"1m\" }}\n",
        toml_path(files.path())
    );
    let daemon = Daemon::start(&[("hoard", &unit)]);
    daemon.wait_running("hoard", 2);
    let mut served = 0;
    let mut failed = Vec::new();
    let mut pids = std::collections::BTreeSet::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(4);
    while std::time::Instant::now() < deadline {
        let answer = std::net::TcpStream::connect(("127.0.0.1", port)).and_then(|mut s| {
            s.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
            s.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
            let mut text = String::new();
            s.read_to_string(&mut text)?;
            Ok(text)
        });
        match answer {
            Ok(text) if text.starts_with("HTTP/1.0 200") => {
                served += 1;
                pids.insert(text.rsplit("\r\n\r\n").next().unwrap_or("").to_string());
            }
            Ok(text) => failed.push(format!("bad answer {text:?}")),
            Err(e) => failed.push(e.to_string()),
        }
    }
    let replacements = daemon.unit("hoard")["memory_replacements"]
        .as_u64()
        .unwrap_or(0);
    eprintln!(
        "{served} requests served by {} processes, {replacements} memory replacements, {} failed",
        pids.len(),
        failed.len()
    );
    assert!(
        replacements >= 2,
        "{replacements} replacements; {served} served"
    );
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {failed:?}",
        failed.len(),
        served + failed.len()
    );
    assert!(pids.len() > 2, "answers came from {pids:?}");
}

/// In a cgroup, an instance's memory is read again only when the cgroup ran since the last
/// reading, or once that reading is a second old. A process that holds 64 MiB and sleeps,
/// moved by root into the cgroup of an instance that sleeps too, makes nothing in the
/// cgroup run: its memory is counted all the same, within the second.
#[test]
fn memory_moved_into_an_idle_instance_is_counted() {
    let daemon = Daemon::start(&[("idle", "command = [\"sleep\", \"300\"]\n")]);
    let pid = daemon.wait_running("idle", 1)[0];
    let status = daemon.status();
    let isolation = status["isolation"].as_str().unwrap_or("").to_string();
    let Some(mount) = isolation
        .strip_prefix("cgroup (")
        .and_then(|_| fs::read_to_string("/proc/self/mountinfo").ok())
        .and_then(|mounts| {
            mounts.lines().find_map(|line| {
                let (before, after) = line.split_once(" - ")?;
                (after.split(' ').next() == Some("cgroup2"))
                    .then(|| before.split(' ').nth(4).map(str::to_string))
                    .flatten()
            })
        })
    else {
        available(
            &format!("a cgroup clusterd can create cgroups in (it uses: {isolation})"),
            false,
        );
        return;
    };
    let cgroup = fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .expect("the instance's cgroup")
        .lines()
        .find_map(|l| l.strip_prefix("0::").map(str::to_string))
        .expect("a cgroup2 line");
    let before = daemon.unit("idle")["instances"][0]["memory_bytes"]
        .as_u64()
        .expect("memory measured");
    let ready = tempfile::tempdir().expect("tmp");
    let mut hoarder = KillOnDrop(
        std::process::Command::new("python3")
            .arg("-c")
            .arg(
                "import sys, time\nx = bytearray(64 << 20)\nx[::4096] = b'x' * len(x[::4096])\n\
                 open(sys.argv[1], 'w').close()\ntime.sleep(300)",
            )
            .arg(ready.path().join("ready"))
            .spawn()
            .expect("python3"),
    );
    wait_for("the hoarder to hold its 64 MiB", PATIENCE, || {
        ready.path().join("ready").exists()
    });
    // One status with the hoarder outside: the reading it would be answered from.
    assert!(
        daemon.unit("idle")["instances"][0]["memory_bytes"].as_u64() < Some(before + (32 << 20))
    );
    fs::write(
        format!("{mount}{cgroup}/cgroup.procs"),
        hoarder.0.id().to_string(),
    )
    .expect("move the hoarder into the instance's cgroup");
    wait_for("the hoarder's 64 MiB counted", PATIENCE, || {
        daemon.unit("idle")["instances"][0]["memory_bytes"]
            .as_u64()
            .is_some_and(|m| m >= before + (60 << 20))
    });
    let _ = hoarder.0.kill();
    let _ = hoarder.0.wait();
}
