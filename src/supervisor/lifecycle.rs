//! Starting, reaping, restarting and stopping instances: crash → restart within the budget,
//! give-up with its alarm, graceful stop with SIGKILL after `kill_timeout`.

use super::UnitEvent;
use std::time::{Duration, Instant};

use log::{debug, error, info, warn};
use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::phase::{every_timer_of, Phase, Step, UnitPhase, UnitStep};
use super::process::Process;
use super::timers::Timer;
use super::unit_runtime::{AfterStop, Handover};
use super::waiters::WaitCondition;
use super::Supervisor;
use crate::supervisor::process_control::{
    ExitStatus, GracefulStop, HookRequest, ProcessControl, SpawnError, SpawnId, SpawnRequest,
    SpawnStage,
};
use crate::unit::{ReadyMode, RestartPolicy, Unit, DEFAULT_KILL_TIMEOUT};

/// What [`Supervisor::carry_out_after_stop`] did.
#[derive(Debug, PartialEq, Eq)]
enum Carried {
    /// The unit is gone (its file was removed): nothing more to check.
    Removed,
    /// It is still there.
    Nothing,
}

/// Why the missing instances of a unit are started again later: each has its own backoff.
#[derive(Clone, Copy)]
enum Retry {
    /// The system ran out of fds, processes or memory: soon, it may be over in a moment.
    Resources,
    /// The program cannot be executed: a user has to act, so less often.
    CannotExecute,
}

impl Retry {
    /// The first delay, and the longest the doubling reaches.
    fn delays(self) -> (Duration, Duration) {
        match self {
            Retry::Resources => (Duration::from_millis(100), Duration::from_secs(10)),
            Retry::CannotExecute => (Duration::from_secs(1), Duration::from_secs(60)),
        }
    }
}

impl<P: ProcessControl> Supervisor<P> {
    /// Starts every missing instance of a unit (a manual start: clears a give-up).
    pub(super) fn start_unit(&mut self, name: &str, now: Instant) {
        self.set_unit_phase(name, UnitStep::Start);
        let Some(rt) = self.units.get_mut(name) else {
            return;
        };
        rt.restarts = 0;
        for slot in &mut rt.slots {
            slot.restarts = 0;
        }
        rt.limiter.reset();
        // A manual start is a fresh try, now: no waiting restart, no grown backoff.
        rt.retry_delay = None;
        self.timers.cancel(Timer::RetryStarts(name.to_string()));
        for slot in &mut rt.slots {
            slot.next_backoff = None;
        }
        self.cancel_waiting_restarts(name);
        if self.hold_back(name) {
            self.follow_configuration(name, now);
            self.settle(name, now);
            return;
        }
        self.begin_run(name, now);
        let Some(rt) = self.units.get_mut(name) else {
            return;
        };
        if !rt.unit.listen.is_empty() && !self.os.sockets_open(name) {
            if let Err(e) = self.os.open_sockets(&rt.unit) {
                self.set_unit_phase(name, UnitStep::Stop);
                self.fail_unit(name, e, 0, now);
                self.settle(name, now);
                return;
            }
        }
        self.start_missing(name, now);
        self.follow_configuration(name, now);
        self.settle(name, now);
    }

    /// Starts instance `index`. A start that fails (the program cannot be executed) counts as
    /// a failed start: it is retried within the restart budget, like a crash. A start that
    /// fails because the system is out of resources (file descriptors, processes) is not the
    /// program's fault: it is retried after a growing delay, outside the budget, so that a
    /// moment of exhaustion neither spins nor gives the unit up.
    pub(super) fn start_instance(&mut self, name: &str, index: u32, now: Instant) {
        while let Err(e) = self.spawn_into_slot(name, index, now) {
            if !self.after_failed_start(name, index, e, now) {
                return;
            }
        }
    }

    /// What a failed start of `index` leads to — found at the spawn, or later, when the
    /// child's exec failed ([`Self::on_exec_failure`]): a retry later (out of resources, or a
    /// program that cannot be executed), nothing, or (true) a start again now, counted.
    fn after_failed_start(&mut self, name: &str, index: u32, e: SpawnError, now: Instant) -> bool {
        if e.out_of_resources() {
            self.retry_starts_later(name, Retry::Resources, now);
            return false;
        }
        let Some(rt) = self.units.get_mut(name) else {
            return false;
        };
        if e.cannot_execute() {
            rt.cannot_execute = Some(e.message);
            if rt.unit.restart != RestartPolicy::Never {
                self.retry_starts_later(name, Retry::CannotExecute, now);
            }
            return false;
        }
        rt.unit.restart != RestartPolicy::Never && self.take_restart(name, index, now)
    }

    /// The instance `pid` never ran its program: its exec failed (reported by
    /// [`ProcessControl::exec_failures`] after `spawn` had returned). The process goes as if
    /// the spawn had failed: the same report, and the same retry.
    pub(super) fn on_exec_failure(&mut self, pid: Pid, e: SpawnError, now: Instant) {
        let Some((id, process)) = self.take_process(pid) else {
            return;
        };
        let (name, index) = (process.unit.clone(), process.index);
        self.note_failed_start(&name, index, &e);
        let mut start_again = !process.phase.is_leaving() && !self.shutting_down;
        if let Some(rt) = self.units.get_mut(&name) {
            rt.processes.remove(&id);
            start_again &= rt.phase.restarts() && index < rt.wanted;
            if let Some(slot) = rt.slots.get_mut(index as usize) {
                if slot.current == Some(id) {
                    slot.current = None;
                    match slot.standby.take() {
                        Some((old, Handover::Reload)) => {
                            // As when the spawn of a reload's new process fails.
                            slot.current = Some(old);
                            let error = format!("failed to start: {e}");
                            self.abort_rollout(
                                &name,
                                format!("{name}[{index}]: {error}; the old process keeps serving"),
                                now,
                            );
                            start_again = false;
                        }
                        Some((standby, kind)) => self.let_go(standby, kind, now),
                        None => {}
                    }
                } else {
                    start_again = false;
                }
            }
        }
        self.clean_up_after_exit(id, &process, now);
        if start_again && self.after_failed_start(&name, index, e, now) {
            self.start_instance(&name, index, now);
        }
        self.settle(&name, now);
    }

    /// Takes in the exec failures of the instances started so far, waiting for their
    /// execs: before an answer that is to name the cause (`daemon-reload`, `start`), and
    /// before a re-exec's snapshot (a child still on its way to exec keeps its failure
    /// report in the old image's memory, which the exec takes away).
    pub(crate) fn settle_execs(&mut self, now: Instant) {
        for (pid, e) in self.os.exec_failures(true) {
            self.on_exec_failure(pid, e, now);
        }
    }

    /// A start of `index` failed: said in the log, the unit's events and its slot.
    fn note_failed_start(&mut self, name: &str, index: u32, e: &SpawnError) {
        error!("{name}[{index}]: failed to start: {e}");
        self.unit_events.push(UnitEvent::note(
            name.to_string(),
            Some(index),
            format!("failed to start: {e}"),
        ));
        if let Some(rt) = self.units.get_mut(name) {
            rt.slot_mut(index).last_exit = Some(format!("failed to start: {e}"));
        }
    }

    /// Arms the unit's retry of its missing instances, each time twice as far off (within
    /// [`Retry::delays`]); a successful spawn resets it.
    fn retry_starts_later(&mut self, name: &str, why: Retry, now: Instant) {
        let Some(rt) = self.units.get_mut(name) else {
            return;
        };
        let (first, max) = why.delays();
        let delay = rt.retry_delay.map_or(first, |d| (d * 2).clamp(first, max));
        rt.retry_delay = Some(delay);
        let cause = match why {
            Retry::Resources => "out of system resources",
            // Not only the program: a missing working directory or user stops it too.
            Retry::CannotExecute => "its program cannot be started",
        };
        warn!(
            "{name}: {cause}; starting its missing instances again in {}",
            humantime::format_duration(delay)
        );
        self.timers
            .add_after(now, delay, Timer::RetryStarts(name.to_string()));
    }

    /// The retry armed by [`Self::retry_starts_later`]: starts the unit's missing instances,
    /// if it still wants them.
    pub(super) fn retry_starts(&mut self, name: &str, now: Instant) {
        let Some(rt) = self.units.get(name) else {
            return;
        };
        if !rt.phase.restarts() || self.shutting_down {
            return;
        }
        self.start_missing(name, now);
        self.settle(name, now);
    }

    /// Starts every wanted index that has no process, in order; stops at a start that failed
    /// for lack of resources (the retry of the rest is armed then, once).
    fn start_missing(&mut self, name: &str, now: Instant) {
        let Some(rt) = self.units.get(name) else {
            return;
        };
        let retry = Timer::RetryStarts(name.to_string());
        // An index waiting for its restart delay starts when that is over.
        let waiting: Vec<u32> = (0..rt.slots.len() as u32)
            .filter(|&i| rt.slots[i as usize].restart_at.is_some())
            .collect();
        for index in rt
            .missing_indexes()
            .into_iter()
            .filter(|i| !waiting.contains(i))
        {
            self.start_instance(name, index, now);
            if self.timers.is_armed(&retry) {
                break;
            }
        }
    }

    /// Spawns a process for `index` and makes it the slot's current process.
    pub(super) fn spawn_into_slot(
        &mut self,
        name: &str,
        index: u32,
        now: Instant,
    ) -> Result<SpawnId, SpawnError> {
        let id = self.next_spawn_id;
        self.next_spawn_id += 1;
        let Some(rt) = self.units.get_mut(name) else {
            return Err(SpawnError::new(
                SpawnStage::Program,
                "",
                format!("{name}: no such unit"),
            ));
        };
        let spawned = self.os.spawn(&SpawnRequest {
            id,
            unit: &rt.unit,
            index,
            instances: rt.wanted,
        });
        match spawned {
            Ok(pid) => {
                rt.retry_delay = None;
                rt.cannot_execute = None;
                let ready = rt.unit.ready == ReadyMode::Started;
                rt.slot_mut(index).current = Some(id);
                rt.processes.insert(id);
                info!("{name}[{index}]: started, pid {pid}");
                self.unit_events.push(UnitEvent::Started {
                    unit: name.to_string(),
                    index,
                    pid,
                });
                self.processes.insert(
                    id,
                    Process {
                        id,
                        unit: name.to_string(),
                        index,
                        pid,
                        started_at: now,
                        phase: Phase::Starting,
                        status_text: None,
                        health: Default::default(),
                    },
                );
                self.by_pid.insert(pid, id);
                self.enter_starting(id, now);
                self.health_on_start(id, now);
                if ready {
                    // Not mark_ready: re-checking the unit now, with some of its indexes still
                    // to be started, would take them for instances that cannot start.
                    self.set_ready(id, now);
                }
                self.arm_memory_check(name, now);
                Ok(id)
            }
            Err(e) => {
                self.note_failed_start(name, index, &e);
                Err(e)
            }
        }
    }

    /// Counts an automatic restart against the budget. Returns false, and gives the unit up,
    /// when the budget is spent.
    pub(super) fn take_restart(&mut self, name: &str, index: u32, now: Instant) -> bool {
        let Some(rt) = self.units.get_mut(name) else {
            return false;
        };
        // Already given up (another index spent the budget, e.g. a program that cannot be
        // executed, retried per index): no restart, and no second alarm — `on_giveup` runs
        // once per give-up.
        if rt.phase.gave_up().is_some() {
            return false;
        }
        if !rt.limiter.try_acquire(now) {
            self.give_up(name, now);
            return false;
        }
        rt.restarts += 1;
        rt.slot_mut(index).restarts += 1;
        let limit = &rt.unit.restart_limit;
        let text = format!(
            "restarting ({} restart(s) so far; limit {} per {})",
            rt.restarts,
            limit.burst,
            humantime::format_duration(limit.interval)
        );
        info!("{name}[{index}]: {text}");
        self.unit_events
            .push(UnitEvent::note(name.to_string(), Some(index), text));
        true
    }

    /// The restart budget is spent: no more automatic restarts; instances that still run keep
    /// serving; the alarm hook runs once.
    pub(super) fn give_up(&mut self, name: &str, now: Instant) {
        let Some(rt) = self.units.get(name) else {
            return;
        };
        let limit = &rt.unit.restart_limit;
        let reason = format!(
            "gave up: more than {} restart(s) within {}",
            limit.burst,
            humantime::format_duration(limit.interval)
        );
        let restarts = limit.burst;
        self.fail_unit(name, reason, restarts, now);
    }

    /// The unit cannot be kept running (restart budget spent, or its sockets cannot be
    /// bound): it shows `failed` with `reason`, nothing is restarted automatically until a
    /// manual start or restart, and the `on_giveup` alarm runs once with CLUSTERD_UNIT,
    /// CLUSTERD_RESTARTS (restarts made within the interval), CLUSTERD_INTERVAL and
    /// CLUSTERD_REASON.
    pub(super) fn fail_unit(&mut self, name: &str, reason: String, restarts: u32, now: Instant) {
        let Some(rt) = self.units.get_mut(name) else {
            return;
        };
        let interval = humantime::format_duration(rt.unit.restart_limit.interval).to_string();
        error!("{name}: {reason}; no more automatic restarts until `clusterctl start {name}` or `clusterctl restart {name}`");
        self.unit_events.push(UnitEvent::note(
            name.to_string(),
            None,
            format!("{reason}; no more automatic restarts"),
        ));
        self.set_unit_phase(name, UnitStep::GiveUp(reason.clone()));
        let Some(rt) = self.units.get_mut(name) else {
            return;
        };
        rt.give_ups += 1;
        if let Some(command) = rt.unit.on_giveup.clone() {
            let environment = vec![
                ("CLUSTERD_UNIT".to_string(), name.to_string()),
                ("CLUSTERD_RESTARTS".to_string(), restarts.to_string()),
                ("CLUSTERD_INTERVAL".to_string(), interval),
                ("CLUSTERD_REASON".to_string(), reason),
            ];
            let request = HookRequest {
                unit: &rt.unit,
                command: &command,
                environment,
            };
            match self.os.spawn_hook(&request) {
                Ok(pid) => {
                    info!("{name}: running on_giveup hook, pid {pid}");
                    self.hooks.insert(pid, name.to_string());
                }
                Err(e) => error!("{name}: cannot run on_giveup hook: {e}"),
            }
        }
        self.fail_waiters(name, now);
        if self.shutdown_policy.exit_on_giveup && !self.shutting_down {
            error!("{name} gave up and --exit-on-giveup is set: stopping every unit");
            self.ending.gave_up = true;
            self.shutdown(now);
        }
    }

    /// A child was reaped: an instance, a hook, or an orphan clusterd adopted as subreaper.
    pub(super) fn on_child_exit(&mut self, pid: Pid, status: ExitStatus, now: Instant) {
        if let Some(unit) = self.hooks.remove(&pid) {
            self.timers.cancel(Timer::KillHook(pid));
            info!("{unit}: on_giveup hook (pid {pid}) {status}");
            return;
        }
        if let Some(id) = self.probes.remove(&pid) {
            // What the check left in its group (`daemon &`) ends with it: else each check
            // could leave one more process behind. The group outlives its reaped leader while
            // it has members, so its number is not reused meanwhile.
            self.os.signal_group(pid, Signal::SIGKILL);
            return self.probe_exited(id, pid, status, now);
        }
        if !self.by_pid.contains_key(&pid) {
            debug!("reaped pid {pid} ({status}), not an instance");
            return;
        }
        let Some((id, process)) = self.take_process(pid) else {
            return;
        };
        if process.phase.is_leaving() {
            info!("{}: {status}", process.label());
        } else {
            warn!("{}: {status}", process.label());
        }
        self.unit_events.push(UnitEvent::note(
            process.unit.clone(),
            Some(process.index),
            format!("pid {pid} {status}"),
        ));
        // What the exit means for its slot comes first, a crash's restart included: nothing
        // that can wait (closing the old channel, its cgroup, its leftovers) stands between
        // the reap and the fork of the replacement.
        self.update_slot_after_exit(id, &process, status, now);
        self.clean_up_after_exit(id, &process, now);
        self.settle(&process.unit, now);
    }

    /// The instance process `pid` is gone (reaped, or its exec failed): it leaves the tables
    /// and its phase for good, every timer about it goes, and its health is told.
    fn take_process(&mut self, pid: Pid) -> Option<(SpawnId, Process)> {
        let id = self.by_pid.remove(&pid)?;
        let process = self.processes.remove(&id)?;
        for timer in every_timer_of(id) {
            self.timers.cancel(timer);
        }
        self.health_on_exit(&process);
        Some((id, process))
    }

    /// The slot of an instance that exited: it restarts (within policy and budget), hands
    /// over to its standby, or puts the old process of a failed reload back.
    fn update_slot_after_exit(
        &mut self,
        id: SpawnId,
        process: &Process,
        status: ExitStatus,
        now: Instant,
    ) {
        let (name, index) = (process.unit.as_str(), process.index);
        let Some(rt) = self.units.get_mut(name) else {
            return;
        };
        rt.processes.remove(&id);
        if index as usize >= rt.slots.len() {
            return; // scaled away: nothing to restart or hand over
        }
        let slot = rt.slot_mut(index);
        if slot.standby.is_some_and(|(standby, _)| standby == id) {
            // The process being replaced left before the handover: nothing to do.
            slot.standby = None;
        } else if slot.current == Some(id) {
            slot.current = None;
            slot.last_exit = Some(status.to_string());
            if let Some((standby, handover)) = slot.standby.take() {
                match handover {
                    Handover::Reload => {
                        // The new process died before it was ready: the old one serves on.
                        slot.current = Some(standby);
                        self.abort_rollout(
                            name,
                            format!("{name}[{index}]: the new process {status} before it was ready; the old one keeps serving"),
                            now,
                        );
                        return;
                    }
                    kind @ (Handover::Suicide | Handover::Replace) => {
                        self.let_go(standby, kind, now)
                    }
                }
            }
            self.maybe_restart(process, status, now);
        } else {
            slot.last_exit = slot.last_exit.take().or(Some(status.to_string()));
        }
    }

    /// What an exited instance leaves: its worker channel and cgroup are released, and
    /// whatever else of it still runs is stopped — at once if it was being stopped, gracefully
    /// otherwise; the instance counts as alive until its cgroup is empty.
    fn clean_up_after_exit(&mut self, id: SpawnId, process: &Process, now: Instant) {
        self.os.release(id);
        if self.os.has_leftovers(id) {
            self.lingering
                .insert(id, (process.unit.clone(), process.pid));
        }
        if process.phase.is_stopping() {
            self.os.signal_instance(id, process.pid, Signal::SIGKILL);
            if self.lingering.contains_key(&id) {
                self.timers.add_after(
                    now,
                    super::AFTER_SIGKILL,
                    Timer::GiveUpOnLeftovers(id, process.pid),
                );
            }
            return;
        }
        let (kill_signal, kill_timeout) = self
            .units
            .get(&process.unit)
            .map_or((Signal::SIGTERM, DEFAULT_KILL_TIMEOUT), |rt| {
                (rt.unit.kill_signal, rt.unit.kill_timeout)
            });
        self.os.signal_instance(id, process.pid, kill_signal);
        self.timers
            .add_after(now, kill_timeout, Timer::KillLeftovers(id, process.pid));
    }

    /// After an instance exited on its own: restart it if the unit's policy and budget allow.
    fn maybe_restart(&mut self, process: &Process, status: ExitStatus, now: Instant) {
        let name = &process.unit;
        let Some(rt) = self.units.get(name) else {
            return;
        };
        // Stopped as hung (a replacement that hung before it was ready): a crash, whatever
        // its exit status says, since its index has no other process.
        let hung = process.health.stopped_as_hung();
        if (process.phase.is_leaving() && !hung)
            || !rt.phase.restarts()
            || self.shutting_down
            || process.index >= rt.wanted
        {
            return;
        }
        if rt.unit.job.is_oneshot() {
            return self.job_instance_exited(process, status, now);
        }
        // `restart_prevent_exit_codes`: the program said by its code that it is done.
        let prevented = matches!(status, ExitStatus::Code(code) if rt.unit.restart_prevent_exit_codes.contains(&code));
        let wanted = match rt.unit.restart {
            _ if prevented => false,
            RestartPolicy::Never => false,
            _ if hung => true,
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => !status.is_clean(),
        };
        if !wanted {
            if prevented {
                info!(
                    "{}: not restarting ({status}: restart_prevent_exit_codes)",
                    process.label()
                );
            } else {
                info!(
                    "{}: not restarting (restart = \"{}\")",
                    process.label(),
                    rt.unit.restart
                );
            }
            return;
        }
        self.restart_after_exit(process, now);
    }

    /// Restarts the index of an instance that exited, within the budget (or gives the unit
    /// up), after its `restart_delay` or backoff.
    pub(super) fn restart_after_exit(&mut self, process: &Process, now: Instant) {
        let name = &process.unit;
        // `restart_limit.min_uptime`: a run that long was stable; its restart is not counted.
        let stable = self.units.get(name).is_some_and(|rt| {
            rt.unit
                .restart_limit
                .min_uptime
                .is_some_and(|min| now.saturating_duration_since(process.started_at) >= min)
        });
        if stable {
            if let Some(rt) = self.units.get_mut(name) {
                rt.restarts += 1;
                rt.slot_mut(process.index).restarts += 1;
            }
            info!(
                "{}: restarting (it ran at least restart_limit.min_uptime: not counted against the limit)",
                process.label()
            );
        } else if !self.take_restart(name, process.index, now) {
            return;
        }
        let wait = self.wait_before_restart(process, now);
        if wait.is_zero() {
            self.start_instance(name, process.index, now);
            return;
        }
        let Some(rt) = self.units.get_mut(name) else {
            return;
        };
        rt.slot_mut(process.index).restart_at = Some(now + wait);
        let text = format!("restarting in {}", humantime::format_duration(wait));
        info!("{}: {text}", process.label());
        self.unit_events
            .push(UnitEvent::note(name.clone(), Some(process.index), text));
        self.timers
            .add_after(now, wait, Timer::Restart(name.clone(), process.index));
    }

    /// How long an instance that exited waits before its restart: `restart_delay`, or the
    /// next step of `restart_backoff` (back to its start after a run of `reset_after`).
    fn wait_before_restart(&mut self, process: &Process, now: Instant) -> Duration {
        let Some(rt) = self.units.get_mut(&process.unit) else {
            return Duration::ZERO;
        };
        let Some(backoff) = rt.unit.restart_backoff else {
            return rt.unit.restart_delay;
        };
        let ran = now.saturating_duration_since(process.started_at);
        let slot = rt.slot_mut(process.index);
        let wait = match slot.next_backoff {
            Some(next) if ran < backoff.reset_after => next,
            _ => backoff.initial,
        };
        slot.next_backoff = Some(backoff.after(wait));
        wait
    }

    /// Restarts waiting out a delay will not happen (the unit is stopped, started by hand,
    /// or gave up): their timers go, and status no longer shows them `restarting`.
    pub(super) fn cancel_waiting_restarts(&mut self, name: &str) {
        let Some(rt) = self.units.get_mut(name) else {
            return;
        };
        for (index, slot) in rt.slots.iter_mut().enumerate() {
            if slot.restart_at.take().is_some() {
                self.timers
                    .cancel(Timer::Restart(name.to_string(), index as u32));
            }
        }
    }

    /// `Timer::Restart`: the wait is over; restart the index if it is still wanted and empty.
    pub(super) fn restart_after_wait(&mut self, name: &str, index: u32, now: Instant) {
        let shutting_down = self.shutting_down;
        let Some(rt) = self.units.get_mut(name) else {
            return;
        };
        let Some(slot) = rt.slots.get_mut(index as usize) else {
            return;
        };
        if slot.restart_at.take().is_none() || slot.current.is_some() {
            return;
        }
        if !rt.phase.restarts() || shutting_down || index >= rt.wanted {
            return;
        }
        self.start_instance(name, index, now);
        self.settle(name, now);
    }

    /// Stops every instance, then starts the unit again once nothing of it runs (with
    /// `new_unit` if given): `clusterctl restart`, and a daemon-reload that cannot roll.
    pub(super) fn restart_unit(&mut self, name: &str, new_unit: Option<Unit>, now: Instant) {
        if let Some(rt) = self.units.get_mut(name) {
            rt.after_stop = AfterStop::Start(new_unit.map(Box::new));
        }
        self.stop_unit(name, now);
    }

    /// Stops every process of a unit gracefully, in parallel.
    pub(super) fn stop_unit(&mut self, name: &str, now: Instant) {
        self.set_unit_phase(name, UnitStep::Stop);
        let Some(rt) = self.units.get_mut(name) else {
            return;
        };
        // A stop is not a failure of the configuration being rolled out: keep it.
        if let Some(rollout) = rt.rollout.as_mut() {
            rollout.revert_to = None;
        }
        if rt.rollout.is_some() {
            self.abort_rollout(name, format!("{name}: reload interrupted by a stop"), now);
        }
        let ids: Vec<SpawnId> = self.processes_of(name).map(|p| p.id).collect();
        for id in ids {
            self.stop_process(id, now);
        }
        self.settle(name, now);
    }

    /// Sends the unit's `kill_signal` to the process's group (or asks it to leave) and arms
    /// the SIGKILL deadline: [`Step::Stop`].
    pub(super) fn stop_process(&mut self, id: SpawnId, now: Instant) {
        let Some(process) = self.processes.get(&id) else {
            return;
        };
        if process.phase.is_stopping() {
            return;
        }
        let Some(rt) = self.units.get(&process.unit) else {
            return;
        };
        let stop_message = rt
            .unit
            .stop_message
            .as_ref()
            .map(|text| format!("{}\n", serde_json::Value::String(text.clone())).into_bytes());
        let asked = self
            .os
            .begin_stop(id, process.pid, rt.unit.kill_signal, stop_message)
            == GracefulStop::Asked;
        if asked {
            let how = match &rt.unit.stop_message {
                Some(text) => format!("the message {text:?}"),
                _ => "Node cluster disconnect".to_string(),
            };
            info!("{}: stopping ({how})", process.label());
            self.unit_events.push(UnitEvent::note(
                process.unit.clone(),
                Some(process.index),
                format!("stopping pid {} ({how})", process.pid),
            ));
            self.transition(id, Step::Stop { asked }, now);
            return;
        }
        info!(
            "{}: stopping with {}",
            process.label(),
            rt.unit.kill_signal.as_str()
        );
        self.unit_events.push(UnitEvent::note(
            process.unit.clone(),
            Some(process.index),
            format!(
                "stopping pid {} with {}",
                process.pid,
                rt.unit.kill_signal.as_str()
            ),
        ));
        let (pid, kill_signal) = (process.pid, rt.unit.kill_signal);
        self.transition(id, Step::Stop { asked }, now);
        self.os.signal_instance(id, pid, kill_signal);
        // A stopped (SIGSTOP) process would never see the signal.
        if kill_signal != Signal::SIGKILL {
            self.os.signal_instance(id, pid, Signal::SIGCONT);
        }
    }

    /// Arms a SIGKILL `kill_timeout` from now without sending any signal first (suicide: the
    /// process said it is leaving): [`Step::LetGo`].
    pub(super) fn arm_kill(&mut self, id: SpawnId, now: Instant) {
        self.transition(id, Step::LetGo, now);
    }

    /// A process asked to leave (a Node worker's disconnect, the unit's `stop_message`) is
    /// still running after half its `kill_timeout`.
    pub(super) fn kill_signal_after_asking(&mut self, id: SpawnId) {
        let Some(process) = self.processes.get(&id) else {
            return;
        };
        let Some(rt) = self.units.get(&process.unit) else {
            return;
        };
        let signal = rt.unit.kill_signal;
        info!(
            "{}: still running after it was asked to leave; sending {}",
            process.label(),
            signal.as_str()
        );
        self.os.signal_instance(id, process.pid, signal);
        if signal != Signal::SIGKILL {
            self.os.signal_instance(id, process.pid, Signal::SIGCONT);
        }
    }

    pub(super) fn kill_after_timeout(&mut self, id: SpawnId) {
        let Some(process) = self.processes.get(&id) else {
            return;
        };
        let timeout = self
            .units
            .get(&process.unit)
            .map(|rt| humantime::format_duration(rt.unit.kill_timeout).to_string())
            .unwrap_or_default();
        warn!(
            "{}: still running {timeout} after it was told to stop; killing it with SIGKILL",
            process.label()
        );
        self.unit_events.push(UnitEvent::note(
            process.unit.clone(),
            Some(process.index),
            format!(
                "pid {} still running {timeout} after it was told to stop; killing it with SIGKILL",
                process.pid
            ),
        ));
        self.os.signal_instance(id, process.pid, Signal::SIGKILL);
        self.ending.killed |= self.shutting_down;
    }

    /// The live processes of a unit.
    pub(super) fn processes_of<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a Process> + 'a {
        self.units
            .get(name)
            .into_iter()
            .flat_map(|rt| rt.processes.iter())
            .filter_map(|id| self.processes.get(id))
    }

    /// Processes of the unit that are not gone: instances, and what released instances left
    /// in their cgroups.
    pub(super) fn alive_count(&self, name: &str) -> usize {
        self.units.get(name).map_or(0, |rt| rt.processes.len())
            + self
                .lingering
                .values()
                .filter(|(unit, _)| unit == name)
                .count()
    }

    /// Re-checks a unit after any change: once nothing of it runs, carries out what was
    /// planned (start again, or forget it); answers the requests waiting on it; moves a
    /// reload on.
    pub(super) fn settle(&mut self, name: &str, now: Instant) {
        // First what was planned for when nothing runs, so that a `stop` answered below really
        // is complete (its sockets closed, its unix socket files removed).
        if self.carry_out_after_stop(name, now) == Carried::Removed {
            return;
        }
        self.end_run_if_over(name, now);
        self.answer_waiters(name, now);
        self.advance_rollout(name, now);
        // Only a satisfied unit can release units waiting for it, and only a unit that is
        // gone can let the shutdown stop what it depends on.
        if self.is_satisfied(name) {
            self.release_waiting(name, now);
        }
        if self.alive_count(name) == 0 {
            self.stop_what_nothing_needs(now);
        }
    }

    /// When nothing of a stopped unit runs any more: release its sockets, start it again
    /// (restart, daemon-reload), or forget it (its file was removed).
    fn carry_out_after_stop(&mut self, name: &str, now: Instant) -> Carried {
        let alive = self.alive_count(name);
        let Some(rt) = self.units.get_mut(name) else {
            return Carried::Removed;
        };
        // A unit that gave up and has no instance left would keep its sockets with nobody
        // accepting: clients would wait in the backlog until their own timeout, and a load
        // balancer could not fail over. Closed, they are refused at once; `start` or
        // `restart` binds them again.
        if alive == 0
            && rt.phase.gave_up().is_some()
            && !rt.unit.listen.is_empty()
            && self.os.sockets_open(name)
        {
            info!("{name}: gave up and no instance is left; closing its listening sockets (clients are refused until `clusterctl start {name}`)");
            self.os.close_sockets(name);
            let note = "closed its listening sockets: no instance is left to accept".to_string();
            self.unit_events
                .push(UnitEvent::note(name.to_string(), None, note));
        }
        if alive > 0 || rt.phase.is_active() {
            return Carried::Nothing;
        }
        match std::mem::replace(&mut rt.after_stop, AfterStop::Nothing) {
            AfterStop::Nothing => self.os.release_unit(name),
            AfterStop::Start(new_unit) => {
                if let Some(unit) = new_unit {
                    if unit.listen != rt.unit.listen
                        || unit.balance != rt.unit.balance
                        || unit.listen_options != rt.unit.listen_options
                    {
                        self.os.close_sockets(name);
                    }
                    rt.set_unit(*unit);
                }
                rt.slots.clear();
                // The stop is complete: answer a `stop` that was waiting for it before the unit
                // starts again (after which it would never see "nothing runs").
                rt.waiters
                    .answer_met(|until| until == WaitCondition::AllGone);
                if !self.shutting_down {
                    self.start_unit(name, now);
                }
            }
            AfterStop::Remove => {
                info!("{name}: removed");
                self.os.release_unit(name);
                rt.waiters
                    .answer_met(|until| until == WaitCondition::AllGone);
                rt.waiters.fail(
                    WaitCondition::AllReady,
                    &format!("{name}: its unit file was removed"),
                );
                self.units.remove(name);
                return Carried::Removed;
            }
        }
        Carried::Nothing
    }

    /// Answers the requests whose condition now holds, and fails the readiness waiters of a
    /// unit that will not get ready by itself.
    fn answer_waiters(&mut self, name: &str, now: Instant) {
        let alive = self.alive_count(name);
        let all_ready = self.all_ready(name);
        let Some(rt) = self.units.get_mut(name) else {
            return;
        };
        rt.waiters.answer_met(|until| match until {
            WaitCondition::AllGone => alive == 0,
            WaitCondition::AllReady => all_ready,
        });
        // An active unit with an empty slot will not fill it by itself (it gave up, or
        // restart = "never"): requests waiting for readiness have their answer.
        // Neither will a unit that is down with nothing planned: its start failed before any
        // instance ran (its listen sockets cannot be opened), or clusterd is shutting down and
        // dropped the planned start. Without this, `clusterctl start|restart` would wait
        // forever (or until clusterd exits).
        // Waiting for a dependency or a schedule: `start` answers that it waits.
        if rt.phase.holds_back() && rt.phase != UnitPhase::Done {
            let text = format!("{name}: {}", self.waiting_text(name));
            if let Some(rt) = self.units.get_mut(name) {
                rt.waiters.answer_with(WaitCondition::AllReady, &text);
            }
            return;
        }
        let stuck = rt.phase.is_active()
            && (rt.phase.gave_up().is_some() || !rt.missing_indexes().is_empty());
        let down_for_good =
            !rt.phase.is_active() && alive == 0 && matches!(rt.after_stop, AfterStop::Nothing);
        if stuck || down_for_good {
            self.fail_waiters(name, now);
        }
    }

    /// True when every wanted index has a ready process and nothing runs above `wanted`.
    pub(super) fn all_ready(&self, name: &str) -> bool {
        let Some(rt) = self.units.get(name) else {
            return false;
        };
        // A one-shot's instances are "ready" as soon as they run: its run is what counts.
        if rt.unit.job.is_oneshot() {
            return rt.phase == UnitPhase::Done;
        }
        let every_index_ready = (0..rt.wanted).all(|i| {
            rt.slots
                .get(i as usize)
                .and_then(|s| s.current)
                .and_then(|id| self.processes.get(&id))
                .is_some_and(|p| p.phase.is_ready() && !p.phase.is_stopping())
        });
        let none_above = !self.processes_of(name).any(|p| p.index >= rt.wanted);
        rt.phase.is_active() && every_index_ready && none_above
    }

    /// Answers every readiness waiter of a unit with an error (it gave up, or an instance
    /// cannot be started).
    pub(super) fn fail_waiters(&mut self, name: &str, _now: Instant) {
        let shutting_down = self.shutting_down;
        let Some(rt) = self.units.get_mut(name) else {
            return;
        };
        let reason = rt.phase.gave_up().map(str::to_string).unwrap_or_else(|| {
            if shutting_down {
                return "clusterd is shutting down".to_string();
            }
            rt.slots
                .iter()
                .enumerate()
                .filter(|(_, s)| s.current.is_none())
                .find_map(|(i, s)| s.last_exit.as_ref().map(|e| format!("instance {i} {e}")))
                .unwrap_or_else(|| "an instance is not running".to_string())
        });
        rt.waiters
            .fail(WaitCondition::AllReady, &format!("{name}: {reason}"));
    }
}
