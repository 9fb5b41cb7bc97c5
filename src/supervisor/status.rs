//! Building the status report that `clusterctl status` shows.

use std::collections::HashMap;
use std::time::Instant;

use super::phase::{Phase, UnitPhase};
use super::unit_runtime::UnitRuntime;
use super::{Process, Supervisor};
use crate::protocol::{
    EventStatus, InstanceState, InstanceStatus, StatusReport, UnitState, UnitStatus,
};
use crate::supervisor::process_control::{ProcessControl, SpawnId, Usage};

impl<P: ProcessControl> Supervisor<P> {
    /// The status of one unit, or of all units (valid and invalid) sorted by name.
    pub(crate) fn status(&self, only: Option<&str>, now: Instant) -> StatusReport {
        // Measured when asked, all at once: no sampling in the background.
        let live: Vec<_> = self
            .processes
            .values()
            .filter(|p| only.is_none_or(|o| o == p.unit))
            .map(|p| (p.id, p.pid, p.started_at))
            .collect();
        let usage = self.os.usage(&live);
        let mut units: Vec<UnitStatus> = self
            .units
            .iter()
            .filter(|(name, _)| only.is_none_or(|o| o == name.as_str()))
            .map(|(name, rt)| {
                let mut status = self.unit_status(name, rt, &usage, now);
                if only.is_some() {
                    status.events = rt
                        .recent
                        .iter()
                        .map(|e| EventStatus {
                            ago_ms: now.saturating_duration_since(e.at).as_millis() as u64,
                            instance: e.index,
                            text: e.text.clone(),
                        })
                        .collect();
                }
                status
            })
            .collect();
        for (name, error) in &self.invalid {
            if only.is_none_or(|o| o == name) {
                units.push(UnitStatus {
                    error: Some(error.to_string()),
                    ..UnitStatus::bare(name, UnitState::Invalid)
                });
            }
        }
        units.sort_by(|a, b| a.name.cmp(&b.name));
        StatusReport {
            units,
            isolation: self.os.isolation(),
            daemon: self.os.daemon_status(),
            stopping: self.is_stopping(),
        }
    }

    fn unit_status(
        &self,
        name: &str,
        rt: &UnitRuntime,
        usage: &HashMap<SpawnId, Usage>,
        now: Instant,
    ) -> UnitStatus {
        let mut processes: Vec<&Process> = self.processes_of(name).collect();
        processes.sort_by_key(|p| (p.index, p.id));
        let mut instances = Vec::new();
        for (index, slot) in rt.slots.iter().enumerate().take(rt.wanted as usize) {
            let index = index as u32;
            let current = slot.current.and_then(|id| self.processes.get(&id));
            instances.push(match current {
                Some(p) => self.instance_status(
                    p,
                    slot.restarts,
                    slot.last_exit.clone(),
                    false,
                    usage.get(&p.id),
                    now,
                ),
                None => InstanceStatus {
                    index,
                    pid: None,
                    // Waiting out its `restart_delay` or backoff.
                    state: if slot.restart_at.is_some() {
                        InstanceState::Restarting
                    } else {
                        InstanceState::Stopped
                    },
                    restarts: slot.restarts,
                    uptime_ms: None,
                    last_exit: slot.last_exit.clone(),
                    status_text: None,
                    draining: false,
                    cpu_percent: None,
                    cpu_seconds: None,
                    memory_bytes: None,
                    health: None,
                },
            });
        }
        for index in rt.slots.len() as u32..rt.wanted {
            instances.push(InstanceStatus {
                index,
                pid: None,
                state: InstanceState::Stopped,
                restarts: 0,
                uptime_ms: None,
                last_exit: None,
                status_text: None,
                draining: false,
                cpu_percent: None,
                cpu_seconds: None,
                memory_bytes: None,
                health: None,
            });
        }
        // Processes that are not the current one of a wanted index: replaced ones finishing
        // their work, and scaled-away ones stopping.
        for p in &processes {
            let is_current = rt
                .slots
                .get(p.index as usize)
                .is_some_and(|s| s.current == Some(p.id))
                && p.index < rt.wanted;
            if !is_current {
                instances.push(self.instance_status(p, 0, None, true, usage.get(&p.id), now));
            }
        }

        let facts = UnitFacts {
            gave_up: rt.phase.gave_up().is_some(),
            active: rt.phase.is_active(),
            nothing_runs: processes.is_empty(),
            any_stopping: processes.iter().any(|p| p.phase.is_stopping()),
            rolling: rt.rollout.is_some(),
            any_starting: processes
                .iter()
                .any(|p| !p.phase.is_ready() && !p.phase.is_stopping()),
            waiting: matches!(rt.phase, UnitPhase::Waiting | UnitPhase::Scheduled),
            done: rt.phase == UnitPhase::Done,
        };
        let (log, log_problem) = self
            .os
            .log_destination(&rt.unit)
            .map_or((None, None), |(to, problem)| (Some(to), problem));
        let (watched_directories, watch_problem) = self
            .os
            .watch_report(name)
            .map_or((None, None), |(count, problem)| (Some(count), problem));
        UnitStatus {
            name: name.to_string(),
            state: facts.state(),
            description: rt.unit.description.clone(),
            restarts: rt.restarts,
            gave_up: rt.phase.gave_up().is_some(),
            wanted_instances: rt.wanted,
            error: rt
                .phase
                .gave_up()
                .map(str::to_string)
                .or_else(|| {
                    rt.cannot_execute
                        .as_ref()
                        .filter(|_| rt.phase.is_active())
                        .map(|e| match rt.retry_delay {
                            Some(delay) => format!(
                                "{e}; trying again every {} (doubling up to 1m)",
                                humantime::format_duration(delay)
                            ),
                            None => e.clone(),
                        })
                })
                .or_else(|| {
                    rt.config_error
                        .as_ref()
                        .map(|e| format!("daemon-reload kept the previous configuration: {e}"))
                }),
            log,
            log_problem,
            watched_directories,
            watch_problem,
            cpu_percent: sum(instances.iter().filter_map(|i| i.cpu_percent)),
            memory_bytes: sum(instances.iter().filter_map(|i| i.memory_bytes)),
            instances,
            memory_replacements: rt.memory_replacements,
            give_ups: rt.give_ups,
            health_replacements: rt.health_replacements,
            events: Vec::new(),
            waiting_for: (facts.waiting && processes.is_empty()).then(|| {
                let text = self.waiting_text(name);
                text.strip_prefix("waiting for ")
                    .unwrap_or(&text)
                    .to_string()
            }),
            job: self.job_status(name, now),
            after: rt.unit.job.after.clone(),
        }
    }

    fn instance_status(
        &self,
        p: &Process,
        restarts: u32,
        last_exit: Option<String>,
        draining: bool,
        usage: Option<&Usage>,
        now: Instant,
    ) -> InstanceStatus {
        let draining = draining || p.phase.announced();
        let checked = self
            .units
            .get(&p.unit)
            .is_some_and(|rt| rt.unit.watchdog.is_some() || rt.unit.health.is_some());
        InstanceStatus {
            index: p.index,
            pid: u32::try_from(p.pid.as_raw()).ok(),
            state: instance_state(p.phase, draining),
            restarts,
            uptime_ms: Some(now.saturating_duration_since(p.started_at).as_millis() as u64),
            last_exit,
            status_text: p.status_text.clone(),
            draining,
            cpu_percent: usage.map(|u| u.cpu_percent),
            cpu_seconds: usage.map(|u| u.cpu_seconds),
            memory_bytes: usage.map(|u| u.memory_bytes),
            health: checked.then(|| p.health.status()),
        }
    }
}

/// The sum of what was measured; `None` if nothing was.
fn sum<T: std::iter::Sum<T>>(mut values: impl Iterator<Item = T>) -> Option<T> {
    let first = values.next()?;
    Some(std::iter::once(first).chain(values).sum())
}

/// What a unit's state depends on.
struct UnitFacts {
    /// It gave up (or its sockets could not be bound).
    gave_up: bool,
    /// Not stopped by hand.
    active: bool,
    /// None of its processes is alive.
    nothing_runs: bool,
    /// One of its processes was told to stop.
    any_stopping: bool,
    /// A rolling reload is under way (its old processes stopping is part of it).
    rolling: bool,
    /// One of its processes, not stopping, is not ready yet.
    any_starting: bool,
    /// Held back by its `after` or its schedule.
    waiting: bool,
    /// A one-shot whose last run succeeded.
    done: bool,
}

/// A row of [`UNIT_STATES`]: when the condition holds, the state.
type UnitStateRow = (fn(&UnitFacts) -> bool, UnitState);

/// A unit's state: the first row whose condition holds.
const UNIT_STATES: [UnitStateRow; 8] = [
    (|f| f.gave_up, UnitState::Failed),
    (|f| f.waiting && f.nothing_runs, UnitState::Waiting),
    (|f| f.done && f.nothing_runs, UnitState::Done),
    (|f| !f.active && f.nothing_runs, UnitState::Stopped),
    (
        |f| !f.active || (f.any_stopping && !f.rolling),
        UnitState::Stopping,
    ),
    (|f| f.nothing_runs, UnitState::Stopped),
    (|f| f.any_starting, UnitState::Starting),
    (|_| true, UnitState::Running),
];

impl UnitFacts {
    fn state(&self) -> UnitState {
        UNIT_STATES
            .iter()
            .find(|(holds, _)| holds(self))
            .map_or(UnitState::Running, |&(_, state)| state)
    }
}

/// The state status shows for a process in `phase`; `replaced` when it is no longer the
/// current process of a wanted index (or it announced its exit). A replaced process
/// finishing its work is not `running`: a script that maps an index to its running pid must
/// find the replacement.
fn instance_state(phase: Phase, replaced: bool) -> InstanceState {
    match phase {
        Phase::Stopping { .. } => InstanceState::Stopping,
        _ if replaced => InstanceState::Draining,
        Phase::Draining { .. } => InstanceState::Draining,
        Phase::Starting | Phase::ReadyPending => InstanceState::Starting,
        Phase::Running => InstanceState::Running,
    }
}
