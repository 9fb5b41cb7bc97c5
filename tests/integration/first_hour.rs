//! What a new user hits in the first hour (issue 23): `reload` after editing a unit file,
//! `daemon-reload` of a unit whose port is taken, `ls`, `logs` of every unit, the small
//! messages. Each test is named after the surprise it pins.

use crate::common;
use common::*;

use std::process::Output;

const SLEEPER: &str = "command = \"sleep 300\"\n";

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `clusterctl reload web` after editing web.toml ran the old configuration without a word.
/// It refuses (exit 1), says the file changed and that `daemon-reload` applies it, and
/// touches nothing; once the file is applied, reload works again.
#[test]
fn reload_after_editing_the_unit_file_says_the_file_changed_and_touches_nothing() {
    let d = Daemon::start(&[("web", SLEEPER)]);
    let before = d.wait_running("web", 1);

    d.write_unit("web", "command = \"sleep 301\"\n");
    let out = d.ctl(&["reload", "web"]);
    let said = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("web.toml") && said.contains("changed on disk"),
        "{said}"
    );
    assert!(said.contains("clusterctl daemon-reload"), "{said}");
    assert_eq!(d.pids("web"), before, "nothing was replaced");

    // A file that no longer loads is a change too.
    d.write_unit("web", "command = \n");
    let out = d.ctl(&["reload", "web"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("no longer loads"), "{}", stderr(&out));

    d.write_unit("web", "command = \"sleep 301\"\n");
    let out = d.ctl(&["daemon-reload"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    wait_for("web to run the new file", PATIENCE, || {
        d.pids("web").len() == 1 && d.pids("web") != before
    });
    let out = d.ctl(&["reload", "web"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

/// `daemon-reload` answered "started busyport" (exit 0) for a unit whose port another
/// process holds. It fails, says why, and names the holder (this test process).
#[test]
fn daemon_reload_of_a_unit_whose_port_is_taken_fails_and_names_the_holder() {
    let d = Daemon::start(&[("web", SLEEPER)]);
    d.wait_running("web", 1);
    let holder = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a port");
    let port = holder.local_addr().unwrap().port();
    d.write_unit(
        "busyport",
        &format!("command = \"sleep 300\"\nlisten = [\"tcp://127.0.0.1:{port}\"]\n"),
    );
    let out = d.ctl(&["daemon-reload"]);
    let said = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{said}\n{}", stdout(&out));
    assert!(!said.contains("started busyport"), "{said}");
    assert!(
        said.contains("failed to start") && said.contains("busyport"),
        "{said}"
    );
    assert!(said.contains(&format!("127.0.0.1:{port}")), "{said}");
    assert!(
        said.contains(&format!("held by pid {}", std::process::id())),
        "{said}"
    );
    drop(holder);
}
