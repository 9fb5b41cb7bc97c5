//! `clusterctl daemon-reexec`: replacing clusterd's image by the binary now on disk, in the
//! same pid, so that every instance stays its child. This module owns the daemon's side:
//! finding and checking the new binary (the pre-flight), and the state it hands over
//! ([`state`]: the supervisor's snapshot plus the fds).
//!
//! Built so far: the pre-flight and the state format. The exec itself (quiescing the helper
//! threads, the memfd, clearing FD_CLOEXEC, `execv`, and the new image rebuilding from the
//! state) is not: after a pre-flight that passes, the request is refused with that said, and
//! the running clusterd carries on unchanged. Every refusal leaves it running.

// The exec stage (not built yet) writes and reads it; its tests hold the format now.
#[allow(dead_code)]
pub(crate) mod state;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::daemon::os_process_control::OsProcessControl;
use crate::protocol::Response;
use crate::supervisor::snapshot::STATE_VERSION;
use crate::supervisor::Supervisor;

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
/// become clusterd), and that it reads this state's version. Returns the file to run.
pub(crate) fn preflight(binary: &Path) -> Result<PathBuf, String> {
    let real = std::fs::canonicalize(binary)
        .map_err(|e| format!("the new binary {}: {e}", binary.display()))?;
    let meta =
        std::fs::metadata(&real).map_err(|e| format!("the new binary {}: {e}", real.display()))?;
    if !meta.is_file() {
        return Err(format!("the new binary {} is not a file", real.display()));
    }
    let euid = nix::unistd::geteuid().as_raw();
    if meta.uid() != 0 && meta.uid() != euid {
        return Err(format!(
            "the new binary {} belongs to uid {}, not root or clusterd's uid {euid}",
            real.display(),
            meta.uid()
        ));
    }
    let mode = meta.permissions().mode();
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
    Ok(real)
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

/// `daemon-reexec` on the main loop: the pre-flight, then the state written down. Every
/// refusal says why, and clusterd carries on as it was.
pub(crate) fn attempt(supervisor: &Supervisor<OsProcessControl>, now: Instant) -> Response {
    let binary = match new_binary().and_then(|binary| preflight(&binary)) {
        Ok(binary) => binary,
        Err(reason) => {
            log::warn!("daemon-reexec refused: {reason}");
            return Response::failed(format!(
                "daemon-reexec refused, clusterd keeps running: {reason}"
            ));
        }
    };
    let state = supervisor.snapshot(now, |path| std::fs::read_to_string(path).ok());
    let size = serde_json::to_vec(&state).map_or(0, |bytes| bytes.len());
    log::info!(
        "daemon-reexec: {} passed the pre-flight; state of {} unit(s), {} instance(s): {size} bytes",
        binary.display(),
        state.units.len(),
        state.instances.len()
    );
    Response::failed(format!(
        "daemon-reexec: {} passed the pre-flight (it reads state version {STATE_VERSION}), \
         but handing the instances over to it is not built yet: clusterd keeps running \
         the binary it started with",
        binary.display()
    ))
}
