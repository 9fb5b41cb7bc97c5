//! The control socket: clusterd's end of the `clusterctl` protocol. One thread accepts; each
//! connection gets a short-lived thread that checks the peer, reads one request line, hands it
//! to the supervisor loop and writes the answer back. A bad request gets an error reply and
//! never reaches the supervisor.
//!
//! Clients cannot hold clusterd, nor lock the operator out:
//! - at most [`MAX_CONNECTIONS`] are served at once, of which [`PRIVILEGED_SLOTS`] only root
//!   and clusterd's own user may take, and any other uid at most [`MAX_PER_UID`]: a runaway
//!   script of a socket-group member cannot take every slot (the others get an error at once);
//! - a request must arrive whole within [`REQUEST_DEADLINE`] of connecting, and the whole
//!   answer must be taken within [`ANSWER_DEADLINE`] (deadlines, not idle timeouts: a byte
//!   every few seconds extends neither). The supervisor loop never writes to a client.
//! - At the file-descriptor limit, the control thread answers from a descriptor of its own
//!   (see [`Reserve`]) that no other thread can take, one connection at a time, root's and
//!   clusterd's user's only; and otherwise backs off instead of spinning on EMFILE.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use log::{debug, warn};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::socket::{getsockopt, sockopt};
use nix::sys::stat::{umask, Mode};
use nix::unistd::{Gid, Uid};

use crate::daemon::logs::{Logs, LogsQuery};
use crate::daemon::os::unix_socket_file::{self, SocketFileState};
use crate::daemon::signals::EventSender;
use crate::daemon::thread_guard::ThreadGuard;
use crate::protocol::{
    Request, RequestEnvelope, Response, MAX_LOG_LINES, MAX_REQUEST_BYTES, PROTOCOL_VERSION,
};
use crate::supervisor::event::Event;
use crate::unit::is_valid_unit_name;

/// A client must have sent its whole request line this long after connecting.
pub(crate) const REQUEST_DEADLINE: Duration = Duration::from_secs(5);
/// A client refused for its uid gets this long to finish sending (so it can read the refusal).
const REFUSED_DEADLINE: Duration = Duration::from_secs(1);
/// A client must have taken its whole answer this long after it was ready.
pub(crate) const ANSWER_DEADLINE: Duration = Duration::from_secs(5);
/// Connections served at once; one more is answered with an error and closed.
pub(crate) const MAX_CONNECTIONS: usize = 64;
/// Of [`MAX_CONNECTIONS`], the slots only root and clusterd's own user may take.
pub(crate) const PRIVILEGED_SLOTS: usize = 8;
/// Connections one uid other than root and clusterd's own may have served at once.
pub(crate) const MAX_PER_UID: usize = 16;
/// After an accept error that leaves nothing to accept (EMFILE without a reserve fd, ENOMEM),
/// the accept loop waits this long, doubling up to [`MAX_ACCEPT_BACKOFF`].
const FIRST_ACCEPT_BACKOFF: Duration = Duration::from_millis(10);
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// Who may use the control socket: root, clusterd's own user, and the configured group.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AccessPolicy {
    pub owner: Uid,
    pub group: Option<Gid>,
}

impl AccessPolicy {
    /// Root and clusterd's own user: the operator, who keeps slots of its own.
    fn privileged(&self, uid: u32) -> bool {
        uid == 0 || uid == self.owner.as_raw()
    }

    /// `groups`: the peer's supplementary groups, asked only when its uid and primary gid do
    /// not already decide.
    fn allows(&self, uid: u32, gid: u32, groups: impl FnOnce() -> Vec<u32>) -> bool {
        if self.privileged(uid) {
            return true;
        }
        let Some(group) = self.group.map(Gid::as_raw) else {
            return false;
        };
        // A member of the group usually has it as a supplementary group (`adduser alice
        // clusterd`), not as the primary one.
        gid == group || groups().contains(&group)
    }
}

/// The supplementary groups the peer had when it connected (SO_PEERGROUPS: the kernel's
/// record, like SO_PEERCRED's uid and gid, not a look-up in /etc/group).
fn peer_groups(stream: &UnixStream) -> Vec<u32> {
    use std::os::fd::AsRawFd;
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    loop {
        let mut length = (groups.len() * std::mem::size_of::<libc::gid_t>()) as libc::socklen_t;
        // SAFETY: the kernel writes at most `length` bytes into `groups`, which has that room.
        let result = unsafe {
            libc::getsockopt(
                stream.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut length,
            )
        };
        let count = length as usize / std::mem::size_of::<libc::gid_t>();
        if result == 0 {
            groups.truncate(count);
            return groups;
        }
        // ERANGE: `length` says how much room it needs.
        if std::io::Error::last_os_error().raw_os_error() == Some(libc::ERANGE)
            && count > groups.len()
        {
            groups.resize(count, 0);
            continue;
        }
        return Vec::new();
    }
}

/// Creates the control socket: 0600, or 0660 with `group`. Refuses to start when another
/// clusterd answers on the path; removes a stale socket file left by a crash.
pub(crate) fn bind_control_socket(path: &Path, group: Option<Gid>) -> Result<UnixListener, String> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
    }
    match unix_socket_file::probe(path) {
        SocketFileState::Absent => {}
        SocketFileState::Stale => std::fs::remove_file(path)
            .map_err(|e| format!("cannot remove the stale socket {}: {e}", path.display()))?,
        SocketFileState::InUse(reason) => {
            return Err(format!(
                "cannot use {} for the control socket: {reason} (is another clusterd running? stop it first, or pass --socket to use another path)",
                path.display()
            ))
        }
    }
    // Create the file with its final mode: no window in which others could connect.
    let mask = if group.is_some() { 0o117 } else { 0o177 };
    let previous = umask(Mode::from_bits_truncate(mask));
    let bound = UnixListener::bind(path);
    umask(previous);
    let listener = bound.map_err(|e| format!("cannot listen on {}: {e}", path.display()))?;
    // The control thread's reserve, before any unit takes a descriptor (see [`Reserve`]).
    let mut early = START_UP_RESERVE
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let mut doorbell = START_UP_DOORBELL
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if doorbell.is_none() {
        *doorbell = Some(new_doorbell().map_err(|e| format!("cannot create an eventfd: {e}"))?);
    }
    drop(doorbell);
    let missing = RESERVE_FDS.saturating_sub(early.len());
    early.extend(std::iter::from_fn(Reserve::open_one).take(missing));
    drop(early);
    if let Some(gid) = group {
        nix::unistd::chown(path, None, Some(gid))
            .map_err(|e| format!("cannot give {} to group {gid}: {e}", path.display()))?;
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660));
    }
    Ok(listener)
}

/// Serves the control socket on its own thread until the process exits. The gate returned
/// lets `daemon-reexec` stop the accepting (see [`ControlGate`]).
pub(crate) fn serve(
    listener: UnixListener,
    events: EventSender,
    policy: AccessPolicy,
    logs: Logs,
) -> std::io::Result<Arc<ControlGate>> {
    // Non-blocking: the thread waits in poll, on the socket and on the gate's doorbell.
    listener.set_nonblocking(true)?;
    let gate = Arc::new(ControlGate {
        state: Mutex::new(GateState::default()),
        changed: Condvar::new(),
        doorbell: match START_UP_DOORBELL
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            Some(doorbell) => doorbell,
            None => new_doorbell()?,
        },
        slots: Arc::new(Slots::default()),
        listener: listener.as_raw_fd(),
    });
    let routes = Routes { events, logs };
    let thread_gate = Arc::clone(&gate);
    thread::Builder::new()
        .name("control".into())
        .spawn(move || accept_loop(listener, routes, policy, &thread_gate))?;
    Ok(gate)
}

/// `daemon-reexec`'s hold on the control socket. Paused, the accept thread accepts nothing
/// (clients that connect wait in the listening socket's backlog, for the new image), and
/// [`ControlGate::busy`] says how many connections are still being answered.
pub(crate) struct ControlGate {
    state: Mutex<GateState>,
    changed: Condvar,
    /// Rung to make the accept thread look at the state.
    doorbell: EventFd,
    slots: Arc<Slots>,
    /// The listening socket (its number is handed to the new image).
    listener: RawFd,
}

#[derive(Default)]
struct GateState {
    paused: bool,
    /// The accept thread saw `paused` and waits.
    parked: bool,
}

impl ControlGate {
    /// Stops the accepting; returns once the accept thread waits (or says why not by
    /// `deadline`, resumed again).
    pub(crate) fn pause(&self, deadline: Instant) -> Result<(), String> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.paused = true;
        let _ = self.doorbell.write(1);
        while !state.parked {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                state.paused = false;
                self.changed.notify_all();
                return Err("the control socket's thread did not stop accepting in time".into());
            }
            state = self
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        Ok(())
    }

    /// Accepting again (a re-exec that failed before its exec).
    pub(crate) fn resume(&self) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.paused = false;
        self.changed.notify_all();
    }

    /// Connections being served now (each on a thread of its own).
    pub(crate) fn busy(&self) -> usize {
        self.slots
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .total
    }

    pub(crate) fn listener(&self) -> RawFd {
        self.listener
    }

    /// Waits, on the accept thread, while paused. True if it was.
    fn wait_while_paused(&self) -> bool {
        let _ = self.doorbell.read();
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if !state.paused {
            return false;
        }
        state.parked = true;
        self.changed.notify_all();
        while state.paused {
            state = self
                .changed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        state.parked = false;
        true
    }

    /// Waits (at most `timeout`) until a connection may be waiting on `listener` or the gate
    /// was rung. True when the listener is readable.
    fn wait_for_connection(&self, listener: &UnixListener, timeout: Option<Duration>) -> bool {
        let mut fds = [
            PollFd::new(listener.as_fd(), PollFlags::POLLIN),
            PollFd::new(self.doorbell.as_fd(), PollFlags::POLLIN),
        ];
        let timeout = timeout.map_or(PollTimeout::NONE, |t| {
            PollTimeout::try_from(t).unwrap_or(PollTimeout::MAX)
        });
        // poll needs no descriptor of its own: it works at the limit too.
        if poll(&mut fds, timeout).is_err() {
            return false;
        }
        let [listening, _] = &fds;
        listening
            .revents()
            .is_some_and(|r| r.intersects(PollFlags::POLLIN | PollFlags::POLLERR))
    }
}

/// Where requests go: the supervisor loop, or — for the logs — the log thread.
#[derive(Clone)]
struct Routes {
    events: EventSender,
    logs: Logs,
}

fn accept_loop(listener: UnixListener, routes: Routes, policy: AccessPolicy, gate: &ControlGate) {
    let slots = Arc::clone(&gate.slots);
    let mut reserve = Reserve::taken_at_start_up();
    let mut backoff = FIRST_ACCEPT_BACKOFF;
    let mut guard = ThreadGuard::new("control");
    loop {
        if gate.wait_while_paused() {
            continue;
        }
        // Accept only when a connection is there: at the fd limit accept() fails with EMFILE
        // whether or not one is, and answering that with the reserve each time gave the
        // reserve up to every other thread in a loop. A reserve not whole is refilled at
        // every turn, soon (the wait is short then), before any other thread's retry.
        let whole = reserve.refill();
        let timeout = if whole { None } else { Some(REFILL_INTERVAL) };
        if !gate.wait_for_connection(&listener, timeout) {
            continue;
        }
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) if e.kind() == ErrorKind::WouldBlock => continue,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if e.raw_os_error() == Some(libc::ECONNABORTED) => continue,
            Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                if reserve.accept_with(&listener, |stream| {
                    if let Err(caught) = guard.run(|| serve_from_reserve(stream, &routes, policy)) {
                        guard.report(
                            caught,
                            "answering from the reserve",
                            "that connection is closed",
                        );
                    }
                }) {
                    backoff = FIRST_ACCEPT_BACKOFF;
                } else {
                    warn_limited("control socket: clusterd is out of file descriptors; waiting before accepting again");
                    // Not the doubling backoff: the reserve is retried every turn.
                    thread::sleep(REFILL_INTERVAL);
                }
                continue;
            }
            Err(e) => {
                warn_limited(&format!("control socket: accept failed: {e}"));
                thread::sleep(backoff);
                backoff = (backoff * 2).min(MAX_ACCEPT_BACKOFF);
                continue;
            }
        };
        backoff = FIRST_ACCEPT_BACKOFF;
        // A panic costs only that connection, never the accept loop (see thread_guard).
        if let Err(caught) = guard.run(|| dispatch(stream, &routes, policy, &slots)) {
            guard.report(
                caught,
                "dispatching a connection",
                "that connection is closed",
            );
        }
    }
}

/// Descriptors the control thread keeps for answering at the fd limit (see [`Reserve`]).
const RESERVE_FDS: usize = 2;
/// How soon a reserve not whole is opened again (and a connection that came at the limit
/// without one is tried again).
const REFILL_INTERVAL: Duration = Duration::from_millis(5);

/// The reserve opened by [`bind_control_socket`], before any unit binds a socket or spawns:
/// at start-up at the limit, the units' sockets would otherwise have taken every descriptor
/// before the control thread could open one.
static START_UP_RESERVE: Mutex<Vec<OwnedFd>> = Mutex::new(Vec::new());

/// The gate's doorbell, made with the control socket: at start-up at the limit, the units
/// would otherwise take the descriptor it needs before [`serve`] runs (clusterd then exited).
static START_UP_DOORBELL: Mutex<Option<EventFd>> = Mutex::new(None);

fn new_doorbell() -> std::io::Result<EventFd> {
    Ok(EventFd::from_flags(
        EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK,
    )?)
}

/// The control thread's own file descriptors, for answering at the fd limit. They are opened
/// at start-up before anything else can take them, and only the control thread ever gives one
/// up: when a connection is there (poll said so) and accept() failed with EMFILE, it closes
/// one and accepts at once; once that connection is answered, its descriptor is kept, shut
/// down, as the reserve (never closed, so no other thread can take it meanwhile). Only the
/// instant between that close and the accept is a race with the other threads (a spawn
/// retrying, the log thread); losing it leaves the other reserve descriptor for the next
/// connection, and the lost one is reopened at the control thread's next turn, within
/// [`REFILL_INTERVAL`].
struct Reserve(Vec<OwnedFd>);

impl Reserve {
    fn open_one() -> Option<OwnedFd> {
        std::fs::File::open("/dev/null").ok().map(OwnedFd::from)
    }

    /// The descriptors opened at start-up (an adopted socket after a re-exec has none: they
    /// are opened now).
    fn taken_at_start_up() -> Reserve {
        let early = std::mem::take(
            &mut *START_UP_RESERVE
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        let mut reserve = Reserve(early);
        reserve.refill();
        reserve
    }

    /// Opens what is missing, if descriptors are free. True when the reserve is whole.
    fn refill(&mut self) -> bool {
        while self.0.len() < RESERVE_FDS {
            match Reserve::open_one() {
                Some(fd) => self.0.push(fd),
                None => return false,
            }
        }
        true
    }

    /// At the fd limit with a connection waiting: gives one reserve descriptor up to accept
    /// it, lets `serve` answer it on this thread, and keeps the connection's descriptor as the
    /// reserve. False when there is no reserve to give.
    fn accept_with(&mut self, listener: &UnixListener, serve: impl FnOnce(&UnixStream)) -> bool {
        let Some(spare) = self.0.pop() else {
            return false;
        };
        drop(spare);
        match listener.accept() {
            Ok((stream, _)) => {
                serve(&stream);
                let _ = stream.shutdown(Shutdown::Both);
                self.0.push(OwnedFd::from(stream));
            }
            // Another thread took the descriptor in the instant: the next turn refills.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {}
            // Nothing to accept after all: take the descriptor back at once.
            Err(_) => {
                self.refill();
            }
        }
        true
    }
}

/// Answers one connection accepted with the reserve, on the control thread: the operator's
/// (root's or clusterd's user's) only, since nothing else can be accepted meanwhile; others
/// are told why at once, without reading their request.
fn serve_from_reserve(stream: &UnixStream, routes: &Routes, policy: AccessPolicy) {
    warn_limited(
        "control socket: clusterd is out of file descriptors; answering root from its reserve",
    );
    let peer = getsockopt(stream, sockopt::PeerCredentials);
    if !peer.is_ok_and(|p| policy.privileged(p.uid())) {
        // Never block on a client that is not reading.
        let _ = stream.set_nonblocking(true);
        write_response(
            stream,
            &Response::failed(
                "clusterd is out of file descriptors and answers only root (and its own user) until some are free; try again",
            ),
            ANSWER_DEADLINE,
        );
        return;
    }
    let response = match answer(stream, routes, policy) {
        Outcome::Answer(response) => response,
        Outcome::Logs(_) => Response::failed(
            "clusterd is out of file descriptors: it cannot show logs until some are free (status and the other requests work)",
        ),
    };
    write_response(stream, &response, ANSWER_DEADLINE);
}

/// Serves one connection on a thread of its own, if a slot is free for its peer (see
/// [`Slots`]); if not, it gets an error at once.
fn dispatch(stream: UnixStream, routes: &Routes, policy: AccessPolicy, slots: &Arc<Slots>) {
    // The kernel's record of the peer: a syscall that never blocks. A peer that cannot be
    // identified is counted as an unprivileged uid (and refused in `answer`).
    let uid = getsockopt(&stream, sockopt::PeerCredentials).map_or(u32::MAX, |p| p.uid());
    let slot = match Slots::take(slots, uid, policy.privileged(uid)) {
        Ok(slot) => slot,
        Err(why) => {
            warn_limited(&format!("control socket: {why}; refusing a connection"));
            // Never block on a client that is not reading.
            let _ = stream.set_nonblocking(true);
            write_response(
                &stream,
                &Response::failed(format!("{why}; try again")),
                ANSWER_DEADLINE,
            );
            return;
        }
    };
    let routes = routes.clone();
    let spawned = thread::Builder::new()
        .name("control-conn".into())
        .spawn(move || {
            let _slot = slot;
            let mut thread_guard = ThreadGuard::new("control-conn");
            let served = thread_guard.run(|| match answer(&stream, &routes, policy) {
                Outcome::Logs(query) => routes.logs.serve(query, stream),
                Outcome::Answer(response) => write_response(&stream, &response, ANSWER_DEADLINE),
            });
            if let Err(caught) = served {
                thread_guard.report(caught, "serving a connection", "that connection is closed");
            }
        });
    if let Err(e) = spawned {
        // The closure (and with it the slot and the stream) was dropped.
        warn_limited(&format!("control socket: cannot serve a connection: {e}"));
    }
}

/// The connections being served, counted by who holds them. [`MAX_CONNECTIONS`] in all;
/// unprivileged uids together at most [`MAX_CONNECTIONS`] − [`PRIVILEGED_SLOTS`], each at
/// most [`MAX_PER_UID`]. So one admitted user's script that opens connections and sends
/// nothing holds at most [`MAX_PER_UID`] slots for [`REQUEST_DEADLINE`], and root always finds
/// one.
#[derive(Default)]
struct Slots(Mutex<SlotCounts>);

#[derive(Default)]
struct SlotCounts {
    total: usize,
    unprivileged: usize,
    per_uid: HashMap<u32, usize>,
}

impl Slots {
    fn take(slots: &Arc<Slots>, uid: u32, privileged: bool) -> Result<Slot, String> {
        let mut counts = slots.0.lock().unwrap_or_else(PoisonError::into_inner);
        if counts.total >= MAX_CONNECTIONS {
            return Err(format!(
                "clusterd is serving {MAX_CONNECTIONS} connections already"
            ));
        }
        if !privileged {
            if counts.unprivileged >= MAX_CONNECTIONS - PRIVILEGED_SLOTS {
                return Err(format!(
                    "clusterd is serving {} connections of users other than root already",
                    MAX_CONNECTIONS - PRIVILEGED_SLOTS
                ));
            }
            let mine = counts.per_uid.entry(uid).or_insert(0);
            if *mine >= MAX_PER_UID {
                return Err(format!(
                    "clusterd is serving {MAX_PER_UID} connections of uid {uid} already"
                ));
            }
            *mine += 1;
            counts.unprivileged += 1;
        }
        counts.total += 1;
        Ok(Slot {
            slots: Arc::clone(slots),
            uid: (!privileged).then_some(uid),
        })
    }
}

/// A slot taken, given back when dropped (when the connection's thread ends).
struct Slot {
    slots: Arc<Slots>,
    /// The unprivileged uid it counts for; None for root and clusterd's own user.
    uid: Option<u32>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.slots.0.lock().unwrap_or_else(PoisonError::into_inner);
        counts.total = counts.total.saturating_sub(1);
        if let Some(uid) = self.uid {
            counts.unprivileged = counts.unprivileged.saturating_sub(1);
            if let Some(mine) = counts.per_uid.get_mut(&uid) {
                *mine = mine.saturating_sub(1);
                if *mine == 0 {
                    counts.per_uid.remove(&uid);
                }
            }
        }
    }
}

/// A warning at most once a second from the control thread, so that a client that keeps
/// clusterd at its limits cannot fill the log.
fn warn_limited(message: &str) {
    static LAST: std::sync::Mutex<Option<std::time::Instant>> = std::sync::Mutex::new(None);
    let now = std::time::Instant::now();
    let Ok(mut last) = LAST.lock() else { return };
    if last.is_none_or(|at| now.duration_since(at) >= Duration::from_secs(1)) {
        *last = Some(now);
        warn!("{message}");
    }
}

/// What a connection gets: an answer, or (`logs`) to be handed to the log thread.
enum Outcome {
    Answer(Response),
    Logs(LogsQuery),
}

/// Checks the peer, reads its request and has it answered (by the supervisor loop, which
/// answers through a channel and never touches the connection).
fn answer(stream: &UnixStream, routes: &Routes, policy: AccessPolicy) -> Outcome {
    let response = match getsockopt(stream, sockopt::PeerCredentials) {
        Err(e) => Response::failed(format!("cannot identify the client: {e}")),
        Ok(peer) if !policy.allows(peer.uid(), peer.gid(), || peer_groups(stream)) => {
            warn!(
                "control socket: refused uid {} (pid {})",
                peer.uid(),
                peer.pid()
            );
            // Read (and drop) the request first: hanging up on an unread request would make
            // the client's write fail, and it would never see this answer.
            let _ = read_request(stream, REFUSED_DEADLINE);
            Response::failed(format!(
                "permission denied: uid {} may not control clusterd (allowed: root, uid {}{}); join the socket's group (clusterd --socket-group) or use sudo",
                peer.uid(),
                policy.owner,
                policy
                    .group
                    .map(|g| format!(", group {g}"))
                    .unwrap_or_default()
            ))
        }
        Ok(peer) => match read_request(stream, REQUEST_DEADLINE) {
            Err(error) => Response::failed(error),
            // Replacing clusterd's binary is root's (or clusterd's own user's), not the
            // socket group's: the group may run units, not decide what runs as clusterd.
            Ok(RequestEnvelope {
                request: Request::DaemonReexec {},
                ..
            }) if !policy.privileged(peer.uid()) => Response::failed(format!(
                "permission denied: only root and uid {} may re-exec clusterd (uid {} may not)",
                policy.owner,
                peer.uid()
            )),
            Ok(RequestEnvelope {
                request:
                    Request::Logs {
                        unit,
                        lines,
                        follow,
                        instance,
                        stream: which,
                        after,
                    },
                ..
            }) => {
                if !is_valid_unit_name(&unit) {
                    Response::failed(format!("invalid unit name {unit:?}"))
                } else {
                    // The log thread answers, and keeps the connection to follow.
                    return Outcome::Logs(LogsQuery {
                        unit,
                        lines: lines.min(MAX_LOG_LINES),
                        follow,
                        instance,
                        stream: which.map(|s| s.name().to_string()),
                        after,
                    });
                }
            }
            Ok(RequestEnvelope {
                request: Request::ReopenLogs {},
                ..
            }) => {
                routes.logs.reopen();
                Response::done("reopening every log file")
            }
            // The connection goes with the re-exec: the new image answers it.
            Ok(RequestEnvelope {
                request: Request::DaemonReexec {},
                ..
            }) => match crate::daemon::reexec::requester::hand_in(stream) {
                Err(why) => Response::failed(why),
                Ok(()) => ask_the_loop(routes, Request::DaemonReexec {}),
            },
            Ok(envelope) => ask_the_loop(routes, envelope.request),
        },
    };
    Outcome::Answer(response)
}

/// Hands `request` to the supervisor loop and waits for its answer.
fn ask_the_loop(routes: &Routes, request: Request) -> Response {
    let (reply, answer) = crossbeam_channel::bounded(1);
    let sent = routes.events.send(Event::Control { request, reply });
    match sent.ok().and_then(|()| answer.recv().ok()) {
        Some(response) => response,
        None => Response::failed("clusterd is shutting down"),
    }
}

/// Writes the answer line, which the client must take whole within `deadline` (each write
/// waits only for what is left of it: a client reading a byte now and then cannot stretch it).
fn write_response(mut stream: &UnixStream, response: &Response, deadline: Duration) {
    let mut line = serde_json::to_vec(response).unwrap_or_else(|_| b"{\"ok\":false}".to_vec());
    line.push(b'\n');
    let give_up_at = Instant::now() + deadline;
    let mut rest = &line[..];
    while !rest.is_empty() {
        let left = give_up_at.saturating_duration_since(Instant::now());
        if left.is_zero() {
            debug!("control socket: client did not take its answer within {deadline:?}");
            return;
        }
        let _ = stream.set_write_timeout(Some(left));
        match stream.write(rest) {
            Ok(0) => return,
            Ok(n) => rest = rest.get(n..).unwrap_or_default(),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                debug!("control socket: client went away before the answer: {e}");
                return;
            }
        }
    }
}

/// Reads one request line, which must arrive whole within `deadline` (a client sending a byte
/// every few seconds cannot hold the connection) and be at most [`MAX_REQUEST_BYTES`].
fn read_request(mut stream: &UnixStream, deadline: Duration) -> Result<RequestEnvelope, String> {
    let give_up_at = std::time::Instant::now() + deadline;
    let mut line = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let left = give_up_at.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(format!(
                "the request did not arrive within {}s",
                deadline.as_secs()
            ));
        }
        let _ = stream.set_read_timeout(Some(left));
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                line.extend_from_slice(&chunk[..n]);
                if let Some(end) = line.iter().position(|&b| b == b'\n') {
                    line.truncate(end);
                    break;
                }
                if line.len() > MAX_REQUEST_BYTES {
                    break;
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(e) => return Err(format!("cannot read the request: {e}")),
        }
    }
    if line.len() > MAX_REQUEST_BYTES {
        return Err(format!("request longer than {MAX_REQUEST_BYTES} bytes"));
    }
    let value: serde_json::Value =
        serde_json::from_slice(&line).map_err(|e| format!("malformed request: {e}"))?;
    match value.get("version").and_then(|v| v.as_u64()) {
        Some(v) if v == u64::from(PROTOCOL_VERSION) => {}
        Some(v) => {
            return Err(format!(
                "unsupported protocol version {v} (this clusterd speaks version {PROTOCOL_VERSION}); use a matching clusterctl"
            ))
        }
        None => return Err("malformed request: no protocol version".into()),
    }
    serde_json::from_value(value).map_err(|e| format!("invalid request: {e}"))
}

/// Removes the socket file at shutdown.
pub(crate) struct SocketFile(pub PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
