//! Unit files that do not parse never take good units down: at start-up, under
//! `clusterd --check`, and on daemon-reload (`clusterctl daemon-reload` or SIGHUP), which also
//! adds, removes, restarts and scales units to match the directory.

use crate::common;
use common::*;

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

const SLEEPER: &str = "command = \"sleep 300\"\n";
/// An unknown key on line 2, column 1.
const UNKNOWN_KEY: &str = "command = \"sleep 300\"\nbogus = 1\n";
/// A bad duration on line 2, column 16.
const BAD_DURATION: &str = "command = \"sleep 300\"\nkill_timeout = \"five seconds\"\n";

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn check(dir: &Path) -> Output {
    Command::new(CLUSTERD)
        .arg("--check")
        .arg("--units")
        .arg(dir)
        .output()
        .expect("run clusterd --check")
}

fn units_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("clusterd-check-")
        .tempdir()
        .expect("temp dir");
    for (name, text) in files {
        fs::write(dir.path().join(format!("{name}.toml")), text).unwrap();
    }
    dir
}

fn unit_path(d: &Daemon, name: &str) -> String {
    d.units_dir()
        .join(format!("{name}.toml"))
        .display()
        .to_string()
}

/// Pid of instance `index` if it runs.
fn pid_at(unit: &Value, index: u64) -> Option<u32> {
    unit["instances"].as_array()?.iter().find_map(|i| {
        (i["index"] == index
            && i["state"] == "running"
            && !i["draining"].as_bool().unwrap_or(false))
        .then(|| i["pid"].as_u64().map(|p| p as u32))
        .flatten()
    })
}

fn cmdline(pid: u32) -> String {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|bytes| String::from_utf8_lossy(&bytes).replace('\0', " "))
        .unwrap_or_default()
}

fn assert_ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({:?}): {}",
        out.status.code(),
        text(out)
    );
}

#[test]
fn a_bad_unit_file_shows_invalid_with_file_line_and_column_while_good_units_run() {
    let d = Daemon::start(&[
        ("good", SLEEPER),
        ("typo", UNKNOWN_KEY),
        ("slow", BAD_DURATION),
    ]);
    d.wait_running("good", 1);

    let typo = d.unit("typo");
    assert_eq!(typo["state"], "invalid", "{typo:#}");
    let error = typo["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(&format!("{}:2:1", unit_path(&d, "typo"))),
        "the error should point at the unknown key: {error}"
    );
    assert!(error.contains("bogus"), "{error}");

    let slow = d.unit("slow");
    assert_eq!(slow["state"], "invalid", "{slow:#}");
    let error = slow["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(&format!("{}:2:16", unit_path(&d, "slow"))),
        "the error should point at the bad duration: {error}"
    );
    assert!(error.contains("five seconds"), "{error}");

    let out = d.ctl(&["status"]);
    assert_ok(&out, "clusterctl status");
    let table = text(&out);
    assert!(table.contains("invalid"), "{table}");
    assert!(
        table.contains(&format!("{}:2:1", unit_path(&d, "typo"))),
        "{table}"
    );

    let out = d.ctl(&["start", "typo"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("invalid"), "{}", text(&out));
    d.wait_running("good", 1);
}

#[test]
fn check_prints_the_error_of_every_bad_file_and_exits_1() {
    let dir = units_dir(&[
        ("good", SLEEPER),
        ("typo", UNKNOWN_KEY),
        ("slow", BAD_DURATION),
    ]);
    let out = check(dir.path());
    let printed = text(&out);
    assert_eq!(out.status.code(), Some(1), "{printed}");
    for (file, position) in [("typo", "2:1"), ("slow", "2:16")] {
        let at = format!(
            "{}:{position}",
            dir.path().join(format!("{file}.toml")).display()
        );
        assert!(printed.contains(&at), "{at} missing from:\n{printed}");
    }
    assert!(!printed.contains("good.toml:"), "{printed}");
}

#[test]
fn check_prints_every_error_within_one_file() {
    let dir = units_dir(&[(
        "many",
        "command = \"sleep 300\"\nbogus = 1\nkill_timeout = \"five seconds\"\nrestart = \"sometimes\"\n",
    )]);
    let out = check(dir.path());
    let printed = text(&out);
    assert_eq!(out.status.code(), Some(1), "{printed}");
    let path = dir.path().join("many.toml").display().to_string();
    for position in ["2:1", "3:16", "4:11"] {
        let at = format!("{path}:{position}");
        assert!(printed.contains(&at), "{at} missing from:\n{printed}");
    }
}

#[test]
fn check_exits_0_on_a_good_directory() {
    let dir = units_dir(&[
        (
            "web",
            "command = [\"sleep\", \"300\"]\ninstances = 2\nkill_timeout = \"1m 30s\"\n",
        ),
        ("worker", SLEEPER),
    ]);
    let out = check(dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

/// Adds, removes, changes and keeps one unit each, then reloads with `trigger`.
fn reload_applies_the_directory(trigger: impl Fn(&Daemon)) {
    let d = Daemon::start(&[
        ("keep", SLEEPER),
        ("change", "command = \"sleep 300\"\ninstances = 2\n"),
        ("remove", "command = \"sleep 300\"\ninstances = 2\n"),
    ]);
    let keep = d.wait_running("keep", 1);
    let change = d.wait_running("change", 2);
    let remove = d.wait_running("remove", 2);

    d.write_unit("added", SLEEPER);
    d.write_unit("change", "command = \"sleep 299\"\ninstances = 2\n");
    d.remove_unit("remove");
    trigger(&d);

    d.wait_running("added", 1);
    wait_for("remove to disappear from status", PATIENCE, || {
        d.unit("remove").is_null()
    });
    for pid in remove {
        wait_for(&format!("removed instance {pid} to stop"), PATIENCE, || {
            !alive(pid)
        });
    }
    wait_for("change to run 2 new instances", PATIENCE, || {
        let pids = d.pids("change");
        pids.len() == 2 && pids.iter().all(|p| !change.contains(p))
    });
    for pid in d.wait_running("change", 2) {
        assert!(
            cmdline(pid).contains("299"),
            "the new command is not in force: {}",
            cmdline(pid)
        );
    }
    for pid in change {
        assert!(!alive(pid), "old instance {pid} of change still runs");
    }
    assert_eq!(d.pids("keep"), keep, "an unchanged unit was touched");
}

#[test]
fn daemon_reload_adds_removes_restarts_changed_and_keeps_unchanged_units() {
    reload_applies_the_directory(|d| {
        assert_ok(&d.ctl(&["daemon-reload"]), "clusterctl daemon-reload")
    });
}

#[test]
fn sighup_reloads_the_units_directory_like_daemon_reload() {
    reload_applies_the_directory(|d| send_signal(d.pid(), libc::SIGHUP));
}

#[test]
fn a_file_that_stops_parsing_leaves_its_running_unit_alone_and_daemon_reload_exits_1() {
    let steady_text = "command = \"sleep 300\"\ninstances = 2\n";
    let d = Daemon::start(&[("steady", steady_text)]);
    let steady = d.wait_running("steady", 2);

    d.write_unit("steady", "command = [\"sleep\", \"300\"\ninstances = 2\n");
    d.write_unit("fresh", SLEEPER);
    let out = d.ctl(&["daemon-reload"]);
    let printed = text(&out);
    assert_eq!(out.status.code(), Some(1), "{printed}");
    assert!(
        printed.contains(&unit_path(&d, "steady")),
        "the bad file is not named: {printed}"
    );

    // Good changes in the same reload still apply.
    d.wait_running("fresh", 1);
    let status = d.unit("steady");
    assert_eq!(status["state"], "running", "{status:#}");
    assert_eq!(d.pids("steady"), steady, "{status:#}");
    let error = status["error"].as_str().unwrap_or_default();
    assert!(error.contains(&unit_path(&d, "steady")), "{status:#}");

    // Fixed again (unchanged from what runs): reloads cleanly and keeps the same processes.
    d.write_unit("steady", steady_text);
    assert_ok(&d.ctl(&["daemon-reload"]), "clusterctl daemon-reload");
    let status = d.unit("steady");
    assert!(status["error"].is_null(), "{status:#}");
    assert_eq!(d.pids("steady"), steady, "{status:#}");
}

#[test]
fn changing_only_instances_scales_and_keeps_the_existing_processes() {
    let d = Daemon::start(&[("web", "command = \"sleep 300\"\ninstances = 2\n")]);
    d.wait_running("web", 2);
    let first = d.unit("web");
    let (pid0, pid1) = (pid_at(&first, 0).unwrap(), pid_at(&first, 1).unwrap());

    d.write_unit("web", "command = \"sleep 300\"\ninstances = 3\n");
    assert_ok(&d.ctl(&["daemon-reload"]), "clusterctl daemon-reload");
    let pids = d.wait_running("web", 3);
    assert!(pids.contains(&pid0) && pids.contains(&pid1), "{pids:?}");
    let status = d.unit("web");
    assert_eq!(pid_at(&status, 0), Some(pid0), "{status:#}");
    assert_eq!(pid_at(&status, 1), Some(pid1), "{status:#}");

    d.write_unit("web", "command = \"sleep 300\"\ninstances = 1\n");
    assert_ok(&d.ctl(&["daemon-reload"]), "clusterctl daemon-reload");
    wait_for("web to scale down to 1", PATIENCE, || {
        d.unit("web")["instances"].as_array().map(Vec::len) == Some(1)
    });
    assert_eq!(d.wait_running("web", 1), vec![pid0]);
    wait_for("instance 1 to stop", PATIENCE, || !alive(pid1));
}
