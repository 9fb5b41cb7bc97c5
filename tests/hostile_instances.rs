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
