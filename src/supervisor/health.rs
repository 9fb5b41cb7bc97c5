//! The supervisor's side of `watchdog` and `[health]`: an instance that still runs but no
//! longer works is replaced like a `memory_max` replacement — its replacement starts (within
//! the restart budget, so a unit whose every instance hangs gives up) and becomes ready, then
//! the hung one gets `kill_signal`, and SIGKILL after `kill_timeout`.
//!
//! - **watchdog**: each ready instance has one `Timer::Watchdog`. A `WATCHDOG=1` (or
//!   `{"act":"watchdog"}`) only notes the time; the timer, when it fires, re-arms itself from
//!   the last note or declares the instance hung — and moves the timers of the unit's other
//!   instances on from their last notes too, so that instances pinging on their own
//!   schedules share one wake-up: about two per `watchdog` for the whole unit, however many
//!   instances and however often they ping. A flood of pings moves no timer.
//! - **[health]**: `Timer::HealthCheck` starts one check through the OS side (a command is a
//!   child of clusterd, reaped like any; an HTTP GET runs off the loop and comes back as
//!   `Event::ProbeDone`); at most one runs per instance, the next is armed `interval` after
//!   it ends, and `Timer::ProbeTimeout` fails it (killing a command) if it takes too long.
//!
//! No timer exists for a unit that uses neither: an idle clusterd still never wakes up.

use std::time::{Duration, Instant};

use log::{debug, info, warn};
use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::timers::Timer;
use super::unit_runtime::Handover;
use super::{Supervisor, UnitEvent};
use crate::protocol::{HealthState, HealthStatus};
use crate::supervisor::process_control::{ExitStatus, ProbeRequest, ProcessControl, SpawnId};
use crate::unit::Probe;

/// What clusterd knows of one process's health.
#[derive(Debug, Clone, Default)]
pub(crate) struct InstanceHealth {
    /// When it last said it was alive (or became ready): the watchdog counts from here.
    last_alive: Option<Instant>,
    /// The last check passed (or the watchdog was fed) since the last failure.
    ok: bool,
    /// Failed checks in a row that count.
    failures: u32,
    /// Why the last check failed.
    reason: Option<String>,
    /// The check running now: its number (a result for another one is stale) and, for a
    /// command, its pid.
    running: Option<(u64, Option<Pid>)>,
    /// The running check already failed by its timeout: its late end only arms the next.
    timed_out: bool,
    /// Stopped because it hung before it could be replaced (a replacement that is not ready
    /// yet): its exit restarts its index as a crash would, within the budget.
    stopped_as_hung: bool,
}

impl InstanceHealth {
    /// It was stopped as hung, so its exit is to be restarted (see `replace_hung`).
    pub(super) fn stopped_as_hung(&self) -> bool {
        self.stopped_as_hung
    }

    /// For status: `None` when the unit has no watchdog and no check.
    pub(super) fn status(&self) -> HealthStatus {
        let state = if self.failures > 0 {
            HealthState::Failing
        } else if self.ok {
            HealthState::Ok
        } else {
            HealthState::Unknown
        };
        HealthStatus {
            state,
            failures: self.failures,
            reason: self.reason.clone(),
        }
    }
}

/// An instance's health as the `daemon-reexec` state writes it down: [`InstanceHealth`] with
/// its instant as "so long ago" and its pid as a number (see `snapshot.rs`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SavedHealth {
    pub last_alive_ago: Option<Duration>,
    pub ok: bool,
    pub failures: u32,
    pub reason: Option<String>,
    /// The check running at the exec: its number, and a command's pid (still clusterd's
    /// child: the new image reaps it and counts its result).
    pub running: Option<(u64, Option<i32>)>,
    pub timed_out: bool,
    pub stopped_as_hung: bool,
}

impl SavedHealth {
    pub(crate) fn is_default(&self) -> bool {
        *self == SavedHealth::default()
    }
}

impl InstanceHealth {
    pub(super) fn save(&self, now: Instant) -> SavedHealth {
        SavedHealth {
            last_alive_ago: self.last_alive.map(|at| now.saturating_duration_since(at)),
            ok: self.ok,
            failures: self.failures,
            reason: self.reason.clone(),
            running: self.running.map(|(seq, pid)| (seq, pid.map(Pid::as_raw))),
            timed_out: self.timed_out,
            stopped_as_hung: self.stopped_as_hung,
        }
    }

    pub(super) fn restore(saved: SavedHealth, now: Instant) -> InstanceHealth {
        InstanceHealth {
            last_alive: saved
                .last_alive_ago
                .map(|ago| now.checked_sub(ago).unwrap_or(now)),
            ok: saved.ok,
            failures: saved.failures,
            reason: saved.reason,
            running: saved
                .running
                .map(|(seq, pid)| (seq, pid.map(Pid::from_raw))),
            timed_out: saved.timed_out,
            stopped_as_hung: saved.stopped_as_hung,
        }
    }
}

/// How long past its deadline an HTTP check's result may come before clusterd stops waiting
/// for it (the runner enforces `timeout` itself; this only guards the bookkeeping).
const HTTP_RESULT_GRACE: Duration = Duration::from_secs(1);

impl<P: ProcessControl> Supervisor<P> {
    /// Process `id` became ready: its watchdog starts counting, and its checks begin unless
    /// a `start_period` began them at its start.
    pub(super) fn health_on_ready(&mut self, id: SpawnId, now: Instant) {
        let Some(process) = self.processes.get_mut(&id) else {
            return;
        };
        let Some(rt) = self.units.get(&process.unit) else {
            return;
        };
        if let Some(watchdog) = rt.unit.watchdog {
            process.health.last_alive = Some(now);
            self.timers.add_after(now, watchdog, Timer::Watchdog(id));
        }
        if let Some(check) = rt.unit.health.as_ref().filter(|c| c.start_period.is_none()) {
            self.timers
                .add_after(now, check.interval, Timer::HealthCheck(id));
        }
    }

    /// Process `id` was just spawned: with a `start_period`, its checks begin now.
    pub(super) fn health_on_start(&mut self, id: SpawnId, now: Instant) {
        let Some(process) = self.processes.get(&id) else {
            return;
        };
        let Some(rt) = self.units.get(&process.unit) else {
            return;
        };
        if let Some(check) = rt.unit.health.as_ref().filter(|c| c.start_period.is_some()) {
            self.timers
                .add_after(now, check.interval, Timer::HealthCheck(id));
        }
    }

    /// After a `daemon-reexec`, the health of every instance restored: a command check
    /// running at the exec is this image's child, reaped and counted here as any (its
    /// `Timer::ProbeTimeout` came with the timers); an HTTP check was a thread of the old
    /// image, its result lost with it: it is run again at once, not counted as failed.
    pub(super) fn resume_checks(&mut self, now: Instant) {
        let mut again = Vec::new();
        for process in self.processes.values_mut() {
            match process.health.running {
                Some((seq, Some(pid))) => {
                    debug!("{}: its health check running (pid {pid}) is reaped and counted by this image", process.label());
                    self.probe_seq = self.probe_seq.max(seq);
                    self.probes.insert(pid, process.id);
                }
                Some((_, None)) => {
                    debug!(
                        "{}: its HTTP health check was in flight at the re-exec: run again",
                        process.label()
                    );
                    process.health.running = None;
                    process.health.timed_out = false;
                    again.push(process.id);
                }
                None => {}
            }
        }
        for id in again {
            self.timers.cancel(Timer::ProbeTimeout(id));
            self.timers.add(now, Timer::HealthCheck(id));
        }
    }

    /// Process `process` was reaped: a command check of it still running is killed (its
    /// timeout went with the process's timers), and reaped as any child.
    pub(super) fn health_on_exit(&mut self, process: &super::Process) {
        if let Some((_, Some(pid))) = process.health.running {
            self.os.signal_group(pid, Signal::SIGKILL);
        }
    }

    /// `WATCHDOG=1` or `{"act":"watchdog"}` from process `id`: noted, no timer moves.
    pub(super) fn on_alive(&mut self, id: SpawnId, now: Instant) {
        let Some(process) = self.processes.get_mut(&id) else {
            return;
        };
        let has_watchdog = self
            .units
            .get(&process.unit)
            .is_some_and(|rt| rt.unit.watchdog.is_some());
        if !has_watchdog || !process.phase.is_ready() {
            // Before it is ready the watchdog does not count yet; without one, nothing to do.
            return;
        }
        process.health.last_alive = Some(now);
        if process.health.failures == 0 {
            process.health.ok = true;
        }
    }

    /// `WATCHDOG=trigger`: the instance says it is hung.
    pub(super) fn on_watchdog_trigger(&mut self, id: SpawnId, now: Instant) {
        let Some(process) = self.processes.get(&id) else {
            return;
        };
        let has_watchdog = self
            .units
            .get(&process.unit)
            .is_some_and(|rt| rt.unit.watchdog.is_some());
        if !has_watchdog {
            debug!(
                "{}: WATCHDOG=trigger ignored: its unit has no watchdog",
                process.label()
            );
            return;
        }
        self.replace_hung(id, "declared itself hung (WATCHDOG=trigger)".into(), now);
    }

    /// `Timer::Watchdog`: re-armed from the last sign of life, or the instance is hung.
    pub(super) fn watchdog_due(&mut self, id: SpawnId, now: Instant) {
        let Some(process) = self.processes.get(&id) else {
            return;
        };
        if process.phase.is_leaving() {
            return;
        }
        let Some(watchdog) = self
            .units
            .get(&process.unit)
            .and_then(|rt| rt.unit.watchdog)
        else {
            return; // a daemon-reload took it away
        };
        let unit = process.unit.clone();
        let last = process.health.last_alive.unwrap_or(process.started_at);
        let deadline = last.checked_add(watchdog).unwrap_or(now);
        self.move_watchdogs_on(&unit, watchdog, now);
        if deadline > now {
            self.timers.add(deadline, Timer::Watchdog(id));
            return;
        }
        let why = format!(
            "no sign of life for {} (watchdog {})",
            humantime::format_duration(round_ms(now.saturating_duration_since(last))),
            humantime::format_duration(watchdog)
        );
        self.replace_hung(id, why, now);
    }

    /// Moves the armed watchdogs of `unit`'s processes to their last sign of life plus
    /// `watchdog`: those that pinged since are not woken up for separately.
    fn move_watchdogs_on(&mut self, unit: &str, watchdog: Duration, now: Instant) {
        let moves: Vec<(SpawnId, Instant)> = self
            .processes_of(unit)
            .filter_map(|p| {
                let timer = Timer::Watchdog(p.id);
                let armed = self.timers.deadline_of(&timer)?;
                let due = p.health.last_alive?.checked_add(watchdog)?;
                (due > armed && due > now).then_some((p.id, due))
            })
            .collect();
        for (id, due) in moves {
            self.timers.cancel(Timer::Watchdog(id));
            self.timers.add(due, Timer::Watchdog(id));
        }
    }

    /// `Timer::HealthCheck`: starts one check of process `id`, unless one runs.
    pub(super) fn health_check_due(&mut self, id: SpawnId, now: Instant) {
        let Some(process) = self.processes.get(&id) else {
            return;
        };
        if process.phase.is_leaving() || process.health.running.is_some() {
            return;
        }
        let Some(rt) = self.units.get(&process.unit) else {
            return;
        };
        let Some(check) = rt.unit.health.clone() else {
            return;
        };
        self.probe_seq += 1;
        let seq = self.probe_seq;
        let request = ProbeRequest {
            id,
            seq,
            unit: &rt.unit,
            index: process.index,
            pid: process.pid,
            probe: &check.probe,
            timeout: check.timeout,
        };
        let label = process.label();
        match self.os.start_probe(&request) {
            Ok(pid) => {
                if let Some(pid) = pid {
                    self.probes.insert(pid, id);
                }
                if let Some(process) = self.processes.get_mut(&id) {
                    process.health.running = Some((seq, pid));
                    process.health.timed_out = false;
                }
                let wait = match check.probe {
                    Probe::Command(_) => check.timeout,
                    Probe::Http(_) => check.timeout + HTTP_RESULT_GRACE,
                };
                self.timers.add_after(now, wait, Timer::ProbeTimeout(id));
            }
            Err(e) => {
                warn!("{label}: cannot run its health check: {e}");
                self.check_failed(id, format!("cannot run the check: {e}"), now);
            }
        }
    }

    /// `Timer::ProbeTimeout`: the running check took longer than `timeout`.
    pub(super) fn probe_timed_out(&mut self, id: SpawnId, now: Instant) {
        let Some(process) = self.processes.get_mut(&id) else {
            return;
        };
        let Some((_, pid)) = process.health.running else {
            return;
        };
        let timeout = self
            .units
            .get(&process.unit)
            .and_then(|rt| rt.unit.health.as_ref())
            .map(|c| humantime::format_duration(c.timeout).to_string())
            .unwrap_or_default();
        match pid {
            // Still in flight until reaped: no second one meanwhile.
            Some(pid) => {
                process.health.timed_out = true;
                self.os.signal_group(pid, Signal::SIGKILL);
            }
            None => process.health.running = None,
        }
        self.check_failed(id, format!("no answer within {timeout}"), now);
    }

    /// A command check (pid `pid`) of process `id` ended.
    pub(super) fn probe_exited(&mut self, id: SpawnId, pid: Pid, status: ExitStatus, now: Instant) {
        self.timers.cancel(Timer::ProbeTimeout(id));
        let Some(process) = self.processes.get_mut(&id) else {
            return;
        };
        if process.health.running.is_none_or(|(_, p)| p != Some(pid)) {
            return;
        }
        process.health.running = None;
        if std::mem::take(&mut process.health.timed_out) {
            // Already counted as failed when it timed out; the next one is armed now.
            return self.arm_next_check(id, now);
        }
        let result = match status {
            ExitStatus::Code(0) => Ok(()),
            other => Err(format!("check {other}")),
        };
        self.check_done(id, result, now);
    }

    /// An HTTP check of process `id` (number `seq`) ended.
    pub(super) fn on_probe_done(
        &mut self,
        id: SpawnId,
        seq: u64,
        result: Result<(), String>,
        now: Instant,
    ) {
        let Some(process) = self.processes.get_mut(&id) else {
            return;
        };
        if process.health.running.is_none_or(|(s, _)| s != seq) {
            return; // stale: it was already failed by its timeout
        }
        process.health.running = None;
        self.timers.cancel(Timer::ProbeTimeout(id));
        self.check_done(id, result, now);
    }

    fn check_done(&mut self, id: SpawnId, result: Result<(), String>, now: Instant) {
        match result {
            Ok(()) => {
                let Some(process) = self.processes.get_mut(&id) else {
                    return;
                };
                if process.health.failures > 0 {
                    info!("{}: health check passes again", process.label());
                    self.unit_events.push(UnitEvent::note(
                        process.unit.clone(),
                        Some(process.index),
                        "health check passes again",
                    ));
                }
                process.health.failures = 0;
                process.health.ok = true;
                self.arm_next_check(id, now);
            }
            Err(reason) => self.check_failed(id, reason, now),
        }
    }

    /// A check failed for `reason`: counted (outside `start_period`), and the instance is
    /// replaced at `failures` in a row; else the next check is armed.
    fn check_failed(&mut self, id: SpawnId, reason: String, now: Instant) {
        let Some(process) = self.processes.get_mut(&id) else {
            return;
        };
        let Some(check) = self
            .units
            .get(&process.unit)
            .and_then(|rt| rt.unit.health.as_ref())
        else {
            return;
        };
        let label = process.label();
        let in_start_period = check
            .start_period
            .is_some_and(|p| now.saturating_duration_since(process.started_at) < p);
        if in_start_period {
            debug!("{label}: health check failed within start_period (not counted): {reason}");
            process.health.reason = Some(reason);
            return self.arm_next_check(id, now);
        }
        process.health.failures += 1;
        process.health.ok = false;
        process.health.reason = Some(reason.clone());
        let (failures, allowed) = (process.health.failures, check.failures);
        warn!("{label}: health check failed ({failures} of {allowed} in a row): {reason}");
        if failures == 1 {
            self.unit_events.push(UnitEvent::note(
                process.unit.clone(),
                Some(process.index),
                format!("health check failed: {reason}"),
            ));
        }
        if failures >= allowed {
            let why = format!("health check failed {failures} time(s) in a row ({reason})");
            return self.replace_hung(id, why, now);
        }
        self.arm_next_check(id, now);
    }

    fn arm_next_check(&mut self, id: SpawnId, now: Instant) {
        let Some(process) = self.processes.get(&id) else {
            return;
        };
        if process.phase.is_leaving() {
            return;
        }
        if let Some(check) = self
            .units
            .get(&process.unit)
            .and_then(|rt| rt.unit.health.as_ref())
        {
            self.timers
                .add_after(now, check.interval, Timer::HealthCheck(id));
        }
    }

    /// Process `id` is hung (`why`): it gets no new work, and is replaced gracefully within
    /// the restart budget (a unit out of budget gives up, and the hung one is stopped).
    fn replace_hung(&mut self, id: SpawnId, why: String, now: Instant) {
        let Some(process) = self.processes.get_mut(&id) else {
            return;
        };
        if process.phase.is_leaving() {
            return;
        }
        process.health.ok = false;
        process.health.failures = process.health.failures.max(1);
        process.health.reason = Some(why.clone());
        let name = process.unit.clone();
        warn!("{}: {why}", process.label());
        self.os.withdraw_hung(id);
        self.timers.cancel(Timer::Watchdog(id));
        self.timers.cancel(Timer::HealthCheck(id));
        if self.hand_over(id, Handover::Replace, &why, now) {
            if let Some(rt) = self.units.get_mut(&name) {
                rt.health_replacements += 1;
            }
        }
        // Not replaced and not let go (it is itself a replacement that never became ready):
        // it is stopped, and its exit restarts it within the budget — marked, because the
        // exit of a process clusterd stopped restarts nothing otherwise, which left the
        // index empty for good.
        if let Some(process) = self
            .processes
            .get_mut(&id)
            .filter(|p| !p.phase.is_leaving())
        {
            process.health.stopped_as_hung = true;
            self.stop_process(id, now);
        }
    }
}

fn round_ms(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis() as u64)
}
