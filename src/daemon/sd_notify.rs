//! sd_notify, the systemd notification protocol, both ways:
//!
//! - **Instances → clusterd**: clusterd's own `NOTIFY_SOCKET` (beside the control socket,
//!   given to every instance) receives `READY=1`, `STOPPING=1`, `STATUS=`, `WATCHDOG=1` and
//!   `WATCHDOG=trigger` datagrams with the
//!   sender's kernel-checked credentials ([`bind_instance_socket`], [`receive`], [`parse`]).
//!   The I/O thread reads it; the supervisor decides whose instance a sender is.
//! - **clusterd → its service manager** (`Type=notify` in `packaging/clusterd.service`):
//!   `READY=1` once the units are started, `STOPPING=1` on shutdown, `STATUS=` with a summary
//!   ([`ServiceNotifier`]). Does nothing without `NOTIFY_SOCKET` in clusterd's environment.

use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::{Path, PathBuf};

use log::{debug, error, warn};
use nix::sys::socket::{
    recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags, UnixAddr, UnixCredentials,
};
use nix::unistd::Pid;

use crate::supervisor::event::NotifyMessage;

/// Longer datagrams are dropped: sd_notify messages are a few lines.
const MAX_DATAGRAM_BYTES: usize = 4096;

/// clusterd's NOTIFY_SOCKET for instances sits beside the control socket.
pub(crate) fn instance_socket_path(control: &Path) -> PathBuf {
    let mut name = control.as_os_str().to_owned();
    name.push(".notify");
    PathBuf::from(name)
}

/// The datagram socket instances send sd_notify messages to. Without it, clusterd still runs
/// (instances only lose `READY=1`), so a failure is logged and `None`.
pub(crate) fn bind_instance_socket(path: &Path) -> Option<UnixDatagram> {
    // This clusterd owns the control socket beside it, so a file here is a leftover.
    let _ = std::fs::remove_file(path);
    let socket = match UnixDatagram::bind(path) {
        Ok(s) => s,
        Err(e) => {
            error!(
                "cannot create NOTIFY_SOCKET {}: {e}; READY=1 will not be received",
                path.display()
            );
            return None;
        }
    };
    // Instances may run as other users; senders are identified by kernel-checked credentials.
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666));
    if let Err(e) = setsockopt(&socket, sockopt::PassCred, &true) {
        error!("cannot enable SO_PASSCRED on NOTIFY_SOCKET: {e}");
        return None;
    }
    Some(socket)
}

/// What one non-blocking receive on the instances' socket got.
pub(crate) enum Received {
    /// A datagram from process `pid`. `barrier` holds the fds it passed along (systemd-notify's
    /// `BARRIER=1` pipe): the sender waits for them to close, so it stays alive — and can be
    /// looked up — until the caller drops them.
    Datagram {
        pid: Pid,
        text: String,
        barrier: Vec<OwnedFd>,
    },
    /// Something unusable (no credentials, too long); already logged.
    Skipped,
    /// Nothing more to read now.
    Drained,
}

pub(crate) fn receive(socket: &UnixDatagram) -> Received {
    loop {
        let mut buffer = [0u8; MAX_DATAGRAM_BYTES];
        let mut cmsg = nix::cmsg_space!(UnixCredentials, [RawFd; 8]);
        let mut iov = [IoSliceMut::new(&mut buffer)];
        let received = recvmsg::<UnixAddr>(
            socket.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
        );
        let message = match received {
            Ok(m) => m,
            Err(nix::Error::EAGAIN) => return Received::Drained,
            Err(nix::Error::EINTR) => continue,
            Err(e) => {
                warn!("NOTIFY_SOCKET: receive failed: {e}");
                return Received::Drained;
            }
        };
        let mut sender = None;
        let mut barrier = Vec::new();
        if let Ok(cmsgs) = message.cmsgs() {
            for cmsg in cmsgs {
                match cmsg {
                    ControlMessageOwned::ScmCredentials(creds) => {
                        sender = Some(Pid::from_raw(creds.pid()));
                    }
                    ControlMessageOwned::ScmRights(fds) => {
                        for fd in fds {
                            // SAFETY: the kernel just gave us these fds; nobody else owns them.
                            barrier.push(unsafe { OwnedFd::from_raw_fd(fd) });
                        }
                    }
                    _ => {}
                }
            }
        }
        let length = message.bytes;
        let Some(pid) = sender else {
            debug!("NOTIFY_SOCKET: datagram without credentials ignored");
            return Received::Skipped;
        };
        if message.flags.contains(MsgFlags::MSG_TRUNC) {
            warn!("NOTIFY_SOCKET: datagram from pid {pid} too long; ignored");
            return Received::Skipped;
        }
        return Received::Datagram {
            pid,
            text: String::from_utf8_lossy(&buffer[..length]).into_owned(),
            barrier,
        };
    }
}

/// Parses `KEY=VALUE` lines; unknown keys are ignored, as the protocol asks.
pub(crate) fn parse(datagram: &str) -> NotifyMessage {
    let mut message = NotifyMessage::default();
    for line in datagram.lines() {
        match line.split_once('=') {
            Some(("READY", "1")) => message.ready = true,
            Some(("STOPPING", "1")) => message.stopping = true,
            Some(("WATCHDOG", "1")) => message.watchdog = true,
            Some(("WATCHDOG", "trigger")) => message.watchdog_trigger = true,
            Some(("STATUS", text)) => message.status = Some(text.to_string()),
            _ => {}
        }
    }
    message
}

/// How clusterd tells its own service manager how it is doing.
pub(crate) struct ServiceNotifier {
    target: Option<SocketAddr>,
}

impl ServiceNotifier {
    /// Reads `NOTIFY_SOCKET` (a path, or `@name` for the abstract namespace).
    pub(crate) fn from_env() -> Self {
        let target = std::env::var("NOTIFY_SOCKET").ok().and_then(|path| {
            if let Some(name) = path.strip_prefix('@') {
                use std::os::linux::net::SocketAddrExt;
                SocketAddr::from_abstract_name(name.as_bytes()).ok()
            } else {
                SocketAddr::from_pathname(path).ok()
            }
        });
        ServiceNotifier { target }
    }

    pub(crate) fn notify(&self, state: &str) {
        let Some(target) = &self.target else { return };
        let sent = UnixDatagram::unbound()
            .and_then(|socket| socket.send_to_addr(state.as_bytes(), target));
        if let Err(e) = sent {
            log::warn!("cannot notify the service manager: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_datagrams_parse() {
        let m = parse("READY=1\nSTATUS=warming up\nX_CUSTOM=1\n");
        assert!(m.ready && !m.stopping);
        assert_eq!(m.status.as_deref(), Some("warming up"));
        assert!(parse("STOPPING=1").stopping);
        assert!(!parse("READY=0").ready);
        assert!(parse("WATCHDOG=1").watchdog);
        assert!(parse("WATCHDOG=trigger").watchdog_trigger);
        assert_eq!(parse("WATCHDOG=0"), NotifyMessage::default());
    }
}
