//! Log files against another local user (a real uid 65534): clusterd runs as root, so a link
//! planted in the log directory must never make it print a file to `clusterctl logs` or
//! append an instance's output to a file that is not its own; a log directory another user
//! could write is refused at start-up, with what was found and what to do; and a missing one
//! is created owner-only.

use crate::common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

const NOBODY: u32 = 65534;

/// Prints a numbered line every 50 ms: a file unit that keeps writing.
const TICKER: &str =
    "command = [\"/bin/sh\", \"-c\", \"i=0; while :; do echo tick $i; i=$((i+1)); sleep 0.05; done\"]\n";

/// Runs `script` with /bin/sh as uid and gid 65534.
fn as_nobody(script: &str) -> Output {
    Command::new("/bin/sh")
        .args(["-c", script])
        .current_dir("/")
        .uid(NOBODY)
        .gid(NOBODY)
        .output()
        .expect("run sh as uid 65534")
}

fn chown(path: &Path, uid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(uid)).expect("chown");
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
}

/// A root-only file: what another user wants printed or overwritten.
fn secret(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("secret");
    fs::write(&path, "TOP SECRET, root only\n").expect("secret");
    chmod(&path, 0o600);
    path
}

/// Starts clusterd on `log_dir` (no unit) and waits for it to exit, as it must: its exit
/// status and what it printed. Killed if it is still running at the deadline.
fn start_expecting_refusal(scratch: &Path, log_dir: &Path) -> (std::process::ExitStatus, String) {
    let units = scratch.join("units");
    fs::create_dir_all(&units).expect("units dir");
    let output = scratch.join("clusterd.out");
    let out = fs::File::create(&output).expect("output file");
    let mut child = Command::new(CLUSTERD)
        .arg("--units")
        .arg(&units)
        .arg("--socket")
        .arg(scratch.join("ctl.sock"))
        .arg("--log-dir")
        .arg(log_dir)
        .env_remove("CLUSTERD_SOCKET")
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("output"))
        .stderr(out)
        .spawn()
        .expect("start clusterd");
    let deadline = Instant::now() + PATIENCE;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "clusterd started on the log directory {}: {}",
                log_dir.display(),
                fs::read_to_string(&output).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    (status, fs::read_to_string(&output).unwrap_or_default())
}

#[test]
fn a_log_directory_another_user_could_write_is_refused_at_start_up() {
    if !have_root() {
        return;
    }
    let scratch = tempfile::tempdir().expect("tmp");
    let root = scratch.path();
    // uid 65534 plants a link in here below.
    chmod(root, 0o755);
    let refused = |name: &str, log_dir: &Path, expected: &[&str]| {
        let (status, output) = start_expecting_refusal(&root.join(format!("run-{name}")), log_dir);
        assert!(!status.success(), "{name}: {output}");
        for part in expected {
            assert!(output.contains(part), "{name}: {part:?} not in:\n{output}");
        }
        // Nothing was created or written in it.
        assert!(
            fs::read_dir(log_dir).map_or(0, |d| d.count()) == 0,
            "{name}: {:?}",
            fs::read_dir(log_dir).map(|d| d.collect::<Vec<_>>())
        );
    };

    // Sticky and writable by everyone, like /tmp.
    let sticky = root.join("sticky");
    fs::create_dir(&sticky).unwrap();
    chmod(&sticky, 0o1777);
    let shown = sticky.display().to_string();
    refused(
        "sticky",
        &sticky,
        &[&shown, "writable by every user", "mode 1777", "chmod go-w"],
    );

    // Someone else's.
    let theirs = root.join("theirs");
    fs::create_dir(&theirs).unwrap();
    chown(&theirs, NOBODY);
    let shown = theirs.display().to_string();
    refused(
        "theirs",
        &theirs,
        &[
            &shown,
            "owner nobody (uid 65534)",
            "does not belong to root",
            "chown root",
        ],
    );

    // Writable by a group.
    let grouped = root.join("grouped");
    fs::create_dir(&grouped).unwrap();
    chmod(&grouped, 0o770);
    refused(
        "grouped",
        &grouped,
        &["writable by the members of group", "mode 0770"],
    );

    // Safe itself, in a directory another user owns (they could rename it and put their own
    // in its place), or that every user may write.
    for (name, mode, owner) in [("owned", 0o755, NOBODY), ("open", 0o777, 0)] {
        let parent = root.join(name);
        fs::create_dir(&parent).unwrap();
        chmod(&parent, mode);
        chown(&parent, owner);
        let logs = parent.join("logs");
        fs::create_dir(&logs).unwrap();
        refused(
            name,
            &logs,
            &[
                &parent.display().to_string(),
                "on the way to the log directory",
            ],
        );
    }
    // Not there yet, in a directory every user may write: refused before it is created.
    refused(
        "open-missing",
        &root.join("open/missing"),
        &["on the way to the log directory"],
    );
    assert!(!root.join("open/missing").exists());

    // A link another user made in a sticky directory, to a safe directory of root's: they
    // would choose where clusterd writes.
    let safe = root.join("safe");
    fs::create_dir(&safe).unwrap();
    let link = sticky.join("logs");
    let planted = as_nobody(&format!("ln -s {} {}", safe.display(), link.display()));
    assert!(planted.status.success(), "{planted:?}");
    refused(
        "link",
        &link,
        &[
            &link.display().to_string(),
            "symbolic link that belongs to nobody",
        ],
    );
}

#[test]
fn a_missing_log_directory_is_created_for_clusterds_user_alone() {
    let daemon = Daemon::start_with_args(&[("web", TICKER)], &["--log-dir", "logs/a/b"]);
    let file = daemon.path("logs/a/b/web.log");
    wait_for("web's first line", PATIENCE, || {
        fs::read_to_string(&file).is_ok_and(|t| t.contains("tick 0"))
    });
    let mode = |p: &Path| fs::metadata(p).expect("stat").mode() & 0o7777;
    // Not the 0755 (less the umask) of `mkdir -p`: the files' group may list it, no one else.
    assert_eq!(mode(&daemon.path("logs/a/b")), 0o750);
    assert_eq!(mode(&daemon.path("logs/a")), 0o755);
    assert_eq!(mode(&file), 0o640);
    let me = fs::metadata(daemon.dir.path()).expect("stat").uid();
    assert_eq!(fs::metadata(daemon.path("logs/a/b")).unwrap().uid(), me);
}

/// A daemon whose log directory uid 65534 can write after start-up (an operator's chmod, a
/// restore from a backup): the checks on each file must hold on their own.
fn daemon_with_a_log_directory_opened_to_everyone(units: &[(&str, &str)], mode: u32) -> Daemon {
    let daemon = Daemon::start(units);
    wait_for("the log directory", PATIENCE, || daemon.log_dir().exists());
    chmod(daemon.dir.path(), 0o755);
    chmod(&daemon.log_dir(), mode);
    daemon
}

#[test]
fn history_shows_only_files_clusterd_wrote_never_what_another_user_planted() {
    if !have_root() {
        return;
    }
    let daemon = daemon_with_a_log_directory_opened_to_everyone(&[("web", TICKER)], 0o1777);
    wait_for("web's lines", PATIENCE, || {
        fs::read_to_string(daemon.log_dir().join("web.log")).is_ok_and(|t| t.contains("tick 3"))
    });
    let secret = secret(daemon.dir.path());
    let logs = daemon.log_dir();
    // Rotated names, older than any real one: read first by the old code.
    let name = |second: u32| format!("{}/web.log.19700101T00000{second}.000000Z", logs.display());
    let planted = as_nobody(&format!(
        "ln -s {secret} {link} && mkfifo {fifo} && echo 'FORGED by nobody' > {forged}",
        secret = secret.display(),
        link = name(0),
        fifo = name(1),
        forged = name(2),
    ));
    assert!(planted.status.success(), "{planted:?}");
    // A hard link to a root-only file (fs.protected_hardlinks stops uid 65534 from making
    // one; a system without it does not): root's file, but not one clusterd created.
    fs::hard_link(&secret, name(3)).expect("hard link");

    let started = Instant::now();
    let out = daemon.ctl(&["logs", "web", "-n", "100000"]);
    let took = started.elapsed();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(text.contains("tick 3"), "{text}");
    assert!(!text.contains("SECRET"), "{text}");
    assert!(!text.contains("FORGED"), "{text}");
    // The FIFO did not hold the log thread.
    assert!(took < Duration::from_secs(10), "{took:?}");
    eprintln!("logs with four planted files answered in {took:?}");
    wait_for("the warning in clusterd's log", PATIENCE, || {
        let log = daemon.log();
        log.contains("a symbolic link")
            && log.contains("2 names")
            && log.contains("owned by uid 65534")
    });
    // Still the same clusterd, still writing.
    let before = fs::metadata(logs.join("web.log")).unwrap().len();
    wait_for("web's file to grow", PATIENCE, || {
        fs::metadata(logs.join("web.log")).unwrap().len() > before
    });
    assert_eq!(
        fs::read_to_string(&secret).unwrap(),
        "TOP SECRET, root only\n"
    );
}

#[test]
fn a_link_or_hard_link_at_a_log_files_name_is_never_written_through() {
    if !have_root() {
        return;
    }
    // Not sticky: uid 65534 can rename root's web.log away and put a link in its place.
    let daemon =
        daemon_with_a_log_directory_opened_to_everyone(&[("web", TICKER), ("calm", TICKER)], 0o777);
    let logs = daemon.log_dir();
    wait_for("web's lines", PATIENCE, || {
        fs::read_to_string(logs.join("web.log")).is_ok_and(|t| t.contains("tick 1"))
    });
    let victim = secret(daemon.dir.path());
    let original = fs::read_to_string(&victim).unwrap();
    let planted = as_nobody(&format!(
        "mv {logs}/web.log {logs}/web.moved && ln -s {victim} {logs}/web.log && ln -s {victim} {logs}/late.log",
        logs = logs.display(),
        victim = victim.display(),
    ));
    assert!(planted.status.success(), "{planted:?}");
    // As on a system without fs.protected_hardlinks: root's file under a second name.
    fs::hard_link(&victim, logs.join("linked.log")).expect("hard link");

    // clusterd opens web.log by its name again, and two new units open theirs.
    let out = daemon.ctl(&["reopen-logs"]);
    assert!(out.status.success(), "{out:?}");
    daemon.write_unit("late", TICKER);
    daemon.write_unit("linked", TICKER);
    let out = daemon.ctl(&["daemon-reload"]);
    assert!(out.status.success(), "{out:?}");
    for (unit, why) in [
        ("web", "a symbolic link"),
        ("late", "a symbolic link"),
        ("linked", "2 names"),
    ] {
        wait_for(&format!("{unit}'s log problem"), PATIENCE, || {
            daemon.unit(unit)["log_problem"]
                .as_str()
                .is_some_and(|p| p.contains(why) && p.contains(&format!("{unit}.log")))
        });
    }
    // The other units go on; the victim is untouched.
    let calm = logs.join("calm.log");
    let before = fs::metadata(&calm).unwrap().len();
    wait_for("calm's file to grow", PATIENCE, || {
        fs::metadata(&calm).unwrap().len() > before
    });
    assert_eq!(fs::read_to_string(&victim).unwrap(), original);
    assert_eq!(fs::metadata(&victim).unwrap().mode() & 0o777, 0o600);

    // Once the link is gone, clusterd creates its own file and writes what waited.
    fs::remove_file(logs.join("late.log")).unwrap();
    wait_for("late's own file", PATIENCE, || {
        fs::symlink_metadata(logs.join("late.log")).is_ok_and(|m| m.is_file())
            && fs::read_to_string(logs.join("late.log")).is_ok_and(|t| t.contains("tick 0"))
    });
    assert_eq!(fs::read_to_string(&victim).unwrap(), original);
}
