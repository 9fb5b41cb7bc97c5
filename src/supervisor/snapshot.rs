//! The supervisor's part of the `daemon-reexec` state: a versioned, serde description of
//! everything [`Supervisor`] holds, written by the old image and read by the new one. It is
//! the types themselves ([`Phase`], [`UnitPhase`], [`Timer`]) that are written down, so a
//! state that names a phase the new binary does not know fails to parse instead of being
//! guessed at.
//!
//! Pure data, like the rest of the supervisor: no fd, no cgroup path, no OS call. Times are
//! written as durations relative to the `now` the snapshot was taken at (an `Instant` has
//! no portable value), so the new image re-anchors them on its own clock: a start time is
//! "so long ago", a timer "due in so long". CLOCK_MONOTONIC survives an exec, so nothing is
//! lost but the few milliseconds of the exec itself.
//!
//! Units are carried as their file's path and text, re-parsed by the new image: the parsed
//! form may change between versions, the file format is stable (and checked by `--check`).
//! The OS side's part (fds, cgroup paths) is `daemon::reexec::state`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::cron_restart::CronNext;
use super::health::SavedHealth;
use super::jobs::{JobRuntime, SavedJob};
use super::phase::{Phase, UnitPhase};
use super::timers::Timer;
use super::unit_runtime::{AfterStop, RecentEvent, Rollout};
use super::unit_runtime::{Handover, Slot, UnitRuntime};
use super::Process;
use super::{ProcessControl, Supervisor};
use crate::supervisor::process_control::SpawnId;
use crate::unit::cron::LocalTime;
use crate::unit::Unit;

/// The version of the state format. The new image reads only a version it knows
/// (`clusterd --reexec-check VERSION` says whether it does); a change that an older reader
/// would misread bumps it.
pub(crate) const STATE_VERSION: u32 = 1;

/// What the supervisor holds, written down at one instant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SupervisorState {
    pub version: u32,
    /// The next spawn id: ids stay unique across the exec (a late event names its own).
    pub next_spawn_id: SpawnId,
    /// Every loaded unit, by name.
    pub units: BTreeMap<String, UnitState>,
    /// Every live instance process.
    pub instances: Vec<InstanceState>,
    /// Every armed deadline.
    pub timers: Vec<TimerState>,
    /// SIGTERM/SIGINT was received: the new image goes on stopping.
    pub shutting_down: bool,
    /// Running `on_giveup` hooks (pid, unit): still clusterd's children, reaped, logged and
    /// stopped at shutdown by the new image (their `Timer::KillHook` comes with the timers).
    #[serde(default)]
    pub hooks: Vec<(i32, String)>,
    /// Instances whose own process was reaped but whose cgroup still has processes (spawn
    /// id, unit, pid): a stop or restart still waits for them.
    #[serde(default)]
    pub lingering: Vec<(SpawnId, String, i32)>,
    /// The number of the last health check started.
    #[serde(default)]
    pub probe_seq: u64,
}

/// One loaded unit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UnitState {
    /// The unit file it was loaded from, and its text as loaded (`None` only from a writer
    /// that had none: the restore refuses it). The new image re-parses it.
    pub path: PathBuf,
    pub text: Option<String>,
    pub phase: UnitPhase,
    /// `instances`, or the last `scale`.
    pub wanted: u32,
    /// Automatic restarts since the last manual start.
    pub restarts: u32,
    /// The restarts still inside the restart window, as how long ago each was made.
    pub restart_history: Vec<Duration>,
    /// Per instance index: its automatic restarts and how its last process ended.
    pub slots: Vec<SlotState>,
    pub give_ups: u32,
    pub memory_replacements: u32,
    pub health_replacements: u32,
    pub config_error: Option<String>,
    /// A one-shot's runs, counts and armed schedule.
    #[serde(default)]
    pub job: SavedJob,
    /// The minute its `cron_restart` timer is armed for (its schedule is the unit's).
    #[serde(default)]
    pub cron_next: Option<LocalTime>,
    /// A rolling reload under way (`clusterctl reload`, `cron_restart`, `watch`, a changed
    /// file): the new image goes on with it.
    #[serde(default)]
    pub rollout: Option<SavedRollout>,
    /// What happens once its processes are gone: a `restart` or a changed file's restart
    /// under way starts it again, a removed file's unit is forgotten.
    #[serde(default)]
    pub after_stop: SavedAfterStop,
    /// Its last lifecycle events (`status UNIT`), oldest first: how long ago, the index, text.
    #[serde(default)]
    pub recent: Vec<(Duration, Option<u32>, String)>,
    /// Why its program cannot be executed, and the retry's delay.
    #[serde(default)]
    pub cannot_execute: Option<String>,
    #[serde(default)]
    pub retry_delay: Option<Duration>,
    #[serde(default)]
    pub memory_check_armed: bool,
}

/// A unit file as loaded: its path and text, re-parsed by the new image.
pub(crate) type SavedUnit = (PathBuf, String);

fn saved_unit(unit: &Unit) -> SavedUnit {
    (unit.path.clone(), unit.source.0.to_string())
}

fn parsed_unit(name: &str, (path, text): SavedUnit) -> Result<Box<Unit>, String> {
    Unit::parse(&path, &text)
        .map(Box::new)
        .map_err(|e| format!("unit {name}: {e}"))
}

/// [`AfterStop`] written down.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum SavedAfterStop {
    #[default]
    Nothing,
    /// Start again, with the configuration of a changed file if any.
    Start(Option<SavedUnit>),
    Remove,
}

/// A rolling reload under way. Its waiters are not carried: their connections close at the
/// exec (the client asks again, and joins the reload that goes on).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SavedRollout {
    pub next_index: u32,
    /// The configuration a changed file's reload goes back to if it fails: its file's path
    /// and text, re-parsed.
    pub revert_to: Option<SavedUnit>,
}

/// One instance index (slot) of a unit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SlotState {
    pub current: Option<SpawnId>,
    /// The process `current` replaces, and how (a reload, a suicide, a replacement).
    pub standby: Option<(SpawnId, Handover)>,
    pub restarts: u32,
    pub last_exit: Option<String>,
    pub next_backoff: Option<Duration>,
    pub finished: bool,
}

/// One live instance process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct InstanceState {
    pub spawn_id: SpawnId,
    pub unit: String,
    pub index: u32,
    /// Its pid (and process group id): still clusterd's child after the exec, since the
    /// exec keeps clusterd's pid.
    pub pid: i32,
    pub phase: Phase,
    /// How long before the snapshot it was started.
    pub started_ago: Duration,
    pub status_text: Option<String>,
    /// Its watchdog and `[health]` state: phase, failures in a row, the check running.
    /// Left out when there is nothing to say (no watchdog, no check): 1000 instances of a
    /// unit without either add nothing to the state parsed during the pause.
    #[serde(default, skip_serializing_if = "SavedHealth::is_default")]
    pub health: SavedHealth,
}

/// One armed deadline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TimerState {
    pub timer: Timer,
    /// How long after the snapshot it is due (zero: overdue, it fires at once).
    pub remaining: Duration,
}

/// A state that says which format version it is.
pub(crate) trait Versioned {
    fn version(&self) -> u32;
}

impl Versioned for SupervisorState {
    fn version(&self) -> u32 {
        self.version
    }
}

/// Parses a state (the supervisor's, or the daemon's around it), refusing one of another
/// version for its version: a newer format is refused as such, not for a field it added, and
/// never half-read. One parse in the usual case (a state of this version; 1000 instances are
/// half a megabyte, parsed during the pause); the version alone is read only when that fails.
pub(crate) fn read_versioned<T: serde::de::DeserializeOwned + Versioned>(
    text: &str,
) -> Result<T, String> {
    #[derive(Deserialize)]
    struct VersionOnly {
        version: u32,
    }
    let parsed = serde_json::from_str::<T>(text);
    if let Ok(state) = &parsed {
        if state.version() == STATE_VERSION {
            return parsed.map_err(|e| e.to_string());
        }
    }
    let only: VersionOnly =
        serde_json::from_str(text).map_err(|e| format!("the state has no version: {e}"))?;
    if only.version != STATE_VERSION {
        return Err(format!(
            "state version {} is not {STATE_VERSION}, the one this clusterd reads",
            only.version
        ));
    }
    parsed.map_err(|e| format!("the state does not parse: {e}"))
}

impl SupervisorState {
    /// Checks what a parse cannot: every instance names a unit of the state, no pid or
    /// spawn id appears twice, no pid is one that cannot be a child (0, 1, negative).
    pub(crate) fn validate(&self) -> Result<(), String> {
        let mut pids = std::collections::HashSet::new();
        let mut ids = std::collections::HashSet::new();
        for instance in &self.instances {
            if !self.units.contains_key(&instance.unit) {
                return Err(format!(
                    "instance {} names unit {:?}, which the state does not have",
                    instance.spawn_id, instance.unit
                ));
            }
            let probe = instance.health.running.and_then(|(_, pid)| pid);
            if instance.pid <= 1 || !pids.insert(instance.pid) || probe.is_some_and(|p| p <= 1) {
                return Err(format!("instance pid {} is invalid or twice", instance.pid));
            }
            if instance.spawn_id >= self.next_spawn_id || !ids.insert(instance.spawn_id) {
                return Err(format!(
                    "spawn id {} is invalid or twice",
                    instance.spawn_id
                ));
            }
        }
        let lingering = self.lingering.iter().map(|(_, unit, pid)| (*pid, unit));
        for (pid, unit) in self
            .hooks
            .iter()
            .map(|(pid, unit)| (*pid, unit))
            .chain(lingering)
        {
            if pid <= 1 || !self.units.contains_key(unit) {
                return Err(format!("pid {pid} of unit {unit:?} is invalid"));
            }
        }
        Ok(())
    }
}

impl<P: ProcessControl> Supervisor<P> {
    /// Writes down everything the supervisor holds at `now`; each unit with the text it was
    /// loaded from (not the file as it is now: an edit since the load must not apply by a
    /// re-exec).
    pub(crate) fn snapshot(&self, now: Instant) -> SupervisorState {
        let ago = |at: Instant| now.saturating_duration_since(at);
        let units = self
            .units
            .iter()
            .map(|(name, rt)| {
                let state = UnitState {
                    path: rt.unit.path.clone(),
                    text: Some(rt.unit.source.0.to_string()),
                    phase: rt.phase.clone(),
                    wanted: rt.wanted,
                    restarts: rt.restarts,
                    restart_history: rt.limiter.history().map(ago).collect(),
                    slots: rt
                        .slots
                        .iter()
                        .map(|slot| SlotState {
                            current: slot.current,
                            standby: slot.standby,
                            restarts: slot.restarts,
                            last_exit: slot.last_exit.clone(),
                            next_backoff: slot.next_backoff,
                            finished: slot.finished,
                        })
                        .collect(),
                    give_ups: rt.give_ups,
                    memory_replacements: rt.memory_replacements,
                    health_replacements: rt.health_replacements,
                    config_error: rt.config_error.clone(),
                    job: rt.job.save(now),
                    cron_next: rt.cron_next.as_ref().map(CronNext::at),
                    rollout: rt.rollout.as_ref().map(|rollout| SavedRollout {
                        next_index: rollout.next_index,
                        revert_to: rollout.revert_to.as_deref().map(saved_unit),
                    }),
                    after_stop: match &rt.after_stop {
                        AfterStop::Nothing => SavedAfterStop::Nothing,
                        AfterStop::Start(unit) => {
                            SavedAfterStop::Start(unit.as_deref().map(saved_unit))
                        }
                        AfterStop::Remove => SavedAfterStop::Remove,
                    },
                    recent: (rt.recent.iter())
                        .map(|e| (ago(e.at), e.index, e.text.clone()))
                        .collect(),
                    cannot_execute: rt.cannot_execute.clone(),
                    retry_delay: rt.retry_delay,
                    memory_check_armed: rt.memory_check_armed,
                };
                (name.clone(), state)
            })
            .collect();
        let mut instances: Vec<InstanceState> = self
            .processes
            .values()
            .map(|p| InstanceState {
                spawn_id: p.id,
                unit: p.unit.clone(),
                index: p.index,
                pid: p.pid.as_raw(),
                phase: p.phase,
                started_ago: ago(p.started_at),
                status_text: p.status_text.clone(),
                health: p.health.save(now),
            })
            .collect();
        instances.sort_by_key(|i| i.spawn_id);
        let timers = self
            .timers
            .armed()
            .map(|(at, timer)| TimerState {
                timer: timer.clone(),
                remaining: at.saturating_duration_since(now),
            })
            .collect();
        SupervisorState {
            version: STATE_VERSION,
            next_spawn_id: self.next_spawn_id,
            units,
            instances,
            timers,
            shutting_down: self.shutting_down,
            hooks: (self.hooks.iter())
                .map(|(pid, unit)| (pid.as_raw(), unit.clone()))
                .collect(),
            lingering: (self.lingering.iter())
                .map(|(id, (unit, pid))| (*id, unit.clone(), pid.as_raw()))
                .collect(),
            probe_seq: self.probe_seq,
        }
    }
}

/// What the daemon's side of a re-exec needs of the supervisor: its OS, to hand over and
/// take back what only the OS side holds.
impl<P: ProcessControl> Supervisor<P> {
    pub(crate) fn os(&self) -> &P {
        &self.os
    }

    pub(crate) fn os_mut(&mut self) -> &mut P {
        &mut self.os
    }
}

impl<P: ProcessControl> Supervisor<P> {
    /// The new image's side: a supervisor that holds what `state` describes, its times
    /// re-anchored at `now`. Called on a supervisor that holds nothing yet, after
    /// [`SupervisorState::validate`]. A unit whose text no longer parses fails the whole
    /// restore (the daemon then falls back to the old binary): a re-exec must not drop a
    /// unit that runs.
    ///
    /// Carried: every phase and timer (a stop's SIGKILL deadline, a suicide's or a
    /// `memory_max` replacement's, restarts' backoffs, `watch`'s quiet period, the due times
    /// of `cron_restart` and job schedules, which a state without them re-arms from the
    /// unit), health (failures in a row, the watchdog's last sign of life, a command check
    /// running: reaped and counted here; an HTTP check in flight is run again at once), a
    /// one-shot's runs, a rolling reload under way, a restart (or a removed file's removal)
    /// waiting for the unit's processes to be gone, `on_giveup` hooks running, leftovers of
    /// reaped instances, the events `status UNIT` shows. Not carried: requests waiting on a unit (their clients lost the
    /// connection and ask again, joining what goes on). A unit waiting for its `after` keeps
    /// its phase and is released by its dependency's next change, as in the old image.
    pub(crate) fn restore(&mut self, state: SupervisorState, now: Instant) -> Result<(), String> {
        let before = |ago: Duration| now.checked_sub(ago).unwrap_or(now);
        for (name, saved) in state.units {
            let text = saved
                .text
                .ok_or_else(|| format!("unit {name}: the state has no text of its file"))?;
            let unit = Unit::parse(&saved.path, &text).map_err(|e| format!("unit {name}: {e}"))?;
            if unit.name != name {
                return Err(format!("unit {name}: its file names unit {}", unit.name));
            }
            let mut rt = UnitRuntime::new(unit);
            rt.phase = saved.phase;
            rt.wanted = saved.wanted;
            rt.restarts = saved.restarts;
            rt.limiter
                .restore(saved.restart_history.into_iter().map(before));
            rt.slots = saved
                .slots
                .into_iter()
                .map(|slot| Slot {
                    current: slot.current,
                    standby: slot.standby,
                    restarts: slot.restarts,
                    last_exit: slot.last_exit,
                    restart_at: None,
                    next_backoff: slot.next_backoff,
                    finished: slot.finished,
                })
                .collect();
            rt.give_ups = saved.give_ups;
            rt.memory_replacements = saved.memory_replacements;
            rt.health_replacements = saved.health_replacements;
            rt.config_error = saved.config_error;
            rt.job = JobRuntime::restore(saved.job, rt.unit.job.schedule.clone(), now);
            rt.cron_next = (rt.unit.cron_restart.clone())
                .zip(saved.cron_next)
                .map(|(schedule, at)| CronNext::restored(schedule, at));
            rt.after_stop = match saved.after_stop {
                SavedAfterStop::Nothing => AfterStop::Nothing,
                SavedAfterStop::Start(unit) => {
                    AfterStop::Start(unit.map(|u| parsed_unit(&name, u)).transpose()?)
                }
                SavedAfterStop::Remove => AfterStop::Remove,
            };
            rt.recent = (saved.recent.into_iter())
                .map(|(ago, index, text)| RecentEvent {
                    at: before(ago),
                    index,
                    text,
                })
                .collect();
            rt.cannot_execute = saved.cannot_execute;
            rt.retry_delay = saved.retry_delay;
            rt.memory_check_armed = saved.memory_check_armed;
            if let Some(rollout) = saved.rollout {
                let revert_to = (rollout.revert_to)
                    .map(|u| parsed_unit(&name, u))
                    .transpose()?;
                rt.rollout = Some(Rollout {
                    next_index: rollout.next_index,
                    waiters: Vec::new(),
                    revert_to,
                });
            }
            self.units.insert(name, rt);
        }
        for saved in state.instances {
            let pid = nix::unistd::Pid::from_raw(saved.pid);
            let rt = self
                .units
                .get_mut(&saved.unit)
                .ok_or_else(|| format!("instance of unknown unit {}", saved.unit))?;
            rt.processes.insert(saved.spawn_id);
            self.by_pid.insert(pid, saved.spawn_id);
            let process = Process {
                id: saved.spawn_id,
                unit: saved.unit,
                index: saved.index,
                pid,
                started_at: before(saved.started_ago),
                phase: saved.phase,
                status_text: saved.status_text,
                health: super::InstanceHealth::restore(saved.health, now),
            };
            self.processes.insert(saved.spawn_id, process);
        }
        for (pid, unit) in state.hooks {
            self.hooks.insert(nix::unistd::Pid::from_raw(pid), unit);
        }
        for (id, unit, pid) in state.lingering {
            self.lingering
                .insert(id, (unit, nix::unistd::Pid::from_raw(pid)));
        }
        self.probe_seq = state.probe_seq;
        for saved in state.timers {
            // A schedule's timer goes with the due time it was armed for; a state without it
            // (an older writer's) has it re-armed from the unit below.
            let unarmed = |name: &String| self.units.get(name);
            let stale = match &saved.timer {
                Timer::Cron(name) => unarmed(name).is_none_or(|rt| rt.cron_next.is_none()),
                Timer::Schedule(name) => unarmed(name).is_none_or(|rt| rt.job.next.is_none()),
                _ => false,
            };
            if stale {
                continue;
            }
            if let Timer::Restart(unit, index) = &saved.timer {
                let at = now.checked_add(saved.remaining).unwrap_or(now);
                if let Some(slot) = self
                    .units
                    .get_mut(unit)
                    .and_then(|rt| rt.slots.get_mut(*index as usize))
                {
                    slot.restart_at = Some(at);
                }
            }
            self.timers.add_after(now, saved.remaining, saved.timer);
        }
        self.resume_checks(now);
        self.next_spawn_id = state.next_spawn_id;
        self.shutting_down = state.shutting_down;
        let names: Vec<String> = self.units.keys().cloned().collect();
        for name in names {
            self.follow_configuration(&name, now);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervisor::jobs::{SavedDue, SavedRun};
    use crate::supervisor::phase::Readiness;

    /// Every phase a process can be in: each variant with each value of its fields.
    fn every_phase() -> Vec<Phase> {
        let readiness = [Readiness::NotYet, Readiness::Pending, Readiness::Ready];
        let mut phases = vec![Phase::Starting, Phase::ReadyPending, Phase::Running];
        for r in readiness {
            for let_go in [false, true] {
                phases.push(Phase::Draining {
                    readiness: r,
                    let_go,
                });
            }
            for announced in [false, true] {
                for asked in [false, true] {
                    phases.push(Phase::Stopping {
                        readiness: r,
                        announced,
                        asked,
                    });
                }
            }
        }
        phases
    }

    fn every_unit_phase() -> Vec<UnitPhase> {
        let mut phases = vec![
            UnitPhase::Inactive,
            UnitPhase::Active,
            UnitPhase::Waiting,
            UnitPhase::Scheduled,
            UnitPhase::Done,
        ];
        for active in [false, true] {
            phases.push(UnitPhase::GaveUp {
                reason: "restart limit \"10 in 60s\" reached".into(),
                active,
            });
        }
        phases
    }

    fn every_timer() -> Vec<Timer> {
        let pid = nix::unistd::Pid::from_raw(4242);
        vec![
            Timer::Kill(1),
            Timer::KillSignal(2),
            Timer::ReadyTimeout(3),
            Timer::ReadyAfter(4),
            Timer::ListenTimeout(5),
            Timer::KillLeftovers(6, pid),
            Timer::GiveUpOnLeftovers(7, pid),
            Timer::KillHook(pid),
            Timer::RetryStarts("web".into()),
            Timer::MemoryCheck("web".into()),
            Timer::Restart("web".into(), 3),
            Timer::Cron("web".into()),
            Timer::Schedule("job".into()),
            Timer::WatchReload("web".into()),
            Timer::Watchdog(8),
            Timer::HealthCheck(9),
            Timer::ProbeTimeout(10),
            Timer::ShutdownDelay,
            Timer::ShutdownDeadline,
        ]
    }

    const MINUTE: LocalTime = LocalTime {
        year: 2026,
        month: 12,
        day: 7,
        hour: 9,
        minute: 30,
        second: 0,
    };

    /// A one-shot's runs: none, running, ended well or not; each kind of due time.
    fn every_job(n: usize) -> SavedJob {
        let run = match n % 3 {
            0 => None,
            1 => Some(SavedRun {
                started_ago: Duration::from_secs(3),
                ended: None,
            }),
            _ => Some(SavedRun {
                started_ago: Duration::from_secs(9),
                ended: Some((Duration::from_secs(1), "run done".into(), n % 2 == 0)),
            }),
        };
        let next = match n % 3 {
            0 => None,
            1 => Some(SavedDue::In(Duration::from_millis(1500))),
            _ => Some(SavedDue::Minute(MINUTE)),
        };
        SavedJob {
            run,
            runs: n as u64,
            failures: 1,
            skipped: 2,
            skipped_this_run: 1,
            last_success_ago: Some(Duration::from_secs(60)),
            next,
        }
    }

    /// Health: unknown, passing, failing; no check running, a command's, an HTTP one.
    fn every_health(n: usize) -> SavedHealth {
        SavedHealth {
            last_alive_ago: (n % 2 == 0).then_some(Duration::from_millis(300)),
            ok: n % 3 == 1,
            failures: if n % 3 == 2 { 2 } else { 0 },
            reason: (n % 3 == 2).then(|| "check exited with status 1".into()),
            running: match n % 3 {
                0 => None,
                1 => Some((n as u64, Some(5000 + n as i32))),
                _ => Some((n as u64, None)),
            },
            timed_out: n % 4 == 1,
            stopped_as_hung: n % 5 == 4,
        }
    }

    fn state_with_every_phase() -> SupervisorState {
        let unit_phases = every_unit_phase();
        let units = unit_phases
            .iter()
            .enumerate()
            .map(|(n, phase)| {
                let state = UnitState {
                    path: PathBuf::from(format!("/etc/clusterd/units/u{n}.toml")),
                    text: Some(format!("name = \"u{n}\"\ncommand = [\"sleep\", \"1\"]\n")),
                    phase: phase.clone(),
                    wanted: 2,
                    restarts: 1,
                    restart_history: vec![Duration::from_millis(1500)],
                    slots: vec![SlotState {
                        current: Some(1),
                        standby: Some((2, Handover::Reload)),
                        restarts: 1,
                        last_exit: Some("exited with status 1".into()),
                        next_backoff: Some(Duration::from_secs(2)),
                        finished: false,
                    }],
                    give_ups: 0,
                    memory_replacements: 0,
                    health_replacements: 0,
                    config_error: None,
                    job: every_job(n),
                    cron_next: (n % 2 == 1).then_some(MINUTE),
                    rollout: (n % 2 == 0).then(|| SavedRollout {
                        next_index: 1,
                        revert_to: (n == 0).then(|| (PathBuf::from("/u0.toml"), "x".into())),
                    }),
                    after_stop: match n % 4 {
                        0 => SavedAfterStop::Nothing,
                        1 => SavedAfterStop::Start(None),
                        2 => SavedAfterStop::Start(Some((PathBuf::from("/u.toml"), "y".into()))),
                        _ => SavedAfterStop::Remove,
                    },
                    recent: vec![(Duration::from_secs(2), Some(0), "started, pid 1000".into())],
                    cannot_execute: (n == 1).then(|| "cannot execute \"x\"".into()),
                    retry_delay: (n == 1).then_some(Duration::from_secs(1)),
                    memory_check_armed: n == 2,
                };
                (format!("u{n}"), state)
            })
            .collect();
        let instances: Vec<InstanceState> = every_phase()
            .into_iter()
            .enumerate()
            .map(|(n, phase)| InstanceState {
                spawn_id: n as u64 + 1,
                unit: "u0".into(),
                index: n as u32,
                pid: 1000 + n as i32,
                phase,
                started_ago: Duration::from_millis(n as u64 * 37),
                status_text: (n % 2 == 0).then(|| format!("serving {n}")),
                health: every_health(n),
            })
            .collect();
        SupervisorState {
            version: STATE_VERSION,
            next_spawn_id: instances.len() as u64 + 1,
            units,
            instances,
            timers: every_timer()
                .into_iter()
                .map(|timer| TimerState {
                    timer,
                    remaining: Duration::from_millis(250),
                })
                .collect(),
            shutting_down: false,
            hooks: vec![(4000, "u1".into())],
            lingering: vec![(99, "u0".into(), 4001)],
            probe_seq: 41,
        }
    }

    #[test]
    fn a_state_written_before_health_jobs_and_hooks_were_carried_still_reads() {
        let mut old = serde_json::to_value(state_with_every_phase()).expect("serializes");
        for key in ["hooks", "lingering", "probe_seq"] {
            old.as_object_mut().expect("object").remove(key);
        }
        for unit in old["units"].as_object_mut().expect("units").values_mut() {
            for key in [
                "job",
                "cron_next",
                "rollout",
                "after_stop",
                "recent",
                "cannot_execute",
                "retry_delay",
                "memory_check_armed",
            ] {
                unit.as_object_mut().expect("unit").remove(key);
            }
        }
        for instance in old["instances"].as_array_mut().expect("instances") {
            instance.as_object_mut().expect("instance").remove("health");
        }
        let state = read_versioned::<SupervisorState>(&old.to_string()).expect("parses");
        assert!(state.hooks.is_empty() && state.lingering.is_empty());
        assert!(state
            .instances
            .iter()
            .all(|i| i.health == SavedHealth::default()));
        assert!(state.units.values().all(|u| u.job == SavedJob::default()));
    }

    #[test]
    fn every_phase_unit_phase_and_timer_round_trips() {
        let state = state_with_every_phase();
        assert_eq!(state.instances.len(), 3 + 3 * 2 + 3 * 4);
        let text = serde_json::to_string(&state).expect("serializes");
        let back = read_versioned::<SupervisorState>(&text).expect("parses");
        assert_eq!(back, state);
        back.validate().expect("valid");
        // And each phase alone, so a new variant that forgets serde fails here.
        for phase in every_phase() {
            let text = serde_json::to_string(&phase).expect("serializes");
            assert_eq!(serde_json::from_str::<Phase>(&text).ok(), Some(phase));
        }
        for phase in every_unit_phase() {
            let text = serde_json::to_string(&phase).expect("serializes");
            assert_eq!(serde_json::from_str::<UnitPhase>(&text).ok(), Some(phase));
        }
    }

    #[test]
    fn a_state_of_another_version_is_refused_before_it_is_read() {
        let mut state = state_with_every_phase();
        state.version = STATE_VERSION + 1;
        let text = serde_json::to_string(&state).expect("serializes");
        let error = read_versioned::<SupervisorState>(&text).expect_err("refused");
        assert!(error.contains("version"), "{error}");
    }

    #[test]
    fn a_state_that_lies_is_refused() {
        // An unknown field, a phase that does not exist, a pid that cannot be a child, an
        // instance of a unit the state does not have.
        let good = serde_json::to_value(state_with_every_phase()).expect("serializes");
        let mut unknown = good.clone();
        unknown["extra"] = serde_json::json!(1);
        assert!(read_versioned::<SupervisorState>(&unknown.to_string()).is_err());
        let mut bad_phase = good.clone();
        bad_phase["instances"][0]["phase"] = serde_json::json!("sleeping");
        assert!(read_versioned::<SupervisorState>(&bad_phase.to_string()).is_err());
        for (field, value) in [
            ("pid", serde_json::json!(1)),
            ("pid", serde_json::json!(1001)),
            ("unit", serde_json::json!("ghost")),
            ("spawn_id", serde_json::json!(9999)),
        ] {
            let mut lie = good.clone();
            lie["instances"][0][field] = value;
            let state = read_versioned::<SupervisorState>(&lie.to_string()).expect("parses");
            assert!(state.validate().is_err(), "{field} accepted");
        }
        // A hook or a health check that names pid 1, a hook of a unit the state lacks.
        for (path, value) in [
            ("/hooks/0/0", serde_json::json!(1)),
            ("/hooks/0/1", serde_json::json!("ghost")),
            ("/lingering/0/2", serde_json::json!(0)),
            ("/instances/1/health/running/1", serde_json::json!(1)),
        ] {
            let mut lie = good.clone();
            *lie.pointer_mut(path).expect(path) = value;
            let state = read_versioned::<SupervisorState>(&lie.to_string()).expect("parses");
            assert!(state.validate().is_err(), "{path} accepted");
        }
    }
}
