//! Applying a re-read units directory (SIGHUP or `clusterctl daemon-reload`): new units start,
//! removed units stop, changed units restart with their new configuration, unchanged units are
//! not touched, and a file that no longer parses leaves its running unit alone.

use std::collections::BTreeSet;
use std::time::Instant;

use log::{error, info, warn};

use super::unit_runtime::{AfterStop, UnitRuntime};
use super::Supervisor;
use crate::protocol::Response;
use crate::supervisor::process_control::ProcessControl;
use crate::unit::{LoadedFile, Unit};

impl<P: ProcessControl> Supervisor<P> {
    /// A re-read units directory (SIGHUP when `reply` is `None`, else `clusterctl
    /// daemon-reload`): applied, unless clusterd is shutting down — starting units now would
    /// keep the shutdown from ever finishing.
    pub(super) fn on_reload(
        &mut self,
        files: Result<Vec<LoadedFile>, String>,
        reply: Option<crossbeam_channel::Sender<Response>>,
        now: Instant,
    ) {
        let response = if self.shutting_down {
            info!("daemon-reload during shutdown: ignored");
            Response::failed("clusterd is shutting down")
        } else {
            match files {
                Ok(files) => self.apply_units(files, now),
                Err(e) => {
                    let error = format!("{e}; nothing was changed");
                    error!("{error}");
                    Response::failed(error)
                }
            }
        };
        match reply {
            Some(reply) => {
                let _ = reply.send(response);
            }
            None => {
                if let Some(error) = response.error {
                    warn!("daemon-reload: {error}");
                }
            }
        }
    }

    /// Applies freshly loaded unit files to the running state.
    pub(crate) fn apply_units(&mut self, files: Vec<LoadedFile>, now: Instant) -> Response {
        let mut report = ReloadReport::default();
        let seen: BTreeSet<String> = files.iter().map(|f| f.name.clone()).collect();
        for file in files {
            let name = file.name;
            match (self.units.contains_key(&name), file.result) {
                (true, Ok(unit)) => {
                    self.apply_changed_file(&name, unit, &mut report, now);
                    // The schedule and the watched paths may have changed (or gone).
                    self.follow_configuration(&name, now);
                }
                (true, Err(e)) => {
                    error!("{e} (unit {name} keeps running with its previous configuration)");
                    if let Some(rt) = self.units.get_mut(&name) {
                        rt.config_error = Some(e.to_string());
                    }
                    report.errors.push(e.to_string());
                }
                (false, Ok(unit)) => {
                    self.invalid.remove(&name);
                    info!("{name}: new unit");
                    self.units.insert(name.clone(), UnitRuntime::new(unit));
                    self.start_loaded(&name, now);
                    // Its sockets could not be bound, say: it did not start.
                    match self.units.get(&name).and_then(|rt| rt.phase.gave_up()) {
                        Some(reason) if reason.starts_with(&format!("{name}:")) => {
                            report.not_started.push(reason.to_string());
                        }
                        Some(reason) => report.not_started.push(format!("{name}: {reason}")),
                        None => report.added.push(name),
                    }
                }
                (false, Err(e)) => {
                    error!("{e}");
                    report.errors.push(e.to_string());
                    self.invalid.insert(name, e);
                }
            }
        }
        // A new unit whose program cannot be executed: the answer says so (it is retried).
        // The new units' children exec side by side; their failures are in once all have.
        self.settle_execs(now);
        for name in &report.added {
            if let Some(e) = self
                .units
                .get(name)
                .and_then(|rt| rt.cannot_execute.clone())
            {
                report.cannot_start.push(format!("{name}: {e}"));
            }
        }
        let removed: Vec<String> = self
            .units
            .keys()
            .filter(|name| !seen.contains(*name))
            .cloned()
            .collect();
        for name in removed {
            info!("{name}: its file is gone; stopping and removing it");
            if let Some(rt) = self.units.get_mut(&name) {
                rt.after_stop = AfterStop::Remove;
            }
            self.follow_configuration(&name, now);
            self.stop_unit(&name, now);
            report.removed.push(name);
        }
        self.invalid.retain(|name, _| seen.contains(name));
        report.response()
    }

    /// A unit that runs (or is stopped, or on its way out) has a file that parses: carry out
    /// what [`decide`] says.
    fn apply_changed_file(
        &mut self,
        name: &str,
        unit: Unit,
        report: &mut ReloadReport,
        now: Instant,
    ) {
        let Some(rt) = self.units.get_mut(name) else {
            return;
        };
        rt.config_error = None;
        match decide(rt, &unit) {
            Change::None => report.unchanged += 1,
            Change::StartAgainAfterRemoval => {
                rt.after_stop = AfterStop::Start(Some(Box::new(unit)));
                report.restarted.push(name.to_string());
            }
            Change::ReplacePendingRestart => {
                rt.after_stop = AfterStop::Start(Some(Box::new(unit)));
                report.restarted.push(name.to_string());
            }
            Change::Scale => {
                let (old, count) = (rt.wanted, unit.instances);
                rt.unit.instances = count;
                match self.scale_to(name, count, now) {
                    Ok(_) => report.scaled.push(format!("{name} ({old} → {count})")),
                    Err(e) => report.errors.push(e),
                }
            }
            Change::Roll => {
                // Same sockets, same count: replace the instances one by one with the new
                // configuration, without a gap; back to the old one if it fails.
                info!("{name}: configuration changed; replacing its instances one by one");
                let previous = Box::new(rt.unit.clone());
                rt.set_unit(unit);
                self.begin_rollout(name, None, Some(previous), now);
                report.reloaded.push(name.to_string());
            }
            Change::Restart => {
                info!("{name}: configuration changed; restarting");
                self.restart_unit(name, Some(unit), now);
                report.restarted.push(name.to_string());
            }
            Change::NextStart => {
                // Waiting, done or in the middle of a one-shot's run: the new file is for
                // its next start (a run is never cut short by a reload); a new `after` may
                // release it now.
                rt.set_unit(unit);
                report.reloaded.push(name.to_string());
                self.start_if_released(name, now);
            }
            Change::ReplaceStopped => {
                // Stopped by hand: takes the new configuration, stays stopped.
                rt.set_unit(unit);
                rt.slots.clear();
                self.os.close_sockets(name);
                report.restarted.push(name.to_string());
            }
        }
    }
}

impl<P: ProcessControl> Supervisor<P> {
    /// `clusterctl reload NAME` replaces the processes with the configuration clusterd has;
    /// when the unit's file on disk says something else, that would silently run the old one.
    /// The reason to refuse (the file changed, or no longer loads), or `None` when the file
    /// is what a daemon-reload would leave unchanged (or the unit is unknown: the request
    /// itself says so).
    pub(crate) fn changed_on_disk(&self, file: &LoadedFile) -> Option<String> {
        let rt = self.units.get(&file.name)?;
        let name = &file.name;
        let what = match &file.result {
            Ok(unit) if decide(rt, unit) == Change::None => return None,
            Ok(_) => "changed on disk since clusterd loaded it".to_string(),
            Err(e) => format!("changed on disk and no longer loads ({e})"),
        };
        Some(format!(
            "{name}: {} {what}; `reload` replaces the processes with the configuration clusterd \
             has, so nothing was done: run `clusterctl daemon-reload` to apply the file (it \
             replaces {name}'s instances one by one where it can), or undo the edit",
            file.path.display()
        ))
    }
}

/// What a daemon-reload does to a unit whose file still parses.
#[derive(Debug, PartialEq, Eq)]
enum Change {
    /// Same configuration (or the same one a pending restart will start with).
    None,
    /// It was being removed and its file is back: start it again once it has stopped.
    StartAgainAfterRemoval,
    /// A restart is under way (its old processes are still stopping): it must start with
    /// this file, not with the configuration it was going to use, which an earlier
    /// daemon-reload may have queued.
    ReplacePendingRestart,
    /// Only `instances` changed: scale.
    Scale,
    /// Running, and the change can be rolled out one instance at a time.
    Roll,
    /// Running, and the change needs every instance stopped first.
    Restart,
    /// Stopped by hand: take the configuration, stay stopped.
    ReplaceStopped,
    /// Held back (waiting, scheduled, done), or a one-shot running, with the same kind:
    /// take the configuration for its next start.
    NextStart,
}

/// Decides, without changing anything, what applying `unit` to `rt` takes.
fn decide(rt: &UnitRuntime, unit: &Unit) -> Change {
    match &rt.after_stop {
        AfterStop::Remove => return Change::StartAgainAfterRemoval,
        // Compared with what the restart will start, not with `rt.unit`, which it replaces.
        AfterStop::Start(pending) => {
            return if pending.as_deref().unwrap_or(&rt.unit) == unit {
                Change::None
            } else {
                Change::ReplacePendingRestart
            };
        }
        AfterStop::Nothing => {}
    }
    if &rt.unit == unit {
        Change::None
    } else if rt.unit.job.kind == unit.job.kind
        && (rt.phase.holds_back() || (rt.phase.is_active() && unit.job.is_oneshot()))
    {
        Change::NextStart
    } else if rt.unit.differs_only_in_instances(unit) && rt.rollout.is_none() {
        Change::Scale
    } else if rt.phase.is_active() && can_roll(rt, unit) {
        Change::Roll
    } else if rt.phase.is_active() {
        Change::Restart
    } else {
        Change::ReplaceStopped
    }
}

/// What a daemon-reload did, for its answer and the log.
#[derive(Default)]
struct ReloadReport {
    added: Vec<String>,
    reloaded: Vec<String>,
    restarted: Vec<String>,
    scaled: Vec<String>,
    removed: Vec<String>,
    unchanged: usize,
    errors: Vec<String>,
    /// Started units whose program cannot be executed, with the cause.
    cannot_start: Vec<String>,
    /// New units that failed at once (`name: why`).
    not_started: Vec<String>,
}

impl ReloadReport {
    fn response(&self) -> Response {
        let mut summary = vec![];
        for (verb, names) in [
            ("started", &self.added),
            ("reloaded", &self.reloaded),
            ("restarted", &self.restarted),
            ("scaled", &self.scaled),
            ("removed", &self.removed),
        ] {
            if !names.is_empty() {
                summary.push(format!("{verb} {}", names.join(", ")));
            }
        }
        summary.push(format!("{} unchanged", self.unchanged));
        let summary = summary.join("; ");
        info!("daemon-reload: {summary}");
        let mut problems = String::new();
        for (what, lines) in [
            ("unit(s) failed to start", &self.not_started),
            ("file(s) could not be applied", &self.errors),
            (
                "unit(s) cannot start their program (retried on a backoff)",
                &self.cannot_start,
            ),
        ] {
            if !lines.is_empty() {
                problems += &format!("\n{} {what}:\n{}", lines.len(), lines.join("\n"));
            }
        }
        if problems.is_empty() {
            Response::done(summary)
        } else {
            Response::failed(format!("{summary}{problems}"))
        }
    }
}

/// A changed unit can take its new configuration by a rolling reload when everything the
/// instances share stays as it is: the listening sockets, how they are shared, the Node
/// cluster mode, the number of instances and its type. Otherwise it is restarted: a service
/// that becomes a one-shot (or the reverse) ends what it was doing, and the new kind starts
/// from its beginning — a one-shot's run then begins, and is counted, with its first process.
fn can_roll(rt: &UnitRuntime, new: &Unit) -> bool {
    let old = &rt.unit;
    rt.phase.gave_up().is_none()
        && rt.rollout.is_none()
        && matches!(rt.after_stop, AfterStop::Nothing)
        && old.listen == new.listen
        && old.balance == new.balance
        && old.listen_options == new.listen_options
        && old.node_cluster == new.node_cluster
        && old.instances == new.instances
        && old.job.kind == new.job.kind
}
