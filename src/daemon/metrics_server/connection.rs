//! One client of `/metrics`: a non-blocking socket, what it has sent (at most
//! [`http::MAX_HEAD`] bytes), and one deadline for each stage, never extended by what the
//! client does: a request trickled a byte at a time is cut off like a silent one.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::http::{self, Judged};
use super::report::REPORT_DEADLINE;

/// A client must have sent its whole request head this long after it was accepted.
pub(super) const REQUEST_DEADLINE: Duration = Duration::from_secs(5);
/// A client must have taken its whole answer this long after it was ready.
pub(super) const ANSWER_DEADLINE: Duration = Duration::from_secs(5);

pub(super) struct Connection {
    stream: TcpStream,
    pub(super) peer: SocketAddr,
    /// When it was accepted: the oldest is the first to go when the connections are full.
    pub(super) accepted: Instant,
    /// When the current stage must be over; then the connection is closed.
    pub(super) deadline: Instant,
    pub(super) stage: Stage,
}

pub(super) enum Stage {
    /// Reading the request head: what has arrived so far.
    Reading(Vec<u8>),
    /// A `GET /metrics` waits for the report.
    Waiting,
    /// Writing the answer (shared by every scrape the same report answers).
    Writing { response: Arc<[u8]>, written: usize },
}

/// Whether a connection stays after a step.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Next {
    Keep,
    Close,
}

impl Connection {
    pub(super) fn new(stream: TcpStream, peer: SocketAddr, now: Instant) -> Connection {
        Connection {
            stream,
            peer,
            accepted: now,
            deadline: now + REQUEST_DEADLINE,
            stage: Stage::Reading(Vec::new()),
        }
    }

    pub(super) fn fd(&self) -> BorrowedFd<'_> {
        self.stream.as_fd()
    }

    pub(super) fn is_reading(&self) -> bool {
        matches!(self.stage, Stage::Reading(_))
    }

    pub(super) fn is_waiting(&self) -> bool {
        matches!(self.stage, Stage::Waiting)
    }

    /// Reads what has arrived, until the socket has no more; judges the head once it is whole.
    pub(super) fn read_some(&mut self, now: Instant) -> Next {
        let Stage::Reading(head) = &mut self.stage else {
            return Next::Keep;
        };
        let mut chunk = [0u8; 4096];
        loop {
            // Never more than one byte past the cap: that byte is what says it is too long.
            let room = (http::MAX_HEAD + 1).saturating_sub(head.len());
            let Some(buffer) = chunk.get_mut(..room.min(4096)) else {
                return Next::Close;
            };
            match self.stream.read(buffer) {
                // Gone before its request was whole.
                Ok(0) => return Next::Close,
                Ok(n) => head.extend_from_slice(buffer.get(..n).unwrap_or_default()),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Next::Keep,
                Err(_) => return Next::Close,
            }
            match http::judge(head) {
                Judged::Incomplete => {}
                Judged::Metrics => {
                    self.stage = Stage::Waiting;
                    // The report thread answers within REPORT_DEADLINE; a second is slack.
                    self.deadline = now + REPORT_DEADLINE + Duration::from_secs(1);
                    return Next::Keep;
                }
                Judged::Refused(answer) => return self.answer(answer.into(), now),
            }
        }
    }

    /// Starts writing `response`, the whole answer; the connection closes once it is taken.
    pub(super) fn answer(&mut self, response: Arc<[u8]>, now: Instant) -> Next {
        self.stage = Stage::Writing {
            response,
            written: 0,
        };
        self.deadline = now + ANSWER_DEADLINE;
        self.write_some()
    }

    /// Its deadline has passed: a client still sending its request is told so (408, as much
    /// as the socket takes at once) before the connection closes.
    pub(super) fn time_out(&mut self) {
        if self.is_reading() {
            let _ = self.stream.write(&http::request_timeout());
        }
    }

    /// Writes what the socket takes, until it takes no more.
    pub(super) fn write_some(&mut self) -> Next {
        let Stage::Writing { response, written } = &mut self.stage else {
            return Next::Keep;
        };
        loop {
            let Some(rest) = response.get(*written..).filter(|rest| !rest.is_empty()) else {
                // Everything is written: FIN after the last byte, then close.
                let _ = self.stream.shutdown(Shutdown::Write);
                return Next::Close;
            };
            match self.stream.write(rest) {
                Ok(0) => return Next::Close,
                Ok(n) => *written += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Next::Keep,
                Err(_) => return Next::Close,
            }
        }
    }
}
