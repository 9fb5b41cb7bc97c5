//! The log thread: reads every captured instance's stdout and stderr pipes with one epoll,
//! frames lines, and writes them — to the unit's file (with rotation) or to clusterd's own
//! stdout/stderr — and to the `clusterctl logs --follow` clients.
//!
//! - **Nothing lost**: a pipe is read until end-of-file (an instance's last words included;
//!   clusterd waits for them at exit), a line longer than 64 KiB is written in pieces marked
//!   `+`, and a last line without a newline is written when the pipe closes or after
//!   [`PARTIAL_FLUSH`] (the framing: [`super::framing`]).
//! - **Backpressure, not loss**: writes block this thread (never the supervisor loop, the
//!   control socket or the worker I/O thread). When a unit's file cannot be written (disk
//!   full, read-only), its pipes are not read until a retry (every [`RETRY_EVERY`]) succeeds:
//!   its instances block in `write()`, other units go on, and clusterd's memory stays bounded.
//!   A read's formatted lines go into one buffer lent to the unit being written and taken
//!   back once they are written: memory does not grow with the number of units that once had
//!   a burst.
//! - **Clients never slow capture** ([`super::log_client`]): `clusterctl logs` sockets are
//!   non-blocking, new lines wait in a bounded queue (skipped and counted beyond it), and a
//!   client that takes nothing for a while is dropped. A history is read on a thread of its
//!   own (two at a time, each within its share of a memory budget) up to where the unit's
//!   file stood when the client asked, and every later line is offered to the client as it
//!   comes: the two meet exactly, and no unit's pipes ever wait for a history.
//! - **No panic takes it down**: every slice is checked, and each event is handled under a
//!   [`ThreadGuard`] that drops only the source, client or command that panicked.
//! - **Idle stays idle**: the thread sleeps in `epoll_wait` without a timeout unless a partial
//!   line or a stalled unit is waiting.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{self, ErrorKind, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError};
use log::{info, warn};
use nix::sys::epoll::{Epoll, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::eventfd::EventFd;

use super::framing::{pieces, Frame, LineFramer};
use super::history::{last_lines, LineFilter};
use super::journal::{self, JournalLink, NotSent};
use super::line_format::{push_prefix, Stamp, Stream};
use super::local_clock::LocalClock;
use super::log_client::{Flushed, LogClient, CUT_OFF};
use super::log_dir::LogDir;
use super::unit_log_file::{written_before, Boundary, UnitLogFile};
use super::{CaptureSettings, Command, LogsQuery, Shared};
use crate::daemon::thread_guard::ThreadGuard;
use crate::log_limit::{LogLimit, Verdict};
use crate::protocol::{LogFilePosition, LogPosition, Response, MAX_LOG_LINES};
use crate::unit::{LogStream, LogTo};

/// One read from a pipe.
/// A quarter of a grown pipe: what is read and formatted stays in the CPU's cache on its way
/// to the file (measured against 64 KiB and 1 MiB reads: the least CPU per byte).
const READ_SIZE: usize = 256 * 1024;
/// A pipe seen full is grown to this (the default `/proc/sys/fs/pipe-max-size`), so that a
/// program writing fast is woken less often.
const GROWN_PIPE: libc::c_int = 1 << 20;
/// Pipes grown at most (16 MiB of the kernel's memory): a quarter of what
/// `/proc/sys/fs/pipe-user-pages-soft` lets an unprivileged user hold, beyond which the kernel
/// gives that user's new pipes, the instances' included, a single page.
const GROWN_PIPES: usize = 16;
/// A sink keeps at most this much room for its lines once they are written; a larger buffer
/// goes back to the thread's one spare ([`CaptureThread::spare`]).
const KEEP_PENDING: usize = 64 * 1024;
/// A partial line (no newline yet) is written after this.
const PARTIAL_FLUSH: Duration = Duration::from_secs(1);
/// How long journal units' lines wait for journald (within the backlog) before they go to
/// their files, and how often journald is tried while they wait or go to files.
const JOURNAL_GRACE: Duration = Duration::from_secs(10);
const JOURNAL_RETRY_WAITING: Duration = Duration::from_millis(100);
const JOURNAL_RETRY_FALLBACK: Duration = Duration::from_secs(1);
/// How often a unit whose file cannot be written is retried.
const RETRY_EVERY: Duration = Duration::from_secs(1);
/// `clusterctl logs` clients served at once (following, or still taking their history).
const MAX_CLIENTS: usize = 64;
/// Of [`MAX_CLIENTS`], the places only root and clusterd's own user may take, and the most
/// any other user may hold: one user's script that follows every unit cannot lock the
/// operator out of `clusterctl logs` (as [`crate::daemon::control_server`] keeps control
/// slots).
const PRIVILEGED_CLIENTS: usize = 8;
const MAX_CLIENTS_PER_UID: usize = 16;
/// History one answer may hold in clusterd's memory until the client has taken it, and all
/// answers together: beyond, the oldest lines are left out (and the client is told).
const HISTORY_PER_CLIENT: usize = 32 * 1024 * 1024;
const HISTORY_BUDGET: usize = 64 * 1024 * 1024;
/// History reads under way at once; the others wait their turn.
const HISTORY_READS: usize = 2;
/// The least share of [`HISTORY_BUDGET`] a read starts with: with less free, it waits until
/// other clients have taken theirs.
const HISTORY_LEAST: usize = 1024 * 1024;

/// A `clusterctl logs` client's history, to be read on a thread of its own.
struct HistoryRead {
    unit: String,
    client: u64,
    count: usize,
    /// The unit's files that existed when the client asked, and where each stood then.
    files: Vec<(LogDir, String, Boundary)>,
    filter: LineFilter,
    /// Every line after this position, instead of the last `count`.
    after: Option<LogPosition>,
}
/// How long clusterd waits at exit for pipes still held open (by leftovers of instances).
const FINISH_DEADLINE: Duration = Duration::from_secs(3);

const WAKE_TOKEN: u64 = 0;

struct Source {
    pipe: File,
    unit: String,
    label: String,
    stream: Stream,
    /// Bytes after the last newline, and since when they wait.
    framer: LineFramer,
    /// The pipe's size: a read of (nearly) this much found it full.
    capacity: usize,
    /// Whether growing it was tried (once is enough).
    grow_tried: bool,
    /// Taken out of the epoll while its unit's file cannot be written.
    paused: bool,
    /// Not read until its instance's start is noted.
    gated: bool,
}

/// A journal unit's line that journald has not taken yet: enough to write it to the unit's
/// file instead.
struct Waiting {
    unit: String,
    label: String,
    stream: Stream,
    continued: bool,
    stamp: Stamp,
    bytes: Vec<u8>,
}

/// One file of a unit (its only one, or one of its streams' or instances'), and the lines
/// formatted for it that are not written yet.
struct Sink {
    /// The log directory, or the checked directory of an absolute `file`/`stdout`/`stderr`.
    dir: LogDir,
    name: String,
    file: Option<UnitLogFile>,
    /// Formatted lines not yet written.
    pending: Vec<u8>,
}

struct UnitLog {
    settings: CaptureSettings,
    /// Its files, found as lines come ([`route`]).
    sinks: Vec<Sink>,
    /// Each instance's sink for stdout and for stderr (clusterd's events go with stdout);
    /// `None`: discarded.
    routes: HashMap<String, [Option<usize>; 2]>,
    /// Why the file cannot be written, and when to try again.
    stalled: Option<(String, Instant)>,
    /// A rotation that fails would be tried (and warned about) at every line.
    rotate_warnings: LogLimit,
}

pub(super) struct CaptureThread {
    epoll: Epoll,
    wake: Arc<EventFd>,
    commands: Receiver<Command>,
    /// For the history threads to hand their result back.
    own_commands: Sender<Command>,
    shared: Arc<Shared>,
    sources: HashMap<u64, Source>,
    /// Journal units' entries, and those journald has not taken yet.
    journal: JournalLink<Waiting>,
    /// Since when journald takes no entries.
    journal_down: Option<Instant>,
    /// Journal units write to their files until journald is back.
    journal_fallback: bool,
    /// When to try journald again.
    journal_retry: Option<Instant>,
    /// Each instance's pid (for its journal entries), by label.
    pids: HashMap<String, i32>,
    /// `clusterctl logs` clients: history still going out, or following.
    clients: HashMap<u64, LogClient>,
    /// Bytes of history the reads under way may hold (each read's share, taken when it
    /// starts, given back when it is handed over): part of [`HISTORY_BUDGET`].
    history_reserved: usize,
    /// History reads not started yet, and how many run.
    waiting_reads: VecDeque<HistoryRead>,
    running_reads: usize,
    units: HashMap<String, UnitLog>,
    next_token: u64,
    buffer: Vec<u8>,
    /// The prefix of the lines being written, made once per read.
    prefix: Vec<u8>,
    /// The one large buffer (a read's lines, formatted) lent to the sink that formats a read's
    /// whole lines and taken back once they are written: clusterd holds one such buffer, not
    /// one per unit that ever had a burst (40 units that each wrote 2 MB once kept 9 MiB).
    spare: Vec<u8>,
    /// Local time for units with a `timestamp_format`.
    clock: LocalClock,
    /// The directories of absolute log paths, checked and held open once.
    dirs: HashMap<PathBuf, LogDir>,
    console_out: Vec<u8>,
    console_err: Vec<u8>,
    finish_by: Option<Instant>,
}

impl CaptureThread {
    pub(super) fn new(
        epoll: Epoll,
        wake: Arc<EventFd>,
        (own_commands, commands): (Sender<Command>, Receiver<Command>),
        shared: Arc<Shared>,
    ) -> Self {
        CaptureThread {
            epoll,
            wake,
            own_commands,
            commands,
            shared,
            sources: HashMap::new(),
            clients: HashMap::new(),
            history_reserved: 0,
            waiting_reads: VecDeque::new(),
            running_reads: 0,
            journal: JournalLink::new(Path::new(journal::JOURNAL_SOCKET)),
            journal_down: None,
            journal_fallback: false,
            journal_retry: None,
            pids: HashMap::new(),
            units: HashMap::new(),
            next_token: WAKE_TOKEN + 1,
            buffer: vec![0; READ_SIZE],
            prefix: Vec::new(),
            spare: Vec::new(),
            clock: LocalClock::default(),
            dirs: HashMap::new(),
            console_out: Vec::new(),
            console_err: Vec::new(),
            finish_by: None,
        }
    }

    pub(super) fn run(mut self) {
        let mut ready = vec![EpollEvent::empty(); 64];
        let mut guard = ThreadGuard::new("logs");
        loop {
            if let Some(deadline) = self.finish_by {
                if self.sources.is_empty() || Instant::now() >= deadline {
                    self.finish();
                    return;
                }
            }
            let timeout = self.timeout();
            let count = match self.epoll.wait(&mut ready, timeout) {
                Ok(n) => n,
                Err(nix::Error::EINTR) => continue,
                Err(e) => {
                    log::error!("log thread: epoll_wait failed: {e}");
                    return;
                }
            };
            // Commands first: a line for a new source may come with the same wake-up.
            for event in ready.iter().take(count) {
                if event.data() == WAKE_TOKEN {
                    let _ = self.wake.read();
                }
            }
            if !self.apply_commands(&mut guard) {
                self.finish();
                return;
            }
            for event in ready.iter().take(count) {
                let token = event.data();
                if token == WAKE_TOKEN {
                    continue;
                }
                if self.sources.contains_key(&token) {
                    if let Err(caught) = guard.run(|| self.read_source(token)) {
                        let what = self.drop_source(token);
                        guard.report(caught, &format!("reading {what}"), "that pipe is closed");
                    }
                } else if self.clients.contains_key(&token) {
                    let flags = event.events();
                    let result = guard.run(|| {
                        if flags.intersects(
                            EpollFlags::EPOLLIN
                                | EpollFlags::EPOLLRDHUP
                                | EpollFlags::EPOLLHUP
                                | EpollFlags::EPOLLERR,
                        ) {
                            // A client sends nothing after its request: this is its goodbye.
                            self.drop_client(token);
                        } else if flags.contains(EpollFlags::EPOLLOUT) {
                            self.flush_client(token);
                        }
                    });
                    if let Err(caught) = result {
                        self.drop_client(token);
                        guard.report(caught, "writing to a log client", "that client is dropped");
                    }
                }
            }
            let housekeeping = guard.run(|| {
                self.retry_journal();
                self.cut_off_clients();
                self.flush_old_partials();
                self.retry_stalled();
                self.write_console();
                self.start_history_reads();
            });
            if let Err(caught) = housekeeping {
                guard.report(
                    caught,
                    "flushing partial lines, retrying stalled units or writing the console",
                    "nothing is dropped",
                );
            }
        }
    }

    /// Takes the source out (after a panic while reading it): its instance's output is lost
    /// from now on (it gets EPIPE or SIGPIPE), every other source goes on. Says which it was.
    fn drop_source(&mut self, token: u64) -> String {
        match self.sources.remove(&token) {
            Some(source) => {
                let _ = self.epoll.delete(source.pipe.as_fd());
                format!("{}'s {}", source.label, source.stream.name())
            }
            None => "a pipe".to_string(),
        }
    }

    /// Sleep until woken, unless a partial line or a stalled unit is waiting, or clusterd is
    /// exiting.
    fn timeout(&self) -> EpollTimeout {
        let now = Instant::now();
        let partial = self
            .sources
            .values()
            .filter_map(|s| s.framer.waiting_since().map(|since| since + PARTIAL_FLUSH));
        let stalled = self
            .units
            .values()
            .filter_map(|u| u.stalled.as_ref().map(|(_, at)| *at));
        let clients = self.clients.values().filter_map(LogClient::deadline);
        let journal = self.journal_down.map(|_| {
            self.journal_retry
                .unwrap_or_else(|| now + JOURNAL_RETRY_WAITING)
        });
        let next = partial
            .chain(stalled)
            .chain(journal)
            .chain(clients)
            .chain(self.finish_by)
            .min();
        match next {
            None => EpollTimeout::NONE,
            Some(at) => {
                let ms = at.saturating_duration_since(now).as_millis().min(60_000) as u16;
                EpollTimeout::from(ms.max(1))
            }
        }
    }

    /// Applies every waiting command, each under `guard`: a command whose handling panics is
    /// dropped (with the pipes or the client it carried). Returns false when clusterd has
    /// gone away without saying so.
    fn apply_commands(&mut self, guard: &mut ThreadGuard) -> bool {
        loop {
            match self.commands.try_recv() {
                Ok(command) => {
                    let what = command.name();
                    if let Err(caught) = guard.run(|| self.apply(command)) {
                        guard.report(
                            caught,
                            &format!("handling {what}"),
                            "that command is dropped",
                        );
                    }
                }
                Err(TryRecvError::Empty) => return true,
                Err(TryRecvError::Disconnected) => return false,
            }
        }
    }

    fn apply(&mut self, command: Command) {
        match command {
            Command::Capture {
                unit,
                label,
                settings,
                out,
                err,
            } => {
                self.configure(&unit, settings);
                self.add_source(&unit, &label, Stream::Out, out);
                self.add_source(&unit, &label, Stream::Err, err);
            }
            Command::Configure { unit, settings } => self.configure(&unit, settings),
            Command::Started {
                unit,
                label,
                pid,
                text,
            } => {
                self.pids.insert(label.clone(), pid);
                let to_file = self
                    .units
                    .get(&unit)
                    .is_some_and(|u| u.settings.to == LogTo::File);
                if to_file {
                    self.write_event(&unit, &label, &text);
                }
                self.ungate(&label);
            }
            Command::Abandon { label } => {
                self.sources.retain(|_, s| s.label != label);
            }
            Command::Event {
                unit,
                label,
                settings,
                text,
            } => {
                self.configure(&unit, settings);
                // What the instance wrote before (its last words before it exited, say)
                // goes first.
                self.drain_instance(&label);
                self.write_event(&unit, &label, &text);
            }
            Command::Serve { query, socket } => self.serve(query, socket),
            Command::History {
                client,
                lines,
                budget,
                cut_short,
                position,
            } => self.history_read(client, (lines, budget), (cut_short, position)),
            Command::Reopen => self.reopen_all(),
            Command::HandOver { reply, resume } => {
                let held = self.hand_over();
                let holding = held.is_ok();
                let _ = reply.send(held);
                if holding {
                    // Nothing is read until the exec (or, if it fails, until resumed).
                    let _ = resume.recv();
                }
            }
            Command::Adopt(pipes) => {
                for (settings, pipe, fd) in pipes {
                    self.adopt(settings, pipe, fd);
                }
            }
            Command::Finish => {
                self.finish_by = Some(Instant::now() + FINISH_DEADLINE);
            }
        }
    }

    /// `daemon-reexec`: everything read is written (to files and journald), and the pipes
    /// are listed with the unfinished line each has: what is still in them waits in the
    /// kernel for the new image.
    fn hand_over(&mut self) -> Result<Vec<super::HandedPipe>, String> {
        // What waits for a journald that does not take it goes to the units' files, now:
        // the new image would not have it.
        self.retry_journal();
        if self.journal_down.is_some() {
            self.fall_back_to_files();
        }
        let units: Vec<String> = self.units.keys().cloned().collect();
        for unit in &units {
            self.flush_unit(unit);
        }
        self.write_console();
        // A unit whose file cannot be written holds lines in memory: they would be lost.
        if let Some((unit, (problem, _))) = self
            .units
            .iter()
            .find_map(|(name, log)| log.stalled.as_ref().map(|s| (name, s)))
        {
            return Err(format!(
                "{unit}'s log cannot be written ({problem}): the lines clusterd holds for it would be lost"
            ));
        }
        Ok(self
            .sources
            .values()
            .map(|source| super::HandedPipe {
                unit: source.unit.clone(),
                label: source.label.clone(),
                stderr: source.stream == Stream::Err,
                fd: source.pipe.as_raw_fd(),
                partial: source.framer.partial().to_vec(),
            })
            .collect())
    }

    /// After `daemon-reexec`: a pipe of the old image, read on with its unfinished line.
    fn adopt(&mut self, settings: CaptureSettings, pipe: super::HandedPipe, fd: OwnedFd) {
        self.configure(&pipe.unit, settings);
        let stream = if pipe.stderr {
            Stream::Err
        } else {
            Stream::Out
        };
        self.add_source(&pipe.unit, &pipe.label, stream, fd);
        let token = self.next_token - 1;
        if let Some(source) = self.sources.get_mut(&token) {
            source.framer.resume(&pipe.partial, Instant::now());
        }
        // This source alone, by its token: looking for the label among every source would
        // make adopting 2000 pipes 4 million comparisons.
        self.ungate_source(token);
    }

    /// Writes clusterd's event `text` about `label` into the unit's file, now.
    fn write_event(&mut self, unit: &str, label: &str, text: &str) {
        let stamp = Stamp::now();
        self.emit(
            unit,
            label,
            Stream::Clusterd,
            text.as_bytes(),
            false,
            &stamp,
        );
        self.flush_unit(unit);
    }

    fn configure(&mut self, unit: &str, settings: CaptureSettings) {
        match self.units.get_mut(unit) {
            Some(log) => {
                for sink in &mut log.sinks {
                    if let Some(file) = &mut sink.file {
                        file.max_size = settings.max_size;
                        file.keep = settings.keep;
                    }
                    if !matches!(settings.to, LogTo::File | LogTo::Journal) {
                        sink.file = None;
                    }
                }
                if log.settings.log != settings.log {
                    // Found again by the new names; the old sinks keep what they have
                    // pending until it is written.
                    log.routes.clear();
                }
                log.settings = settings;
            }
            None => {
                self.units.insert(
                    unit.to_string(),
                    UnitLog {
                        settings,
                        sinks: Vec::new(),
                        routes: HashMap::new(),
                        stalled: None,
                        rotate_warnings: LogLimit::default(),
                    },
                );
            }
        }
    }

    fn add_source(&mut self, unit: &str, label: &str, stream: Stream, pipe: OwnedFd) {
        let token = self.next_token;
        self.next_token += 1;
        // Non-blocking: a drain before an event reads only what is there.
        let _ = nix::fcntl::fcntl(
            &pipe,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        );
        // SAFETY: F_GETPIPE_SZ on a pipe we own.
        let capacity = unsafe { libc::fcntl(pipe.as_raw_fd(), libc::F_GETPIPE_SZ) };
        let pipe = File::from(pipe);
        let source = Source {
            capacity: usize::try_from(capacity).unwrap_or(64 * 1024),
            pipe,
            unit: unit.to_string(),
            label: label.to_string(),
            stream,
            framer: LineFramer::default(),
            grow_tried: false,
            paused: false,
            gated: true,
        };
        self.sources.insert(token, source);
    }

    /// The sources of instance `label` are read from now on (unless their unit is stalled).
    fn ungate(&mut self, label: &str) {
        let tokens: Vec<u64> = self
            .sources
            .iter()
            .filter(|(_, source)| source.label == label)
            .map(|(&token, _)| token)
            .collect();
        for token in tokens {
            self.ungate_source(token);
        }
    }

    /// The source `token` is read from now on (unless its unit is stalled), if it was gated.
    fn ungate_source(&mut self, token: u64) {
        let Some(source) = self.sources.get_mut(&token) else {
            return;
        };
        if !source.gated {
            return;
        }
        source.gated = false;
        let stalled = self
            .units
            .get(&source.unit)
            .is_some_and(|u| u.stalled.is_some());
        if stalled {
            source.paused = true;
            return;
        }
        let event = EpollEvent::new(EpollFlags::EPOLLIN, token);
        if let Err(e) = self.epoll.add(source.pipe.as_fd(), event) {
            warn!(
                "{}: cannot capture its {}: {e}",
                source.label,
                source.stream.name()
            );
        }
    }

    /// Reads what is waiting in the pipes of the instance `label` (a bounded number of
    /// reads: a writer that goes on is read by the loop as usual).
    fn drain_instance(&mut self, label: &str) {
        let tokens: Vec<u64> = self
            .sources
            .iter()
            .filter(|(_, s)| s.label == label && !s.paused && !s.gated)
            .map(|(t, _)| *t)
            .collect();
        for token in tokens {
            for _ in 0..16 {
                if !self.read_source(token) {
                    break;
                }
            }
        }
    }

    /// Reads once from the source; false when there was nothing to read (or it closed).
    fn read_source(&mut self, token: u64) -> bool {
        if self.buffer.len() != READ_SIZE {
            // Taken by a read that panicked: an empty buffer would read as end-of-file.
            self.buffer = vec![0; READ_SIZE];
        }
        let Some(source) = self.sources.get_mut(&token) else {
            return false;
        };
        let n = loop {
            match source.pipe.read(&mut self.buffer) {
                Ok(n) => break n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
                Err(_) => break 0,
            }
        };
        let unit = source.unit.clone();
        let label = source.label.clone();
        let stream = source.stream;
        let stamp = Stamp::now();
        if n == 0 {
            // The instance (and everything it started) closed this output: its last line,
            // newline or not, is written now.
            let _ = self.epoll.delete(source.pipe.as_fd());
            if let Some(mut source) = self.sources.remove(&token) {
                source.framer.take_partial(false, |frame| {
                    self.emit_frame(&unit, &label, stream, frame, &stamp);
                });
            }
            self.flush_unit(&unit);
            return false;
        }
        if n + 4096 >= source.capacity && !source.grow_tried {
            self.grow_pipe(token);
        }
        let data = std::mem::take(&mut self.buffer);
        self.take_lines(
            token,
            &label,
            stream,
            &stamp,
            data.get(..n).unwrap_or_default(),
        );
        self.buffer = data;
        self.flush_unit(&unit);
        true
    }

    /// The source's pipe was found full: it is grown to [`GROWN_PIPE`] (once; at most
    /// [`GROWN_PIPES`] at a time), so that its writer is woken, and clusterd reads, less often.
    fn grow_pipe(&mut self, token: u64) {
        let grown = self
            .sources
            .values()
            .filter(|s| s.capacity >= GROWN_PIPE as usize)
            .count();
        let Some(source) = self.sources.get_mut(&token) else {
            return;
        };
        source.grow_tried = true;
        if grown < GROWN_PIPES {
            // SAFETY: F_SETPIPE_SZ on a pipe we own; failure (limits) leaves it as it was.
            let size =
                unsafe { libc::fcntl(source.pipe.as_raw_fd(), libc::F_SETPIPE_SZ, GROWN_PIPE) };
            if let Ok(size) = usize::try_from(size) {
                source.capacity = size;
            }
        }
    }

    /// Frames what was read from the source `token` ([`LineFramer`]) and hands the lines on.
    fn take_lines(&mut self, token: u64, label: &str, stream: Stream, stamp: &Stamp, read: &[u8]) {
        let Some(source) = self.sources.get_mut(&token) else {
            return;
        };
        let unit = source.unit.clone();
        // Out of the source while its lines go out (they need `self`); put back after.
        let mut framer = std::mem::take(&mut source.framer);
        framer.feed(read, Instant::now(), |frame| {
            self.emit_frame(&unit, label, stream, frame, stamp);
        });
        if let Some(source) = self.sources.get_mut(&token) {
            source.framer = framer;
        }
    }

    /// Hands one frame on: a run of whole lines in one go where it can
    /// ([`Self::append_whole_lines`]), else line by line.
    fn emit_frame(
        &mut self,
        unit: &str,
        label: &str,
        stream: Stream,
        frame: Frame<'_>,
        stamp: &Stamp,
    ) {
        if let Frame::Lines(lines) = frame {
            if self.append_whole_lines(unit, label, stream, stamp, lines) {
                return;
            }
        }
        frame.for_each_line(|line, continued| {
            self.emit_piece(unit, label, stream, line, continued, stamp);
        });
    }

    /// The common case, without a look-up, allocation or syscall per line: whole lines
    /// (`lines` ends with a newline) of a `file` unit, all fitting in the current file, each
    /// after one prefix made once; its followers are offered them in one go. False (nothing
    /// done) otherwise: then they go one by one through [`Self::emit_piece`].
    fn append_whole_lines(
        &mut self,
        unit: &str,
        label: &str,
        stream: Stream,
        stamp: &Stamp,
        lines: &[u8],
    ) -> bool {
        let Some(log) = self.units.get_mut(unit) else {
            return false;
        };
        if log.settings.to != LogTo::File || log.stalled.is_some() {
            return false;
        }
        let Some(index) = route(log, &self.shared.dir, &mut self.dirs, unit, label, stream) else {
            // Discarded (`/dev/null`).
            return true;
        };
        let Some(Sink {
            file: Some(file),
            pending,
            ..
        }) = log.sinks.get_mut(index)
        else {
            return false;
        };
        if pending.capacity() < self.spare.capacity() {
            // What is already pending (a line the read completed, an event) moves along.
            self.spare.clear();
            self.spare.extend_from_slice(pending);
            std::mem::swap(pending, &mut self.spare);
        }
        let prefix = &mut self.prefix;
        prefix.clear();
        let mut local = Vec::new();
        let stamp = log
            .settings
            .timestamps
            .then(|| stamp_text(&log.settings, &mut self.clock, stamp, &mut local));
        push_prefix(prefix, stamp, label, stream, false);
        // Formatted first, counted after: no second pass over the lines. No line is longer
        // than MAX_LINE here ([`Frame::Lines`]): none is cut.
        let start = pending.len();
        let mut from = 0;
        for newline in memchr::memchr_iter(b'\n', lines) {
            pending.extend_from_slice(prefix);
            pending.extend_from_slice(lines.get(from..=newline).unwrap_or_default());
            from = newline + 1;
        }
        if !file.fits(pending.len()) {
            // A rotation falls among them: line by line.
            pending.truncate(start);
            return false;
        }
        if !self.clients.is_empty() {
            self.offer_followers(unit, label, stream, index, start);
        }
        true
    }

    /// Adds one line (without its newline) of `unit` to where it goes; one longer than
    /// [`super::framing::MAX_LINE`] goes in pieces of that size, each but the last marked as continued.
    fn emit(
        &mut self,
        unit: &str,
        label: &str,
        stream: Stream,
        bytes: &[u8],
        continued: bool,
        stamp: &Stamp,
    ) {
        pieces(bytes, continued, &mut |frame| {
            self.emit_frame(unit, label, stream, frame, stamp);
        });
    }

    /// [`Self::emit`] for a line or piece of at most [`super::framing::MAX_LINE`] bytes.
    fn emit_piece(
        &mut self,
        unit: &str,
        label: &str,
        stream: Stream,
        bytes: &[u8],
        continued: bool,
        stamp: &Stamp,
    ) {
        let Some(log) = self.units.get_mut(unit) else {
            return;
        };
        // Kept for a journal unit's entries: they go to its file, timestamped, if journald
        // stays away.
        let when = *stamp;
        let to = destination(log.settings.to, self.journal_fallback);
        // A journal unit's lines in its file (journald gone) are timestamped, as file lines.
        let stamped = log.settings.timestamps || to != log.settings.to;
        let mut local = Vec::new();
        let stamp = stamped.then(|| stamp_text(&log.settings, &mut self.clock, stamp, &mut local));
        match to {
            LogTo::File => {
                let Some(index) = route(log, &self.shared.dir, &mut self.dirs, unit, label, stream)
                else {
                    return;
                };
                let (settings, stalled) = (&log.settings, log.stalled.is_some());
                let Some(sink) = log.sinks.get_mut(index) else {
                    return;
                };
                let start = sink.pending.len();
                push_prefix(&mut sink.pending, stamp, label, stream, continued);
                sink.pending.extend_from_slice(bytes);
                sink.pending.push(b'\n');
                // The line is the last `line_len` bytes of `pending`, whatever a rotation
                // writes and drains before it.
                let line_len = sink.pending.len() - start;
                if !stalled && sink.file.is_none() {
                    // Opened now, so that the first batch is rotated like any other; a
                    // failure stalls the unit at the next flush.
                    let _ = open_file(sink, settings);
                }
                if let (false, Some(file)) = (stalled, &mut sink.file) {
                    // Rotate between lines, counting what is pending as part of the file: the
                    // file stays within `max_size`, or holds a single longer line.
                    let rotate = file.is_full_for(start + line_len)
                        || (start > 0 && !file.fits(start + line_len));
                    if rotate {
                        rotate_before_last_line(
                            unit,
                            file,
                            &mut sink.pending,
                            start,
                            &mut log.rotate_warnings,
                        );
                    }
                }
                if !self.clients.is_empty() {
                    let from = sink.pending.len().saturating_sub(line_len);
                    self.offer_followers(unit, label, stream, index, from);
                }
            }
            LogTo::Console => {
                let out = if stream == Stream::Err {
                    &mut self.console_err
                } else {
                    &mut self.console_out
                };
                if let Some(stamp) = stamp {
                    out.extend_from_slice(stamp);
                    out.push(b' ');
                }
                out.extend_from_slice(label.as_bytes());
                out.extend_from_slice(if continued { b" + " } else { b" | " });
                out.extend_from_slice(bytes);
                out.push(b'\n');
            }
            LogTo::Journal => {
                let priority = if stream == Stream::Err {
                    journal::PRIORITY_ERR
                } else {
                    journal::PRIORITY_INFO
                };
                let pid = self.pids.get(label).copied();
                let entry = journal::entry(unit, pid, label, priority, bytes);
                let waiting = Waiting {
                    unit: unit.to_string(),
                    label: label.to_string(),
                    stream,
                    continued,
                    stamp: when,
                    bytes: bytes.to_vec(),
                };
                match self.journal.send(entry, waiting) {
                    Ok(()) => {}
                    Err(NotSent::Queued(e)) => {
                        if self.journal_down.is_none() {
                            warn!(
                                "journald does not take entries at {} ({e}); journal units' lines wait (up to {} MiB, {}s) and then go to their files",
                                self.journal.path().display(),
                                journal::BACKLOG_BYTES / (1024 * 1024),
                                JOURNAL_GRACE.as_secs()
                            );
                            self.journal_down = Some(Instant::now());
                        }
                    }
                    Err(NotSent::Full) => {
                        self.fall_back_to_files();
                        self.emit(unit, label, stream, bytes, continued, &Stamp::now());
                    }
                }
            }
            LogTo::Inherit => {}
        }
    }

    /// Writes what is pending for `unit`; a failure stalls the unit (its pipes are not read)
    /// until a retry succeeds.
    fn flush_unit(&mut self, unit: &str) {
        let Some(log) = self.units.get_mut(unit) else {
            return;
        };
        if destination(log.settings.to, self.journal_fallback) != LogTo::File
            || log.sinks.iter().all(|sink| sink.pending.is_empty())
            || log.stalled.is_some()
        {
            return;
        }
        if let Err(problem) = write_pending(log, &mut self.spare) {
            self.stall(unit, problem);
        }
    }

    fn stall(&mut self, unit: &str, problem: String) {
        let Some(log) = self.units.get_mut(unit) else {
            return;
        };
        warn!("{unit}: cannot write its log: {problem}; its output waits (its instances block in write) and clusterd retries every {}s", RETRY_EVERY.as_secs());
        log.stalled = Some((problem.clone(), Instant::now() + RETRY_EVERY));
        self.shared
            .set_problem(unit, Some(format!("cannot write: {problem}")));
        self.pause_sources(unit);
    }

    /// The unit's pipes are not read until [`Self::resume_sources`].
    fn pause_sources(&mut self, unit: &str) {
        let tokens: Vec<u64> = self
            .sources
            .iter()
            .filter(|(_, s)| s.unit == unit)
            .map(|(t, _)| *t)
            .collect();
        for token in tokens {
            self.pause_source(token);
        }
    }

    fn pause_source(&mut self, token: u64) {
        if let Some(source) = self.sources.get_mut(&token) {
            if !source.paused && !source.gated {
                source.paused = true;
                let _ = self.epoll.delete(source.pipe.as_fd());
            }
        }
    }

    fn retry_stalled(&mut self) {
        let now = Instant::now();
        let due: Vec<String> = self
            .units
            .iter()
            .filter(|(_, u)| u.stalled.as_ref().is_some_and(|(_, at)| *at <= now))
            .map(|(name, _)| name.clone())
            .collect();
        for unit in due {
            let Some(log) = self.units.get_mut(&unit) else {
                continue;
            };
            match write_pending(log, &mut self.spare) {
                Ok(()) => {
                    log.stalled = None;
                    info!("{unit}: its log is written again");
                    self.shared.set_problem(&unit, None);
                    self.resume_sources(&unit);
                }
                Err(problem) => {
                    log.stalled = Some((problem, now + RETRY_EVERY));
                }
            }
        }
    }

    /// While journald takes no entries: send what waits when it does again; after
    /// [`JOURNAL_GRACE`], write what waits to the units' files, and go on writing there until
    /// journald is back.
    fn retry_journal(&mut self) {
        let Some(since) = self.journal_down else {
            return;
        };
        let now = Instant::now();
        if self.journal_retry.is_some_and(|at| now < at) {
            return;
        }
        let back = if self.journal_fallback {
            journal_listens(self.journal.path())
        } else {
            self.journal.retry().is_ok()
        };
        if back {
            info!("journald takes entries again; journal units' lines go there again");
            self.journal_down = None;
            self.journal_retry = None;
            if self.journal_fallback {
                self.journal_fallback = false;
                for (name, log) in &self.units {
                    if log.settings.to == LogTo::Journal {
                        self.shared.set_problem(name, None);
                    }
                }
            }
            return;
        }
        if !self.journal_fallback && now.saturating_duration_since(since) >= JOURNAL_GRACE {
            self.fall_back_to_files();
        }
        let every = if self.journal_fallback {
            JOURNAL_RETRY_FALLBACK
        } else {
            JOURNAL_RETRY_WAITING
        };
        self.journal_retry = Some(now + every);
    }

    /// journald is gone too long (or its backlog is full): what waits for it goes to the
    /// units' files, in order, and so do their next lines until it is back.
    fn fall_back_to_files(&mut self) {
        if self.journal_fallback {
            return;
        }
        self.journal_fallback = true;
        self.journal_down.get_or_insert_with(Instant::now);
        self.journal_retry = Some(Instant::now() + JOURNAL_RETRY_FALLBACK);
        warn!(
            "journald has not taken entries for a while: journal units' lines go to their files in {} until it is back",
            self.shared.dir.path().display()
        );
        for waiting in self.journal.take_backlog() {
            self.emit(
                &waiting.unit,
                &waiting.label,
                waiting.stream,
                &waiting.bytes,
                waiting.continued,
                &waiting.stamp,
            );
        }
        let journal_units: Vec<String> = self
            .units
            .iter()
            .filter(|(_, u)| u.settings.to == LogTo::Journal)
            .map(|(name, _)| name.clone())
            .collect();
        for unit in journal_units {
            let path = self.units.get(&unit).map_or_else(
                || UnitLogFile::path_of(self.shared.dir.path(), &unit),
                |log| in_dir(self.shared.dir.path(), &first_file(&unit, &log.settings)),
            );
            self.shared.set_problem(
                &unit,
                Some(format!(
                    "journald is not reachable at {}; writing to {} until it is back",
                    self.journal.path().display(),
                    path.display()
                )),
            );
            self.flush_unit(&unit);
        }
    }

    /// Partial lines that waited long enough are written as pieces (`+`).
    fn flush_old_partials(&mut self) {
        let now = Instant::now();
        let due: Vec<u64> = self
            .sources
            .iter()
            .filter(|(_, s)| {
                s.framer
                    .waiting_since()
                    .is_some_and(|since| since + PARTIAL_FLUSH <= now)
            })
            .map(|(t, _)| *t)
            .collect();
        if due.is_empty() {
            return;
        }
        let stamp = Stamp::now();
        for token in due {
            let Some(source) = self.sources.get_mut(&token) else {
                continue;
            };
            if source.paused {
                continue;
            }
            let mut framer = std::mem::take(&mut source.framer);
            let (unit, label, stream) = (source.unit.clone(), source.label.clone(), source.stream);
            framer.take_partial(true, |frame| {
                self.emit_frame(&unit, &label, stream, frame, &stamp);
            });
            self.flush_unit(&unit);
        }
    }

    fn write_console(&mut self) {
        if !self.console_out.is_empty() {
            let _ = io::stdout().lock().write_all(&self.console_out);
            self.console_out.clear();
        }
        if !self.console_err.is_empty() {
            let _ = io::stderr().lock().write_all(&self.console_err);
            self.console_err.clear();
        }
    }

    fn reopen_all(&mut self) {
        let names: Vec<String> = self.units.keys().cloned().collect();
        for unit in names {
            let Some(log) = self.units.get_mut(&unit) else {
                continue;
            };
            let mut failed = None;
            for sink in &mut log.sinks {
                if let Some(file) = &mut sink.file {
                    match file.reopen() {
                        Ok(()) => info!("{unit}: reopened {}", file.path().display()),
                        Err(e) => {
                            sink.file = None;
                            failed = Some(format!("cannot reopen: {e}"));
                        }
                    }
                }
            }
            if let Some(problem) = failed {
                self.stall(&unit, problem);
            }
        }
    }

    /// Answers a `clusterctl logs` request. Nothing here waits for the client: the socket is
    /// non-blocking, and what it does not take at once goes out as it reads.
    fn serve(&mut self, query: LogsQuery, socket: UnixStream) {
        if socket.set_nonblocking(true).is_err() {
            return;
        }
        let to = self.units.get(&query.unit).map(|u| u.settings.to);
        let refusal = match to {
            Some(LogTo::Journal) => Some(format!(
                "{unit} logs to the journal: use `journalctl -t {unit}` (add -f to follow)",
                unit = query.unit
            )),
            Some(LogTo::Console) => Some(format!(
                "{} logs to clusterd's console (log.to = \"console\"): its output is where clusterd's is",
                query.unit
            )),
            Some(LogTo::Inherit) => Some(format!(
                "{} writes to clusterd's own stdout and stderr (log.to = \"inherit\"): nothing is kept",
                query.unit
            )),
            Some(LogTo::File) => None,
            None if UnitLogFile::exists(&self.shared.dir, &query.unit) => None,
            // As `status nosuch` says it.
            None => Some(format!("unknown unit {:?}", query.unit)),
        };
        if let Some(refusal) = refusal {
            return answer(&socket, &Response::failed(refusal));
        }
        let uid = nix::sys::socket::getsockopt(&socket, nix::sys::socket::sockopt::PeerCredentials)
            .map_or(u32::MAX, |peer| peer.uid());
        let clusterds_uid = nix::unistd::geteuid().as_raw();
        let served = self.clients.values().map(|c| c.uid);
        if let Some(why) = no_place_for(served, uid, clusterds_uid) {
            return answer(
                &socket,
                &Response::failed(format!("{why}; try again later")),
            );
        }
        // What is pending is part of the history.
        self.flush_unit(&query.unit);
        let filter = LineFilter {
            label: query.instance.map(|i| format!("{}[{i}]", query.unit)),
            stream: query.stream.clone(),
        };
        // From here on, every new line follows the history, waiting in the client's queue
        // until the history (read on a thread of its own) has gone out.
        let token = self.next_token;
        self.next_token += 1;
        let interest = EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP;
        if self
            .epoll
            .add(socket.as_fd(), EpollEvent::new(interest, token))
            .is_err()
        {
            return;
        }
        let unit = query.unit.clone();
        let client = LogClient::new(socket, (query.unit, uid), filter.clone(), query.follow);
        self.clients.insert(token, client);
        // The history ends where the file stands now; every line from here on is offered
        // to the client as it comes (see `offer_followers`), so nothing is missed or shown
        // twice, and the unit is never held while the history is read.
        let files = self.history_files(&unit);
        // With a position, every line after it (a re-exec's gap is short: the budget
        // bounds the rest).
        let count = match query.after {
            Some(_) => MAX_LOG_LINES,
            None => query.lines,
        };
        self.waiting_reads.push_back(HistoryRead {
            unit,
            client: token,
            count,
            files,
            filter,
            after: query.after,
        });
        self.start_history_reads();
    }

    /// Starts the waiting history reads that may run now: at most [`HISTORY_READS`] at a
    /// time, each holding at most its share of [`HISTORY_BUDGET`] (taken when it starts,
    /// given back when it is handed over), so that 64 clients asking at once never make
    /// clusterd read 64 large histories into memory together; and none while less than
    /// [`HISTORY_LEAST`] is free, so that no answer is left with nothing but its note.
    fn start_history_reads(&mut self) {
        while self.running_reads < HISTORY_READS {
            let Some(next) = self.waiting_reads.front() else {
                return;
            };
            if !self.clients.contains_key(&next.client) {
                // Gone while it waited.
                self.waiting_reads.pop_front();
                continue;
            }
            let held: usize = self.clients.values().map(LogClient::held).sum();
            let taken = held.saturating_add(self.history_reserved);
            let budget = HISTORY_PER_CLIENT.min(HISTORY_BUDGET.saturating_sub(taken));
            if budget < HISTORY_LEAST && taken > 0 {
                // Read now, it would hold next to nothing, not even the newest lines: it
                // waits until clients take theirs or are cut off (the loop comes back here
                // after every wake-up).
                return;
            }
            let Some(read) = self.waiting_reads.pop_front() else {
                return;
            };
            self.history_reserved += budget;
            self.running_reads += 1;
            let commands = self.own_commands.clone();
            let wake = Arc::clone(&self.wake);
            let (unit, client) = (read.unit.clone(), read.client);
            let work = move || {
                let guard = ThreadGuard::new("logs-history");
                let found = guard.run(|| {
                    merged_last_lines(
                        &read.files,
                        (read.count, budget),
                        &read.filter,
                        read.after.as_ref(),
                    )
                });
                let (lines, cut_short) = match found {
                    Ok(found) => found,
                    Err(caught) => {
                        let mut guard = guard;
                        guard.report(caught, "reading history", "that client gets none");
                        (Vec::new(), false)
                    }
                };
                let history = Command::History {
                    client: read.client,
                    lines,
                    budget,
                    cut_short,
                    position: positions_of(&read.files),
                };
                if commands.send(history).is_ok() {
                    let _ = wake.write(1);
                }
            };
            let spawned = std::thread::Builder::new()
                .name("logs-history".into())
                .spawn(work);
            if let Err(e) = spawned {
                // The closure, and the read with it, was dropped: the client gets none.
                warn!("{unit}: cannot read its history for a client: {e}");
                self.history_read(client, (Vec::new(), budget), (false, Vec::new()));
            }
        }
    }

    /// A client's history has been read: it goes out (within the history budget), and the
    /// next waiting read may start.
    ///
    /// `budget` is the share the read held (given back now); `cut_short`, that it stopped
    /// at that share before it had the lines asked for.
    fn history_read(
        &mut self,
        token: u64,
        (mut lines, budget): (Vec<Vec<u8>>, usize),
        (cut_short, position): (bool, Vec<LogFilePosition>),
    ) {
        self.history_reserved = self.history_reserved.saturating_sub(budget);
        self.running_reads = self.running_reads.saturating_sub(1);
        let held: usize = self.clients.values().map(LogClient::held).sum();
        let room = HISTORY_PER_CLIENT.min(HISTORY_BUDGET.saturating_sub(held));
        let left_out = keep_newest_within(&mut lines, room);
        if left_out > 0 || cut_short {
            let note = format!(
                "[clusterd: earlier lines left out: clusterd holds at most {} MiB of history for a client, and 64 MiB for all at a time; the files are in {}]\n",
                HISTORY_PER_CLIENT / (1024 * 1024),
                self.shared.dir.path().display()
            );
            lines.insert(0, note.into_bytes());
        }
        let header = Response {
            log_position: Some(LogPosition {
                files: position,
                history_lines: lines.len(),
            }),
            ..Response::done("logs")
        };
        let mut header = serde_json::to_vec(&header).unwrap_or_default();
        header.push(b'\n');
        if let Some(client) = self.clients.get_mut(&token) {
            client.set_history(header, lines);
        }
        self.flush_client(token);
        self.start_history_reads();
    }

    /// The files a history of `unit` reads, and where each stands now: the open ones by
    /// their descriptors, the others (instances not started since clusterd started) as
    /// found now; files that do not exist yet are left to the lines that follow.
    fn history_files(&mut self, unit: &str) -> Vec<(LogDir, String, Boundary)> {
        let Some(log) = self.units.get_mut(unit) else {
            let dir = self.shared.dir.clone();
            let name = UnitLogFile::name_of(unit);
            return UnitLogFile::boundary_of(&dir, &name)
                .map(|b| (dir, name, b))
                .into_iter()
                .collect();
        };
        let mut files = Vec::new();
        for path in layout_files(unit, &log.settings) {
            let (dir, name) = sink_place(&self.shared.dir, &mut self.dirs, &path);
            let open = log
                .sinks
                .iter()
                .find(|s| s.name == name && s.dir.path() == dir.path())
                .and_then(|s| s.file.as_ref())
                .and_then(UnitLogFile::boundary);
            if let Some(boundary) = open.or_else(|| UnitLogFile::boundary_of(&dir, &name)) {
                files.push((dir, name, boundary));
            }
        }
        files
    }

    /// The unit's paused pipes are read again.
    fn resume_sources(&mut self, unit: &str) {
        for (&token, source) in self.sources.iter_mut() {
            if source.unit == unit && source.paused {
                source.paused = false;
                let event = EpollEvent::new(EpollFlags::EPOLLIN, token);
                let _ = self.epoll.add(source.pipe.as_fd(), event);
            }
        }
    }

    /// Offers the unit's lines pending from `from` on (of `label`'s `stream`, formatted) to
    /// the clients that follow them.
    fn offer_followers(
        &mut self,
        unit: &str,
        label: &str,
        stream: Stream,
        sink: usize,
        from: usize,
    ) {
        let lines = self
            .units
            .get(unit)
            .and_then(|log| log.sinks.get(sink))
            .and_then(|sink| sink.pending.get(from..));
        let Some(lines) = lines else {
            return;
        };
        let mut offered = Vec::new();
        for (&token, client) in &mut self.clients {
            if client.wants(unit, label, stream) {
                client.offer_lines(lines);
                offered.push(token);
            }
        }
        for token in offered {
            self.flush_client(token);
        }
    }

    /// Writes what the client can take now; closes it when it is done or gone, and asks for
    /// EPOLLOUT while something waits.
    fn flush_client(&mut self, token: u64) {
        let Some(client) = self.clients.get_mut(&token) else {
            return;
        };
        if client.flush(Instant::now()) == Flushed::Done {
            return self.drop_client(token);
        }
        let want_writable = client.has_output();
        if want_writable != client.waiting_for_writable {
            client.waiting_for_writable = want_writable;
            let mut interest = EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP;
            if want_writable {
                interest |= EpollFlags::EPOLLOUT;
            }
            let mut event = EpollEvent::new(interest, token);
            let _ = self.epoll.modify(client.socket.as_fd(), &mut event);
        }
    }

    /// Drops the clients that took nothing for [`CUT_OFF`] while something waited for them.
    fn cut_off_clients(&mut self) {
        let now = Instant::now();
        let overdue: Vec<u64> = self
            .clients
            .iter()
            .filter(|(_, c)| c.deadline().is_some_and(|at| at <= now))
            .map(|(t, _)| *t)
            .collect();
        for token in overdue {
            if let Some(client) = self.clients.get_mut(&token) {
                let why = format!(
                    "this client read nothing for {}s; it is disconnected",
                    CUT_OFF.as_secs()
                );
                info!(
                    "logs of {}: a client read nothing for {}s; disconnected",
                    client.unit,
                    CUT_OFF.as_secs()
                );
                client.goodbye(&why);
            }
            self.drop_client(token);
        }
    }

    fn drop_client(&mut self, token: u64) {
        if let Some(client) = self.clients.remove(&token) {
            let _ = self.epoll.delete(client.socket.as_fd());
        }
    }

    /// At clusterd's exit: what is left goes out.
    fn finish(&mut self) {
        if self.journal.has_backlog() && self.journal.retry().is_err() {
            self.fall_back_to_files();
        }
        let stamp = Stamp::now();
        let tokens: Vec<u64> = self.sources.keys().copied().collect();
        for token in tokens {
            if let Some(mut source) = self.sources.remove(&token) {
                source.framer.take_partial(false, |frame| {
                    self.emit_frame(&source.unit, &source.label, source.stream, frame, &stamp);
                });
            }
        }
        let names: Vec<String> = self.units.keys().cloned().collect();
        for unit in names {
            if let Some(log) = self.units.get_mut(&unit) {
                log.stalled = None;
                if let Err(problem) = write_pending(log, &mut self.spare) {
                    warn!("{unit}: lines lost at exit: {problem}");
                }
            }
        }
        self.write_console();
    }
}

/// Why a new client of `uid` gets no place among the clients of `served` (one uid each), if
/// it does not: [`MAX_CLIENTS`] in all, [`PRIVILEGED_CLIENTS`] of them kept for root and
/// clusterd's user (`clusterds_uid`), at most [`MAX_CLIENTS_PER_UID`] for any other user.
fn no_place_for(served: impl Iterator<Item = u32>, uid: u32, clusterds_uid: u32) -> Option<String> {
    let privileged = |uid: u32| uid == 0 || uid == clusterds_uid;
    let (mut all, mut others, mut own) = (0, 0, 0);
    for served in served {
        all += 1;
        others += usize::from(!privileged(served));
        own += usize::from(served == uid);
    }
    if all >= MAX_CLIENTS {
        return Some(format!("{MAX_CLIENTS} clients are reading logs already"));
    }
    if privileged(uid) {
        return None;
    }
    if others >= MAX_CLIENTS - PRIVILEGED_CLIENTS {
        return Some(format!(
            "{others} clients of users other than root are reading logs already"
        ));
    }
    (own >= MAX_CLIENTS_PER_UID)
        .then(|| format!("uid {uid} has {own} clients reading logs already"))
}

/// Opens the sink's file if it is not open yet. The error says why, for status and the log.
fn open_file(sink: &mut Sink, settings: &CaptureSettings) -> Result<(), String> {
    if sink.file.is_none() {
        let file = UnitLogFile::open_named(&sink.dir, &sink.name, settings.max_size, settings.keep)
            .map_err(|e| e.to_string())?;
        sink.file = Some(file);
    }
    Ok(())
}

/// Writes the unit's pending lines to their files, opening them first if needed. The error
/// says why, for status and the log.
fn write_pending(log: &mut UnitLog, spare: &mut Vec<u8>) -> Result<(), String> {
    for sink in &mut log.sinks {
        if sink.pending.is_empty() {
            continue;
        }
        open_file(sink, &log.settings)?;
        let Some(file) = &mut sink.file else {
            continue;
        };
        if let Err(e) = file.write_all(&sink.pending) {
            let written = written_before(&e).min(sink.pending.len());
            sink.pending.drain(..written);
            return Err(format!("{}: {e}", file.path().display()));
        }
        sink.pending.clear();
        if sink.pending.capacity() > KEEP_PENDING {
            let buffer = std::mem::take(&mut sink.pending);
            if buffer.capacity() > spare.capacity() {
                *spare = buffer;
            }
        }
    }
    Ok(())
}

/// The sink of `label`'s `stream` in `log` (found by its file's name, added if new); `None`
/// when that stream is discarded or its file's directory cannot be used (said in
/// clusterd's log, a few times at most: the lines are lost as with `/dev/null`).
fn route(
    log: &mut UnitLog,
    log_dir: &LogDir,
    dirs: &mut HashMap<PathBuf, LogDir>,
    unit: &str,
    label: &str,
    stream: Stream,
) -> Option<usize> {
    let slot = usize::from(stream == Stream::Err);
    if let Some(routes) = log.routes.get(label) {
        return routes.get(slot).copied().flatten();
    }
    let index = instance_of(label);
    let mut routes = [None, None];
    for (slot, which) in [(0, LogStream::Out), (1, LogStream::Err)] {
        let Some(path) = log.settings.log.file_for(unit, which, index) else {
            continue;
        };
        let (dir, name) = sink_place(log_dir, dirs, &path);
        let found = log
            .sinks
            .iter()
            .position(|s| s.name == name && s.dir.path() == dir.path());
        routes[slot] = Some(found.unwrap_or_else(|| {
            log.sinks.push(Sink {
                dir,
                name,
                file: None,
                pending: Vec::new(),
            });
            log.sinks.len() - 1
        }));
    }
    log.routes.insert(label.to_string(), routes);
    routes.get(slot).copied().flatten()
}

/// The directory and name of a log file's `path`: a name in the log directory, or an
/// absolute path, whose directory is checked as the log directory is ([`LogDir`]).
fn sink_place(
    log_dir: &LogDir,
    dirs: &mut HashMap<PathBuf, LogDir>,
    path: &Path,
) -> (LogDir, String) {
    let parent = path
        .parent()
        .filter(|p| path.is_absolute() && !p.as_os_str().is_empty());
    match (parent, path.file_name()) {
        (Some(parent), Some(name)) => (
            dirs.entry(parent.to_path_buf())
                .or_insert_with(|| LogDir::new(parent))
                .clone(),
            name.to_string_lossy().into_owned(),
        ),
        _ => (log_dir.clone(), path.to_string_lossy().into_owned()),
    }
}

/// `web[3]` → 3.
fn instance_of(label: &str) -> u32 {
    label
        .rsplit_once('[')
        .and_then(|(_, n)| n.strip_suffix(']'))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// The timestamp of a line: the UTC one made at the read, or the unit's `timestamp_format`
/// in local time (formatted into `local`).
fn stamp_text<'a>(
    settings: &CaptureSettings,
    clock: &mut LocalClock,
    stamp: &'a Stamp,
    local: &'a mut Vec<u8>,
) -> &'a [u8] {
    match &settings.log.timestamp_format {
        Some(format) => {
            clock.format_into(format, stamp.at, local);
            local
        }
        None => &stamp.utc,
    }
}

/// `path` (absolute, or a name in `dir`) as a path.
fn in_dir(dir: &Path, path: &Path) -> PathBuf {
    dir.join(path)
}

/// The unit's first file, for messages.
fn first_file(unit: &str, settings: &CaptureSettings) -> PathBuf {
    settings
        .log
        .file_for(unit, LogStream::Out, 0)
        .or_else(|| settings.log.file_for(unit, LogStream::Err, 0))
        .unwrap_or_else(|| PathBuf::from(UnitLogFile::name_of(unit)))
}

/// Every file of a unit's layout (each instance's, each stream's), once each.
fn layout_files(unit: &str, settings: &CaptureSettings) -> Vec<PathBuf> {
    settings.log.files(unit, settings.instances)
}

/// Where each of `files` stands (its boundary), as the answer's header says it.
fn positions_of(files: &[(LogDir, String, Boundary)]) -> Vec<LogFilePosition> {
    files
        .iter()
        .map(|(dir, name, b)| LogFilePosition {
            path: dir.path().join(name).to_string_lossy().into_owned(),
            dev: b.dev,
            ino: b.ino,
            len: b.len,
        })
        .collect()
}

/// The last `count` lines of every file in `files` (each up to its boundary), merged by
/// their timestamps: lines of one file stay in their order, and lines of different files
/// come in the order of their timestamps' text (right for the default RFC 3339 stamps and
/// for formats that go from the year down to the second).
fn merged_last_lines(
    files: &[(LogDir, String, Boundary)],
    (count, budget): (usize, usize),
    filter: &LineFilter,
    after: Option<&LogPosition>,
) -> (Vec<Vec<u8>>, bool) {
    let share = budget / files.len().max(1);
    let mut cut_short = false;
    let mut all: Vec<Vec<Vec<u8>>> = Vec::new();
    for (dir, name, boundary) in files {
        // After a position: from where this file stood then (from its start if it did not
        // exist then).
        let since = after.map(|after| {
            let path = dir.path().join(name).to_string_lossy().into_owned();
            after
                .files
                .iter()
                .find(|f| f.path == path)
                .map(|f| Boundary {
                    dev: f.dev,
                    ino: f.ino,
                    len: f.len,
                })
        });
        let (lines, cut) = last_lines(dir, name, (count, share), (since, Some(*boundary)), filter);
        cut_short |= cut;
        all.push(lines);
    }
    let mut merged = merge_by_stamp(all);
    let excess = merged.len().saturating_sub(count);
    merged.drain(..excess);
    (merged, cut_short)
}

/// Merges runs of lines (each in order) by their timestamps' text, each run's order kept: the
/// next line is the oldest of the runs' next ones (a line without a timestamp goes with the
/// line before it).
fn merge_by_stamp(runs: Vec<Vec<Vec<u8>>>) -> Vec<Vec<u8>> {
    let total = runs.iter().map(Vec::len).sum();
    let mut runs: Vec<std::iter::Peekable<std::vec::IntoIter<Vec<u8>>>> =
        runs.into_iter().map(|r| r.into_iter().peekable()).collect();
    let mut last_key: Vec<Vec<u8>> = vec![Vec::new(); runs.len()];
    let mut merged = Vec::with_capacity(total);
    loop {
        let mut best: Option<(usize, Vec<u8>)> = None;
        for (i, run) in runs.iter_mut().enumerate() {
            let Some(line) = run.peek() else { continue };
            let key = super::line_format::split_line(line).map_or_else(
                || last_key.get(i).cloned().unwrap_or_default(),
                |(stamp, _, _)| stamp.to_vec(),
            );
            if best.as_ref().is_none_or(|(_, k)| key < *k) {
                best = Some((i, key));
            }
        }
        let Some((i, key)) = best else {
            return merged;
        };
        if let (Some(run), Some(slot)) = (runs.get_mut(i), last_key.get_mut(i)) {
            *slot = key;
            if let Some(line) = run.next() {
                merged.push(line);
            }
        }
    }
}

/// Writes `pending[..before]` (the lines before the last one) into the current file, then
/// rotates it, so that the last line starts the new file. If the write fails, what was not
/// written stays pending (the next flush stalls the unit) and nothing is rotated.
fn rotate_before_last_line(
    unit: &str,
    file: &mut UnitLogFile,
    pending: &mut Vec<u8>,
    before: usize,
    warnings: &mut LogLimit,
) {
    let before = before.min(pending.len());
    let result = file.write_all(pending.get(..before).unwrap_or_default());
    match result {
        Ok(()) => {
            pending.drain(..before);
            if let Err(e) = file.rotate() {
                if let Verdict::Show { suppressed, last } = warnings.check(Instant::now()) {
                    warn!(
                        "{unit}: cannot rotate {}: {e}{}",
                        file.path().display(),
                        LogLimit::note(suppressed, last)
                    );
                }
            }
        }
        Err(e) => {
            let written = written_before(&e).min(before);
            pending.drain(..written);
        }
    }
}

/// Where a unit's lines go now: a journal unit's go to its file while journald is gone.
fn destination(to: LogTo, journal_fallback: bool) -> LogTo {
    match to {
        LogTo::Journal if journal_fallback => LogTo::File,
        other => other,
    }
}

/// Whether journald listens at `path` (a connect to a datagram socket sends nothing).
fn journal_listens(path: &Path) -> bool {
    std::os::unix::net::UnixDatagram::unbound()
        .and_then(|socket| socket.connect(path))
        .is_ok()
}

/// Keeps the newest of `lines` (oldest first) whose sizes add up to at most `room`; returns
/// how many older ones were left out.
fn keep_newest_within(lines: &mut Vec<Vec<u8>>, room: usize) -> usize {
    let mut total = 0usize;
    let kept = lines
        .iter()
        .rev()
        .take_while(|line| {
            total = total.saturating_add(line.len());
            total <= room
        })
        .count();
    let left_out = lines.len().saturating_sub(kept);
    lines.drain(..left_out);
    left_out
}

fn answer(mut socket: &UnixStream, response: &Response) {
    let mut line = serde_json::to_vec(response).unwrap_or_default();
    line.push(b'\n');
    let _ = socket.write_all(&line);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_client_places_keep_room_for_root_and_cap_each_user() {
        let me = 1000;
        let place = |served: &[u32], uid: u32| no_place_for(served.iter().copied(), uid, me);
        assert_eq!(place(&[], 65534), None);
        // Any other user: 16 at most.
        let sixteen = [65534; MAX_CLIENTS_PER_UID];
        assert!(place(&sixteen, 65534).is_some_and(|why| why.contains("uid 65534 has 16")));
        assert_eq!(place(&sixteen, 65533), None);
        // Other users together: all but the 8 kept places.
        let others: Vec<u32> = (0..MAX_CLIENTS - PRIVILEGED_CLIENTS)
            .map(|i| 2000 + i as u32)
            .collect();
        assert!(place(&others, 65534).is_some_and(|why| why.contains("other than root")));
        assert_eq!(place(&others, 0), None, "root has its kept places");
        assert_eq!(place(&others, me), None, "so has clusterd's user");
        // In all: 64.
        let mut full = others;
        full.extend([0; PRIVILEGED_CLIENTS]);
        assert!(place(&full, 0).is_some_and(|why| why.contains("64 clients")));
    }
}
