//! The re-exec from the daemon's side, both ends: the old image quiesces its threads and
//! writes the state ([`Running::reexec`]); the new image rebuilds the daemon from it
//! ([`resume`]).
//!
//! Quiescing, in order, so that nothing is lost:
//! 1. the control socket's thread stops accepting (clients wait in the backlog) and the
//!    connections being served are answered (the loop handles their requests meanwhile);
//! 2. the worker I/O thread has the Node primary hand out no new connection and waits until
//!    every hand-off in flight is answered (≤ 1 s, or the re-exec is refused), then stops
//!    reading (what the instances write waits in the kernel, connections in the backlogs);
//!    what it has not written to a channel yet (`clusterctl send` lines an instance does not
//!    read: not waited for, so a worker that reads nothing cannot hold the re-exec) and the
//!    line it is in the middle of reading go into the state, queued first by the new image;
//! 3. the log thread writes what it read and stops reading; the pipes stay open, and what
//!    is unread waits in them for the new image, which also gets each pipe's unfinished line.
//!
//! From the start, alongside the control socket, the metrics thread (`--metrics-listen`)
//! stops accepting and finishes the scrapes it accepted (at most
//! `metrics_server::handover::DRAIN_BOUND`, the loop answering their reports meanwhile);
//! its listeners are handed over like the control socket.
//!
//! `clusterctl logs -f` followers are not carried over: their connection closes at the exec
//! and clusterctl reconnects (documented in docs/clusterctl.md).

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixDatagram, UnixListener};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use log::{info, warn};

use super::exec::{self, take_fd};
use super::resume::Incoming;
use super::state::{CarriedEvent, DaemonState, HandedFds};
use crate::daemon::control_server::SocketFile;
use crate::daemon::logs::HandedPipe;
use crate::daemon::os::cgroup::{self, CgroupTree};
use crate::daemon::os::listen_sockets::UnitSockets;
use crate::daemon::os_process_control::OsProcessControl;
use crate::daemon::sd_notify::{self, ServiceNotifier};
use crate::daemon::signals::{self, EventSender};
use crate::daemon::worker_io::CarriedChannel;
use crate::daemon::{
    control_server, log_output, logs::Logs, metrics_server, serve_clients, supervisor_over,
    DaemonOptions, Isolation, Running,
};
use crate::node_cluster::primary::handover::HeldPrimary;
use crate::protocol::{Request, Response};
use crate::supervisor::event::{Credit, Event};
use crate::supervisor::snapshot::STATE_VERSION;
use crate::supervisor::Supervisor;

/// How long the quiescing may take in all before the re-exec is given up (and everything
/// resumed).
const QUIESCE_DEADLINE: Duration = Duration::from_secs(3);
/// How long the connections being served get to be answered; one that sent no request by
/// then (a client that connected and waits) loses its connection at the exec.
const ANSWER_DEADLINE: Duration = Duration::from_secs(1);

/// A step of the re-exec and how long after the pause began it is done (debug log: where
/// the pause goes).
fn phase(paused_at: u64, what: &str) {
    let ms = super::monotonic_ns().saturating_sub(paused_at) as f64 / 1e6;
    log::debug!("daemon-reexec: {what} at {ms:.1} ms");
}

impl Running {
    /// `daemon-reexec` (or SIGUSR2): returns only if the re-exec failed before the exec,
    /// with every thread resumed; the reply says why.
    pub(crate) fn reexec(&mut self, reply: Option<Sender<Response>>) {
        let requester = super::requester::take();
        let why = self.try_reexec(requester);
        warn!("daemon-reexec failed, clusterd keeps running: {why}");
        if let Some(reply) = reply {
            let _ = reply.send(Response::failed(format!(
                "daemon-reexec failed, clusterd keeps running its binary ({}): {why}",
                env!("CARGO_PKG_VERSION")
            )));
        }
    }

    /// Returns only on failure, with the reason.
    fn try_reexec(&mut self, requester: Option<OwnedFd>) -> String {
        if self.supervisor.is_stopping() {
            return "clusterd is stopping".into();
        }
        let (binary, file) = match super::new_binary().and_then(|b| super::preflight(&b)) {
            Ok(checked) => checked,
            Err(why) => return why,
        };
        let paused_at = super::monotonic_ns();
        let deadline = Instant::now() + QUIESCE_DEADLINE;
        // Asked first: it stops while the control socket does. Dropped (on any failure), the
        // metrics thread accepts again.
        let mut metrics = metrics_server::handover::ask();
        if let Err(why) = self.gate.pause(deadline) {
            return why;
        }
        self.answer_the_connections_in(requester.is_some(), metrics.as_mut());
        phase(paused_at, "connections answered");
        let metrics = match metrics.as_mut().map(|m| m.listeners(deadline)).transpose() {
            Ok(fds) => fds.unwrap_or_default(),
            Err(why) => {
                self.gate.resume();
                return why;
            }
        };
        // A SIGTERM among the events handled meanwhile: the stop goes on in this image.
        if self.supervisor.is_stopping() {
            self.gate.resume();
            return "clusterd is stopping".into();
        }
        let why =
            self.quiesce_and_exec((&binary, &file), paused_at, (requester, metrics), deadline);
        self.gate.resume();
        why
    }

    /// Handles events until the connections being served (but the requester's) are
    /// answered and the metrics thread has stopped, or [`ANSWER_DEADLINE`].
    fn answer_the_connections_in(
        &mut self,
        has_requester: bool,
        mut metrics: Option<&mut metrics_server::handover::Pending>,
    ) {
        let give_up_at = Instant::now() + ANSWER_DEADLINE;
        let mine = usize::from(has_requester);
        let mut busy = |gate: &control_server::ControlGate| {
            gate.busy() > mine || metrics.as_mut().is_some_and(|m| !m.stopped())
        };
        while busy(&self.gate) && Instant::now() < give_up_at {
            let wake = (Instant::now() + Duration::from_millis(5)).min(give_up_at);
            for event in self.inbox.wait(Some(wake)) {
                match event {
                    Event::Control {
                        request: Request::DaemonReexec {},
                        reply,
                    } => {
                        // It came in after this re-exec took the requester's slot: its own
                        // connection is answered here, not handed over.
                        drop(super::requester::take());
                        let _ = reply.send(Response::failed("a daemon-reexec is under way"));
                    }
                    Event::Signal(libc::SIGUSR2) => {}
                    other => self.handle(other),
                }
            }
            self.supervisor.fire_due_timers(Instant::now());
        }
        if self.gate.busy() > mine {
            warn!(
                "daemon-reexec: {} connection(s) sent no request within {ANSWER_DEADLINE:?}; they are closed by the exec",
                self.gate.busy() - mine
            );
        }
    }

    /// Stops the worker I/O and log threads, writes the state and execs; returns only on
    /// failure (the threads read on when their resume handles drop, here).
    fn quiesce_and_exec(
        &mut self,
        (binary, file): (&std::path::Path, &OwnedFd),
        paused_at: u64,
        (requester, metrics): (Option<OwnedFd>, Vec<RawFd>),
        deadline: Instant,
    ) -> String {
        // Every child started so far has exec'd or failed to, before the snapshot: a
        // failure said after the exec would be an exit 127, a crash.
        self.supervisor.settle_execs(Instant::now());
        let (io, _resume_io) = match self.supervisor.os().hand_over_io(deadline) {
            Ok(held) => held,
            Err(why) => return why,
        };
        phase(paused_at, "worker I/O handed over");
        let (log_pipes, _resume_logs) = match self.logs.hand_over(deadline) {
            Ok(held) => held,
            Err(why) => return why,
        };
        phase(paused_at, "logs handed over");
        let events = self.carry_events();
        let why = self.write_and_exec(
            (binary, file),
            paused_at,
            (requester.as_ref(), metrics),
            (io.notify, io.channels, io.primary),
            (log_pipes, events.clone(), io.carried),
        );
        // Still here: what was carried is this image's to handle after all.
        for event in events {
            self.handle(event_of(event));
        }
        why
    }

    /// Writes the state and execs; returns only on failure.
    fn write_and_exec(
        &mut self,
        (binary, file): (&std::path::Path, &OwnedFd),
        paused_at: u64,
        (requester, metrics): (Option<&OwnedFd>, Vec<RawFd>),
        (notify, channels, primary): (Option<i32>, Vec<(u64, i32)>, HeldPrimary),
        (log_pipes, events, channels_in_flight): (
            Vec<HandedPipe>,
            Vec<CarriedEvent>,
            Vec<CarriedChannel>,
        ),
    ) -> String {
        let old_binary = match exec::open_old_binary() {
            Ok(fd) => fd,
            Err(why) => return why,
        };
        let (os, listen) = self.supervisor.os().held();
        let state = DaemonState {
            version: STATE_VERSION,
            written_by: env!("CARGO_PKG_VERSION").to_string(),
            args: super::original_args(),
            paused_at_ns: paused_at,
            reexecuted_at: super::wall_clock(),
            supervisor: self.supervisor.snapshot(Instant::now()),
            fds: HandedFds {
                control_socket: self.gate.listener(),
                requester: requester.map(AsRawFd::as_raw_fd),
                notify_socket: notify,
                listen,
                log_pipes,
                channels,
                primary,
                old_binary: Some(old_binary.as_raw_fd()),
                new_binary: Some(file.as_raw_fd()),
                metrics,
            },
            os,
            events,
            channels_in_flight,
        };
        let text = match serde_json::to_vec(&state) {
            Ok(text) => text,
            Err(e) => return format!("cannot write the state: {e}"),
        };
        let memfd = match exec::write_state(&text) {
            Ok(fd) => fd,
            Err(why) => return why,
        };
        phase(paused_at, "state written");
        info!(
            "daemon-reexec: exec'ing {} with {} unit(s), {} instance(s) ({} bytes of state)",
            binary.display(),
            state.supervisor.units.len(),
            state.supervisor.instances.len(),
            text.len()
        );
        log_output::write_held();
        // The file checked, by its fd (open across the exec: a script's interpreter reads it
        // as /dev/fd/N); the new image closes it.
        let checked = std::path::PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
        let inbox = &self.inbox;
        exec::exec_with_state(
            &checked,
            memfd.as_raw_fd(),
            &state.fds.all(),
            &state.args,
            (None, &|| inbox.repend_signals()),
        )
    }

    /// What arrived since the loop's last turn, once the threads that send events stopped:
    /// written into the state for the new image. A request (from a connection that sent it
    /// too late to be answered) is answered now, as failed: its client asks again.
    fn carry_events(&mut self) -> Vec<CarriedEvent> {
        let mut carried = Vec::new();
        for event in self.inbox.take_now() {
            carried.push(match event {
                Event::Signal(libc::SIGCHLD | libc::SIGUSR2) => continue,
                Event::Signal(signal) => CarriedEvent::Signal(signal),
                Event::Worker { id, message, .. } => CarriedEvent::Worker { id, message },
                Event::Notify {
                    pid,
                    pgid,
                    instance,
                    message,
                    ..
                } => CarriedEvent::Notify {
                    pid: pid.as_raw(),
                    pgid: pgid.map(|p| p.as_raw()),
                    instance,
                    message,
                },
                Event::FilesChanged(unit) => CarriedEvent::FilesChanged(unit),
                Event::Control { reply, .. }
                | Event::Reload {
                    reply: Some(reply), ..
                } => {
                    let _ = reply.send(Response::failed(
                        "clusterd was re-executing and could not answer this; ask again",
                    ));
                    continue;
                }
                // An HTTP check's result: the check is written down as in flight, and the
                // new image runs it again at once (`Supervisor::resume_checks`).
                Event::ProbeDone { .. } | Event::Reload { reply: None, .. } => continue,
            });
        }
        carried
    }
}

/// The new image's side of [`Running::carry_events`]: posted first, after the reaping.
fn post_carried(events: &EventSender, carried: &[CarriedEvent]) {
    for event in carried.iter().cloned() {
        let _ = events.send(event_of(event));
    }
}

/// A carried event as the loop gets it.
fn event_of(event: CarriedEvent) -> Event {
    use nix::unistd::Pid;
    match event {
        CarriedEvent::Signal(signal) => Event::Signal(signal),
        CarriedEvent::Worker { id, message } => Event::Worker {
            id,
            message,
            credit: Credit::none(),
        },
        CarriedEvent::Notify {
            pid,
            pgid,
            instance,
            message,
        } => Event::Notify {
            pid: Pid::from_raw(pid),
            pgid: pgid.map(Pid::from_raw),
            instance,
            message,
            credit: Credit::none(),
        },
        CarriedEvent::FilesChanged(unit) => Event::FilesChanged(unit),
    }
}

/// The new image: rebuilds the daemon from the state and runs it as `run` does. A failure
/// before the supervisor holds the instances execs the old binary back.
pub fn resume(options: DaemonOptions, incoming: Incoming) -> Result<u8, String> {
    let mut daemon = match start_up_from(options, &incoming) {
        Ok(daemon) => daemon,
        Err(why) => return Err(incoming.give_up(&why)),
    };
    let holding = log_output::hold_on_this_thread();
    daemon.serve_until_finished();
    Ok(daemon.exit(holding))
}

/// Start-up from a state: as `start_up`, with what was bound, opened and spawned taken from
/// the old image instead. Errors are the reason to go back to the old binary: nothing taken
/// is dropped on that way (the exec back does not run destructors), so the fds go back whole.
fn start_up_from(options: DaemonOptions, incoming: &Incoming) -> Result<Running, String> {
    let state = &incoming.state;
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        warn!("cannot become a child subreaper: {e}");
    }
    crate::daemon::os::fd_limit::raise();
    crate::daemon::os::spawn::use_path(options.spawn_path);
    // The handlers first. The signals blocked across the exec stay blocked (as they are in
    // every thread but the loop's wait, see `signals`): a SIGTERM of the gap is taken at the
    // loop's first wait, and the exits of the gap are reaped first thing.
    let (inbox, events) = signals::inbox(options.container)
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let _ = events.send(Event::Signal(libc::SIGCHLD));
    post_carried(&events, &state.events);

    phase(
        state.paused_at_ns,
        "new image: state read, handlers installed",
    );
    let units_dir =
        std::path::absolute(&options.units_dir).unwrap_or_else(|_| options.units_dir.clone());
    let (logs, log_thread) = Logs::start(&options.logs)?;
    let listener = UnixListener::from(take_fd(state.fds.control_socket, libc::S_IFSOCK)?);
    let notify = state
        .fds
        .notify_socket
        .map(|fd| take_fd(fd, libc::S_IFSOCK).map(UnixDatagram::from))
        .transpose()?;
    let notify_path = sd_notify::instance_socket_path(&options.socket);
    let notify_file = SocketFile(notify_path.clone());
    let notify_path = notify.is_some().then_some(notify_path);
    // The tree as it is: what is in it is the instances', not a previous clusterd's leftovers.
    let cgroups = match options.isolation {
        Isolation::ProcessGroup => Err("--isolation process-group".to_string()),
        Isolation::Auto | Isolation::Cgroup => CgroupTree::create(&options.socket),
    };
    cgroup::log_choice(&cgroups);
    let mut supervisor = supervisor_over(&options, (notify, notify_path), cgroups, &logs, &events)?;
    let mut sockets = Vec::new();
    for (unit, held) in &state.fds.listen {
        let taken = UnitSockets::from_held(held.clone(), |fd| take_fd(fd, libc::S_IFSOCK))?;
        sockets.push((unit.clone(), taken));
    }
    supervisor.os_mut().adopt_held(state.os.clone(), sockets);
    phase(
        state.paused_at_ns,
        "new image: threads started, sockets and cgroups adopted",
    );
    adopt_pipes_and_channels(&mut supervisor, &logs, state)?;
    phase(state.paused_at_ns, "new image: pipes and channels adopted");
    // Served before the restore, which is the last step that can fail: the requests that
    // arrive meanwhile wait in the inbox for the loop.
    super::set_reexecuted_at(state.reexecuted_at);
    let metrics = metrics_listeners(state);
    let gate = serve_clients(listener, &events, &options, (&logs, metrics))?;
    supervisor.restore(state.supervisor.clone(), Instant::now())?;
    phase(state.paused_at_ns, "new image: supervisor restored");
    // From here on the new image holds the instances: no way back.
    exec::close_on_exec(&state.fds.all());
    for binary in [state.fds.old_binary, state.fds.new_binary]
        .into_iter()
        .flatten()
    {
        let _ = nix::unistd::close(binary);
    }
    let _ = nix::unistd::close(incoming.fd);

    let pause_ms = super::monotonic_ns().saturating_sub(state.paused_at_ns) as f64 / 1e6;
    let summary = format!(
        "clusterd {} re-executed from {} in the same pid, {} instance(s) kept; the control socket was unanswered for {pause_ms:.1} ms",
        env!("CARGO_PKG_VERSION"),
        state.written_by,
        state.supervisor.instances.len()
    );
    info!("{summary}");
    if let Some(fd) = state.fds.requester {
        let response = match &incoming.fell_back {
            None => Response::done(summary),
            Some(why) => Response::failed(format!(
                "daemon-reexec failed: the new binary could not take over ({why}); clusterd went back to its old binary ({}) with every instance",
                env!("CARGO_PKG_VERSION")
            )),
        };
        answer_requester(fd, &response);
    }
    let service = ServiceNotifier::from_env();
    Ok(Running {
        supervisor,
        inbox,
        logs,
        log_thread,
        service,
        units_dir,
        environment: options.environment,
        container: options.container,
        notify_file,
        socket_file: SocketFile(options.socket.clone()),
        gate,
        reexec_asked: None,
    })
}

/// Every instance's worker channel and output pipes, watched and read again.
fn adopt_pipes_and_channels(
    supervisor: &mut Supervisor<OsProcessControl>,
    logs: &Logs,
    state: &DaemonState,
) -> Result<(), String> {
    // The units as the state has them (restored after: the supervisor needs the OS side
    // whole first), parsed once each.
    let mut units = std::collections::HashMap::new();
    for (name, saved) in &state.supervisor.units {
        let text = saved.text.as_deref().unwrap_or_default();
        let unit =
            crate::unit::Unit::parse(&saved.path, text).map_err(|e| format!("unit {name}: {e}"))?;
        units.insert(name.clone(), unit);
    }
    // By spawn id, once: a search per channel would be a million comparisons for 1000.
    let instances: std::collections::HashMap<_, _> = state
        .supervisor
        .instances
        .iter()
        .map(|i| (i.spawn_id, i))
        .collect();
    let mut in_flight: std::collections::HashMap<_, _> =
        state.channels_in_flight.iter().map(|c| (c.id, c)).collect();
    for &(id, fd) in &state.fds.channels {
        let Some(instance) = instances.get(&id) else {
            continue;
        };
        let Some(unit) = units.get(&instance.unit) else {
            continue;
        };
        let channel = take_fd(fd, libc::S_IFSOCK)?;
        supervisor
            .os_mut()
            .adopt_instance(id, unit, instance.index, channel);
        // Right after its channel: before anything the loop may send it.
        if let Some(carried) = in_flight.remove(&id) {
            supervisor.os().carry_in_channel(carried.clone());
        }
    }
    // The worker I/O thread takes them all at one wake-up.
    supervisor.os().flush_wakes();
    // After the channels: the primary's workers are known by then.
    let mut primary_fds = std::collections::HashMap::new();
    for fd in state.fds.primary.fds() {
        primary_fds.insert(fd, take_fd(fd, libc::S_IFSOCK)?);
    }
    supervisor
        .os()
        .adopt_primary(state.fds.primary.clone(), primary_fds);
    let mut pipes = Vec::new();
    for pipe in &state.fds.log_pipes {
        let Some(unit) = units.get(&pipe.unit) else {
            continue;
        };
        let fd = take_fd(pipe.fd, libc::S_IFIFO)?;
        pipes.push((unit, pipe.clone(), fd));
    }
    logs.adopt(pipes);
    Ok(())
}

/// The metrics listeners handed over that are open sockets (the metrics server checks them
/// further); one that is not is left out, with a warning, and the address bound again.
fn metrics_listeners(state: &DaemonState) -> Vec<OwnedFd> {
    let mut taken = Vec::new();
    for &fd in &state.fds.metrics {
        match take_fd(fd, libc::S_IFSOCK) {
            Ok(fd) => taken.push(fd),
            Err(why) => warn!("--metrics-listen: {why}; not taken"),
        }
    }
    taken
}

/// Writes the reply to the `clusterctl daemon-reexec` that asked, and closes its connection.
fn answer_requester(fd: RawFd, response: &Response) {
    let Ok(stream) = take_fd(fd, libc::S_IFSOCK) else {
        return;
    };
    let stream = std::os::unix::net::UnixStream::from(stream);
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    let mut line = serde_json::to_vec(response).unwrap_or_default();
    line.push(b'\n');
    let _ = std::io::Write::write_all(&mut &stream, &line);
}
