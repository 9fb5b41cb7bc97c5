//! A `clusterctl logs` client as the log thread serves it: its history, then (with
//! `--follow`) the new lines, written without ever blocking the thread that drains the
//! instances' pipes.
//!
//! - The socket is non-blocking; what the client has not taken waits here and goes out when
//!   the socket is writable again (EPOLLOUT).
//! - History goes out in chunks of [`CHUNK`], so a huge answer is not copied at once.
//! - New lines wait behind the history, at most [`LIVE_QUEUE`] bytes of them: beyond that
//!   they are skipped and counted, and the client is told how many.
//! - A client that takes nothing for [`CUT_OFF`] while something waits for it is dropped
//!   (told why, if its socket has room for one more line): never waited for.

use std::collections::VecDeque;
use std::io::{ErrorKind, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use super::history::LineFilter;
use super::line_format::Stream;

/// New lines a client may have waiting before lines are skipped.
pub(super) const LIVE_QUEUE: usize = 256 * 1024;
/// How much history is moved into the outgoing buffer at a time.
const CHUNK: usize = 256 * 1024;
/// How long a client may take nothing while something waits for it.
pub(super) const CUT_OFF: Duration = Duration::from_secs(10);

pub(super) struct LogClient {
    pub(super) socket: UnixStream,
    pub(super) unit: String,
    /// Who asked (the kernel's word, `SO_PEERCRED`), for the per-user share of clients.
    pub(super) uid: u32,
    filter: LineFilter,
    /// `--follow`: new lines after the history; without it, the client is done (closed)
    /// once the history is out.
    pub(super) follow: bool,
    /// False until the history, read on a thread of its own, has arrived: until then nothing
    /// is written (new lines wait behind it).
    history_ready: bool,
    /// History lines not yet moved to `out`, oldest first, and their size.
    history: VecDeque<Vec<u8>>,
    history_bytes: usize,
    /// What is being written, and how much of it went out.
    out: Vec<u8>,
    sent: usize,
    /// New lines behind the history.
    live: Vec<u8>,
    /// New lines left out since the last ones that went out.
    skipped: u64,
    /// When the client last took something (or was served).
    last_progress: Instant,
    /// Whether the epoll interest includes EPOLLOUT.
    pub(super) waiting_for_writable: bool,
}

/// What a flush left.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Flushed {
    /// Something still waits (the socket is full) or the client follows.
    Open,
    /// Everything went out and the client does not follow, or the client is gone: close it.
    Done,
}

impl LogClient {
    pub(super) fn new(
        socket: UnixStream,
        (unit, uid): (String, u32),
        filter: LineFilter,
        follow: bool,
    ) -> LogClient {
        LogClient {
            socket,
            unit,
            uid,
            filter,
            follow,
            history_ready: false,
            history: VecDeque::new(),
            history_bytes: 0,
            out: Vec::new(),
            sent: 0,
            live: Vec::new(),
            skipped: 0,
            last_progress: Instant::now(),
            waiting_for_writable: false,
        }
    }

    /// Whether a new line of `unit` from `label`'s `stream` goes to this client.
    pub(super) fn wants(&self, unit: &str, label: &str, stream: Stream) -> bool {
        self.follow
            && self.unit == unit
            && self.filter.label.as_deref().is_none_or(|l| l == label)
            && self
                .filter
                .stream
                .as_deref()
                .is_none_or(|s| s == stream.name())
    }

    /// The answer's header and history have arrived: they go first.
    pub(super) fn set_history(&mut self, header: Vec<u8>, history: Vec<Vec<u8>>) {
        self.history_bytes = history.iter().map(Vec::len).sum();
        self.history = history.into();
        self.out = header;
        self.sent = 0;
        self.history_ready = true;
        self.last_progress = Instant::now();
    }

    /// Queues a new line, or counts it as skipped when too much waits already.
    pub(super) fn offer(&mut self, line: &[u8]) {
        if self.live.len() + line.len() > LIVE_QUEUE {
            self.skipped += 1;
        } else {
            self.live.extend_from_slice(line);
        }
    }

    /// History bytes still held for this client.
    pub(super) fn held(&self) -> usize {
        self.history_bytes + self.out.len()
    }

    /// Whether something waits for the client.
    pub(super) fn has_output(&self) -> bool {
        self.history_ready && self.has_bytes()
    }

    fn has_bytes(&self) -> bool {
        self.sent < self.out.len()
            || !self.history.is_empty()
            || !self.live.is_empty()
            || self.skipped > 0
    }

    /// When the client is cut off if it takes nothing until then.
    pub(super) fn deadline(&self) -> Option<Instant> {
        self.has_output().then(|| self.last_progress + CUT_OFF)
    }

    /// Writes what it can without blocking.
    pub(super) fn flush(&mut self, now: Instant) -> Flushed {
        if !self.history_ready {
            return Flushed::Open;
        }
        loop {
            if self.sent >= self.out.len() && !self.refill() {
                break;
            }
            let pending = self.out.get(self.sent..).unwrap_or_default();
            match (&self.socket).write(pending) {
                Ok(0) => return Flushed::Done,
                Ok(n) => {
                    self.sent += n;
                    self.last_progress = now;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Flushed::Open,
                Err(_) => return Flushed::Done,
            }
        }
        if self.follow {
            Flushed::Open
        } else {
            Flushed::Done
        }
    }

    /// Moves the next bytes to send into `out`: history first, then new lines (with the
    /// count of skipped ones). False when nothing waits.
    fn refill(&mut self) -> bool {
        self.out.clear();
        self.sent = 0;
        while self.out.len() < CHUNK {
            let Some(line) = self.history.pop_front() else {
                break;
            };
            self.history_bytes = self.history_bytes.saturating_sub(line.len());
            self.out.extend_from_slice(&line);
        }
        if !self.out.is_empty() {
            return true;
        }
        std::mem::swap(&mut self.out, &mut self.live);
        if self.skipped > 0 {
            let mark = format!("[clusterctl: {} lines skipped]\n", self.skipped);
            self.skipped = 0;
            self.out.extend_from_slice(mark.as_bytes());
        }
        !self.out.is_empty()
    }

    /// A last line for a client that is dropped, if its socket has room for it (it is never
    /// waited for).
    pub(super) fn goodbye(&mut self, why: &str) {
        let mut line = Vec::new();
        let unfinished = self.sent > 0 && self.out.get(self.sent - 1) != Some(&b'\n');
        if unfinished {
            line.push(b'\n');
        }
        line.extend_from_slice(format!("[clusterd: {why}]\n").as_bytes());
        let _ = (&self.socket).write(&line);
    }
}
