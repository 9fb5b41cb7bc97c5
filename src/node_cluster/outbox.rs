//! `Outbox`: what clusterd still has to write to one worker channel.
//!
//! Writes never block the I/O thread: the channel is non-blocking, a line that does not fit
//! stays queued (with how much of it was written) and the caller waits for EPOLLOUT. A line
//! that carries a socket is written with `sendmsg` + SCM_RIGHTS; after it, nothing more is
//! written until the worker answers `NODE_HANDLE_ACK`, as Node's own sender does
//! (`_handleQueue`): Node attaches a received fd to the first `NODE_HANDLE` message of the
//! chunk it read, so only one may be in flight. On `NODE_HANDLE_NACK` the message is sent
//! again, at most [`MAX_RETRANSMISSIONS`] times.
//!
//! A liveness check of the worker's event loop ([`Outbox::queue_ping`], for `watchdog`) is
//! `{"cmd":"NODE_HANDLE"}` with no socket: Node's runtime answers it by itself with
//! `NODE_HANDLE_NACK` (lib/internal/child_process.js, "the handle is not received ... report
//! the sender"), whatever the app does — unless its event loop is blocked. It follows the
//! same one-in-flight rule as a handle: it is written only when nothing awaits an ack, and
//! nothing is written after it until its NACK, so Node can never attach a real socket to it
//! (nor take its NACK for a lost socket's).
//!
//! Lines from `clusterctl send` carry a [`Charge`]: their bytes count against the instance's
//! allowance and clusterd's until they are written (or dropped with the channel), so that an
//! instance that never reads its channel costs clusterd a bounded amount of memory.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use nix::errno::Errno;
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, UnixAddr};

/// Node's `MAX_HANDLE_RETRANSMISSIONS`.
pub(crate) const MAX_RETRANSMISSIONS: u32 = 3;

/// One line to write, with the socket it carries (clusterd's own copy, closed once sent).
pub(crate) struct Outgoing {
    pub line: Vec<u8>,
    pub fd: Option<OwnedFd>,
    /// For a line from `clusterctl send`: its bytes, given back when it is dropped.
    pub charge: Option<Charge>,
}

/// Bytes counted against some allowances (an instance's, clusterd's) for as long as it
/// lives: dropping it (the line was written, or its channel closed) gives them back.
pub(crate) struct Charge {
    counters: Vec<Arc<AtomicUsize>>,
    bytes: usize,
}

impl Charge {
    /// Counts `bytes` against each `(counter, limit)`; `Err(i)` if counter `i` would go past
    /// its limit (nothing is counted then).
    pub(crate) fn take(
        allowances: &[(&Arc<AtomicUsize>, usize)],
        bytes: usize,
    ) -> Result<Charge, usize> {
        let mut charge = Charge {
            counters: Vec::with_capacity(allowances.len()),
            bytes,
        };
        for (i, (counter, limit)) in allowances.iter().enumerate() {
            let before = counter.fetch_add(bytes, Ordering::SeqCst);
            if before.saturating_add(bytes) > *limit {
                counter.fetch_sub(bytes, Ordering::SeqCst);
                // `charge` gives back what the earlier counters took.
                return Err(i);
            }
            charge.counters.push(Arc::clone(counter));
        }
        Ok(charge)
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        for counter in &self.counters {
            counter.fetch_sub(self.bytes, Ordering::SeqCst);
        }
    }
}

/// A line not yet written when `daemon-reexec` came: carried in the state and queued first
/// by the new image ([`Outbox::unwritten`], [`Outbox::push`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CarriedLine {
    /// What is left of it: the rest of a line the channel took only part of, or all of it.
    pub bytes: Vec<u8>,
    /// From `clusterctl send`: counted against the instance's allowance in the new image.
    pub charged: bool,
}

/// A liveness check: a handle message without a handle.
const PING_LINE: &[u8] = b"{\"cmd\":\"NODE_HANDLE\"}\n";

/// Where the liveness check of a channel is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Ping {
    #[default]
    None,
    /// To be written once the queue is empty; `written` bytes of it already are.
    Queued { written: usize },
    /// Written; its NACK has not come yet.
    InFlight,
}

/// What a flush achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flushed {
    /// Everything is written (or waits for a handle ack): no EPOLLOUT needed.
    Idle,
    /// The socket buffer is full: wait for EPOLLOUT.
    Blocked,
    /// The channel is broken (the worker is gone).
    Broken,
}

#[derive(Default)]
pub(crate) struct Outbox {
    queue: VecDeque<Outgoing>,
    /// Bytes of the front line already written.
    written: usize,
    /// The handle message written last, kept until the worker acknowledges it.
    awaiting_ack: Option<Outgoing>,
    retransmissions: u32,
    /// Lines in `queue` from `clusterctl send` (bounded by their [`Charge`]s).
    charged: usize,
    /// The liveness check of the worker's event loop.
    ping: Ping,
}

impl Outbox {
    pub(crate) fn push(&mut self, message: Outgoing) {
        if message.charge.is_some() {
            self.charged += 1;
        }
        self.queue.push_back(message);
    }

    /// Lines clusterd itself still has to write (answers to a Node worker), not counting
    /// those of `clusterctl send`: a worker whose answers pile up is not read (its requests
    /// would only queue more), but an operator's messages must not stop clusterd from
    /// hearing an instance.
    pub(crate) fn len(&self) -> usize {
        self.queue.len().saturating_sub(self.charged)
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Nothing of clusterd's own is left to write or to be acknowledged (`clusterctl send`
    /// lines may be): what `daemon-reexec` waits for.
    pub(crate) fn settled(&self) -> bool {
        self.queue.len() <= self.charged && self.awaiting_ack.is_none()
    }

    /// What is still to be written, in order, for `daemon-reexec`: the rest of a liveness
    /// check cut in the middle (the worker would see half a line otherwise), the rest of the
    /// front line, then every queued line. Called on a [`Outbox::settled`] outbox: no line
    /// carries a socket then (one that did is left out: it cannot be written down). A copy,
    /// as the outbox writes on if the re-exec fails.
    pub(crate) fn unwritten(&self) -> Vec<CarriedLine> {
        let mut lines = Vec::new();
        if let Ping::Queued { written } = self.ping {
            if written > 0 {
                lines.push(CarriedLine {
                    bytes: PING_LINE.get(written..).unwrap_or_default().to_vec(),
                    charged: false,
                });
            }
        }
        for (n, line) in self.queue.iter().enumerate() {
            if line.fd.is_some() {
                continue;
            }
            let from = if n == 0 { self.written } else { 0 };
            lines.push(CarriedLine {
                bytes: line.line.get(from..).unwrap_or_default().to_vec(),
                charged: line.charge.is_some(),
            });
        }
        lines
    }

    /// True while a handle message waits for the worker's `NODE_HANDLE_ACK`.
    #[cfg(test)]
    pub(crate) fn awaiting_ack(&self) -> bool {
        self.awaiting_ack.is_some()
    }

    /// Queues a liveness check, unless one is queued or unanswered. Returns whether one was
    /// queued.
    pub(crate) fn queue_ping(&mut self) -> bool {
        if self.ping != Ping::None {
            return false;
        }
        self.ping = Ping::Queued { written: 0 };
        true
    }

    /// Writes the queued liveness check if its turn has come; `None` if it has not.
    fn flush_ping(&mut self, channel: BorrowedFd) -> Option<Result<(), Errno>> {
        let Ping::Queued { written } = self.ping else {
            return None;
        };
        if written == 0 && !self.queue.is_empty() {
            return None;
        }
        let rest = PING_LINE.get(written..).unwrap_or_default();
        let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
        Some(
            sendmsg::<UnixAddr>(channel.as_raw_fd(), &[IoSlice::new(rest)], &[], flags, None).map(
                |n| {
                    self.ping = if written + n >= PING_LINE.len() {
                        Ping::InFlight
                    } else {
                        Ping::Queued {
                            written: written + n,
                        }
                    };
                },
            ),
        )
    }

    /// Writes as much as the channel takes.
    pub(crate) fn flush(&mut self, channel: BorrowedFd) -> Flushed {
        while self.awaiting_ack.is_none() && self.ping != Ping::InFlight {
            match self.flush_ping(channel) {
                None => {}
                Some(Ok(())) | Some(Err(Errno::EINTR)) => continue,
                Some(Err(Errno::EAGAIN)) => return Flushed::Blocked,
                Some(Err(_)) => return Flushed::Broken,
            }
            let Some(front) = self.queue.front() else {
                return Flushed::Idle;
            };
            let rest = &front.line[self.written..];
            let iov = [IoSlice::new(rest)];
            let fds;
            let cmsgs: &[ControlMessage] = match (&front.fd, self.written) {
                (Some(fd), 0) => {
                    fds = [fd.as_raw_fd()];
                    &[ControlMessage::ScmRights(&fds)]
                }
                _ => &[],
            };
            let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
            match sendmsg::<UnixAddr>(channel.as_raw_fd(), &iov, cmsgs, flags, None) {
                Ok(n) => {
                    self.written += n;
                    if self.written >= front.line.len() {
                        self.written = 0;
                        if let Some(sent) = self.queue.pop_front() {
                            if sent.charge.is_some() {
                                self.charged = self.charged.saturating_sub(1);
                            }
                            if sent.fd.is_some() {
                                self.awaiting_ack = Some(sent);
                            }
                        }
                    }
                }
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => return Flushed::Blocked,
                Err(_) => return Flushed::Broken,
            }
        }
        Flushed::Idle
    }

    /// `NODE_HANDLE_ACK`: the socket arrived; later messages may go.
    pub(crate) fn on_handle_ack(&mut self) {
        self.awaiting_ack = None;
        self.retransmissions = 0;
    }

    /// `NODE_HANDLE_NACK`: the answer to the liveness check (returns true), or a message
    /// arrived without its socket: send it again (a few times).
    pub(crate) fn on_handle_nack(&mut self) -> bool {
        if self.ping == Ping::InFlight {
            self.ping = Ping::None;
            return true;
        }
        if let Some(message) = self.awaiting_ack.take() {
            if self.retransmissions < MAX_RETRANSMISSIONS {
                self.retransmissions += 1;
                self.queue.push_front(message);
                self.written = 0;
            } else {
                self.retransmissions = 0;
                log::warn!("a socket did not reach its Node worker after {MAX_RETRANSMISSIONS} retransmissions");
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{IoSliceMut, Read};
    use std::os::fd::AsFd;
    use std::os::unix::net::{UnixDatagram, UnixStream};

    use nix::sys::socket::{recvmsg, ControlMessageOwned};

    /// Reads what is there; returns the bytes and how many fds came with them.
    fn receive(stream: &UnixStream) -> (Vec<u8>, usize) {
        let mut buffer = vec![0u8; 64 * 1024];
        let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 4]);
        let mut iov = [IoSliceMut::new(&mut buffer)];
        let message = recvmsg::<UnixAddr>(
            stream.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .unwrap();
        let mut fds = 0;
        for c in message.cmsgs().unwrap() {
            if let ControlMessageOwned::ScmRights(list) = c {
                fds += list.len();
                for fd in list {
                    nix::unistd::close(fd).unwrap();
                }
            }
        }
        let n = message.bytes;
        (buffer[..n].to_vec(), fds)
    }

    #[test]
    fn a_liveness_check_waits_for_a_handle_ack_and_holds_everything_until_its_nack() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        theirs.set_nonblocking(true).unwrap();
        let (socket, _) = UnixDatagram::pair().unwrap();
        let mut outbox = Outbox::default();
        outbox.push(Outgoing {
            line: b"{\"a\":1}\n".to_vec(),
            fd: Some(socket.into()),
            charge: None,
        });
        assert!(outbox.queue_ping());
        assert!(!outbox.queue_ping(), "one check at a time");
        assert_eq!(outbox.flush(ours.as_fd()), Flushed::Idle);
        assert_eq!(receive(&theirs).1, 1);
        // Not while a socket waits for its ack: Node would attach it to the check.
        assert!((&theirs).read(&mut [0u8; 16]).is_err());
        outbox.on_handle_ack();
        assert_eq!(outbox.flush(ours.as_fd()), Flushed::Idle);
        assert_eq!(receive(&theirs), (PING_LINE.to_vec(), 0));
        // Nothing after it until its answer, which is the check's, not a lost socket's.
        outbox.push(Outgoing {
            line: b"{\"b\":2}\n".to_vec(),
            fd: None,
            charge: None,
        });
        assert_eq!(outbox.flush(ours.as_fd()), Flushed::Idle);
        assert!((&theirs).read(&mut [0u8; 16]).is_err());
        assert!(outbox.on_handle_nack());
        assert_eq!(outbox.flush(ours.as_fd()), Flushed::Idle);
        assert_eq!(receive(&theirs), (b"{\"b\":2}\n".to_vec(), 0));
        assert!(!outbox.on_handle_nack(), "no check in flight");
    }

    #[test]
    fn one_handle_is_in_flight_until_the_worker_acks_it() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        let (socket, _) = UnixDatagram::pair().unwrap();
        let mut outbox = Outbox::default();
        outbox.push(Outgoing {
            line: b"{\"a\":1}\n".to_vec(),
            fd: Some(socket.into()),
            charge: None,
        });
        outbox.push(Outgoing {
            line: b"{\"b\":2}\n".to_vec(),
            fd: None,
            charge: None,
        });
        assert_eq!(outbox.flush(ours.as_fd()), Flushed::Idle);
        assert!(outbox.awaiting_ack());
        let (bytes, fds) = receive(&theirs);
        assert_eq!((bytes.as_slice(), fds), (&b"{\"a\":1}\n"[..], 1));

        // Nothing more until the ack.
        assert_eq!(outbox.flush(ours.as_fd()), Flushed::Idle);
        theirs.set_nonblocking(true).unwrap();
        assert!((&theirs).read(&mut [0u8; 16]).is_err());

        outbox.on_handle_nack();
        assert_eq!(outbox.flush(ours.as_fd()), Flushed::Idle);
        assert_eq!(receive(&theirs).1, 1, "retransmitted with its socket");
        outbox.on_handle_ack();
        assert_eq!(outbox.flush(ours.as_fd()), Flushed::Idle);
        assert_eq!(receive(&theirs), (b"{\"b\":2}\n".to_vec(), 0));
        assert!(outbox.is_empty());
    }

    #[test]
    fn a_full_channel_keeps_the_rest_of_the_line_for_later() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        let mut outbox = Outbox::default();
        let mut line = vec![b'x'; 4 * 1024 * 1024];
        line.push(b'\n');
        outbox.push(Outgoing {
            line: line.clone(),
            fd: None,
            charge: None,
        });
        assert_eq!(outbox.flush(ours.as_fd()), Flushed::Blocked);
        let mut received = Vec::new();
        theirs.set_nonblocking(true).unwrap();
        let mut buffer = vec![0u8; 256 * 1024];
        for _ in 0..10_000 {
            while let Ok(n) = (&theirs).read(&mut buffer) {
                received.extend_from_slice(&buffer[..n]);
            }
            if outbox.flush(ours.as_fd()) == Flushed::Idle && outbox.is_empty() {
                break;
            }
        }
        while let Ok(n) = (&theirs).read(&mut buffer) {
            received.extend_from_slice(&buffer[..n]);
        }
        assert_eq!(received.len(), line.len());
        assert_eq!(received, line);
        drop(theirs);
        outbox.push(Outgoing {
            line: b"{}\n".to_vec(),
            fd: None,
            charge: None,
        });
        assert_eq!(outbox.flush(ours.as_fd()), Flushed::Broken);
    }

    #[test]
    fn what_is_unwritten_is_the_rest_of_the_cut_line_then_every_queued_one() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        let mut outbox = Outbox::default();
        let mut long = vec![b'x'; 4 * 1024 * 1024];
        long.push(b'\n');
        let counter = Arc::new(AtomicUsize::new(0));
        for line in [long.clone(), b"2\n".to_vec()] {
            let charge = Charge::take(&[(&counter, usize::MAX)], line.len()).ok();
            outbox.push(Outgoing {
                line,
                fd: None,
                charge,
            });
        }
        outbox.push(Outgoing {
            line: b"stop\n".to_vec(),
            fd: None,
            charge: None,
        });
        assert_eq!(outbox.flush(ours.as_fd()), Flushed::Blocked);
        let mut sent = vec![0u8; 64 * 1024];
        theirs.set_nonblocking(true).unwrap();
        let mut read = 0;
        while let Ok(n) = (&theirs).read(&mut sent) {
            read += n;
        }
        let lines = outbox.unwritten();
        assert_eq!(lines.len(), 3);
        assert_eq!(
            read + lines[0].bytes.len(),
            long.len(),
            "the rest of the cut line"
        );
        assert_eq!(lines[0].bytes[..], long[read..]);
        assert_eq!(
            (lines[1].bytes.as_slice(), lines[1].charged),
            (&b"2\n"[..], true)
        );
        assert_eq!(
            (lines[2].bytes.as_slice(), lines[2].charged),
            (&b"stop\n"[..], false)
        );
        // A copy: the outbox writes on if the re-exec fails.
        assert_eq!(outbox.unwritten(), lines);
        let text = serde_json::to_string(&lines).unwrap();
        assert_eq!(
            serde_json::from_str::<Vec<CarriedLine>>(&text).unwrap(),
            lines
        );
    }

    #[test]
    fn a_charge_is_refused_past_a_limit_and_given_back_when_written_or_dropped() {
        let (instance, total) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let take = |bytes| Charge::take(&[(&instance, 100), (&total, 150)], bytes);
        let first = take(60).expect("fits");
        assert_eq!(take(60).err(), Some(0), "past the instance's limit");
        assert_eq!(
            total.load(Ordering::SeqCst),
            60,
            "nothing counted for a refusal"
        );

        let (ours, theirs) = UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        let mut outbox = Outbox::default();
        outbox.push(Outgoing {
            line: b"1\n".to_vec(),
            fd: None,
            charge: Some(first),
        });
        assert_eq!(outbox.len(), 0, "a client's line is not clusterd's own");
        assert_eq!(outbox.flush(ours.as_fd()), Flushed::Idle);
        assert_eq!(
            instance.load(Ordering::SeqCst),
            0,
            "given back once written"
        );

        let queued = take(90).expect("fits again");
        drop(theirs);
        outbox.push(Outgoing {
            line: b"2\n".to_vec(),
            fd: None,
            charge: Some(queued),
        });
        drop(outbox);
        assert_eq!(
            (
                instance.load(Ordering::SeqCst),
                total.load(Ordering::SeqCst)
            ),
            (0, 0),
            "given back when the channel's queue is dropped"
        );
    }
}
