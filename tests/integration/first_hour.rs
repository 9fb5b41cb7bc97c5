//! What a new user hits in the first hour (issue 23): `reload` after editing a unit file,
//! `daemon-reload` of a unit whose port is taken, `ls`, `logs` of every unit, the small
//! messages. Each test is named after the surprise it pins.

use crate::common;
use common::*;

use std::process::Output;
use std::time::Duration;

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

/// `reload NAME` reads NAME's file to see whether it changed: the name comes from a client,
/// so only a loaded unit's own file is read on its word (a name through `..`, or of no loaded
/// unit, reads nothing), and whatever is planted beside the units directory, a FIFO here,
/// neither holds clusterd's loop nor changes the answer: unknown unit, exit 1.
#[test]
fn reload_of_a_name_that_is_no_loaded_unit_reads_no_file() {
    let d = Daemon::start(&[("web", SLEEPER)]);
    d.wait_running("web", 1);
    let fifo = d.units_dir().with_file_name("planted.toml");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo");
    assert!(made.success());
    for name in ["../planted", "planted", "nosuch"] {
        let out = d
            .ctl_within(&["reload", name], Duration::from_secs(10))
            .unwrap_or_else(|| panic!("reload {name}: no answer within 10 s"));
        assert_eq!(out.status.code(), Some(1), "{name}: {}", stderr(&out));
    }
    let status = d
        .ctl_within(&["status"], Duration::from_secs(10))
        .expect("status answered within 10 s");
    assert!(status.status.success(), "{}", stderr(&status));
    let _ = std::fs::remove_file(&fifo);
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

/// PM2's `pm2 ls` and `pm2 logs`: `clusterctl ls` is `status`, and `logs` without a unit shows
/// every unit's lines, each prefixed by its unit. `logs nosuch` said "no logs for"; it says
/// "unknown unit", as status does.
#[test]
fn ls_is_status_and_logs_without_a_unit_shows_every_unit_prefixed() {
    let d = Daemon::start(&[
        (
            "alpha",
            "command = [\"sh\", \"-c\", \"echo from-alpha; exec sleep 300\"]\n",
        ),
        (
            "beta",
            "command = [\"sh\", \"-c\", \"echo from-beta; exec sleep 300\"]\n",
        ),
    ]);
    d.wait_running("alpha", 1);
    d.wait_running("beta", 1);

    let ls = d.ctl(&["ls"]);
    assert_eq!(ls.status.code(), Some(0), "{}", stderr(&ls));
    assert!(stdout(&ls).contains("alpha") && stdout(&ls).contains("beta"));

    let mut text = String::new();
    wait_for("both units' lines in `clusterctl logs`", PATIENCE, || {
        let out = d.ctl(&["logs"]);
        text = stdout(&out);
        out.status.success() && text.contains("from-alpha") && text.contains("from-beta")
    });
    for (unit, word) in [("alpha", "from-alpha"), ("beta", "from-beta")] {
        let line = text.lines().find(|l| l.contains(word)).unwrap();
        // Padded to the longest name, so that the lines align.
        assert_eq!(
            line.split(" | ").next().map(str::trim),
            Some(unit),
            "{text}"
        );
    }

    let nosuch = d.ctl(&["logs", "nosuch"]);
    assert_eq!(nosuch.status.code(), Some(1));
    assert!(
        stderr(&nosuch).contains("unknown unit \"nosuch\""),
        "{}",
        stderr(&nosuch)
    );
}

/// `logs -f` without a unit follows every unit: a line written after it started arrives,
/// prefixed.
#[test]
fn logs_follow_without_a_unit_shows_new_lines_of_every_unit() {
    use std::io::{BufRead, BufReader};
    let d = Daemon::start(&[("alpha", SLEEPER), ("beta", SLEEPER)]);
    d.wait_running("alpha", 1);
    d.wait_running("beta", 1);
    let mut follower = std::process::Command::new(CLUSTERCTL)
        .arg("--socket")
        .arg(&d.socket)
        .args(["logs", "-f", "-n", "1"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run clusterctl logs -f");
    let out = follower.stdout.take().unwrap();
    let (sender, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if sender.send(line).is_err() {
                return;
            }
        }
    });
    // The history (one line of each) comes once the followers are connected.
    for _ in 0..2 {
        let line = lines.recv_timeout(PATIENCE);
        assert!(line.is_ok(), "no history line");
    }
    // Stopping beta by hand writes clusterd's event into beta's log.
    let stop = d.ctl(&["stop", "beta"]);
    assert!(stop.status.success(), "{}", stderr(&stop));
    let deadline = std::time::Instant::now() + PATIENCE;
    let mut seen = Vec::new();
    let found = loop {
        match lines.recv_timeout(std::time::Duration::from_millis(200)) {
            Ok(line)
                if line.split(" | ").next().map(str::trim) == Some("beta")
                    && line.contains("SIGTERM") =>
            {
                break true
            }
            Ok(line) => seen.push(line),
            Err(_) if std::time::Instant::now() > deadline => break false,
            Err(_) => {}
        }
    };
    let _ = follower.kill();
    let _ = follower.wait();
    assert!(found, "no `beta | ` line; saw {seen:?}");
}

/// `import --env stagin` (a typo) gave units without the variables, silently: it warns.
#[test]
fn import_with_an_env_no_app_has_warns() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ecosystem.json");
    std::fs::write(
        &file,
        r#"{"apps":[{"name":"api","script":"server.py","env_staging":{"A":"1"}}]}"#,
    )
    .unwrap();
    let run = |env: &str| {
        std::process::Command::new(CLUSTERCTL)
            .args(["import", file.to_str().unwrap(), "--env", env])
            .output()
            .expect("run clusterctl import")
    };
    let typo = run("stagin");
    assert_eq!(typo.status.code(), Some(0), "{}", stderr(&typo));
    assert!(
        stderr(&typo).contains("warning: --env stagin: no app has env_stagin"),
        "{}",
        stderr(&typo)
    );
    let right = run("staging");
    assert!(!stderr(&right).contains("warning"), "{}", stderr(&right));
}

/// The synopsis of docs/clusterctl.md listed 11 of the 16 verbs: every verb of the CLI is in
/// it, and has a section of its own.
#[test]
fn the_clusterctl_docs_synopsis_lists_every_verb_of_the_cli() {
    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/clusterctl.md"))
        .unwrap();
    let synopsis: String = docs
        .split("```")
        .nth(1)
        .expect("a synopsis block")
        .to_string();
    for verb in clusterd::cli::clusterctl_args::command().get_subcommands() {
        if verb.is_hide_set() {
            continue;
        }
        let name = verb.get_name();
        assert!(
            synopsis
                .lines()
                .any(|l| l.split_whitespace().any(|w| w == name)),
            "docs/clusterctl.md's synopsis lacks `{name}`:\n{synopsis}"
        );
        assert!(
            docs.contains(&format!("### `{name}")),
            "docs/clusterctl.md has no section for `{name}`"
        );
        assert!(
            verb.get_about().is_some(),
            "`clusterctl {name}` has no sentence in --help"
        );
        for arg in verb.get_arguments() {
            assert!(
                arg.get_help().is_some() || arg.get_id() == "help",
                "`clusterctl {name}`: argument {} is not described",
                arg.get_id()
            );
        }
    }
}

/// Every flag of both programs (clusterctl's global ones included) says what it does in
/// `--help` and in the man pages made from it; both programs' `--help` has examples and the
/// exit status under headings of their own.
#[test]
fn every_flag_of_both_programs_is_described_and_both_helps_have_examples_and_exit_codes() {
    for command in [
        clusterd::cli::clusterctl_args::command(),
        clusterd::cli::clusterd_args::command(),
    ] {
        let program = command.get_name().to_string();
        for arg in command.get_arguments() {
            assert!(
                arg.get_help().is_some(),
                "`{program}`: --{} is not described",
                arg.get_id()
            );
        }
        let help = command
            .get_after_long_help()
            .map(ToString::to_string)
            .unwrap_or_default();
        for heading in ["Examples:\n", "Exit status:\n"] {
            assert!(
                help.contains(heading),
                "`{program} --help` lacks {heading:?}"
            );
        }
    }
}

/// `clusterctl --help`: examples and the exit codes under headings of their own; `import
/// --help` names YAML and says which files are run.
#[test]
fn clusterctl_help_has_examples_exit_codes_and_import_says_what_it_runs() {
    let help = std::process::Command::new(CLUSTERCTL)
        .arg("--help")
        .output()
        .unwrap();
    let text = stdout(&help);
    assert!(text.contains("\nExamples:\n"), "{text}");
    assert!(text.contains("\nExit status:\n"), "{text}");
    assert!(text.contains("ls"), "{text}");
    let import = std::process::Command::new(CLUSTERCTL)
        .args(["import", "--help"])
        .output()
        .unwrap();
    let text = stdout(&import);
    assert!(text.contains("YAML"), "{text}");
    assert!(text.contains("RUN by node"), "{text}");
}

/// units/suicide.toml told users to look for "running (replaced)", a state status never
/// shows: a retiring process is `draining`.
#[test]
fn the_suicide_examples_comment_names_the_state_status_shows() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/units/suicide.toml"))
        .unwrap();
    assert!(text.contains("\"draining\""), "{text}");
    assert!(!text.contains("running (replaced)"), "{text}");
    assert_eq!(
        clusterd::protocol::InstanceState::Draining.to_string(),
        "draining"
    );
}

/// Removes a directory when the test ends, passed or not.
struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Two clusterd daemons run as root (no --log-dir) shared /var/log/clusterd/UNIT.log: a unit
/// `web` of each wrote into one file. Each daemon on a socket of its own now has a log
/// directory of its own, named after the socket.
#[test]
fn two_daemons_on_their_own_sockets_keep_their_units_logs_apart() {
    if !have_root() {
        return;
    }
    let unit =
        |word: &str| format!("command = [\"sh\", \"-c\", \"echo {word}; exec sleep 300\"]\n");
    let first = Daemon::start_with_default_log_dir(&[("web", &unit("from-first"))]);
    let second = Daemon::start_with_default_log_dir(&[("web", &unit("from-second"))]);
    let dir_of = |d: &Daemon| {
        let escaped = d
            .socket
            .to_str()
            .unwrap()
            .trim_start_matches('/')
            .replace('-', "\\x2d")
            .replace('/', "-");
        std::path::PathBuf::from(format!("/var/log/clusterd@{escaped}"))
    };
    let _cleanup = (RemoveOnDrop(dir_of(&first)), RemoveOnDrop(dir_of(&second)));
    first.wait_running("web", 1);
    second.wait_running("web", 1);
    for (d, mine, theirs) in [
        (&first, "from-first", "from-second"),
        (&second, "from-second", "from-first"),
    ] {
        let file = dir_of(d).join("web.log");
        let mut text = String::new();
        wait_for(
            "the unit's line in its daemon's own log file",
            PATIENCE,
            || {
                text = std::fs::read_to_string(&file).unwrap_or_default();
                text.contains(mine)
            },
        );
        assert!(!text.contains(theirs), "{}: {text}", file.display());
    }
}

/// A unit whose `working_directory` does not exist: `daemon-reload` and `start` say so at
/// once, naming the directory, and daemon-reload's list of what failed is a list (it came
/// out as one line with `\n` in it), each unit on a line of its own, still escaped for the
/// terminal.
#[test]
fn a_missing_working_directory_is_said_at_once_on_a_line_of_its_own() {
    let d = Daemon::start(&[("web", SLEEPER)]);
    d.wait_running("web", 1);
    let missing = d.path("no-such-dir");
    d.write_unit(
        "lost",
        &format!(
            "command = \"sleep 300\"\nworking_directory = \"{}\"\n",
            toml_path(&missing)
        ),
    );
    let cause = format!(
        "cannot change to its working directory {:?}: No such file or directory",
        missing.display().to_string()
    );
    let out = d.ctl(&["daemon-reload"]);
    let said = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    let lines: Vec<&str> = said.lines().collect();
    assert_eq!(
        lines,
        [
            "clusterctl: started lost; 1 unchanged",
            "1 unit(s) cannot start their program (retried on a backoff):",
            &format!("lost: {cause}"),
        ],
        "{said}"
    );
    let out = d.ctl(&["start", "lost"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(
        stderr(&out).trim_end(),
        format!("clusterctl: lost: instance 0 failed to start: {cause}")
    );
}
