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
