//! Hostile review of `[health]`/`watchdog`, one-shot jobs and `after`, and the spawn that
//! shares clusterd's fd table: what a check command, a job or a crowd of control
//! connections can do to clusterd, with real processes.

use crate::common;
use common::*;

use std::fs;
use std::time::Duration;

fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("clusterd-hostile-hj-")
        .tempdir()
        .expect("scratch dir")
}

/// The pids a file lists, one a line.
fn listed_pids(path: &std::path::Path) -> Vec<u32> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// A check command that leaves a process behind in its group (`sleep 300 &`) and exits 0:
/// each check used to leave one more process running for 300 s, so an interval of 200 ms
/// piled up thousands. What a check leaves in its process group now ends with it.
#[test]
fn what_a_health_command_leaves_behind_in_its_group_ends_with_it() {
    let dir = scratch();
    let bg = dir.path().join("bg");
    let unit = format!(
        "command = [\"sleep\", \"997\"]\n[health]\ncommand = [\"sh\", \"-c\", \"sleep 300 & echo $! >> {}; exit 0\"]\ninterval = \"200ms\"\n",
        bg.display()
    );
    let d = Daemon::start(&[("web", &unit)]);
    d.wait_running("web", 1);
    wait_for("four checks", PATIENCE, || listed_pids(&bg).len() >= 4);
    let first = listed_pids(&bg)[..3].to_vec();
    let leftovers = || {
        first
            .iter()
            .copied()
            .filter(|&p| alive(p))
            .collect::<Vec<_>>()
    };
    let outcome = std::panic::catch_unwind(|| {
        wait_for("the checks' leftovers to end", PATIENCE, || {
            leftovers().is_empty()
        })
    });
    for pid in listed_pids(&bg) {
        if alive(pid) {
            send_signal(pid, libc::SIGKILL);
        }
    }
    assert!(outcome.is_ok(), "still running: {:?}", leftovers());
    let unit = d.unit("web");
    assert_eq!(
        unit["health_replacements"].as_u64().unwrap_or(0),
        0,
        "{unit}"
    );
}

fn sh(script: &str) -> String {
    format!(
        "command = [\"sh\", \"-c\", \"{}\"]\n",
        script.replace('\\', "\\\\").replace('"', "\\\"")
    )
}

fn state(d: &Daemon, unit: &str) -> String {
    d.unit(unit)["state"].as_str().unwrap_or("").to_string()
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A one-shot that runs until `go` exists, then appends a line to `ran` and exits 0.
fn gated_job(go: &std::path::Path, ran: &std::path::Path) -> String {
    format!(
        "{}type = \"oneshot\"\n",
        sh(&format!(
            "while [ ! -e '{}' ]; do sleep 0.05; done; echo ran >> '{}'",
            go.display(),
            ran.display()
        ))
    )
}

fn lines(path: &std::path::Path) -> usize {
    fs::read_to_string(path).unwrap_or_default().lines().count()
}

/// `clusterctl stop web` while web waits for its `after`: web is stopped, and the job's
/// later success does not start it; `start web` does.
#[test]
fn a_waiting_unit_stopped_by_hand_is_not_started_by_its_dependency_later() {
    let d = Daemon::start(&[]);
    let (go, ran, web) = (d.path("go"), d.path("ran"), d.path("web.start"));
    d.write_unit("migrate", &gated_job(&go, &ran));
    d.write_unit(
        "web",
        &format!(
            "{}after = [\"migrate\"]\n",
            sh(&format!("echo x >> '{}'; exec sleep 300", web.display()))
        ),
    );
    let out = d.ctl(&["daemon-reload"]);
    assert!(out.status.success(), "{}", text(&out));
    wait_for("web to wait", PATIENCE, || state(&d, "web") == "waiting");
    let out = d.ctl(&["stop", "web"]);
    assert!(out.status.success(), "{}", text(&out));
    wait_for("web to be stopped", PATIENCE, || {
        state(&d, "web") == "stopped"
    });
    fs::write(&go, "").unwrap();
    wait_for("migrate to be done", PATIENCE, || {
        state(&d, "migrate") == "done"
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(lines(&web), 0, "web started although stopped by hand");
    assert_eq!(state(&d, "web"), "stopped");
    let out = d.ctl(&["start", "web"]);
    assert!(out.status.success(), "{}", text(&out));
    wait_for("web to start", PATIENCE, || lines(&web) == 1);
}

/// Many `clusterctl start JOB` at once, while a run is going: every client gets an answer,
/// and runs never overlap.
#[test]
fn a_storm_of_starts_of_a_running_job_never_overlaps_runs_and_answers_everyone() {
    let d = Daemon::start(&[]);
    let (go, ran) = (d.path("go"), d.path("ran"));
    let busy = d.path("busy");
    d.write_unit(
        "job",
        &format!(
            "{}type = \"oneshot\"\n",
            sh(&format!(
                "if [ -e '{b}' ]; then echo overlap >> '{r}'; fi; touch '{b}'; while [ ! -e '{g}' ]; do sleep 0.05; done; rm -f '{b}'; echo ran >> '{r}'",
                b = busy.display(),
                g = go.display(),
                r = ran.display()
            ))
        ),
    );
    let out = d.ctl(&["daemon-reload"]);
    assert!(out.status.success(), "{}", text(&out));
    wait_for("the job to run", PATIENCE, || busy.exists());
    let clients: Vec<_> = (0..40)
        .map(|_| {
            std::process::Command::new(env!("CARGO_BIN_EXE_clusterctl"))
                .args(["--socket", d.socket.to_str().unwrap(), "start", "job"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("clusterctl")
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    fs::write(&go, "").unwrap();
    let mut answers = Vec::new();
    for client in clients {
        let out = client.wait_with_output().expect("clusterctl ends");
        answers.push((out.status.code(), text(&out)));
    }
    wait_for("the job to be done", PATIENCE, || {
        state(&d, "job") == "done"
    });
    let runs = fs::read_to_string(&ran).unwrap_or_default();
    assert!(!runs.contains("overlap"), "{runs}");
    for (code, out) in &answers {
        assert!(code.is_some(), "{out}");
    }
    println!("runs: {}; answers: {:?}", lines(&ran), &answers[..2]);
}

/// daemon-reload turns a running service into a one-shot: it used to be rolled over like a
/// changed service, so its new process ran outside of any run — status said `runs: 0`, and
/// when that process failed the unit was `failed` with `failures: 0` and no last run (the
/// metrics and the alert on them missed it). A change of `type` is a restart now: the
/// one-shot's run begins with its process, and ends counted.
#[test]
fn daemon_reload_turning_a_running_service_into_a_oneshot_begins_a_counted_run() {
    let d = Daemon::start(&[("u", "command = [\"sleep\", \"300\"]\n")]);
    let first = d.wait_running("u", 1)[0];
    d.write_unit("u", "command = [\"sleep\", \"300\"]\ntype = \"oneshot\"\n");
    let out = d.ctl(&["daemon-reload"]);
    assert!(out.status.success(), "{}", text(&out));
    wait_for("the one-shot's process", PATIENCE, || {
        d.pids("u").first().is_some_and(|&p| p != first)
    });
    assert!(!alive(first), "the service's process still runs");
    let unit = d.unit("u");
    assert_eq!(unit["job"]["runs"], 1, "{unit}");
    send_signal(d.pids("u")[0], libc::SIGTERM);
    wait_for("the run to fail", PATIENCE, || state(&d, "u") == "failed");
    let unit = d.unit("u");
    assert_eq!(unit["job"]["failures"], 1, "{unit}");
    assert_eq!(unit["job"]["last_run"]["ok"], false, "{unit}");
    // And back: the one-shot becomes a service that runs.
    d.write_unit("u", "command = [\"sleep\", \"300\"]\n");
    let out = d.ctl(&["daemon-reload"]);
    assert!(out.status.success(), "{}", text(&out));
    wait_for("the service to run", PATIENCE, || {
        state(&d, "u") == "running"
    });
}

/// A running one-shot turned into a service by daemon-reload: its run ends (stopped, not
/// failed) and the service starts.
#[test]
fn daemon_reload_turning_a_running_oneshot_into_a_service_ends_its_run() {
    let d = Daemon::start(&[("u", "command = [\"sleep\", \"300\"]\ntype = \"oneshot\"\n")]);
    let first = d.wait_running("u", 1)[0];
    d.write_unit("u", "command = [\"sleep\", \"300\"]\n");
    let out = d.ctl(&["daemon-reload"]);
    assert!(out.status.success(), "{}", text(&out));
    wait_for("the service's process", PATIENCE, || {
        d.pids("u").first().is_some_and(|&p| p != first) && state(&d, "u") == "running"
    });
    assert!(!alive(first), "the one-shot's process still runs");
}

/// daemon-reload removes the unit a waiting unit is ordered after: the dependent's file no
/// longer checks, so the reload says so and the dependent keeps waiting, saying for what.
#[test]
fn daemon_reload_removing_the_dependency_of_a_waiting_unit_says_why_it_waits() {
    let d = Daemon::start(&[]);
    let (go, ran, web) = (d.path("go"), d.path("ran"), d.path("web.start"));
    d.write_unit("migrate", &gated_job(&go, &ran));
    d.write_unit(
        "web",
        &format!(
            "{}after = [\"migrate\"]\n",
            sh(&format!("echo x >> '{}'; exec sleep 300", web.display()))
        ),
    );
    let out = d.ctl(&["daemon-reload"]);
    assert!(out.status.success(), "{}", text(&out));
    wait_for("web to wait", PATIENCE, || state(&d, "web") == "waiting");
    d.remove_unit("migrate");
    let out = d.ctl(&["daemon-reload"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("no unit is named \"migrate\""),
        "{}",
        text(&out)
    );
    // The removed job stops first (its process gets SIGTERM), then is gone.
    wait_for("web to wait for a unit not loaded", PATIENCE, || {
        d.unit("web")["waiting_for"] == "migrate (not loaded)"
    });
    assert_eq!(state(&d, "web"), "waiting");
    assert_eq!(lines(&web), 0);
}

/// An instance's fds as (number, what): `socket`, `pipe`, or the path.
fn fd_kinds(pid: u32) -> Vec<(u32, String)> {
    let mut fds: Vec<(u32, String)> = fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.filter_map(|entry| {
                let entry = entry.ok()?;
                let number = entry.file_name().to_string_lossy().parse().ok()?;
                let target = fs::read_link(entry.path()).ok()?;
                let target = target.to_string_lossy();
                let kind = target.split(":[").next().unwrap_or("").to_string();
                Some((number, kind))
            })
            .collect()
        })
        .unwrap_or_default();
    fds.sort();
    fds
}

/// Children share clusterd's fd table until they unshare it: instances started while
/// many control connections are open (40 of the 64 clusterd serves), and while another thread of clusterd accepts
/// and closes connections all the time, get exactly the fds the first instance got.
#[test]
fn instances_started_among_many_open_and_churning_connections_get_exactly_their_fds() {
    let d = Daemon::start_with_fd_limit(&[("u", "command = [\"sleep\", \"997\"]\n")], Some(8192));
    let first = d.wait_running("u", 1)[0];
    let expected = fd_kinds(first);
    assert!(!expected.is_empty());
    let held: Vec<_> = (0..40)
        .filter_map(|_| std::os::unix::net::UnixStream::connect(&d.socket).ok())
        .collect();
    assert_eq!(held.len(), 40);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let churn = {
        let (stop, socket) = (stop.clone(), d.socket.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = std::os::unix::net::UnixStream::connect(&socket);
                n += 1;
                // One at a time, a little apart: the test's own requests need a place.
                std::thread::sleep(Duration::from_millis(1));
            }
            n
        })
    };
    let out = d.ctl(&["scale", "u", "40"]);
    let pids = d.wait_running("u", 40);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let churned = churn.join().unwrap_or(0);
    assert!(out.status.success(), "{}", text(&out));
    drop(held);
    let wrong: Vec<_> = pids
        .iter()
        .map(|&p| (p, fd_kinds(p)))
        .filter(|(_, fds)| *fds != expected)
        .collect();
    println!("connections made during the start: {churned}; expected fds {expected:?}");
    assert!(wrong.is_empty(), "expected {expected:?}, got {wrong:?}");
}

/// clusterd started with fds 0, 1 and 2 closed: its own first files take those numbers, and
/// none of them may become an instance's or a health check's stdin, stdout or stderr.
#[test]
fn with_its_stdio_closed_clusterd_gives_instances_and_checks_exactly_their_own_fds() {
    let dir = scratch();
    let checks = dir.path().join("checks");
    let unit = format!(
        "command = [\"sh\", \"-c\", \"echo hello-from-instance; exec sleep 997\"]\ninstances = 3\n[health]\ncommand = [\"sh\", \"-c\", \"ls -l /proc/self/fd/ > {}.$$\"]\ninterval = \"200ms\"\n",
        checks.display()
    );
    let d = Daemon::start_with_stdio_closed(&[("u", &unit)], 8192);
    let pids = d.wait_running("u", 3);
    let expected: Vec<(u32, String)> = vec![
        (0, "/dev/null".into()),
        (1, "pipe".into()),
        (2, "pipe".into()),
        (3, "socket".into()),
    ];
    for &pid in &pids {
        assert_eq!(fd_kinds(pid), expected, "instance {pid}");
    }
    wait_for("the instances' output in their log", PATIENCE, || {
        d.log_files("u").iter().any(|f| {
            fs::read_to_string(f)
                .unwrap_or_default()
                .contains("hello-from-instance")
        })
    });
    wait_for("a health check", PATIENCE, || {
        d.unit("u")["instances"][0]["health"]["state"] == "ok"
    });
    // A check sees /dev/null on 0, 1 and 2 (its output is thrown away) and nothing else
    // of clusterd's but the directory `ls` reads.
    // A listing once `ls` has written it (the shell creates the file before).
    let complete = || {
        fs::read_dir(dir.path())
            .ok()?
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with("checks."))
            .map(|e| fs::read_to_string(e.path()).unwrap_or_default())
            .find(|listing| listing.lines().any(|l| l.contains(" 2 -> ")))
    };
    wait_for("a check's complete listing", PATIENCE, || {
        complete().is_some()
    });
    let listing = complete().unwrap_or_default();
    let targets: Vec<&str> = listing
        .lines()
        .filter_map(|l| l.split_once(" -> ").map(|(_, t)| t))
        .collect();
    assert!(targets.len() <= 4, "{listing}");
    assert!(
        targets.iter().filter(|t| **t == "/dev/null").count() >= 2,
        "{listing}"
    );
}

/// SIGTERM to clusterd while a job runs (ignoring SIGTERM, so it needs its kill_timeout), a
/// service it is ordered after runs, and a unit waits for the job: clusterd stops the job
/// before the service it is after, never starts the waiting unit, and exits.
#[test]
fn shutdown_while_a_job_runs_and_a_unit_waits_for_it_stops_in_order_and_exits() {
    let mut d = Daemon::start(&[]);
    let (db_end, job_end, web) = (d.path("db.end"), d.path("job.end"), d.path("web.start"));
    d.write_unit(
        "db",
        &sh(&format!(
            "trap 'date +%s%N >> {}; exit 0' TERM; while :; do sleep 0.05; done",
            db_end.display()
        )),
    );
    d.write_unit(
        "job",
        &format!(
            "{}type = \"oneshot\"\nafter = [\"db\"]\nkill_timeout = \"1s\"\n",
            sh(&format!(
                "trap '' TERM; trap 'date +%s%N >> {}' EXIT; while :; do sleep 0.05; done",
                job_end.display()
            ))
        ),
    );
    d.write_unit(
        "web",
        &format!(
            "{}after = [\"job\"]\n",
            sh(&format!("echo x >> '{}'; exec sleep 300", web.display()))
        ),
    );
    let out = d.ctl(&["daemon-reload"]);
    assert!(out.status.success(), "{}", text(&out));
    wait_for("the job to run and web to wait", PATIENCE, || {
        state(&d, "job") == "running" && state(&d, "web") == "waiting"
    });
    let job_pid = d.pids("job")[0];
    let db_pid = d.pids("db")[0];
    send_signal(d.pid(), libc::SIGTERM);
    let status = d.wait_exit(PATIENCE);
    assert!(status.success(), "{status:?}\n{}", d.log());
    assert!(!alive(job_pid) && !alive(db_pid));
    assert_eq!(
        lines(&web),
        0,
        "the waiting unit was started during the shutdown"
    );
    // The job was SIGKILLed (no EXIT trap), db stopped by its trap after the job was gone.
    assert_eq!(lines(&db_end), 1, "{}", d.log());
}

fn ctl_async(d: &Daemon, args: &[&str]) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_clusterctl"))
        .arg("--socket")
        .arg(&d.socket)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("clusterctl")
}

/// `start JOB` while a `stop JOB` waits out the job's kill_timeout (it ignores SIGTERM):
/// both get an answer, and two runs never overlap.
#[test]
fn start_of_a_job_during_its_stop_answers_both_and_never_overlaps_runs() {
    let d = Daemon::start(&[]);
    let (busy, log) = (d.path("busy"), d.path("runs"));
    d.write_unit(
        "job",
        &format!(
            "{}type = \"oneshot\"\nkill_timeout = \"1s\"\n",
            sh(&format!(
                "trap '' TERM; if [ -e '{b}' ] && kill -0 $(cat '{b}'); then echo overlap >> '{l}'; fi; echo $$ > '{b}'; echo run >> '{l}'; i=0; while [ $i -lt 30 ]; do sleep 0.05; i=$((i+1)); done",
                b = busy.display(),
                l = log.display()
            ))
        ),
    );
    let out = d.ctl(&["daemon-reload"]);
    assert!(out.status.success(), "{}", text(&out));
    wait_for("the job to run", PATIENCE, || busy.exists());
    let stop = ctl_async(&d, &["stop", "job"]);
    std::thread::sleep(Duration::from_millis(200));
    let starts: Vec<_> = (0..5).map(|_| ctl_async(&d, &["start", "job"])).collect();
    let stopped = stop.wait_with_output().expect("stop answers");
    let answers: Vec<_> = starts
        .into_iter()
        .map(|c| c.wait_with_output().expect("start answers"))
        .collect();
    assert!(stopped.status.success(), "{}", text(&stopped));
    for a in &answers {
        assert!(a.status.success(), "{}", text(a));
    }
    let runs = fs::read_to_string(&log).unwrap_or_default();
    assert!(!runs.contains("overlap"), "{runs}");
    // The stopped run, then the starts' (one, unless a client came after it ended).
    assert!(runs.lines().count() >= 2, "{runs}");
    assert_eq!(state(&d, "job"), "done");
}

/// Pings WATCHDOG=1 every 0.1 s after READY=1, unless it is the first process of its index
/// to start after DIR/hang-INDEX was made (it renames it away): that one says READY=1 and
/// never pings, hung from the start. Logs `start PID` to DIR/log.
const PINGER: &str = r#"
import os, socket, sys, time
d = sys.argv[1]
with open(os.path.join(d, "log"), "a") as f:
    f.write("start %d\n" % os.getpid())
index = os.environ["CLUSTERD_INSTANCE"]
try:
    os.rename(os.path.join(d, "hang-" + index), os.path.join(d, "hung-" + index))
    hang = True
except FileNotFoundError:
    hang = False
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.connect(os.environ["NOTIFY_SOCKET"])
time.sleep(0.2)
s.send(b"READY=1")
while True:
    if not hang:
        s.send(b"WATCHDOG=1")
    time.sleep(0.1)
"#;

/// Replacements that hang while a rolling reload goes on (each is replaced again by its
/// watchdog), and a scale down meanwhile (refused with a clear answer while the reload
/// runs, or done): every index ends with exactly one running, healthy, new instance; no old
/// one is left; the unit did not give up.
#[test]
fn watchdog_replacements_racing_a_rolling_reload_and_a_scale_down_leave_one_instance_per_index() {
    if !available("python3", runs("python3", &["--version"])) {
        return;
    }
    let dir = scratch();
    let script = dir.path().join("pinger.py");
    fs::write(&script, PINGER).unwrap();
    let unit = |extra: &str| {
        format!(
            "command = [\"python3\", \"{}\", \"{}\"]\nready = \"notify\"\nwatchdog = \"600ms\"\ninstances = 6\nrestart_limit = {{ burst = 100, interval = \"60s\" }}\n{extra}",
            script.display(),
            dir.path().display()
        )
    };
    let d = Daemon::start(&[("u", &unit(""))]);
    let old = d.wait_running("u", 6);
    wait_for("all ready", PATIENCE, || {
        d.unit("u")["instances"]
            .as_array()
            .is_some_and(|l| l.iter().filter(|i| i["state"] == "running").count() == 6)
    });
    // The reload's replacements of indexes 1 and 3 hang from their start.
    fs::write(dir.path().join("hang-1"), "").unwrap();
    fs::write(dir.path().join("hang-3"), "").unwrap();
    let reload = ctl_async(&d, &["reload", "u"]);
    wait_for("index 1's replacement to start", PATIENCE, || {
        dir.path().join("hung-1").exists()
    });
    let scale = ctl_async(&d, &["scale", "u", "4"]);
    let reload = reload.wait_with_output().expect("reload answers");
    let scale = scale.wait_with_output().expect("scale answers");
    println!("reload: {}scale: {}", text(&reload), text(&scale));
    // A scale during a reload is refused with a clear answer, or done.
    let wanted: u64 = if scale.status.success() {
        4
    } else {
        assert!(
            text(&scale).contains("a reload is in progress"),
            "{}",
            text(&scale)
        );
        6
    };
    let healthy = || {
        let unit = d.unit("u");
        let list = unit["instances"].as_array().cloned().unwrap_or_default();
        let running: Vec<_> = list
            .iter()
            .filter(|i| i["state"] == "running" && !i["draining"].as_bool().unwrap_or(false))
            .collect();
        let mut indexes: Vec<u64> = running.iter().filter_map(|i| i["index"].as_u64()).collect();
        indexes.sort();
        list.len() as u64 == wanted
            && indexes == (0..wanted).collect::<Vec<_>>()
            && running.iter().all(|i| i["health"]["state"] == "ok")
            && old.iter().all(|&p| !alive(p))
            && dir.path().join("hung-3").exists()
    };
    let outcome = std::panic::catch_unwind(|| {
        wait_for("healthy instances, none of the old ones", PATIENCE, healthy)
    });
    assert!(outcome.is_ok(), "{}", d.unit("u"));
    let unit = d.unit("u");
    assert_eq!(unit["gave_up"], false, "{unit}");
    assert!(
        unit["health_replacements"].as_u64() >= Some(2),
        "the hung replacements were not replaced: {unit}"
    );
    println!(
        "starts: {}",
        fs::read_to_string(dir.path().join("log")).unwrap_or_default()
    );
}

/// Before READY=1: WATCHDOG=1 does not count (the watchdog has not started), and a flood
/// of WATCHDOG=trigger from a starting instance stops it once, restarts it within the
/// budget, and gives up once that is spent; clusterd answers throughout. It used to stop at
/// the second process: a replacement that declared itself hung before it was ready was
/// stopped, and the exit of a process clusterd stopped restarts nothing, so the index
/// stayed empty for good, the unit `stopped` without a give-up or an alarm.
#[test]
fn watchdog_trigger_floods_before_ready_restart_within_the_budget_and_give_up() {
    if !available("python3", runs("python3", &["--version"])) {
        return;
    }
    let dir = scratch();
    let script = dir.path().join("trigger.py");
    fs::write(
        &script,
        format!(
            r#"
import os, socket, time
with open("{}", "a") as f:
    f.write("start %d\n" % os.getpid())
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.connect(os.environ["NOTIFY_SOCKET"])
for _ in range(2000):
    try:
        s.send(b"WATCHDOG=1\nWATCHDOG=trigger")
    except OSError:
        time.sleep(0.001)
time.sleep(300)
"#,
            dir.path().join("starts").display()
        ),
    )
    .unwrap();
    let unit = format!(
        "command = [\"python3\", \"{}\"]\nready = \"notify\"\nwatchdog = \"5s\"\nrestart_limit = {{ burst = 3, interval = \"60s\" }}\nkill_timeout = \"1s\"\n",
        script.display()
    );
    let d = Daemon::start(&[("u", &unit)]);
    let outcome = std::panic::catch_unwind(|| {
        wait_for("the unit to give up", PATIENCE, || {
            assert!(d.ctl(&["status"]).status.success());
            d.unit("u")["gave_up"] == true
        })
    });
    assert!(
        outcome.is_ok(),
        "{}\n{}\n{}",
        d.unit("u"),
        fs::read_to_string(dir.path().join("starts")).unwrap_or_default(),
        d.log()
            .lines()
            .filter(|l| l.contains("u[") || l.contains("trigger"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let starts = lines(&dir.path().join("starts"));
    // The first start and its three restarts: one stop per process, however many triggers.
    assert_eq!(starts, 4, "{}", d.unit("u"));
    wait_for("no instance left", PATIENCE, || d.pids("u").is_empty());
}
