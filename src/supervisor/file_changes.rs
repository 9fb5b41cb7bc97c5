//! `watch`: files changed under a unit's watched paths; once they have been quiet for its
//! `watch_delay`, the unit is reloaded one instance at a time, so the old instances serve on
//! if the new code does not come up (PM2 restarts everything at once).

use std::time::Instant;

use log::{debug, info};

use super::timers::Timer;
use super::{Supervisor, UnitEvent};
use crate::supervisor::process_control::ProcessControl;

impl<P: ProcessControl> Supervisor<P> {
    /// Tells the OS side what the unit watches now (nothing, if it is gone).
    pub(super) fn watch_unit_files(&mut self, name: &str) {
        let unit = self.units.get(name).map(|rt| &rt.unit);
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
        let Some(rt) = self.units.get(name) else {
            return;
        };
        if !rt.active || rt.gave_up.is_some() || self.shutting_down {
            return;
        }
        if rt.rollout.is_some() {
            let delay = rt.unit.watch_delay;
            self.timers
                .add_after(now, delay, Timer::WatchReload(name.to_string()));
            return;
        }
        info!("{name}: watched files changed; reloading");
        self.unit_events.push(UnitEvent::note(
            name.to_string(),
            None,
            "watched files changed; reloading".to_string(),
        ));
        self.begin_rollout(name, None, None, now);
    }
}
