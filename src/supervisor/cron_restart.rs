//! `cron_restart`: a rolling reload of a unit at the times of its schedule. One timer per unit
//! that has a schedule, armed for the next matching minute (local time, which the OS side
//! supplies), re-armed each time it fires and whenever the unit's configuration is applied.

use std::time::{Duration, Instant};

use log::{info, warn};

use super::timers::Timer;
use super::{Supervisor, UnitEvent};
use crate::supervisor::process_control::ProcessControl;

impl<P: ProcessControl> Supervisor<P> {
    /// Arms (or re-arms, after a change of schedule) the unit's cron timer; removes it from a
    /// unit that has no schedule any more.
    pub(super) fn arm_cron(&mut self, name: &str, now: Instant) {
        let timer = Timer::Cron(name.to_string());
        self.timers.cancel(timer.clone());
        let Some(schedule) = self
            .units
            .get(name)
            .and_then(|rt| rt.unit.cron_restart.clone())
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
    /// does, if it runs; then wait for the next time.
    pub(super) fn cron_reload(&mut self, name: &str, now: Instant) {
        let Some(rt) = self.units.get(name) else {
            return;
        };
        let due = rt.active && rt.gave_up.is_none() && rt.rollout.is_none() && !self.shutting_down;
        if due {
            info!("{name}: cron_restart: reloading");
            self.unit_events.push(UnitEvent::note(
                name.to_string(),
                None,
                "cron_restart: reloading".to_string(),
            ));
            self.begin_rollout(name, None, None, now);
        }
        self.arm_cron(name, now);
    }
}
