//! The exec of a re-exec, both ways: the old image writes the state to a memfd, clears
//! FD_CLOEXEC on exactly the fds it hands over and execs the new binary with
//! `--reexec-state FD` first on its command line; a new image that cannot go on execs the
//! old binary back (kept open as an O_PATH fd) with the same state.
//!
//! The signals clusterd acts on are blocked across the exec: a handler is reset by the exec
//! and the new image installs its own only once it runs, so a SIGTERM in the gap would kill
//! clusterd with its default action; blocked, it waits (the mask is inherited) and is taken
//! once the new image has its handlers. A SIGCHLD in the gap leaves a zombie, which the new
//! image reaps first. They are blocked in every thread already (`daemon::signals`: only the
//! loop's wait lets them in), so none can reach another thread's handler in the gap either;
//! the block here is for a caller on another footing (the way back, early in an image).

use std::ffi::CString;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
use nix::sys::memfd::{memfd_create, MFdFlags};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};

/// The signals blocked across the exec (the ones clusterd has handlers for).
fn handled_signals() -> SigSet {
    let mut set = SigSet::empty();
    for signal in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
        Signal::SIGQUIT,
    ] {
        set.add(signal);
    }
    set
}

/// The old binary, kept open for the way back: `/proc/self/exe` still names it after a
/// package upgrade replaced the file on disk.
pub(crate) fn open_old_binary() -> Result<OwnedFd, String> {
    nix::fcntl::open(
        "/proc/self/exe",
        OFlag::O_PATH | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| format!("cannot keep the running binary open: {e}"))
}

/// The state in a memfd, at offset 0 (close-on-exec until [`exec_with_state`]).
pub(crate) fn write_state(text: &[u8]) -> Result<OwnedFd, String> {
    let fd = memfd_create(c"clusterd-reexec-state", MFdFlags::MFD_CLOEXEC)
        .map_err(|e| format!("cannot create the state's memfd: {e}"))?;
    let mut rest = text;
    while !rest.is_empty() {
        match nix::unistd::write(&fd, rest) {
            Ok(0) => return Err("cannot write the state: the memfd took nothing".into()),
            Ok(n) => rest = rest.get(n..).unwrap_or_default(),
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(format!("cannot write the state: {e}")),
        }
    }
    nix::unistd::lseek(&fd, 0, nix::unistd::Whence::SeekSet)
        .map_err(|e| format!("cannot rewind the state: {e}"))?;
    Ok(fd)
}

/// One syscall per fd: FD_CLOEXEC is the only fd flag there is, so it is set, not read and
/// changed (3000 fds with 1000 instances, during the pause).
fn set_cloexec(fd: RawFd, on: bool) -> nix::Result<()> {
    // SAFETY: the fd is one of clusterd's own, open for as long as this call.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let flags = if on {
        FdFlag::FD_CLOEXEC
    } else {
        FdFlag::empty()
    };
    fcntl(borrowed, FcntlArg::F_SETFD(flags)).map(drop)
}

/// Marks the fds close-on-exec again (the new image, once it owns them: its children must
/// not inherit them). The fds come in runs (an instance's channel and pipes were made one
/// after the other): one `close_range(CLOSE_RANGE_CLOEXEC)` per run of consecutive fds,
/// which touches exactly those; one fcntl per fd where the kernel lacks it (before 5.11).
pub(crate) fn close_on_exec(fds: &[RawFd]) {
    let mut sorted: Vec<RawFd> = fds.iter().copied().filter(|&fd| fd >= 0).collect();
    sorted.sort_unstable();
    sorted.dedup();
    let mut rest = sorted.as_slice();
    while let Some(&first) = rest.first() {
        let run = rest
            .iter()
            .zip(first..)
            .take_while(|(&fd, expected)| fd == *expected)
            .count();
        let (this, next) = rest.split_at(run);
        let last = this.last().copied().unwrap_or(first);
        // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets a flag on the fds of the
        // range, all of them clusterd's own.
        let marked = unsafe {
            libc::syscall(
                libc::SYS_close_range,
                first as libc::c_uint,
                last as libc::c_uint,
                libc::CLOSE_RANGE_CLOEXEC as libc::c_uint,
            )
        } == 0;
        if !marked {
            for &fd in this {
                let _ = set_cloexec(fd, true);
            }
        }
        rest = next;
    }
}

/// Execs `program` as `clusterd --reexec-state STATE args...` with FD_CLOEXEC cleared on
/// exactly `fds` (and the state's), and `environment` if given (else clusterd's own);
/// `last` runs once the signals are blocked, just before the exec. Returns only if the exec
/// failed, with the reason, and with everything as it was.
pub(crate) fn exec_with_state(
    program: &Path,
    state: RawFd,
    fds: &[RawFd],
    args: &[String],
    (environment, last): (Option<Vec<CString>>, &dyn Fn()),
) -> String {
    // Its name as it was started (what `ps` shows), then the state first.
    let name = std::env::args_os()
        .next()
        .and_then(|name| CString::new(name.as_bytes()).ok())
        .unwrap_or_else(|| c"clusterd".to_owned());
    let mut argv = vec![name, c"--reexec-state".to_owned()];
    argv.push(CString::new(state.to_string()).unwrap_or_default());
    for arg in args {
        match CString::new(arg.as_bytes()) {
            Ok(arg) => argv.push(arg),
            Err(_) => return format!("an argument of clusterd holds a NUL byte: {arg:?}"),
        }
    }
    let Ok(path) = CString::new(program.as_os_str().as_bytes()) else {
        return format!("the path {} holds a NUL byte", program.display());
    };
    let mut handed: Vec<RawFd> = fds.to_vec();
    handed.push(state);
    let mut cleared = Vec::new();
    let mut failure = None;
    for &fd in &handed {
        match set_cloexec(fd, false) {
            Ok(()) => cleared.push(fd),
            Err(e) => {
                failure = Some(format!("cannot hand fd {fd} over: {e}"));
                break;
            }
        }
    }
    let mut previous = SigSet::empty();
    let blocked = nix::sys::signal::pthread_sigmask(
        SigmaskHow::SIG_BLOCK,
        Some(&handled_signals()),
        Some(&mut previous),
    );
    let why = match failure {
        Some(why) => why,
        None => {
            last();
            let error = match environment {
                Some(env) => nix::unistd::execve(&path, &argv, &env).err(),
                None => nix::unistd::execv(&path, &argv).err(),
            };
            format!(
                "cannot exec {}: {}",
                program.display(),
                error.map_or_else(|| "unknown error".to_string(), |e| e.desc().to_string())
            )
        }
    };
    // Still here: the exec failed. Everything back as it was.
    if blocked.is_ok() {
        let _ = nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&previous), None);
    }
    close_on_exec(&cleared);
    why
}

/// Takes an fd named by the state: it must be open and of the kind said (`S_IFSOCK`,
/// `S_IFIFO`); a state that lies about an fd is refused rather than adopted.
pub(crate) fn take_fd(fd: RawFd, kind: libc::mode_t) -> Result<OwnedFd, String> {
    // SAFETY: only looked at, for as long as this call; fstat fails on an fd not open.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let stat = nix::sys::stat::fstat(borrowed).map_err(|e| format!("fd {fd} of the state: {e}"))?;
    if stat.st_mode & libc::S_IFMT != kind {
        return Err(format!("fd {fd} of the state is not what the state says"));
    }
    // SAFETY: the fd is open (fstat above), handed over by the old image and named once in
    // the state (`DaemonState::from_json` refuses an fd named twice): nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
