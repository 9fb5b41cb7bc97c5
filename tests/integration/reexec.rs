//! `clusterctl daemon-reexec` (and SIGUSR2), with clusterd run from a copy in the test's
//! directory that the test replaces on disk (by rename, as dpkg does) before asking for the
//! re-exec. A good new binary takes over in the same pid with every instance as it was (pids,
//! indexes, restart counts, ready states), every line an instance writes meanwhile logged
//! once and in order, a listen unit under load and a `node_cluster` round-robin unit refusing
//! nothing, clients of the control socket and scrapes of `--metrics-listen` all answered
//! (a scraper that never finishes its request holds nothing), a `logs -f` follower going on
//! where it was (one that had shown no line too), signals sent at the very exec each taken,
//! an instance killed in the gap restarted; a new binary that is broken, not
//! executable, writable by others or a
//! symlink to something that is not clusterd is refused with the reason, one that cannot
//! read the state goes back to the old binary; only root and clusterd's own user may ask.

use crate::common;
use common::*;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

const TWO_SLEEPERS: &str = "command = \"sleep 300\"\ninstances = 2\n";

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A copy of clusterd at `dir/bin/clusterd` (by `cp`: see `copy_for_everyone` on ETXTBSY).
fn clusterd_copy(dir: &Path) -> PathBuf {
    let bin = dir.join("bin");
    fs::create_dir_all(&bin).expect("bin dir");
    let copy = bin.join("clusterd");
    replace_with_copy(&copy, Path::new(CLUSTERD));
    copy
}

/// clusterd run from a copy (returned) in the test's directory, with two instances of `web`.
fn start_from_copy() -> (Daemon, PathBuf) {
    start_from_copy_with(&[("web", TWO_SLEEPERS)])
}

/// clusterd run from a copy (returned) in the test's directory, with `units`.
fn start_from_copy_with(units: &[(&str, &str)]) -> (Daemon, PathBuf) {
    let mut binary = PathBuf::new();
    let d = Daemon::start_program(units, |dir| {
        binary = clusterd_copy(dir);
        binary.clone()
    });
    (d, binary)
}

/// Replaces `binary` by a copy of `source`, written beside it and renamed over it: the
/// running clusterd's file is unlinked, not written into (as a package upgrade does).
fn replace_with_copy(binary: &Path, source: &Path) {
    let staged = binary.with_extension("new");
    let copied = Command::new("cp")
        .arg(source)
        .arg(&staged)
        .status()
        .expect("run cp");
    assert!(copied.success(), "cp {} failed", source.display());
    fs::set_permissions(&staged, fs::Permissions::from_mode(0o755)).expect("chmod");
    fs::rename(&staged, binary).expect("rename over the binary");
}

/// Replaces `binary` by a file of `text` with `mode`, by rename.
fn replace_with_file(binary: &Path, text: &str, mode: u32) {
    let staged = binary.with_extension("new");
    fs::write(&staged, text).expect("write the replacement");
    fs::set_permissions(&staged, fs::Permissions::from_mode(mode)).expect("chmod");
    fs::rename(&staged, binary).expect("rename over the binary");
}

/// Asks for a re-exec and checks that it was refused with `reason`, and that clusterd and
/// every instance are as they were.
fn assert_refused_and_unchanged(d: &Daemon, pids: &[u32], reason: &str) {
    let clusterd = d.pid();
    let out = d.ctl(&["daemon-reexec"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(reason),
        "the reply should say {reason:?}: {}",
        stderr(&out)
    );
    assert!(alive(clusterd), "clusterd is gone\n{}", d.log());
    assert_eq!(d.pid(), clusterd);
    assert_eq!(d.pids("web"), pids, "the instances changed\n{}", d.log());
}

#[test]
fn reexec_check_says_which_state_versions_this_binary_reads() {
    let check = |version: &str| {
        Command::new(CLUSTERD)
            .args(["--reexec-check", version])
            .output()
            .expect("run clusterd --reexec-check")
    };
    assert_eq!(check("1").status.code(), Some(0));
    let newer = check("2");
    assert_eq!(newer.status.code(), Some(1));
    assert!(stderr(&newer).contains("version 2"), "{}", stderr(&newer));
}

#[test]
fn a_broken_new_binary_is_refused_and_the_old_clusterd_keeps_every_instance() {
    let (d, binary) = start_from_copy();
    let pids = d.wait_running("web", 2);

    // A program that does not read the state.
    replace_with_file(&binary, "#!/bin/sh\nexit 1\n", 0o755);
    assert_refused_and_unchanged(&d, &pids, "cannot read state version 1");
    // A file that is not executable.
    replace_with_copy(&binary, Path::new(CLUSTERD));
    fs::set_permissions(&binary, fs::Permissions::from_mode(0o644)).expect("chmod");
    assert_refused_and_unchanged(&d, &pids, "is not executable");
    // A binary anyone may write: whoever wrote it would become clusterd.
    fs::set_permissions(&binary, fs::Permissions::from_mode(0o777)).expect("chmod");
    assert_refused_and_unchanged(&d, &pids, "writable by others");
    // A symlink to something else is followed to the file it names, which is checked.
    let _ = fs::remove_file(&binary);
    std::os::unix::fs::symlink("/bin/false", &binary).expect("symlink");
    assert_refused_and_unchanged(&d, &pids, "/false cannot read state version 1");
    // Gone altogether.
    fs::remove_file(&binary).expect("remove the binary");
    assert_refused_and_unchanged(&d, &pids, "the new binary");
    // clusterd still does its job: a killed instance is restarted.
    kill_and_wait_replaced(&d, "web", pids[0], 2);
}

#[test]
fn only_root_and_clusterds_own_user_may_reexec() {
    let Some(gid) = socket_group_for_tests() else {
        return;
    };
    let d = Daemon::start_with_args(&[("web", TWO_SLEEPERS)], &["--socket-group", "daemon"]);
    fs::set_permissions(d.dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
    let pids = d.wait_running("web", 2);
    let clusterctl = copy_for_everyone(CLUSTERCTL, d.dir.path());
    let member = |args: &[&str]| clusterctl_as_nobody_in(&clusterctl, &d.socket, &[gid], args);
    // The socket group may control units...
    let status = member(&["status"]);
    assert_eq!(status.status.code(), Some(0), "{}", stderr(&status));
    // ...but not decide what runs as clusterd.
    let reexec = member(&["daemon-reexec"]);
    assert_eq!(reexec.status.code(), Some(1), "{}", stderr(&reexec));
    assert!(
        stderr(&reexec).contains("only root and uid"),
        "{}",
        stderr(&reexec)
    );
    assert_eq!(d.pids("web"), pids);
}

/// Writes `text` to `name` in the test's directory; returns its path for a unit file.
fn python_script(d: &Daemon, name: &str, text: &str) -> String {
    let path = d.path(name);
    fs::write(&path, text).expect("write the script");
    toml_path(&path)
}

/// Writes unit `name` and has clusterd load it.
fn load_unit(d: &Daemon, name: &str, text: &str) {
    d.write_unit(name, text);
    let out = d.ctl(&["daemon-reload"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

/// SIGKILLs `pid` of `unit` and waits until its `count` instances run again, `pid` not
/// among them.
fn kill_and_wait_replaced(d: &Daemon, unit: &str, pid: u32, count: usize) {
    send_signal(pid, libc::SIGKILL);
    wait_for(
        &format!("{unit}: pid {pid} to be replaced"),
        PATIENCE,
        || {
            let pids = d.pids(unit);
            pids.len() == count && !pids.contains(&pid)
        },
    );
    d.wait_running(unit, count);
}

/// What a user sees of every instance: (unit, index, pid, state, restarts), sorted.
fn instances(d: &Daemon) -> Vec<(String, u64, u64, String, u64)> {
    let status = d.status();
    let mut seen = Vec::new();
    for unit in status["units"].as_array().into_iter().flatten() {
        for i in unit["instances"].as_array().into_iter().flatten() {
            seen.push((
                unit["name"].as_str().unwrap_or_default().to_string(),
                i["index"].as_u64().unwrap_or(u64::MAX),
                i["pid"].as_u64().unwrap_or(0),
                i["state"].as_str().unwrap_or_default().to_string(),
                i["restarts"].as_u64().unwrap_or(u64::MAX),
            ));
        }
    }
    seen.sort();
    seen
}

/// clusterd's status of itself: (pid, version, when last re-executed).
fn daemon_of(d: &Daemon) -> (u64, String, Option<f64>) {
    let daemon = &d.status()["daemon"];
    (
        daemon["pid"].as_u64().unwrap_or(0),
        daemon["version"].as_str().unwrap_or_default().to_string(),
        daemon["reexecuted_at_seconds"].as_f64(),
    )
}

/// Asks for a re-exec that must succeed; returns the reply.
fn reexec(d: &Daemon) -> String {
    let out = d.ctl(&["daemon-reexec"]);
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{said}{}\n{}",
        stderr(&out),
        d.log()
    );
    said
}

/// A unit that says it is ready on its worker channel, then sleeps.
const READY_BY_CHANNEL: &str = "command = [\"sh\", \"-c\", \"echo '{\\\"act\\\":\\\"ready\\\"}' >&$CLUSTERD_CHANNEL_FD; exec sleep 300\"]\nready = \"notify\"\ninstances = 2\n";

#[test]
fn a_reexec_keeps_every_instance_as_it_was_and_answers_within_a_bound() {
    let (d, binary) = start_from_copy_with(&[("web", TWO_SLEEPERS), ("api", READY_BY_CHANNEL)]);
    d.wait_running("web", 2);
    d.wait_running("api", 2);
    // A restart count to carry: web[1] is killed and restarted.
    kill_and_wait_replaced(&d, "web", d.pids("web")[1], 2);
    let before = instances(&d);
    let (clusterd, version, never) = daemon_of(&d);
    assert_eq!(never, None, "not re-executed yet");
    assert_eq!(version, env!("CARGO_PKG_VERSION"));
    assert!(before.iter().any(|i| i.4 == 1), "{before:?}");

    let fds = |d: &Daemon| d.status()["daemon"]["open_fds"].as_u64().unwrap_or(0);
    let fds_before = fds(&d);
    replace_with_copy(&binary, Path::new(CLUSTERD));
    let asked = std::time::Instant::now();
    let said = reexec(&d);
    let took = asked.elapsed();
    assert!(said.contains("re-executed from"), "{said}");
    assert!(said.contains(" ms"), "{said}");
    // The bound is generous (a loaded CI machine); the report has the measured pause.
    assert!(
        took < Duration::from_secs(10),
        "daemon-reexec took {took:?}"
    );
    assert_eq!(instances(&d), before, "{}", d.log());
    // Exactly the fds handed over are kept: none of the old image's others, nor the
    // binaries' (a few more or less as files for usage are opened and closed).
    let fds_after = fds(&d);
    assert!(
        fds_after <= fds_before + 2,
        "{fds_before} fds before, {fds_after} after"
    );
    let (pid, version, at) = daemon_of(&d);
    assert_eq!(
        (pid, version.as_str()),
        (clusterd, env!("CARGO_PKG_VERSION"))
    );
    assert!(at.is_some(), "status says when it was re-executed");
    // The table says it too.
    let table = d.ctl(&["status"]);
    assert!(
        String::from_utf8_lossy(&table.stdout).contains("re-executed"),
        "{}",
        String::from_utf8_lossy(&table.stdout)
    );

    // SIGUSR2 does the same; the instances still are who they were, and still restarted.
    replace_with_copy(&binary, Path::new(CLUSTERD));
    send_signal(clusterd as u32, libc::SIGUSR2);
    wait_for("the SIGUSR2 re-exec", PATIENCE, || daemon_of(&d).2 != at);
    assert_eq!(instances(&d), before, "{}", d.log());
    kill_and_wait_replaced(&d, "api", d.pids("api")[0], 2);
}

/// Writes `n 1`, `n 2`, ... (each line in two writes: a line may be cut in the middle by a
/// re-exec) until the file `stop` exists, then `done N` for its last N, and sleeps.
const NUMBERED_LINES: &str = r#"
import os, sys, time
stop = sys.argv[1]
n = 0
while not os.path.exists(stop):
    for _ in range(50):
        n += 1
        os.write(1, b"n %d" % n)
        os.write(1, b"\n")
    time.sleep(0.005)
os.write(1, b"done %d\n" % n)
time.sleep(300)
"#;

#[test]
fn numbered_lines_written_during_reexecs_are_each_logged_once_and_in_order() {
    let (d, binary) = start_from_copy_with(&[]);
    let stop = d.path("stop");
    let script = python_script(&d, "lines.py", NUMBERED_LINES);
    let command = format!("[\"python3\", \"{script}\", \"{}\"]", toml_path(&stop));
    load_unit(
        &d,
        "writer",
        &format!("command = {command}\ninstances = 2\n"),
    );
    let pids = d.wait_running("writer", 2);
    let log = d.log_dir().join("writer.log");
    // The writers are under way before, during and after the re-execs.
    wait_for("lines in the log", PATIENCE, || {
        fs::read_to_string(&log).is_ok_and(|t| t.contains("out | n 1000"))
    });
    for _ in 0..3 {
        replace_with_copy(&binary, Path::new(CLUSTERD));
        reexec(&d);
    }
    fs::write(&stop, "").expect("stop the writers");
    wait_for("both writers' last lines in the log", PATIENCE, || {
        let text = fs::read_to_string(&log).unwrap_or_default();
        (0..2).all(|i| text.contains(&format!("writer[{i}] out | done ")))
    });
    let text = fs::read_to_string(&log).expect("read the log");
    for index in 0..2 {
        let tag = format!("writer[{index}] out | n ");
        let numbers: Vec<u64> = text
            .lines()
            .filter_map(|line| line.split_once(&tag))
            .map(|(_, n)| n.trim().parse().expect("a whole number on each line"))
            .collect();
        let done = format!("writer[{index}] out | done ");
        let last: u64 = text
            .lines()
            .find_map(|line| line.split_once(&done))
            .and_then(|(_, n)| n.trim().parse().ok())
            .expect("the last number");
        let expected: Vec<u64> = (1..=last).collect();
        assert!(
            numbers == expected,
            "writer[{index}]: {} lines of {last}, first difference at {:?}",
            numbers.len(),
            numbers.iter().zip(&expected).position(|(a, b)| a != b)
        );
    }
    assert_eq!(d.pids("writer"), pids);
}

/// A keep-alive HTTP/1.1 server on the socket clusterd passes as fd 3: each connection on a
/// thread of its own, answering requests with its pid until the client closes.
const KEEP_ALIVE_SERVER: &str = r#"
import os, socket, threading
listener = socket.socket(fileno=3)
pid = str(os.getpid()).encode()
def serve(conn):
    with conn:
        data = b""
        while True:
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                data += chunk
            request, data = data.split(b"\r\n\r\n", 1)
            close = b"connection: close" in request.lower()
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (
                len(pid), b"Connection: close\r\n" if close else b"", pid))
            if close:
                return
while True:
    conn, _ = listener.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
"#;

/// Requests on one keep-alive connection until `stop`; returns (answered, failures).
fn keep_alive_loop(
    port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> (usize, Vec<String>) {
    use std::io::{Read, Write};
    let mut answered = 0;
    let mut failures = Vec::new();
    let mut stream = match std::net::TcpStream::connect(("127.0.0.1", port)) {
        Ok(s) => s,
        Err(e) => return (0, vec![e.to_string()]),
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        if let Err(e) = stream.write_all(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n") {
            failures.push(e.to_string());
            break;
        }
        let mut answer = Vec::new();
        let mut byte = [0u8; 512];
        // The head, then the body of Content-Length bytes.
        let complete = loop {
            match stream.read(&mut byte) {
                Ok(0) => break false,
                Ok(n) => answer.extend_from_slice(&byte[..n]),
                Err(e) => {
                    failures.push(e.to_string());
                    break false;
                }
            }
            let text = String::from_utf8_lossy(&answer).into_owned();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("Content-Length: "))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(usize::MAX);
                if body.len() >= length {
                    break true;
                }
            }
        };
        if !complete {
            failures.push(format!("incomplete answer {answer:?}"));
            break;
        }
        answered += 1;
    }
    (answered, failures)
}

#[test]
fn a_listen_unit_under_load_refuses_and_fails_nothing_during_reexecs() {
    if !available("python3", runs("python3", &["--version"])) {
        return;
    }
    let port = free_port();
    let (d, binary) = start_from_copy_with(&[]);
    let server = python_script(&d, "server.py", KEEP_ALIVE_SERVER);
    let unit = format!(
        "command = [\"python3\", \"{server}\"]\ninstances = 2\nlisten = [\"tcp://127.0.0.1:{port}\"]\n"
    );
    load_unit(&d, "web", &unit);
    let pids = d.wait_running("web", 2);
    wait_for("the server to answer", PATIENCE, || {
        common::http_load::get(port).is_ok()
    });
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = std::sync::Arc::clone(&stop);
    let keep_alive = std::thread::spawn(move || keep_alive_loop(port, flag));
    let load = common::http_load::Load::start(port, Duration::from_secs(60));
    for _ in 0..3 {
        replace_with_copy(&binary, Path::new(CLUSTERD));
        reexec(&d);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let report = load.finish();
    let (answered, failures) = keep_alive.join().expect("keep-alive loop");
    report.assert_every_request_served();
    assert!(
        answered > 0 && failures.is_empty(),
        "{answered} {failures:?}"
    );
    assert_eq!(d.pids("web"), pids);
    // clusterd still holds the socket: a new instance gets it.
    kill_and_wait_replaced(&d, "web", pids[0], 2);
    wait_for("the server to answer again", PATIENCE, || {
        common::http_load::get(port).is_ok()
    });
}

/// A "new binary" that is clusterd with something done first: a shell script that answers
/// `--reexec-check` as clusterd does and, for the re-exec itself, runs `before` and then
/// clusterd (a copy at `dir/bin/real-clusterd`) in its place.
fn wrapper_binary(dir: &Path, before: &str) -> String {
    let real = dir.join("bin/real-clusterd");
    replace_with_copy(&real, Path::new(CLUSTERD));
    format!(
        "#!/bin/sh\nif [ \"$1\" = --reexec-state ]; then {before}; fi\nexec {} \"$@\"\n",
        real.display()
    )
}

#[test]
fn an_instance_killed_in_the_middle_of_the_reexec_is_restarted() {
    let (d, binary) = start_from_copy();
    let pids = d.wait_running("web", 2);
    let victim = pids[1];
    // Killed after the old image's exec and before the new one has its handlers: its
    // SIGCHLD arrives in the gap.
    let script = wrapper_binary(d.dir.path(), &format!("kill -9 {victim}"));
    replace_with_file(&binary, &script, 0o755);
    reexec(&d);
    wait_for("web[1] to be restarted", PATIENCE, || {
        let now = d.pids("web");
        now.len() == 2 && now[0] == pids[0] && !now.contains(&victim)
    });
    d.wait_running("web", 2);
    assert!(!alive(victim));
    let web = d.unit("web");
    assert_eq!(web["instances"][1]["restarts"], 1, "{web}");
    assert!(
        web["instances"][1]["last_exit"]
            .as_str()
            .is_some_and(|e| e.contains("SIGKILL")),
        "{web}"
    );
}

#[test]
fn a_new_image_that_cannot_read_the_state_goes_back_to_the_old_binary() {
    let (d, binary) = start_from_copy();
    let pids = d.wait_running("web", 2);
    let clusterd = d.pid();
    let script = wrapper_binary(
        d.dir.path(),
        "CLUSTERD_TEST_REEXEC_REFUSE_STATE=1; export CLUSTERD_TEST_REEXEC_REFUSE_STATE",
    );
    replace_with_file(&binary, &script, 0o755);
    let out = d.ctl(&["daemon-reexec"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("went back to its old binary"),
        "{}\n{}",
        stderr(&out),
        d.log()
    );
    assert_eq!(d.pid(), clusterd);
    assert_eq!(d.pids("web"), pids, "{}", d.log());
    // The old binary runs again, and does its job.
    let exe = fs::read_link(format!("/proc/{clusterd}/exe")).expect("exe");
    assert!(
        exe.to_string_lossy().ends_with("(deleted)"),
        "the old, replaced binary runs: {}",
        exe.display()
    );
    kill_and_wait_replaced(&d, "web", pids[0], 2);
    // And a later re-exec to a good binary works.
    replace_with_copy(&binary, Path::new(CLUSTERD));
    reexec(&d);
}

#[test]
fn two_reexecs_asked_at_once_run_one_at_a_time() {
    let (d, binary) = start_from_copy();
    let pids = d.wait_running("web", 2);
    replace_with_copy(&binary, Path::new(CLUSTERD));
    let asks: Vec<_> = (0..2)
        .map(|_| {
            let socket = d.socket.clone();
            std::thread::spawn(move || {
                Command::new(CLUSTERCTL)
                    .arg("--socket")
                    .arg(&socket)
                    .arg("daemon-reexec")
                    .output()
                    .expect("run clusterctl")
            })
        })
        .collect();
    let outs: Vec<Output> = asks
        .into_iter()
        .map(|a| a.join().expect("clusterctl thread"))
        .collect();
    assert!(outs.iter().any(|o| o.status.code() == Some(0)), "{outs:?}");
    for out in &outs {
        match out.status.code() {
            Some(0) => {}
            Some(1) => assert!(stderr(out).contains("under way"), "{}", stderr(out)),
            other => panic!("{other:?}: {}", stderr(out)),
        }
    }
    assert_eq!(d.pids("web"), pids);
}

#[test]
fn a_logs_follower_reconnects_after_a_reexec_and_misses_and_repeats_nothing() {
    let writer = "command = [\"sh\", \"-c\", \"i=0; while true; do i=$((i+1)); echo line $i; sleep 0.002; done\"]\n";
    let (d, binary) = start_from_copy_with(&[("writer", writer)]);
    d.wait_running("writer", 1);
    let shown = d.path("followed.txt");
    let mut follower = Command::new(CLUSTERCTL)
        .arg("--socket")
        .arg(&d.socket)
        .args(["logs", "-f", "writer"])
        .stdout(fs::File::create(&shown).expect("output file"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run clusterctl logs -f");
    let numbers = || -> Vec<u64> {
        fs::read_to_string(&shown)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once("out | line "))
            .filter_map(|(_, n)| n.trim().parse().ok())
            .collect()
    };
    wait_for("the follower to show lines", PATIENCE, || {
        numbers().len() > 20
    });
    replace_with_copy(&binary, Path::new(CLUSTERD));
    reexec(&d);
    let after = numbers().last().copied().unwrap_or(0) + 500;
    wait_for(
        "the follower to show lines after the re-exec",
        PATIENCE,
        || numbers().last().is_some_and(|&n| n > after),
    );
    let alive_still = follower.try_wait().expect("try_wait").is_none();
    let _ = follower.kill();
    let _ = follower.wait();
    assert!(alive_still, "the follower ended");
    let seen = numbers();
    assert_consecutive("", &seen, seen[0]);
}

/// `seen` is `first, first + 1, ...` with no number missing or repeated; else where it is
/// not (`label` starts the message).
fn assert_consecutive(label: &str, seen: &[u64], first: u64) {
    let expected: Vec<u64> = (first..first + seen.len() as u64).collect();
    assert!(
        seen == expected,
        "{label}first difference at {:?}",
        seen.iter().zip(&expected).position(|(a, b)| a != b)
    );
}

/// An unmodified Node HTTP server; clusterd is its cluster primary.
const NODE_APP: &str = r#"
const http = require('http');
http.createServer((req, res) => res.end(String(process.pid)))
  .listen(+process.env.PORT, process.env.HOST);
"#;

#[test]
fn a_node_cluster_unit_in_round_robin_mode_keeps_serving_through_reexecs() {
    if !available("node", runs("node", &["--version"])) {
        return;
    }
    let port = free_port();
    let (d, binary) = start_from_copy_with(&[]);
    let app = python_script(&d, "app.js", NODE_APP);
    load_unit(
        &d,
        "web",
        &format!(
            "command = [\"node\", \"{app}\"]\ninstances = 2\nnode_cluster = \"round-robin\"\n\
             environment = {{ PORT = \"{port}\", HOST = \"127.0.0.1\" }}\n"
        ),
    );
    let pids = d.wait_running("web", 2);
    let served_by_both = || {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..200 {
            if let Ok(pid) = common::http_load::get(port) {
                seen.insert(pid);
            }
            if seen.len() == 2 {
                break;
            }
        }
        seen.into_iter().collect::<Vec<u32>>()
    };
    let mut sorted = pids.clone();
    sorted.sort();
    assert_eq!(served_by_both(), sorted, "{}", d.log());
    let load = common::http_load::Load::start(port, Duration::from_secs(60));
    for _ in 0..3 {
        replace_with_copy(&binary, Path::new(CLUSTERD));
        reexec(&d);
    }
    let report = load.finish();
    report.assert_every_request_served();
    assert_eq!(d.pids("web"), pids);
    // The new primary hands connections to both workers, and to a replacement.
    assert_eq!(served_by_both(), sorted, "{}", d.log());
    kill_and_wait_replaced(&d, "web", pids[0], 2);
    let mut now = d.pids("web");
    now.sort();
    wait_for("both workers, the new one too, to serve", PATIENCE, || {
        served_by_both() == now
    });
}

#[test]
fn clients_asking_all_along_are_all_answered_through_reexecs() {
    let (d, binary) = start_from_copy();
    let pids = d.wait_running("web", 2);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let askers: Vec<_> = (0..3)
        .map(|_| {
            let socket = d.socket.clone();
            let flag = std::sync::Arc::clone(&stop);
            std::thread::spawn(move || {
                let (mut answered, mut failed, mut slowest) = (0, Vec::new(), Duration::ZERO);
                while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                    let asked = std::time::Instant::now();
                    let request = clusterd::protocol::Request::Status { unit: None };
                    match clusterd::client::connection::send_request_within(
                        &socket,
                        request,
                        Duration::from_secs(30),
                    ) {
                        Ok(r) if r.ok => answered += 1,
                        other => failed.push(format!("{other:?}")),
                    }
                    slowest = slowest.max(asked.elapsed());
                }
                (answered, failed, slowest)
            })
        })
        .collect();
    for _ in 0..5 {
        replace_with_copy(&binary, Path::new(CLUSTERD));
        reexec(&d);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for asker in askers {
        let (answered, failed, slowest) = asker.join().expect("asker");
        assert!(
            answered > 0 && failed.is_empty(),
            "{answered} answered, failed: {failed:?}"
        );
        // Generous: the pause is tens of milliseconds (the report has the figure).
        assert!(
            slowest < Duration::from_secs(10),
            "slowest answer {slowest:?}"
        );
    }
    assert_eq!(d.pids("web"), pids);
}

#[test]
fn a_reexec_that_fails_after_quiescing_resumes_every_thread() {
    // A unit whose log file cannot be written (its directory belongs to someone else, which
    // clusterd refuses): the lines it holds for it would be lost, so the re-exec is refused
    // once the threads are stopped, and they must all go on.
    let (d, binary) = start_from_copy_with(&[("api", READY_BY_CHANNEL)]);
    let theirs = d.path("theirs");
    fs::create_dir_all(&theirs).expect("mkdir");
    std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).expect("chown");
    let ticker = "command = [\"sh\", \"-c\", \"i=0; while :; do i=$((i+1)); echo tick $i; sleep 0.01; done\"]\n";
    load_unit(&d, "ticker", ticker);
    load_unit(
        &d,
        "stuck",
        &format!(
            "{ticker}[log]\nfile = \"{}\"\n",
            toml_path(&theirs.join("stuck.log"))
        ),
    );
    wait_for("the stuck unit's log to stall", PATIENCE, || {
        d.log().contains("cannot write its log")
    });
    let pids = d.wait_running("api", 2);
    replace_with_copy(&binary, Path::new(CLUSTERD));
    let out = d.ctl(&["daemon-reexec"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("log cannot be written") && stderr(&out).contains("keeps running"),
        "{}",
        stderr(&out)
    );
    assert_eq!(d.pids("api"), pids);
    // The log thread reads again.
    let ticks = || {
        fs::read_to_string(d.log_dir().join("ticker.log"))
            .unwrap_or_default()
            .matches("out | tick ")
            .count()
    };
    let before = ticks();
    wait_for("the ticker's lines to be logged again", PATIENCE, || {
        ticks() > before + 20
    });
    // The worker I/O thread reads again: a replacement says it is ready on its channel.
    kill_and_wait_replaced(&d, "api", pids[0], 2);
}

#[test]
fn a_sigterm_in_the_gap_is_taken_by_the_new_image_which_stops_cleanly() {
    let (mut d, binary) = start_from_copy();
    let pids = d.wait_running("web", 2);
    // Sent after the old image's exec and before the new one has its handlers: blocked
    // across the exec, it waits for them (a handler does not survive an exec; its default
    // action would kill clusterd and orphan every instance).
    let script = wrapper_binary(d.dir.path(), "kill -TERM $$");
    replace_with_file(&binary, &script, 0o755);
    // The reply comes first or the stop does: either is fine, the exit is what counts.
    let _ = d.ctl(&["daemon-reexec"]);
    let status = d.wait_exit(PATIENCE);
    assert_eq!(status.code(), Some(0), "{}", d.log());
    for pid in pids {
        assert!(!alive(pid), "instance {pid} outlived clusterd");
    }
}

#[test]
fn a_logs_follower_of_every_unit_reconnects_after_a_reexec_and_misses_and_repeats_nothing() {
    let writer = "command = [\"sh\", \"-c\", \"i=0; while true; do i=$((i+1)); echo line $i; sleep 0.002; done\"]\n";
    let (d, binary) = start_from_copy_with(&[("alpha", writer), ("beta", writer)]);
    d.wait_running("alpha", 1);
    d.wait_running("beta", 1);
    let shown = d.path("followed.txt");
    // `-n 0`: no history, whose lines written while the followers open may be shown twice
    // (documented); every line here is a follower's.
    let mut follower = Command::new(CLUSTERCTL)
        .arg("--socket")
        .arg(&d.socket)
        .args(["logs", "-f", "-n", "0"])
        .stdout(fs::File::create(&shown).expect("output file"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run clusterctl logs -f");
    // The numbers each unit's lines carry, in the order shown.
    let numbers = |unit: &str| -> Vec<u64> {
        let tag = format!("{unit}[0] out | line ");
        fs::read_to_string(&shown)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with(unit))
            .filter_map(|l| l.split_once(&tag))
            .filter_map(|(_, n)| n.trim().parse().ok())
            .collect()
    };
    wait_for("the follower to show lines of both units", PATIENCE, || {
        numbers("alpha").len() > 20 && numbers("beta").len() > 20
    });
    replace_with_copy(&binary, Path::new(CLUSTERD));
    reexec(&d);
    let after: Vec<u64> = ["alpha", "beta"]
        .iter()
        .map(|unit| numbers(unit).last().copied().unwrap_or(0) + 500)
        .collect();
    wait_for(
        "the follower to show lines of both units after the re-exec",
        PATIENCE,
        || {
            ["alpha", "beta"]
                .iter()
                .zip(&after)
                .all(|(unit, &after)| numbers(unit).last().is_some_and(|&n| n > after))
        },
    );
    let alive_still = follower.try_wait().expect("try_wait").is_none();
    let _ = follower.kill();
    let _ = follower.wait();
    assert!(alive_still, "the follower ended");
    for unit in ["alpha", "beta"] {
        let seen = numbers(unit);
        assert_consecutive(&format!("{unit}: "), &seen, seen[0]);
    }
}

/// Reads its worker channel and appends `INDEX N` to `got` for each `{"n": N, ...}` line:
/// instance 0 slowly (0.25 s a line) from the start, instance 1 not before the file `go`
/// exists.
const CHANNEL_READER: &str = r#"
import json, os, sys, time
go, got = sys.argv[1], sys.argv[2]
index = os.environ["CLUSTERD_INSTANCE"]
if index == "1":
    while not os.path.exists(go):
        time.sleep(0.02)
fd = int(os.environ["CLUSTERD_CHANNEL_FD"])
pending = b""
while True:
    data = os.read(fd, 4096)
    if not data:
        break
    pending += data
    while b"\n" in pending:
        line, pending = pending.split(b"\n", 1)
        with open(got, "a") as f:
            f.write("%s %d\n" % (index, json.loads(line)["n"]))
        if index == "0":
            time.sleep(0.25)
"#;

/// `clusterctl send` of `{"n": N}` padded to 16 kB to `chan[index]`, through the library's
/// client (a flood of them): whether it was accepted.
fn send_numbered(d: &Daemon, index: u32, n: u32) -> bool {
    let message = format!("{{\"n\": {n}, \"pad\": \"{}\"}}", "x".repeat(16_000));
    let request = clusterd::protocol::Request::Send {
        unit: "chan".into(),
        instance: Some(index),
        message,
    };
    clusterd::client::connection::send_request_within(&d.socket, request, CTL_DEADLINE)
        .unwrap_or_else(|e| panic!("send failed: {e:?}\n{}", d.log()))
        .ok
}

/// The numbers instance `index` received, in the order it received them.
fn received(d: &Daemon, index: &str) -> Vec<u32> {
    fs::read_to_string(d.path("got"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(' '))
        .filter(|(i, _)| *i == index)
        .filter_map(|(_, n)| n.parse().ok())
        .collect()
}

#[test]
fn send_messages_not_yet_read_arrive_once_and_in_order_across_a_reexec() {
    if !available("python3", runs("python3", &["--version"])) {
        return;
    }
    let (d, binary) = start_from_copy_with(&[]);
    let script = python_script(&d, "reader.py", CHANNEL_READER);
    let unit = format!(
        "command = [\"python3\", \"{script}\", \"{}\", \"{}\"]\ninstances = 2\n",
        toml_path(&d.path("go")),
        toml_path(&d.path("got"))
    );
    load_unit(&d, "chan", &unit);
    let pids = d.wait_running("chan", 2);

    // The slow reader: more than its socket buffer holds, so clusterd queues the rest.
    let slow: Vec<u32> = (1..=24).collect();
    for &n in &slow {
        assert!(send_numbered(&d, 0, n), "send {n} to chan[0] refused");
    }
    // The one that does not read: until its queue in clusterd is full and a send refused.
    let mut accepted = Vec::new();
    for n in 1..=200 {
        if !send_numbered(&d, 1, n) {
            break;
        }
        accepted.push(n);
    }
    assert!(accepted.len() < 200, "chan[1]'s queue never filled");
    assert!(
        received(&d, "0").len() < slow.len(),
        "chan[0] read too fast"
    );

    // Bounded: a worker that reads nothing does not hold the re-exec up.
    replace_with_copy(&binary, Path::new(CLUSTERD));
    let asked = std::time::Instant::now();
    reexec(&d);
    let took = asked.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "daemon-reexec took {took:?}"
    );
    assert_eq!(d.pids("chan"), pids);

    fs::write(d.path("go"), "").expect("go");
    wait_for("every message to arrive", PATIENCE, || {
        received(&d, "0").len() >= slow.len() && received(&d, "1").len() >= accepted.len()
    });
    assert_eq!(received(&d, "0"), slow, "chan[0]\n{}", d.log());
    assert_eq!(received(&d, "1"), accepted, "chan[1]\n{}", d.log());
    // Sent after: after them, as usual.
    assert!(send_numbered(&d, 1, 1000));
    wait_for("the last message", PATIENCE, || {
        received(&d, "1").last() == Some(&1000)
    });
    assert_eq!(received(&d, "1").len(), accepted.len() + 1);
}

/// `[health]` of instance `index` as status shows it: (state, failures).
fn health_of(d: &Daemon, unit: &str, index: u64) -> (String, u64) {
    let status = d.unit(unit);
    let instance = status["instances"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|i| i["index"] == index && !i["draining"].as_bool().unwrap_or(false))
        .cloned()
        .unwrap_or_default();
    (
        instance["health"]["state"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        instance["health"]["failures"].as_u64().unwrap_or(0),
    )
}

/// How many lines of clusterd's log contain `text`.
fn logged(d: &Daemon, text: &str) -> usize {
    d.log().lines().filter(|l| l.contains(text)).count()
}

#[test]
fn an_unhealthy_instance_is_replaced_after_the_failures_it_had_left_and_a_healthy_one_stays_healthy(
) {
    let (d, binary) = start_from_copy_with(&[]);
    let dir = d.path("");
    // Fails while `sick-INDEX` exists; every check of each pid logged.
    let unit = format!(
        "command = [\"sleep\", \"1000\"]\ninstances = 2\n[health]\ncommand = [\"sh\", \"-c\", \"echo $MAINPID >> {d}/checks; test ! -e {d}/sick-$CLUSTERD_INSTANCE\"]\ninterval = \"3s\"\nfailures = 3\n",
        d = toml_path(&dir)
    );
    load_unit(&d, "web", &unit);
    let pids = d.wait_running("web", 2);
    fs::write(d.path("sick-0"), "").expect("sick-0");
    wait_for("web[0] to fail 2 of its 3 checks", PATIENCE, || {
        health_of(&d, "web", 0) == ("failing".into(), 2)
    });
    wait_for("web[1] to pass a check", PATIENCE, || {
        health_of(&d, "web", 1) == ("ok".into(), 0)
    });

    replace_with_copy(&binary, Path::new(CLUSTERD));
    reexec(&d);
    // At once, before any check of the new image: as they were.
    assert_eq!(
        health_of(&d, "web", 0),
        ("failing".into(), 2),
        "{}",
        d.log()
    );
    assert_eq!(health_of(&d, "web", 1), ("ok".into(), 0), "{}", d.log());
    assert_eq!(d.pids("web"), pids);

    // One more failure replaces web[0]: three in all, not three more.
    wait_for("web[0] to be replaced", PATIENCE, || {
        d.pids("web").first() != Some(&pids[0])
    });
    let checks = fs::read_to_string(d.path("checks")).unwrap_or_default();
    let of_old = checks.lines().filter(|l| *l == pids[0].to_string()).count();
    assert_eq!(of_old, 3, "checks of web[0]'s pid\n{checks}\n{}", d.log());
    let unit = d.unit("web");
    assert_eq!(unit["health_replacements"], 1, "{unit}");
    assert_eq!(health_of(&d, "web", 1), ("ok".into(), 0));
    assert_eq!(d.pids("web")[1], pids[1]);
}

/// A health check that fails, the second of each instance's only once `release` exists.
const GATED_CHECK: &str = r#"
dir=$1
echo "start $MAINPID" >> "$dir/probes"
if [ "$(grep -c "start $MAINPID" "$dir/probes")" = 2 ]; then
    while [ ! -e "$dir/release" ]; do sleep 0.05; done
fi
echo "end $MAINPID" >> "$dir/probes"
exit 1
"#;

#[test]
fn a_health_command_running_at_the_reexec_is_reaped_by_the_new_image_and_counted_once() {
    let (d, binary) = start_from_copy_with(&[]);
    let script = d.path("check.sh");
    fs::write(&script, GATED_CHECK).expect("check.sh");
    let unit = format!(
        "command = [\"sleep\", \"1000\"]\n[health]\ncommand = [\"sh\", \"{}\", \"{}\"]\ninterval = \"1s\"\ntimeout = \"60s\"\nfailures = 3\n",
        toml_path(&script),
        toml_path(&d.path(""))
    );
    load_unit(&d, "web", &unit);
    let pid = d.wait_running("web", 1)[0];
    let probes = || fs::read_to_string(d.path("probes")).unwrap_or_default();
    let count = |what: &str| {
        let line = format!("{what} {pid}");
        probes().lines().filter(|l| *l == line).count()
    };
    wait_for("the second check to run", PATIENCE, || count("start") == 2);
    assert_eq!(health_of(&d, "web", 0), ("failing".into(), 1));

    replace_with_copy(&binary, Path::new(CLUSTERD));
    reexec(&d);
    assert_eq!(count("end"), 1, "the gated check ended before the re-exec");
    fs::write(d.path("release"), "").expect("release");
    // Its end is counted by the new image, once: two failures, then a third replaces it.
    wait_for("web[0] to be replaced", PATIENCE, || {
        d.pids("web").first().is_some_and(|p| *p != pid)
    });
    assert_eq!(count("end"), 3, "{}\n{}", probes(), d.log());
    let at = |n: u32| format!("(pid {pid}): health check failed ({n} of 3 in a row)");
    assert_eq!(
        (logged(&d, &at(1)), logged(&d, &at(2))),
        (1, 1),
        "{}",
        d.log()
    );
    let replaced = "health check failed 3 time(s) in a row (check exited with code 1); starting";
    assert_eq!(logged(&d, replaced), 1, "{}", d.log());
}

#[test]
fn an_on_giveup_hook_running_at_the_reexec_is_reaped_and_logged_by_the_new_image() {
    let (d, binary) = start_from_copy_with(&[]);
    let dir = toml_path(&d.path(""));
    let unit = format!(
        "command = [\"false\"]\nrestart_limit = {{ burst = 1, interval = \"1m\" }}\non_giveup = [\"sh\", \"-c\", \"echo $$ > {dir}/hook; while [ ! -e {dir}/release ]; do sleep 0.05; done; exit 3\"]\n"
    );
    d.write_unit("crashy", &unit);
    d.ctl(&["daemon-reload"]);
    wait_for("the on_giveup hook to run", PATIENCE, || {
        fs::read_to_string(d.path("hook")).is_ok_and(|t| t.ends_with('\n'))
    });
    let hook = fs::read_to_string(d.path("hook")).unwrap_or_default();
    let hook = hook.trim();

    replace_with_copy(&binary, Path::new(CLUSTERD));
    reexec(&d);
    fs::write(d.path("release"), "").expect("release");
    let line = format!("crashy: on_giveup hook (pid {hook}) exited with code 3");
    wait_for("the new image to reap the hook", PATIENCE, || {
        logged(&d, &line) == 1
    });
}

/// `command = ["sh", "-c", SCRIPT]`, the script escaped for TOML.
fn sh_unit(script: &str) -> String {
    format!(
        "command = [\"sh\", \"-c\", \"{}\"]\n",
        script.replace('\\', "\\\\").replace('"', "\\\"")
    )
}

#[test]
fn a_one_shot_running_at_the_reexec_ends_done_and_releases_its_dependent_and_schedules_keep_their_time(
) {
    let (d, binary) = start_from_copy_with(&[]);
    let release = d.path("release").display().to_string();
    d.write_unit(
        "migrate",
        &format!(
            "{}type = \"oneshot\"\n",
            sh_unit(&format!("while [ ! -e '{release}' ]; do sleep 0.05; done"))
        ),
    );
    d.write_unit("web", "command = \"sleep 300\"\nafter = [\"migrate\"]\n");
    d.write_unit(
        "tick",
        "command = \"true\"\ntype = \"oneshot\"\nschedule = \"every 60s\"\n",
    );
    d.ctl(&["daemon-reload"]);
    wait_for("migrate to run and web to wait", PATIENCE, || {
        d.unit("migrate")["job"]["runs"] == 1 && d.unit("web")["state"] == "waiting"
    });
    let next_run = |d: &Daemon| d.unit("tick")["job"]["next_run_in_ms"].as_u64();
    wait_for("tick's schedule to come closer", PATIENCE, || {
        next_run(&d).is_some_and(|ms| ms < 58_000)
    });

    replace_with_copy(&binary, Path::new(CLUSTERD));
    reexec(&d);
    // Not re-armed from the exec: due when it was.
    let after = next_run(&d).unwrap_or(u64::MAX);
    assert!(
        after < 58_000,
        "tick's next run moved to {after} ms\n{}",
        d.log()
    );
    let migrate = d.unit("migrate");
    assert_eq!(migrate["job"]["runs"], 1, "{migrate}");
    assert!(migrate["job"]["last_run"]["started_ago_ms"].as_u64() > Some(0));
    assert_eq!(d.unit("web")["state"], "waiting");

    // The run goes on in the new image: it ends done, and its dependent starts.
    fs::write(&release, "").expect("release");
    wait_for("migrate to be done", PATIENCE, || {
        d.unit("migrate")["state"] == "done"
    });
    let migrate = d.unit("migrate");
    assert_eq!(migrate["job"]["last_run"]["ok"], true, "{migrate}");
    assert_eq!(migrate["job"]["runs"], 1, "{migrate}");
    d.wait_running("web", 1);
}

#[test]
fn a_rolling_reload_under_way_at_the_reexec_goes_on_to_its_last_instance() {
    let (d, binary) = start_from_copy_with(&[]);
    let (slow, go) = (d.path("slow"), d.path("go"));
    // Ready at once; once `slow` exists, a new process is ready only when `go` exists.
    let script = format!(
        "if [ -e '{}' ]; then while [ ! -e '{}' ]; do sleep 0.05; done; fi; echo '{{\"act\":\"ready\"}}' >&$CLUSTERD_CHANNEL_FD; exec sleep 300",
        slow.display(),
        go.display()
    );
    let unit = format!("{}ready = \"notify\"\ninstances = 3\n", sh_unit(&script));
    load_unit(&d, "web", &unit);
    let old = d.wait_running("web", 3);
    fs::write(&slow, "").expect("slow");

    replace_with_copy(&binary, Path::new(CLUSTERD));
    std::thread::scope(|scope| {
        // Its connection is closed by the exec (it waits for the whole reload).
        let reload = scope.spawn(|| d.ctl(&["reload", "web"]));
        wait_for("web[0]'s new process to start", PATIENCE, || {
            d.unit("web")["instances"]
                .as_array()
                .is_some_and(|list| list.len() > 3)
        });
        reexec(&d);
        let _ = reload.join();
    });
    fs::write(&go, "").expect("go");
    wait_for("every instance to be replaced", PATIENCE, || {
        let pids = d.pids("web");
        pids.len() == 3 && pids.iter().all(|p| !old.contains(p))
    });
    wait_for("the old processes to be gone", PATIENCE, || {
        old.iter().all(|p| !alive(*p))
    });
    // Logged once the last old process is reaped (a zombie is not `alive` already).
    wait_for("the reload to end", PATIENCE, || {
        logged(&d, "web: reloaded 3 instance(s)") == 1
    });
}

#[test]
fn a_watched_change_noticed_before_the_reexec_still_reloads_after_it() {
    let (d, binary) = start_from_copy_with(&[]);
    let watched = d.path("app");
    fs::create_dir_all(&watched).expect("app dir");
    let unit = format!(
        "command = \"sleep 300\"\nwatch = [\"{}\"]\nwatch_delay = \"5s\"\n",
        toml_path(&watched)
    );
    load_unit(&d, "web", &unit);
    let old = d.wait_running("web", 1)[0];
    fs::write(watched.join("code.js"), "changed").expect("change");
    wait_for("the change to be noticed", PATIENCE, || {
        logged(&d, "web: watched files changed") > 0
    });

    replace_with_copy(&binary, Path::new(CLUSTERD));
    reexec(&d);
    assert!(
        logged(&d, "watched files changed; reloading") == 0,
        "reloaded before the re-exec: the quiet period is too short for this machine"
    );
    // Its quiet period came along: the reload happens once it is over.
    wait_for("web to be reloaded", PATIENCE, || {
        d.pids("web").first().is_some_and(|p| *p != old)
    });
    assert_eq!(logged(&d, "watched files changed; reloading"), 1);
}

#[test]
fn a_restart_waiting_for_its_stop_at_the_reexec_starts_the_unit_again() {
    let (d, binary) = start_from_copy_with(&[]);
    // Ignores SIGTERM: the stop waits for its SIGKILL, 3 s later.
    let unit = format!(
        "{}kill_timeout = \"3s\"\n",
        sh_unit("trap '' TERM; exec sleep 300")
    );
    load_unit(&d, "web", &unit);
    let old = d.wait_running("web", 1)[0];
    replace_with_copy(&binary, Path::new(CLUSTERD));
    std::thread::scope(|scope| {
        // Its connection is closed by the exec (the restart takes longer than a second).
        let restart = scope.spawn(|| d.ctl(&["restart", "web"]));
        wait_for("the restart's stop to begin", PATIENCE, || {
            logged(&d, &format!("web[0] (pid {old}): stopping with SIGTERM")) == 1
        });
        reexec(&d);
        // Told so, not answered as if done: asking again joins what goes on.
        let out = restart.join().expect("restart's thread");
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("closed the connection without answering"),
            "{}",
            stderr(&out)
        );
    });
    wait_for("web to run again, in a new process", PATIENCE, || {
        d.pids("web").first().is_some_and(|p| *p != old)
    });
    assert!(!alive(old));
    assert!(
        logged(&d, "killing it with SIGKILL") + logged(&d, "killed by SIGKILL") > 0,
        "{}",
        d.log()
    );
}

/// Counts the lines of clusterd's log that hold `what`, reading only what was added since
/// the last look (it is polled in a tight loop).
struct LogWatch {
    file: fs::File,
    seen: Vec<u8>,
}

impl LogWatch {
    fn new(d: &Daemon) -> LogWatch {
        LogWatch {
            file: fs::File::open(d.log_path()).expect("clusterd's log"),
            seen: Vec::new(),
        }
    }

    fn count(&mut self, what: &str) -> usize {
        use std::io::Read;
        let _ = self.file.read_to_end(&mut self.seen);
        String::from_utf8_lossy(&self.seen).matches(what).count()
    }

    /// Spins until the log holds more than `before` lines with `what` (no sleep: the caller
    /// acts within microseconds of the line).
    fn spin_until_more(&mut self, what: &str, before: usize) {
        use std::io::Read;
        let deadline = std::time::Instant::now() + PATIENCE;
        let mut tail = Vec::new();
        loop {
            tail.clear();
            let _ = self.file.read_to_end(&mut tail);
            if !tail.is_empty() {
                self.seen.extend_from_slice(&tail);
                if String::from_utf8_lossy(&self.seen).matches(what).count() > before {
                    return;
                }
            }
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for {what:?} in clusterd's log"
            );
            std::hint::spin_loop();
        }
    }
}

/// Writes unit `name` by rename: a SIGHUP never has clusterd read half of it.
fn write_unit_whole(d: &Daemon, name: &str, text: &str) {
    let staged = d.path(&format!("{name}.toml.new"));
    fs::write(&staged, text).expect("write the unit");
    fs::rename(&staged, d.units_dir().join(format!("{name}.toml"))).expect("rename the unit");
}

/// A re-exec asked for on a thread of its own: the caller acts while it runs.
fn reexec_in_background(d: &Daemon) -> std::thread::JoinHandle<Output> {
    let socket = d.socket.clone();
    std::thread::spawn(move || {
        Command::new(CLUSTERCTL)
            .arg("--socket")
            .arg(&socket)
            .arg("daemon-reexec")
            .output()
            .expect("run clusterctl daemon-reexec")
    })
}

/// What the old image logs right before its exec (the signals are blocked from a few
/// microseconds after it).
const EXECING: &str = "daemon-reexec: exec'ing";

#[test]
fn signals_that_land_right_at_the_exec_are_each_taken_by_one_image() {
    // SIGHUP (`daemon-reload`: the marker's description changes), SIGUSR1 (the log files
    // are reopened: a line says so) and SIGTERM (clusterd stops) are sent the moment the old
    // image says it execs: within microseconds of its execve, where a signal that reached
    // another thread's handler was lost with the pipe it wrote to. A unit crashing all along
    // adds SIGCHLDs.
    let marker = |generation: usize| {
        format!(
            "type = \"oneshot\"\ncommand = [\"true\"]\nschedule = \"every 24h\"\ndescription = \"generation {generation}\"\n"
        )
    };
    let crasher = "command = [\"sh\", \"-c\", \"sleep 0.05\"]\nrestart_limit = { burst = 100000, interval = \"1s\" }\n";
    let (mut d, binary) = start_from_copy_with(&[
        ("web", TWO_SLEEPERS),
        ("marker", &marker(0)),
        ("crasher", crasher),
    ]);
    let pids = d.wait_running("web", 2);
    let clusterd = d.pid();
    let mut log = LogWatch::new(&d);
    let description = |d: &Daemon| d.unit("marker")["description"].as_str().map(String::from);
    for round in 1..=12 {
        write_unit_whole(&d, "marker", &marker(round));
        replace_with_copy(&binary, Path::new(CLUSTERD));
        let execs = log.count(EXECING);
        let reopens = log.count("SIGUSR1: reopening the log files");
        let asked = reexec_in_background(&d);
        log.spin_until_more(EXECING, execs);
        send_signal(clusterd, libc::SIGHUP);
        send_signal(clusterd, libc::SIGUSR1);
        let out = asked.join().expect("the re-exec's thread");
        assert_eq!(out.status.code(), Some(0), "{}\n{}", stderr(&out), d.log());
        let wanted = format!("generation {round}");
        wait_for(
            &format!("round {round}: the SIGHUP to be taken"),
            PATIENCE,
            || description(&d).as_deref() == Some(wanted.as_str()),
        );
        wait_for(
            &format!("round {round}: the SIGUSR1 to be taken"),
            PATIENCE,
            || log.count("SIGUSR1: reopening the log files") > reopens,
        );
    }
    assert_eq!(d.pids("web"), pids);
    // The crasher's exits are reaped and restarted on (no SIGCHLD lost for good).
    let restarts = |d: &Daemon| d.unit("crasher")["instances"][0]["restarts"].as_u64();
    let before = restarts(&d).unwrap_or(0);
    wait_for("the crasher to be restarted on", PATIENCE, || {
        restarts(&d).is_some_and(|r| r > before + 3)
    });
    // And a SIGTERM at the exec stops clusterd, in whichever image takes it.
    replace_with_copy(&binary, Path::new(CLUSTERD));
    let execs = log.count(EXECING);
    let asked = reexec_in_background(&d);
    log.spin_until_more(EXECING, execs);
    send_signal(clusterd, libc::SIGTERM);
    let status = d.wait_exit(PATIENCE);
    let _ = asked.join();
    assert_eq!(status.code(), Some(0), "{}", d.log());
    for pid in pids {
        assert!(!alive(pid), "instance {pid} outlived clusterd");
    }
}

/// clusterd run from a copy (returned) with `--metrics-listen 127.0.0.1:PORT`, and two
/// instances of `web`; the metrics address.
fn start_from_copy_with_metrics() -> (Daemon, PathBuf, std::net::SocketAddr) {
    let at = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut binary = PathBuf::new();
    let d = Daemon::start_program_with_args(
        &[("web", TWO_SLEEPERS)],
        &["--metrics-listen", &at.to_string()],
        |dir| {
            binary = clusterd_copy(dir);
            binary.clone()
        },
    );
    d.wait_running("web", 2);
    (d, binary, at)
}

/// One scrape on a new connection: the whole answer, or what went wrong (refused, cut,
/// malformed).
fn scrape_once(at: std::net::SocketAddr) -> Result<(), String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&at, Duration::from_secs(10))
        .map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(15)));
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n")
        .map_err(|e| format!("request: {e}"))?;
    let mut answer = Vec::new();
    stream
        .read_to_end(&mut answer)
        .map_err(|e| format!("answer cut after {} bytes: {e}", answer.len()))?;
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no head in {} bytes", answer.len()))?;
    let length: Option<usize> = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .and_then(|v| v.trim().parse().ok());
    if !head.starts_with("HTTP/1.1 200 ")
        || length != Some(body.len())
        || !body.contains("# TYPE clusterd_instance_up gauge\n")
    {
        return Err(format!(
            "malformed answer: {head:?}, {} bytes of body",
            body.len()
        ));
    }
    Ok(())
}

#[test]
fn scrapes_all_along_are_all_answered_through_reexecs() {
    let (d, binary, at) = start_from_copy_with_metrics();
    wait_for("a first scrape", PATIENCE, || scrape_once(at).is_ok());
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let scrapers: Vec<_> = (0..4)
        .map(|_| {
            let (stop, answered) = (
                std::sync::Arc::clone(&stop),
                std::sync::Arc::clone(&answered),
            );
            std::thread::spawn(move || {
                let (mut failures, mut slowest) = (Vec::new(), Duration::ZERO);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let asked = std::time::Instant::now();
                    match scrape_once(at) {
                        Ok(()) => {
                            answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        Err(why) => failures.push(why),
                    }
                    slowest = slowest.max(asked.elapsed());
                }
                (failures, slowest)
            })
        })
        .collect();
    let count = || answered.load(std::sync::atomic::Ordering::Relaxed);
    for _ in 0..4 {
        let before = count();
        wait_for("scrapes before the re-exec", PATIENCE, || {
            count() > before + 20
        });
        replace_with_copy(&binary, Path::new(CLUSTERD));
        reexec(&d);
    }
    let before = count();
    wait_for("scrapes after the last re-exec", PATIENCE, || {
        count() > before + 20
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for scraper in scrapers {
        let (failures, slowest) = scraper.join().expect("scraper");
        assert!(failures.is_empty(), "{failures:?}\n{}", d.log());
        // Generous: a scrape waits out the pause, tens of milliseconds.
        assert!(
            slowest < Duration::from_secs(10),
            "slowest scrape {slowest:?}"
        );
    }
    let log = d.log();
    assert!(!log.contains("binding it again"), "{log}");
    assert!(!log.contains("cannot listen for metrics"), "{log}");
}

/// How many sockets process `pid` holds.
fn sockets_of(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.filter_map(|entry| fs::read_link(entry.ok()?.path()).ok())
                .filter(|target| target.to_string_lossy().starts_with("socket:"))
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn a_metrics_client_that_never_sends_its_request_neither_holds_nor_fails_a_reexec() {
    use std::io::{Read, Write};
    let (d, binary, at) = start_from_copy_with_metrics();
    wait_for("a first scrape", PATIENCE, || scrape_once(at).is_ok());
    let clusterd = d.pid();
    let sockets = || sockets_of(clusterd);
    let sockets_before = sockets();
    // Clients that send half a request, which clusterd accepts and holds, and silent ones,
    // which the kernel holds in the listen queue (TCP_DEFER_ACCEPT): those are carried over
    // with the listener and cost the new image what they cost the old one.
    let mut half = Vec::new();
    let mut silent = Vec::new();
    for _ in 0..3 {
        let mut stream = std::net::TcpStream::connect(at).expect("connect");
        stream.write_all(b"GET /metr").expect("half a request");
        half.push(stream);
        silent.push(std::net::TcpStream::connect(at).expect("connect"));
    }
    wait_for("clusterd to accept the half requests", PATIENCE, || {
        sockets() >= sockets_before + half.len()
    });
    replace_with_copy(&binary, Path::new(CLUSTERD));
    let asked = std::time::Instant::now();
    reexec(&d);
    let took = asked.elapsed();
    // Generous (a loaded machine): the connections get a quarter of a second.
    assert!(
        took < Duration::from_secs(10),
        "daemon-reexec took {took:?}"
    );
    // Each was closed by the old image, none is held by the new one.
    for mut stream in half {
        let _ = stream.set_read_timeout(Some(PATIENCE));
        let mut rest = Vec::new();
        let end = stream.read_to_end(&mut rest);
        assert!(
            !end.as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::WouldBlock),
            "a half request's connection is still open: {end:?}"
        );
    }
    drop(silent);
    wait_for("clusterd to hold no hostile connection", PATIENCE, || {
        sockets() <= sockets_before
    });
    scrape_once(at).expect("a scrape after the re-exec");
    assert!(d.log().contains("for the re-exec"), "{}", d.log());
}

#[test]
fn a_logs_follower_that_has_shown_no_line_yet_shows_no_old_line_after_a_reexec() {
    // `quiet` wrote its lines before the follower started, then nothing until `go` exists;
    // the follower (`-n 0`, every unit) has shown none of its lines at the first re-exec,
    // and shows each of its new ones once, those written during the second re-exec too.
    // Before, it asked for the last 1000 lines and, having no last line to find among
    // them, showed them all again.
    let go = "go";
    let quiet = format!(
        "command = [\"sh\", \"-c\", \"for i in 1 2 3 4 5; do echo old $i; done; while [ ! -e {go} ]; do sleep 0.01; done; i=0; while true; do i=$((i+1)); echo new $i; sleep 0.002; done\"]\n"
    );
    let writer = "command = [\"sh\", \"-c\", \"i=0; while true; do i=$((i+1)); echo line $i; sleep 0.005; done\"]\n";
    let (d, binary) = start_from_copy_with(&[("alpha", writer), ("quiet", &quiet)]);
    d.wait_running("alpha", 1);
    wait_for("quiet's old lines to be logged", PATIENCE, || {
        fs::read_to_string(d.log_dir().join("quiet.log"))
            .unwrap_or_default()
            .contains("out | old 5")
    });
    let shown = d.path("followed.txt");
    let mut follower = Command::new(CLUSTERCTL)
        .arg("--socket")
        .arg(&d.socket)
        .args(["logs", "-f", "-n", "0"])
        .current_dir(d.dir.path())
        .stdout(fs::File::create(&shown).expect("output file"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run clusterctl logs -f");
    let text = || fs::read_to_string(&shown).unwrap_or_default();
    let alpha_lines = || text().matches("alpha[0] out | line ").count();
    // Every unit's follower is open before any line is shown.
    wait_for("the follower to show alpha's lines", PATIENCE, || {
        alpha_lines() > 10
    });
    replace_with_copy(&binary, Path::new(CLUSTERD));
    reexec(&d);
    let after = alpha_lines() + 50;
    wait_for("the follower to go on after the re-exec", PATIENCE, || {
        alpha_lines() > after
    });
    assert!(
        !text().contains("out | old"),
        "old lines shown again:\n{}",
        text()
    );
    // Now quiet writes, and goes on writing during a second re-exec.
    fs::write(d.path(go), "").expect("go");
    let news = || -> Vec<u64> {
        text()
            .lines()
            .filter_map(|l| l.split_once("quiet[0] out | new "))
            .filter_map(|(_, n)| n.trim().parse().ok())
            .collect()
    };
    wait_for("quiet's new lines to be shown", PATIENCE, || {
        news().len() > 10
    });
    replace_with_copy(&binary, Path::new(CLUSTERD));
    reexec(&d);
    let after = news().last().copied().unwrap_or(0) + 300;
    wait_for("quiet's lines after the second re-exec", PATIENCE, || {
        news().last().is_some_and(|&n| n > after)
    });
    let alive_still = follower.try_wait().expect("try_wait").is_none();
    let _ = follower.kill();
    let _ = follower.wait();
    assert!(alive_still, "the follower ended");
    assert!(!text().contains("out | old"), "old lines shown again");
    assert_consecutive("", &news(), 1);
}

/// A TCP connection to `at` whose receive buffer is as small as the kernel allows (set
/// before the connect, so the window stays small): an answer larger than a few kilobytes
/// waits on clusterd's side until the client reads it.
fn connect_with_tiny_receive_buffer(at: std::net::SocketAddr) -> std::net::TcpStream {
    use std::os::fd::FromRawFd;
    let std::net::SocketAddr::V4(v4) = at else {
        panic!("an IPv4 address: {at}")
    };
    // SAFETY: a new socket, owned by the TcpStream below on success and closed on failure;
    // setsockopt and connect read only the locals they are given, of the sizes given.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let stream = std::net::TcpStream::from_raw_fd(fd);
        let size: libc::c_int = 1;
        let set = libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        assert_eq!(set, 0, "SO_RCVBUF: {}", std::io::Error::last_os_error());
        let address = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: v4.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(*v4.ip()).to_be(),
            },
            sin_zero: [0; 8],
        };
        let connected = libc::connect(
            fd,
            (&address as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        assert_eq!(connected, 0, "connect: {}", std::io::Error::last_os_error());
        stream
    }
}

/// A local user who scrapes and reads the answer a byte at a time (with a receive buffer
/// too small for it), while holding many half-sent requests, neither holds a `daemon-reexec`
/// past its bound nor makes it fail, and leaves no descriptor behind in either image. The
/// slow reader's connection ends (its answer whole or cut, never hung), and scrapes work
/// after the re-exec.
#[test]
fn a_metrics_client_that_reads_a_byte_at_a_time_neither_holds_nor_fails_a_reexec() {
    use std::io::{Read, Write};
    let at = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut binary = PathBuf::new();
    // Many instances, so the answer is larger than the socket buffers hold.
    let d = Daemon::start_program_with_args(
        &[("many", "command = \"sleep 300\"\ninstances = 400\n")],
        &["--metrics-listen", &at.to_string()],
        |dir| {
            binary = clusterd_copy(dir);
            binary.clone()
        },
    );
    d.wait_running("many", 400);
    wait_for("a first scrape", PATIENCE, || scrape_once(at).is_ok());
    let clusterd = d.pid();
    let sockets = || sockets_of(clusterd);
    let sockets_before = sockets();
    let mut slow = connect_with_tiny_receive_buffer(at);
    slow.write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n")
        .expect("request");
    slow.set_read_timeout(Some(PATIENCE)).expect("timeout");
    let reader = std::thread::spawn(move || {
        // A byte every 20 ms for 3 s (the re-exec happens meanwhile), then the rest at once:
        // what clusterd no longer holds (the kernel sends what it had taken) ends promptly.
        let slow_until = std::time::Instant::now() + Duration::from_secs(3);
        let mut got = Vec::new();
        let mut byte = [0u8; 1];
        while std::time::Instant::now() < slow_until {
            match slow.read(&mut byte) {
                Ok(0) => return Ok(got),
                Ok(_) => got.push(byte[0]),
                Err(e) => return Err(format!("after {} bytes: {e}", got.len())),
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        match slow.read_to_end(&mut got) {
            Ok(_) => Ok(got),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Ok(got),
            Err(e) => Err(format!("after {} bytes: {e}", got.len())),
        }
    });
    let mut half = Vec::new();
    for _ in 0..40 {
        let mut stream = std::net::TcpStream::connect(at).expect("connect");
        stream.write_all(b"GET /metr").expect("half a request");
        half.push(stream);
    }
    wait_for("clusterd to accept the slow reader", PATIENCE, || {
        sockets() > sockets_before
    });
    replace_with_copy(&binary, Path::new(CLUSTERD));
    let asked = std::time::Instant::now();
    reexec(&d);
    let took = asked.elapsed();
    eprintln!("daemon-reexec with a slow reader and 40 half requests took {took:?}");
    // Generous (a loaded machine): the scrapes get a quarter of a second.
    assert!(
        took < Duration::from_secs(10),
        "daemon-reexec took {took:?}"
    );
    let read = reader.join().expect("the reader thread");
    let read = read.expect("the slow reader's connection ends, not hangs");
    let text = String::from_utf8_lossy(&read);
    let said = text
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .unwrap_or("?");
    eprintln!(
        "the slow reader got {} bytes (Content-Length: {said})",
        read.len()
    );
    scrape_once(at).expect("a scrape after the re-exec");
    drop(half);
    wait_for("clusterd to hold no hostile connection", PATIENCE, || {
        sockets() <= sockets_before
    });
    scrape_once(at).expect("a scrape after the hostile connections went");
}
