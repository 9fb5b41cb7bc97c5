//! The I/O thread: reads every instance's worker channel and clusterd's NOTIFY_SOCKET with one
//! epoll, and turns what arrives into [`Event`]s for the supervisor loop.
//!
//! The worker channel is one end of a Unix socketpair carrying newline-delimited JSON, the
//! framing Node uses for `process.send()` with `NODE_CHANNEL_SERIALIZATION_MODE=json`, so an
//! unmodified `process.send({act: 'suicide'})` arrives as `{"act":"suicide"}\n`. clusterd must
//! always drain the channel: a Node worker blocks when its channel is full.
//!
//! For instances of `node_cluster` units the thread is also the Node cluster primary
//! ([`crate::node_cluster`]): Node's internal messages go to the [`Primary`], which answers
//! through each channel's [`Outbox`] (non-blocking writes, EPOLLOUT when the channel is full)
//! and may watch round-robin listening sockets on the same epoll. User messages
//! (`process.send(...)`) are parsed as for every other instance.
//!
//! Backpressure: every event sent to the supervisor carries a [`Credit`] of its channel's
//! budget ([`MAX_EVENTS_IN_FLIGHT`]); a channel whose budget is spent is not read until the
//! supervisor has handled its events, so a worker that writes as fast as it can is slowed to
//! clusterd's pace by its own full socket buffer and costs clusterd no memory. NOTIFY_SOCKET,
//! which anyone may write to, has a budget of its own. Warnings about bad lines are limited
//! per channel ([`LogLimit`]); messages that mean nothing to clusterd are not sent at all.
//!
//! The other way, `clusterctl send` queues at most [`MAX_SEND_QUEUE_BYTES`] for one instance
//! and [`MAX_SEND_QUEUE_TOTAL`] for all: past that the request is refused with the reason
//! (the instance does not read its channel), at once, before anything is queued.

use std::collections::HashMap;
use std::io::{ErrorKind, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use log::{debug, warn};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};

use crate::daemon::os::cgroup::cgroup_of;
use crate::daemon::os::doorbell::Doorbell;
use crate::daemon::sd_notify::{self, Received};
use crate::daemon::signals::EventSender;
use crate::daemon::thread_guard::ThreadGuard;
use crate::log_limit::{LogLimit, Verdict};
use crate::node_cluster::liveness::Liveness;
use crate::node_cluster::outbox::{CarriedLine, Charge, Flushed, Outbox, Outgoing};
use crate::node_cluster::primary::handover::HeldPrimary;
use crate::node_cluster::primary::{Whose, LISTENER_TOKEN_BASE};
use crate::node_cluster::{Primary, WorkerInfo};
use crate::printable::printable;
use crate::supervisor::event::{Credit, Event, NotifyMessage, WorkerMessage};
use crate::supervisor::process_control::SpawnId;

/// A line longer than this is dropped (and logged) instead of buffered.
pub(crate) const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// Events of one channel (or of NOTIFY_SOCKET) the supervisor may have still to handle;
/// beyond this the I/O thread stops reading there until it has handled them all. The kernel's
/// socket buffer then fills and the writer blocks: a flood costs clusterd no memory.
pub(crate) const MAX_EVENTS_IN_FLIGHT: usize = 64;

/// Lines queued for a Node worker that does not read them; beyond this its channel is not
/// read either (its requests would only queue more answers).
const MAX_QUEUED_LINES: usize = 1024;

/// Bytes of `clusterctl send` messages clusterd holds for one instance that has not read
/// them (beyond what its socket buffer already holds): four messages of the largest size.
pub(crate) const MAX_SEND_QUEUE_BYTES: usize = 256 * 1024;

/// The same for all instances together, so that a message to 4096 instances that read
/// nothing cannot cost clusterd a gigabyte.
pub(crate) const MAX_SEND_QUEUE_TOTAL: usize = 16 * 1024 * 1024;

/// What one queued line costs besides its bytes (its vector, its queue slot), counted so
/// that a flood of one-byte messages is bounded too.
const QUEUED_LINE_OVERHEAD: usize = 64;

const WAKE_TOKEN: u64 = u64::MAX;
const NOTIFY_TOKEN: u64 = u64::MAX - 1;

enum Command {
    /// A new instance's channel, its label for the log (`web[2]`), the name of its cgroup
    /// (if it has one), `Some` for a Node cluster worker, and its unit's `watchdog` when
    /// its event loop is to be checked.
    Watch(
        SpawnId,
        OwnedFd,
        String,
        Option<String>,
        Option<WorkerInfo>,
        Option<Duration>,
    ),
    /// The supervisor has handled every event of this channel (or, with `NOTIFY_TOKEN`, of
    /// NOTIFY_SOCKET): read it again.
    Resume(SpawnId),
    Forget(SpawnId),
    /// The instance is about to be stopped: hand it no new connections.
    Withdraw(SpawnId),
    /// The same, and ask it to close its servers and leave (`{act:'disconnect'}`).
    Disconnect(SpawnId),
    /// The unit's last Node worker was stopped: release its sockets.
    ReleaseUnit(String),
    /// Write this line on the instance's channel (the unit's `stop_message`, or a
    /// `clusterctl send` message with its charge).
    Send(SpawnId, Vec<u8>, Option<Charge>),
    /// `daemon-reexec`: once the Node primary has settled, say what is held, then read
    /// nothing until resumed (or dropped).
    HandOver(Sender<Result<IoHandover, String>>, Receiver<()>),
    /// After `daemon-reexec`: the old image's Node primary, with its fds (checked).
    AdoptPrimary(HeldPrimary, HashMap<i32, OwnedFd>),
    /// After `daemon-reexec`, right after the channel's `Watch`: what the old image had not
    /// written to it yet (queued first, in order) and the incomplete line it had read.
    CarryIn(SpawnId, Vec<Outgoing>, Vec<u8>, bool),
}

/// How long `daemon-reexec` waits for the Node workers to answer the hand-offs in flight.
const SETTLE_DEADLINE: Duration = Duration::from_secs(1);

/// What the I/O thread holds, as `daemon-reexec` needs it: the fds (their numbers stay the
/// same in the new image) and the Node primary.
pub(crate) struct IoHandover {
    pub channels: Vec<(SpawnId, i32)>,
    /// What is still in flight on a channel (none for most).
    pub carried: Vec<CarriedChannel>,
    pub notify: Option<i32>,
    pub primary: HeldPrimary,
}

/// What a worker channel holds in clusterd's memory at a re-exec, besides its fd: the lines
/// not written to it yet (`clusterctl send` messages a worker did not read, a `stop_message`)
/// and the start of a line it is writing. Without it those would be lost at the exec, and
/// the worker's next bytes read as a malformed line.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CarriedChannel {
    pub id: SpawnId,
    /// In the order they are to be written; the first may be the rest of a line.
    pub unwritten: Vec<CarriedLine>,
    /// The bytes of the line the worker is in the middle of writing.
    pub unread: Vec<u8>,
    /// Inside an oversized line (its rest is dropped up to its newline).
    pub discarding: bool,
}

/// A hand-over asked for, waiting for the primary to settle.
struct HandingOver {
    reply: Sender<Result<IoHandover, String>>,
    resume: Receiver<()>,
    deadline: Instant,
}

/// One event's worth of a channel's budget ([`MAX_EVENTS_IN_FLIGHT`]). It travels inside the
/// event (as its [`Credit`]); dropping it (once the supervisor has handled the event) gives it
/// back, and the last one back resumes a channel that was paused for want of budget.
struct BudgetCredit(Arc<Budget>);

impl BudgetCredit {
    fn take(budget: &Arc<Budget>) -> Credit {
        budget.in_flight.fetch_add(1, Ordering::SeqCst);
        Credit::new(BudgetCredit(Arc::clone(budget)))
    }
}

impl Drop for BudgetCredit {
    fn drop(&mut self) {
        let budget = &self.0;
        let last_back = budget.in_flight.fetch_sub(1, Ordering::SeqCst) == 1;
        if last_back
            && budget.paused.swap(false, Ordering::SeqCst)
            && budget.commands.send(Command::Resume(budget.id)).is_ok()
        {
            let _ = budget.wake.write(1);
        }
    }
}

/// The events of one channel (or of NOTIFY_SOCKET) that are on their way to the supervisor.
struct Budget {
    id: SpawnId,
    in_flight: AtomicUsize,
    /// The channel is not being read until `in_flight` is back to 0.
    paused: AtomicBool,
    commands: Sender<Command>,
    wake: Arc<EventFd>,
}

impl Budget {
    fn new(id: SpawnId, commands: Sender<Command>, wake: Arc<EventFd>) -> Arc<Budget> {
        Arc::new(Budget {
            id,
            in_flight: AtomicUsize::new(0),
            paused: AtomicBool::new(false),
            commands,
            wake,
        })
    }

    fn spent(&self) -> bool {
        self.in_flight.load(Ordering::SeqCst) >= MAX_EVENTS_IN_FLIGHT
    }

    /// Marks the source paused; returns false (and unmarks it) if every credit came back
    /// meanwhile, in which case nobody else would resume it.
    fn pause(&self) -> bool {
        self.paused.store(true, Ordering::SeqCst);
        !(self.in_flight.load(Ordering::SeqCst) == 0 && self.paused.swap(false, Ordering::SeqCst))
    }
}

/// The supervisor's handle on the I/O thread.
#[derive(Clone)]
pub(crate) struct WorkerIo {
    commands: Sender<Command>,
    /// Rung after each command, or once at the end of the loop's turn
    /// ([`WorkerIo::defer_wakes`]).
    bell: Doorbell,
    /// Bytes of `clusterctl send` messages queued for each instance, and for all of them.
    send_queues: Arc<Mutex<HashMap<SpawnId, Arc<AtomicUsize>>>>,
    send_total: Arc<AtomicUsize>,
}

impl WorkerIo {
    /// Starts the thread. `notify` is clusterd's NOTIFY_SOCKET, already bound.
    pub(crate) fn start(
        events: EventSender,
        notify: Option<UnixDatagram>,
    ) -> std::io::Result<WorkerIo> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        let wake = Arc::new(EventFd::from_flags(
            EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK,
        )?);
        epoll.add(
            wake.as_fd(),
            EpollEvent::new(EpollFlags::EPOLLIN, WAKE_TOKEN),
        )?;
        if let Some(socket) = &notify {
            epoll.add(
                socket.as_fd(),
                EpollEvent::new(EpollFlags::EPOLLIN, NOTIFY_TOKEN),
            )?;
        }
        let (commands, command_rx) = crossbeam_channel::unbounded();
        let thread_wake = Arc::clone(&wake);
        let notify_budget = Budget::new(NOTIFY_TOKEN, commands.clone(), Arc::clone(&wake));
        let thread_commands = commands.clone();
        thread::Builder::new()
            .name("worker-io".into())
            .spawn(move || {
                // A worker channel reports end-of-file when its instance dies, before the
                // kernel sends clusterd the SIGCHLD: woken at normal priority, this thread
                // would preempt the dying process and delay the restart by its own work.
                // SCHED_BATCH: same share of the CPU, but a wake-up does not preempt.
                let batch = libc::sched_param { sched_priority: 0 };
                // SAFETY: sched_setscheduler on this thread (0) with a valid sched_param.
                if unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &batch) } != 0 {
                    log::debug!(
                        "worker I/O thread: cannot use SCHED_BATCH: {}",
                        std::io::Error::last_os_error()
                    );
                }
                IoThread {
                    epoll,
                    wake: thread_wake,
                    commands: command_rx,
                    own_commands: thread_commands,
                    events,
                    notify,
                    notify_budget,
                    notify_paused: false,
                    channels: HashMap::new(),
                    cgroups: HashMap::new(),
                    primary: Primary::default(),
                    liveness: Liveness::default(),
                    handing_over: None,
                }
                .run()
            })?;
        Ok(WorkerIo {
            commands,
            bell: Doorbell::new(wake),
            send_queues: Arc::default(),
            send_total: Arc::default(),
        })
    }

    /// Starts reading clusterd's end of a new instance's worker channel; `node` makes
    /// clusterd the instance's Node cluster primary.
    pub(crate) fn watch(
        &self,
        id: SpawnId,
        channel: OwnedFd,
        label: String,
        cgroup: Option<String>,
        node: Option<WorkerInfo>,
        liveness: Option<std::time::Duration>,
    ) {
        if let Ok(mut queues) = self.send_queues.lock() {
            queues.insert(id, Arc::default());
        }
        self.command(Command::Watch(id, channel, label, cgroup, node, liveness));
    }

    /// The instance is gone: close its channel.
    pub(crate) fn forget(&self, id: SpawnId) {
        if let Ok(mut queues) = self.send_queues.lock() {
            queues.remove(&id);
        }
        self.command(Command::Forget(id));
    }

    /// Asks a Node cluster worker to close its servers and exit (`{act:'disconnect'}`);
    /// sends `kill_signal` to `pgid` after half of `kill_timeout` if it is still there, or
    /// at once if the instance does not speak the cluster protocol.
    /// The Node cluster worker `id` is about to be stopped: hand it no new connections.
    pub(crate) fn withdraw(&self, id: SpawnId) {
        self.command(Command::Withdraw(id));
    }

    /// The Node cluster worker `id` is to close its servers and exit (`{act:'disconnect'}`);
    /// it gets no new connections from now on.
    pub(crate) fn disconnect(&self, id: SpawnId) {
        self.command(Command::Disconnect(id));
    }

    /// Writes `line` on instance `id`'s channel (its `stop_message`: one per stop, always
    /// queued).
    pub(crate) fn send(&self, id: SpawnId, line: Vec<u8>) {
        self.command(Command::Send(id, line, None));
    }

    /// Queues `line` from `clusterctl send` for instance `id`, or says why not: an instance
    /// that leaves [`MAX_SEND_QUEUE_BYTES`] unread (or all of them [`MAX_SEND_QUEUE_TOTAL`])
    /// gets no more, and the client is told at once.
    pub(crate) fn send_from_client(&self, id: SpawnId, line: Vec<u8>) -> Result<(), String> {
        let queue = self
            .send_queues
            .lock()
            .ok()
            .and_then(|queues| queues.get(&id).cloned())
            .ok_or_else(|| "its worker channel is closed".to_string())?;
        let cost = line.len() + QUEUED_LINE_OVERHEAD;
        let charge = Charge::take(
            &[
                (&queue, MAX_SEND_QUEUE_BYTES),
                (&self.send_total, MAX_SEND_QUEUE_TOTAL),
            ],
            cost,
        )
        .map_err(|which| match which {
            0 => format!(
                "{} bytes of earlier messages are still queued, unread (the instance does not read its worker channel); not sent",
                queue.load(Ordering::SeqCst)
            ),
            _ => format!(
                "clusterd already holds {} bytes of messages that instances have not read; not sent",
                self.send_total.load(Ordering::SeqCst)
            ),
        })?;
        self.command(Command::Send(id, line, Some(charge)));
        Ok(())
    }

    /// The unit's Node workers were all stopped: close the sockets clusterd holds for them
    /// (shortly, so that a restart finds them open).
    pub(crate) fn release_unit(&self, unit: &str) {
        self.command(Command::ReleaseUnit(unit.to_string()));
    }

    /// `daemon-reexec`: the thread stops reading and says what it holds; it reads on once
    /// the returned sender is dropped (a re-exec that failed before its exec).
    pub(crate) fn hand_over(&self, deadline: Instant) -> Result<(IoHandover, Sender<()>), String> {
        let (reply, held) = crossbeam_channel::bounded(1);
        let (go_on, resume) = crossbeam_channel::bounded(1);
        self.command(Command::HandOver(reply, resume));
        // Waited for here: not at the end of the turn.
        self.bell.ring_now();
        let held = held
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .map_err(|_| "the worker I/O thread did not stop in time".to_string())??;
        Ok((held, go_on))
    }

    /// After `daemon-reexec`, once instance `carried.id`'s channel is watched again: what
    /// the old image had not written to it (queued before anything else, its `clusterctl
    /// send` lines counted against the allowances as when they were sent, even past them: they
    /// were accepted) and the incomplete line it had read.
    pub(crate) fn carry_in(&self, carried: CarriedChannel) {
        let queue = self
            .send_queues
            .lock()
            .ok()
            .and_then(|queues| queues.get(&carried.id).cloned());
        let lines = carried
            .unwritten
            .into_iter()
            .map(|line| {
                let cost = line.bytes.len() + QUEUED_LINE_OVERHEAD;
                let charge = match (&queue, line.charged) {
                    (Some(queue), true) => {
                        Charge::take(&[(queue, usize::MAX), (&self.send_total, usize::MAX)], cost)
                            .ok()
                    }
                    _ => None,
                };
                Outgoing {
                    line: line.bytes,
                    fd: None,
                    charge,
                }
            })
            .collect();
        self.command(Command::CarryIn(
            carried.id,
            lines,
            carried.unread,
            carried.discarding,
        ));
    }

    /// After `daemon-reexec`, once every instance's channel is watched again: the old
    /// image's Node primary.
    pub(crate) fn adopt_primary(&self, held: HeldPrimary, fds: HashMap<i32, OwnedFd>) {
        self.command(Command::AdoptPrimary(held, fds));
    }

    fn command(&self, command: Command) {
        if self.commands.send(command).is_ok() {
            self.bell.ring();
        }
    }

    /// From now until [`WorkerIo::flush_wakes`], commands are queued with one wake-up owed
    /// (the loop's turn: a restart's child execs meanwhile; `daemon-reexec`'s new image
    /// watches thousands of channels at once).
    pub(crate) fn defer_wakes(&self) {
        self.bell.defer();
    }

    /// Wakes the thread once for what was queued since [`WorkerIo::defer_wakes`], and for
    /// each command again.
    pub(crate) fn flush_wakes(&self) {
        self.bell.flush();
    }
}

struct Channel {
    stream: UnixStream,
    /// `web[2]`, for the log.
    label: String,
    /// Its events on their way to the supervisor.
    budget: Arc<Budget>,
    /// Not being read: the supervisor has not caught up with its events, or it does not
    /// read what clusterd writes to it.
    paused: bool,
    malformed: LogLimit,
    oversized: LogLimit,
    unknown: LogLimit,
    /// Bytes of an incomplete line.
    pending: Vec<u8>,
    /// Inside an oversized line: drop bytes until the next newline.
    discarding: bool,
    /// What clusterd still has to write (Node cluster messages, `clusterctl send`).
    outbox: Outbox,
    /// The outbox is blocked on a full channel: EPOLLOUT is wanted.
    waiting_to_write: bool,
    /// What epoll watches the channel for now (changed only when it must be).
    interest: EpollFlags,
}

impl Channel {
    fn new(stream: UnixStream, label: String, budget: Arc<Budget>) -> Channel {
        Channel {
            stream,
            label,
            budget,
            paused: false,
            malformed: LogLimit::default(),
            oversized: LogLimit::default(),
            unknown: LogLimit::default(),
            pending: Vec::new(),
            discarding: false,
            outbox: Outbox::default(),
            waiting_to_write: false,
            interest: EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP,
        }
    }
}

struct IoThread {
    epoll: Epoll,
    wake: Arc<EventFd>,
    commands: Receiver<Command>,
    /// For the budgets of new channels, whose credits send `Resume` here.
    own_commands: Sender<Command>,
    events: EventSender,
    notify: Option<UnixDatagram>,
    notify_budget: Arc<Budget>,
    notify_paused: bool,
    channels: HashMap<SpawnId, Channel>,
    /// Instances by the name of their cgroup, to attribute notifications.
    cgroups: HashMap<String, SpawnId>,
    /// The Node cluster primary of every `node_cluster` instance.
    primary: Primary,
    /// When each Node worker of a unit with `watchdog` gets its next liveness check.
    liveness: Liveness,
    /// `daemon-reexec` asked for what the thread holds.
    handing_over: Option<HandingOver>,
}

impl IoThread {
    fn run(mut self) {
        let mut ready = vec![EpollEvent::empty(); 64];
        let mut guard = ThreadGuard::new("worker-io");
        loop {
            // While a hand-over waits for the primary to settle, it is looked at every 5 ms.
            let settling =
                (self.handing_over.as_ref()).map(|_| Instant::now() + Duration::from_millis(5));
            let next = match (self.liveness.next_deadline(), settling) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let timeout = next.map_or(EpollTimeout::NONE, |at| {
                let left = at.saturating_duration_since(Instant::now());
                // Rounded up: waking a moment early would only wait again.
                let ms = left.as_millis().saturating_add(1);
                EpollTimeout::try_from(ms.min(i32::MAX as u128) as i32)
                    .unwrap_or(EpollTimeout::NONE)
            });
            let count = match self.epoll.wait(&mut ready, timeout) {
                Ok(n) => n,
                Err(nix::Error::EINTR) => continue,
                Err(e) => {
                    log::error!("worker I/O thread: epoll_wait failed: {e}");
                    return;
                }
            };
            for event in &ready[..count] {
                let token = event.data();
                // A panic while handling one event costs only that channel (see thread_guard).
                let handled = guard.run(|| self.handle_event(token, event.events()));
                match handled {
                    Ok(true) => {}
                    Ok(false) => return,
                    Err(caught) => {
                        let consequence = if self.channels.contains_key(&token) {
                            self.close(token);
                            "that instance's channel is closed"
                        } else {
                            "nothing is dropped"
                        };
                        guard.report(caught, "handling an event", consequence);
                    }
                }
            }
            self.deliver();
            self.check_liveness();
            self.try_hand_over();
        }
    }

    /// `daemon-reexec`: once the primary has settled (no hand-off in flight, nothing left to
    /// write to a Node worker), says what is held and waits until resumed; past the deadline,
    /// says why not and goes on.
    fn try_hand_over(&mut self) {
        let Some(asked) = &self.handing_over else {
            return;
        };
        let written = self
            .channels
            .iter()
            .filter(|(id, _)| self.primary.is_worker(**id))
            .all(|(_, c)| c.outbox.settled());
        if !(self.primary.settled() && written) {
            if Instant::now() >= asked.deadline {
                let _ = asked.reply.send(Err(format!(
                    "a Node cluster worker did not answer within {SETTLE_DEADLINE:?} (a connection or a message handed to it is not acknowledged)"
                )));
                self.handing_over = None;
                self.primary.release();
                self.deliver();
            }
            return;
        }
        use std::os::fd::AsRawFd;
        let held = IoHandover {
            channels: self
                .channels
                .iter()
                .map(|(id, c)| (*id, c.stream.as_raw_fd()))
                .collect(),
            carried: self
                .channels
                .iter()
                .filter_map(|(id, c)| {
                    let unwritten = c.outbox.unwritten();
                    let idle = unwritten.is_empty() && c.pending.is_empty() && !c.discarding;
                    (!idle).then(|| CarriedChannel {
                        id: *id,
                        unwritten,
                        unread: c.pending.clone(),
                        discarding: c.discarding,
                    })
                })
                .collect(),
            notify: self.notify.as_ref().map(AsRawFd::as_raw_fd),
            primary: self.primary.held(),
        };
        if let Some(asked) = self.handing_over.take() {
            let _ = asked.reply.send(Ok(held));
            // Nothing is read until the exec (or, if it fails, until resumed).
            let _ = asked.resume.recv();
        }
        self.primary.release();
        self.deliver();
    }

    /// Sends the liveness checks that are due (Node workers of units with `watchdog`).
    fn check_liveness(&mut self) {
        for id in self.liveness.due(Instant::now()) {
            let Some(channel) = self.channels.get_mut(&id) else {
                self.liveness.remove(id);
                continue;
            };
            if channel.outbox.queue_ping() {
                self.flush(id);
            }
        }
    }

    /// Handles one epoll event; false when clusterd has gone away.
    fn handle_event(&mut self, token: u64, flags: EpollFlags) -> bool {
        match token {
            WAKE_TOKEN => {
                let _ = self.wake.read();
                if !self.apply_commands() {
                    return false;
                }
            }
            NOTIFY_TOKEN => self.read_notify(),
            token if token >= LISTENER_TOKEN_BASE => {
                self.primary.on_listener_ready(token);
                self.deliver();
            }
            id => {
                if flags.contains(EpollFlags::EPOLLOUT) {
                    self.flush(id);
                }
                let paused = self.channels.get(&id).is_some_and(|c| c.paused);
                if paused {
                    // Not read while paused; a hang-up (reported whatever the
                    // interest) means the instance and its children are gone.
                    if flags.intersects(EpollFlags::EPOLLHUP | EpollFlags::EPOLLERR) {
                        self.close(id);
                    }
                } else if flags.intersects(
                    EpollFlags::EPOLLIN
                        | EpollFlags::EPOLLRDHUP
                        | EpollFlags::EPOLLHUP
                        | EpollFlags::EPOLLERR,
                ) {
                    self.read_channel(id);
                }
            }
        }
        true
    }

    /// Passes what the primary produced on: lines to their channels, events to the
    /// supervisor.
    fn deliver(&mut self) {
        let mut touched = Vec::new();
        for (id, message) in self.primary.take_outgoing() {
            if let Some(channel) = self.channels.get_mut(&id) {
                channel.outbox.push(message);
                if !touched.contains(&id) {
                    touched.push(id);
                }
            }
        }
        for id in touched {
            self.flush(id);
        }
        for (id, message) in self.primary.take_events() {
            // Made by the primary, once per worker (listening, leaving): no budget needed.
            let _ = self.events.send(Event::Worker {
                id,
                message,
                credit: Credit::none(),
            });
        }
    }

    /// Writes what the channel takes; waits for EPOLLOUT when it is full.
    fn flush(&mut self, id: SpawnId) {
        let Some(channel) = self.channels.get_mut(&id) else {
            return;
        };
        let result = channel.outbox.flush(channel.stream.as_fd());
        channel.waiting_to_write = result == Flushed::Blocked;
        // A worker that reads its answers again may send requests again.
        let resume = channel.paused
            && channel.outbox.len() < MAX_QUEUED_LINES / 2
            && !channel.budget.paused.load(Ordering::SeqCst);
        if resume {
            self.resume(id);
        } else {
            self.update_interest(id);
        }
        // A broken channel is seen by the reader as EOF/error and closed there.
    }

    /// Sets what epoll reports for a channel: readable unless paused, writable while its
    /// outbox waits for room.
    fn update_interest(&mut self, id: SpawnId) {
        let Some(channel) = self.channels.get_mut(&id) else {
            return;
        };
        let mut interest = EpollFlags::empty();
        if !channel.paused {
            interest |= EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP;
        }
        if channel.waiting_to_write {
            interest |= EpollFlags::EPOLLOUT;
        }
        if interest == channel.interest {
            return;
        }
        let mut event = EpollEvent::new(interest, id);
        match self.epoll.modify(channel.stream.as_fd(), &mut event) {
            Ok(()) => channel.interest = interest,
            Err(e) => debug!(
                "{}: cannot change what its channel is watched for: {e}",
                channel.label
            ),
        }
    }

    /// Stops reading a channel (see [`MAX_EVENTS_IN_FLIGHT`], [`MAX_QUEUED_LINES`]).
    fn pause(&mut self, id: SpawnId, for_budget: bool) {
        let Some(channel) = self.channels.get_mut(&id) else {
            return;
        };
        if for_budget && !channel.budget.pause() {
            return; // every credit came back meanwhile
        }
        if !channel.paused {
            debug!(
                "{}: not reading its channel until clusterd catches up",
                channel.label
            );
            channel.paused = true;
            self.update_interest(id);
        }
    }

    fn resume(&mut self, id: SpawnId) {
        let Some(channel) = self.channels.get_mut(&id) else {
            return;
        };
        if channel.paused {
            channel.paused = false;
            self.update_interest(id);
            self.read_channel(id);
        }
    }

    /// Returns false when the supervisor has gone away.
    fn apply_commands(&mut self) -> bool {
        loop {
            match self.commands.try_recv() {
                Ok(Command::Resume(NOTIFY_TOKEN)) => {
                    self.notify_paused = false;
                    if let Some(socket) = &self.notify {
                        let mut event = EpollEvent::new(EpollFlags::EPOLLIN, NOTIFY_TOKEN);
                        let _ = self.epoll.modify(socket.as_fd(), &mut event);
                    }
                    self.read_notify();
                }
                Ok(Command::Resume(id)) => self.resume(id),
                Ok(Command::Watch(id, fd, label, cgroup, node, liveness)) => {
                    if let Some(name) = cgroup {
                        self.cgroups.insert(name, id);
                    }
                    let stream = UnixStream::from(fd);
                    if stream.set_nonblocking(true).is_err() {
                        continue;
                    }
                    let interest = EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP;
                    if let Err(e) = self
                        .epoll
                        .add(stream.as_fd(), EpollEvent::new(interest, id))
                    {
                        warn!("cannot watch a worker channel: {e}");
                        continue;
                    }
                    let budget = Budget::new(id, self.own_commands.clone(), Arc::clone(&self.wake));
                    self.channels
                        .insert(id, Channel::new(stream, label, budget));
                    if let Some(info) = node {
                        self.primary.add_worker(id, info, &self.epoll);
                        if let Some(watchdog) = liveness {
                            self.liveness.add(id, watchdog, Instant::now());
                        }
                    }
                }
                Ok(Command::Forget(id)) => self.close(id),
                Ok(Command::Withdraw(id)) => {
                    self.primary.withdraw(id);
                    self.deliver();
                }
                Ok(Command::Disconnect(id)) => {
                    self.primary.disconnect(id);
                    self.deliver();
                }
                Ok(Command::Send(id, line, charge)) => self.send_line(id, line, charge),
                Ok(Command::ReleaseUnit(unit)) => self.primary.release_unit(&unit, &self.epoll),
                Ok(Command::HandOver(reply, resume)) => {
                    self.primary.hold();
                    self.handing_over = Some(HandingOver {
                        reply,
                        resume,
                        deadline: Instant::now() + SETTLE_DEADLINE,
                    });
                }
                Ok(Command::CarryIn(id, lines, unread, discarding)) => {
                    let Some(channel) = self.channels.get_mut(&id) else {
                        continue;
                    };
                    channel.pending = unread;
                    channel.discarding = discarding;
                    for line in lines {
                        channel.outbox.push(line);
                    }
                    self.flush(id);
                }
                Ok(Command::AdoptPrimary(held, mut fds)) => {
                    self.primary.adopt(held, &mut fds, &self.epoll);
                    self.deliver();
                }
                Err(crossbeam_channel::TryRecvError::Empty) => return true,
                Err(crossbeam_channel::TryRecvError::Disconnected) => return false,
            }
        }
    }

    /// A line for a worker: its `stop_message`, or one from `clusterctl send`, whose
    /// charge bounds what is queued (and is given back once the line is written or the
    /// channel closes).
    fn send_line(&mut self, id: SpawnId, line: Vec<u8>, charge: Option<Charge>) {
        let Some(channel) = self.channels.get_mut(&id) else {
            return;
        };
        channel.outbox.push(Outgoing {
            line,
            fd: None,
            charge,
        });
        self.flush(id);
    }

    fn close(&mut self, id: SpawnId) {
        self.cgroups.retain(|_, instance| *instance != id);
        if let Some(mut channel) = self.channels.remove(&id) {
            let _ = self.epoll.delete(channel.stream.as_fd());
            let suppressed = channel.malformed.take_suppressed()
                + channel.oversized.take_suppressed()
                + channel.unknown.take_suppressed();
            if suppressed > 0 {
                warn!(
                    "{}: {suppressed} more bad messages on its channel were not logged",
                    channel.label
                );
            }
        }
        self.liveness.remove(id);
        if self.primary.is_worker(id) {
            self.primary.remove_worker(id, &self.epoll);
            self.deliver();
        }
    }

    /// Reads what the channel has, as long as its budget lasts, and acts on every line.
    fn read_channel(&mut self, id: SpawnId) {
        let mut buffer = [0u8; 16 * 1024];
        loop {
            let Some(channel) = self.channels.get_mut(&id) else {
                return;
            };
            if channel.paused {
                return;
            }
            if channel.budget.spent() {
                self.pause(id, true);
                continue; // resumed at once if every credit came back meanwhile
            }
            if channel.outbox.len() >= MAX_QUEUED_LINES {
                self.pause(id, false);
                return;
            }
            let mut lines = Vec::new();
            let mut closed = false;
            let mut drained = false;
            match channel.stream.read(&mut buffer) {
                Ok(0) => closed = true,
                Ok(n) => split_lines(channel, &buffer[..n], &mut lines),
                Err(e) if e.kind() == ErrorKind::WouldBlock => drained = true,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => closed = true,
            }
            for line in lines {
                self.on_line(id, line);
            }
            if closed {
                // The instance (and everything that inherited the channel) closed it; its
                // exit is seen through waitpid, so nothing else to report.
                self.close(id);
                return;
            }
            if drained {
                return;
            }
        }
    }

    /// One complete line from a worker channel.
    fn on_line(&mut self, id: SpawnId, line: Line) {
        let now = Instant::now();
        let Some(channel) = self.channels.get_mut(&id) else {
            return;
        };
        let line = match line {
            Line::Complete(line) => line,
            Line::Oversized => {
                if let Verdict::Show { suppressed, last } = channel.oversized.check(now) {
                    warn!(
                        "{}: dropped a message longer than {MAX_MESSAGE_BYTES} bytes{}",
                        channel.label,
                        LogLimit::note(suppressed, last)
                    );
                }
                return;
            }
        };
        let parsed = match parse_line(&line) {
            Ok(Some(value)) => value,
            Ok(None) => return,
            Err(e) => {
                if let Verdict::Show { suppressed, last } = channel.malformed.check(now) {
                    warn!(
                        "{}: ignoring a malformed message ({e}): {}{}",
                        channel.label,
                        shorten(&String::from_utf8_lossy(&line)),
                        LogLimit::note(suppressed, last)
                    );
                }
                return;
            }
        };
        match self
            .primary
            .on_line(id, &parsed, &mut channel.outbox, &self.epoll)
        {
            Whose::Internal => {
                self.flush(id);
                self.deliver();
            }
            Whose::User => match user_message(&parsed) {
                Some(message) => {
                    let credit = BudgetCredit::take(&channel.budget);
                    let _ = self.events.send(Event::Worker {
                        id,
                        message,
                        credit,
                    });
                }
                None => {
                    if let Verdict::Show { suppressed, last } = channel.unknown.check(now) {
                        debug!(
                            "{}: ignoring worker message {}{}",
                            channel.label,
                            shorten(&String::from_utf8_lossy(&line)),
                            LogLimit::note(suppressed, last)
                        );
                    }
                }
            },
        }
    }

    fn read_notify(&mut self) {
        let Some(socket) = &self.notify else { return };
        loop {
            if self.notify_paused {
                return;
            }
            if self.notify_budget.spent() {
                if self.notify_budget.pause() {
                    // Anyone may write to NOTIFY_SOCKET: not read until the supervisor has
                    // handled what came; senders block (or get EAGAIN) meanwhile.
                    self.notify_paused = true;
                    let mut event = EpollEvent::new(EpollFlags::empty(), NOTIFY_TOKEN);
                    let _ = self.epoll.modify(socket.as_fd(), &mut event);
                    return;
                }
                continue;
            }
            let (pid, text, barrier) = match sd_notify::receive(socket) {
                Received::Datagram { pid, text, barrier } => (pid, text, barrier),
                Received::Skipped => continue,
                Received::Drained => return,
            };
            // Looked up while the sender waits for its barrier fds to close: it is alive.
            let pgid = nix::unistd::getpgid(Some(pid)).ok();
            // In a cgroup, a process belongs to its instance wherever it moved in the process
            // tree, and no process can move itself into another instance's cgroup.
            let instance = cgroup_of(&pid.to_string()).and_then(|path| {
                let name = path.rsplit('/').next()?;
                self.cgroups.get(name).copied()
            });
            drop(barrier);
            let parsed = sd_notify::parse(&text);
            if parsed == NotifyMessage::default() {
                // BARRIER=1, FDSTORE=1, ...: nothing clusterd acts on.
                debug!("NOTIFY_SOCKET: nothing to act on from pid {pid}: {text:?}");
                continue;
            }
            let _ = self.events.send(Event::Notify {
                pid,
                pgid,
                instance,
                message: parsed,
                credit: BudgetCredit::take(&self.notify_budget),
            });
        }
    }
}

/// What [`split_lines`] finds in a channel's bytes.
#[derive(Debug, PartialEq, Eq)]
enum Line {
    Complete(Vec<u8>),
    /// A line longer than [`MAX_MESSAGE_BYTES`], dropped.
    Oversized,
}

/// Appends `bytes` to the channel's pending line and collects every complete line.
fn split_lines(channel: &mut Channel, mut bytes: &[u8], out: &mut Vec<Line>) {
    while !bytes.is_empty() {
        match bytes.iter().position(|&b| b == b'\n') {
            Some(end) => {
                if channel.discarding {
                    channel.discarding = false;
                } else {
                    channel.pending.extend_from_slice(&bytes[..end]);
                    if channel.pending.len() > MAX_MESSAGE_BYTES {
                        out.push(Line::Oversized);
                    } else {
                        out.push(Line::Complete(std::mem::take(&mut channel.pending)));
                    }
                }
                channel.pending.clear();
                bytes = &bytes[end + 1..];
            }
            None => {
                if !channel.discarding {
                    channel.pending.extend_from_slice(bytes);
                    if channel.pending.len() > MAX_MESSAGE_BYTES {
                        out.push(Line::Oversized);
                        channel.pending = Vec::new();
                        channel.discarding = true;
                    }
                }
                return;
            }
        }
    }
}

/// One JSON line from a worker: `None` for anything that means nothing to clusterd.
#[cfg(test)]
fn parse_message(line: &[u8]) -> Option<WorkerMessage> {
    parse_line(line)
        .ok()
        .flatten()
        .and_then(|v| user_message(&v))
}

/// Parses one line as JSON; `Ok(None)` for an empty line.
fn parse_line(line: &[u8]) -> Result<Option<serde_json::Value>, serde_json::Error> {
    // Bun's node:cluster marks its internal messages (`NODE_CLUSTER`) with a leading 0x02
    // byte; the JSON after it is Node's.
    let line = line.strip_prefix(b"\x02").unwrap_or(line);
    let text = String::from_utf8_lossy(line);
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    serde_json::from_str(text).map(Some)
}

/// What a user message (`process.send(...)`) means to the supervisor, if anything.
fn user_message(value: &serde_json::Value) -> Option<WorkerMessage> {
    let act = value
        .get("act")
        .and_then(|a| a.as_str())
        .or_else(|| value.as_str());
    match act {
        Some("suicide") => Some(WorkerMessage::Suicide),
        Some("ready") => Some(WorkerMessage::Ready),
        Some("watchdog") => Some(WorkerMessage::Watchdog),
        _ => None,
    }
}

/// At most 200 bytes of a worker's text, with control characters escaped: it goes into
/// clusterd's log, which may be a terminal.
fn shorten(text: &str) -> String {
    const MAX: usize = 200;
    let mut end = text.len().min(MAX);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let shown = printable(&text[..end]);
    if end < text.len() {
        format!("{shown}…")
    } else {
        shown.into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel() -> Channel {
        let (a, _b) = UnixStream::pair().unwrap();
        let (commands, _) = crossbeam_channel::unbounded();
        let wake = Arc::new(EventFd::from_flags(EfdFlags::EFD_NONBLOCK).unwrap());
        Channel::new(a, "web[0]".into(), Budget::new(1, commands, wake))
    }

    fn split(c: &mut Channel, bytes: &[u8], out: &mut Vec<WorkerMessage>) {
        let mut lines = Vec::new();
        split_lines(c, bytes, &mut lines);
        out.extend(lines.iter().filter_map(|l| match l {
            Line::Complete(l) => parse_message(l),
            Line::Oversized => None,
        }));
    }

    #[test]
    fn messages_are_parsed_line_by_line_across_reads() {
        let mut c = channel();
        let mut out = Vec::new();
        split(&mut c, b"{\"act\":\"sui", &mut out);
        assert!(out.is_empty());
        split(
            &mut c,
            b"cide\"}\n\"ready\"\n{\"act\":\"ready\"}\nnot json\n",
            &mut out,
        );
        assert_eq!(
            out,
            vec![
                WorkerMessage::Suicide,
                WorkerMessage::Ready,
                WorkerMessage::Ready
            ]
        );
    }

    /// Bun's node:cluster marks its internal messages with 0x02 before Node's JSON.
    #[test]
    fn bun_internal_messages_are_nodes_json_after_a_mark() {
        let parsed = parse_line(b"\x02{\"cmd\":\"NODE_CLUSTER\",\"act\":\"online\",\"seq\":0}")
            .expect("parses")
            .expect("a message");
        assert_eq!(parsed["act"], "online");
        assert!(parse_line(b"\x02\x02{}").is_err(), "one mark only");
    }

    #[test]
    fn what_a_channel_has_in_flight_round_trips_through_the_reexec_state() {
        let carried = CarriedChannel {
            id: 7,
            unwritten: vec![
                CarriedLine {
                    bytes: b"rest of a line\n".to_vec(),
                    charged: true,
                },
                CarriedLine {
                    bytes: "\"caf\u{e9}\"\n".as_bytes().to_vec(),
                    charged: false,
                },
            ],
            unread: vec![b'{', 0xff],
            discarding: true,
        };
        let text = serde_json::to_string(&carried).expect("serializes");
        let back: CarriedChannel = serde_json::from_str(&text).expect("parses");
        assert_eq!(back, carried);
    }

    #[test]
    fn oversized_lines_are_dropped_and_the_next_one_is_read() {
        let mut c = channel();
        let mut out = Vec::new();
        let big = vec![b'x'; MAX_MESSAGE_BYTES + 10];
        split(&mut c, &big, &mut out);
        split(&mut c, b"xxxx\n{\"act\":\"suicide\"}\n", &mut out);
        assert_eq!(out, vec![WorkerMessage::Suicide]);
    }

    #[test]
    fn unknown_acts_and_malformed_lines_mean_nothing_to_the_supervisor() {
        assert_eq!(parse_message(br#"{"act":"dance"}"#), None);
        assert_eq!(parse_message(b"[1,2"), None);
    }

    #[test]
    fn a_budget_pauses_at_its_limit_and_the_last_credit_back_resumes() {
        let (commands, resumed) = crossbeam_channel::unbounded();
        let wake = Arc::new(EventFd::from_flags(EfdFlags::EFD_NONBLOCK).unwrap());
        let budget = Budget::new(7, commands, wake);
        let credits: Vec<Credit> = (0..MAX_EVENTS_IN_FLIGHT)
            .map(|_| BudgetCredit::take(&budget))
            .collect();
        assert!(budget.spent());
        assert!(budget.pause());
        drop(credits);
        assert!(matches!(resumed.try_recv(), Ok(Command::Resume(7))));
        assert!(resumed.try_recv().is_err(), "resumed once");
        // Paused with nothing in flight: not paused at all.
        assert!(!budget.pause());
    }
}
