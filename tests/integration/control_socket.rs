//! The control socket and `clusterctl`'s exit codes: only the owner may connect, bad requests
//! get an error reply without hurting the daemon, and scripts can tell "failed" (1), "usage"
//! (2) and "clusterd unreachable" (3) apart.

use crate::common;
use common::*;

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

const SLEEPER: &str = "command = \"sleep 300\"\n";

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Sends `request` as raw bytes and returns the one JSON line clusterd answers.
fn raw_request(socket: &Path, request: Vec<u8>) -> Value {
    let stream = UnixStream::connect(socket).expect("connect to the control socket");
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream.set_write_timeout(Some(PATIENCE)).unwrap();
    // Written from another thread: clusterd may answer (and hang up) before it has read an
    // oversized request to the end.
    let mut writer = stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let _ = writer.write_all(&request);
    });
    let mut line = String::new();
    BufReader::new(&stream)
        .read_line(&mut line)
        .expect("read the answer");
    sender.join().unwrap();
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("answer is not JSON ({e}): {line:?}"))
}

fn assert_refused(answer: &Value, mentions: &str) {
    assert_eq!(answer["ok"], false, "{answer}");
    let error = answer["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(mentions),
        "the error should mention {mentions:?}: {answer}"
    );
}

fn clusterctl_at(socket: &Path, args: &[&str]) -> Output {
    Command::new(CLUSTERCTL)
        .env_remove("CLUSTERD_SOCKET")
        .arg("--socket")
        .arg(socket)
        .args(args)
        .output()
        .expect("run clusterctl")
}

#[test]
fn the_control_socket_is_accessible_to_its_owner_only() {
    let d = Daemon::start(&[("web", SLEEPER)]);
    let mode = fs::metadata(&d.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "socket mode is {mode:o}");
}

#[test]
fn bad_requests_get_an_error_answer_and_the_daemon_keeps_serving() {
    let d = Daemon::start(&[("web", SLEEPER)]);
    let pids = d.wait_running("web", 1);

    let malformed = raw_request(&d.socket, b"this is not json\n".to_vec());
    assert_refused(&malformed, "malformed");

    let unknown = raw_request(
        &d.socket,
        b"{\"version\":1,\"command\":\"explode\",\"unit\":\"web\"}\n".to_vec(),
    );
    assert_refused(&unknown, "explode");

    let future = raw_request(
        &d.socket,
        b"{\"version\":99,\"command\":\"status\"}\n".to_vec(),
    );
    assert_refused(&future, "version");

    let mut huge = b"{\"version\":1,\"command\":\"status\",\"unit\":\"".to_vec();
    huge.resize(huge.len() + 70 * 1024, b'x');
    huge.extend_from_slice(b"\"}\n");
    let oversized = raw_request(&d.socket, huge);
    assert_refused(&oversized, "long");

    // Still serving, and nothing was done to the unit.
    assert_eq!(d.wait_running("web", 1), pids);
    let good = raw_request(
        &d.socket,
        b"{\"version\":1,\"command\":\"status\"}\n".to_vec(),
    );
    assert_eq!(good["ok"], true, "{good}");
    assert!(alive(d.pid()));
}

#[test]
fn clusterctl_exits_1_when_the_unit_is_unknown() {
    let d = Daemon::start(&[("web", SLEEPER)]);
    for verb in ["stop", "start", "restart", "status"] {
        let out = d.ctl(&[verb, "no-such-unit"]);
        assert_eq!(out.status.code(), Some(1), "{verb}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("no-such-unit"),
            "{verb}: {}",
            stderr(&out)
        );
    }
    d.wait_running("web", 1);
}

#[test]
fn clusterctl_exits_2_on_a_usage_error() {
    let d = Daemon::start(&[("web", SLEEPER)]);
    let pids = d.wait_running("web", 1);
    for args in [
        &["frobnicate"][..],
        &["start"][..],
        &["scale", "web", "lots"][..],
        &["status", "--no-such-flag"][..],
    ] {
        let out = d.ctl(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
    }
    assert_eq!(d.wait_running("web", 1), pids);
}

#[test]
fn clusterctl_exits_3_and_names_the_socket_when_no_daemon_answers() {
    let dir = tempfile::Builder::new()
        .prefix("clusterd-nodaemon-")
        .tempdir()
        .unwrap();

    let missing = dir.path().join("missing.sock");
    let out = clusterctl_at(&missing, &["status"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&missing.display().to_string()),
        "{}",
        stderr(&out)
    );

    // The same path from CLUSTERD_SOCKET.
    let out = Command::new(CLUSTERCTL)
        .env("CLUSTERD_SOCKET", &missing)
        .args(["stop", "web"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&missing.display().to_string()),
        "{}",
        stderr(&out)
    );

    // A socket file nobody listens on any more (clusterd was killed).
    let stale = dir.path().join("stale.sock");
    drop(UnixListener::bind(&stale).unwrap());
    let out = clusterctl_at(&stale, &["status"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&stale.display().to_string()),
        "{}",
        stderr(&out)
    );
}

/// A daemon whose socket uid 65534 can reach: the file-system permissions are not the last
/// line of defence.
fn daemon_open_to_everyone() -> Daemon {
    let d = Daemon::start(&[("web", SLEEPER)]);
    fs::set_permissions(d.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(&d.socket, fs::Permissions::from_mode(0o666)).unwrap();
    d
}

fn clusterctl_as_nobody(d: &Daemon, args: &[&str]) -> Output {
    Command::new(copy_for_everyone(CLUSTERCTL, d.dir.path()))
        .env_remove("CLUSTERD_SOCKET")
        .arg("--socket")
        .arg(&d.socket)
        .args(args)
        .current_dir("/")
        .uid(65534)
        .gid(65534)
        .output()
        .expect("run clusterctl as uid 65534")
}

#[test]
fn another_user_is_refused_even_when_the_socket_mode_lets_them_connect() {
    if !have_root() {
        return;
    }
    let d = daemon_open_to_everyone();
    let pids = d.wait_running("web", 1);

    let out = clusterctl_as_nobody(&d, &["stop", "web"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    wait_for("clusterd to log the refusal", PATIENCE, || {
        d.log().contains("refused uid 65534")
    });
    // Nothing was stopped, and root is still served.
    assert_eq!(d.wait_running("web", 1), pids);
    assert!(pids.iter().all(|&p| alive(p)));
}

#[test]

fn another_user_is_told_permission_denied() {
    if !have_root() {
        return;
    }
    let d = daemon_open_to_everyone();
    d.wait_running("web", 1);
    // The failure is a race: try often enough to see it.
    for _ in 0..20 {
        let out = clusterctl_as_nobody(&d, &["status"]);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert!(
            stderr(&out).to_lowercase().contains("permission denied"),
            "{}",
            stderr(&out)
        );
    }
}

/// A user kept out by the socket file's mode (0600, the default) was told "is clusterd
/// running?" with exit 3, as if nothing listened. It is told what to do, with the exit code
/// docs/clusterctl.md gives permission denied (1).
#[test]
fn a_user_kept_out_by_the_socket_mode_is_told_to_join_the_group_or_use_sudo() {
    if !have_root() {
        return;
    }
    let d = Daemon::start(&[("web", SLEEPER)]);
    fs::set_permissions(d.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    d.wait_running("web", 1);
    let out = clusterctl_as_nobody(&d, &["status"]);
    let said = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("permission denied"), "{said}");
    assert!(
        said.contains("group") && said.contains("use sudo"),
        "{said}"
    );
    assert!(!said.contains("is clusterd running"), "{said}");
    // The docs give permission denied the same code.
    let docs =
        fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/clusterctl.md")).unwrap();
    let code_one = docs
        .lines()
        .find(|l| l.starts_with("| 1 |"))
        .expect("docs/clusterctl.md: exit code 1 row");
    assert!(code_one.contains("permission denied"), "{code_one}");
    let code_three = docs.lines().find(|l| l.starts_with("| 3 |")).unwrap();
    assert!(!code_three.contains("permission"), "{code_three}");
}

/// `--socket-group`: a member of the group is served whether the group is its primary one or,
/// as after `adduser alice clusterd`, a supplementary one; a user outside it is refused.
#[test]
fn a_member_of_the_socket_group_is_served_through_a_supplementary_group() {
    let Some(gid) = socket_group_for_tests() else {
        return;
    };
    let d = Daemon::start_with_args(&[("web", SLEEPER)], &["--socket-group", "daemon"]);
    fs::set_permissions(d.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    d.wait_running("web", 1);
    let clusterctl = copy_for_everyone(CLUSTERCTL, d.dir.path());
    let as_nobody_with = |groups: Vec<libc::gid_t>| {
        clusterctl_as_nobody_in(&clusterctl, &d.socket, &groups, &["status"])
    };
    let member = as_nobody_with(vec![gid]);
    assert_eq!(member.status.code(), Some(0), "{}", stderr(&member));
    // Refused by the socket file's mode (0660 root:daemon) before clusterd even sees it.
    let outsider = as_nobody_with(Vec::new());
    assert_ne!(outsider.status.code(), Some(0), "{}", stderr(&outsider));
    assert!(stderr(&outsider)
        .to_lowercase()
        .contains("permission denied"));
}
