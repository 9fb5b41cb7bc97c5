//! `watch`: files changed under a unit's watched paths; once they have been quiet for its
//! `watch_delay`, the unit is reloaded one instance at a time, so the old instances serve on
//! if the new code does not come up (PM2 restarts everything at once).

use std::time::Instant;

use log::debug;

use super::handover::OwnReload;
use super::timers::Timer;
use super::Supervisor;
use crate::supervisor::process_control::ProcessControl;

impl<P: ProcessControl> Supervisor<P> {
    /// Tells the OS side what the unit watches now (nothing, if it is gone).
    pub(super) fn watch_unit_files(&mut self, name: &str) {
        let unit = super::cron_restart::followed_unit(&self.units, name);
        self.os.watch_files(name, unit);
    }

    /// A change: (re)start the unit's quiet period.
    pub(super) fn on_files_changed(&mut self, name: &str, now: Instant) {
        let Some(rt) = self.units.get(name) else {
            return;
        };
        if rt.unit.watch.is_empty() {
            return;
        }
        debug!("{name}: watched files changed");
        let timer = Timer::WatchReload(name.to_string());
        self.timers.cancel(timer.clone());
        self.timers.add_after(now, rt.unit.watch_delay, timer);
    }

    /// The files have been quiet for `watch_delay`: reload, if the unit runs. A reload
    /// already under way is let finish, and the change reloads again after it.
    pub(super) fn reload_after_changes(&mut self, name: &str, now: Instant) {
        let why = "watched files changed; reloading";
        if self.reload_on_own_initiative(name, why, now) == OwnReload::Busy {
            if let Some(rt) = self.units.get(name) {
                let delay = rt.unit.watch_delay;
                self.timers
                    .add_after(now, delay, Timer::WatchReload(name.to_string()));
            }
        }
    }
}
