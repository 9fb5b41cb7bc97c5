//! The new image's first steps: `clusterd --reexec-state FD ARGS...` reads the state before
//! anything else, and if it cannot (or cannot rebuild from it) execs the old binary back with
//! the same state, so that no instance is lost. The old binary, run back, is told so
//! ([`FALLBACK_ENV`]): if it fails too, there is nothing left to go back to.

use std::ffi::CString;
use std::io::Read;
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;

use super::state::{old_binary_of, DaemonState};

/// The flag that comes first on a re-exec'd clusterd's command line.
pub const STATE_FLAG: &str = "--reexec-state";

/// Set on the way back to the old binary, with the reason the new image gave up.
pub(crate) const FALLBACK_ENV: &str = "CLUSTERD_REEXEC_FALLBACK";

/// Tests only: the new image refuses the state as if it could not read it (to exercise
/// the way back). Not passed on by the way back.
const REFUSE_ENV: &str = "CLUSTERD_TEST_REEXEC_REFUSE_STATE";

/// The most a state may be: 1000 instances take about 400 kB.
const MAX_STATE_BYTES: u64 = 256 * 1024 * 1024;

/// A state received, and what is needed to go back with it.
pub struct Incoming {
    pub(crate) state: DaemonState,
    pub(crate) fd: RawFd,
    /// Why the previous image came back to this binary (it is the old one, run back).
    pub(crate) fell_back: Option<String>,
}

/// Reads and checks the state at `fd`. On failure, execs the old binary back (never
/// returns) or, if that is not possible, returns the reason (clusterd then exits).
pub fn receive(fd_text: &str) -> Result<Incoming, String> {
    let fell_back = std::env::var(FALLBACK_ENV).ok();
    // Not for the instances' environment, nor for a later re-exec.
    std::env::remove_var(FALLBACK_ENV);
    let fd: RawFd = fd_text
        .parse()
        .ok()
        .filter(|&fd| fd > 2)
        .ok_or_else(|| format!("{STATE_FLAG} {fd_text:?}: not an fd"))?;
    let text = read_at_start(fd).map_err(|e| format!("cannot read the state at fd {fd}: {e}"))?;
    let refused = std::env::var_os(REFUSE_ENV).is_some();
    let parsed = if refused {
        Err(format!("{REFUSE_ENV} is set"))
    } else {
        DaemonState::from_json(&text)
    };
    match parsed {
        Ok(state) => Ok(Incoming {
            state,
            fd,
            fell_back,
        }),
        Err(why) => {
            let args = super::original_args();
            Err(go_back(fd, old_binary_of(&text), &args, &why))
        }
    }
}

impl Incoming {
    /// clusterd's flags, as the state carries them (the same as on this command line).
    pub fn args(&self) -> &[String] {
        &self.state.args
    }

    /// Gives up on this image (it could not rebuild from the state): execs the old binary
    /// back with the same state. Returns only if that is impossible, with the reason.
    pub fn give_up(&self, why: &str) -> String {
        go_back(self.fd, self.state.fds.old_binary, &self.state.args, why)
    }
}

/// Reads the memfd from its start (the way back hands the same fd on, read once already).
fn read_at_start(fd: RawFd) -> std::io::Result<String> {
    // SAFETY: only used for this call; lseek fails on an fd not open.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    nix::unistd::lseek(borrowed, 0, nix::unistd::Whence::SeekSet)?;
    // SAFETY: the fd is the state's, open (lseek succeeded); ManuallyDrop keeps it open for
    // the way back.
    let file = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(fd) });
    let mut text = String::new();
    (&*file).take(MAX_STATE_BYTES).read_to_string(&mut text)?;
    Ok(text)
}

/// Execs the old binary (`old`, an fd) with the state at `fd`; returns why it could not.
fn go_back(fd: RawFd, old: Option<RawFd>, args: &[String], why: &str) -> String {
    log::error!("daemon-reexec: the new image cannot go on: {why}");
    if let Ok(first) = std::env::var(FALLBACK_ENV) {
        return format!("{why}; and this is the old binary already (the new one said: {first}): nothing to go back to");
    }
    let Some(old) = old else {
        return format!("{why}; and the state names no old binary to go back to");
    };
    log::warn!("daemon-reexec: going back to the old binary (fd {old}) with every instance");
    let environment: Vec<CString> = std::env::vars_os()
        .filter(|(key, _)| key != REFUSE_ENV && key != FALLBACK_ENV)
        .map(|(key, value)| {
            let mut pair = key.as_bytes().to_vec();
            pair.push(b'=');
            pair.extend_from_slice(value.as_bytes());
            pair
        })
        .chain(std::iter::once(
            format!("{FALLBACK_ENV}={why}").into_bytes(),
        ))
        .filter_map(|pair| CString::new(pair).ok())
        .collect();
    let program = std::path::PathBuf::from(format!("/proc/self/fd/{old}"));
    // Every fd the old image handed over is still open, close-on-exec cleared (they were
    // not touched yet, or [`super::exec::close_on_exec`] is reversed by the exec below).
    let handed = DaemonState::from_json(&read_at_start(fd).unwrap_or_default())
        .map(|s| s.fds.all())
        .unwrap_or_default();
    super::exec::exec_with_state(&program, fd, &handed, args, (Some(environment), &|| {}))
}
