//! Starting many instances at once (issue 20): clusterd does not wait for one child's exec
//! before it starts the next, and what goes wrong in a child on its way to exec (a program
//! that cannot be executed, a missing working directory) still comes back with its cause,
//! as a failed start and not as a crash — whether or not a `clusterctl` answer waits for it.

use crate::common;
use common::*;

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

/// A thousand instances can take a while on a loaded machine (a debug build, two CPUs).
const A_WHILE: Duration = Duration::from_secs(120);

/// `/proc/PID/stat`'s process group, and the command line with NULs as spaces.
fn group_and_command(pid: u32) -> Option<(u32, String)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid pgrp ...": the name may hold spaces, the fields after it do not.
    let pgrp = stat.rsplit(')').next()?.split_whitespace().nth(2)?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let command = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    Some((pgrp.parse().ok()?, command.trim().to_string()))
}

/// An instance's `last_exit` in the status.
fn last_exit(d: &Daemon, unit: &str, index: usize) -> String {
    d.unit(unit)["instances"][index]["last_exit"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

/// Waits until `unit` has `count` running instances (within [`A_WHILE`]); their pids.
fn wait_running_long(d: &Daemon, unit: &str, count: usize) -> Vec<u32> {
    let mut pids = Vec::new();
    wait_for(&format!("{unit} to run {count} instances"), A_WHILE, || {
        pids = d.unit(unit)["instances"]
            .as_array()
            .map(|list| {
                list.iter()
                    .filter(|i| i["state"] == "running")
                    .filter_map(|i| i["pid"].as_u64().map(|p| p as u32))
                    .collect()
            })
            .unwrap_or_default();
        pids.len() == count
    });
    pids
}

/// 1000 instances of one unit start — each its own process group running its program — and
/// all of them are gone once clusterd has stopped.
#[test]
fn a_thousand_instances_start_each_in_its_group_and_stop_with_clusterd() {
    let began = Instant::now();
    let mut d = Daemon::start(&[("many", "command = \"sleep 997\"\ninstances = 1000\n")]);
    let pids = wait_running_long(&d, "many", 1000);
    eprintln!("1000 instances running after {:?}", began.elapsed());
    assert_eq!(pids.iter().collect::<BTreeSet<_>>().len(), 1000);
    for &pid in &pids {
        let (group, command) = group_and_command(pid).expect("the instance's /proc");
        assert_eq!(group, pid, "pid {pid} leads its own group");
        assert_eq!(command, "sleep 997", "pid {pid} runs its program");
    }
    let many = d.unit("many");
    assert_eq!(many["restarts"], 0, "{many:#}");
    assert!(d.terminate().success(), "{}", d.log());
    wait_for("every instance to be gone", PATIENCE, || {
        pids.iter().all(|&pid| !alive(pid))
    });
}

/// Units whose children fail on their way to exec, started beside a unit of many instances:
/// at clusterd's start-up (nothing waits for an answer: the failures arrive as the children's
/// exits) and by a daemon-reload (its answer waits for the execs and names the cause). Each
/// is a failed start with its cause, retried on the backoff, not a crash; the others run.
#[test]
fn an_exec_failure_among_many_starts_is_reported_with_its_cause_not_as_a_crash() {
    let scratch = tempfile::tempdir().expect("scratch");
    let script = scratch.path().join("run.sh");
    std::fs::write(&script, "#!/bin/sh\nexec sleep 997\n").expect("script");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let noexec = format!("command = \"{}\"\ninstances = 3\n", toml_path(&script));
    let missing = scratch.path().join("not-yet");
    let elsewhere = format!(
        "command = \"sleep 997\"\nworking_directory = \"{}\"\n",
        toml_path(&missing)
    );
    let many = "command = \"sleep 997\"\ninstances = 200\n";
    let d = Daemon::start(&[
        ("noexec", &noexec),
        ("many", many),
        ("elsewhere", &elsewhere),
    ]);
    let causes = [
        ("noexec", "cannot execute", "Permission denied"),
        (
            "elsewhere",
            "cannot change to its working directory",
            "No such file or directory",
        ),
    ];
    wait_running_long(&d, "many", 200);
    for (unit, what, why) in causes {
        wait_for(&format!("{unit} to say why"), PATIENCE, || {
            d.unit(unit)["error"]
                .as_str()
                .is_some_and(|e| e.contains(what) && e.contains(why))
        });
        let status = d.unit(unit);
        assert_eq!(status["gave_up"], false, "{status:#}");
        assert_eq!(status["restarts"], 0, "{status:#}");
        assert!(
            last_exit(&d, unit, 0).starts_with("failed to start: "),
            "{status:#}"
        );
        assert!(
            d.log().contains(&format!("{unit}[0]: failed to start: ")),
            "{}",
            d.log()
        );
        // A manual start waits for the exec, and answers with the cause.
        let out = d.ctl(&["start", unit]);
        assert!(!out.status.success(), "{unit}: {out:?}");
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(said.contains(why), "{unit}: {said}");
    }
    // No failed exec was taken for a crash: nothing counts against a restart budget.
    assert!(!d.log().contains("restarting ("), "{}", d.log());

    // Added by a daemon-reload, beside more instances: the answer names the cause.
    let broken = scratch.path().join("broken.sh");
    std::fs::write(&broken, "#!/bin/sh\nexec sleep 997\n").expect("script");
    std::fs::set_permissions(&broken, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    d.write_unit(
        "broken",
        &format!("command = \"{}\"\ninstances = 2\n", toml_path(&broken)),
    );
    d.write_unit("more", "command = \"sleep 997\"\ninstances = 100\n");
    let out = d.ctl(&["daemon-reload"]);
    assert!(!out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("broken: cannot execute") && said.contains("Permission denied"),
        "{said}"
    );
    assert!(!said.contains("more:"), "{said}");
    wait_running_long(&d, "more", 100);
    assert_eq!(d.pids("many").len(), 200);

    // Fixed by the user: the backoff's retry starts it, without a command.
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    wait_running_long(&d, "noexec", 3);
    assert!(d.unit("noexec")["error"].is_null());
}

/// A program that exits the moment it has exec'd — before clusterd has looked at whether its
/// exec worked — is an exit after a start, in that order: never lost, never taken for a
/// failed exec. Not even when it exits with 127, the status of a child that could not exec.
#[test]
fn a_program_that_exits_right_after_its_exec_is_a_start_then_an_exit() {
    let d = Daemon::start(&[
        (
            "quick",
            "command = [\"sh\", \"-c\", \"exit 3\"]\ninstances = 50\nrestart = \"never\"\n",
        ),
        (
            "looks-like-127",
            "command = [\"sh\", \"-c\", \"exit 127\"]\nrestart_limit = { burst = 2 }\n",
        ),
    ]);
    wait_for("every quick instance to have exited", A_WHILE, || {
        let unit = d.unit("quick");
        (0..50).all(|i| unit["instances"][i]["last_exit"].is_string())
    });
    for index in 0..50 {
        let exit = last_exit(&d, "quick", index);
        assert_eq!(exit, "exited with code 3", "quick[{index}]");
    }
    let log = d.log();
    for index in 0..50 {
        let label = format!("quick[{index}]");
        let started = log
            .find(&format!("{label}: started, pid "))
            .unwrap_or_else(|| panic!("{label} started\n{log}"));
        let exited = log
            .find(&format!("{label} (pid "))
            .unwrap_or_else(|| panic!("{label} exited\n{log}"));
        assert!(started < exited, "{label}: exit before start\n{log}");
    }
    assert!(!log.contains("quick[0]: failed to start"), "{log}");
    assert!(d.unit("quick")["error"].is_null());

    // Exit status 127 from the program itself is a crash: restarted within the budget,
    // then given up — not a failed exec retried outside it.
    wait_for("looks-like-127 to give up", PATIENCE, || {
        d.unit("looks-like-127")["gave_up"] == true
    });
    let unit = d.unit("looks-like-127");
    assert_eq!(unit["restarts"], 2, "{unit:#}");
    assert!(!d.log().contains("looks-like-127[0]: failed to start"));
}
