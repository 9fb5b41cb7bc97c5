//! Hostile input on two surfaces: `environment_file` for a unit with a user of its own (that
//! user must not receive a file it could not read itself through a link it planted), and
//! `clusterctl send` to an instance that never reads its channel (clusterd stays responsive
//! and bounded, and the client is told).

use crate::common;

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

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

    // An optional file that is missing, in a directory nobody may not enter: still missing
    // (not "may not read it"), so the unit starts.
    let private = daemon.path("private");
    fs::create_dir(&private).expect("private dir");
    fs::set_permissions(&private, fs::Permissions::from_mode(0o700)).expect("chmod");
    let optional_missing = PathBuf::from(format!("-{}", private.join("none.env").display()));

    // Links into /proc: clusterd's own environment and descriptors.
    let proc_environ = home.join("environ.env");
    symlink(format!("/proc/{}/environ", daemon.pid()), &proc_environ).expect("symlink");
    chown(&proc_environ, NOBODY);
    let proc_fd = home.join("fd.env");
    symlink(format!("/proc/{}/fd/0", daemon.pid()), &proc_fd).expect("symlink");
    chown(&proc_fd, NOBODY);

    let cases = [
        ("procenviron", &proc_environ),
        ("procfd", &proc_fd),
        ("optional", &optional_missing),
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
    // A new unit that fails at once fails daemon-reload, naming it (issue 23): answered.
    let reload = daemon.ctl(&["daemon-reload"]);
    assert!(
        reload.status.success()
            || String::from_utf8_lossy(&reload.stderr).contains("failed to start"),
        "{reload:?}"
    );

    // The normal cases.
    assert!(reported(&out, "rootonly").contains("FROM_ROOT=granted\n"));
    assert!(reported(&out, "own").contains("FROM_NOBODY=mine\n"));
    assert!(reported(&out, "deploy").contains("RELEASE=1\n"));
    assert!(reported(&out, "optional").contains("USER=nobody\n"));

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
    for name in ["procenviron", "procfd"] {
        let text = gave_up_with(&daemon, name);
        assert!(
            text.contains("so clusterd does not read it for the unit either"),
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
    // A new unit that fails at once fails daemon-reload, naming it (issue 23): answered.
    let reload = daemon.ctl(&["daemon-reload"]);
    assert!(
        reload.status.success()
            || String::from_utf8_lossy(&reload.stderr).contains("failed to start"),
        "{reload:?}"
    );
    let text = gave_up_with(&daemon, "fifo");
    assert!(text.contains("not a regular file"), "{text}");
}

/// Waits until `go` exists, then reads its worker channel and writes how many lines it has
/// received to `count` (the last number written is the total once the channel is quiet).
const LATE_READER: &str = r#"
import os, sys, time
go, count = sys.argv[1], sys.argv[2]
while not os.path.exists(go):
    time.sleep(0.02)
fd = int(os.environ["CLUSTERD_CHANNEL_FD"])
lines = 0
while True:
    data = os.read(fd, 1 << 16)
    if not data:
        break
    lines += data.count(b"\n")
    with open(count + ".tmp", "w") as f:
        f.write(str(lines))
    os.rename(count + ".tmp", count)
"#;

/// Runs [`LATE_READER`] as unit `deaf`; returns the paths of its `go` and `count` files.
fn start_late_reader(daemon: &Daemon) -> (PathBuf, PathBuf) {
    fs::write(daemon.path("reader.py"), LATE_READER).expect("reader");
    let (go, count) = (daemon.path("go"), daemon.path("count"));
    daemon.write_unit(
        "deaf",
        &format!(
            "command = [\"python3\", \"{}\", \"{}\", \"{}\"]\n",
            toml_path(&daemon.path("reader.py")),
            toml_path(&go),
            toml_path(&count)
        ),
    );
    // A new unit that fails at once fails daemon-reload, naming it (issue 23): answered.
    let reload = daemon.ctl(&["daemon-reload"]);
    assert!(
        reload.status.success()
            || String::from_utf8_lossy(&reload.stderr).contains("failed to start"),
        "{reload:?}"
    );
    daemon.wait_running("deaf", 1);
    (go, count)
}

fn send(daemon: &Daemon, message: &str) -> clusterd::protocol::Response {
    let request = clusterd::protocol::Request::Send {
        unit: "deaf".into(),
        instance: None,
        message: message.into(),
    };
    clusterd::client::connection::send_request_within(&daemon.socket, request, CTL_DEADLINE)
        .unwrap_or_else(|e| panic!("send failed: {e:?}\n{}", daemon.log()))
}

fn resident_kib(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmRSS:"))?.to_string();
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0)
}

/// `clusterctl send` to an instance that does not read its channel: once its queue is full
/// the sender gets a clear error at once (not a silent drop), clusterd's memory stays
/// bounded, `status` answers promptly throughout, and when the instance reads again every
/// accepted message arrives and sends are accepted again.
#[test]
fn a_send_flood_to_an_instance_that_never_reads_is_refused_not_buffered() {
    if !available("python3", runs("python3", &["--version"])) {
        return;
    }
    let daemon = Daemon::start(&[]);
    let (go, count) = start_late_reader(&daemon);
    let before = resident_kib(daemon.pid());

    // Large messages, as large as a request may carry, until one is refused: the socket
    // buffer (net.core.wmem_default, 208 KiB here) plus clusterd's 256 KiB. Then the real
    // client shows the refusal and exits 1.
    let big = format!("\"{}\"", "x".repeat(60_000));
    let mut accepted = 0u64;
    while accepted < 1000 && send(&daemon, &big).ok {
        accepted += 1;
    }
    assert!(
        accepted < 1000,
        "the queue never filled: sends are buffered without bound"
    );
    let out = daemon.ctl(&["send", "deaf", &big]);
    let refusal = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{refusal}");
    assert!(
        refusal.contains("deaf: message sent to 0 of 1 instance(s); not to deaf[0]: ")
            && refusal
                .contains("still queued, unread (the instance does not read its worker channel)"),
        "{refusal}"
    );

    // A flood of small ones from clients in parallel: refused too, status answers meanwhile.
    let flood_ends = Instant::now() + Duration::from_secs(3);
    let (small_accepted, slowest_status) = std::thread::scope(|scope| {
        let senders: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    let mut n = 0u64;
                    while Instant::now() < flood_ends {
                        if send(&daemon, "1").ok {
                            n += 1;
                        }
                    }
                    n
                })
            })
            .collect();
        let mut slowest = Duration::ZERO;
        while Instant::now() < flood_ends {
            let asked = Instant::now();
            daemon.status();
            slowest = slowest.max(asked.elapsed());
            std::thread::sleep(Duration::from_millis(50));
        }
        let sent: u64 = senders.into_iter().map(|s| s.join().expect("sender")).sum();
        (sent, slowest)
    });
    eprintln!(
        "accepted {accepted} large and {small_accepted} small messages; slowest status {slowest_status:?}; clusterd RSS {before} KiB before, {} KiB after",
        resident_kib(daemon.pid())
    );
    assert!(
        slowest_status < Duration::from_secs(5),
        "status took {slowest_status:?} during the flood"
    );
    let grown = resident_kib(daemon.pid()).saturating_sub(before);
    assert!(grown < 64 * 1024, "clusterd grew by {grown} KiB");

    // The instance reads: every accepted message arrives, none lost, and sends work again.
    fs::write(&go, "").expect("go");
    let total = accepted + small_accepted;
    let received = || -> u64 {
        fs::read_to_string(&count)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    };
    wait_for("every accepted message to arrive", PATIENCE, || {
        received() >= total
    });
    assert_eq!(received(), total, "more arrived than was accepted");
    wait_for("a send to be accepted again", PATIENCE, || {
        send(&daemon, "2").ok
    });
    wait_for("that message too", PATIENCE, || received() == total + 1);
}

/// What a hostile client may put in a message: deep nesting, NUL, a request at the size
/// limit, non-UTF-8 from the command line. Each is a clear refusal or reaches the instance as
/// one line; clusterd answers on.
#[test]
fn hostile_messages_are_refused_or_sent_as_one_line() {
    if !available("python3", runs("python3", &["--version"])) {
        return;
    }
    let daemon = Daemon::start(&[]);
    let (go, count) = start_late_reader(&daemon);
    fs::write(&go, "").expect("go");

    // Nested past serde_json's recursion limit: refused, no stack overflow.
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let response = send(&daemon, &deep);
    assert!(!response.ok, "{response:?}");
    assert!(
        response
            .error
            .as_deref()
            .is_some_and(|e| e.contains("the message is not JSON") && e.contains("recursion")),
        "{response:?}"
    );
    // A raw NUL or a newline inside a string is not JSON; an escaped one is one line.
    assert!(!send(&daemon, "\"a\0b\"").ok);
    assert!(!send(&daemon, "\"a\nb\"").ok);
    assert!(send(&daemon, "{\"a\":\"\\u0000\",\n\"b\":[1,\n2]}").ok);
    // Non-UTF-8 on clusterctl's command line: an error from clusterctl, no panic.
    {
        use std::os::unix::ffi::OsStrExt;
        let out = std::process::Command::new(CLUSTERCTL)
            .arg("--socket")
            .arg(&daemon.socket)
            .arg("send")
            .arg("deaf")
            .arg(std::ffi::OsStr::from_bytes(b"\"\xff\""))
            .output()
            .expect("clusterctl");
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
    }
    // Larger than a request may be, and nested past any limit, from the real client: a
    // clear error, no panic, nothing sent.
    for message in ["x".repeat(100_000), "[".repeat(100_000)] {
        let out = daemon.ctl(&["send", "deaf", &message]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains("longer than 65536 bytes") && !stderr.contains("panicked"),
            "{stderr}"
        );
    }
    wait_for("the one valid message to arrive", PATIENCE, || {
        fs::read_to_string(&count).is_ok_and(|s| s == "1")
    });
    assert!(daemon.unit("deaf")["instances"][0]["state"] == "running");
}

/// Mounts a FUSE file system whose server never answers (as a dead network mount): every
/// access to it blocks. Unmounted, and its server killed, when dropped.
const HUNG_FUSE: &str = r#"
import os, ctypes, sys, time
mnt, ready = sys.argv[1], sys.argv[2]
fd = os.open("/dev/fuse", os.O_RDWR)
libc = ctypes.CDLL(None, use_errno=True)
opts = ("fd=%d,rootmode=40000,user_id=0,group_id=0" % fd).encode()
if libc.mount(b"clusterd-test-hung", mnt.encode(), b"fuse", 0, opts) != 0:
    sys.stderr.write("mount failed: %s\n" % os.strerror(ctypes.get_errno()))
    sys.exit(1)
open(ready, "w").close()
time.sleep(3600)
"#;

struct HungMount {
    server: std::process::Child,
    mountpoint: PathBuf,
}

impl HungMount {
    fn mount(dir: &Path) -> Option<HungMount> {
        let mountpoint = dir.join("hung");
        let ready = dir.join("hung.ready");
        fs::create_dir(&mountpoint).ok()?;
        fs::write(dir.join("hung.py"), HUNG_FUSE).ok()?;
        let server = std::process::Command::new("python3")
            .arg(dir.join("hung.py"))
            .arg(&mountpoint)
            .arg(&ready)
            .spawn()
            .ok()?;
        let mut mount = HungMount { server, mountpoint };
        let deadline = Instant::now() + PATIENCE;
        while !ready.exists() {
            if Instant::now() > deadline || !matches!(mount.server.try_wait(), Ok(None)) {
                return None; // dropped: killed and unmounted
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Some(mount)
    }
}

impl Drop for HungMount {
    fn drop(&mut self) {
        // Its device closed, the kernel fails every waiting access (ENOTCONN).
        let _ = self.server.kill();
        let _ = self.server.wait();
        use std::os::unix::ffi::OsStrExt;
        if let Ok(path) = std::ffi::CString::new(self.mountpoint.as_os_str().as_bytes()) {
            // SAFETY: umount2 with a valid NUL-terminated path.
            unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

/// An environment file on a file system that never answers fails the start after the read
/// deadline, with the reason, and clusterd answers `status` meanwhile (within the deadline,
/// not never).
#[test]
fn an_environment_file_on_a_hung_mount_fails_the_start_and_clusterd_answers() {
    if !have_root() || !available("python3", runs("python3", &["--version"])) {
        return;
    }
    let daemon = Daemon::start(&[("fine", "command = \"sleep 300\"\n")]);
    let mount = HungMount::mount(daemon.dir.path());
    if !available("a FUSE mount (/dev/fuse)", mount.is_some()) {
        return;
    }
    let mountpoint = mount
        .as_ref()
        .map(|m| m.mountpoint.clone())
        .unwrap_or_default();
    daemon.wait_running("fine", 1);
    daemon.write_unit(
        "hung",
        &format!(
            "command = \"sleep 300\"\nenvironment_file = \"{}\"\nrestart_limit = {{ burst = 1 }}\n",
            toml_path(&mountpoint.join("app.env"))
        ),
    );
    // `status` asked all along, from before the reload until the unit gives up.
    let (slowest, reload_took) = std::thread::scope(|scope| {
        let poller = scope.spawn(|| {
            let mut slowest = Duration::ZERO;
            wait_for("hung to give up", PATIENCE, || {
                let asked = Instant::now();
                let gave_up = daemon.unit("hung")["gave_up"] == true;
                slowest = slowest.max(asked.elapsed());
                gave_up
            });
            slowest
        });
        let asked = Instant::now();
        // A new unit that fails at once fails daemon-reload, naming it (issue 23): answered.
        let reload = daemon.ctl(&["daemon-reload"]);
        assert!(
            reload.status.success()
                || String::from_utf8_lossy(&reload.stderr).contains("failed to start"),
            "{reload:?}"
        );
        let reload_took = asked.elapsed();
        (poller.join().expect("poller"), reload_took)
    });
    eprintln!("while the mount hung: slowest status {slowest:?}, daemon-reload {reload_took:?}");
    assert!(slowest < Duration::from_secs(10), "status took {slowest:?}");
    let text = gave_up_with(&daemon, "hung");
    assert!(
        text.contains("its file system did not answer within 2 s"),
        "{text}"
    );
    assert_eq!(daemon.pids("fine").len(), 1);
    drop(mount);
}

/// The state letter of a process (`T` when stopped), from /proc.
fn process_state(pid: u32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// `clusterctl kill` and `send` from a member of the socket group who is not root (uid 65534
/// with the group as a supplementary one) reach the unit's instances and nothing else: not
/// a process of the caller's choosing, not clusterd. A SIGSTOP is the operator's call, and a
/// later `stop` still ends the stopped instance.
#[test]
fn a_socket_group_member_signals_and_messages_only_the_units_instances() {
    let Some(gid) = socket_group_for_tests() else {
        return;
    };
    let daemon = Daemon::start_with_args(
        &[(
            "web",
            "command = [\"sleep\", \"300\"]\nkill_timeout = \"20s\"\n",
        )],
        &["--socket-group", "daemon"],
    );
    fs::set_permissions(daemon.dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
    let web = daemon.wait_running("web", 1)[0];
    let mut outsider = KillOnDrop(
        std::process::Command::new("sleep")
            .arg("300")
            .spawn()
            .expect("sleep"),
    );
    let clusterctl = copy_for_everyone(CLUSTERCTL, daemon.dir.path());
    let as_member =
        |args: &[&str]| clusterctl_as_nobody_in(&clusterctl, &daemon.socket, &[gid], args);
    let outsider_pid = outsider.0.id().to_string();
    let clusterd_pid = daemon.pid().to_string();
    // Names that are not instances of a unit: refused.
    for args in [
        &["kill", "web", "--instance", "1"][..],
        &["kill", &outsider_pid],
        &["kill", &clusterd_pid, "--signal", "STOP"],
        &["send", "web", "\"x\"", "--instance", "3"],
    ] {
        let out = as_member(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {out:?}");
    }
    let out = as_member(&["send", "web", "\"x\""]);
    assert!(out.status.success(), "{out:?}");
    let out = as_member(&["kill", "web", "--signal", "STOP", "--all"]);
    assert!(out.status.success(), "{out:?}");
    wait_for("the instance to stop", PATIENCE, || {
        process_state(web) == Some('T')
    });
    assert_ne!(
        process_state(outsider.0.id()),
        Some('T'),
        "the outsider was stopped"
    );
    assert_ne!(
        process_state(daemon.pid()),
        Some('T'),
        "clusterd was stopped"
    );
    // A stop ends the stopped instance (SIGTERM, then SIGCONT), well before kill_timeout.
    let asked = Instant::now();
    let out = as_member(&["stop", "web"]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        asked.elapsed() < Duration::from_secs(15),
        "{:?}",
        asked.elapsed()
    );
    assert!(!alive(web));
    assert!(
        matches!(outsider.0.try_wait(), Ok(None)),
        "the outsider is gone"
    );
}
