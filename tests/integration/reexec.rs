//! `clusterctl daemon-reexec`, with clusterd run from a copy in the test's directory that the
//! test replaces on disk (by rename, as dpkg does) before asking for the re-exec. What is
//! built so far is the pre-flight: a new binary that is broken, not executable, writable by
//! others or a symlink to something that is not clusterd is refused with the reason, and the
//! old clusterd keeps running with every instance as it was; only root and clusterd's own
//! user may ask.

use crate::common;
use common::*;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const TWO_SLEEPERS: &str = "command = \"sleep 300\"\ninstances = 2\n";

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A copy of clusterd at `dir/bin/clusterd` (by `cp`: see `copy_for_everyone` on ETXTBSY).
fn clusterd_copy(dir: &Path) -> PathBuf {
    let bin = dir.join("bin");
    fs::create_dir_all(&bin).expect("bin dir");
    let copy = bin.join("clusterd");
    replace_with_copy(&copy, Path::new(CLUSTERD));
    copy
}

/// clusterd run from a copy (returned) in the test's directory, with two instances of `web`.
fn start_from_copy() -> (Daemon, PathBuf) {
    let mut binary = PathBuf::new();
    let d = Daemon::start_program(&[("web", TWO_SLEEPERS)], |dir| {
        binary = clusterd_copy(dir);
        binary.clone()
    });
    (d, binary)
}

/// Replaces `binary` by a copy of `source`, written beside it and renamed over it: the
/// running clusterd's file is unlinked, not written into (as a package upgrade does).
fn replace_with_copy(binary: &Path, source: &Path) {
    let staged = binary.with_extension("new");
    let copied = Command::new("cp")
        .arg(source)
        .arg(&staged)
        .status()
        .expect("run cp");
    assert!(copied.success(), "cp {} failed", source.display());
    fs::set_permissions(&staged, fs::Permissions::from_mode(0o755)).expect("chmod");
    fs::rename(&staged, binary).expect("rename over the binary");
}

/// Replaces `binary` by a file of `text` with `mode`, by rename.
fn replace_with_file(binary: &Path, text: &str, mode: u32) {
    let staged = binary.with_extension("new");
    fs::write(&staged, text).expect("write the replacement");
    fs::set_permissions(&staged, fs::Permissions::from_mode(mode)).expect("chmod");
    fs::rename(&staged, binary).expect("rename over the binary");
}

/// Asks for a re-exec and checks that it was refused with `reason`, and that clusterd and
/// every instance are as they were.
fn assert_refused_and_unchanged(d: &Daemon, pids: &[u32], reason: &str) {
    let clusterd = d.pid();
    let out = d.ctl(&["daemon-reexec"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(reason),
        "the reply should say {reason:?}: {}",
        stderr(&out)
    );
    assert!(alive(clusterd), "clusterd is gone\n{}", d.log());
    assert_eq!(d.pid(), clusterd);
    assert_eq!(d.pids("web"), pids, "the instances changed\n{}", d.log());
}

#[test]
fn reexec_check_says_which_state_versions_this_binary_reads() {
    let check = |version: &str| {
        Command::new(CLUSTERD)
            .args(["--reexec-check", version])
            .output()
            .expect("run clusterd --reexec-check")
    };
    assert_eq!(check("1").status.code(), Some(0));
    let newer = check("2");
    assert_eq!(newer.status.code(), Some(1));
    assert!(stderr(&newer).contains("version 2"), "{}", stderr(&newer));
}

#[test]
fn a_broken_new_binary_is_refused_and_the_old_clusterd_keeps_every_instance() {
    let (d, binary) = start_from_copy();
    let pids = d.wait_running("web", 2);

    // A program that does not read the state.
    replace_with_file(&binary, "#!/bin/sh\nexit 1\n", 0o755);
    assert_refused_and_unchanged(&d, &pids, "cannot read state version 1");
    // A file that is not executable.
    replace_with_copy(&binary, Path::new(CLUSTERD));
    fs::set_permissions(&binary, fs::Permissions::from_mode(0o644)).expect("chmod");
    assert_refused_and_unchanged(&d, &pids, "is not executable");
    // A binary anyone may write: whoever wrote it would become clusterd.
    fs::set_permissions(&binary, fs::Permissions::from_mode(0o777)).expect("chmod");
    assert_refused_and_unchanged(&d, &pids, "writable by others");
    // A symlink to something else is followed to the file it names, which is checked.
    let _ = fs::remove_file(&binary);
    std::os::unix::fs::symlink("/bin/false", &binary).expect("symlink");
    assert_refused_and_unchanged(&d, &pids, "/false cannot read state version 1");
    // Gone altogether.
    fs::remove_file(&binary).expect("remove the binary");
    assert_refused_and_unchanged(&d, &pids, "the new binary");
    // clusterd still does its job: a killed instance is restarted.
    let killed = pids[0];
    send_signal(killed, libc::SIGKILL);
    wait_for("the killed instance to be replaced", PATIENCE, || {
        let now = d.pids("web");
        now.len() == 2 && !now.contains(&killed)
    });
}

#[test]
fn a_good_new_binary_passes_the_preflight_and_nothing_changes_yet() {
    let (d, binary) = start_from_copy();
    let pids = d.wait_running("web", 2);
    // status says which version runs (the binary on disk may be newer after an upgrade).
    assert_eq!(
        d.status()["daemon"]["version"],
        env!("CARGO_PKG_VERSION"),
        "{}",
        d.status()
    );
    replace_with_copy(&binary, Path::new(CLUSTERD));
    // The exec stage is not built: the reply says the pre-flight passed, and what is not
    // done; clusterd keeps running its first binary.
    assert_refused_and_unchanged(&d, &pids, "passed the pre-flight");
}

#[test]
fn only_root_and_clusterds_own_user_may_reexec() {
    let Some(gid) = socket_group_for_tests() else {
        return;
    };
    let d = Daemon::start_with_args(&[("web", TWO_SLEEPERS)], &["--socket-group", "daemon"]);
    fs::set_permissions(d.dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
    let pids = d.wait_running("web", 2);
    let clusterctl = copy_for_everyone(CLUSTERCTL, d.dir.path());
    let member = |args: &[&str]| clusterctl_as_nobody_in(&clusterctl, &d.socket, &[gid], args);
    // The socket group may control units...
    let status = member(&["status"]);
    assert_eq!(status.status.code(), Some(0), "{}", stderr(&status));
    // ...but not decide what runs as clusterd.
    let reexec = member(&["daemon-reexec"]);
    assert_eq!(reexec.status.code(), Some(1), "{}", stderr(&reexec));
    assert!(
        stderr(&reexec).contains("only root and uid"),
        "{}",
        stderr(&reexec)
    );
    assert_eq!(d.pids("web"), pids);
}
