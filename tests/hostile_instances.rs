//! Instances that behave as badly as a program can: killed by signals nobody names, escaping
//! their process group, speaking for other instances, flooding their channels. Each test is
//! the regression test of one class of hole; the fix is named in its comment.

mod common;
use common::*;

/// Lost exits: the reap loop once stopped at a wait status its library could not decode
/// (real-time signals), leaving a dead pid shown as running and `stop` waiting forever. Wait
/// statuses are now decoded by clusterd itself, and draining never stops on one.
#[test]
fn an_instance_killed_by_a_real_time_signal_is_restarted_and_can_be_stopped() {
    let daemon = Daemon::start(&[("rt", "command = \"sleep 300\"\n")]);
    let old = daemon.wait_running("rt", 1)[0];
    // SIGRTMIN+1: `kill -35` on glibc.
    let signal = libc::SIGRTMIN() + 1;
    send_signal(old, signal);
    wait_for("rt to be restarted", PATIENCE, || {
        let pids = daemon.pids("rt");
        pids.len() == 1 && pids[0] != old
    });
    let unit = daemon.unit("rt");
    let last = unit["instances"][0]["last_exit"].as_str().unwrap_or("");
    assert!(
        last.contains(&format!("signal {signal}")),
        "last exit: {last:?}"
    );
    assert_eq!(unit["restarts"], 1);
    let new = daemon.pids("rt")[0];
    send_signal(new, signal);
    wait_for("rt to be restarted again", PATIENCE, || {
        let pids = daemon.pids("rt");
        pids.len() == 1 && pids[0] != new
    });
    let out = daemon.ctl(&["stop", "rt"]);
    assert!(out.status.success(), "{out:?}");
    assert!(daemon.pids("rt").is_empty());
}

/// Terminal injection: `clusterctl status` printed an instance's `STATUS=` text raw, so an
/// instance could rewrite the operator's terminal. Everything shown is now escaped.
#[test]
fn an_instance_cannot_put_control_characters_on_the_operators_terminal() {
    let script = r#"
import os, socket, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.sendto(b"STATUS=\x1b]0;pwned\x07\x1b[2J\r\x9b5mfine", os.environ["NOTIFY_SOCKET"])
time.sleep(300)
"#;
    let daemon = Daemon::start(&[]);
    let path = daemon.path("status.py");
    std::fs::write(&path, script).expect("script");
    daemon.write_unit(
        "liar",
        &format!("command = [\"python3\", \"{}\"]\n", toml_path(&path)),
    );
    assert!(daemon.ctl(&["daemon-reload"]).status.success());
    wait_for("the STATUS= text to arrive", PATIENCE, || {
        daemon.unit("liar")["instances"][0]["status_text"]
            .as_str()
            .is_some_and(|t| t.ends_with("fine"))
    });
    let out = daemon.ctl(&["status"]);
    assert!(out.status.success());
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.stdout
            .iter()
            .any(|&b| b == 0x1b || b == 0x07 || b == b'\r'),
        "raw control bytes on the terminal: {shown:?}"
    );
    assert!(!shown.contains('\u{9b}'), "{shown:?}");
    assert!(shown.contains("\\x1b]0;pwned\\x07"), "{shown}");
}

/// Floods: a worker writing JSON lines as fast as it could grew clusterd from 35 to 430 MB
/// (an unbounded event queue fed by an I/O thread that read without limit) and made status
/// take 480 ms; 2 MB of malformed lines made 120 MB of log. Each channel (and NOTIFY_SOCKET)
/// now has a budget of events in flight and is not read while it is spent, so the writer
/// blocks instead of clusterd growing; repeated warnings are limited and counted.
#[test]
fn a_flooding_worker_costs_clusterd_neither_memory_nor_answers_nor_log() {
    use std::time::{Duration, Instant};
    let flood = r#"
import os, sys
fd = int(os.environ["CLUSTERD_CHANNEL_FD"])
line = sys.argv[1].encode() + b"\n"
chunk = line * 4096
while True:
    os.write(fd, chunk)
"#;
    let daemon = Daemon::start(&[("calm", "command = \"sleep 300\"\n")]);
    let script = daemon.path("flood.py");
    std::fs::write(&script, flood).expect("script");
    let unit = |line: &str| {
        format!(
            "command = [\"python3\", \"{}\", '{line}']\n",
            toml_path(&script)
        )
    };
    daemon.write_unit("ready-flood", &unit(r#"{"act":"ready"}"#));
    daemon.write_unit("garbage-flood", &unit("this is not json"));
    assert!(daemon.ctl(&["daemon-reload"]).status.success());
    daemon.wait_running("ready-flood", 1);
    daemon.wait_running("garbage-flood", 1);

    // Strangers flood NOTIFY_SOCKET too (it is writable by everyone).
    let notify = std::os::unix::net::UnixDatagram::unbound().expect("socket");
    notify.set_nonblocking(true).expect("nonblocking");
    let notify_path = format!("{}.notify", daemon.socket.display());
    let rss_kib = |pid: u32| -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            })
            .unwrap_or(0)
    };
    let until = Instant::now() + Duration::from_secs(3);
    let mut slowest = Duration::ZERO;
    while Instant::now() < until {
        for _ in 0..200 {
            let _ = notify.send_to(b"READY=1", &notify_path);
        }
        let asked = Instant::now();
        let out = daemon.ctl(&["status", "calm"]);
        slowest = slowest.max(asked.elapsed());
        assert!(out.status.success(), "{out:?}");
    }
    let rss = rss_kib(daemon.pid());
    let log = daemon.log();
    eprintln!(
        "under the flood: clusterd RSS {rss} KiB, slowest status {slowest:?}, log {} bytes",
        log.len()
    );
    assert!(rss < 40 * 1024, "clusterd grew to {rss} KiB");
    assert!(slowest < Duration::from_secs(2), "status took {slowest:?}");
    assert!(log.len() < 1024 * 1024, "{} bytes of log", log.len());
    assert!(
        log.contains("counted, not logged"),
        "{}",
        &log[..log.len().min(4000)]
    );
    // Everything else still works: a stop is answered at once.
    assert!(daemon.ctl(&["stop", "calm"]).status.success());
    assert!(daemon.ctl(&["stop", "ready-flood"]).status.success());
}
