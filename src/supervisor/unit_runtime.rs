//! `UnitRuntime`: what the supervisor knows about one loaded unit beyond its configuration —
//! its instance slots, restart budget, give-up state, and the requests waiting on it.

use crossbeam_channel::Sender;

use super::phase::UnitPhase;
use super::waiters::Waiters;
use crate::protocol::Response;
use crate::supervisor::process_control::SpawnId;
use crate::supervisor::restart_limiter::RestartLimiter;
use crate::unit::Unit;

pub(super) struct UnitRuntime {
    /// The configuration in force.
    pub unit: Unit,
    /// Inactive (stopped by hand, being removed), active, or gave up.
    pub phase: UnitPhase,
    /// How many instances to run: the file's `instances`, until a `scale`.
    pub wanted: u32,
    /// Indexed by instance index. May be longer than `wanted` while scaled-down instances
    /// finish stopping.
    pub slots: Vec<Slot>,
    pub limiter: RestartLimiter,
    /// Automatic restarts since the last manual start.
    pub restarts: u32,
    /// The last daemon-reload could not apply the unit's file; the unit runs as before.
    pub config_error: Option<String>,
    /// What to do once every process of the unit is gone.
    pub after_stop: AfterStop,
    /// Requests that return when the unit reaches a condition.
    pub waiters: Waiters,
    /// Every live process of the unit (current, replaced, scaled away), by spawn id: the
    /// supervisor's index into its process table.
    pub processes: std::collections::BTreeSet<SpawnId>,
    /// A rolling reload in progress.
    pub rollout: Option<Rollout>,
    /// The delay of the armed retry of starts that failed for lack of system resources, or
    /// because the program cannot be executed.
    pub retry_delay: Option<std::time::Duration>,
    /// Why its program cannot be executed (`cannot execute "nodee": No such file or
    /// directory`), from the last start that failed so, until one succeeds: status shows it.
    pub cannot_execute: Option<String>,
    /// The unit's last lifecycle events, newest last, at most [`RECENT_EVENTS`]: `status
    /// UNIT` shows why things happened.
    pub recent: std::collections::VecDeque<RecentEvent>,
    /// A `memory_max` check is armed.
    pub memory_check_armed: bool,
    /// Instances replaced for going above `memory_max`, since clusterd started.
    pub memory_replacements: u32,
    /// Instances replaced because they were hung (watchdog, `[health]`), since clusterd
    /// started.
    pub health_replacements: u32,
    /// Times the unit gave up (reached its restart limit), since clusterd started.
    pub give_ups: u32,
    /// The minute its `cron_restart` timer is armed for, and the schedule it follows.
    pub cron_next: Option<super::cron_restart::CronNext>,
    /// A one-shot's runs and schedule.
    pub job: super::jobs::JobRuntime,
}

/// How many lifecycle events a unit keeps for status.
pub(super) const RECENT_EVENTS: usize = 20;

/// One lifecycle event of a unit, for status.
pub(super) struct RecentEvent {
    pub at: std::time::Instant,
    pub index: Option<u32>,
    pub text: String,
}

impl UnitRuntime {
    /// Remembers an event, forgetting the oldest beyond [`RECENT_EVENTS`].
    pub(super) fn remember(&mut self, at: std::time::Instant, index: Option<u32>, text: String) {
        if self.recent.len() == RECENT_EVENTS {
            self.recent.pop_front();
        }
        self.recent.push_back(RecentEvent { at, index, text });
    }
}

#[derive(Debug, Clone, Default)]
pub(super) struct Slot {
    /// The process serving this index, if any.
    pub current: Option<SpawnId>,
    /// The process `current` is replacing: it keeps serving until `current` is ready.
    pub standby: Option<(SpawnId, Handover)>,
    /// Automatic restarts of this index.
    pub restarts: u32,
    /// How the last process of this index ended, or why it could not start.
    pub last_exit: Option<String>,
    /// A restart waits until then (`restart_delay`, `restart_backoff`): `Timer::Restart`.
    pub restart_at: Option<std::time::Instant>,
    /// `restart_backoff`: the wait before the next restart of this index.
    pub next_backoff: Option<std::time::Duration>,
    /// A one-shot's index that exited successfully in this run: it is not missing.
    pub finished: bool,
}

/// What happens to a slot's standby process once the new one is ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Handover {
    /// Reload: stop it gracefully; if the new one fails, it becomes current again.
    Reload,
    /// Suicide: it is leaving anyway; give it `kill_timeout`, then SIGKILL.
    Suicide,
    /// clusterd replaces it (it went above `memory_max`): stop it gracefully, with
    /// `kill_signal` then `kill_timeout`, once the new one is ready (or has failed).
    Replace,
}

#[derive(Debug)]
pub(super) enum AfterStop {
    Nothing,
    /// Start again, with a new configuration if one is given (restart, daemon-reload).
    Start(Option<Box<Unit>>),
    /// Forget the unit (its file was removed).
    Remove,
}

pub(super) struct Rollout {
    /// The next index to replace.
    pub next_index: u32,
    pub waiters: Vec<Sender<Response>>,
    /// A daemon-reload is applying a changed file this way: the configuration to go back to
    /// if a new process fails to come up.
    pub revert_to: Option<Box<Unit>>,
}

impl UnitRuntime {
    pub(super) fn new(unit: Unit) -> Self {
        UnitRuntime {
            limiter: RestartLimiter::new(unit.restart_limit.burst, unit.restart_limit.interval),
            wanted: unit.instances,
            unit,
            phase: UnitPhase::Inactive,
            slots: Vec::new(),
            restarts: 0,
            config_error: None,
            after_stop: AfterStop::Nothing,
            waiters: Waiters::default(),
            processes: Default::default(),
            rollout: None,
            retry_delay: None,
            cannot_execute: None,
            recent: Default::default(),
            memory_check_armed: false,
            memory_replacements: 0,
            health_replacements: 0,
            give_ups: 0,
            cron_next: None,
            job: Default::default(),
        }
    }

    pub(super) fn slot_mut(&mut self, index: u32) -> &mut Slot {
        let index = index as usize;
        if self.slots.len() <= index {
            self.slots.resize_with(index + 1, Slot::default);
        }
        &mut self.slots[index]
    }

    /// The wanted indexes with no process.
    pub(super) fn missing_indexes(&self) -> Vec<u32> {
        (0..self.wanted)
            .filter(|&i| {
                self.slots
                    .get(i as usize)
                    .is_none_or(|s| s.current.is_none() && !s.finished)
            })
            .collect()
    }

    /// Replaces the configuration; the restart budget follows the new limit. A count set by
    /// `clusterctl scale` holds unless the new file changes `instances`.
    pub(super) fn set_unit(&mut self, unit: Unit) {
        if unit.restart_limit != self.unit.restart_limit {
            self.limiter =
                RestartLimiter::new(unit.restart_limit.burst, unit.restart_limit.interval);
        }
        if unit.instances != self.unit.instances {
            self.wanted = unit.instances;
        }
        self.unit = unit;
    }
}
