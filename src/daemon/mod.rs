//! Running clusterd: wires signals and the threads (control socket, worker I/O) to the
//! supervisor loop, which runs on the main thread until a shutdown has stopped every instance.
//!
//! - [`signals`]: how events reach the loop (signal pipes, a doorbell, one channel);
//!   [`control_server`]: the control socket's threads;
//!   [`worker_io`]: the I/O thread (worker channels, NOTIFY_SOCKET, the Node cluster primary);
//!   [`thread_guard`]: a panic in a helper thread is caught and costs only what it was on;
//!   [`sd_notify`]: the sd_notify protocol both ways (instances to clusterd, clusterd to its
//!   service manager);
//! - [`log_output`]: clusterd's own log lines, held back while the loop reacts;
//!   [`logs`]: the instances' output — files, console, journald — and `clusterctl logs`;
//! - [`metrics_server`]: `GET /metrics` for Prometheus (`--metrics-listen`);
//! - [`exit_code`]: what clusterd's exit status means;
//! - [`os_process_control`]: the real `ProcessControl` the supervisor is given, which ties
//!   the OS primitives of [`os`] (spawn, cgroups, sockets) to the log thread, the worker I/O
//!   and the inbox; [`file_watch`]: the thread that owns inotify for `watch`.

pub(crate) mod control_server;
pub mod exit_code;
pub(crate) mod file_watch;
pub(crate) mod health_probe;
pub mod log_output;
pub mod logs;
pub(crate) mod metrics_server;
pub(crate) mod os;
pub(crate) mod os_process_control;
pub mod reexec;
pub(crate) mod sd_notify;
pub(crate) mod signals;
pub(crate) mod thread_guard;
pub(crate) mod worker_io;

pub use metrics_server::ListenAddress;
pub use os::spawn::SpawnPath;
pub use reexec::handover::resume;

use std::path::{Path, PathBuf};
use std::time::Instant;

use log::{info, warn};
use nix::unistd::Gid;

use crate::daemon::control_server::{bind_control_socket, serve, AccessPolicy, SocketFile};
use crate::daemon::logs::{LogOptions, LogThread, Logs};
use crate::daemon::os::cgroup::{self, CgroupTree};
use crate::daemon::os_process_control::OsProcessControl;
use crate::daemon::sd_notify::ServiceNotifier;
use crate::daemon::signals::{EventSender, Inbox};
use crate::daemon::worker_io::WorkerIo;
use crate::protocol::Request;
use crate::supervisor::event::Event;
use crate::supervisor::{ShutdownPolicy, Supervisor};
use crate::unit::load_units_dir;

/// How long the loop must have been idle before it does the OS side's idle work.
const IDLE_WORK_DELAY: std::time::Duration = std::time::Duration::from_millis(2);
/// A loop that is never idle (a thousand instances crash-looping) still does a slice of its
/// idle work this often, or old cgroups would pile up without bound.
const IDLE_WORK_STARVED: std::time::Duration = std::time::Duration::from_millis(100);

pub struct DaemonOptions {
    pub units_dir: PathBuf,
    pub socket: PathBuf,
    /// Members of this group may use the control socket too (mode 0660).
    pub socket_group: Option<Gid>,
    pub isolation: Isolation,
    /// Where instances' output goes by default, and where log files live.
    pub logs: LogOptions,
    /// Serve Prometheus metrics at `http://ADDR/metrics`.
    pub metrics_listen: Option<ListenAddress>,
    /// A container's main process (`--container`, or PID 1): SIGQUIT stops too, and the exit
    /// status says whether an instance had to be killed.
    pub container: bool,
    /// A unit that gives up stops everything; clusterd exits with [`exit_code::GAVE_UP`].
    pub exit_on_giveup: bool,
    /// After SIGTERM/SIGINT, go on serving this long before stopping.
    pub shutdown_delay: std::time::Duration,
    /// `--environment NAME`: each unit's `[environments.NAME]` applies.
    pub environment: Option<String>,
    /// `CLUSTERD_SPAWN_PATH`, a testing switch: how children are created ([`SpawnPath`]).
    pub spawn_path: SpawnPath,
}

/// `--isolation`: how instances are kept together (see [`crate::cgroup`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Isolation {
    /// A cgroup per instance where clusterd can create cgroups, else process groups.
    Auto,
    /// A cgroup per instance, or clusterd does not start.
    Cgroup,
    /// Process groups only.
    ProcessGroup,
}

/// Runs until SIGTERM/SIGINT (or a give-up, with `exit_on_giveup`) has stopped everything;
/// returns clusterd's exit status. Errors are start-up failures.
pub fn run(options: DaemonOptions) -> Result<u8, String> {
    let mut daemon = start_up(options)?;
    let holding = log_output::hold_on_this_thread();
    daemon.serve_until_finished();
    Ok(daemon.exit(holding))
}

/// What start-up leaves for the loop and the exit.
struct Running {
    supervisor: Supervisor<OsProcessControl>,
    inbox: Inbox,
    logs: Logs,
    log_thread: LogThread,
    /// clusterd's own service manager, told when clusterd is stopping.
    service: ServiceNotifier,
    units_dir: PathBuf,
    environment: Option<String>,
    container: bool,
    /// The socket files, removed when clusterd exits: the instances' NOTIFY_SOCKET first, then
    /// the control socket.
    notify_file: SocketFile,
    socket_file: SocketFile,
    /// The control socket's accepting, paused by `daemon-reexec`.
    gate: std::sync::Arc<control_server::ControlGate>,
    /// A `daemon-reexec` (with its client's reply, or SIGUSR2's none), made once the events
    /// that arrived with it are handled: their clients are answered before the exec.
    reexec_asked: Option<Option<crossbeam_channel::Sender<crate::protocol::Response>>>,
}

/// Start-up, in an order that matters: units read, signals before any child, the log
/// directory and the control socket before anything else is touched, cgroups cleared of a
/// previous clusterd's leftovers before any unit binds a port; then the units start, the
/// control socket is served and the service manager hears READY=1.
fn start_up(options: DaemonOptions) -> Result<Running, String> {
    // Orphaned grandchildren of instances are re-parented to clusterd, which reaps them.
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        warn!("cannot become a child subreaper: {e}");
    }
    let units_dir =
        std::path::absolute(&options.units_dir).unwrap_or_else(|_| options.units_dir.clone());
    let files = load_units_dir(&units_dir).map_err(|e| {
        format!(
            "cannot read the units directory {}: {e}",
            units_dir.display()
        )
    })?;

    crate::daemon::os::fd_limit::raise();
    os::spawn::use_path(options.spawn_path);

    // Before any child exists, so that no SIGCHLD is missed.
    let (inbox, events) = signals::inbox(options.container)
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;

    // An unsafe log directory is refused before anything else is touched.
    let (logs, log_thread) = Logs::start(&options.logs)?;
    let listener = bind_control_socket(&options.socket, options.socket_group)?;
    let socket_file = SocketFile(options.socket.clone());
    let notify_path = sd_notify::instance_socket_path(&options.socket);
    let notify = sd_notify::bind_instance_socket(&notify_path);
    let notify_file = SocketFile(notify_path.clone());
    let notify_path = notify.is_some().then_some(notify_path);

    let cgroups = claim_cgroups(options.isolation, &options.socket)?;
    warn_if_no_unit_has(&files, options.environment.as_deref());
    let mut supervisor = supervisor_over(&options, (notify, notify_path), cgroups, &logs, &events)?;
    supervisor.start_all(files, Instant::now());

    let gate = serve_clients(listener, &events, &options, (&logs, Vec::new()))?;
    let service = announce_ready(&supervisor, &units_dir, &options.socket);
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
        socket_file,
        gate,
        reexec_asked: None,
    })
}

/// The supervisor over the OS side (with the worker I/O thread, which owns NOTIFY_SOCKET),
/// holding nothing yet.
fn supervisor_over(
    options: &DaemonOptions,
    (notify, notify_path): (Option<std::os::unix::net::UnixDatagram>, Option<PathBuf>),
    cgroups: Result<CgroupTree, String>,
    logs: &Logs,
    events: &EventSender,
) -> Result<Supervisor<OsProcessControl>, String> {
    let io = WorkerIo::start(events.clone(), notify)
        .map_err(|e| format!("cannot start the worker I/O thread: {e}"))?;
    let os = OsProcessControl::new(
        io,
        notify_path,
        cgroups,
        logs.clone(),
        options.environment.clone(),
        events.clone(),
    )
    .map_err(|e| format!("cannot open /dev/null: {e}"))?;
    let mut supervisor = Supervisor::new(os);
    supervisor.set_shutdown_policy(ShutdownPolicy {
        delay: options.shutdown_delay,
        exit_on_giveup: options.exit_on_giveup,
    });
    Ok(supervisor)
}

/// The control socket's threads, and the metrics server if `--metrics-listen` asks for it
/// (on the `metrics` listeners a re-exec handed over, if any): from here on, clients are
/// answered.
fn serve_clients(
    listener: std::os::unix::net::UnixListener,
    events: &EventSender,
    options: &DaemonOptions,
    (logs, metrics): (&Logs, Vec<std::os::fd::OwnedFd>),
) -> Result<std::sync::Arc<control_server::ControlGate>, String> {
    let gate = serve(
        listener,
        events.clone(),
        AccessPolicy {
            owner: nix::unistd::geteuid(),
            group: options.socket_group,
        },
        logs.clone(),
    )
    .map_err(|e| format!("cannot serve the control socket: {e}"))?;
    if let Some(address) = &options.metrics_listen {
        match metrics_server::serve(address, events.clone(), metrics) {
            Ok(()) => {}
            // After a re-exec the instances are this image's: a metrics address taken
            // meanwhile must not cost them (at start-up it is a mistake to say at once).
            Err(e) if reexec::reexecuted_at().is_some() => warn!("{e}"),
            Err(e) => return Err(e),
        }
    }
    Ok(gate)
}

/// Says in the log, and to clusterd's own service manager (READY=1), that clusterd is up.
fn announce_ready(
    supervisor: &Supervisor<OsProcessControl>,
    units_dir: &Path,
    socket: &Path,
) -> ServiceNotifier {
    info!(
        "clusterd {} ready: {} unit(s) from {}, {} instance(s), control socket {}",
        env!("CARGO_PKG_VERSION"),
        supervisor.unit_count(),
        units_dir.display(),
        supervisor.process_count(),
        socket.display()
    );
    let service = ServiceNotifier::from_env();
    service.notify(&format!(
        "READY=1\nSTATUS={} unit(s), {} instance(s)",
        supervisor.unit_count(),
        supervisor.process_count()
    ));
    service
}

/// The cgroup tree `--isolation` asks for, or why instances go without one. Called once this
/// clusterd owns its control socket path (and so its cgroup tree), and before any unit binds
/// a port: whatever a previous clusterd left goes.
fn claim_cgroups(
    isolation: Isolation,
    socket: &Path,
) -> Result<Result<CgroupTree, String>, String> {
    let cgroups = match isolation {
        Isolation::ProcessGroup => Err("--isolation process-group".to_string()),
        Isolation::Auto | Isolation::Cgroup => CgroupTree::create(socket),
    };
    if let (Isolation::Cgroup, Err(reason)) = (isolation, &cgroups) {
        return Err(format!("--isolation cgroup: {reason}"));
    }
    cgroup::log_choice(&cgroups);
    if let Ok(tree) = &cgroups {
        let killed = tree.clear_leftovers();
        if killed > 0 {
            warn!("killed {killed} process(es) left by a previous clusterd");
        }
    }
    Ok(cgroups)
}

impl Running {
    /// The loop: wait for events or the next deadline, hand them to the supervisor, do idle
    /// work when there is a moment for it; until a shutdown has stopped every instance.
    fn serve_until_finished(&mut self) {
        let mut told_stopping = false;
        // Since when idle work has been waiting for an idle moment.
        let mut idle_work_since: Option<Instant> = None;
        loop {
            log_output::write_held();
            // Idle work waits until the loop has been idle for a moment: a child that was just
            // forked is being exec'd, likely on this CPU, and a restart is over only when it
            // runs.
            let idle_work_at = self
                .supervisor
                .has_idle_work()
                .then(|| Instant::now() + IDLE_WORK_DELAY);
            let wake_at = match (self.supervisor.next_deadline(), idle_work_at) {
                (Some(deadline), Some(idle)) => Some(deadline.min(idle)),
                (deadline, idle) => deadline.or(idle),
            };
            // The log and worker I/O threads are woken once for what the turn told them,
            // as the loop leaves its CPU, not one by one while a restart's child execs.
            self.supervisor.os().flush_wakes();
            let events = self.inbox.wait(wake_at);
            self.supervisor.os().defer_wakes();
            let now = Instant::now();
            let starved = idle_work_since.is_some_and(|since| now - since >= IDLE_WORK_STARVED);
            if (events.is_empty() && idle_work_at.is_some_and(|at| now >= at)) || starved {
                self.supervisor.do_idle_work();
                idle_work_since = None;
            }
            idle_work_since = self
                .supervisor
                .has_idle_work()
                .then(|| idle_work_since.unwrap_or(now));
            for event in events {
                self.handle(event);
            }
            if let Some(reply) = self.reexec_asked.take() {
                self.reexec(reply);
            }
            self.supervisor.fire_due_timers(Instant::now());
            if self.supervisor.is_stopping() && !told_stopping {
                told_stopping = true;
                self.service
                    .notify("STOPPING=1\nSTATUS=stopping every instance");
            }
            if self.supervisor.finished() {
                self.supervisor.os().flush_wakes();
                return;
            }
        }
    }

    /// One event: the daemon's own (SIGUSR1, reading the units directory), then the
    /// supervisor's.
    fn handle(&mut self, event: Event) {
        if let Event::Signal(libc::SIGUSR1) = event {
            info!("SIGUSR1: reopening the log files");
            self.logs.reopen();
            return;
        }
        let event = match event {
            // Once the events that came with it are handled (see `serve_until_finished`).
            Event::Signal(libc::SIGUSR2) => {
                info!("SIGUSR2: re-executing clusterd from its binary on disk");
                self.reexec_asked.get_or_insert(None);
                return;
            }
            Event::Control {
                request: Request::DaemonReexec {},
                reply,
            } => {
                match &mut self.reexec_asked {
                    Some(asked @ None) => *asked = Some(reply),
                    Some(Some(_)) => {
                        let _ = reply.send(crate::protocol::Response::failed(
                            "a daemon-reexec is under way",
                        ));
                    }
                    None => self.reexec_asked = Some(Some(reply)),
                }
                return;
            }
            // Only a unit clusterd runs, by a name that is a unit's: the name comes from a
            // client, and no other file is read on its word.
            Event::Control {
                request: Request::Reload { unit },
                reply,
            } if crate::unit::is_valid_unit_name(&unit) && self.supervisor.has_unit(&unit) => {
                let file =
                    crate::unit::load_unit_file(&self.units_dir.join(format!("{unit}.toml")));
                if let Some(why) = self.supervisor.changed_on_disk(&file) {
                    warn!("{why}");
                    let _ = reply.send(crate::protocol::Response::failed(why));
                    return;
                }
                Event::Control {
                    request: Request::Reload { unit },
                    reply,
                }
            }
            other => read_units_for(other, &self.units_dir),
        };
        if let Event::Reload {
            files: Ok(files), ..
        } = &event
        {
            warn_if_no_unit_has(files, self.environment.as_deref());
        }
        self.supervisor.handle(event, Instant::now());
    }

    /// The exit, once every instance is gone: the last idle work and log lines, then
    /// clusterd's exit status from how the run ended.
    fn exit(self, holding: log_output::Holding) -> u8 {
        let Running {
            mut supervisor,
            log_thread,
            container,
            notify_file,
            socket_file,
            ..
        } = self;
        supervisor.do_idle_work();
        // Every instance is gone: their last lines are in the pipes, or written already.
        log_thread.finish();
        drop(holding);
        let ending = supervisor.ending();
        // The cgroup tree goes with it: every instance's cgroup was removed once its last
        // process exited, and the spares are removed now.
        drop(supervisor);
        let code = if ending.gave_up {
            exit_code::GAVE_UP
        } else if ending.killed && container {
            exit_code::KILLED
        } else {
            exit_code::STOPPED
        };
        info!("every instance has stopped; exiting with status {code}");
        drop(notify_file);
        drop(socket_file);
        code
    }
}

/// `--environment NAME` that no unit has an `[environments.NAME]` for is likely a typo: say so
/// (the units run with their plain `environment`).
fn warn_if_no_unit_has(files: &[crate::unit::LoadedFile], environment: Option<&str>) {
    let Some(name) = environment else {
        return;
    };
    let units = files.iter().filter_map(|f| f.result.as_ref().ok());
    if !units
        .clone()
        .any(|unit| unit.environments.contains_key(name))
        && units.count() > 0
    {
        warn!("--environment {name}: no unit has an [environments.{name}] table; they run with their plain environment");
    }
}

/// SIGHUP and `clusterctl daemon-reload` ask for the units directory to be read again: the
/// daemon reads it (the supervisor touches no file) and hands the files over as
/// [`Event::Reload`]. Every other event passes through.
fn read_units_for(event: Event, dir: &Path) -> Event {
    let reply = match event {
        Event::Signal(libc::SIGHUP) => {
            info!("SIGHUP: re-reading the units directory");
            None
        }
        Event::Control {
            request: Request::DaemonReload {},
            reply,
        } => Some(reply),
        other => return other,
    };
    let files = load_units_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()));
    Event::Reload { files, reply }
}
