//! The clusterctl verbs as the supervisor carries them out. `stop`, `restart`, `reload` and
//! `scale` answer when the work is done (or has failed), like systemctl; the reply sender is
//! parked in the unit's waiters until then.

use std::time::Instant;

use crossbeam_channel::Sender;
use log::info;

use super::unit_runtime::AfterStop;
use super::waiters::WaitCondition;
use super::Supervisor;
use crate::protocol::{Request, Response, ScaleCount};
use crate::supervisor::process_control::{ProcessControl, SpawnId};
use crate::unit::MAX_INSTANCES;
use nix::unistd::Pid;

impl<P: ProcessControl> Supervisor<P> {
    pub(super) fn on_request(&mut self, request: Request, reply: Sender<Response>, now: Instant) {
        if self.shutting_down && !matches!(request, Request::Status { .. }) {
            let _ = reply.send(Response::failed("clusterd is shutting down"));
            return;
        }
        let unit_name = match &request {
            Request::Start { unit }
            | Request::Stop { unit }
            | Request::Restart { unit }
            | Request::Reload { unit }
            | Request::Scale { unit, .. }
            | Request::Kill { unit, .. }
            | Request::Send { unit, .. } => Some(unit.clone()),
            Request::Status { unit } => unit.clone(),
            Request::DaemonReload {}
            | Request::DaemonReexec {}
            | Request::Logs { .. }
            | Request::ReopenLogs {} => None,
        };
        // `status` shows an invalid unit (with its error); other verbs refuse it.
        let status_of_invalid = matches!(&request, Request::Status { unit: Some(name) } if self.invalid.contains_key(name));
        if let Some(name) = unit_name.as_ref().filter(|_| !status_of_invalid) {
            if let Err(error) = self.check_unit_exists(name) {
                let _ = reply.send(Response::failed(error));
                return;
            }
        }
        match request {
            Request::Status { unit } => {
                let _ = reply.send(Response::status(self.status(unit.as_deref(), now)));
            }
            Request::Start { unit } => self.request_start(&unit, reply, now),
            Request::Stop { unit } => self.request_stop(&unit, reply, now),
            Request::Restart { unit } => self.request_restart(&unit, reply, now),
            Request::Reload { unit } => self.request_reload(&unit, reply, now),
            Request::Scale { unit, count } => self.request_scale(&unit, count, reply, now),
            Request::Kill {
                unit,
                instance,
                signal,
                all,
            } => {
                let _ = reply.send(self.request_kill(&unit, instance, &signal, all));
            }
            Request::Send {
                unit,
                instance,
                message,
            } => {
                let _ = reply.send(self.request_send(&unit, instance, &message));
            }
            Request::DaemonReload {} => {
                // The daemon turns this request into Event::Reload, with the files read.
                let _ = reply.send(Response::failed(
                    "daemon-reload reached the supervisor unread",
                ));
            }
            Request::DaemonReexec {} => {
                // The daemon does the re-exec: the supervisor only writes its state down.
                let _ = reply.send(Response::failed(
                    "daemon-reexec reached the supervisor unread",
                ));
            }
            // The control server hands these to the log thread.
            Request::Logs { .. } | Request::ReopenLogs {} => {
                let _ = reply.send(Response::failed("log requests are the log thread's"));
            }
        }
    }

    /// The unit's running processes that `clusterctl kill` and `send` address: every one, or
    /// the one of `instance`; not those being replaced (draining) or stopped.
    fn addressed(
        &self,
        name: &str,
        instance: Option<u32>,
    ) -> Result<Vec<(SpawnId, Pid, u32)>, String> {
        let mut targets: Vec<(SpawnId, Pid, u32)> = self
            .processes_of(name)
            .filter(|p| !p.phase.is_leaving())
            .filter(|p| instance.is_none_or(|index| p.index == index))
            .map(|p| (p.id, p.pid, p.index))
            .collect();
        targets.sort_by_key(|&(_, _, index)| index);
        if targets.is_empty() {
            return Err(match instance {
                Some(index) => format!("{name}: instance {index} is not running"),
                None => format!("{name}: no instance is running"),
            });
        }
        Ok(targets)
    }

    /// `clusterctl kill`: a signal to instances, as the user asks; an exit it causes is an
    /// exit like any other (restarted as the unit's `restart` says).
    fn request_kill(
        &mut self,
        name: &str,
        instance: Option<u32>,
        signal: &str,
        all: bool,
    ) -> Response {
        use crate::protocol::signal::KillSignal;
        let signal = match signal.parse::<KillSignal>() {
            Ok(signal) => signal,
            Err(e) => return Response::failed(e),
        };
        let targets = match self.addressed(name, instance) {
            Ok(targets) => targets,
            Err(e) => return Response::failed(e),
        };
        for &(id, pid, _) in &targets {
            match (signal, all) {
                (KillSignal::Named(signal), true) => self.os.signal_instance(id, pid, signal),
                (KillSignal::Named(signal), false) => self.os.signal_process(pid, signal),
                (KillSignal::Number(number), all) => self.os.signal_number(id, pid, number, all),
            }
        }
        let pids: Vec<String> = targets.iter().map(|(_, pid, _)| pid.to_string()).collect();
        info!(
            "{name}: {signal} sent to pid {} (clusterctl kill)",
            pids.join(", ")
        );
        Response::done(format!(
            "{name}: {signal} sent to {} instance(s) (pid {}){}",
            targets.len(),
            pids.join(", "),
            if all {
                " and every process of each"
            } else {
                ""
            }
        ))
    }

    /// `clusterctl send`: one JSON value on the worker channel of instances. An instance
    /// that leaves too much unread gets no more, and the reply says which.
    fn request_send(&mut self, name: &str, instance: Option<u32>, message: &str) -> Response {
        let line = match serde_json::from_str::<serde_json::Value>(message) {
            // As the user wrote it when it is one line; else written again, compactly.
            Ok(_) if !message.trim().contains(['\n', '\r']) => format!("{}\n", message.trim()),
            Ok(value) => format!("{value}\n"),
            Err(e) => return Response::failed(format!("the message is not JSON: {e}")),
        }
        .into_bytes();
        let targets = match self.addressed(name, instance) {
            Ok(targets) => targets,
            Err(e) => return Response::failed(e),
        };
        let mut refused = Vec::new();
        for &(id, _, index) in &targets {
            if let Err(why) = self.os.send_message(id, line.clone()) {
                refused.push(format!("{name}[{index}]: {why}"));
            }
        }
        if refused.is_empty() {
            return Response::done(format!(
                "{name}: message sent to {} instance(s)",
                targets.len()
            ));
        }
        // Not every instance got it: an error, saying which did not and why.
        Response::failed(format!(
            "{name}: message sent to {} of {} instance(s); not to {}",
            targets.len() - refused.len(),
            targets.len(),
            refused.join("; ")
        ))
    }

    fn check_unit_exists(&self, name: &str) -> Result<(), String> {
        if self.units.contains_key(name) {
            return Ok(());
        }
        match self.invalid.get(name) {
            Some(error) => Err(format!("unit {name} is invalid: {error}")),
            None => Err(format!("unknown unit {name:?}")),
        }
    }

    fn wait(
        &mut self,
        name: &str,
        until: WaitCondition,
        message: String,
        reply: Sender<Response>,
        now: Instant,
    ) {
        if let Some(rt) = self.units.get_mut(name) {
            rt.waiters.push(reply, until, message);
        }
        // A start's answer names why an instance could not start: its exec first.
        if until == WaitCondition::AllReady {
            self.settle_execs(now);
        }
        self.settle(name, now);
    }

    /// Starts a stopped unit, fills missing instances and clears a give-up. Answers once every
    /// instance is ready.
    fn request_start(&mut self, name: &str, reply: Sender<Response>, now: Instant) {
        let still_stopping = self.alive_count(name) > 0;
        let Some(rt) = self.units.get_mut(name) else {
            return;
        };
        // A one-shot's start answers when its run is over.
        let done = if rt.unit.job.is_oneshot() {
            format!("{name}: ran successfully")
        } else {
            format!("{name}: started")
        };
        if !rt.phase.is_active() && still_stopping {
            // Still stopping: start once it is down.
            rt.after_stop = AfterStop::Start(None);
        } else {
            info!("{name}: start requested");
            self.start_unit(name, now);
        }
        self.wait(name, WaitCondition::AllReady, done, reply, now);
    }

    /// Stops every instance; answers when all are gone.
    fn request_stop(&mut self, name: &str, reply: Sender<Response>, now: Instant) {
        info!("{name}: stop requested");
        if let Some(rt) = self.units.get_mut(name) {
            if matches!(rt.after_stop, AfterStop::Start(_)) {
                rt.after_stop = AfterStop::Nothing;
            }
        }
        self.stop_unit(name, now);
        self.wait(
            name,
            WaitCondition::AllGone,
            format!("{name}: stopped"),
            reply,
            now,
        );
    }

    /// Stops every instance, then starts them again (with `new_unit` if given). Clears a
    /// give-up. Answers once the new instances are ready.
    fn request_restart(&mut self, name: &str, reply: Sender<Response>, now: Instant) {
        info!("{name}: restart requested");
        self.restart_unit(name, None, now);
        self.wait(
            name,
            WaitCondition::AllReady,
            format!("{name}: restarted"),
            reply,
            now,
        );
    }

    fn request_reload(&mut self, name: &str, reply: Sender<Response>, now: Instant) {
        let Some(rt) = self.units.get(name) else {
            return;
        };
        if !rt.phase.is_active() {
            let _ = reply.send(Response::failed(format!(
                "{name} is not running; use `clusterctl start {name}`"
            )));
            return;
        }
        if let Some(reason) = rt.phase.gave_up() {
            let _ = reply.send(Response::failed(format!(
                "{name} {reason}; use `clusterctl restart {name}`"
            )));
            return;
        }
        if rt.unit.job.is_oneshot() {
            let _ = reply.send(Response::failed(format!(
                "{name} is a one-shot: it is not reloaded; `clusterctl start {name}` runs it again"
            )));
            return;
        }
        if rt.phase.holds_back() {
            let why = self.waiting_text(name);
            let _ = reply.send(Response::failed(format!(
                "{name} is {why}: nothing runs to reload"
            )));
            return;
        }
        self.begin_rollout(name, Some(reply), None, now);
    }

    fn request_scale(
        &mut self,
        name: &str,
        count: ScaleCount,
        reply: Sender<Response>,
        now: Instant,
    ) {
        let Some(rt) = self.units.get(name) else {
            return;
        };
        let (active, new) = (rt.phase.is_active(), count.apply(rt.wanted));
        match self.scale_to(name, new, now) {
            Err(error) => {
                let _ = reply.send(Response::failed(error));
            }
            Ok(message) if !active => {
                let _ = reply.send(Response::done(format!("{message} (the unit is stopped)")));
            }
            Ok(message) => self.wait(name, WaitCondition::AllReady, message, reply, now),
        }
    }

    /// Sets how many instances the unit runs: starts the new indexes, stops the ones above
    /// `new`. For `clusterctl scale` and for a daemon-reload that changes `instances` only.
    pub(super) fn scale_to(
        &mut self,
        name: &str,
        new: u32,
        now: Instant,
    ) -> Result<String, String> {
        let Some(rt) = self.units.get_mut(name) else {
            return Err(format!("unknown unit {name:?}"));
        };
        let old = rt.wanted;
        if new > MAX_INSTANCES {
            return Err(format!(
                "{name}: {new} instances is more than the limit of {MAX_INSTANCES}"
            ));
        }
        if rt.rollout.is_some() {
            return Err(format!(
                "{name}: a reload is in progress; scale when it is done"
            ));
        }
        rt.wanted = new;
        let message = format!("{name}: scaled from {old} to {new} instance(s)");
        info!("{message}");
        if !rt.phase.is_active() || rt.phase.holds_back() {
            return Ok(message);
        }
        if new > old {
            for index in old..new {
                let missing = self
                    .units
                    .get(name)
                    .and_then(|rt| rt.slots.get(index as usize))
                    .is_none_or(|s| s.current.is_none());
                if missing {
                    self.start_instance(name, index, now);
                }
            }
        } else {
            let above: Vec<SpawnId> = self
                .processes_of(name)
                .filter(|p| p.index >= new)
                .map(|p| p.id)
                .collect();
            for id in above {
                self.stop_process(id, now);
            }
            self.os.release_indexes_from(name, new);
            if let Some(rt) = self.units.get_mut(name) {
                rt.slots.truncate(new as usize);
            }
        }
        Ok(message)
    }
}
