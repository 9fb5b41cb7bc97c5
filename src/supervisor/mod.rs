//! `Supervisor`: the state machine at the heart of clusterd. It owns every unit, instance,
//! deadline and restart budget, and changes only in response to an [`Event`] or a deadline,
//! always given the current time. It never reads the clock or touches the OS itself: the OS is
//! behind [`ProcessControl`], so tests drive it with fed events and a fake clock.
//!
//! The logic is split by concern: `phase` (a process's lifecycle as one enum, and the one
//! transition function that changes it and its timers), `lifecycle` (spawn, exit, restart,
//! give-up, stop), `handover` (readiness, suicide, rolling reload), `requests` (clusterctl
//! verbs), `daemon_reload` (applying a re-read units directory), `health` (watchdog and
//! `[health]` checks: hung instances replaced) and `status`.

mod cron_restart;
mod daemon_reload;
pub(crate) mod event;
mod file_changes;
mod handover;
mod health;
mod jobs;
mod lifecycle;
mod memory_limit;
mod ordering;
mod phase;
mod process;
pub(crate) mod process_control;
mod requests;
pub(crate) mod restart_limiter;
pub(crate) mod snapshot;
mod status;
mod timers;
mod unit_runtime;
mod waiters;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use log::{debug, info, warn};
use nix::sys::signal::Signal;
use nix::unistd::Pid;

use crate::log_limit::{LogLimit, Verdict};
use crate::supervisor::event::{Event, NotifyMessage, WorkerMessage};
use crate::supervisor::process_control::{ExitStatus, ProcessControl, SpawnId};
use crate::unit::{LoadedFile, UnitError};

pub(crate) use health::InstanceHealth;
pub(crate) use process::Process;
use timers::{Timer, Timers};
use unit_runtime::UnitRuntime;

/// How long clusterd waits for processes to be gone after it sent them SIGKILL. A process
/// dies at once unless it is stuck in the kernel (an unresponsive NFS server, a frozen v1
/// cgroup): then nothing clusterd does can end it, and a `stop` or the shutdown must not
/// wait for it forever. Past it, clusterd says what is left and carries on without it.
pub(crate) const AFTER_SIGKILL: std::time::Duration = std::time::Duration::from_secs(5);

pub(crate) struct Supervisor<P: ProcessControl> {
    os: P,
    /// Units whose file parsed, by name (sorted, so status is stable).
    units: BTreeMap<String, UnitRuntime>,
    /// Files that do not parse and have no running unit behind them: status shows `invalid`.
    invalid: BTreeMap<String, UnitError>,
    /// Every live child that is an instance.
    processes: HashMap<SpawnId, Process>,
    /// Instances whose own process is reaped but whose cgroup still has processes: (unit,
    /// pid). They count as alive until the OS reports the cgroup empty.
    lingering: HashMap<SpawnId, (String, Pid)>,
    by_pid: HashMap<Pid, SpawnId>,
    /// Running `on_giveup` hooks: pid -> unit name.
    hooks: HashMap<Pid, String>,
    /// Running `[health]` command checks: pid -> the instance checked.
    probes: HashMap<Pid, SpawnId>,
    /// The number of the last health check started (a late result names its own).
    probe_seq: u64,
    timers: Timers,
    next_spawn_id: SpawnId,
    /// Set by SIGTERM/SIGINT: stopping everything, then exit.
    shutting_down: bool,
    /// Set by SIGTERM/SIGINT while `shutdown_delay` runs: still serving, about to stop.
    stop_requested: bool,
    /// The shutdown stopped waiting for processes that outlived SIGKILL by
    /// [`AFTER_SIGKILL`]: clusterd ends without them.
    stopped_waiting: bool,
    /// What clusterd's flags say about ending: `--shutdown-delay`, `--exit-on-giveup`.
    shutdown_policy: ShutdownPolicy,
    /// How the run ended, for clusterd's exit status.
    ending: Ending,
    /// Warnings about notifications from processes that are no instance.
    stray_notifications: LogLimit,
    /// clusterd's events about units, for their logs, handed to the OS side in order once
    /// the event that caused them is handled.
    unit_events: Vec<UnitEvent>,
    /// Order between units: who waits for whom, and the shutdown's reverse order.
    ordering: ordering::Ordering,
}

/// How clusterd ends, from its flags.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ShutdownPolicy {
    /// After SIGTERM/SIGINT, go on serving this long before stopping the units.
    pub(crate) delay: std::time::Duration,
    /// A unit that gives up stops everything (clusterd then exits with its own status).
    pub(crate) exit_on_giveup: bool,
}

/// What happened on the way out, for clusterd's exit status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Ending {
    /// A unit gave up and `exit_on_giveup` stopped everything.
    pub(crate) gave_up: bool,
    /// An instance had to be killed with SIGKILL during the shutdown.
    pub(crate) killed: bool,
}

/// clusterd's event about a unit, for its log.
pub(super) enum UnitEvent {
    /// Instance `index` runs as `pid` (its output is captured from then on).
    Started { unit: String, index: u32, pid: Pid },
    /// Anything else: exited, restarting, gave up, suicide, reload...
    Note {
        unit: String,
        index: Option<u32>,
        text: String,
    },
}

impl UnitEvent {
    pub(super) fn note(
        unit: impl Into<String>,
        index: Option<u32>,
        text: impl Into<String>,
    ) -> Self {
        UnitEvent::Note {
            unit: unit.into(),
            index,
            text: text.into(),
        }
    }
}

impl<P: ProcessControl> Supervisor<P> {
    pub(crate) fn new(os: P) -> Self {
        Supervisor {
            os,
            units: BTreeMap::new(),
            invalid: BTreeMap::new(),
            processes: HashMap::new(),
            lingering: HashMap::new(),
            by_pid: HashMap::new(),
            hooks: HashMap::new(),
            probes: HashMap::new(),
            probe_seq: 0,
            timers: Timers::default(),
            next_spawn_id: 1,
            shutting_down: false,
            stop_requested: false,
            stopped_waiting: false,
            shutdown_policy: ShutdownPolicy::default(),
            ending: Ending::default(),
            stray_notifications: LogLimit::default(),
            unit_events: Vec::new(),
            ordering: ordering::Ordering::default(),
        }
    }

    /// Hands the events about units noted meanwhile to the OS side (their logs), and keeps
    /// them for status.
    fn pass_on_unit_events(&mut self, now: Instant) {
        for event in std::mem::take(&mut self.unit_events) {
            match event {
                UnitEvent::Started { unit, index, pid } => {
                    if let Some(rt) = self.units.get_mut(&unit) {
                        self.os.instance_started(&rt.unit, index, pid);
                        rt.remember(now, Some(index), format!("started, pid {pid}"));
                    }
                }
                UnitEvent::Note { unit, index, text } => {
                    if let Some(rt) = self.units.get_mut(&unit) {
                        self.os.unit_event(&rt.unit, index, &text);
                        rt.remember(now, index, text);
                    }
                }
            }
        }
    }

    /// Loads the initial units and starts every valid one.
    pub(crate) fn start_all(&mut self, files: Vec<LoadedFile>, now: Instant) {
        for file in files {
            match file.result {
                Ok(unit) => {
                    let name = unit.name.clone();
                    self.units.insert(name.clone(), UnitRuntime::new(unit));
                    self.start_loaded(&name, now);
                }
                Err(error) => {
                    log::error!("{error}");
                    self.invalid.insert(file.name, error);
                }
            }
        }
        self.pass_on_unit_events(now);
    }

    pub(crate) fn handle(&mut self, event: Event, now: Instant) {
        match event {
            Event::Signal(signal) => self.on_signal(signal, now),
            Event::Control { request, reply } => self.on_request(request, reply, now),
            Event::Reload { files, reply } => self.on_reload(files, reply, now),
            // The credits are returned as the events go out of scope, once handled.
            Event::Worker { id, message, .. } => self.on_worker_message(id, message, now),
            Event::Notify {
                pid,
                pgid,
                instance,
                message,
                ..
            } => self.on_notify(pid, pgid, instance, message, now),
            Event::FilesChanged(unit) => self.on_files_changed(&unit, now),
            Event::ProbeDone { id, seq, result } => self.on_probe_done(id, seq, result, now),
        }
        self.pass_on_unit_events(now);
    }

    /// The nearest deadline; the loop sleeps until then unless an event comes first.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.timers.next_deadline()
    }

    /// See [`ProcessControl::has_idle_work`].
    pub(crate) fn has_idle_work(&self) -> bool {
        self.os.has_idle_work()
    }

    pub(crate) fn do_idle_work(&mut self) {
        self.os.do_idle_work();
    }

    /// Acts on every deadline that has passed.
    pub(crate) fn fire_due_timers(&mut self, now: Instant) {
        while let Some(timer) = self.timers.pop_due(now) {
            match timer {
                Timer::Kill(id) => self.kill_after_timeout(id),
                Timer::KillSignal(id) => self.kill_signal_after_asking(id),
                Timer::ReadyTimeout(id) => self.ready_timed_out(id, now),
                Timer::ListenTimeout(id) => self.listen_timed_out(id, now),
                Timer::ReadyAfter(id) => {
                    if self
                        .processes
                        .get(&id)
                        .is_some_and(|p| p.phase.is_ready_pending())
                    {
                        self.mark_ready(id, now);
                    }
                }
                Timer::RetryStarts(unit) => self.retry_starts(&unit, now),
                Timer::MemoryCheck(unit) => self.check_memory(&unit, now),
                Timer::Restart(unit, index) => self.restart_after_wait(&unit, index, now),
                Timer::Cron(unit) => self.cron_reload(&unit, now),
                Timer::Schedule(unit) => self.scheduled_run(&unit, now),
                Timer::WatchReload(unit) => self.reload_after_changes(&unit, now),
                Timer::ShutdownDelay => self.shutdown(now),
                Timer::KillHook(pid) => {
                    // Still in `hooks`: not reaped, so the pid is still that hook's.
                    if let Some(unit) = self.hooks.get(&pid) {
                        warn!("{unit}: on_giveup hook (pid {pid}) still running {}s after clusterd began stopping; killing it with SIGKILL", self.hook_grace(unit).as_secs_f32());
                        self.os.signal_group(pid, Signal::SIGKILL);
                    }
                }
                Timer::KillLeftovers(id, pgid) => {
                    // The pid may have been reused by a new instance leading its own group.
                    let pid_reused = self.by_pid.contains_key(&pgid);
                    self.os.kill_leftovers(id, pgid, pid_reused);
                    if self.lingering.contains_key(&id) {
                        self.timers.add_after(
                            now,
                            AFTER_SIGKILL,
                            Timer::GiveUpOnLeftovers(id, pgid),
                        );
                    }
                }
                Timer::GiveUpOnLeftovers(id, _) => self.give_up_on_leftovers(id, now),
                Timer::ShutdownDeadline => self.stop_waiting(),
                Timer::Watchdog(id) => self.watchdog_due(id, now),
                Timer::HealthCheck(id) => self.health_check_due(id, now),
                Timer::ProbeTimeout(id) => self.probe_timed_out(id, now),
            }
        }
        self.pass_on_unit_events(now);
    }

    /// True once a shutdown has stopped every child clusterd started.
    pub(crate) fn finished(&self) -> bool {
        self.shutting_down
            && (self.stopped_waiting
                || (self.processes.is_empty()
                    && self.lingering.is_empty()
                    && self.hooks.is_empty()))
    }

    #[cfg(test)]
    pub(crate) fn is_shutting_down(&self) -> bool {
        self.shutting_down
    }

    /// True from the first SIGTERM/SIGINT on, while `shutdown_delay` runs too: clusterd is
    /// no longer ready, even if its instances still serve.
    pub(crate) fn is_stopping(&self) -> bool {
        self.shutting_down || self.stop_requested
    }

    pub(crate) fn set_shutdown_policy(&mut self, policy: ShutdownPolicy) {
        self.shutdown_policy = policy;
    }

    /// How the run ended (once [`Supervisor::finished`]).
    pub(crate) fn ending(&self) -> Ending {
        self.ending
    }

    /// How many instance processes are alive (for the service manager's STATUS=).
    pub(crate) fn process_count(&self) -> usize {
        self.processes.len()
    }

    /// Whether a unit of this name is loaded.
    pub(crate) fn has_unit(&self, name: &str) -> bool {
        self.units.contains_key(name)
    }

    pub(crate) fn unit_count(&self) -> usize {
        self.units.len()
    }

    fn on_signal(&mut self, signal: i32, now: Instant) {
        match Signal::try_from(signal) {
            Ok(Signal::SIGCHLD) => {
                let exited = self.os.reap();
                // After the reap: every child reaped has exec'd or exited by then, so an exec
                // failure among them is known, and is not taken for a crash.
                for (pid, e) in self.os.exec_failures(false) {
                    self.on_exec_failure(pid, e, now);
                }
                for (pid, raw) in exited {
                    match ExitStatus::decode(raw) {
                        Some(status) => self.on_child_exit(pid, status, now),
                        None => debug!("pid {pid} stopped or continued (wait status {raw:?})"),
                    }
                }
                // The last process of a cgroup is a child of clusterd (a subreaper), so its
                // exit comes with a SIGCHLD too.
                for id in self.os.collect_cleared() {
                    if let Some((unit, pid)) = self.lingering.remove(&id) {
                        debug!("{unit}: everything instance pid {pid} left has exited");
                        self.timers.cancel(Timer::KillLeftovers(id, pid));
                        self.timers.cancel(Timer::GiveUpOnLeftovers(id, pid));
                        self.settle(&unit, now);
                    }
                }
            }
            Ok(Signal::SIGTERM | Signal::SIGINT | Signal::SIGQUIT) => {
                self.stop_request(signal, now)
            }
            _ => debug!("ignoring signal {signal}"),
        }
    }

    /// SIGTERM/SIGINT (SIGQUIT in container mode): with a `shutdown_delay`, first go on
    /// serving that long, not ready (a load balancer takes a moment to stop sending); a
    /// second signal, or the end of the delay, stops everything.
    fn stop_request(&mut self, signal: i32, now: Instant) {
        let name = Signal::try_from(signal).map_or("a signal", Signal::as_str);
        let delay = self.shutdown_policy.delay;
        if self.shutting_down || self.stop_requested || delay.is_zero() {
            if self.stop_requested && !self.shutting_down {
                info!("{name} again: stopping now, before the end of the shutdown delay");
            }
            self.timers.cancel(Timer::ShutdownDelay);
            return self.shutdown(now);
        }
        info!(
            "{name}: not ready any more; the instances go on serving for {} (--shutdown-delay), then stop",
            humantime::format_duration(delay)
        );
        self.stop_requested = true;
        self.timers.add_after(now, delay, Timer::ShutdownDelay);
    }

    /// First SIGTERM/SIGINT: stop every unit gracefully, in parallel but for `after`. A second one: SIGKILL
    /// everything at once.
    pub(super) fn shutdown(&mut self, now: Instant) {
        if self.shutting_down {
            warn!("second shutdown signal: killing every instance now");
            self.ending.killed |= !self.processes.is_empty() || !self.lingering.is_empty();
            let instances: Vec<(SpawnId, Pid)> = self
                .processes
                .values()
                .map(|p| (p.id, p.pid))
                .chain(self.lingering.iter().map(|(id, (_, pid))| (*id, *pid)))
                .collect();
            for (id, pgid) in instances {
                self.os.signal_instance(id, pgid, Signal::SIGKILL);
            }
            let hooks: Vec<Pid> = self.hooks.keys().copied().collect();
            for pgid in hooks {
                self.os.signal_group(pgid, Signal::SIGKILL);
            }
            // A second signal ends clusterd: what SIGKILL cannot end is not waited for.
            self.timers
                .add_after(now, AFTER_SIGKILL, Timer::ShutdownDeadline);
            return;
        }
        info!(
            "shutting down: stopping {} instance(s) of {} unit(s)",
            self.processes.len(),
            self.units.len()
        );
        self.shutting_down = true;
        // Dependents first: a unit stops once every unit that lists it in `after` is gone.
        let names: Vec<String> = self.units.keys().cloned().collect();
        self.stop_in_reverse_order(names, now);
        // Hooks are stopped like instances: SIGTERM, then SIGKILL after the unit's
        // kill_timeout, so a hook that ignores SIGTERM cannot hold the shutdown forever. A
        // shutdown *because* a unit gave up lets its alarm run (until that SIGKILL).
        let hooks: Vec<(Pid, String)> = self
            .hooks
            .iter()
            .map(|(pid, unit)| (*pid, unit.clone()))
            .collect();
        for (pgid, unit) in hooks {
            if !self.ending.gave_up {
                self.os.signal_group(pgid, Signal::SIGTERM);
            }
            let grace = self.hook_grace(&unit);
            self.timers.add_after(now, grace, Timer::KillHook(pgid));
        }
    }

    /// What instance `id` left (its own process has exited) outlived the SIGKILL sent to it by
    /// [`AFTER_SIGKILL`]: say what is left, and count the instance as gone, so that a `stop`
    /// is answered and a restart or the shutdown goes on.
    fn give_up_on_leftovers(&mut self, id: SpawnId, now: Instant) {
        let Some((unit, pid)) = self.lingering.remove(&id) else {
            return;
        };
        let left = self.os.give_up_on_leftovers(id);
        let text = format!(
            "what instance pid {pid} left is still running {}s after SIGKILL ({left}); no longer waiting for it",
            AFTER_SIGKILL.as_secs()
        );
        warn!("{unit}: {text}");
        self.unit_events
            .push(UnitEvent::note(unit.clone(), None, text));
        self.settle(&unit, now);
    }

    /// The shutdown's deadline after SIGKILL ([`Timer::ShutdownDeadline`]): what is still
    /// running is named, and clusterd ends without it.
    fn stop_waiting(&mut self) {
        if self.finished() {
            return;
        }
        let lingering: Vec<(SpawnId, String, Pid)> = self
            .lingering
            .iter()
            .map(|(id, (unit, pid))| (*id, unit.clone(), *pid))
            .collect();
        let mut instances: Vec<String> = self.processes.values().map(Process::label).collect();
        for (id, unit, pid) in lingering {
            let left = self.os.give_up_on_leftovers(id);
            instances.push(format!("{unit}: what pid {pid} left ({left})"));
        }
        instances.extend(
            self.hooks
                .iter()
                .map(|(pid, unit)| format!("{unit}: on_giveup hook, pid {pid}")),
        );
        warn!(
            "still running {}s after SIGKILL, and no longer waited for: {}",
            AFTER_SIGKILL.as_secs(),
            instances.join("; ")
        );
        self.ending.killed = true;
        self.stopped_waiting = true;
    }

    /// How long a unit's hook may take to stop: the unit's `kill_timeout`.
    fn hook_grace(&self, unit: &str) -> std::time::Duration {
        self.units
            .get(unit)
            .map_or(crate::unit::DEFAULT_KILL_TIMEOUT, |rt| rt.unit.kill_timeout)
    }

    fn on_worker_message(&mut self, id: SpawnId, message: WorkerMessage, now: Instant) {
        if !self.processes.contains_key(&id) {
            return; // it exited meanwhile
        }
        match message {
            WorkerMessage::Suicide => self.on_suicide(id, now),
            WorkerMessage::Ready => self.mark_ready(id, now),
            WorkerMessage::Watchdog => self.on_alive(id, now),
            WorkerMessage::Listening => {
                // With `ready = "notify"` (PM2's wait_ready) listening is not enough.
                let by_listening = self
                    .processes
                    .get(&id)
                    .and_then(|p| self.units.get(&p.unit))
                    .is_some_and(|rt| rt.unit.ready == crate::unit::ReadyMode::Listening);
                if by_listening {
                    self.mark_ready(id, now);
                }
            }
        }
    }

    /// An sd_notify datagram. The sender must be the instance itself, a member of its
    /// process group (a shell wrapper's child, for instance) or of its cgroup. Each instance
    /// leads a session of its own, so no other instance can put a process in its group, and
    /// no process can move itself into another's cgroup: an instance speaks only for itself.
    fn on_notify(
        &mut self,
        pid: Pid,
        pgid: Option<Pid>,
        instance: Option<SpawnId>,
        message: NotifyMessage,
        now: Instant,
    ) {
        let id = self
            .by_pid
            .get(&pid)
            .or_else(|| pgid.and_then(|g| self.by_pid.get(&g)))
            .copied()
            .or(instance.filter(|id| self.processes.contains_key(id)));
        let Some(id) = id else {
            // Anyone may write to NOTIFY_SOCKET: never let that fill the log.
            if let Verdict::Show { suppressed, last } = self.stray_notifications.check(now) {
                warn!(
                    "ignoring a notification from pid {pid}: it is not part of any instance{}",
                    LogLimit::note(suppressed, last)
                );
            }
            return;
        };
        if let Some(text) = message.status {
            if let Some(process) = self.processes.get_mut(&id) {
                process.status_text = Some(text);
            }
        }
        if message.ready {
            self.mark_ready(id, now);
        }
        if message.watchdog {
            self.on_alive(id, now);
        }
        if message.watchdog_trigger {
            self.on_watchdog_trigger(id, now);
        }
        if message.stopping {
            self.on_suicide(id, now);
        }
    }
}
