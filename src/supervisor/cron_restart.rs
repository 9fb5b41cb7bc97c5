//! `cron_restart`: a rolling reload of a unit at the times of its schedule. One timer per unit
//! that has a schedule, armed for the next matching minute (local time, which the OS side
//! supplies) and kept for that minute: a daemon-reload that leaves the schedule as it was
//! keeps the timer (a reload in the very second the restart is due must not skip it), a
//! changed schedule takes over a due occurrence rather than lose it, and a timer that fires
//! before its minute (the clock was set back, daylight saving time ended) waits for it again
//! instead of reloading early or twice.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use log::{debug, warn};

use super::timers::Timer;
use super::unit_runtime::{AfterStop, UnitRuntime};
use super::Supervisor;
use crate::supervisor::process_control::ProcessControl;
use crate::unit::cron::{CronSchedule, LocalTime};
use crate::unit::Unit;

/// A unit's armed schedule: the minute its timer is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct CronNext {
    schedule: CronSchedule,
    at: LocalTime,
}

impl CronNext {
    /// The `daemon-reexec` state's minute, for the unit's schedule.
    pub(super) fn restored(schedule: CronSchedule, at: LocalTime) -> CronNext {
        CronNext { schedule, at }
    }

    /// The minute the timer is for (written into the `daemon-reexec` state).
    pub(super) fn at(&self) -> LocalTime {
        self.at
    }
}

impl<P: ProcessControl> Supervisor<P> {
    /// What follows a unit's configuration once it is applied (or, for a unit on its way
    /// out, cleared): its `cron_restart` timer and the files it watches.
    pub(super) fn follow_configuration(&mut self, name: &str, now: Instant) {
        self.arm_cron(name, now);
        self.arm_schedule(name, now);
        self.watch_unit_files(name);
    }

    /// Arms the unit's cron timer if its schedule is new or changed; leaves an armed timer
    /// of the same schedule alone; removes it from a unit that has no schedule any more.
    pub(super) fn arm_cron(&mut self, name: &str, now: Instant) {
        let timer = Timer::Cron(name.to_string());
        let schedule = followed_unit(&self.units, name).and_then(|u| u.cron_restart.clone());
        let Some(rt) = self.units.get_mut(name) else {
            self.timers.cancel(timer);
            return;
        };
        let Some(schedule) = schedule else {
            rt.cron_next = None;
            self.timers.cancel(timer);
            return;
        };
        let armed = self.timers.is_armed(&timer);
        match rt.cron_next.as_mut() {
            Some(next) if armed && next.schedule == schedule => return,
            // A new schedule while the old one's minute has come and its timer not fired
            // yet: that occurrence still happens, and the new schedule follows it.
            Some(next) if armed && next.at <= self.os.local_time().minute() => {
                next.schedule = schedule;
                return;
            }
            _ => {}
        }
        let local = self.os.local_time();
        self.arm_for(name, schedule, local, now);
    }

    /// Arms the timer for the first minute of `schedule` after `after`'s.
    fn arm_for(&mut self, name: &str, schedule: CronSchedule, after: LocalTime, now: Instant) {
        let timer = Timer::Cron(name.to_string());
        self.timers.cancel(timer.clone());
        let Some(at) = schedule.next_after(after) else {
            warn!("{name}: cron_restart \"{schedule}\" never comes; no scheduled reload");
            if let Some(rt) = self.units.get_mut(name) {
                rt.cron_next = None;
            }
            return;
        };
        let delay = self.os.until_local(at);
        debug!("{name}: cron_restart: next at {at:?}, in {delay:?}");
        self.timers.add_after(now, delay, timer);
        if let Some(rt) = self.units.get_mut(name) {
            rt.cron_next = Some(CronNext { schedule, at });
        }
    }

    /// The timer fired: if its minute has come, reload the unit one instance at a time, as
    /// `clusterctl reload` does (if it runs and is not reloading already), then wait for the
    /// next minute after that one — never the same one again. Early (the clock went back):
    /// wait for the minute again.
    pub(super) fn cron_reload(&mut self, name: &str, now: Instant) {
        let Some(next) = self.units.get(name).and_then(|rt| rt.cron_next.clone()) else {
            return;
        };
        let local = self.os.local_time();
        if local.minute() < next.at {
            debug!(
                "{name}: cron_restart: woke at {local:?}, before {:?}",
                next.at
            );
            // At least the calendar's count, and a second: where the C library places the
            // minute earlier than the wall clock says (an hour that comes twice when daylight
            // saving time ends), the timer must not fire again at once, over and over.
            let delay = (self.os.until_local(next.at))
                .max(local.duration_until(next.at))
                .max(Duration::from_secs(1));
            self.timers
                .add_after(now, delay, Timer::Cron(name.to_string()));
            return;
        }
        self.reload_on_own_initiative(name, "cron_restart: reloading", now);
        // Late (the clock jumped forward): once, and the next time counts from now.
        self.arm_for(name, next.schedule, local.max(next.at), now);
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
