//! A helper thread's doorbell (an eventfd its epoll watches) as the supervisor loop rings it:
//! at once, or owed until the loop's turn is over ([`Doorbell::defer`], [`Doorbell::flush`]).
//!
//! A restart is over only when the new child runs. On two CPUs, each wake-up of the log
//! thread or the worker I/O thread while the loop forks and the child execs is a thread that
//! competes with them for a CPU (and, in a VM, an IPI to a halted vCPU). What the loop tells
//! those threads during a turn waits in their channels and one ring at the end of the turn,
//! when the loop is about to sleep and leaves its CPU to them, wakes each thread once. Nothing
//! is lost or reordered: the commands are in the channel, in order; only the ring waits.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use nix::sys::eventfd::EventFd;

/// One handle on a thread's eventfd. Clones share the deferral: a handle made with
/// [`Doorbell::own`] has one of its own.
#[derive(Clone)]
pub(crate) struct Doorbell {
    fd: Arc<EventFd>,
    state: Arc<Deferral>,
}

#[derive(Default)]
struct Deferral {
    /// Rings wait for [`Doorbell::flush`].
    deferring: AtomicBool,
    /// A ring was held back.
    owed: AtomicBool,
}

impl Doorbell {
    pub(crate) fn new(fd: Arc<EventFd>) -> Doorbell {
        Doorbell {
            fd,
            state: Arc::default(),
        }
    }

    /// The same eventfd, with a deferral of its own: the loop's handle defers without
    /// holding back the other threads' rings.
    pub(crate) fn own(&self) -> Doorbell {
        Doorbell::new(Arc::clone(&self.fd))
    }

    /// After a command was queued: wakes the thread, or owes it a wake-up while deferring.
    pub(crate) fn ring(&self) {
        if self.state.deferring.load(Ordering::SeqCst) {
            self.state.owed.store(true, Ordering::SeqCst);
        } else {
            let _ = self.fd.write(1);
        }
    }

    /// Wakes the thread now, deferring or not (the caller waits for its answer).
    pub(crate) fn ring_now(&self) {
        let _ = self.fd.write(1);
    }

    /// Rings are owed from now until [`Doorbell::flush`].
    pub(crate) fn defer(&self) {
        self.state.deferring.store(true, Ordering::SeqCst);
    }

    /// Stops deferring and rings once if a ring was owed.
    pub(crate) fn flush(&self) {
        self.state.deferring.store(false, Ordering::SeqCst);
        if self.state.owed.swap(false, Ordering::SeqCst) {
            let _ = self.fd.write(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::eventfd::EfdFlags;

    fn rung(fd: &EventFd) -> bool {
        fd.read().is_ok()
    }

    #[test]
    fn a_deferred_ring_is_one_ring_at_the_flush() {
        let fd = Arc::new(EventFd::from_flags(EfdFlags::EFD_NONBLOCK).unwrap());
        let bell = Doorbell::new(Arc::clone(&fd));
        bell.ring();
        assert!(rung(&fd));
        bell.defer();
        bell.ring();
        bell.ring();
        assert!(!rung(&fd), "deferred: nothing yet");
        bell.flush();
        assert_eq!(fd.read().ok(), Some(1), "one ring for both");
        bell.flush();
        assert!(!rung(&fd), "nothing owed: no ring");
    }

    #[test]
    fn another_handles_deferral_does_not_hold_back_this_one() {
        let fd = Arc::new(EventFd::from_flags(EfdFlags::EFD_NONBLOCK).unwrap());
        let shared = Doorbell::new(Arc::clone(&fd));
        let loops = shared.own();
        loops.defer();
        shared.ring();
        assert!(rung(&fd));
        loops.ring_now();
        assert!(rung(&fd));
    }
}
