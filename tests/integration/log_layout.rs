//! `[log]` layouts, as PM2 users write them: stdout and stderr in files of their own, one
//! file per instance, a path outside the log directory (refused where another user could
//! plant a link), a local-time timestamp format, rotation of each file, `clusterctl logs`
//! (history and `-f`) across the files, and an imported ecosystem file with PM2's five log
//! keys writing where PM2 would.

use crate::common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// Prints `out N` to stdout and `err N` to stderr, alternately, 50 ms apart, `count` times
/// each, then sleeps.
fn alternating(count: u32) -> String {
    format!(
        "command = [\"sh\", \"-c\", \"i=0; while [ $i -lt {count} ]; do echo out $i; sleep 0.05; echo err $i >&2; sleep 0.05; i=$((i+1)); done; exec sleep 300\"]\n"
    )
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_default()
}

/// The bodies (after `| `) of the lines of `text` that `label stream` wrote.
fn bodies_of(text: &str, source: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| line.split_once(" | "))
        .filter(|(head, _)| head.ends_with(source))
        .map(|(_, body)| body.to_string())
        .collect()
}

#[test]
fn split_files_get_their_own_streams_and_logs_interleaves_them_by_time() {
    let unit = format!("{}[log]\nsplit = true\n", alternating(5));
    let daemon = Daemon::start(&[("web", &unit)]);
    let (out, err) = (
        daemon.log_dir().join("web.out.log"),
        daemon.log_dir().join("web.err.log"),
    );
    wait_for("the last stderr line", PATIENCE, || {
        read(&err).contains("| err 4\n")
    });
    let (out_text, err_text) = (read(&out), read(&err));
    assert_eq!(
        bodies_of(&out_text, "web[0] out"),
        ["out 0", "out 1", "out 2", "out 3", "out 4"]
    );
    assert_eq!(
        bodies_of(&err_text, "web[0] err"),
        ["err 0", "err 1", "err 2", "err 3", "err 4"]
    );
    assert!(
        !out_text.contains(" err | ") && !err_text.contains(" out | "),
        "{out_text}\n{err_text}"
    );
    assert!(!daemon.log_dir().join("web.log").exists());
    let status = daemon.unit("web");
    let shown = status["log"].as_str().unwrap_or_default();
    assert!(shown.ends_with("web.out.log and 1 more"), "{status}");

    let logs = daemon.ctl(&["logs", "web", "--lines", "100"]);
    assert!(logs.status.success(), "{logs:?}");
    let text = String::from_utf8_lossy(&logs.stdout);
    let order: Vec<String> = text
        .lines()
        .filter_map(|l| l.split_once(" | ").map(|(_, b)| b.to_string()))
        .filter(|b| b.starts_with("out ") || b.starts_with("err "))
        .collect();
    let expected: Vec<String> = (0..5)
        .flat_map(|i| [format!("out {i}"), format!("err {i}")])
        .collect();
    assert_eq!(order, expected, "{text}");
    let only_err = daemon.ctl(&["logs", "web", "--stream", "err", "--lines", "2"]);
    let text = String::from_utf8_lossy(&only_err.stdout);
    assert_eq!(bodies_of(&text, "web[0] err"), ["err 3", "err 4"], "{text}");
}

#[test]
fn per_instance_files_hold_their_instances_lines_and_logs_follows_them_all() {
    let files = tempfile::tempdir().expect("tmp");
    // Each instance prints `hello <instance> N` whenever `go-<instance>` appears.
    let unit = format!(
        "command = [\"sh\", \"-c\", \"n=0; while true; do if [ -f go-$CLUSTERD_INSTANCE ]; then rm go-$CLUSTERD_INSTANCE; n=$((n+1)); echo hello $CLUSTERD_INSTANCE $n; echo oops $CLUSTERD_INSTANCE $n >&2; fi; sleep 0.02; done\"]\ninstances = 2\nworking_directory = \"{}\"\n[log]\nper_instance = true\n",
        toml_path(files.path())
    );
    let daemon = Daemon::start(&[("web", &unit)]);
    daemon.wait_running("web", 2);
    for i in 0..2 {
        fs::write(files.path().join(format!("go-{i}")), "").expect("go");
    }
    let file = |i: u32| daemon.log_dir().join(format!("web-{i}.log"));
    wait_for("both instances' files", PATIENCE, || {
        (0..2).all(|i| read(&file(i)).contains(&format!("| oops {i} 1\n")))
    });
    for i in 0..2u32 {
        let text = read(&file(i));
        let other = 1 - i;
        assert!(!text.contains(&format!("web[{other}]")), "{text}");
        assert_eq!(
            bodies_of(&text, &format!("web[{i}] out")),
            [format!("hello {i} 1")]
        );
        assert_eq!(
            bodies_of(&text, &format!("web[{i}] err")),
            [format!("oops {i} 1")]
        );
    }
    let logs = daemon.ctl(&["logs", "web", "--lines", "100"]);
    let text = String::from_utf8_lossy(&logs.stdout);
    for i in 0..2 {
        assert!(
            text.contains(&format!("| hello {i} 1\n")) && text.contains(&format!("| oops {i} 1\n")),
            "{text}"
        );
    }
    let one = daemon.ctl(&["logs", "web", "--instance", "1", "--lines", "100"]);
    let text = String::from_utf8_lossy(&one.stdout);
    assert!(
        text.contains("| hello 1 1") && !text.contains("web[0]"),
        "{text}"
    );

    let mut follower = KillOnDrop(
        Command::new(CLUSTERCTL)
            .arg("--socket")
            .arg(daemon.path("ctl.sock"))
            .args(["logs", "web", "--lines", "0", "--follow"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("clusterctl logs -f"),
    );
    let seen = collect_stdout(&mut follower.0);
    wait_for(
        "both instances' new lines at the follower",
        PATIENCE,
        || {
            for i in 0..2 {
                let _ = fs::write(files.path().join(format!("go-{i}")), "");
            }
            std::thread::sleep(Duration::from_millis(200));
            let got = String::from_utf8_lossy(&seen.lock().expect("lock")).into_owned();
            got.contains("web[0] err | oops 0") && got.contains("web[1] out | hello 1")
        },
    );
}

#[test]
fn a_local_timestamp_format_follows_tz_in_clusterds_environment() {
    // A POSIX TZ needs no zone database: UTC+05:30, named XYZ.
    let tz = "XYZ-05:30";
    let format = "%Y-%m-%d %H:%M %z %Z";
    let unit = format!(
        "command = [\"sh\", \"-c\", \"echo hello; exec sleep 300\"]\n[log]\ntimestamp_format = \"{format}\"\n"
    );
    let date = || {
        let out = Command::new("date")
            .arg(format!("+{format}"))
            .env("TZ", tz)
            .output()
            .expect("date");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let before = date();
    let daemon = Daemon::start_with_env(&[("web", &unit)], &[&format!("TZ={tz}")]);
    let file = daemon.log_dir().join("web.log");
    wait_for("the line", PATIENCE, || read(&file).contains("| hello\n"));
    let after = date();
    let text = read(&file);
    let line = text
        .lines()
        .find(|l| l.ends_with("| hello"))
        .expect("the line");
    let stamp = line
        .strip_suffix(" web[0] out | hello")
        .expect("stamp, label");
    assert!(
        stamp == before || stamp == after,
        "{stamp:?}, date said {before:?} / {after:?}"
    );
    assert!(stamp.ends_with(" +0530 XYZ"), "{stamp}");
    // The history still tells instance and stream apart, whatever the stamp holds.
    let logs = daemon.ctl(&["logs", "web", "--stream", "out"]);
    assert!(
        String::from_utf8_lossy(&logs.stdout).contains("| hello"),
        "{logs:?}"
    );
}

#[test]
fn each_file_of_a_split_unit_rotates_on_its_own() {
    let unit = "command = [\"sh\", \"-c\", \"i=0; while [ $i -lt 300 ]; do echo out line $i; echo err line $i >&2; i=$((i+1)); done; echo last; exec sleep 300\"]\n[log]\nsplit = true\nmax_size = \"2KiB\"\nkeep = 2\n";
    let daemon = Daemon::start(&[("web", unit)]);
    let dir = daemon.log_dir();
    wait_for("the last line", PATIENCE, || {
        read(&dir.join("web.out.log")).contains("| last\n")
    });
    wait_for("err line 299", PATIENCE, || {
        read(&dir.join("web.err.log")).contains("| err line 299\n")
    });
    for stream in ["out", "err"] {
        let name = format!("web.{stream}.log");
        let rotated: Vec<PathBuf> = fs::read_dir(&dir)
            .expect("log dir")
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(&format!("{name}.")))
            })
            .collect();
        assert_eq!(rotated.len(), 2, "{stream}: {rotated:?}");
        for file in rotated.iter().chain([dir.join(&name)].iter()) {
            let text = read(file);
            assert!(
                text.len() <= 2048,
                "{}: {} bytes",
                file.display(),
                text.len()
            );
            let other = if stream == "out" {
                " err | "
            } else {
                " out | "
            };
            assert!(!text.contains(other), "{}: {text}", file.display());
        }
    }
}

#[test]
fn a_file_in_a_directory_another_user_owns_is_refused_and_its_link_not_followed() {
    let scratch = tempfile::Builder::new()
        .prefix("clusterd-layout")
        .tempdir_in("/tmp")
        .expect("tmp");
    fs::set_permissions(scratch.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
    let secret = scratch.path().join("secret");
    fs::write(&secret, "TOP SECRET\n").expect("secret");
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).expect("chmod");
    let theirs = scratch.path().join("theirs");
    fs::create_dir(&theirs).expect("dir");
    std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).expect("chown");
    let planted = Command::new("/bin/ln")
        .arg("-s")
        .arg(&secret)
        .arg(theirs.join("web.log"))
        .uid(65534)
        .gid(65534)
        .status()
        .expect("ln as nobody");
    assert!(planted.success());
    let unit = format!(
        "command = [\"sh\", \"-c\", \"while :; do echo tick; sleep 0.1; done\"]\n[log]\nfile = \"{}\"\n",
        toml_path(&theirs.join("web.log"))
    );
    let daemon = Daemon::start(&[("web", &unit)]);
    wait_for(
        "clusterd to say why it does not write there",
        PATIENCE,
        || {
            let log = daemon.log();
            log.contains("cannot write its log") && log.contains("does not belong to")
        },
    );
    assert_eq!(read(&secret), "TOP SECRET\n");
    let status = daemon.ctl(&["status", "web"]);
    assert!(
        String::from_utf8_lossy(&status.stdout).contains("cannot write"),
        "{status:?}"
    );
}

#[test]
fn an_ecosystem_file_with_pm2s_five_log_keys_imports_and_writes_where_pm2_would() {
    let dir = tempfile::tempdir().expect("tmp");
    fs::write(
        dir.path().join("app.sh"),
        "echo started $CLUSTERD_INSTANCE\necho failed $CLUSTERD_INSTANCE >&2\nexec sleep 300\n",
    )
    .expect("script");
    let ecosystem = r#"{ "apps": [{
        "name": "web",
        "script": "app.sh",
        "interpreter": "sh",
        "instances": 2,
        "out_file": "./logs/web-out.log",
        "error_file": "./logs/web-error.log",
        "log_file": "./logs/web-combined.log",
        "merge_logs": false,
        "log_date_format": "YYYY-MM-DD HH:mm Z"
    }] }"#;
    let file = dir.path().join("ecosystem.json");
    fs::write(&file, ecosystem).expect("ecosystem");
    let units = dir.path().join("units");
    let import = Command::new(CLUSTERCTL)
        .arg("import")
        .arg("--out")
        .arg(&units)
        .arg(&file)
        .output()
        .expect("import");
    assert!(import.status.success(), "{import:?}");
    let text = read(&units.join("web.toml"));
    for key in [
        "stdout",
        "stderr",
        "file",
        "per_instance = true",
        "timestamp_format = \"%Y-%m-%d %H:%M %:z\"",
    ] {
        assert!(text.contains(key), "{key} in\n{text}");
    }
    let daemon = Daemon::start(&[("web", &text)]);
    let logs = dir.path().join("logs");
    let file = |name: &str| logs.join(name);
    wait_for("each instance's files", PATIENCE, || {
        (0..2).all(|i| {
            read(&file(&format!("web-out-{i}.log"))).contains(&format!("| started {i}\n"))
                && read(&file(&format!("web-error-{i}.log"))).contains(&format!("| failed {i}\n"))
        })
    });
    // Local time to the minute, then the offset, as PM2's "YYYY-MM-DD HH:mm Z".
    let line = read(&file("web-out-0.log"));
    let stamp = line
        .lines()
        .find(|l| l.ends_with("| started 0"))
        .expect("line");
    let bytes = stamp.as_bytes();
    assert!(
        bytes.len() > 24 && bytes[4] == b'-' && bytes[10] == b' ' && bytes[13] == b':',
        "{stamp}"
    );
    assert!(!daemon.log_dir().join("web.log").exists());
    let history = daemon.ctl(&["logs", "web", "--lines", "100"]);
    let text = String::from_utf8_lossy(&history.stdout);
    for i in 0..2 {
        assert!(
            text.contains(&format!("| started {i}")) && text.contains(&format!("| failed {i}")),
            "{text}"
        );
    }
}
