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
    /// What waits for the client.
    outbox: Outbox,
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
            outbox: Outbox::new(Instant::now()),
            waiting_for_writable: false,
        }
    }

    /// Whether a new line of `unit` from `label`'s `stream` goes to this client.
    pub(super) fn wants(&self, unit: &str, label: &str, stream: Stream) -> bool {
        self.follow && wanted(&self.unit, &self.filter, (unit, label, stream))
    }

    /// The answer's header and history have arrived: they go first.
    pub(super) fn set_history(&mut self, header: Vec<u8>, history: Vec<Vec<u8>>) {
        self.outbox.set_history(header, history, Instant::now());
    }

    /// Queues new lines (each ending with a newline), each skipped and counted when too
    /// much waits already.
    pub(super) fn offer_lines(&mut self, lines: &[u8]) {
        self.outbox.offer_lines(lines);
    }

    /// History bytes still held for this client.
    pub(super) fn held(&self) -> usize {
        self.outbox.held()
    }

    /// Whether something waits for the client.
    pub(super) fn has_output(&self) -> bool {
        self.outbox.has_output()
    }

    /// When the client is cut off if it takes nothing until then.
    pub(super) fn deadline(&self) -> Option<Instant> {
        self.outbox.deadline()
    }

    /// Writes what it can without blocking.
    pub(super) fn flush(&mut self, now: Instant) -> Flushed {
        while let Some(pending) = self.outbox.next_bytes() {
            match (&self.socket).write(pending) {
                Ok(0) => return Flushed::Done,
                Ok(n) => self.outbox.sent(n, now),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Flushed::Open,
                Err(_) => return Flushed::Done,
            }
        }
        if self.follow || !self.outbox.history_ready {
            Flushed::Open
        } else {
            Flushed::Done
        }
    }

    /// A last line for a client that is dropped, if its socket has room for it (it is never
    /// waited for).
    pub(super) fn goodbye(&mut self, why: &str) {
        let _ = (&self.socket).write(&self.outbox.goodbye(why));
    }
}

/// Whether a client of `unit` with `filter` takes a new line of `line_unit` from `label`'s
/// `stream`.
fn wanted(
    unit: &str,
    filter: &LineFilter,
    (line_unit, label, stream): (&str, &str, Stream),
) -> bool {
    unit == line_unit
        && filter.label.as_deref().is_none_or(|l| l == label)
        && filter.stream.as_deref().is_none_or(|s| s == stream.name())
}

/// What waits for one client, without the socket: the header and history first, then the
/// new lines (bounded by [`LIVE_QUEUE`], the rest counted), and when it last took something.
#[derive(Debug)]
struct Outbox {
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
}

impl Outbox {
    fn new(now: Instant) -> Outbox {
        Outbox {
            history_ready: false,
            history: VecDeque::new(),
            history_bytes: 0,
            out: Vec::new(),
            sent: 0,
            live: Vec::new(),
            skipped: 0,
            last_progress: now,
        }
    }

    fn set_history(&mut self, header: Vec<u8>, history: Vec<Vec<u8>>, now: Instant) {
        self.history_bytes = history.iter().map(Vec::len).sum();
        self.history = history.into();
        self.out = header;
        self.sent = 0;
        self.history_ready = true;
        self.last_progress = now;
    }

    fn offer(&mut self, line: &[u8]) {
        // Once one is skipped, so is every later line until the queue is taken: a shorter
        // line that would still fit must not come before the count of those skipped.
        if self.skipped > 0 || self.live.len() + line.len() > LIVE_QUEUE {
            self.skipped += 1;
        } else {
            self.live.extend_from_slice(line);
        }
    }

    /// [`Self::offer`] for each line, in one go when all fit.
    fn offer_lines(&mut self, lines: &[u8]) {
        if self.skipped == 0 && self.live.len() + lines.len() <= LIVE_QUEUE {
            self.live.extend_from_slice(lines);
        } else {
            for line in lines.split_inclusive(|&b| b == b'\n') {
                self.offer(line);
            }
        }
    }

    fn held(&self) -> usize {
        self.history_bytes + self.out.len()
    }

    fn has_output(&self) -> bool {
        self.history_ready
            && (self.sent < self.out.len()
                || !self.history.is_empty()
                || !self.live.is_empty()
                || self.skipped > 0)
    }

    fn deadline(&self) -> Option<Instant> {
        self.has_output().then(|| self.last_progress + CUT_OFF)
    }

    /// The bytes to write next (refilled from the history, then the new lines), or `None`
    /// when nothing waits or the history has not arrived.
    fn next_bytes(&mut self) -> Option<&[u8]> {
        if !self.history_ready || (self.sent >= self.out.len() && !self.refill()) {
            return None;
        }
        self.out.get(self.sent..)
    }

    /// `n` bytes of [`Self::next_bytes`] went out at `now`.
    fn sent(&mut self, n: usize, now: Instant) {
        self.sent += n;
        self.last_progress = now;
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
            let mark = crate::protocol::skipped_lines_mark(self.skipped);
            self.skipped = 0;
            self.out.extend_from_slice(mark.as_bytes());
        }
        !self.out.is_empty()
    }

    /// The last line for a client that is dropped: on a line of its own, even when it is cut
    /// off in the middle of one.
    fn goodbye(&self, why: &str) -> Vec<u8> {
        let mut line = Vec::new();
        let unfinished = self.sent > 0 && self.out.get(self.sent - 1) != Some(&b'\n');
        if unfinished {
            line.push(b'\n');
        }
        line.extend_from_slice(format!("[clusterd: {why}]\n").as_bytes());
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Takes everything the outbox has, `at_most` bytes per write.
    fn drain(outbox: &mut Outbox, at_most: usize) -> Vec<u8> {
        let mut got = Vec::new();
        while let Some(bytes) = outbox.next_bytes() {
            let n = bytes.len().min(at_most);
            got.extend_from_slice(&bytes[..n]);
            outbox.sent(n, Instant::now());
        }
        got
    }

    #[test]
    fn nothing_goes_out_before_the_history_and_new_lines_follow_it() {
        let mut outbox = Outbox::new(Instant::now());
        outbox.offer(b"new 1\n");
        assert!(!outbox.has_output(), "waits for the history");
        assert_eq!(outbox.next_bytes(), None);
        assert_eq!(
            outbox.deadline(),
            None,
            "no cut-off while the history is read"
        );
        outbox.set_history(
            b"{header}\n".to_vec(),
            vec![b"old 1\n".to_vec(), b"old 2\n".to_vec()],
            Instant::now(),
        );
        assert_eq!(outbox.held(), 9 + 12);
        outbox.offer(b"new 2\n");
        assert!(outbox.has_output());
        assert_eq!(
            drain(&mut outbox, 3),
            b"{header}\nold 1\nold 2\nnew 1\nnew 2\n".to_vec()
        );
        assert!(!outbox.has_output());
        assert_eq!(outbox.held(), 0);
        assert_eq!(outbox.deadline(), None, "nothing waits: never cut off");
    }

    #[test]
    fn history_goes_out_in_chunks() {
        let mut outbox = Outbox::new(Instant::now());
        let line = vec![b'h'; 1000];
        outbox.set_history(Vec::new(), vec![line; 1000], Instant::now());
        let first = outbox.next_bytes().map(<[u8]>::len).unwrap_or(0);
        assert!((CHUNK..CHUNK + 1000).contains(&first), "{first}");
        assert_eq!(drain(&mut outbox, usize::MAX).len(), 1_000_000);
    }

    #[test]
    fn new_lines_beyond_the_queue_are_skipped_and_counted() {
        let mut outbox = Outbox::new(Instant::now());
        outbox.set_history(Vec::new(), Vec::new(), Instant::now());
        let line = vec![b'n'; 1023];
        let mut line = line;
        line.push(b'\n');
        for _ in 0..LIVE_QUEUE / 1024 {
            outbox.offer(&line);
        }
        outbox.offer(&line);
        outbox.offer(b"x\n");
        let got = drain(&mut outbox, usize::MAX);
        assert_eq!(
            got.len(),
            LIVE_QUEUE + "[clusterctl: 2 lines skipped]\n".len()
        );
        assert!(got.ends_with(b"n\n[clusterctl: 2 lines skipped]\n"));
        // A short line after a skipped one is skipped too: the count comes where they were.
        let mut nearly = Outbox::new(Instant::now());
        nearly.set_history(Vec::new(), Vec::new(), Instant::now());
        nearly.offer(&vec![b'q'; LIVE_QUEUE - 10]);
        nearly.offer(b"a line too long\n");
        nearly.offer(b"done\n");
        let got = drain(&mut nearly, usize::MAX);
        assert!(
            got.ends_with(b"q[clusterctl: 2 lines skipped]\n"),
            "{:?}",
            String::from_utf8_lossy(&got[got.len() - 40..])
        );
        // Room again once taken.
        outbox.offer(b"after\n");
        assert_eq!(drain(&mut outbox, usize::MAX), b"after\n".to_vec());
    }

    #[test]
    fn lines_offered_together_are_queued_or_skipped_as_one_by_one() {
        let (mut first, mut rest) = (Vec::new(), Vec::new());
        for i in 0..3000 {
            let batch = if i < 1000 { &mut first } else { &mut rest };
            batch.extend_from_slice(format!("line {i} {}\n", "x".repeat(i % 300)).as_bytes());
        }
        let (mut together, mut one_by_one) =
            (Outbox::new(Instant::now()), Outbox::new(Instant::now()));
        for outbox in [&mut together, &mut one_by_one] {
            outbox.set_history(Vec::new(), Vec::new(), Instant::now());
            outbox.offer(&vec![b'q'; LIVE_QUEUE - 1000]);
        }
        together.offer_lines(&first);
        together.offer_lines(&rest);
        for line in first
            .split_inclusive(|&b| b == b'\n')
            .chain(rest.split_inclusive(|&b| b == b'\n'))
        {
            one_by_one.offer(line);
        }
        assert_eq!(
            drain(&mut together, usize::MAX),
            drain(&mut one_by_one, usize::MAX)
        );
    }

    #[test]
    fn a_client_that_takes_nothing_is_cut_off_after_cut_off() {
        let t0 = Instant::now();
        let mut outbox = Outbox::new(t0);
        outbox.set_history(Vec::new(), Vec::new(), t0);
        outbox.offer(b"line\n");
        assert_eq!(outbox.deadline(), Some(t0 + CUT_OFF));
        let later = t0 + Duration::from_secs(3);
        let n = outbox.next_bytes().map_or(0, |b| b.len().min(2));
        outbox.sent(n, later);
        assert_eq!(
            outbox.deadline(),
            Some(later + CUT_OFF),
            "progress moves it"
        );
        // Cut off mid-line: the goodbye starts a line of its own.
        assert_eq!(outbox.goodbye("bye"), b"\n[clusterd: bye]\n".to_vec());
        drain(&mut outbox, usize::MAX);
        assert_eq!(outbox.goodbye("bye"), b"[clusterd: bye]\n".to_vec());
    }

    #[test]
    fn followers_get_their_units_lines_by_instance_and_stream() {
        let all = LineFilter::default();
        assert!(wanted("web", &all, ("web", "web[0]", Stream::Out)));
        assert!(wanted("web", &all, ("web", "web[1]", Stream::Clusterd)));
        assert!(!wanted("web", &all, ("api", "api[0]", Stream::Out)));
        let one = LineFilter {
            label: Some("web[1]".into()),
            stream: Some("err".into()),
        };
        assert!(wanted("web", &one, ("web", "web[1]", Stream::Err)));
        assert!(!wanted("web", &one, ("web", "web[1]", Stream::Out)));
        assert!(!wanted("web", &one, ("web", "web[0]", Stream::Err)));
    }
}
