//! Order between units (`after = [...]`). A unit starts only once each unit it lists is
//! *satisfied* — a service when all its wanted instances are ready, a one-shot when it is
//! `done`; until then it is `waiting` (`UnitPhase::Waiting`) and status says for what.
//!
//! No wake-up is lost: a start looks at its dependencies when it happens (one already done or
//! ready counts), and every change of any unit ends in `settle`, which looks at the units
//! waiting for it. Both run on the supervisor's one thread, so nothing changes in between.
//! Releasing is a work list, not recursion, so a long chain of units that are ready at once
//! cannot exhaust the stack.
//!
//! `after` orders, it does not bind: a dependency that stops, fails or restarts leaves the
//! units that already run alone (only a unit still waiting keeps waiting, with the reason).
//! At shutdown the order is reversed: a unit is stopped only once every unit that lists it
//! is gone.

use std::collections::BTreeSet;
use std::time::Instant;

use log::{info, warn};

use super::phase::{UnitPhase, UnitStep};
use super::{Supervisor, UnitEvent};
use crate::supervisor::process_control::ProcessControl;

/// The supervisor's bookkeeping for order.
#[derive(Debug, Default)]
pub(super) struct Ordering {
    /// Units whose change may release the units waiting for them, to look at.
    changed: Vec<String>,
    /// Inside [`Supervisor::release_waiting`]: a nested call only queues.
    releasing: bool,
    /// At shutdown: units not stopped yet because a unit that lists them still runs.
    stop_later: BTreeSet<String>,
    /// Inside [`Supervisor::stop_in_reverse_order`].
    stopping: bool,
}

impl<P: ProcessControl> Supervisor<P> {
    /// A unit is satisfied for the units that list it in `after`.
    pub(super) fn is_satisfied(&self, name: &str) -> bool {
        match self.units.get(name) {
            None => false,
            Some(rt) if rt.unit.job.is_oneshot() => rt.phase == UnitPhase::Done,
            Some(_) => self.all_ready(name),
        }
    }

    /// The first unit of `name`'s `after` that is not satisfied, with its state:
    /// `migrate (running)`.
    pub(super) fn waiting_for(&self, name: &str) -> Option<String> {
        let rt = self.units.get(name)?;
        let dependency = rt.unit.job.after.iter().find(|d| !self.is_satisfied(d))?;
        Some(format!("{dependency} ({})", self.describe(dependency)))
    }

    /// Why a unit holding back waits: `waiting for migrate (running)`, `waiting for its
    /// schedule`.
    pub(super) fn waiting_text(&self, name: &str) -> String {
        match self.waiting_for(name) {
            Some(what) => format!("waiting for {what}"),
            None => "waiting for its schedule".to_string(),
        }
    }

    /// A dependency's state, in a few words, for the units waiting for it.
    fn describe(&self, name: &str) -> String {
        let Some(rt) = self.units.get(name) else {
            return if self.invalid.contains_key(name) {
                "its file is invalid".to_string()
            } else {
                "not loaded".to_string()
            };
        };
        let oneshot = rt.unit.job.is_oneshot();
        match &rt.phase {
            UnitPhase::GaveUp { reason, .. } => format!("failed: {reason}"),
            UnitPhase::Inactive => "stopped".to_string(),
            UnitPhase::Waiting => match self.waiting_for(name) {
                Some(what) => format!("waiting for {what}"),
                None => "waiting".to_string(),
            },
            UnitPhase::Scheduled => "waiting for its schedule".to_string(),
            UnitPhase::Done => "done".to_string(),
            UnitPhase::Active if oneshot => "running".to_string(),
            UnitPhase::Active => "not ready".to_string(),
        }
    }

    /// Called by a start: if a dependency is not satisfied, the unit waits (and says for
    /// what) instead of starting. Returns true if it waits.
    pub(super) fn hold_back(&mut self, name: &str) -> bool {
        let Some(what) = self.waiting_for(name) else {
            return false;
        };
        self.set_unit_phase(name, UnitStep::Wait);
        let text = format!("waiting for {what}");
        info!("{name}: {text}");
        self.unit_events.push(UnitEvent::note(name, None, text));
        true
    }

    /// After any change of unit `changed`: starts the units waiting for it whose
    /// dependencies are all satisfied now.
    pub(super) fn release_waiting(&mut self, changed: &str, now: Instant) {
        self.ordering.changed.push(changed.to_string());
        if self.ordering.releasing {
            return;
        }
        self.ordering.releasing = true;
        while let Some(changed) = self.ordering.changed.pop() {
            if self.shutting_down {
                self.ordering.changed.clear();
                break;
            }
            let waiting: Vec<String> = self
                .units
                .iter()
                .filter(|(_, rt)| {
                    rt.phase == UnitPhase::Waiting && rt.unit.job.after.contains(&changed)
                })
                .map(|(name, _)| name.clone())
                .collect();
            for name in waiting {
                if self.waiting_for(&name).is_none() {
                    info!("{name}: {changed} is satisfied; starting");
                    self.start_unit(&name, now);
                }
            }
        }
        self.ordering.releasing = false;
    }

    /// A waiting unit whose configuration changed (its `after` may have): starts it if
    /// nothing holds it back any more.
    pub(super) fn start_if_released(&mut self, name: &str, now: Instant) {
        let waiting = self
            .units
            .get(name)
            .is_some_and(|rt| rt.phase == UnitPhase::Waiting);
        if waiting && self.waiting_for(name).is_none() {
            self.start_unit(name, now);
        }
    }

    /// The shutdown: stops `names` dependents first — a unit once every unit that lists it
    /// in `after` is gone.
    pub(super) fn stop_in_reverse_order(&mut self, names: Vec<String>, now: Instant) {
        self.ordering.stop_later.extend(names);
        self.stop_what_nothing_needs(now);
    }

    /// Stops every unit of the shutdown that no running unit lists in `after` any more.
    /// Called again whenever a unit changes (`settle`).
    pub(super) fn stop_what_nothing_needs(&mut self, now: Instant) {
        if self.ordering.stopping || self.ordering.stop_later.is_empty() {
            return;
        }
        self.ordering.stopping = true;
        loop {
            let needed: BTreeSet<String> = self
                .units
                .iter()
                .filter(|(name, _)| {
                    self.ordering.stop_later.contains(*name) || self.alive_count(name) > 0
                })
                .flat_map(|(_, rt)| rt.unit.job.after.iter().cloned())
                .collect();
            let mut free: Vec<String> = self
                .ordering
                .stop_later
                .iter()
                .filter(|name| !needed.contains(*name))
                .cloned()
                .collect();
            if free.is_empty() {
                // Nothing can go first. If nothing outside the list still runs, waiting
                // changes nothing (the configurations in force, old and new mixed by
                // daemon-reloads that kept a file, wait for each other): stop them all.
                let others_run = self.units.keys().any(|name| {
                    !self.ordering.stop_later.contains(name) && self.alive_count(name) > 0
                });
                if others_run {
                    break;
                }
                warn!("shutdown: the units left wait for each other; stopping them together");
                free = self.ordering.stop_later.iter().cloned().collect();
            }
            for name in free {
                self.ordering.stop_later.remove(&name);
                self.stop_unit(&name, now);
            }
            if self.ordering.stop_later.is_empty() {
                break;
            }
        }
        self.ordering.stopping = false;
    }
}
