//! Crash → restart, the restart limit, giving up with its alarm, and the `restart` policies,
//! as a user sees them through `clusterctl status`.

use crate::common;
use common::*;

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Where the test keeps the files its workers and hooks write (separate from the daemon's
/// directory so that unit files can name them before the daemon starts).
fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("clusterd-restart-")
        .tempdir()
        .expect("scratch dir")
}

/// Number of lines in a file the workers append to (0 if it does not exist yet).
fn line_count(path: &Path) -> usize {
    fs::read_to_string(path)
        .map(|text| text.lines().count())
        .unwrap_or(0)
}

/// How many times the hook log says the hook started.
fn hook_runs(path: &Path) -> usize {
    fs::read_to_string(path)
        .map(|text| text.lines().filter(|l| *l == "hook-start").count())
        .unwrap_or(0)
}

/// After a give-up nothing is expected to happen any more, and "nothing happens" can only be
/// observed over a window of time: this is the one bounded observation window of the suite. A
/// stray automatic restart or a second alarm would show up within it.
fn stays_quiet(spawns: &Path, expected_spawns: usize, hook: &Path) {
    let window = Instant::now() + Duration::from_secs(1);
    while Instant::now() < window {
        assert_eq!(
            line_count(spawns),
            expected_spawns,
            "spawned after giving up"
        );
        assert_eq!(hook_runs(hook), 1, "the alarm ran more than once");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The instance entry with `index` that is not a draining leftover.
fn instance(unit: &Value, index: u64) -> Value {
    unit["instances"]
        .as_array()
        .and_then(|list| {
            list.iter()
                .find(|i| i["index"] == index && !i["draining"].as_bool().unwrap_or(false))
                .cloned()
        })
        .unwrap_or(Value::Null)
}

fn running_pid(unit: &Value, index: u64) -> Option<u32> {
    let i = instance(unit, index);
    (i["state"] == "running")
        .then(|| i["pid"].as_u64().map(|p| p as u32))
        .flatten()
}

#[test]
fn a_unit_that_always_fails_is_spawned_eleven_times_then_gives_up_and_runs_its_alarm_once() {
    let files = scratch();
    let spawns = files.path().join("spawns.log");
    let hook = files.path().join("hook.log");
    let broken = files.path().join("broken");
    fs::write(&broken, "").unwrap();
    // Fails while the `broken` flag file exists, then (once "fixed") keeps running.
    let unit = format!(
        r#"command = ["sh", "-c", "echo x >> '{spawns}'; if [ -e '{broken}' ]; then exit 1; fi; exec sleep 300"]
on_giveup = ["sh", "-c", "echo hook-start >> '{hook}'; env >> '{hook}'; echo hook-end >> '{hook}'"]
"#,
        spawns = toml_path(&spawns),
        broken = toml_path(&broken),
        hook = toml_path(&hook),
    );
    let d = Daemon::start(&[("crashy", &unit)]);

    wait_for("crashy to give up", PATIENCE, || {
        d.unit("crashy")["gave_up"] == true
    });
    let status = d.unit("crashy");
    assert_eq!(status["state"], "failed", "{status:#}");
    assert_eq!(status["restarts"], 10, "{status:#}");
    wait_for("the on_giveup hook to finish", PATIENCE, || {
        fs::read_to_string(&hook).is_ok_and(|t| t.contains("hook-end"))
    });

    stays_quiet(&spawns, 11, &hook);

    let hook_log = fs::read_to_string(&hook).unwrap();
    let env: Vec<&str> = hook_log.lines().collect();
    for expected in [
        "CLUSTERD_UNIT=crashy",
        "CLUSTERD_RESTARTS=10",
        "CLUSTERD_INTERVAL=1m",
    ] {
        assert!(
            env.contains(&expected),
            "{expected} missing from the hook's environment:\n{hook_log}"
        );
    }

    // The user fixes the cause and starts the unit by hand: the give-up is cleared.
    fs::remove_file(&broken).unwrap();
    let out = d.ctl(&["start", "crashy"]);
    assert!(
        out.status.success(),
        "clusterctl start failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    d.wait_running("crashy", 1);
    let status = d.unit("crashy");
    assert_eq!(status["gave_up"], false, "{status:#}");
    assert_eq!(status["state"], "running", "{status:#}");
    assert_eq!(status["restarts"], 0, "{status:#}");
    wait_for("the twelfth spawn to log itself", PATIENCE, || {
        line_count(&spawns) == 12
    });
}

#[test]
fn a_unit_with_several_failing_instances_gives_up_once_and_alarms_once() {
    let files = scratch();
    let spawns = files.path().join("spawns.log");
    let hook = files.path().join("hook.log");
    let unit = format!(
        r#"command = ["sh", "-c", "echo x >> '{spawns}'; exit 1"]
instances = 3
on_giveup = ["sh", "-c", "echo hook-start >> '{hook}'; echo hook-end >> '{hook}'"]
"#,
        spawns = toml_path(&spawns),
        hook = toml_path(&hook),
    );
    let d = Daemon::start(&[("trio", &unit)]);
    wait_for("trio to give up", PATIENCE, || {
        d.unit("trio")["gave_up"] == true
    });
    wait_for("the on_giveup hook to finish", PATIENCE, || {
        fs::read_to_string(&hook).is_ok_and(|t| t.contains("hook-end"))
    });
    // Three first starts, then ten restarts shared by the three indexes.
    wait_for("every instance to have exited", PATIENCE, || {
        d.pids("trio").is_empty()
    });
    stays_quiet(&spawns, 13, &hook);
    let status = d.unit("trio");
    assert_eq!(status["state"], "failed", "{status:#}");
    assert_eq!(status["restarts"], 10, "{status:#}");
}

#[test]
fn a_crashed_instance_is_restarted_at_the_same_index_with_a_new_pid() {
    let files = scratch();
    // Each process writes its environment to env.<pid> (atomically, by renaming), then
    // becomes `sleep` with the same pid.
    let unit = format!(
        r#"command = ["sh", "-c", "env > '{dir}'/tmp.$$ && mv '{dir}'/tmp.$$ '{dir}'/env.$$; exec sleep 300"]
instances = 2
"#,
        dir = toml_path(files.path()),
    );
    let d = Daemon::start(&[("pair", &unit)]);
    d.wait_running("pair", 2);
    let before = d.unit("pair");
    let pid0 = running_pid(&before, 0).expect("instance 0 running");
    let pid1 = running_pid(&before, 1).expect("instance 1 running");
    let env_of = |pid: u32| files.path().join(format!("env.{pid}"));
    wait_for("instance 1 to write its environment", PATIENCE, || {
        env_of(pid1).exists()
    });
    let old_env = fs::read_to_string(env_of(pid1)).unwrap();
    assert!(
        old_env.lines().any(|l| l == "CLUSTERD_INSTANCE=1"),
        "{old_env}"
    );

    send_signal(pid1, libc::SIGKILL);

    let mut new_pid = 0;
    wait_for(
        "instance 1 to run again with a new pid",
        PATIENCE,
        || match running_pid(&d.unit("pair"), 1) {
            Some(pid) if pid != pid1 => {
                new_pid = pid;
                true
            }
            _ => false,
        },
    );
    wait_for(
        "the new instance 1 to write its environment",
        PATIENCE,
        || fs::read_to_string(env_of(new_pid)).is_ok_and(|t| t.contains("CLUSTERD_UNIT=")),
    );
    let new_env = fs::read_to_string(env_of(new_pid)).unwrap();
    assert!(
        new_env.lines().any(|l| l == "CLUSTERD_INSTANCE=1"),
        "{new_env}"
    );
    assert!(
        new_env.lines().any(|l| l == "CLUSTERD_UNIT=pair"),
        "{new_env}"
    );

    let after = d.unit("pair");
    assert_eq!(
        running_pid(&after, 0),
        Some(pid0),
        "instance 0 was touched: {after:#}"
    );
    assert_eq!(after["restarts"], 1, "{after:#}");
    assert_eq!(instance(&after, 1)["restarts"], 1, "{after:#}");
    assert_eq!(instance(&after, 0)["restarts"], 0, "{after:#}");
    assert!(alive(pid0));
}

#[test]
fn a_command_that_does_not_exist_says_no_such_file_or_directory_and_is_retried_not_given_up() {
    let d = Daemon::start(&[
        (
            "absent",
            "command = \"/nonexistent/clusterd-test-program --flag\"\n",
        ),
        (
            "unfound",
            "command = \"clusterd-test-program-not-in-path\"\n",
        ),
    ]);
    for name in ["absent", "unfound"] {
        wait_for(
            &format!("{name} to say why it cannot run"),
            PATIENCE,
            || {
                d.unit(name)["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("No such file or directory"))
            },
        );
        let unit = d.unit(name);
        assert_eq!(unit["gave_up"], false, "{unit:#}");
        assert_eq!(unit["restarts"], 0, "{unit:#}");
        let out = d.ctl(&["status", name]);
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("No such file or directory"),
            "`clusterctl status {name}` does not say why:\n{text}"
        );
    }
}

/// How many times the daemon's log says `unit` failed to start.
fn failed_starts(d: &Daemon, unit: &str) -> usize {
    d.log()
        .matches(&format!("{unit}[0]: failed to start"))
        .count()
}

/// Puts an executable script at `path` in one step (a rename), so that a retry never runs
/// it half-written.
fn install_program(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let temporary = path.with_extension("partial");
    fs::write(&temporary, "#!/bin/sh\nexec sleep 300\n").expect("script");
    fs::set_permissions(&temporary, fs::Permissions::from_mode(0o755)).expect("chmod");
    fs::rename(&temporary, path).expect("rename");
}

/// A unit whose program is not installed yet (issue 23: it burned its 10 restarts in one
/// millisecond and `start` answered only "gave up"): daemon-reload and start answer at once
/// with the cause and exit non-zero, the restart budget is untouched, no give-up alarm
/// runs, and the program installed later is started by the backoff's retry, without a
/// command. On every spawn path: each reports the failure its own way.
#[test]
fn a_program_not_installed_yet_is_reported_at_once_and_started_once_it_is_installed() {
    for path in ["clone3-vm", "clone3", "fork"] {
        let variable = format!("CLUSTERD_SPAWN_PATH={path}");
        let d = Daemon::start_with_env(&[], &[variable.as_str()]);
        let bin = d.path("bin");
        fs::create_dir_all(&bin).expect("bin");
        let alarm = d.path("gave-up");
        d.write_unit(
            "web",
            &format!(
                "command = [\"nodee\", \"server.js\"]\n\
                 environment = {{ PATH = \"{}:/usr/bin:/bin\" }}\n\
                 on_giveup = [\"sh\", \"-c\", \"touch '{}'\"]\n",
                toml_path(&bin),
                toml_path(&alarm)
            ),
        );
        let cause = "cannot execute \"nodee\": No such file or directory";
        let out = d.ctl(&["daemon-reload"]);
        assert!(!out.status.success(), "{path}: {out:?}");
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(said.contains(&format!("web: {cause}")), "{path}: {said}");

        let out = d.ctl(&["start", "web"]);
        assert!(!out.status.success(), "{path}: {out:?}");
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(said.contains(cause), "{path}: {said}");
        let unit = d.unit("web");
        assert!(
            unit["error"].as_str().is_some_and(|e| e.contains(cause)),
            "{path}: {unit:#}"
        );
        // Retried on its backoff (1 s after the manual start), never as a crash.
        let tries = failed_starts(&d, "web");
        wait_for("a retry on the backoff", PATIENCE, || {
            failed_starts(&d, "web") > tries
        });
        let unit = d.unit("web");
        assert_eq!(unit["gave_up"], false, "{path}: {unit:#}");
        assert_eq!(unit["restarts"], 0, "{path}: {unit:#}");
        assert_eq!(unit["state"], "stopped", "{path}: {unit:#}");
        assert!(!alarm.exists(), "{path}: on_giveup ran");

        install_program(&bin.join("nodee"));
        d.wait_running("web", 1);
        let unit = d.unit("web");
        assert!(unit["error"].is_null(), "{path}: {unit:#}");
        assert_eq!(unit["restarts"], 0, "{path}: {unit:#}");
        assert!(!alarm.exists(), "{path}: on_giveup ran");
    }
}

/// A missing working directory and a program that is not executable (EACCES) are exec
/// failures too: the cause at once, a retry on the backoff, and the unit starts once the
/// user creates the directory or sets the mode.
#[test]
fn a_missing_working_directory_or_a_non_executable_program_is_retried_until_fixed() {
    use std::os::unix::fs::PermissionsExt;
    let d = Daemon::start(&[]);
    let directory = d.path("not-yet");
    let script = d.path("run.sh");
    fs::write(&script, "#!/bin/sh\nexec sleep 300\n").expect("script");
    fs::set_permissions(&script, fs::Permissions::from_mode(0o644)).expect("chmod");
    d.write_unit(
        "elsewhere",
        &format!(
            "command = \"sleep 300\"\nworking_directory = \"{}\"\n",
            toml_path(&directory)
        ),
    );
    d.write_unit("noexec", &format!("command = \"{}\"\n", toml_path(&script)));
    let out = d.ctl(&["daemon-reload"]);
    assert!(!out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        said.contains("cannot change to its working directory")
            && said.contains("No such file or directory"),
        "{said}"
    );
    assert!(said.contains("Permission denied"), "{said}");
    for (name, cause) in [
        ("elsewhere", "No such file or directory"),
        ("noexec", "Permission denied"),
    ] {
        let out = d.ctl(&["start", name]);
        assert!(!out.status.success(), "{name}: {out:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(cause),
            "{name}: {out:?}"
        );
        let tries = failed_starts(&d, name);
        wait_for(&format!("{name} retried"), PATIENCE, || {
            failed_starts(&d, name) > tries
        });
        let unit = d.unit(name);
        assert_eq!(unit["gave_up"], false, "{unit:#}");
        assert_eq!(unit["restarts"], 0, "{unit:#}");
    }
    fs::create_dir(&directory).expect("directory");
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).expect("chmod");
    d.wait_running("elsewhere", 1);
    d.wait_running("noexec", 1);
}

#[test]
fn restart_on_failure_restarts_a_failing_exit_but_not_a_clean_one() {
    let files = scratch();
    let clean = files.path().join("clean.log");
    let failing = files.path().join("failing.log");
    let clean_unit = format!(
        "command = [\"sh\", \"-c\", \"echo x >> '{}'; exit 0\"]\nrestart = \"on-failure\"\n",
        toml_path(&clean)
    );
    let failing_unit = format!(
        "command = [\"sh\", \"-c\", \"echo x >> '{}'; exit 3\"]\nrestart = \"on-failure\"\n\
         restart_limit = {{ burst = 2, interval = \"1m\" }}\n",
        toml_path(&failing)
    );
    let d = Daemon::start(&[("clean", &clean_unit), ("failing", &failing_unit)]);

    // A restart decision is made when the exit is seen, so once status shows the slot empty
    // with the exit recorded, no restart is coming.
    wait_for("clean to exit", PATIENCE, || {
        let i = instance(&d.unit("clean"), 0);
        i["pid"].is_null() && i["last_exit"] == "exited with code 0"
    });
    let status = d.unit("clean");
    assert_eq!(status["restarts"], 0, "{status:#}");
    assert_eq!(status["gave_up"], false, "{status:#}");
    assert_eq!(line_count(&clean), 1);

    wait_for("failing to give up", PATIENCE, || {
        d.unit("failing")["gave_up"] == true
    });
    let status = d.unit("failing");
    assert_eq!(status["restarts"], 2, "{status:#}");
    assert_eq!(
        instance(&status, 0)["last_exit"],
        "exited with code 3",
        "{status:#}"
    );
    assert_eq!(line_count(&failing), 3, "one start and two restarts");
}

#[test]
fn restart_never_leaves_an_exited_instance_stopped() {
    let files = scratch();
    let log = files.path().join("once.log");
    let unit = format!(
        "command = [\"sh\", \"-c\", \"echo x >> '{}'; exit 1\"]\nrestart = \"never\"\n",
        toml_path(&log)
    );
    let d = Daemon::start(&[("once", &unit)]);
    wait_for("once to exit", PATIENCE, || {
        let i = instance(&d.unit("once"), 0);
        i["pid"].is_null() && i["last_exit"] == "exited with code 1"
    });
    let status = d.unit("once");
    assert_eq!(status["restarts"], 0, "{status:#}");
    assert_eq!(status["gave_up"], false, "{status:#}");
    assert_eq!(instance(&status, 0)["state"], "stopped", "{status:#}");
    assert_eq!(line_count(&log), 1);
}

/// A hook that ignores SIGTERM once blocked clusterd's shutdown forever: hooks are now
/// stopped like instances, SIGKILL after the unit's kill_timeout.
#[test]
fn an_on_giveup_hook_that_ignores_sigterm_cannot_hold_the_shutdown() {
    let scratch = scratch();
    let pid_file = scratch.path().join("hook.pid");
    let unit = format!(
        "command = \"false\"\nrestart_limit = {{ burst = 1 }}\nkill_timeout = \"1s\"\non_giveup = [\"sh\", \"-c\", \"trap '' TERM; echo $$ > {}; exec sleep 300\"]\n",
        toml_path(&pid_file)
    );
    let mut daemon = Daemon::start(&[("stubborn", &unit)]);
    let mut hook = 0;
    wait_for("the hook to run", PATIENCE, || {
        hook = fs::read_to_string(&pid_file)
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0);
        hook != 0
    });
    assert!(alive(hook));
    let started = Instant::now();
    let status = daemon.terminate();
    assert!(status.success(), "{status:?}\n{}", daemon.log());
    assert!(!alive(hook), "the hook survived the shutdown");
    assert!(
        started.elapsed() < PATIENCE,
        "shutdown took {:?}",
        started.elapsed()
    );
    assert!(daemon.log().contains("still running"), "{}", daemon.log());
}

/// `status UNIT` tells why things happened: the unit's last lifecycle events, in the table
/// and in the JSON.
#[test]
fn status_of_a_unit_shows_its_last_events() {
    let daemon = Daemon::start(&[(
        "crashy",
        "command = [\"sh\", \"-c\", \"sleep 0.2; exit 3\"]\nrestart_limit = { burst = 2, interval = \"1m\" }\n",
    )]);
    wait_for("the give-up", PATIENCE, || {
        daemon.unit("crashy")["gave_up"] == true
    });
    let out = daemon.ctl(&["status", "crashy", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let unit = report["units"][0].clone();
    let events: Vec<String> = unit["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["text"].as_str().unwrap_or("").to_string())
        .collect();
    let exits = events
        .iter()
        .filter(|t| t.contains("exited with code 3"))
        .count();
    let restarts = events
        .iter()
        .filter(|t| t.starts_with("restarting"))
        .count();
    assert_eq!((exits, restarts), (3, 2), "{events:#?}");
    assert!(
        events
            .first()
            .is_some_and(|t| t.starts_with("started, pid")),
        "{events:#?}"
    );
    assert!(
        events.last().is_some_and(|t| t.starts_with("gave up")),
        "{events:#?}"
    );
    assert!(unit["events"][0]["ago_ms"].as_u64().is_some());
    let out = daemon.ctl(&["status", "crashy"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("WHEN") && text.contains("crashy[0]: restarting"),
        "{text}"
    );
    // The status of every unit stays short.
    assert!(daemon.status()["units"][0]["events"].is_null());
}

/// `restart_backoff` (PM2's `exp_backoff_restart_delay`): a crashing Node app is restarted
/// after growing waits — deadlines in clusterd's loop, measured here from the app's own start
/// times.
#[test]
fn restart_backoff_spaces_the_restarts_of_a_crashing_program_further_and_further() {
    if !available("node", runs("node", &["--version"])) {
        return;
    }
    let d = Daemon::start(&[(
        "crashy",
        "command = [\"node\", \"-e\", \"require('fs').appendFileSync('starts', Date.now() / 1000 + '\\\\n'); process.exit(1)\"]\nrestart_limit = { burst = 100, interval = \"1m\" }\nrestart_backoff = { initial = \"200ms\", max = \"400ms\" }\n",
    )]);
    let mut starts: Vec<f64> = Vec::new();
    wait_for("five starts", PATIENCE, || {
        starts = std::fs::read_to_string(d.path("starts"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.parse().ok())
            .collect();
        starts.len() >= 5
    });
    let gaps: Vec<f64> = starts.windows(2).map(|w| w[1] - w[0]).collect();
    // Never earlier than the wait (200, 300, 400, 400 ms); later only by a loaded machine.
    for (gap, wait) in gaps.iter().zip([0.2, 0.3, 0.4, 0.4]) {
        assert!(*gap >= wait - 0.005, "gaps {gaps:?}");
    }
    assert_eq!(d.unit("crashy")["gave_up"], false);
}

/// The loop tells the log thread about a restarted instance at the end of its turn (one
/// wake-up, while the child execs), not at once: the first line a restarted instance writes
/// at once is still in its unit's log, after the line that says it started, every time.
#[test]
fn the_first_line_of_every_restarted_instance_is_logged_after_its_start() {
    let unit = "command = [\"sh\", \"-c\", \"echo first $$; exec sleep 300\"]\ninstances = 2\n\
                restart_limit = { burst = 1000, interval = \"1s\" }\n";
    let d = Daemon::start(&[("web", unit)]);
    d.wait_running("web", 2);
    let file = d.log_dir().join("web.log");
    let mut pids = Vec::new();
    for _ in 0..20 {
        let pid = running_pid(&d.unit("web"), 0).expect("instance 0 running");
        wait_for("its first line", PATIENCE, || {
            fs::read_to_string(&file).is_ok_and(|t| t.contains(&format!("| first {pid}\n")))
        });
        pids.push(pid);
        send_signal(pid, libc::SIGKILL);
        wait_for("instance 0 to run again", PATIENCE, || {
            running_pid(&d.unit("web"), 0).is_some_and(|p| p != pid)
        });
    }
    let text = fs::read_to_string(&file).expect("web.log");
    for pid in pids {
        let started = text.find(&format!("started, pid {pid}\n"));
        let first = text.find(&format!("| first {pid}\n"));
        assert!(
            matches!((started, first), (Some(s), Some(f)) if s < f),
            "pid {pid}: start at {started:?}, first line at {first:?}\n{text}"
        );
    }
}
