//! `Phase`: where one process is in its life, from spawn to reap, as one type; `Step`: what
//! can happen to it; [`Phase::after`]: the table of which step leads where. The supervisor's
//! [`Supervisor::transition`] is the one place a phase changes: it applies the table and arms
//! or cancels the timers the new phase needs (as systemd's `service_set_state` does), so every
//! transition is visible here and a phase can be written down whole (it is `Serialize`).
//!
//! Two things about a process are independent: how far it has come towards serving
//! ([`Readiness`]), and whether it is leaving (it announced its exit, or it was told to stop).
//! A process told to stop before it was ready can still say it is ready (and so let go of the
//! process it replaces), so the leaving phases keep the readiness they were entered with.
//!
//! A unit has its own enum, [`UnitPhase`] (inactive, active, gave up, and for order and
//! jobs waiting, scheduled, done), changed only by
//! [`Supervisor::set_unit_phase`]. What status shows is derived from both levels
//! (`status.rs`).

use std::time::Instant;

use log::debug;
use serde::{Deserialize, Serialize};

use super::timers::Timer;
use super::Supervisor;
use crate::supervisor::process_control::{ProcessControl, SpawnId};
use crate::unit::{ReadyMode, Unit};

/// How far a process has come towards serving.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Readiness {
    /// Waiting for its notification or its listen (`ready_timeout`, `listen_timeout`), or
    /// for `ready_after` to pass.
    NotYet,
    /// It would be ready (started, or said so) but has not run `ready_after` yet: it is once
    /// `Timer::ReadyAfter` fires.
    Pending,
    /// Ready to serve.
    Ready,
}

/// Where a process is in its life. It is created [`Phase::Starting`] and leaves the table
/// when it is reaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Phase {
    /// Spawned, not ready yet. Timers: `ReadyTimeout` (`ready = "notify"`), `ListenTimeout`
    /// (`ready = "listening"`), `ReadyAfter` (a non-zero `ready_after`); `HealthCheck` with
    /// a `[health] start_period`.
    Starting,
    /// Ready but for `ready_after`. Timers: those of `Starting`, still running.
    ReadyPending,
    /// Ready to serve. Timers: `Watchdog` (a unit's `watchdog`) and `HealthCheck` or
    /// `ProbeTimeout` (its `[health]`), armed on entry by `health_on_ready`.
    Running,
    /// It announced its exit (suicide) or is being replaced (`memory_max`): it finishes its
    /// work while its replacement starts, and its exit restarts nothing. Once `let_go` (its
    /// replacement is ready, or none comes) it has `kill_timeout` to leave: `Kill`. Until it
    /// is ready, the timers of its readiness still run.
    Draining { readiness: Readiness, let_go: bool },
    /// `kill_signal` (or its stop message, when `asked`) was sent. Timers: `Kill` after
    /// `kill_timeout`, and when `asked`, `KillSignal` after half of it; until it is ready,
    /// the timers of its readiness still run.
    Stopping {
        readiness: Readiness,
        /// It had announced its exit first: status shows it replaced.
        announced: bool,
        asked: bool,
    },
}

/// What can happen to a process; [`Phase::after`] says where it leads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// It is ready (it started, said so, listened, or its `listen_timeout` passed) and has
    /// run `ready_after`.
    Ready,
    /// It is ready but has not run `ready_after` yet.
    ReadyLater,
    /// It announced its exit, or clusterd replaces it: it drains.
    Announce,
    /// The process that replaces it is ready (or none comes): `kill_timeout` to leave.
    LetGo,
    /// `kill_signal` was sent to it, or (`asked`) a graceful request to leave.
    Stop { asked: bool },
}

impl Phase {
    /// The transition table: the phase `step` leads to, or `None` where the step changes
    /// nothing (a second stop, a ready process said ready again).
    pub(crate) fn after(self, step: Step) -> Option<Phase> {
        use Phase::*;
        let readiness = self.readiness();
        Some(match (self, step) {
            // Ready once is ready for good.
            (
                Running
                | Draining {
                    readiness: Readiness::Ready,
                    ..
                }
                | Stopping {
                    readiness: Readiness::Ready,
                    ..
                },
                Step::Ready | Step::ReadyLater,
            ) => return None,
            (Starting | ReadyPending, Step::Ready) => Running,
            (Starting, Step::ReadyLater) => ReadyPending,
            (ReadyPending, Step::ReadyLater) => return None,
            (Draining { let_go, .. }, Step::Ready) => Draining {
                readiness: Readiness::Ready,
                let_go,
            },
            (Draining { let_go, .. }, Step::ReadyLater) => Draining {
                readiness: Readiness::Pending,
                let_go,
            },
            (
                Stopping {
                    announced, asked, ..
                },
                Step::Ready,
            ) => Stopping {
                readiness: Readiness::Ready,
                announced,
                asked,
            },
            (
                Stopping {
                    announced, asked, ..
                },
                Step::ReadyLater,
            ) => Stopping {
                readiness: Readiness::Pending,
                announced,
                asked,
            },
            (Starting | ReadyPending | Running, Step::Announce) => Draining {
                readiness,
                let_go: false,
            },
            (Draining { .. } | Stopping { .. }, Step::Announce) => return None,
            // Only a process that announced its exit is let go; a stopping one keeps (or gets
            // again) its SIGKILL deadline, the earlier one standing.
            (Draining { .. }, Step::LetGo) => Draining {
                readiness,
                let_go: true,
            },
            (Stopping { .. }, Step::LetGo) => self,
            (Starting | ReadyPending | Running, Step::LetGo) => return None,
            (Stopping { .. }, Step::Stop { .. }) => return None,
            (Starting | ReadyPending | Running | Draining { .. }, Step::Stop { asked }) => {
                Stopping {
                    readiness,
                    announced: self.announced(),
                    asked,
                }
            }
        })
    }

    pub(crate) fn readiness(self) -> Readiness {
        match self {
            Phase::Starting => Readiness::NotYet,
            Phase::ReadyPending => Readiness::Pending,
            Phase::Running => Readiness::Ready,
            Phase::Draining { readiness, .. } | Phase::Stopping { readiness, .. } => readiness,
        }
    }

    pub(crate) fn is_ready(self) -> bool {
        self.readiness() == Readiness::Ready
    }

    /// It would be ready, once it has run `ready_after`.
    pub(crate) fn is_ready_pending(self) -> bool {
        self.readiness() == Readiness::Pending
    }

    pub(crate) fn is_stopping(self) -> bool {
        matches!(self, Phase::Stopping { .. })
    }

    /// It announced its exit (suicide) or is being replaced: its exit restarts nothing.
    pub(crate) fn announced(self) -> bool {
        matches!(
            self,
            Phase::Draining { .. }
                | Phase::Stopping {
                    announced: true,
                    ..
                }
        )
    }

    /// Stopping, or announced its exit: it serves no new work and nothing addresses it.
    pub(crate) fn is_leaving(self) -> bool {
        self.is_stopping() || self.announced()
    }

    /// The timers a process `id` of `unit` holds in this phase, as entered (what the tests
    /// of [`Supervisor::transition`] check).
    #[cfg(test)]
    pub(super) fn timers(self, id: SpawnId, unit: &Unit) -> Vec<Timer> {
        let mut timers = Vec::new();
        if !self.is_ready() {
            timers.extend(readiness_timers(id, unit));
        }
        match self {
            Phase::Draining { let_go: true, .. } => timers.push(Timer::Kill(id)),
            Phase::Stopping { asked, .. } => {
                timers.push(Timer::Kill(id));
                if asked {
                    timers.push(Timer::KillSignal(id));
                }
            }
            _ => {}
        }
        timers
    }
}

/// The timers that wait for a process of `unit` to be ready.
fn readiness_timers(id: SpawnId, unit: &Unit) -> Vec<Timer> {
    let mut timers = Vec::new();
    match unit.ready {
        ReadyMode::Started => {}
        ReadyMode::Notify => timers.push(Timer::ReadyTimeout(id)),
        ReadyMode::Listening => timers.push(Timer::ListenTimeout(id)),
    }
    if !unit.ready_after.is_zero() {
        timers.push(Timer::ReadyAfter(id));
    }
    timers
}

/// Every timer that refers to process `id`: all go when it is reaped.
pub(super) fn every_timer_of(id: SpawnId) -> [Timer; 8] {
    [
        Timer::Kill(id),
        Timer::KillSignal(id),
        Timer::ReadyTimeout(id),
        Timer::ReadyAfter(id),
        Timer::ListenTimeout(id),
        Timer::Watchdog(id),
        Timer::HealthCheck(id),
        Timer::ProbeTimeout(id),
    ]
}

impl<P: ProcessControl> Supervisor<P> {
    /// Arms the timers of process `id`, just spawned and [`Phase::Starting`].
    pub(super) fn enter_starting(&mut self, id: SpawnId, now: Instant) {
        let Some(unit) = self
            .processes
            .get(&id)
            .and_then(|p| self.units.get(&p.unit))
            .map(|rt| &rt.unit)
        else {
            return;
        };
        let timers: Vec<(std::time::Duration, Timer)> = readiness_timers(id, unit)
            .into_iter()
            .map(|timer| {
                let delay = match timer {
                    Timer::ReadyTimeout(_) => unit.ready_timeout,
                    Timer::ListenTimeout(_) => unit.listen_timeout,
                    _ => unit.ready_after,
                };
                (delay, timer)
            })
            .collect();
        for (delay, timer) in timers {
            self.timers.add_after(now, delay, timer);
        }
    }

    /// The one place a process's phase changes: applies [`Phase::after`] and arms or cancels
    /// the timers the new phase needs. Becoming ready ends the readiness timers; a stop arms
    /// SIGKILL after `kill_timeout` (and, after a graceful request, `kill_signal` after half
    /// of it); being let go arms SIGKILL after `kill_timeout`. A timer already armed keeps
    /// the earlier deadline. Returns the phases before and after, or `None` if nothing
    /// changed (or there is no such process).
    pub(super) fn transition(
        &mut self,
        id: SpawnId,
        step: Step,
        now: Instant,
    ) -> Option<(Phase, Phase)> {
        let process = self.processes.get_mut(&id)?;
        let rt = self.units.get(&process.unit)?;
        let old = process.phase;
        let Some(new) = old.after(step) else {
            debug!("{}: {step:?} changes nothing in {old:?}", process.label());
            return None;
        };
        process.phase = new;
        if !old.is_ready() && new.is_ready() {
            // Every kind, whatever the unit's file says now: a daemon-reload may have changed
            // `ready` since the process was started.
            for timer in [
                Timer::ReadyTimeout(id),
                Timer::ReadyAfter(id),
                Timer::ListenTimeout(id),
            ] {
                self.timers.cancel(timer);
            }
        }
        let kill_timeout = rt.unit.kill_timeout;
        match step {
            Step::Stop { asked } => {
                self.timers.add_after(now, kill_timeout, Timer::Kill(id));
                if asked {
                    self.timers
                        .add_after(now, kill_timeout / 2, Timer::KillSignal(id));
                }
            }
            Step::LetGo => self.timers.add_after(now, kill_timeout, Timer::Kill(id)),
            Step::Ready | Step::ReadyLater | Step::Announce => {}
        }
        if !old.is_ready() && new.is_ready() && !new.is_leaving() {
            // Ready: its watchdog and health checks begin.
            self.health_on_ready(id, now);
        }
        Some((old, new))
    }
}

/// What a unit is meant to do: the unit's own state, beside the phases of its processes
/// (status derives what it shows from both). Changed only by
/// [`Supervisor::set_unit_phase`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum UnitPhase {
    /// Never started, stopped by hand, or being removed: nothing of it is started.
    Inactive,
    /// Meant to run: missing instances are started, exits restarted within the budget.
    /// Timers: `Restart` of an index waiting out its delay.
    Active,
    /// It gave up (`reason`): nothing is restarted until a manual start or restart. `active`
    /// unless it was stopped since: its instances that still run keep serving.
    GaveUp { reason: String, active: bool },
    /// Meant to run, but a unit of its `after` is not satisfied yet: nothing of it is
    /// started until each is (`ordering.rs`). No timer: a dependency's change wakes it.
    Waiting,
    /// A scheduled one-shot before its first run: it runs when its schedule says (or on
    /// `clusterctl start`). Timer: `Schedule`.
    Scheduled,
    /// A one-shot whose last run succeeded: nothing runs, nothing is restarted; a start
    /// (by hand or by its schedule) runs it again. Timer: `Schedule`, if it has one.
    Done,
}

/// What can happen to a unit; [`UnitPhase::after`] says where it leads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum UnitStep {
    /// A start by hand (or after a restart or a daemon-reload): a fresh try.
    Start,
    /// A stop by hand, a restart's stop, a removal, a shutdown, or sockets it cannot bind.
    Stop,
    /// Its restart budget is spent, or its sockets cannot be bound, or a one-shot's run
    /// failed with no restart left.
    GiveUp(String),
    /// A start found a unit of its `after` not satisfied.
    Wait,
    /// A scheduled one-shot was loaded: it waits for its first time.
    Schedule,
    /// A one-shot's run succeeded: every instance exited successfully.
    Finish,
}

impl UnitPhase {
    /// The transition table of a unit.
    pub(crate) fn after(&self, step: UnitStep) -> UnitPhase {
        match (self, step) {
            (_, UnitStep::Start) => UnitPhase::Active,
            (_, UnitStep::Wait) => UnitPhase::Waiting,
            (_, UnitStep::Schedule) => UnitPhase::Scheduled,
            (_, UnitStep::Finish) => UnitPhase::Done,
            (
                UnitPhase::Inactive
                | UnitPhase::Active
                | UnitPhase::Waiting
                | UnitPhase::Scheduled
                | UnitPhase::Done,
                UnitStep::Stop,
            ) => UnitPhase::Inactive,
            (UnitPhase::GaveUp { reason, .. }, UnitStep::Stop) => UnitPhase::GaveUp {
                reason: reason.clone(),
                active: false,
            },
            (_, UnitStep::GiveUp(reason)) => UnitPhase::GaveUp {
                reason,
                active: self.is_active(),
            },
        }
    }

    /// Not stopped: it is meant to run (even if it gave up, waits, or is done until its
    /// next run).
    pub(crate) fn is_active(&self) -> bool {
        matches!(
            self,
            UnitPhase::Active
                | UnitPhase::GaveUp { active: true, .. }
                | UnitPhase::Waiting
                | UnitPhase::Scheduled
                | UnitPhase::Done
        )
    }

    /// Meant to run, but holding its instances back: waiting for a dependency or a
    /// schedule, or done. Nothing of it is started, whatever is missing.
    pub(crate) fn holds_back(&self) -> bool {
        matches!(
            self,
            UnitPhase::Waiting | UnitPhase::Scheduled | UnitPhase::Done
        )
    }

    /// Active and not given up: it starts and restarts its instances by itself.
    pub(crate) fn restarts(&self) -> bool {
        *self == UnitPhase::Active
    }

    /// Why it gave up, if it did.
    pub(crate) fn gave_up(&self) -> Option<&str> {
        match self {
            UnitPhase::GaveUp { reason, .. } => Some(reason),
            _ => None,
        }
    }
}

impl<P: ProcessControl> Supervisor<P> {
    /// The one place a unit's phase changes: applies [`UnitPhase::after`]. Only an
    /// `Active` unit restarts anything, so entering any other phase cancels the restarts
    /// waiting out their delay (status no longer shows them `restarting`).
    pub(super) fn set_unit_phase(&mut self, name: &str, step: UnitStep) {
        let Some(rt) = self.units.get_mut(name) else {
            return;
        };
        let new = rt.phase.after(step);
        let restarts_go = new != UnitPhase::Active;
        rt.phase = new;
        if restarts_go {
            self.cancel_waiting_restarts(name);
        }
    }
}
