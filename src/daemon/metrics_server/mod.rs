//! `clusterd --metrics-listen ADDR`: Prometheus scrapes `GET /metrics` here. Anyone who can
//! reach the address can connect, so no client may hold it, grow clusterd or reach the
//! supervisor loop more than a scrape does:
//!
//! - one thread ("metrics") serves every connection from one `poll` loop, all sockets
//!   non-blocking: a client that sends slowly or never reads holds nothing but its slot;
//! - the kernel holds a new connection until its first bytes arrive, for up to about
//!   [`EVICTION_GRACE`] (TCP_DEFER_ACCEPT): a scrape whose request is a moment late (a loaded
//!   machine) is accepted with it, and silent connections take no slot for that long;
//! - at most [`MAX_CONNECTIONS`] at once; when they are full, a new connection takes the slot
//!   of the oldest one still sending its request after [`EVICTION_GRACE`], else of the newest
//!   one still sending, else of the oldest being answered, so hostile connections cannot keep
//!   a scrape out (a scrape sends its request at once and is answered at once); a whole
//!   request waiting for the report is never closed for a newcomer: while every slot holds
//!   one, new connections wait in the listen queue until the report comes;
//! - each connection has one deadline for its whole request head (5 s, not per read) and one
//!   for taking its whole answer (5 s), and a head is at most 8 KiB ([`connection`],
//!   [`http`]);
//! - the report is asked of the supervisor loop by a second thread ([`report`]) and reused
//!   for every scrape within [`REPORT_REUSE`] of it, so a flood of scrapes costs the loop at
//!   most about one status report a second;
//! - when an accepted connection's descriptor is among the last [`FD_HEADROOM`] of clusterd's
//!   limit, it only takes the place of one this thread holds (else it is closed at once), and
//!   accept errors (EMFILE) back off: descriptors clusterd needs for its control socket and
//!   its instances are not taken by scrapers;
//! - `daemon-reexec` hands the listening sockets to the new image once the scrapes accepted
//!   are answered (at most [`handover::DRAIN_BOUND`]): connections made meanwhile wait in the
//!   listen queue ([`handover`]).

mod connection;
pub(crate) mod handover;
mod http;
mod report;

use std::io::ErrorKind;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use nix::poll::{PollFd, PollFlags, PollTimeout};

use crate::daemon::signals::EventSender;
use crate::daemon::thread_guard::ThreadGuard;
use crate::log_limit::{LogLimit, Verdict};
use connection::{Connection, Next, Stage};
use report::Reporter;

/// Connections the kernel holds for clusterd: silent ones for up to [`EVICTION_GRACE`], and
/// those waiting to be accepted. Long enough for a thousand silent connections (std's 128 let
/// 200 of them overflow into SYN cookies, handed over at once, silent, and a late scrape with
/// them), short enough that a flood queued ahead of a scrape is taken in a fraction of a
/// second (4096 made such scrapes wait seconds).
const LISTEN_QUEUE: libc::c_int = 1024;
/// Connections served at once.
const MAX_CONNECTIONS: usize = 16;
/// How long a new connection may take to send its request before it goes first when the
/// slots are full and a newcomer needs one.
const EVICTION_GRACE: Duration = Duration::from_secs(1);
/// A report answers every scrape that comes within this long after it arrived.
const REPORT_REUSE: Duration = Duration::from_secs(1);
/// Connections taken from the listen queue in one round, before the others are served again:
/// a quarter of the slots, so that however fast others connect, a new connection is still
/// there for three more rounds, in which its request (sent right after connecting) is read.
const ACCEPT_BATCH: usize = MAX_CONNECTIONS / 4;
/// A connection whose descriptor number is this close to clusterd's limit only takes the place
/// of another (descriptors are handed out lowest first, so every lower one is in use).
const FD_HEADROOM: libc::rlim_t = 16;
/// After an accept error (out of descriptors, of memory), accepting waits this long, doubling
/// up to [`MAX_ACCEPT_BACKOFF`].
const FIRST_ACCEPT_BACKOFF: Duration = Duration::from_millis(10);
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// A TCP address to listen on as the operator wrote it (`127.0.0.1:9464`, `[::1]:9464`,
/// `localhost:9464`) and every address it resolves to, in the resolver's order (`--metrics-listen`
/// resolves it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenAddress {
    pub text: String,
    pub addresses: Vec<SocketAddr>,
}

/// Binds every address `address` resolves to and serves `/metrics` there on a thread of its
/// own. With port 0, the first address gets a free port and the others the same one. After a
/// re-exec, the listeners `inherited` from the old image are served instead, if they check
/// out.
pub(crate) fn serve(
    address: &ListenAddress,
    events: EventSender,
    inherited: Vec<OwnedFd>,
) -> Result<(), String> {
    let handed = inherited.len();
    let adopted = handover::adopt(inherited, address);
    let listeners = if adopted.is_empty() {
        if handed > 0 || reexec_without_metrics_fds() {
            warn!(
                "--metrics-listen {}: no listening socket was handed over that can be taken; binding it again (scrapes during the re-exec were refused)",
                address.text
            );
        }
        bind(address)?
    } else {
        for listener in &adopted {
            let _ = listener.set_nonblocking(true);
        }
        adopted
    };
    let urls: Vec<String> = listeners
        .iter()
        .filter_map(|l| l.local_addr().ok())
        .map(|a| format!("http://{a}/metrics"))
        .collect();
    info!("metrics at {}", urls.join(" and "));
    let loop_bell = events.clone();
    let reporter =
        Reporter::start(events).map_err(|e| format!("cannot start the metrics thread: {e}"))?;
    let asks = handover::asks(reporter.bell_to_share());
    let server = Server {
        listeners,
        reporter,
        asks,
        quiescing: None,
        loop_bell,
        connections: Vec::new(),
        last_report: None,
        asked: None,
        accept_paused_until: None,
        backoff: FIRST_ACCEPT_BACKOFF,
        warnings: LogLimit::default(),
    };
    thread::Builder::new()
        .name("metrics".into())
        .spawn(move || server.run())
        .map_err(|e| format!("cannot start the metrics thread: {e}"))?;
    Ok(())
}

fn bind(address: &ListenAddress) -> Result<Vec<TcpListener>, String> {
    let mut listeners: Vec<TcpListener> = Vec::new();
    let mut failures = Vec::new();
    let mut chosen_port = None;
    let mut seen = Vec::new();
    for &resolved in &address.addresses {
        if seen.contains(&resolved) {
            continue;
        }
        seen.push(resolved);
        let mut at = resolved;
        if let (0, Some(port)) = (at.port(), chosen_port) {
            at.set_port(port);
        }
        match TcpListener::bind(at).and_then(|l| l.set_nonblocking(true).map(|()| l)) {
            Ok(listener) => {
                if let Err(e) = hold_connections_in_the_kernel(&listener) {
                    warn!(
                        "--metrics-listen {}: {at}: TCP_DEFER_ACCEPT or listen queue: {e}",
                        address.text
                    );
                }
                chosen_port = chosen_port.or(listener.local_addr().ok().map(|a| a.port()));
                listeners.push(listener);
            }
            Err(e) => failures.push(format!("{at}: {e}")),
        }
    }
    if listeners.is_empty() {
        return Err(format!(
            "cannot listen for metrics on {}: {}",
            address.text,
            failures.join("; ")
        ));
    }
    for failure in failures {
        warn!(
            "--metrics-listen {}: cannot listen on {failure}; serving the other address(es)",
            address.text
        );
    }
    Ok(listeners)
}

/// Has the kernel hold a new connection until its first bytes arrive (at most about
/// [`EVICTION_GRACE`], then it is handed over anyway): a scraper whose request comes a moment
/// after its connect (a loaded machine) is accepted with its request, which no flood of
/// silent newcomers can take its slot from, and silent connections cost clusterd nothing for
/// that long (Linux counts the wait in retransmissions of the SYN-ACK: 1 s is one).
/// The kernel holds at most [`LISTEN_QUEUE`] such connections (beyond, it answers with SYN
/// cookies, which hand a connection over at once, silent or not), so the listen queue is that
/// long, not std's 128.
fn hold_connections_in_the_kernel(listener: &TcpListener) -> std::io::Result<()> {
    let fd = listener.as_raw_fd();
    let seconds = libc::c_int::try_from(EVICTION_GRACE.as_secs().max(1)).unwrap_or(1);
    let checked = |result: libc::c_int| match result {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    };
    // SAFETY: setsockopt reads an int from a valid local of the length given.
    checked(unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            (&seconds as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })?;
    // SAFETY: listen on a listening socket only changes the length of its queue.
    checked(unsafe { libc::listen(fd, LISTEN_QUEUE) })
}

/// A re-exec: whether this image was made by one (whose old image then had no metrics fds to
/// hand over: an older clusterd, which bound its own).
fn reexec_without_metrics_fds() -> bool {
    crate::daemon::reexec::reexecuted_at().is_some()
}

struct Server {
    listeners: Vec<TcpListener>,
    reporter: Reporter,
    /// `daemon-reexec`'s asks to stop ([`handover`]).
    asks: handover::Asks,
    /// A hand-over under way: accepting no more, the connections finished by then.
    quiescing: Option<(Instant, handover::Ask)>,
    /// Rung once stopped: the loop waits for it among its events.
    loop_bell: EventSender,
    /// At most [`MAX_CONNECTIONS`].
    connections: Vec<Connection>,
    /// The last response to a scrape, and when it arrived.
    last_report: Option<(Instant, Arc<[u8]>)>,
    /// A report is on its way since then.
    asked: Option<Instant>,
    /// Accepting waits after an error until then.
    accept_paused_until: Option<Instant>,
    backoff: Duration,
    /// Hostile clients must not fill clusterd's log either.
    warnings: LogLimit,
}

/// What each polled descriptor stands for.
#[derive(Clone, Copy)]
enum Polled {
    Listener(usize),
    Bell,
    Connection(usize),
}

impl Server {
    fn run(mut self) {
        // A panic costs the connections in flight, never the endpoint (see thread_guard):
        // scrapers ask again at their next interval.
        let mut guard = ThreadGuard::new("metrics");
        loop {
            if let Err(caught) = guard.run(|| self.turn()) {
                guard.report(caught, "serving scrapes", "its connections are closed");
                self.connections.clear();
            }
        }
    }

    /// One round: drop what is overdue, answer what waits, poll, then read, write and accept.
    fn turn(&mut self) {
        {
            let now = Instant::now();
            if self
                .quiescing
                .as_ref()
                .is_some_and(|(until, _)| self.connections.is_empty() || now >= *until)
            {
                self.hand_over();
                return;
            }
            self.drop_expired(now);
            self.serve_waiting(now);
            let ready = match self.poll(now) {
                Ok(ready) => ready,
                Err(e) => {
                    // Only the kernel's memory can make poll fail here: wait, do not spin.
                    self.warn(now, &format!("metrics: poll failed: {e}"));
                    thread::sleep(FIRST_ACCEPT_BACKOFF);
                    return;
                }
            };
            let now = Instant::now();
            // Connections first (their indices are those polled), then the report, then new
            // connections.
            let mut closed = vec![false; self.connections.len()];
            let mut accept_from = Vec::new();
            let mut bell = false;
            for (what, flags) in ready {
                match what {
                    Polled::Listener(index) => accept_from.push(index),
                    Polled::Bell => bell = true,
                    Polled::Connection(index) => {
                        let Some(connection) = self.connections.get_mut(index) else {
                            continue;
                        };
                        let next = match connection.stage {
                            Stage::Reading(_) => connection.read_some(now),
                            Stage::Writing { .. } => connection.write_some(),
                            // Only an error or a hang-up is polled for.
                            Stage::Waiting => Next::Close,
                        };
                        if next == Next::Close || flags.contains(PollFlags::POLLNVAL) {
                            if let Some(slot) = closed.get_mut(index) {
                                *slot = true;
                            }
                        }
                    }
                }
            }
            let mut index = 0;
            self.connections.retain(|_| {
                let keep = !closed.get(index).copied().unwrap_or(false);
                index += 1;
                keep
            });
            if bell {
                // Rung for a report, or by a re-exec's ask.
                if let Ok(ask) = self.asks.asked.try_recv() {
                    self.quiescing = Some((now + handover::DRAIN_BOUND, ask));
                }
                if let Some(response) = self.reporter.take() {
                    self.asked = None;
                    self.answer_waiting(&response, now);
                    self.last_report = Some((now, response));
                }
            }
            for index in accept_from {
                if self.quiescing.is_none() {
                    self.accept(index, now);
                }
            }
        }
    }

    /// `daemon-reexec`: the connections still open are closed (they had
    /// [`handover::DRAIN_BOUND`]), the listeners' fds are handed over, and the thread waits:
    /// the exec ends it, or the re-exec failed and it accepts again.
    fn hand_over(&mut self) {
        let Some((_, ask)) = self.quiescing.take() else {
            return;
        };
        if !self.connections.is_empty() {
            warn!(
                "metrics: closing {} connection(s) not done within {:?} for the re-exec",
                self.connections.len(),
                handover::DRAIN_BOUND
            );
            self.connections.clear();
        }
        let fds = self.listeners.iter().map(AsRawFd::as_raw_fd).collect();
        let sent = ask.done.send(fds).is_ok();
        self.loop_bell.ring();
        if sent {
            // Until the re-exec has failed (the loop dropped its end): the exec ends this.
            let _ = ask.resume.recv();
        }
    }

    /// Waits until a descriptor is ready or the nearest deadline passes; returns what is ready.
    fn poll(&self, now: Instant) -> nix::Result<Vec<(Polled, PollFlags)>> {
        // While every slot waits for the report, new connections wait in the listen queue
        // (their requests in its buffers) until the report frees the slots.
        let accepting = self.quiescing.is_none()
            && self.accept_paused_until.is_none_or(|until| until <= now)
            && self.may_make_room();
        let mut what = Vec::new();
        let mut fds = Vec::new();
        if accepting {
            for (index, listener) in self.listeners.iter().enumerate() {
                what.push(Polled::Listener(index));
                fds.push(PollFd::new(listener.as_fd(), PollFlags::POLLIN));
            }
        }
        what.push(Polled::Bell);
        fds.push(PollFd::new(self.reporter.bell(), PollFlags::POLLIN));
        for (index, connection) in self.connections.iter().enumerate() {
            let interest = match connection.stage {
                Stage::Reading(_) => PollFlags::POLLIN,
                Stage::Writing { .. } => PollFlags::POLLOUT,
                Stage::Waiting => PollFlags::empty(),
            };
            what.push(Polled::Connection(index));
            fds.push(PollFd::new(connection.fd(), interest));
        }
        let wake_at = self
            .connections
            .iter()
            .map(|c| c.deadline)
            .chain(self.accept_paused_until.filter(|_| !accepting))
            .chain(self.quiescing.as_ref().map(|(until, _)| *until))
            .min();
        let timeout = wake_at.map_or(PollTimeout::NONE, |at| {
            // Rounded up: a deadline 0.4 ms away is not polled for 0 ms until it passes.
            let millis = at.saturating_duration_since(now).as_micros().div_ceil(1000);
            PollTimeout::try_from(millis).unwrap_or(PollTimeout::MAX)
        });
        match nix::poll::poll(&mut fds, timeout) {
            Ok(_) => Ok(what
                .into_iter()
                .zip(&fds)
                .filter_map(|(what, fd)| Some((what, fd.revents().filter(|r| !r.is_empty())?)))
                .collect()),
            Err(nix::errno::Errno::EINTR) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    fn drop_expired(&mut self, now: Instant) {
        let before = self.connections.len();
        self.connections.retain_mut(|c| {
            let keep = c.deadline > now;
            if !keep {
                debug!(
                    "metrics: closing the connection from {}: {}",
                    c.peer,
                    if c.is_reading() {
                        "its request did not arrive in time"
                    } else {
                        "it did not take its answer in time"
                    }
                );
                c.time_out();
            }
            keep
        });
        let expired = before - self.connections.len();
        if expired > 0 {
            self.warn(
                now,
                &format!("metrics: closed {expired} connection(s) that missed their deadline"),
            );
        }
    }

    /// Scrapes whose request is whole get the last report if it is fresh, else one is asked.
    fn serve_waiting(&mut self, now: Instant) {
        if !self.connections.iter().any(Connection::is_waiting) {
            return;
        }
        if let Some((at, response)) = &self.last_report {
            if now.saturating_duration_since(*at) < REPORT_REUSE {
                let response = Arc::clone(response);
                self.answer_waiting(&response, now);
                return;
            }
        }
        // The report thread answers within REPORT_DEADLINE; past twice that, it is asked again
        // rather than trusted for ever.
        if self
            .asked
            .is_some_and(|at| now.saturating_duration_since(at) < 2 * report::REPORT_DEADLINE)
        {
            return;
        }
        if self.reporter.ask() {
            self.asked = Some(now);
        } else {
            let gone: Arc<[u8]> = http::response(
                "503 Service Unavailable",
                http::TEXT,
                "",
                b"clusterd is shutting down\n",
            )
            .into();
            self.answer_waiting(&gone, now);
        }
    }

    fn answer_waiting(&mut self, response: &Arc<[u8]>, now: Instant) {
        self.connections
            .retain_mut(|c| !c.is_waiting() || c.answer(Arc::clone(response), now) == Next::Keep);
    }

    /// Whether a slot is free or one can be freed: not while every slot holds a whole request
    /// waiting for the report (those are never closed unanswered for a newcomer).
    fn may_make_room(&self) -> bool {
        self.connections.len() < MAX_CONNECTIONS || self.connections.iter().any(|c| !c.is_waiting())
    }

    /// Takes waiting connections from one listener, a batch at most, each once a slot is free
    /// for it (before it is accepted: one that cannot have a slot stays in the listen queue).
    fn accept(&mut self, index: usize, now: Instant) {
        for _ in 0..ACCEPT_BATCH {
            if self.connections.len() >= MAX_CONNECTIONS && !self.evict(now) {
                return;
            }
            let Some(listener) = self.listeners.get(index) else {
                return;
            };
            match listener.accept() {
                Ok((stream, peer)) => {
                    self.backoff = FIRST_ACCEPT_BACKOFF;
                    self.admit(stream, peer, now);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.raw_os_error() == Some(libc::ECONNABORTED) => {}
                Err(e) => {
                    // Out of descriptors or memory: the connection waits in the listen queue.
                    self.warn(
                        now,
                        &format!(
                            "metrics: cannot accept a connection: {e}; waiting {} ms",
                            self.backoff.as_millis()
                        ),
                    );
                    self.accept_paused_until = Some(now + self.backoff);
                    self.backoff = (self.backoff * 2).min(MAX_ACCEPT_BACKOFF);
                    return;
                }
            }
        }
    }

    fn admit(&mut self, stream: TcpStream, peer: SocketAddr, now: Instant) {
        // Near the limit, a new connection may only take the place of one this thread holds:
        // there, it never holds more descriptors than it did. Near means the new descriptor
        // or one it holds is among the last ones: a new one may have reused the lower one
        // that the last replacement freed.
        let near_limit = first_of_the_last_descriptors().is_some_and(|first| {
            stream.as_raw_fd() >= first
                || self.connections.iter().any(|c| c.fd().as_raw_fd() >= first)
        });
        if near_limit && !self.evict(now) {
            self.warn(
                now,
                "metrics: clusterd is near its file descriptor limit; closing a new connection",
            );
            return;
        }
        if stream.set_nonblocking(true).is_err() {
            return;
        }
        let _ = stream.set_nodelay(true);
        let mut connection = Connection::new(stream, peer, now);
        // A scraper sends its request right after connecting: it is likely here already.
        if connection.read_some(now) == Next::Keep {
            self.connections.push(connection);
        }
    }

    /// Closes, to make room for a new connection: the oldest one still sending its request
    /// [`EVICTION_GRACE`] after its accept; else the newest one still sending; else the
    /// oldest being answered; false if there is none. What arrived since the last round is
    /// read first, so a scraper whose request came in the meantime is no longer taken for a
    /// silent connection. Within the grace the newest goes first: under a flood of newcomers
    /// each takes the place of the one before it; a slow sender holds a slot no longer than
    /// the grace once the slots are full. A whole request waiting for the report is never
    /// closed for a newcomer: under a flood of whole requests (each answered with the same
    /// report) the newcomers wait in the listen queue instead, at most until the report comes
    /// (before, a scrape waiting for a report that a loaded machine made slow was closed
    /// unanswered for the flood's newcomers).
    fn evict(&mut self, now: Instant) -> bool {
        // First, what arrived since the last round: a scraper's request, sent right after it
        // connected, makes it a connection that waits for its answer, which is not closed.
        let before = self.connections.len();
        self.connections
            .retain_mut(|c| !c.is_reading() || c.read_some(now) == Next::Keep);
        if self.connections.len() < before {
            return true;
        }
        let reading = |c: &&Connection| c.is_reading();
        let late = |c: &&Connection| now.duration_since(c.accepted) >= EVICTION_GRACE;
        let position = |chosen: Option<&Connection>| {
            chosen.and_then(|chosen| {
                self.connections
                    .iter()
                    .position(|c| std::ptr::eq(c, chosen))
            })
        };
        let choice = position(
            self.connections
                .iter()
                .filter(reading)
                .filter(late)
                .min_by_key(|c| c.accepted),
        )
        .or_else(|| {
            position(
                self.connections
                    .iter()
                    .filter(reading)
                    .max_by_key(|c| c.accepted),
            )
        })
        .or_else(|| {
            position(
                self.connections
                    .iter()
                    .filter(|c| !c.is_waiting())
                    .min_by_key(|c| c.accepted),
            )
        });
        let Some(index) = choice else {
            return false;
        };
        let gone = self.connections.swap_remove(index);
        debug!(
            "metrics: closing the connection from {} for a new one",
            gone.peer
        );
        let open = self.connections.len() + 1;
        self.warn(
            now,
            &format!("metrics: {open} connections open; closing the oldest for a new one"),
        );
        true
    }

    fn warn(&mut self, now: Instant, message: &str) {
        if let Verdict::Show { suppressed, last } = self.warnings.check(now) {
            warn!("{message}{}", LogLimit::note(suppressed, last));
        }
    }
}

/// The first of the last [`FD_HEADROOM`] descriptors clusterd may open (None without a
/// limit).
fn first_of_the_last_descriptors() -> Option<std::os::fd::RawFd> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the limit into a valid local.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0
        || limit.rlim_cur == libc::RLIM_INFINITY
    {
        return None;
    }
    let first = limit.rlim_cur.saturating_sub(FD_HEADROOM);
    Some(std::os::fd::RawFd::try_from(first).unwrap_or(std::os::fd::RawFd::MAX))
}
