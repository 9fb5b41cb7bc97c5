//! `daemon-reexec` and `--metrics-listen`: the listening sockets carry over, as the control
//! socket does, so that no scrape is refused during the pause nor cut by the exec.
//!
//! - The loop asks ([`ask`]) when the re-exec begins; the metrics thread stops accepting
//!   (the listeners stay open: new connections wait in the kernel's listen queue, their
//!   requests in its buffers) and finishes the scrapes it has accepted, for at most
//!   [`DRAIN_BOUND`]: what is still open then (a client that never sends its request, or
//!   never reads its answer) is closed, so no client delays the re-exec more than that, nor
//!   makes it fail. The thread then hands its listeners' fd numbers over and waits: the exec
//!   ends it, or the re-exec failed and [`Pending`] is dropped, which has it accept again.
//! - The new image takes them back ([`adopt`]) once each is checked: a TCP socket that
//!   listens, on an address `--metrics-listen` names (the command line is the same, but a
//!   state is not trusted). If none checks out, it binds as at start-up, and says so.

use std::net::TcpListener;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use log::warn;
use nix::sys::eventfd::EventFd;

use super::ListenAddress;

/// How long the scrapes accepted when a re-exec begins have to be answered and taken. A
/// scrape sends its request at once and its answer fits in the socket's buffer: it takes a
/// turn of the loop, a report at most (the loop answers it meanwhile).
pub(super) const DRAIN_BOUND: Duration = Duration::from_millis(250);

/// A hand-over asked of the metrics thread.
pub(super) struct Ask {
    /// Where the thread says its listeners' fds, once it has stopped.
    pub(super) done: Sender<Vec<RawFd>>,
    /// Dropped by the loop if the re-exec fails: the thread accepts again.
    pub(super) resume: Receiver<()>,
}

/// The metrics thread's end: the asks (the report's eventfd is rung with each).
pub(super) struct Asks {
    pub(super) asked: Receiver<Ask>,
}

/// The loop's end, set once the metrics thread runs (there is at most one).
static ASKER: Mutex<Option<(Sender<Ask>, Arc<EventFd>)>> = Mutex::new(None);

/// Made by `serve`: the thread polls `bell` (the report's) and takes the asks when it rings.
pub(super) fn asks(bell: Arc<EventFd>) -> Asks {
    let (ask, asked) = crossbeam_channel::bounded(1);
    *ASKER.lock().unwrap_or_else(PoisonError::into_inner) = Some((ask, bell));
    Asks { asked }
}

/// A hand-over under way; dropping it resumes the metrics thread.
pub(crate) struct Pending {
    done: Receiver<Vec<RawFd>>,
    _resume: Sender<()>,
    held: Option<Vec<RawFd>>,
}

/// Asks the metrics thread (if clusterd serves metrics) to stop accepting and finish its
/// scrapes; returns at once.
pub(crate) fn ask() -> Option<Pending> {
    let slot = ASKER.lock().unwrap_or_else(PoisonError::into_inner);
    let (asker, bell) = slot.as_ref()?;
    let (done, taken) = crossbeam_channel::bounded(1);
    let (resume, resumed) = crossbeam_channel::bounded(0);
    // Capacity one: a second re-exec asks only once the first one's thread resumed.
    asker
        .try_send(Ask {
            done,
            resume: resumed,
        })
        .ok()?;
    let _ = bell.write(1);
    Some(Pending {
        done: taken,
        _resume: resume,
        held: None,
    })
}

impl Pending {
    /// Whether the metrics thread has stopped: accepting no more, no connection left.
    pub(crate) fn stopped(&mut self) -> bool {
        if self.held.is_none() {
            self.held = self.done.try_recv().ok();
        }
        self.held.is_some()
    }

    /// The listeners' fds, once stopped; or why not by `deadline`.
    pub(crate) fn listeners(&mut self, deadline: Instant) -> Result<Vec<RawFd>, String> {
        if let Some(held) = &self.held {
            return Ok(held.clone());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let held = self
            .done
            .recv_timeout(left)
            .map_err(|_| "the metrics thread did not stop accepting in time".to_string())?;
        self.held = Some(held.clone());
        Ok(held)
    }
}

/// The fds of the listeners handed over, as the new image takes them: each a TCP socket
/// that listens on an address of `address` (its port, or any with port 0); the others are
/// closed, with a warning.
pub(super) fn adopt(inherited: Vec<OwnedFd>, address: &ListenAddress) -> Vec<TcpListener> {
    let mut adopted = Vec::new();
    for fd in inherited {
        let number = fd.as_raw_fd();
        match check(&fd, address) {
            Ok(()) => adopted.push(TcpListener::from(fd)),
            Err(why) => warn!(
                "--metrics-listen {}: the socket handed over as fd {number} is not taken: {why}",
                address.text
            ),
        }
    }
    adopted
}

fn check(fd: &OwnedFd, address: &ListenAddress) -> Result<(), String> {
    use nix::sys::socket::{getsockname, getsockopt, sockopt, SockaddrStorage};
    let listening = getsockopt(fd, sockopt::AcceptConn).map_err(|e| e.to_string())?;
    let stream = getsockopt(fd, sockopt::SockType).map_err(|e| e.to_string())?;
    if !listening || stream != nix::sys::socket::SockType::Stream {
        return Err("not a listening stream socket".into());
    }
    let local: SockaddrStorage = getsockname(fd.as_raw_fd()).map_err(|e| e.to_string())?;
    let at: std::net::SocketAddr = if let Some(v4) = local.as_sockaddr_in() {
        std::net::SocketAddrV4::from(*v4).into()
    } else if let Some(v6) = local.as_sockaddr_in6() {
        std::net::SocketAddrV6::from(*v6).into()
    } else {
        return Err("not a TCP socket".into());
    };
    let named = address
        .addresses
        .iter()
        .any(|a| a.ip() == at.ip() && (a.port() == at.port() || a.port() == 0));
    if !named {
        return Err(format!("it listens on {at}, which is not this address"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address_of(at: std::net::SocketAddr) -> ListenAddress {
        ListenAddress {
            text: at.to_string(),
            addresses: vec![at],
        }
    }

    #[test]
    fn only_a_listening_tcp_socket_on_the_address_is_adopted() {
        let good = TcpListener::bind("127.0.0.1:0").expect("bind");
        let at = good.local_addr().expect("address");
        let other = TcpListener::bind("127.0.0.1:0").expect("bind");
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let connected = std::net::TcpStream::connect(at).expect("connect");
        let fds: Vec<OwnedFd> = vec![
            OwnedFd::from(other),
            OwnedFd::from(udp),
            OwnedFd::from(connected),
            OwnedFd::from(good),
        ];
        let adopted = adopt(fds, &address_of(at));
        let addresses: Vec<_> = adopted.iter().filter_map(|l| l.local_addr().ok()).collect();
        assert_eq!(addresses, [at]);
        // Port 0 asked: any port on the address.
        let any = TcpListener::bind("127.0.0.1:0").expect("bind");
        let zero = address_of(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
        assert_eq!(adopt(vec![OwnedFd::from(any)], &zero).len(), 1);
    }
}
