//! One-shot units, `after` and schedules (issue 22) with real processes: a migration job
//! before a web server, a failing job that keeps the web waiting until it is fixed, a
//! `ready = "notify"` dependency, a dependency satisfied before daemon-reload adds its
//! dependent, `--check` on cycles and unknown names, a schedule that never overlaps a run,
//! the shutdown's reverse order — each checked by the programs' own timestamps — and the
//! hostile cases: a unit naming itself, huge `after` lists, a due-every-second job that never
//! ends, daemon-reload storms.

use crate::common;
use common::*;

use std::fs;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

/// A shell command line for a unit: `sh -c SCRIPT`.
fn sh(script: &str) -> String {
    format!(
        "command = [\"sh\", \"-c\", \"{}\"]\n",
        script.replace('\\', "\\\\").replace('"', "\\\"")
    )
}

/// `date` in nanoseconds since the epoch, appended to `file`, for the programs' own
/// timestamps.
fn stamp(file: &Path) -> String {
    format!("date +%s%N >> '{}'", file.display())
}

/// The timestamps a program wrote in `file`, in order.
fn stamps(file: &Path) -> Vec<u128> {
    fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn state(d: &Daemon, unit: &str) -> String {
    d.unit(unit)["state"].as_str().unwrap_or("").to_string()
}

fn wait_state(d: &Daemon, unit: &str, wanted: &str) {
    wait_for(&format!("{unit} to be {wanted}"), PATIENCE, || {
        state(d, unit) == wanted
    });
}

#[test]
fn the_web_starts_after_the_migration_job_exits_and_the_job_shows_done() {
    let d = Daemon::start(&[]);
    let (job_end, web_start) = (d.path("migrate.end"), d.path("web.start"));
    d.write_unit(
        "migrate",
        &format!(
            "{}type = \"oneshot\"\n",
            sh(&format!("echo migrating; sleep 0.5; {}", stamp(&job_end)))
        ),
    );
    d.write_unit(
        "web",
        &format!(
            "{}after = [\"migrate\"]\n",
            sh(&format!("{}; exec sleep 300", stamp(&web_start)))
        ),
    );
    let out = d.ctl(&["daemon-reload"]);
    assert!(out.status.success(), "{}", text(&out));
    // Running as soon as it is spawned (ready = "started"): its stamp comes a moment later.
    wait_for("web's start stamp", PATIENCE, || {
        !stamps(&web_start).is_empty()
    });
    let (end, start) = (stamps(&job_end), stamps(&web_start));
    assert_eq!(end.len(), 1, "the job ran once");
    assert_eq!(start.len(), 1);
    assert!(
        start[0] >= end[0],
        "web started {} ms before the job ended",
        (end[0] - start[0]) / 1_000_000
    );
    println!(
        "web's first start came {:.1} ms after the job's own end stamp",
        (start[0] - end[0]) as f64 / 1e6
    );
    let migrate = d.unit("migrate");
    assert_eq!(migrate["state"], "done", "{migrate}");
    assert_eq!(migrate["job"]["last_run"]["ok"], true, "{migrate}");
    assert!(migrate["job"]["last_run"]["duration_ms"].as_u64() >= Some(400));
    let human = text(&d.ctl(&["status"]));
    assert!(human.contains("done"), "{human}");
    assert!(human.contains("migrate: last run"), "{human}");
    // The unit's log has the run's start, its output and its end.
    let log = fs::read_to_string(d.log_dir().join("migrate.log")).unwrap_or_default();
    for needle in ["run started", "migrating", "run done: exited with code 0"] {
        assert!(
            log.contains(needle),
            "{needle:?} not in the job's log:\n{log}"
        );
    }
    // Done is done: not run again by itself; `start` runs it again and answers at its end.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(stamps(&job_end).len(), 1);
    let out = d.ctl(&["start", "migrate"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("ran successfully"), "{}", text(&out));
    assert_eq!(stamps(&job_end).len(), 2);
    assert_eq!(
        stamps(&web_start).len(),
        1,
        "web is not restarted by its job"
    );
}

#[test]
fn a_failing_job_keeps_the_web_waiting_with_the_reason_and_a_fixed_job_releases_it() {
    let d = Daemon::start(&[]);
    let fixed = d.path("fixed");
    d.write_unit(
        "migrate",
        &format!(
            "{}type = \"oneshot\"\n",
            sh(&format!("test -e '{}' || exit 3", fixed.display()))
        ),
    );
    d.write_unit(
        "web",
        &format!("{}after = [\"migrate\"]\n", sh("exec sleep 300")),
    );
    d.ctl(&["daemon-reload"]);
    wait_state(&d, "migrate", "failed");
    let web = d.unit("web");
    assert_eq!(web["state"], "waiting", "{web}");
    let reason = web["waiting_for"].as_str().unwrap_or("");
    assert!(
        reason.starts_with("migrate (failed: run failed: instance 0 exited with code 3"),
        "{reason}"
    );
    let human = text(&d.ctl(&["status"]));
    assert!(
        human.contains("web: waiting for migrate (failed"),
        "{human}"
    );
    // `start web` does not hang on it: it answers that web waits.
    let out = d.ctl(&["start", "web"]);
    assert!(text(&out).contains("waiting for migrate"), "{}", text(&out));
    assert!(d.pids("web").is_empty());

    fs::write(&fixed, "").unwrap();
    let out = d.ctl(&["restart", "migrate"]);
    assert!(out.status.success(), "{}", text(&out));
    d.wait_running("web", 1);
    assert_eq!(state(&d, "migrate"), "done");
}

#[test]
fn a_notify_service_dependency_counts_once_it_says_ready() {
    let d = Daemon::start(&[]);
    if !available("python3", runs("python3", &["--version"])) {
        return;
    }
    let (ready_at, web_start) = (d.path("db.ready"), d.path("web.start"));
    let db = format!(
        "command = [\"python3\", \"-c\", \"import os, socket, time\\ntime.sleep(0.7)\\nopen('{}', 'w').write(str(time.time_ns()))\\ns = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\\ns.sendto(b'READY=1', os.environ['NOTIFY_SOCKET'])\\ntime.sleep(300)\"]\nready = \"notify\"\n",
        ready_at.display()
    );
    d.write_unit("db", &db);
    d.write_unit(
        "web",
        &format!(
            "{}after = [\"db\"]\n",
            sh(&format!("{}; exec sleep 300", stamp(&web_start)))
        ),
    );
    d.ctl(&["daemon-reload"]);
    wait_for("web to wait for db", PATIENCE, || {
        d.unit("web")["waiting_for"] == "db (not ready)" || !stamps(&web_start).is_empty()
    });
    wait_for("web's start stamp", PATIENCE, || {
        !stamps(&web_start).is_empty()
    });
    let (ready, start) = (stamps(&ready_at), stamps(&web_start));
    assert!(start[0] >= ready[0], "web started before db was ready");
}

#[test]
fn a_dependency_satisfied_before_daemon_reload_adds_its_dependent_counts() {
    let d = Daemon::start(&[]);
    d.write_unit("migrate", &format!("{}type = \"oneshot\"\n", sh("true")));
    d.write_unit("db", &sh("exec sleep 300"));
    d.ctl(&["daemon-reload"]);
    wait_state(&d, "migrate", "done");
    d.wait_running("db", 1);
    d.write_unit(
        "web",
        &format!("{}after = [\"migrate\", \"db\"]\n", sh("exec sleep 300")),
    );
    let out = d.ctl(&["daemon-reload"]);
    assert!(out.status.success(), "{}", text(&out));
    d.wait_running("web", 1);
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
    let dir = tempfile::tempdir().expect("temp dir");
    for (name, text) in files {
        fs::write(dir.path().join(format!("{name}.toml")), text).unwrap();
    }
    dir
}

#[test]
fn check_rejects_cycles_unknown_names_self_dependencies_and_huge_lists_with_file_and_line() {
    let many: Vec<String> = (0..300).map(|i| format!("\"u{i}\"")).collect();
    let huge = format!("command = \"true\"\nafter = [{}]\n", many.join(", "));
    let dir = units_dir(&[
        ("a", "command = \"true\"\nafter = [\"b\"]\n"),
        (
            "b",
            "command = \"true\"\n# b waits for a\nafter = [\"a\"]\n",
        ),
        ("c", "command = \"true\"\nafter = [\"ghost\"]\n"),
        ("d", "command = \"true\"\nafter = [\"d\"]\n"),
        ("e", &huge),
        ("ok", "command = \"true\"\n"),
    ]);
    let out = check(dir.path());
    let said = text(&out);
    assert!(!out.status.success(), "{said}");
    for needle in [
        "a.toml:2:10: after: a cycle, each waiting for the next: a → b → a",
        "b.toml:3:10: after: a cycle, each waiting for the next: b → a → b",
        "c.toml:2:10: after: no unit is named \"ghost\"",
        "d.toml:2:10: after: d waits for itself",
        "e.toml:2:9: after lists 300 units; at most 256",
        "5 of 6 unit file(s)",
    ] {
        assert!(said.contains(needle), "{needle:?} not in:\n{said}");
    }
}

#[test]
fn a_job_due_every_second_that_runs_longer_is_never_overlapped() {
    let d = Daemon::start(&[]);
    let runs = d.path("runs");
    let script = format!(
        "echo start $(date +%s%N) >> '{0}'; sleep 1.5; echo end $(date +%s%N) >> '{0}'",
        runs.display()
    );
    d.write_unit(
        "report",
        &format!(
            "{}type = \"oneshot\"\nschedule = \"every 1s\"\n",
            sh(&script)
        ),
    );
    d.ctl(&["daemon-reload"]);
    let ends = || {
        fs::read_to_string(&runs)
            .unwrap_or_default()
            .matches("end")
            .count()
    };
    wait_for("three runs to end", Duration::from_secs(30), || ends() >= 3);
    let lines = fs::read_to_string(&runs).unwrap_or_default();
    let events: Vec<(&str, u128)> = lines
        .lines()
        .filter_map(|l| {
            let (what, at) = l.split_once(' ')?;
            Some((what, at.trim().parse().ok()?))
        })
        .collect();
    // Strictly start, end, start, end...: no run began before the previous one ended.
    for (i, (what, _)) in events.iter().enumerate() {
        assert_eq!(*what, if i % 2 == 0 { "start" } else { "end" }, "{lines}");
    }
    for pair in events.windows(2) {
        assert!(pair[0].1 <= pair[1].1, "{lines}");
    }
    let job = d.unit("report")["job"].clone();
    assert!(job["skipped"].as_u64() >= Some(1), "{job}");
    assert!(job["next_run_in_ms"].as_u64() <= Some(1000), "{job}");
    assert_eq!(job["schedule"], "every 1s");
    assert!(
        d.log().contains("report: scheduled run skipped"),
        "{}",
        d.log()
    );
    let human = text(&d.ctl(&["status"]));
    assert!(human.contains("skipped (overlap)"), "{human}");
    assert!(human.contains("next in"), "{human}");
}

#[test]
fn a_due_every_second_job_that_never_ends_runs_once_and_daemon_reload_storms_skip_nothing() {
    let d = Daemon::start(&[]);
    let (forever, quick) = (d.path("forever"), d.path("quick"));
    d.write_unit(
        "forever",
        &format!(
            "{}type = \"oneshot\"\nschedule = \"every 1s\"\n",
            sh(&format!("{}; exec sleep 300", stamp(&forever)))
        ),
    );
    d.write_unit(
        "quick",
        &format!(
            "{}type = \"oneshot\"\nschedule = \"every 1s\"\n",
            sh(&stamp(&quick))
        ),
    );
    d.ctl(&["daemon-reload"]);
    wait_for("the first quick run", PATIENCE, || {
        !stamps(&quick).is_empty()
    });
    let first = stamps(&quick)[0];
    // A storm of reloads of unchanged files for about 4 s: the schedule neither stops nor
    // fires more often.
    let storm = std::time::Instant::now();
    let mut reloads = 0;
    while storm.elapsed() < Duration::from_secs(4) {
        let out = d.ctl(&["daemon-reload"]);
        assert!(out.status.success(), "{}", text(&out));
        reloads += 1;
    }
    let quick_runs: Vec<u128> = stamps(&quick).into_iter().filter(|&t| t >= first).collect();
    let span_s = (quick_runs.last().copied().unwrap_or(first) - first) as f64 / 1e9;
    println!(
        "{reloads} daemon-reloads in 4 s: quick ran {} times over {span_s:.1} s",
        quick_runs.len()
    );
    assert!(
        (3..=6).contains(&quick_runs.len()),
        "every 1s over ~4 s ran {} times",
        quick_runs.len()
    );
    // Never overlapped: one process, started once, however many due times passed.
    assert_eq!(stamps(&forever).len(), 1);
    assert_eq!(d.pids("forever").len(), 1);
    let job = d.unit("forever")["job"].clone();
    assert!(job["skipped"].as_u64() >= Some(3), "{job}");
    assert_eq!(job["runs"], 1, "{job}");
    // One line says so, not one a second: the others of this run are counted.
    let said = d.log().matches("forever: scheduled run skipped").count();
    assert_eq!(said, 1, "{}", d.log());
}

/// db and web (after db), each writing its stop time from its SIGTERM trap; web takes
/// 0.3 s to stop, so db must really wait for it.
fn db_and_web(d: &Daemon) -> (std::path::PathBuf, std::path::PathBuf) {
    let (db_stop, web_stop) = (d.path("db.stop"), d.path("web.stop"));
    d.write_unit(
        "db",
        &sh(&format!(
            "trap '{}; exit 0' TERM; while :; do sleep 0.05; done",
            stamp(&db_stop)
        )),
    );
    d.write_unit(
        "web",
        &format!(
            "{}after = [\"db\"]\n",
            sh(&format!(
                "trap 'sleep 0.3; {}; exit 0' TERM; while :; do sleep 0.05; done",
                stamp(&web_stop)
            ))
        ),
    );
    d.ctl(&["daemon-reload"]);
    d.wait_running("web", 1);
    (db_stop, web_stop)
}

/// Web's stop stamp came before db's.
fn web_stopped_first(db_stop: &Path, web_stop: &Path) {
    let (db, web) = (stamps(db_stop), stamps(web_stop));
    assert_eq!(
        (db.len(), web.len()),
        (1, 1),
        "both stopped by their TERM trap"
    );
    assert!(
        web[0] <= db[0],
        "db stopped {:.1} ms before web",
        (web[0] - db[0]) as f64 / 1e6
    );
    println!(
        "db got its SIGTERM {:.1} ms after web's own stop stamp",
        (db[0] - web[0]) as f64 / 1e6
    );
}

#[test]
fn shutdown_stops_the_web_before_the_database_it_is_ordered_after() {
    let mut d = Daemon::start(&[]);
    let (db_stop, web_stop) = db_and_web(&d);
    // `stop db` does not stop web (after orders, it does not bind).
    let out = d.ctl(&["stop", "db"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(d.pids("web").len(), 1);
    assert!(stamps(&web_stop).is_empty());
    let out = d.ctl(&["start", "db"]);
    assert!(out.status.success(), "{}", text(&out));
    fs::remove_file(&db_stop).unwrap();
    d.terminate();
    web_stopped_first(&db_stop, &web_stop);
}

#[test]
fn stopping_several_units_stops_dependents_first() {
    let d = Daemon::start(&[]);
    let (db_stop, web_stop) = db_and_web(&d);
    let out = d.ctl(&["stop", "db", "web"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(text(&out), "web: stopped\ndb: stopped\n");
    web_stopped_first(&db_stop, &web_stop);
}

#[test]
fn pm2s_cron_job_imports_as_a_scheduled_oneshot_that_runs() {
    let d = Daemon::start(&[]);
    let ran = d.path("ran");
    let ecosystem = d.path("ecosystem.json");
    let app = serde_json::json!({"apps": [{
        "name": "nightly",
        "script": "sh",
        "args": ["-c", format!("date +%s%N >> '{}'", ran.display())],
        "interpreter": "none",
        "cron_restart": "0 3 * * *",
        "autorestart": false,
        "max_memory_restart": "100M",
    }]});
    fs::write(&ecosystem, app.to_string()).unwrap();
    let out = Command::new(CLUSTERCTL)
        .arg("import")
        .arg("--out")
        .arg(d.units_dir())
        .arg(&ecosystem)
        .output()
        .expect("clusterctl import");
    assert!(out.status.success(), "{}", text(&out));
    let unit = fs::read_to_string(d.units_dir().join("nightly.toml")).unwrap();
    assert!(unit.contains("type = \"oneshot\""), "{unit}");
    assert!(unit.contains("schedule = \"0 3 * * *\""), "{unit}");
    assert!(!unit.contains("\ncron_restart ="), "{unit}");
    assert!(!unit.contains("\nmemory_max ="), "{unit}");
    assert!(!unit.contains("\nrestart ="), "{unit}");
    let checked = check(&d.units_dir());
    assert!(checked.status.success(), "{}", text(&checked));
    d.ctl(&["daemon-reload"]);
    wait_state(&d, "nightly", "waiting");
    assert_eq!(d.unit("nightly")["waiting_for"], "its schedule");
    assert!(
        stamps(&ran).is_empty(),
        "a scheduled job waits for its time"
    );
    let out = d.ctl(&["start", "nightly"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(stamps(&ran).len(), 1);
    assert_eq!(state(&d, "nightly"), "done");
}
