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
        let mut added = Vec::new();
        let mut changed = Vec::new();
        let mut reloaded = Vec::new();
        let mut scaled = Vec::new();
        let mut unchanged = 0;
        let mut errors = Vec::new();
        let seen: BTreeSet<String> = files.iter().map(|f| f.name.clone()).collect();

        for file in files {
            let name = file.name;
            match (self.units.contains_key(&name), file.result) {
                (true, Ok(unit)) => {
                    let Some(rt) = self.units.get_mut(&name) else {
                        continue;
                    };
                    rt.config_error = None;
                    if matches!(rt.after_stop, AfterStop::Remove) {
                        // It was being removed and is back: start it again once stopped.
                        rt.after_stop = AfterStop::Start(Some(Box::new(unit)));
                        changed.push(name);
                    } else if let AfterStop::Start(pending) = &mut rt.after_stop {
                        // A restart is under way (its old processes are still stopping): it
                        // must start with this file, not with the configuration it was going to
                        // use, which an earlier daemon-reload may have queued. Comparing with
                        // `rt.unit` or replacing it here would be undone when that restart
                        // applies its pending configuration.
                        if pending.as_deref().unwrap_or(&rt.unit) == &unit {
                            unchanged += 1;
                        } else {
                            *pending = Some(Box::new(unit));
                            changed.push(name);
                        }
                    } else if rt.unit == unit {
                        unchanged += 1;
                    } else if rt.unit.differs_only_in_instances(&unit) && rt.rollout.is_none() {
                        let count = unit.instances;
                        rt.unit.instances = count;
                        scaled.push(format!("{name} ({} → {count})", rt.wanted));
                        let (reply, _ignored) = crossbeam_channel::unbounded();
                        self.on_request(
                            crate::protocol::Request::Scale {
                                unit: name.clone(),
                                count: crate::protocol::ScaleCount::To(count),
                            },
                            reply,
                            now,
                        );
                    } else if rt.active && can_roll(rt, &unit) {
                        // Same sockets, same count: replace the instances one by one with the
                        // new configuration, without a gap; back to the old one if it fails.
                        info!("{name}: configuration changed; replacing its instances one by one");
                        let previous = Box::new(rt.unit.clone());
                        rt.set_unit(unit);
                        let (reply, _ignored) = crossbeam_channel::unbounded();
                        self.begin_rollout(&name, reply, Some(previous), now);
                        reloaded.push(name);
                    } else if rt.active {
                        info!("{name}: configuration changed; restarting");
                        let (reply, _ignored) = crossbeam_channel::unbounded();
                        self.request_restart(&name, Some(unit), reply, now);
                        changed.push(name);
                    } else {
                        // Stopped by hand: takes the new configuration, stays stopped.
                        self.os.close_sockets(&name);
                        rt.set_unit(unit);
                        rt.slots.clear();
                        changed.push(name);
                    }
                }
                (true, Err(e)) => {
                    error!("{e} (unit {name} keeps running with its previous configuration)");
                    if let Some(rt) = self.units.get_mut(&name) {
                        rt.config_error = Some(e.to_string());
                    }
                    errors.push(e.to_string());
                }
                (false, Ok(unit)) => {
                    self.invalid.remove(&name);
                    info!("{name}: new unit");
                    self.units.insert(name.clone(), UnitRuntime::new(unit));
                    self.start_unit(&name, now);
                    added.push(name);
                }
                (false, Err(e)) => {
                    error!("{e}");
                    errors.push(e.to_string());
                    self.invalid.insert(name, e);
                }
            }
        }

        let removed: Vec<String> = self
            .units
            .keys()
            .filter(|name| !seen.contains(*name))
            .cloned()
            .collect();
        for name in &removed {
            info!("{name}: its file is gone; stopping and removing it");
            if let Some(rt) = self.units.get_mut(name) {
                rt.after_stop = AfterStop::Remove;
            }
            self.stop_unit(name, now);
        }
        self.invalid.retain(|name, _| seen.contains(name));

        let mut summary = vec![];
        let list = |names: &[String]| names.join(", ");
        if !added.is_empty() {
            summary.push(format!("started {}", list(&added)));
        }
        if !reloaded.is_empty() {
            summary.push(format!("reloaded {}", list(&reloaded)));
        }
        if !changed.is_empty() {
            summary.push(format!("restarted {}", list(&changed)));
        }
        if !scaled.is_empty() {
            summary.push(format!("scaled {}", list(&scaled)));
        }
        if !removed.is_empty() {
            summary.push(format!("removed {}", list(&removed)));
        }
        summary.push(format!("{unchanged} unchanged"));
        let summary = summary.join("; ");
        info!("daemon-reload: {summary}");
        if errors.is_empty() {
            Response::done(summary)
        } else {
            Response::failed(format!(
                "{summary}\n{} file(s) could not be applied:\n{}",
                errors.len(),
                errors.join("\n")
            ))
        }
    }
}

/// A changed unit can take its new configuration by a rolling reload when everything the
/// instances share stays as it is: the listening sockets, how they are shared, the Node
/// cluster mode and the number of instances. Otherwise it is restarted.
fn can_roll(rt: &UnitRuntime, new: &Unit) -> bool {
    let old = &rt.unit;
    rt.gave_up.is_none()
        && rt.rollout.is_none()
        && matches!(rt.after_stop, AfterStop::Nothing)
        && old.listen == new.listen
        && old.balance == new.balance
        && old.node_cluster == new.node_cluster
        && old.instances == new.instances
}
