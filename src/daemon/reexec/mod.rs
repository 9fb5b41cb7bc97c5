//! `clusterctl daemon-reexec` (and SIGUSR2): replacing clusterd's image by the binary now
//! on disk, in the same pid, so that every instance stays its child. This module owns the
//! daemon's side: finding and checking the new binary (the pre-flight), the requester's
//! connection ([`requester`]), the state handed over ([`state`]), the exec both ways
//! ([`exec`]) and the new image's reading of the state ([`resume`]). The quiescing of the
//! threads and the rebuilding of the daemon are in `daemon::Running` (they touch every part).
//!
//! Every failure before the exec leaves the old image running, its threads resumed, and the
//! reply says why; a new image that cannot read the state execs the old binary back.

pub(crate) mod exec;
pub(crate) mod handover;
pub mod resume;
pub(crate) mod state;

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::supervisor::snapshot::STATE_VERSION;

/// How long the new binary has to answer `--reexec-check`.
/// The main loop waits for it (nothing else runs during a re-exec), so it is short.
const CHECK_DEADLINE: Duration = Duration::from_secs(2);

/// Whether this binary reads a re-exec state of format `version` (`--reexec-check`).
pub fn understands(version: u32) -> bool {
    version == STATE_VERSION
}

/// The binary a re-exec would run: the path clusterd was started from, as it is on disk now
/// (a package upgrade has replaced the file; `/proc/self/exe` then names the old, deleted
/// one with " (deleted)" appended).
pub(crate) fn new_binary() -> Result<PathBuf, String> {
    let exe = std::fs::read_link("/proc/self/exe")
        .map_err(|e| format!("cannot read /proc/self/exe: {e}"))?;
    let text = exe.to_string_lossy();
    Ok(match text.strip_suffix(" (deleted)") {
        Some(path) => PathBuf::from(path),
        None => exe,
    })
}

/// Checks that `binary` may replace clusterd: a regular file (a symlink is followed to the
/// file it names now, which is then the binary checked and run), executable, owned by root
/// or clusterd's own user and writable by no one else (or anyone who can write it could
/// become clusterd), and that it reads this state's version. Returns the file's path and
/// the file itself, opened (O_PATH): the exec runs the very file checked, even if its path
/// is given another file meanwhile.
pub(crate) fn preflight(binary: &Path) -> Result<(PathBuf, OwnedFd), String> {
    let real = std::fs::canonicalize(binary)
        .map_err(|e| format!("the new binary {}: {e}", binary.display()))?;
    let file = nix::fcntl::open(
        &real,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| format!("the new binary {}: {e}", real.display()))?;
    let meta = nix::sys::stat::fstat(&file)
        .map_err(|e| format!("the new binary {}: {e}", real.display()))?;
    if meta.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(format!("the new binary {} is not a file", real.display()));
    }
    let euid = nix::unistd::geteuid().as_raw();
    if meta.st_uid != 0 && meta.st_uid != euid {
        return Err(format!(
            "the new binary {} belongs to uid {}, not root or clusterd's uid {euid}",
            real.display(),
            meta.st_uid
        ));
    }
    let mode = meta.st_mode;
    if mode & 0o022 != 0 {
        return Err(format!(
            "the new binary {} is writable by others (mode {:o})",
            real.display(),
            mode & 0o7777
        ));
    }
    if mode & 0o100 == 0 {
        return Err(format!(
            "the new binary {} is not executable (mode {:o})",
            real.display(),
            mode & 0o7777
        ));
    }
    check_version(&real)?;
    Ok((real, file))
}

/// Runs `binary --reexec-check VERSION` and waits for it at most [`CHECK_DEADLINE`].
fn check_version(binary: &Path) -> Result<(), String> {
    let mut child = Command::new(binary)
        .arg("--reexec-check")
        .arg(STATE_VERSION.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        // Not read: a binary that leaves a child holding the pipe would block the loop.
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run the new binary {}: {e}", binary.display()))?;
    let give_up_at = Instant::now() + CHECK_DEADLINE;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < give_up_at => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "the new binary {} did not answer --reexec-check within {CHECK_DEADLINE:?}",
                    binary.display()
                ));
            }
            Err(e) => return Err(format!("cannot wait for the new binary: {e}")),
        }
    };
    if status.success() {
        return Ok(());
    }
    Err(format!(
        "the new binary {} cannot read state version {STATE_VERSION} \
         (--reexec-check {STATE_VERSION}: {status})",
        binary.display()
    ))
}

/// The connection of the `clusterctl daemon-reexec` under way: handed to the new image,
/// which answers it. At most one: a second request while one is under way is refused.
pub(crate) mod requester {
    use std::os::fd::OwnedFd;
    use std::os::unix::net::UnixStream;
    use std::sync::{Mutex, PoisonError};

    static REQUESTER: Mutex<Option<OwnedFd>> = Mutex::new(None);

    /// Called by the connection's thread before it asks the loop.
    pub(crate) fn hand_in(stream: &UnixStream) -> Result<(), String> {
        let mut slot = REQUESTER.lock().unwrap_or_else(PoisonError::into_inner);
        if slot.is_some() {
            return Err("a daemon-reexec is under way already".into());
        }
        let copy = stream
            .try_clone()
            .map_err(|e| format!("daemon-reexec: cannot keep the connection: {e}"))?;
        *slot = Some(copy.into());
        Ok(())
    }

    /// Taken by the loop (for the exec, or to drop it if the re-exec fails).
    pub(crate) fn take() -> Option<OwnedFd> {
        REQUESTER
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

/// CLOCK_MONOTONIC in nanoseconds: it goes on across the exec, so the new image measures
/// the pause from a time the old one took.
pub(crate) fn monotonic_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes only into `now`, a valid local.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) } != 0 {
        return 0;
    }
    u64::try_from(now.tv_sec)
        .unwrap_or(0)
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::try_from(now.tv_nsec).unwrap_or(0))
}

/// clusterd's command line after the program name, as first given: without the
/// `--reexec-state FD` a re-exec put in front.
pub(crate) fn original_args() -> Vec<String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some(resume::STATE_FLAG) => args.into_iter().skip(2).collect(),
        _ => args,
    }
}

/// When this image was made by a re-exec (seconds since the epoch), for status.
static REEXECUTED_AT: std::sync::OnceLock<f64> = std::sync::OnceLock::new();

pub(crate) fn set_reexecuted_at(at: f64) {
    let _ = REEXECUTED_AT.set(at);
}

pub(crate) fn reexecuted_at() -> Option<f64> {
    REEXECUTED_AT.get().copied()
}

/// Now, in seconds since the epoch.
pub(crate) fn wall_clock() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}
