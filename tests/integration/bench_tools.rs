//! The benchmark tools that act on the machine: `benches/restart_ab.c` kills the pids a stamp
//! file names, so a stamp file it did not make must not be able to make it kill anything else.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::{alive, toml_path, wait_for, Daemon, KillOnDrop};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// `benches/<source>` (or `benches/supervisors/workers/<source>`) built with gcc into `dir`.
fn build(source: &str, dir: &Path) -> PathBuf {
    let path = [
        format!("{ROOT}/benches/{source}"),
        format!("{ROOT}/benches/supervisors/workers/{source}"),
    ]
    .into_iter()
    .find(|p| Path::new(p).exists())
    .unwrap_or_else(|| panic!("no benches/.../{source}"));
    let binary = dir.join(source.trim_end_matches(".c"));
    let built = Command::new("gcc")
        .args(["-O2", "-o"])
        .arg(&binary)
        .arg(&path)
        .status()
        .expect("gcc runs (CI installs it)");
    assert!(built.success(), "gcc {path} failed");
    binary
}

fn run_restart_ab(binary: &Path, kills: u32, stamps: &Path) -> std::process::Output {
    let mut child = Command::new(binary)
        .arg(kills.to_string())
        .arg(stamps)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start restart_ab");
    let mut done = None;
    wait_for("restart_ab to exit", Duration::from_secs(60), || {
        done = child.try_wait().expect("try_wait");
        done.is_some()
    });
    child.wait_with_output().expect("restart_ab's output")
}

#[test]
fn restart_ab_kills_only_workers_of_the_stamp_file_and_trusts_no_file_others_may_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let restart_ab = build("restart_ab.c", dir.path());
    let worker = build("stamp_worker.c", dir.path());

    // A process that is nobody's worker, named ten times by a planted stamp file.
    let bystander = KillOnDrop(
        Command::new("sleep")
            .arg("1000")
            .spawn()
            .expect("start sleep"),
    );
    let pid = bystander.0.id();
    let planted = dir.path().join("planted");
    let lines: String = (0..10).map(|i| format!("{pid} {i}\n")).collect();
    fs::write(&planted, &lines).expect("write the planted file");
    let out = run_restart_ab(&restart_ab, 1, &planted);
    assert!(
        !out.status.success(),
        "restart_ab killed from a planted file"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is not a worker writing to it"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(alive(pid), "the bystander was killed");

    // A link to a stamp file, and a stamp file others may write: refused before anything.
    let link = dir.path().join("link");
    symlink(&planted, &link).expect("symlink");
    let writable = dir.path().join("writable");
    fs::write(&writable, &lines).expect("write");
    fs::set_permissions(&writable, fs::Permissions::from_mode(0o666)).expect("chmod");
    for file in [&link, &writable] {
        let out = run_restart_ab(&restart_ab, 1, file);
        assert!(!out.status.success(), "{file:?} was trusted");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("only it may write"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(alive(pid), "the bystander was killed");

    // Its real use: clusterd's workers, each started with the stamp file's path.
    let stamps = dir.path().join("stamps");
    let unit = format!(
        "command = [\"{}\", \"{}\"]\ninstances = 10\nrestart_limit = {{ burst = 100, interval = \"1m\" }}\n",
        toml_path(&worker),
        toml_path(&stamps)
    );
    let daemon = Daemon::start(&[("w", &unit)]);
    daemon.wait_running("w", 10);
    wait_for("10 stamps", Duration::from_secs(10), || {
        fs::read_to_string(&stamps).is_ok_and(|s| s.lines().count() >= 10)
    });
    let before = daemon.pids("w");
    let out = run_restart_ab(&restart_ab, 3, &stamps);
    assert!(
        out.status.success(),
        "restart_ab on clusterd's workers: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("p50"));
    let after = daemon.pids("w");
    assert_eq!(
        before.iter().filter(|p| !after.contains(p)).count(),
        3,
        "three workers replaced: {before:?} → {after:?}"
    );
    assert!(alive(pid), "the bystander was killed");
}
