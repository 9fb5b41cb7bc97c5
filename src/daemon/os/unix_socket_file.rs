//! Whether a unix socket file is still in use, found out without ever blocking: a socket file
//! left by a process that died makes `bind` fail with "Address in use", so it may be removed,
//! but only when the kernel says for certain that nobody listens on it.

use std::os::fd::AsRawFd;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use nix::errno::Errno;
use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, UnixAddr};

/// What is at a path where clusterd wants to bind a unix stream socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SocketFileState {
    /// Nothing: bind can go ahead.
    Absent,
    /// A stream socket nobody listens on (connect says ECONNREFUSED): safe to remove.
    Stale,
    /// Something answers, or might: a listener (even one whose backlog is full), a socket of
    /// another type (`/dev/log` is a datagram socket), one we may not connect to, or a file
    /// that is not a socket. Never to be removed; the reason says which.
    InUse(String),
}

/// Looks at `path` with a non-blocking connect, so that a peer that never accepts (a full
/// backlog) cannot hold the caller.
pub(crate) fn probe(path: &Path) -> SocketFileState {
    let meta = match std::fs::symlink_metadata(path) {
        Err(_) => return SocketFileState::Absent,
        Ok(meta) => meta,
    };
    if !meta.file_type().is_socket() {
        return SocketFileState::InUse(format!("{} exists and is not a socket", path.display()));
    }
    let attempt = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )
    .and_then(|fd| {
        let address = UnixAddr::new(path)?;
        connect(fd.as_raw_fd(), &address)
    });
    match attempt {
        Err(Errno::ECONNREFUSED) => SocketFileState::Stale,
        Ok(()) | Err(Errno::EAGAIN) | Err(Errno::EINPROGRESS) => SocketFileState::InUse(
            "Address already in use (another process is listening on it)".into(),
        ),
        Err(Errno::EPROTOTYPE) => SocketFileState::InUse(format!(
            "{} is a socket of another type (a datagram socket?) and is left alone",
            path.display()
        )),
        Err(e) => SocketFileState::InUse(format!(
            "{} exists and cannot be checked ({}); it is left alone",
            path.display(),
            e.desc()
        )),
    }
}

/// Removes a stale socket file at `path`; refuses (with the reason) anything else.
pub(crate) fn clear_stale(path: &Path) -> Result<(), String> {
    match probe(path) {
        SocketFileState::Absent => Ok(()),
        SocketFileState::Stale => std::fs::remove_file(path)
            .map_err(|e| format!("cannot remove the stale socket {}: {e}", path.display())),
        SocketFileState::InUse(reason) => Err(reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::{UnixDatagram, UnixListener};

    #[test]
    fn only_a_socket_nobody_listens_on_is_stale() {
        let _no_fork = crate::FORK_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        assert_eq!(probe(&path), SocketFileState::Absent);
        let listener = UnixListener::bind(&path).unwrap();
        assert!(matches!(probe(&path), SocketFileState::InUse(_)));
        drop(listener);
        assert_eq!(probe(&path), SocketFileState::Stale);
        assert_eq!(clear_stale(&path), Ok(()));
        assert!(!path.exists());

        let datagram = dir.path().join("log");
        let _log = UnixDatagram::bind(&datagram).unwrap();
        assert!(clear_stale(&datagram).is_err());
        assert!(datagram.exists(), "a datagram socket must never be removed");

        let plain = dir.path().join("file");
        std::fs::write(&plain, "x").unwrap();
        assert!(clear_stale(&plain).is_err());
        assert!(plain.exists());
    }
}
