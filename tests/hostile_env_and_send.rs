//! Hostile input on two surfaces: `environment_file` for a unit with a user of its own (that
//! user must not receive a file it could not read itself through a link it planted), and
//! `clusterctl send` to an instance that never reads its channel (clusterd stays responsive
//! and bounded, and the client is told).

mod common;

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use common::*;

const NOBODY: u32 = 65534;

/// A fresh directory where every component of the path is root's and writable by no one
/// else (as /etc/clusterd is): /tmp, where tests live otherwise, is writable by everyone.
fn root_only_dir() -> Option<tempfile::TempDir> {
    for parent in ["/run", "/var/lib", "/etc"] {
        let trusted = Path::new(parent).ancestors().all(|p| {
            use std::os::unix::fs::MetadataExt;
            fs::metadata(p).is_ok_and(|m| m.uid() == 0 && m.mode() & 0o022 == 0)
        });
        if trusted {
            if let Ok(dir) = tempfile::Builder::new()
                .prefix("clusterd-test-")
                .tempdir_in(parent)
            {
                fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).ok()?;
                return Some(dir);
            }
        }
    }
    None
}

fn chown(path: &Path, uid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(uid)).expect("chown");
}

fn write_mode(path: &Path, text: &str, mode: u32) {
    fs::write(path, text).expect("write");
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
}

/// A unit running as nobody that writes its environment to out/<unit>.txt.
fn env_reporter(out: &Path, name: &str, environment_file: &Path) -> String {
    format!(
        "command = [\"/bin/sh\", \"-c\", \"env > {out}/{name}.tmp && mv {out}/{name}.tmp {out}/{name}.txt; exec sleep 300\"]\nuser = \"nobody\"\nworking_directory = \"/\"\nenvironment_file = \"{file}\"\nrestart_limit = {{ burst = 1 }}\n",
        out = toml_path(out),
        file = toml_path(environment_file),
    )
}

fn reported(out: &Path, name: &str) -> String {
    let path = out.join(format!("{name}.txt"));
    wait_for(
        &format!("{name} to report its environment"),
        PATIENCE,
        || path.exists(),
    );
    fs::read_to_string(path).expect("report")
}

fn gave_up_with(daemon: &Daemon, name: &str) -> String {
    wait_for(&format!("{name} to give up"), PATIENCE, || {
        daemon.unit(name)["gave_up"] == true
    });
    let status = daemon.ctl(&["status", name]);
    String::from_utf8_lossy(&status.stdout).into_owned()
}

/// A unit running as nobody whose `environment_file` lies in a directory nobody owns: nobody
/// replaces it with a symbolic link, or a hard link, to a root-only secrets file. clusterd
/// (root) must not read the secret into nobody's environment: the start fails and says which
/// file and why. The normal cases still work: a root-only file in a root-owned directory for
/// a nobody unit, nobody's own file, and a root-owned deploy link. A parse error does not
/// quote the root-only file.
#[test]
fn a_planted_link_does_not_carry_a_root_only_file_into_a_users_environment() {
    if !have_root() {
        return;
    }
    let Some(secrets) = root_only_dir() else {
        assert!(!available(
            "a root-owned directory (/run, /var/lib or /etc)",
            false
        ));
        return;
    };
    // Root's: another unit's secrets (0600), and the nobody unit's own file (0600 too).
    let db_env = secrets.path().join("db.env");
    write_mode(&db_env, "DB_PASSWORD=hunter2-root-only\n", 0o600);
    let app_env = secrets.path().join("app.env");
    write_mode(&app_env, "FROM_ROOT=granted\n", 0o600);
    // A deploy tool's link, root's, to a release directory, root's.
    fs::create_dir(secrets.path().join("release-1")).expect("release dir");
    write_mode(
        &secrets.path().join("release-1/app.env"),
        "RELEASE=1\n",
        0o600,
    );
    symlink("release-1/app.env", secrets.path().join("current.env")).expect("deploy link");
    // A root-only file with a broken line that holds a secret.
    let broken = secrets.path().join("broken.env");
    write_mode(&broken, "OK=1\nhunter2-in-a-key=x\n", 0o600);

    let daemon = Daemon::start(&[]);
    fs::set_permissions(daemon.dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
    let out = daemon.path("out");
    fs::create_dir(&out).expect("out");
    fs::set_permissions(&out, fs::Permissions::from_mode(0o777)).expect("chmod");
    // nobody's own directory, with nobody's own file.
    let home: PathBuf = daemon.path("app");
    fs::create_dir(&home).expect("app dir");
    chown(&home, NOBODY);
    let own = home.join("own.env");
    write_mode(&own, "FROM_NOBODY=mine\n", 0o600);
    chown(&own, NOBODY);
    // What nobody could plant there: a symbolic link and a hard link to root's secrets.
    let planted_symlink = home.join("symlink.env");
    symlink(&db_env, &planted_symlink).expect("symlink");
    chown(&planted_symlink, NOBODY);
    let planted_hardlink = home.join("hardlink.env");
    fs::hard_link(&db_env, &planted_hardlink).expect("hard link");
    // And a root-owned link in nobody's directory: nobody could replace it.
    let root_link_in_users_dir = home.join("rootlink.env");
    symlink(&db_env, &root_link_in_users_dir).expect("symlink");

    // nobody's directory inside root's: the path is not root's alone from there on.
    let nobodys = secrets.path().join("nobodys");
    fs::create_dir(&nobodys).expect("dir");
    chown(&nobodys, NOBODY);
    let planted_below_root = nobodys.join("symlink.env");
    symlink(&db_env, &planted_below_root).expect("symlink");
    chown(&planted_below_root, NOBODY);

    let cases = [
        ("below", &planted_below_root),
        ("symlink", &planted_symlink),
        ("hardlink", &planted_hardlink),
        ("rootlink", &root_link_in_users_dir),
        ("rootonly", &app_env),
        ("own", &own),
        ("deploy", &secrets.path().join("current.env")),
        ("broken", &broken),
    ];
    for (name, file) in cases {
        daemon.write_unit(name, &env_reporter(&out, name, file));
    }
    assert!(daemon.ctl(&["daemon-reload"]).status.success());

    // The normal cases.
    assert!(reported(&out, "rootonly").contains("FROM_ROOT=granted\n"));
    assert!(reported(&out, "own").contains("FROM_NOBODY=mine\n"));
    assert!(reported(&out, "deploy").contains("RELEASE=1\n"));

    // The planted ones: refused, named, and why.
    for (name, file) in [
        ("symlink", &planted_symlink),
        ("hardlink", &planted_hardlink),
        ("rootlink", &root_link_in_users_dir),
    ] {
        let text = gave_up_with(&daemon, name);
        assert!(
            text.contains(&format!(
                "cannot read its environment_file {}: the unit's user (uid 65534) may not read it itself (Permission denied)",
                file.display()
            )) && text.contains("so clusterd does not read it for the unit either"),
            "{name}: {text}"
        );
        assert!(!out.join(format!("{name}.txt")).exists(), "{name} started");
    }
    let text = gave_up_with(&daemon, "below");
    assert!(
        text.contains(&format!("{} belongs to uid 65534", nobodys.display())),
        "{text}"
    );
    assert!(!out.join("below.txt").exists(), "below started");
    // A broken line is named by its number, its text is not shown.
    let text = gave_up_with(&daemon, "broken");
    assert!(text.contains("line 2:"), "{text}");
    let everything = format!("{text}{}", daemon.log());
    assert!(
        !everything.contains("hunter2"),
        "the secret leaked: {everything}"
    );
    for entry in fs::read_dir(&out).expect("out") {
        let report = fs::read_to_string(entry.expect("entry").path()).unwrap_or_default();
        assert!(!report.contains("hunter2"), "the secret leaked: {report}");
    }
}

/// A FIFO as an environment file does not hold clusterd: the start fails, status answers.
#[test]
fn a_fifo_as_environment_file_fails_the_start_without_holding_clusterd() {
    let daemon = Daemon::start(&[]);
    let fifo = daemon.path("fifo.env");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    daemon.write_unit(
        "fifo",
        &format!(
            "command = \"sleep 300\"\nenvironment_file = \"{}\"\nrestart_limit = {{ burst = 1 }}\n",
            toml_path(&fifo)
        ),
    );
    assert!(daemon.ctl(&["daemon-reload"]).status.success());
    let text = gave_up_with(&daemon, "fifo");
    assert!(text.contains("not a regular file"), "{text}");
}
