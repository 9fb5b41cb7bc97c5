//! clusterd as a container's main process: PID 1 of a PID namespace of its own (`unshare
//! --pid --fork --mount-proc`, the namespace a container runtime gives it), where it reaps
//! every orphan, stops everything gracefully on SIGTERM and exits with a status an
//! orchestrator understands; `--shutdown-delay` and `clusterctl ready` for its probes.

use crate::common;

use std::fs;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;

/// Whether this machine lets the test give clusterd a PID namespace (root and util-linux).
fn pid_namespaces_work() -> bool {
    available(
        "PID namespaces (root, unshare from util-linux)",
        have_root() && runs("unshare", &["--pid", "--fork", "--mount-proc", "true"]),
    )
}

/// Host pids and states of every process in the PID namespace of `pid`.
fn namespace_processes(pid: u32) -> Vec<(u32, char)> {
    let Ok(namespace) = fs::read_link(format!("/proc/{pid}/ns/pid")) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(other) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if fs::read_link(format!("/proc/{other}/ns/pid")).ok().as_ref() != Some(&namespace) {
            continue;
        }
        let state = fs::read_to_string(format!("/proc/{other}/stat"))
            .ok()
            .and_then(|stat| stat.rsplit_once(") ")?.1.chars().next())
            .unwrap_or('?');
        found.push((other, state));
    }
    found
}

/// Its pid inside its own namespace (the last field of `NSpid`).
fn pid_inside(pid: u32) -> Option<u32> {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))?
        .split_whitespace()
        .last()?
        .parse()
        .ok()
}

/// An instance that notes its SIGTERM (with the time) in `stopped` (and, once it can, that
/// it is up in `started`), and whose first act is to leave an orphan behind: a process whose parent exits at once, which then lives
/// 0.2 s and ends.
const SERVER: &str = r#"command = ["sh", "-c", """
trap 'echo "$(date +%s.%N)" >> stopped; exit 0' TERM
echo up >> started
(sh -c 'sleep 0.2; touch orphan-done' &)
while :; do sleep 0.05; done
"""]
instances = 2
"#;

fn now_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[test]
fn as_pid_1_clusterd_reaps_orphans_then_stops_everything_gracefully_on_sigterm_and_exits_0() {
    if !pid_namespaces_work() {
        return;
    }
    let mut daemon = Daemon::start_as_pid_1(&[("web", SERVER)], &[]);
    let clusterd = daemon.pid();
    assert_eq!(pid_inside(clusterd), Some(1), "clusterd is not PID 1");
    daemon.wait_running("web", 2);
    wait_for("the orphan to end", PATIENCE, || {
        daemon.path("orphan-done").exists()
    });
    // Both orphans ended; PID 1 reaped them, so no zombie stays in the namespace.
    wait_for("no zombie in the namespace", PATIENCE, || {
        namespace_processes(clusterd)
            .iter()
            .all(|&(_, state)| state != 'Z')
    });
    // As PID 1, clusterd logs units to the console by default.
    assert_eq!(daemon.unit("web")["log"], "console", "{}", daemon.log());

    let status = daemon.terminate();
    assert_eq!(status.code(), Some(0), "{}", daemon.log());
    let stopped = fs::read_to_string(daemon.path("stopped")).unwrap_or_default();
    assert_eq!(stopped.lines().count(), 2, "not every instance got SIGTERM");
    assert!(namespace_processes(clusterd).is_empty());
}

#[test]
fn with_exit_on_giveup_a_unit_that_gives_up_stops_the_others_and_clusterd_exits_69() {
    if !pid_namespaces_work() {
        return;
    }
    // It crashes once both web instances are up, so that they get a SIGTERM they can note.
    let crashy = r#"command = ["sh", "-c", "until [ \"$(wc -l < started)\" -ge 2 ]; do sleep 0.02; done; exit 1"]
restart_limit = { burst = 2, interval = "1m" }
"#;
    let mut daemon = Daemon::start_as_pid_1(
        &[("web", SERVER), ("crashy", crashy)],
        &["--exit-on-giveup"],
    );
    let status = daemon.wait_exit(PATIENCE);
    assert_eq!(status.code(), Some(69), "{}", daemon.log());
    let stopped = fs::read_to_string(daemon.path("stopped")).unwrap_or_default();
    assert_eq!(
        stopped.lines().count(),
        2,
        "web was not stopped gracefully\n{}",
        daemon.log()
    );
}

#[test]
fn an_instance_that_had_to_be_killed_at_shutdown_makes_pid_1_exit_137() {
    if !pid_namespaces_work() {
        return;
    }
    let stubborn = r#"command = ["sh", "-c", "trap '' TERM; touch up; while :; do sleep 0.05; done"]
kill_timeout = "1s"
"#;
    let mut daemon = Daemon::start_as_pid_1(&[("stubborn", stubborn)], &[]);
    daemon.wait_running("stubborn", 1);
    wait_for("the instance to ignore SIGTERM", PATIENCE, || {
        daemon.path("up").exists()
    });
    let status = daemon.terminate();
    assert_eq!(status.code(), Some(137), "{}", daemon.log());
}

#[test]
fn during_the_shutdown_delay_instances_serve_on_and_clusterctl_ready_says_no() {
    // A waits for `go` before it tells clusterd it is ready.
    let waits = r#"command = ["python3", "-c", """
import os, socket, time
while not os.path.exists('go'):
    time.sleep(0.02)
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.connect(os.environ['NOTIFY_SOCKET'])
s.send(b'READY=1')
while True:
    time.sleep(1)
"""]
ready = "notify"
"#;
    let mut daemon = Daemon::start_with_args(
        &[("web", SERVER), ("waits", waits)],
        &["--shutdown-delay", "2s", "--container"],
    );
    daemon.wait_running("web", 2);
    let ready = |units: &[&str]| {
        let mut args = vec!["ready"];
        args.extend_from_slice(units);
        daemon.ctl(&args)
    };
    assert_eq!(ready(&["web"]).status.code(), Some(0));
    let out = ready(&[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("waits: 0 of 1 instance(s) ready"),
        "{out:?}"
    );
    assert_eq!(ready(&["nosuch"]).status.code(), Some(1));
    fs::write(daemon.path("go"), "").expect("go");
    wait_for("every unit to be ready", PATIENCE, || {
        ready(&[]).status.code() == Some(0)
    });

    let pids = daemon.pids("web");
    let signalled_at = now_seconds();
    send_signal(daemon.pid(), libc::SIGTERM);
    wait_for("clusterctl ready to say no", PATIENCE, || {
        let out = ready(&["web"]);
        out.status.code() == Some(1)
            && String::from_utf8_lossy(&out.stderr).contains("clusterd is stopping")
    });
    assert!(
        pids.iter().all(|&pid| alive(pid)),
        "instances stopped at once"
    );
    let started = Instant::now();
    let status = daemon.wait_exit(PATIENCE);
    assert_eq!(status.code(), Some(0), "{}", daemon.log());
    // Each instance got its SIGTERM only after the delay (generous: the delay is 2 s).
    let stopped = fs::read_to_string(daemon.path("stopped")).unwrap_or_default();
    let times: Vec<f64> = stopped.lines().filter_map(|l| l.parse().ok()).collect();
    assert_eq!(times.len(), 2, "{stopped:?}\n{}", daemon.log());
    for at in times {
        assert!(
            at - signalled_at > 1.5,
            "an instance was stopped {:.2} s after SIGTERM, within the 2 s delay",
            at - signalled_at
        );
    }
    assert!(started.elapsed() < Duration::from_secs(30));
}

/// A flood of orphans (500 processes whose parent exits at once, each re-parented to PID 1
/// and exiting): clusterd reaps them a batch at a time between its other work, so status
/// answers meanwhile, and no zombie is left.
#[test]
fn as_pid_1_a_flood_of_orphans_is_reaped_while_status_answers() {
    if !pid_namespaces_work() {
        return;
    }
    let flood = r#"command = ["python3", "-c", """
import os, time
for i in range(500):
    child = os.fork()
    if child == 0:
        if os.fork() == 0:
            os._exit(0)
        os._exit(0)
    os.waitpid(child, 0)
open('flood-done', 'w').close()
while True:
    time.sleep(1)
"""]
"#;
    let mut daemon = Daemon::start_as_pid_1(&[("flood", flood)], &[]);
    let clusterd = daemon.pid();
    daemon.wait_running("flood", 1);
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    while !daemon.path("flood-done").exists() {
        assert!(started.elapsed() < CTL_DEADLINE, "the flood did not end");
        let asked = Instant::now();
        daemon.status();
        slowest = slowest.max(asked.elapsed());
    }
    eprintln!(
        "500 orphans in {:?}; slowest status meanwhile {slowest:?}",
        started.elapsed()
    );
    assert!(slowest < Duration::from_secs(2), "status took {slowest:?}");
    wait_for("no zombie in the namespace", PATIENCE, || {
        namespace_processes(clusterd)
            .iter()
            .all(|&(_, state)| state != 'Z')
    });
    let status = daemon.terminate();
    assert_eq!(status.code(), Some(0), "{}", daemon.log());
}

/// Signals to PID 1 from an instance are signals like any other (as under tini or
/// dumb-init): `kill -TERM 1` from an instance running as root stops the container, while
/// one running as `nobody` is refused by the kernel and changes nothing.
#[test]
fn as_pid_1_kill_term_1_from_a_root_instance_stops_everything_and_from_nobody_is_refused() {
    if !pid_namespaces_work() {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let mut daemon = Daemon::start_as_pid_1(&[], &[]);
    let out = daemon.path("out");
    fs::create_dir_all(&out).expect("out");
    fs::set_permissions(daemon.dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
    fs::set_permissions(&out, fs::Permissions::from_mode(0o777)).expect("chmod");
    daemon.write_unit(
        "unprivileged",
        &format!(
            "command = [\"/bin/sh\", \"-c\", \"kill -TERM 1 2> /dev/null; echo $? > {}; exec sleep 300\"]\nuser = \"nobody\"\nworking_directory = \"/\"\n",
            toml_path(&out.join("nobody.txt"))
        ),
    );
    assert!(daemon.ctl(&["daemon-reload"]).status.success());
    wait_for("the nobody instance to try", PATIENCE, || {
        fs::read_to_string(out.join("nobody.txt")).is_ok_and(|t| t.ends_with('\n'))
    });
    assert_eq!(
        fs::read_to_string(out.join("nobody.txt"))
            .unwrap_or_default()
            .trim(),
        "1",
        "kill -TERM 1 as nobody should fail"
    );
    assert_eq!(daemon.unit("unprivileged")["state"], "running");

    daemon.write_unit(
        "privileged",
        "command = [\"sh\", \"-c\", \"kill -TERM 1; exec sleep 300\"]\n",
    );
    assert!(daemon.ctl(&["daemon-reload"]).status.success());
    let status = daemon.wait_exit(PATIENCE);
    assert_eq!(status.code(), Some(0), "{}", daemon.log());
    assert!(daemon.log().contains("shutting down"), "{}", daemon.log());
}
