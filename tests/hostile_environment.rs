//! An unlucky or hostile environment: absurd values in unit files, files that are not files,
//! peers that never answer, clients that hold connections, pipes closed under clusterctl, no
//! file descriptors left. Each test is the regression test of one class of hole; the fix is
//! named in its comment.

mod common;
use common::*;

use std::process::Command;

/// Duration overflow: `kill_timeout = "18446744073709551615s"` passed `--check` and then made
/// `now + d` panic in the daemon. Durations are now bounded at parse time (the same parser for
/// `--check` and the daemon), and every deadline is computed without overflow.
#[test]
fn an_absurd_duration_is_an_error_with_its_position_and_never_reaches_the_daemon() {
    let daemon = Daemon::start(&[("calm", "command = \"sleep 300\"\n")]);
    let calm = daemon.wait_running("calm", 1);
    daemon.write_unit(
        "huge",
        "command = \"sleep 300\"\nkill_timeout = \"18446744073709551615s\"\n",
    );
    let check = Command::new(CLUSTERD)
        .args(["--check", "--units"])
        .arg(daemon.units_dir())
        .output()
        .expect("clusterd --check");
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert_eq!(check.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("huge.toml:2:16"), "{stderr}");
    assert!(stderr.contains("too long"), "{stderr}");

    let reload = daemon.ctl(&["daemon-reload"]);
    assert_eq!(reload.status.code(), Some(1), "{reload:?}");
    assert!(String::from_utf8_lossy(&reload.stderr).contains("too long"));
    assert_eq!(daemon.unit("huge")["state"], "invalid");
    // The daemon is alive and nothing else was touched.
    assert_eq!(daemon.pids("calm"), calm);
    // The longest accepted duration works end to end (stop does not wait for it: the
    // instance leaves on SIGTERM).
    daemon.write_unit(
        "huge",
        "command = \"sleep 300\"\nkill_timeout = \"3650days\"\nready_timeout = \"3650days\"\nrestart_limit = { interval = \"3650days\" }\n",
    );
    assert!(daemon.ctl(&["daemon-reload"]).status.success());
    daemon.wait_running("huge", 1);
    assert!(daemon.ctl(&["stop", "huge"]).status.success());
    assert_eq!(daemon.pids("calm"), calm);
}

/// clusterctl panicked when its reader went away (`clusterctl status --json | head -c 10`):
/// a closed pipe now ends it quietly with success, like `ls | head`.
#[test]
fn clusterctl_exits_quietly_when_its_reader_goes_away() {
    let units: Vec<(String, String)> = (0..40)
        .map(|i| (format!("u{i:02}"), "command = \"sleep 300\"\n".to_string()))
        .collect();
    let refs: Vec<(&str, &str)> = units
        .iter()
        .map(|(n, t)| (n.as_str(), t.as_str()))
        .collect();
    let daemon = Daemon::start(&refs);
    daemon.wait_running("u39", 1);
    for args in ["status --json", "status"] {
        // The reader closes at once, so clusterctl writes into a closed pipe.
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "'{ctl}' --socket '{sock}' {args} | head -c 10 >/dev/null",
                ctl = CLUSTERCTL,
                sock = daemon.socket.display(),
            ))
            .output()
            .expect("sh");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args}: {stderr}");
        assert!(stderr.is_empty(), "{args}: {stderr}");
    }
    // The exit status itself, without a shell in between.
    let mut child = Command::new(CLUSTERCTL)
        .arg("--socket")
        .arg(&daemon.socket)
        .args(["status", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("clusterctl");
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success(), "{out:?}");
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Requests with unknown fields were accepted by some verbs (`daemon-reload`): every request
/// is now checked against its own fields, and the answer is an error.
#[test]
fn a_request_with_a_field_it_does_not_have_is_refused_with_an_error() {
    use std::io::{BufRead, BufReader, Write};
    let daemon = Daemon::start(&[]);
    for request in [
        r#"{"version":1,"command":"daemon-reload","force":true}"#,
        r#"{"version":1,"command":"status","unit":null,"all":true}"#,
    ] {
        let mut stream = std::os::unix::net::UnixStream::connect(&daemon.socket).expect("connect");
        stream
            .write_all(format!("{request}\n").as_bytes())
            .expect("send");
        let mut answer = String::new();
        BufReader::new(stream)
            .read_line(&mut answer)
            .expect("answer");
        let answer: serde_json::Value = serde_json::from_str(&answer).expect("json");
        assert_eq!(answer["ok"], false, "{request} -> {answer}");
        assert!(
            answer["error"]
                .as_str()
                .is_some_and(|e| e.contains("unknown field")),
            "{answer}"
        );
    }
}
