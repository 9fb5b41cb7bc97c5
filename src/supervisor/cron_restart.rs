//! `cron_restart`: a rolling reload of a unit at the times of its schedule. One timer per unit
//! that has a schedule, armed for the next matching minute (local time, which the OS side
//! supplies), re-armed each time it fires and whenever the unit's configuration is applied.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use log::warn;

use super::timers::Timer;
use super::unit_runtime::{AfterStop, UnitRuntime};
use super::Supervisor;
use crate::supervisor::process_control::ProcessControl;
use crate::unit::Unit;

impl<P: ProcessControl> Supervisor<P> {
    /// What follows a unit's configuration once it is applied (or, for a unit on its way
    /// out, cleared): its `cron_restart` timer and the files it watches.
    pub(super) fn follow_configuration(&mut self, name: &str, now: Instant) {
        self.arm_cron(name, now);
        self.watch_unit_files(name);
    }

    /// Arms (or re-arms, after a change of schedule) the unit's cron timer; removes it from a
    /// unit that has no schedule any more.
    pub(super) fn arm_cron(&mut self, name: &str, now: Instant) {
        let timer = Timer::Cron(name.to_string());
        self.timers.cancel(timer.clone());
        let Some(schedule) = followed_unit(&self.units, name).and_then(|u| u.cron_restart.clone())
        else {
            return;
        };
        match schedule.seconds_until_next(self.os.local_time()) {
            Some(seconds) => self
                .timers
                .add_after(now, Duration::from_secs(seconds), timer),
            None => warn!("{name}: cron_restart \"{schedule}\" never comes; no scheduled reload"),
        }
    }

    /// The schedule's time: reload the unit one instance at a time, as `clusterctl reload`
    /// does, if it runs and is not reloading already; then wait for the next time.
    pub(super) fn cron_reload(&mut self, name: &str, now: Instant) {
        self.reload_on_own_initiative(name, "cron_restart: reloading", now);
        self.arm_cron(name, now);
    }
}

/// The configuration a unit's schedule and watches follow: none for a unit that is gone or
/// whose file was removed (it is on its way out).
pub(super) fn followed_unit<'a>(
    units: &'a BTreeMap<String, UnitRuntime>,
    name: &str,
) -> Option<&'a Unit> {
    units
        .get(name)
        .filter(|rt| !matches!(rt.after_stop, AfterStop::Remove))
        .map(|rt| &rt.unit)
}
