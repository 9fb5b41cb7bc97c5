//! Replacing a process by a new one without a gap: readiness, suicide ("I am about to exit,
//! start my replacement now") and the rolling reload behind `clusterctl reload`.
//!
//! In each case the new process becomes the slot's `current` at once and the old one is kept
//! as the slot's `standby` until the new one is ready; only then is the old one told to go.

use super::UnitEvent;
use std::time::Instant;

use log::{info, warn};

use super::phase::Step;
use super::unit_runtime::{Handover, Rollout};
use super::Supervisor;
use crate::protocol::Response;
use crate::supervisor::process_control::{ProcessControl, SpawnId};
use crate::unit::RestartPolicy;

impl<P: ProcessControl> Supervisor<P> {
    /// The process is ready to serve; a process it replaces may now be let go.
    pub(super) fn mark_ready(&mut self, id: SpawnId, now: Instant) {
        if let Some(name) = self.set_ready(id, now) {
            self.settle(&name, now);
        }
    }

    /// Marks the process ready and lets go of the process it replaces, without re-checking
    /// the unit: for callers in the middle of changing it (spawning one index of several),
    /// which settle once they are done. Returns the unit's name if anything changed.
    pub(super) fn set_ready(&mut self, id: SpawnId, now: Instant) -> Option<String> {
        let process = self.processes.get(&id)?;
        if process.phase.is_ready() {
            return None;
        }
        let rt = self.units.get(&process.unit)?;
        // Not before it has run `ready_after`: Timer::ReadyAfter comes back for it then.
        if now.saturating_duration_since(process.started_at) < rt.unit.ready_after {
            self.transition(id, Step::ReadyLater, now);
            return None;
        }
        self.transition(id, Step::Ready, now)?;
        let process = self.processes.get(&id)?;
        let (name, index) = (process.unit.clone(), process.index);
        let rt = self.units.get_mut(&name)?;
        if rt.unit.ready != crate::unit::ReadyMode::Started || !rt.unit.ready_after.is_zero() {
            info!("{name}[{index}]: ready");
        }
        let slot = rt.slot_mut(index);
        if slot.current == Some(id) {
            if let Some((standby, handover)) = slot.standby.take() {
                self.let_go(standby, handover, now);
            }
        }
        Some(name)
    }

    /// A Node worker that has not listened within `listen_timeout` counts as ready, as PM2
    /// counts such an app online: an app that never listens (a queue worker) still starts.
    pub(super) fn listen_timed_out(&mut self, id: SpawnId, now: Instant) {
        let Some(process) = self.processes.get(&id).filter(|p| !p.phase.is_ready()) else {
            return;
        };
        let timeout = self
            .units
            .get(&process.unit)
            .map(|rt| humantime::format_duration(rt.unit.listen_timeout).to_string())
            .unwrap_or_default();
        info!(
            "{}: did not listen within {timeout} (listen_timeout); counted as ready",
            process.label()
        );
        self.mark_ready(id, now);
    }

    /// The process a handover replaced goes: stopped, or (after a suicide) given its
    /// `kill_timeout` to leave on its own.
    pub(super) fn let_go(&mut self, old: SpawnId, handover: Handover, now: Instant) {
        match handover {
            Handover::Reload | Handover::Replace => self.stop_process(old, now),
            Handover::Suicide => self.arm_kill(old, now),
        }
    }

    /// The process announced its exit: start its replacement now. Its own exit will not
    /// trigger a restart; it gets `kill_timeout` (counted once the replacement is ready) to
    /// finish its work before SIGKILL.
    pub(super) fn on_suicide(&mut self, id: SpawnId, now: Instant) {
        self.hand_over(id, Handover::Suicide, "announced its exit (suicide)", now);
    }

    /// Replaces process `id` gracefully, for the reason `why`: its replacement starts now
    /// (within the restart budget), and once the replacement is ready the old one is let go
    /// as `kind` says ([`Handover::Suicide`]: `kill_timeout` to leave on its own;
    /// [`Handover::Replace`]: `kill_signal`, then `kill_timeout`). Its own exit will not
    /// trigger a restart. Returns whether a replacement was started (what
    /// `memory_limit_replacements_total` counts).
    pub(super) fn hand_over(
        &mut self,
        id: SpawnId,
        kind: Handover,
        why: &str,
        now: Instant,
    ) -> bool {
        let Some(process) = self.processes.get(&id) else {
            return false;
        };
        if process.phase.is_leaving() {
            return false;
        }
        let (name, index, label) = (process.unit.clone(), process.index, process.label());
        let Some(rt) = self.units.get_mut(&name) else {
            return false;
        };
        let slot = rt.slot_mut(index);
        let is_current = slot.current == Some(id);
        if is_current && slot.standby.is_some() {
            // It is itself a replacement that is not ready yet and the slot already holds the
            // process it replaces, so no second replacement can be started now. Its exit must
            // count as a crash (restarted within the budget): marking it as announced would
            // suppress that restart and leave the index empty for good.
            info!("{label}: announced its exit before it was ready; it will be restarted once it exits");
            return false;
        }
        self.transition(id, Step::Announce, now);
        let Some(rt) = self.units.get_mut(&name) else {
            return false;
        };
        if !is_current {
            // Already being replaced: it is the standby of a reload in progress.
            return false;
        }
        let replace = rt.phase.is_active()
            && !self.shutting_down
            && rt.phase.gave_up().is_none()
            && index < rt.wanted
            && rt.unit.restart != RestartPolicy::Never;
        if !replace {
            info!("{label}: {why}; not replacing it");
            self.let_go(id, kind, now);
            return false;
        }
        info!("{label}: {why}; starting its replacement");
        self.unit_events.push(UnitEvent::note(
            name.clone(),
            Some(index),
            format!("{why}; starting its replacement"),
        ));
        if !self.take_restart(&name, index, now) {
            self.let_go(id, kind, now);
            return false;
        }
        let Some(rt) = self.units.get_mut(&name) else {
            return false;
        };
        let slot = rt.slot_mut(index);
        slot.current = None;
        slot.standby = Some((id, kind));
        let before = self.next_spawn_id;
        self.start_instance(&name, index, now);
        // If no replacement could be started, the old process still gets its deadline.
        let Some(rt) = self.units.get_mut(&name) else {
            return false;
        };
        let slot = rt.slot_mut(index);
        let started = slot.current.is_some_and(|c| c >= before);
        if !started {
            if let Some((old, kind)) = slot.standby.take() {
                self.let_go(old, kind, now);
            }
        }
        self.settle(&name, now);
        started
    }

    /// A process with `ready = "notify"` did not say it was ready in `ready_timeout`.
    pub(super) fn ready_timed_out(&mut self, id: SpawnId, now: Instant) {
        let Some(process) = self.processes.get(&id) else {
            return;
        };
        if process.phase.is_ready() || process.phase.is_stopping() {
            return;
        }
        let (name, index, label) = (process.unit.clone(), process.index, process.label());
        let Some(rt) = self.units.get_mut(&name) else {
            return;
        };
        let timeout = humantime::format_duration(rt.unit.ready_timeout).to_string();
        let slot = rt.slot_mut(index);
        match slot.standby {
            Some((old, Handover::Reload)) if slot.current == Some(id) => {
                // Put the old process back and drop the new one.
                slot.current = Some(old);
                slot.standby = None;
                warn!("{label}: not ready within {timeout}; stopping it, the old process keeps serving");
                self.stop_process(id, now);
                self.abort_rollout(
                    &name,
                    format!("{name}[{index}]: the new process was not ready within {timeout}; the old one keeps serving"),
                    now,
                );
            }
            Some((old, kind @ (Handover::Suicide | Handover::Replace)))
                if slot.current == Some(id) =>
            {
                slot.standby = None;
                warn!("{label}: not ready within {timeout}; the process it replaces goes now");
                self.let_go(old, kind, now);
            }
            _ => {
                warn!("{label}: not ready within {timeout}");
                rt.slot_mut(index).last_exit = Some(format!("not ready within {timeout}"));
                self.fail_waiters(&name, now);
            }
        }
        self.settle(&name, now);
    }

    /// Starts a rolling reload: each index in turn gets a new process, and its old process is
    /// stopped once the new one is ready. `reply`, if any, is answered when every old process
    /// is gone (or the reload failed).
    pub(super) fn begin_rollout(
        &mut self,
        name: &str,
        reply: Option<crossbeam_channel::Sender<Response>>,
        revert_to: Option<Box<crate::unit::Unit>>,
        now: Instant,
    ) {
        let Some(rt) = self.units.get_mut(name) else {
            return;
        };
        match &mut rt.rollout {
            Some(rollout) => rollout.waiters.extend(reply),
            None => {
                info!("{name}: reloading {} instance(s) one by one", rt.wanted);
                self.unit_events.push(UnitEvent::note(
                    name.to_string(),
                    None,
                    format!("reloading {} instance(s) one by one", rt.wanted),
                ));
                rt.rollout = Some(Rollout {
                    next_index: 0,
                    waiters: reply.into_iter().collect(),
                    revert_to,
                });
                self.advance_rollout(name, now);
            }
        }
    }

    /// A rolling reload clusterd starts itself (`cron_restart`, `watch`), for `why`: only for
    /// a unit that runs, and not over a reload already under way.
    pub(super) fn reload_on_own_initiative(
        &mut self,
        name: &str,
        why: &str,
        now: Instant,
    ) -> OwnReload {
        let Some(rt) = self.units.get(name) else {
            return OwnReload::NotRunning;
        };
        if !rt.phase.restarts() || self.shutting_down {
            return OwnReload::NotRunning;
        }
        if rt.rollout.is_some() {
            return OwnReload::Busy;
        }
        info!("{name}: {why}");
        self.unit_events
            .push(UnitEvent::note(name.to_string(), None, why.to_string()));
        self.begin_rollout(name, None, None, now);
        OwnReload::Started
    }

    /// Moves a reload forward as far as it can go without waiting.
    pub(super) fn advance_rollout(&mut self, name: &str, now: Instant) {
        loop {
            let Some(rt) = self.units.get_mut(name) else {
                return;
            };
            let Some(rollout) = rt.rollout.as_mut() else {
                return;
            };
            // Waiting for the index in progress to become ready.
            if rt
                .slots
                .iter()
                .any(|s| matches!(s.standby, Some((_, Handover::Reload))))
            {
                return;
            }
            if rollout.next_index >= rt.wanted {
                let old_left = self.processes_of(name).any(|p| p.phase.is_stopping());
                if old_left {
                    return;
                }
                let Some(rt) = self.units.get_mut(name) else {
                    return;
                };
                if let Some(rollout) = rt.rollout.take() {
                    let message = format!("{name}: reloaded {} instance(s)", rt.wanted);
                    info!("{message}");
                    self.unit_events.push(UnitEvent::note(
                        name.to_string(),
                        None,
                        format!("reloaded {} instance(s)", rt.wanted),
                    ));
                    for waiter in rollout.waiters {
                        let _ = waiter.send(Response::done(message.clone()));
                    }
                }
                return;
            }
            let index = rollout.next_index;
            rollout.next_index += 1;
            let slot = rt.slot_mut(index);
            let old = slot.current.filter(|id| {
                self.processes
                    .get(id)
                    .is_some_and(|p| !p.phase.is_leaving())
            });
            match old {
                Some(old) => {
                    slot.current = None;
                    slot.standby = Some((old, Handover::Reload));
                    if self.spawn_into_slot(name, index, now).is_err() {
                        let Some(rt) = self.units.get_mut(name) else {
                            return;
                        };
                        let slot = rt.slot_mut(index);
                        let error = slot.last_exit.clone().unwrap_or_default();
                        slot.current = Some(old);
                        slot.standby = None;
                        self.abort_rollout(
                            name,
                            format!("{name}[{index}]: {error}; the old process keeps serving"),
                            now,
                        );
                        return;
                    }
                }
                None => {
                    // Nothing serves this index: a plain start.
                    if self
                        .units
                        .get(name)
                        .and_then(|rt| rt.slots.get(index as usize))
                        .is_some_and(|s| s.current.is_none())
                    {
                        self.start_instance(name, index, now);
                    }
                }
            }
        }
    }

    /// Ends a reload that cannot go on; the processes that serve now keep serving.
    pub(super) fn abort_rollout(&mut self, name: &str, error: String, _now: Instant) {
        let Some(rt) = self.units.get_mut(name) else {
            return;
        };
        if let Some(rollout) = rt.rollout.take() {
            warn!("{error}");
            for waiter in rollout.waiters {
                let _ = waiter.send(Response::failed(error.clone()));
            }
            // A changed file that does not come up: the processes that serve keep serving,
            // and the unit keeps (and restarts with) the configuration they run.
            if let Some(previous) = rollout.revert_to {
                warn!("{name}: keeping its previous configuration");
                rt.set_unit(*previous);
                rt.config_error = Some(format!(
                    "the changed unit file did not start ({error}); running the previous configuration"
                ));
            }
        }
        // Any standby of a reload becomes current again.
        for slot in &mut rt.slots {
            if let Some((old, Handover::Reload)) = slot.standby {
                if slot.current.is_none() {
                    slot.current = Some(old);
                    slot.standby = None;
                }
            }
        }
    }
}

/// What [`Supervisor::reload_on_own_initiative`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum OwnReload {
    Started,
    /// A reload is already under way.
    Busy,
    /// The unit is gone, stopped, gave up, or clusterd is shutting down.
    NotRunning,
}
