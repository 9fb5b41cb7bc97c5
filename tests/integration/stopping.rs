//! Graceful stops: `kill_signal`, SIGKILL after `kill_timeout`, whole process groups, and
//! clusterd's own shutdown on SIGTERM (and at once on a second one).

use crate::common;
use common::*;

use std::fs;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("clusterd-stopping-")
        .tempdir()
        .expect("scratch dir")
}

/// Ignores SIGTERM, then logs `ready PID` (so the test knows the signal is ignored) and runs
/// forever.
const DEAF_PY: &str = r#"
import os, signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
with open(os.path.join(sys.argv[1], "ready.log"), "a") as f:
    f.write("ready %d\n" % os.getpid())
while True:
    time.sleep(1)
"#;

/// Logs the name of the first SIGINT or SIGTERM it gets and exits 0.
const SIGNAL_LOGGER_PY: &str = r#"
import os, signal, sys, time
d = sys.argv[1]
def on_signal(number, frame):
    with open(os.path.join(d, "signals.log"), "a") as f:
        f.write(signal.Signals(number).name + "\n")
    sys.exit(0)
signal.signal(signal.SIGINT, on_signal)
signal.signal(signal.SIGTERM, on_signal)
with open(os.path.join(d, "ready.log"), "a") as f:
    f.write("ready %d\n" % os.getpid())
while True:
    time.sleep(1)
"#;

/// An instance with two grandchildren: a plain `sleep`, and a Python process that ignores
/// SIGTERM. Each logs `grandchild PID` to grandchildren.log once it is set up.
const FAMILY_SH: &str = r#"#!/bin/sh
dir=$1
sleep 300 &
echo "grandchild $!" >> "$dir/grandchildren.log"
python3 -c '
import os, signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
with open(os.path.join(sys.argv[1], "grandchildren.log"), "a") as f:
    f.write("grandchild %d\n" % os.getpid())
time.sleep(300)
' "$dir" &
wait
"#;

/// `command = ['''python3''', '''-c''', '''SCRIPT''', "DIR"]` plus `extra` lines.
fn python_unit(script: &str, dir: &Path, extra: &str) -> String {
    format!(
        "command = ['''python3''', '''-c''', '''{script}''', \"{}\"]\n{extra}",
        toml_path(dir)
    )
}

/// A unit running [`FAMILY_SH`], written to `dir`.
fn family_unit(dir: &Path, extra: &str) -> String {
    let script = dir.join("family.sh");
    fs::write(&script, FAMILY_SH).unwrap();
    format!(
        "command = [\"sh\", \"{}\", \"{}\"]\n{extra}",
        toml_path(&script),
        toml_path(dir)
    )
}

/// Pids logged as `WORD PID` lines in `dir/file`.
fn logged_pids(dir: &Path, file: &str, word: &str) -> Vec<u32> {
    fs::read_to_string(dir.join(file))
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let mut parts = line.split_whitespace();
            (parts.next() == Some(word))
                .then(|| parts.next().and_then(|p| p.parse().ok()))
                .flatten()
        })
        .collect()
}

fn wait_logged(dir: &Path, file: &str, word: &str, count: usize) -> Vec<u32> {
    wait_for(
        &format!("{count} `{word}` line(s) in {file}"),
        PATIENCE,
        || logged_pids(dir, file, word).len() >= count,
    );
    logged_pids(dir, file, word)
}

fn assert_ctl_ok(out: &std::process::Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({:?}): {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A process the test starts itself (a `clusterctl` that blocks): killed and reaped if the
/// test ends before it does.
struct ChildGuard(Option<Child>);

impl ChildGuard {
    fn wait_exit(&mut self, what: &str, timeout: Duration) -> ExitStatus {
        let mut status = None;
        let child = self.0.as_mut().expect("child running");
        wait_for(what, timeout, || {
            status = child.try_wait().expect("try_wait");
            status.is_some()
        });
        self.0 = None;
        status.unwrap()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[test]
fn a_worker_that_ignores_sigterm_is_killed_after_kill_timeout_and_stop_waits_for_it() {
    let files = scratch();
    let unit = python_unit(DEAF_PY, files.path(), "kill_timeout = \"1s\"\n");
    let d = Daemon::start(&[("deaf", &unit)]);
    let pids = d.wait_running("deaf", 1);
    assert_eq!(wait_logged(files.path(), "ready.log", "ready", 1), pids);

    let started = Instant::now();
    let out = d.ctl(&["stop", "deaf"]);
    let took = started.elapsed();
    assert_ctl_ok(&out, "clusterctl stop");
    // `stop` answers once the process is gone (reaped, not even a zombie).
    assert!(
        !alive(pids[0]),
        "clusterctl stop returned while the worker still runs"
    );
    assert!(
        took >= Duration::from_millis(900),
        "stop took {took:?}: the worker ignores SIGTERM, so it should wait for kill_timeout (1 s)"
    );
    assert!(took < Duration::from_secs(10), "stop took {took:?}");
    let status = d.unit("deaf");
    assert_eq!(status["state"], "stopped", "{status:#}");
    assert_eq!(
        status["instances"][0]["last_exit"], "killed by SIGKILL",
        "{status:#}"
    );
}

#[test]

fn a_pending_stop_is_answered_even_when_a_start_arrives_before_it_completes() {
    let files = scratch();
    // The worker ignores SIGTERM, so the stop takes kill_timeout: time to send a start.
    let unit = python_unit(DEAF_PY, files.path(), "kill_timeout = \"3s\"\n");
    let d = Daemon::start(&[("deaf", &unit)]);
    let old = d.wait_running("deaf", 1);
    wait_logged(files.path(), "ready.log", "ready", 1);

    let mut stop = ChildGuard(Some(
        Command::new(CLUSTERCTL)
            .arg("--socket")
            .arg(&d.socket)
            .args(["stop", "deaf"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start clusterctl stop"),
    ));
    wait_for("the stop to be under way", PATIENCE, || {
        d.unit("deaf")["state"] == "stopping"
    });
    assert_ctl_ok(&d.ctl(&["start", "deaf"]), "clusterctl start");
    let status = stop.wait_exit("clusterctl stop to return", PATIENCE);
    assert!(status.success(), "clusterctl stop: {status}");
    let new = d.wait_running("deaf", 1);
    assert_ne!(new, old);
    assert!(!alive(old[0]));
}

#[test]
fn kill_signal_sigint_is_the_signal_a_stop_sends() {
    let files = scratch();
    let unit = python_unit(
        SIGNAL_LOGGER_PY,
        files.path(),
        "kill_signal = \"SIGINT\"\nkill_timeout = \"30s\"\n",
    );
    let d = Daemon::start(&[("polite", &unit)]);
    d.wait_running("polite", 1);
    wait_logged(files.path(), "ready.log", "ready", 1);

    let started = Instant::now();
    assert_ctl_ok(&d.ctl(&["stop", "polite"]), "clusterctl stop");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the worker exits on SIGINT; stop should not wait for kill_timeout"
    );
    let signals = fs::read_to_string(files.path().join("signals.log")).unwrap_or_default();
    assert_eq!(signals, "SIGINT\n");
    let status = d.unit("polite");
    assert_eq!(
        status["instances"][0]["last_exit"], "exited with code 0",
        "{status:#}"
    );
}

#[test]
fn grandchildren_are_gone_after_stop_even_one_that_ignores_sigterm() {
    let files = scratch();
    let unit = family_unit(files.path(), "kill_timeout = \"30s\"\n");
    let d = Daemon::start(&[("family", &unit)]);
    let pids = d.wait_running("family", 1);
    let grandchildren = wait_logged(files.path(), "grandchildren.log", "grandchild", 2);
    for &pid in &grandchildren {
        assert!(alive(pid), "grandchild {pid} should run before the stop");
    }

    let started = Instant::now();
    assert_ctl_ok(&d.ctl(&["stop", "family"]), "clusterctl stop");
    assert!(!alive(pids[0]));
    // The instance left at once on SIGTERM: its group got SIGKILL without waiting for the
    // 30 s kill_timeout, which the kernel delivers to the grandchildren right away.
    for &pid in &grandchildren {
        wait_for(
            &format!("grandchild {pid} to be gone"),
            Duration::from_secs(5),
            || !alive(pid),
        );
    }
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn sigterm_to_clusterd_stops_every_unit_leaves_no_process_behind_and_exits_zero() {
    let files = scratch();
    let family_dir = files.path().join("family");
    let deaf_dir = files.path().join("deaf");
    fs::create_dir(&family_dir).unwrap();
    fs::create_dir(&deaf_dir).unwrap();
    let mut d = Daemon::start(&[
        ("sleepers", "command = \"sleep 300\"\ninstances = 2\n"),
        ("family", &family_unit(&family_dir, "instances = 2\n")),
        (
            "deaf",
            &python_unit(DEAF_PY, &deaf_dir, "kill_timeout = \"1s\"\n"),
        ),
    ]);
    let mut instances = d.wait_running("sleepers", 2);
    instances.extend(d.wait_running("family", 2));
    instances.extend(d.wait_running("deaf", 1));
    let grandchildren = wait_logged(&family_dir, "grandchildren.log", "grandchild", 4);
    wait_logged(&deaf_dir, "ready.log", "ready", 1);
    let isolation = d.status()["isolation"].as_str().unwrap_or("").to_string();

    let status = d.terminate();
    assert_eq!(status.code(), Some(0), "{}", d.log());
    // Its last words are written, though the loop holds its log lines while it reacts.
    assert!(
        d.log()
            .trim_end()
            .ends_with("every instance has stopped; exiting with status 0"),
        "{}",
        d.log()
    );
    // Its cgroup tree is gone, the cgroups made ready for restarts included.
    if let Some(root) = isolation
        .strip_prefix("cgroup (")
        .and_then(|rest| rest.strip_suffix(')'))
    {
        assert!(!Path::new(root).exists(), "{root} is left");
    }
    // clusterd exits only once every instance is gone (reaped).
    for pid in instances {
        assert!(!alive(pid), "instance {pid} outlived clusterd\n{}", d.log());
    }
    for pid in grandchildren {
        wait_for(
            &format!("grandchild {pid} to be gone"),
            Duration::from_secs(5),
            || !alive(pid),
        );
    }
}

#[test]
fn sigint_to_clusterd_stops_every_instance_like_sigterm_and_exits_zero() {
    let mut d = Daemon::start(&[("sleepers", "command = \"sleep 300\"\ninstances = 2\n")]);
    let pids = d.wait_running("sleepers", 2);
    send_signal(d.pid(), libc::SIGINT);
    let status = d.wait_exit(PATIENCE);
    assert_eq!(status.code(), Some(0), "{}", d.log());
    for pid in pids {
        assert!(!alive(pid), "instance {pid} outlived clusterd");
    }
}

#[test]
fn a_second_sigterm_kills_a_worker_that_ignores_the_first_and_clusterd_exits_zero_at_once() {
    let files = scratch();
    let unit = python_unit(DEAF_PY, files.path(), "kill_timeout = \"60s\"\n");
    let mut d = Daemon::start(&[("deaf", &unit)]);
    let pids = d.wait_running("deaf", 1);
    wait_logged(files.path(), "ready.log", "ready", 1);

    send_signal(d.pid(), libc::SIGTERM);
    // Two signals sent back to back may merge into one: wait until the first is acted on.
    wait_for("clusterd to start stopping", PATIENCE, || {
        d.unit("deaf")["state"] == "stopping"
    });
    assert!(
        alive(pids[0]),
        "the worker ignores SIGTERM and has 60 s to go"
    );

    let started = Instant::now();
    send_signal(d.pid(), libc::SIGTERM);
    let status = d.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "clusterd took {:?} to exit after the second SIGTERM",
        started.elapsed()
    );
    assert!(!alive(pids[0]), "the worker outlived clusterd");
}

/// `clusterctl restart` on `unit`: succeeds, and every instance runs under a new pid.
fn restart_gives_new_pids(unit: &str, instances: usize) {
    let d = Daemon::start(&[("sleepers", unit)]);
    let before = d.wait_running("sleepers", instances);
    assert_ctl_ok(&d.ctl(&["restart", "sleepers"]), "clusterctl restart");
    let after = d.wait_running("sleepers", instances);
    for pid in &after {
        assert!(
            !before.contains(pid),
            "pid {pid} survived the restart: {before:?} → {after:?}"
        );
    }
    for pid in before {
        assert!(
            !alive(pid),
            "old instance {pid} still runs after the restart"
        );
    }
    assert_eq!(
        d.unit("sleepers")["restarts"],
        0,
        "manual restarts are not counted"
    );
}

#[test]
fn restart_gives_an_instance_a_new_pid() {
    restart_gives_new_pids("command = \"sleep 300\"\n", 1);
}

#[test]
fn restart_of_a_unit_with_several_instances_succeeds_and_gives_every_instance_a_new_pid() {
    restart_gives_new_pids("command = \"sleep 300\"\ninstances = 2\n", 2);
}
