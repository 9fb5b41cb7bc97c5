//! How events reach the supervisor loop: the [`Inbox`] the main thread waits on, and the
//! [`EventSender`]s the other threads (control socket, worker I/O) post through.
//!
//! Signals need no thread of their own: signal-hook's handlers for SIGCHLD, SIGTERM, SIGINT
//! SIGHUP, SIGUSR1 and SIGUSR2 each write a byte to a pipe, and the main thread waits on those pipes and on a
//! doorbell (an eventfd the other threads ring after each event) in one `ppoll`. A SIGCHLD
//! then wakes exactly the thread that reaps and restarts, with no hand-over between threads —
//! on the restart path every wake-up of another thread (of a halted vCPU, in a VM) costs.
//! Signals of one kind may coalesce; the supervisor copes: on a SIGCHLD it reaps every exited
//! child, a batch per turn of the loop (it sends itself a SIGCHLD for the rest, so a crash
//! loop of 1,000 instances cannot keep a `clusterctl status` waiting behind 1,000 restarts).
//!
//! These signals are blocked in every thread at every moment but two, both on the main
//! thread in [`Inbox::wait`]: a moment at its start (`let_signals_in`) and its `ppoll`,
//! which lets them in for as long as it waits (its signal mask). They are blocked
//! on the main thread before it starts any thread, and every thread inherits its creator's
//! mask. So a handler runs only there, and only where the byte it writes is read at once; a
//! signal that comes at any other moment stays pending in the kernel until the next wait.
//! That is what makes `daemon-reexec` lose none: from the loop's last wait to
//! the exec, a signal stays pending, and pending signals (and the mask) survive the exec, to
//! be taken by the new image's first wait (before, a signal could land on another thread
//! whose handler wrote to a pipe the exec then closed).

use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, SendError, Sender};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::signal::{pthread_sigmask, SigSet, SigmaskHow, Signal};
use nix::sys::time::TimeSpec;
use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2};

use crate::supervisor::event::Event;

/// The signals clusterd acts on (SIGUSR2: `daemon-reexec`).
const SIGNALS: [i32; 6] = [SIGCHLD, SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGUSR2];
/// And in container mode, where `docker stop` may be configured to send it (and PID 1 would
/// otherwise ignore it): SIGQUIT stops like SIGTERM.
const CONTAINER_SIGNALS: [i32; 1] = [SIGQUIT];
/// In container mode, the catchable signals whose default action would end clusterd are
/// ignored, as they are for PID 1 (which `--container` need not be). The faults (SIGSEGV,
/// SIGBUS, ...) keep their defaults. Instances get every disposition reset at spawn.
const CONTAINER_IGNORED: [nix::sys::signal::Signal; 10] = {
    use nix::sys::signal::Signal::*;
    [
        SIGALRM, SIGVTALRM, SIGPROF, SIGIO, SIGPWR, SIGXCPU, SIGXFSZ, SIGTSTP, SIGTTIN, SIGTTOU,
    ]
};

/// Posts events to the supervisor loop from another thread.
#[derive(Clone)]
pub(crate) struct EventSender {
    channel: Sender<Event>,
    doorbell: Arc<EventFd>,
}

impl EventSender {
    pub(crate) fn send(&self, event: Event) -> Result<(), SendError<Event>> {
        self.channel.send(event)?;
        let _ = self.doorbell.write(1);
        Ok(())
    }

    /// Wakes the loop without an event: something it polls for has changed (the metrics
    /// thread has stopped for a re-exec).
    pub(crate) fn ring(&self) {
        let _ = self.doorbell.write(1);
    }
}

/// What the main thread waits on.
pub(crate) struct Inbox {
    channel: Receiver<Event>,
    doorbell: Arc<EventFd>,
    /// The read end of each signal's pipe, with its signal.
    signal_pipes: Vec<(OwnedFd, i32)>,
    /// The main thread's mask while it waits: its own, without the handled signals.
    waiting_mask: SigSet,
}

/// Installs the signal handlers (at once, so no SIGCHLD is missed), blocks their signals on
/// this thread (the main one, before it starts any other: see the module's doc) and makes
/// the inbox and the sender the other threads post through.
pub(crate) fn inbox(container: bool) -> std::io::Result<(Inbox, EventSender)> {
    let (sender, channel) = crossbeam_channel::unbounded();
    let doorbell = Arc::new(EventFd::from_flags(
        EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK,
    )?);
    let mut signal_pipes = Vec::new();
    let extra: &[i32] = if container { &CONTAINER_SIGNALS } else { &[] };
    if container {
        for signal in CONTAINER_IGNORED {
            // SAFETY: SIG_IGN installs no handler code; nothing else sets these signals.
            unsafe { nix::sys::signal::signal(signal, nix::sys::signal::SigHandler::SigIgn) }?;
        }
    }
    for &signal in SIGNALS.iter().chain(extra) {
        let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
        signal_hook::low_level::pipe::register(signal, write)?;
        signal_pipes.push((read, signal));
    }
    let mut handled = SigSet::empty();
    for &(_, signal) in &signal_pipes {
        handled.add(Signal::try_from(signal).map_err(std::io::Error::from)?);
    }
    let mut waiting_mask = SigSet::empty();
    pthread_sigmask(
        SigmaskHow::SIG_BLOCK,
        Some(&handled),
        Some(&mut waiting_mask),
    )
    .map_err(std::io::Error::from)?;
    for signal in handled.iter() {
        waiting_mask.remove(signal);
    }
    Ok((
        Inbox {
            channel,
            doorbell: Arc::clone(&doorbell),
            signal_pipes,
            waiting_mask,
        },
        EventSender {
            channel: sender,
            doorbell,
        },
    ))
}

impl Inbox {
    /// Waits until something arrives or `deadline` passes (forever without one), then returns
    /// everything that has arrived: signals first, then the other threads' events in order.
    /// `ppoll` returns at once for what is already there (the pipes and the doorbell are
    /// level-triggered, and every event in the channel has rung the doorbell after it was
    /// queued); only what it reports is read. Reading every pipe on each turn was fourteen
    /// `read`s of empty pipes per restart, on the thread the restart waits for.
    pub(crate) fn wait(&self, deadline: Option<Instant>) -> Vec<Event> {
        self.let_signals_in();
        let timeout = deadline
            .map(|at| TimeSpec::from_duration(at.saturating_duration_since(Instant::now())));
        let mut fds: Vec<PollFd> = self
            .signal_pipes
            .iter()
            .map(|(fd, _)| PollFd::new(fd.as_fd(), PollFlags::POLLIN))
            .collect();
        fds.push(PollFd::new(self.doorbell.as_fd(), PollFlags::POLLIN));
        // The handled signals are let in while it waits (its mask; see the module's doc).
        let mut polled = nix::poll::ppoll(&mut fds, timeout, Some(self.waiting_mask));
        if polled == Err(Errno::EINTR) {
            // The usual way a signal arrives: its handler ran on this thread, interrupting the
            // wait, and has written to its pipe. One look says which (not one read each).
            polled = nix::poll::ppoll(
                &mut fds,
                Some(TimeSpec::from_duration(Duration::ZERO)),
                None,
            );
        }
        let ready: Vec<bool> = match polled {
            Ok(_) => fds
                .iter()
                .map(|fd| fd.revents().is_some_and(|r| !r.is_empty()))
                .collect(),
            Err(e) => {
                if e != Errno::EINTR {
                    log::error!("waiting for events failed: {e}");
                }
                vec![true; fds.len()]
            }
        };
        drop(fds);
        let mut arrived = Vec::new();
        for ((pipe, signal), _) in self.signal_pipes.iter().zip(&ready).filter(|(_, r)| **r) {
            if drain(pipe) {
                arrived.push(Event::Signal(*signal));
            }
        }
        if ready.last().copied().unwrap_or(true) {
            let _ = self.doorbell.read();
        }
        self.take_events(&mut arrived);
        arrived
    }

    /// The handled signals pending now are let in for a moment: their handlers run here, on
    /// this thread, as the mask is set (the kernel delivers an unblocked pending signal on
    /// the way back from the call), and their pipes are then ready for the `ppoll` that
    /// follows. Needed because a `ppoll` that finds a descriptor ready returns without
    /// delivering what is pending: in a busy loop, where something is always ready, a SIGTERM
    /// would wait for an idle moment (a crash loop of 200 instances has none).
    fn let_signals_in(&self) {
        let mut blocked = SigSet::empty();
        if pthread_sigmask(
            SigmaskHow::SIG_SETMASK,
            Some(&self.waiting_mask),
            Some(&mut blocked),
        )
        .is_ok()
        {
            let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&blocked), None);
        }
    }

    /// `daemon-reexec`, the signals blocked: every signal that arrived since the last look
    /// is made pending again on this thread (thread-directed: it stays with the thread that
    /// execs, and pending signals survive the exec), for the new image's handlers. SIGCHLD
    /// and SIGUSR2 are not: the new image reaps anyway, and the re-exec is this one.
    pub(crate) fn repend_signals(&self) {
        for (pipe, signal) in &self.signal_pipes {
            if drain(pipe) && ![libc::SIGCHLD, libc::SIGUSR2].contains(signal) {
                // SAFETY: tgkill to this very thread, with a signal clusterd handles (and
                // blocks now): no memory is touched.
                unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), libc::gettid(), *signal) };
            }
        }
    }

    /// Everything that has arrived, without waiting (`daemon-reexec` carries it over).
    pub(crate) fn take_now(&self) -> Vec<Event> {
        self.take_arrived()
    }

    /// Every signal and event that has arrived, without waiting.
    fn take_arrived(&self) -> Vec<Event> {
        let mut arrived = Vec::new();
        for (pipe, signal) in &self.signal_pipes {
            if drain(pipe) {
                arrived.push(Event::Signal(*signal));
            }
        }
        let _ = self.doorbell.read();
        self.take_events(&mut arrived);
        arrived
    }

    /// The other threads' events in the channel, after the signals in `arrived`.
    fn take_events(&self, arrived: &mut Vec<Event>) {
        while let Ok(event) = self.channel.try_recv() {
            // A SIGCHLD clusterd sent itself to reap the rest of a large batch of exits (see
            // os_process_control's REAP_BATCH) once is enough: one reap per turn of the loop.
            if matches!(event, Event::Signal(libc::SIGCHLD))
                && arrived
                    .iter()
                    .any(|e| matches!(e, Event::Signal(libc::SIGCHLD)))
            {
                continue;
            }
            arrived.push(event);
        }
    }
}

/// Empties a non-blocking pipe; true if anything was in it.
fn drain(pipe: &OwnedFd) -> bool {
    let mut buffer = [0u8; 64];
    let mut any = false;
    loop {
        match nix::unistd::read(pipe, &mut buffer) {
            Ok(0) => return any,
            // A short read emptied it (a byte written since makes the pipe ready again).
            Ok(n) if n < buffer.len() => return true,
            Ok(_) => any = true,
            Err(Errno::EINTR) => continue,
            Err(_) => return any,
        }
    }
}
