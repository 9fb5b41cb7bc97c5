//! One-shot units (`type = "oneshot"`) and their schedules. A one-shot's *run* starts when
//! the unit starts (start-up, `clusterctl start`, its schedule) and ends once none of its
//! processes is left: `done` if every instance exited successfully (0 or a code of
//! `success_exit_codes`), else `failed`. A failed instance is restarted as `restart` says,
//! within `restart_limit`, as a service's crash; with no restart left the run fails with the
//! reason and `on_giveup` runs, as a give-up.
//!
//! A schedule is one timer per unit, `Timer::Schedule`, armed for the next due time and kept
//! for it: a daemon-reload that leaves the schedule as it was keeps the timer (so it never
//! skips a run), as `cron_restart` does. A due time while a run is still going (or still
//! waiting for its `after`) is skipped and logged, never overlapped; a manual start runs the
//! job now and leaves the schedule where it was.

use std::time::{Duration, Instant};

use log::{info, warn};

use super::cron_restart::followed_unit;
use super::phase::{UnitPhase, UnitStep};
use super::process::Process;
use super::timers::Timer;
use super::{Supervisor, UnitEvent};
use crate::protocol::{JobStatus, RunStatus};
use crate::supervisor::process_control::{ExitStatus, ProcessControl};
use crate::unit::cron::LocalTime;
use crate::unit::job::Schedule;
use crate::unit::RestartPolicy;

/// What the supervisor knows of a unit's runs (one-shots only; empty for a service).
#[derive(Debug, Default)]
pub(super) struct JobRuntime {
    /// The run going on, or the last one.
    pub run: Option<Run>,
    /// Runs started since clusterd started.
    pub runs: u64,
    /// Runs that failed.
    pub failures: u64,
    /// Due times skipped because a run was still going.
    pub skipped: u64,
    /// Of those, skipped during the run going on: only the first is logged (a job due
    /// every second that never ends must not write a line a second), the count comes with
    /// the run's end.
    pub skipped_this_run: u64,
    /// When the last successful run ended.
    pub last_success: Option<Instant>,
    /// The armed schedule.
    pub next: Option<NextRun>,
}

#[derive(Debug, Clone)]
pub(super) struct Run {
    pub started: Instant,
    /// When it ended, how, and whether it succeeded.
    pub ended: Option<(Instant, String, bool)>,
}

/// A unit's armed schedule: what it follows and when it is due next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct NextRun {
    schedule: Schedule,
    due: Due,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Due {
    /// `every`: at this instant.
    At(Instant),
    /// Cron: at this local minute.
    Minute(LocalTime),
}

/// A one-shot's runs as the `daemon-reexec` state writes them down: instants as "so long
/// ago", the next due time of an `every` schedule as "due in so long" (its schedule is the
/// unit's, re-parsed).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SavedJob {
    pub run: Option<SavedRun>,
    pub runs: u64,
    pub failures: u64,
    pub skipped: u64,
    pub skipped_this_run: u64,
    pub last_success_ago: Option<Duration>,
    pub next: Option<SavedDue>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SavedRun {
    pub started_ago: Duration,
    /// How long ago it ended, how, and whether it succeeded.
    pub ended: Option<(Duration, String, bool)>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum SavedDue {
    /// `every`: due this long after the snapshot.
    In(Duration),
    /// Cron: this local minute.
    Minute(LocalTime),
}

impl JobRuntime {
    pub(super) fn save(&self, now: Instant) -> SavedJob {
        let ago = |at: Instant| now.saturating_duration_since(at);
        SavedJob {
            run: self.run.as_ref().map(|run| SavedRun {
                started_ago: ago(run.started),
                ended: (run.ended.as_ref()).map(|(at, text, ok)| (ago(*at), text.clone(), *ok)),
            }),
            runs: self.runs,
            failures: self.failures,
            skipped: self.skipped,
            skipped_this_run: self.skipped_this_run,
            last_success_ago: self.last_success.map(ago),
            next: self.next.as_ref().map(|next| match next.due {
                Due::At(at) => SavedDue::In(at.saturating_duration_since(now)),
                Due::Minute(minute) => SavedDue::Minute(minute),
            }),
        }
    }

    /// The new image's side: `schedule` is the unit's (none: nothing is armed).
    pub(super) fn restore(saved: SavedJob, schedule: Option<Schedule>, now: Instant) -> Self {
        let before = |ago: Duration| now.checked_sub(ago).unwrap_or(now);
        let next = schedule.zip(saved.next).map(|(schedule, due)| NextRun {
            schedule,
            due: match due {
                SavedDue::In(left) => Due::At(now.checked_add(left).unwrap_or(now)),
                SavedDue::Minute(minute) => Due::Minute(minute),
            },
        });
        JobRuntime {
            run: saved.run.map(|run| Run {
                started: before(run.started_ago),
                ended: run.ended.map(|(ago, text, ok)| (before(ago), text, ok)),
            }),
            runs: saved.runs,
            failures: saved.failures,
            skipped: saved.skipped,
            skipped_this_run: saved.skipped_this_run,
            last_success: saved.last_success_ago.map(before),
            next,
        }
    }
}

impl<P: ProcessControl> Supervisor<P> {
    /// A unit just loaded (at start-up or by a daemon-reload): a scheduled one-shot waits for
    /// its schedule; anything else starts.
    pub(super) fn start_loaded(&mut self, name: &str, now: Instant) {
        let scheduled = self
            .units
            .get(name)
            .is_some_and(|rt| rt.unit.job.schedule.is_some());
        if !scheduled {
            return self.start_unit(name, now);
        }
        self.set_unit_phase(name, UnitStep::Schedule);
        self.follow_configuration(name, now);
        self.settle(name, now);
    }

    /// A start of a one-shot with nothing of it running begins a new run: every index is
    /// to run again, and the run is logged.
    pub(super) fn begin_run(&mut self, name: &str, now: Instant) {
        let alive = self.alive_count(name);
        let Some(rt) = self.units.get_mut(name) else {
            return;
        };
        if !rt.unit.job.is_oneshot() || alive > 0 {
            return;
        }
        for slot in &mut rt.slots {
            slot.finished = false;
        }
        rt.job.skipped_this_run = 0;
        rt.job.runs += 1;
        rt.job.run = Some(Run {
            started: now,
            ended: None,
        });
        info!("{name}: run started");
        self.unit_events
            .push(UnitEvent::note(name, None, "run started"));
    }

    /// An instance of a one-shot exited on its own (not stopped): success finishes its
    /// index; a failure is restarted as `restart` says, or fails the run.
    pub(super) fn job_instance_exited(
        &mut self,
        process: &Process,
        status: ExitStatus,
        now: Instant,
    ) {
        let name = process.unit.as_str();
        let Some(rt) = self.units.get_mut(name) else {
            return;
        };
        let succeeded =
            matches!(status, ExitStatus::Code(code) if rt.unit.job.succeeded_with(code));
        if succeeded {
            rt.slot_mut(process.index).finished = true;
            return;
        }
        if rt.unit.restart == RestartPolicy::Never {
            let reason = format!("run failed: instance {} {status}", process.index);
            self.fail_unit(name, reason, 0, now);
            return;
        }
        self.restart_after_exit(process, now);
    }

    /// After any change of a one-shot: once nothing of it runs, its run is over — `done` if
    /// every wanted index finished, failed otherwise (given up, or an index that could not
    /// start and will not be retried).
    pub(super) fn end_run_if_over(&mut self, name: &str, now: Instant) {
        let alive = self.alive_count(name);
        let retrying = self.timers.is_armed(&Timer::RetryStarts(name.to_string()));
        let Some(rt) = self.units.get_mut(name) else {
            return;
        };
        if !rt.unit.job.is_oneshot() || alive > 0 || retrying {
            return;
        }
        let Some(started) = rt
            .job
            .run
            .as_ref()
            .filter(|run| run.ended.is_none())
            .map(|run| run.started)
        else {
            return;
        };
        let took = humantime::format_duration(round_to_ms(now.saturating_duration_since(started)));
        let pending_restart = rt.slots.iter().any(|s| s.restart_at.is_some());
        let all_finished = (0..rt.wanted).all(|i| {
            rt.slots
                .get(i as usize)
                .is_some_and(|s| s.finished && s.current.is_none())
        });
        let last_exit = rt
            .slots
            .iter()
            .rev()
            .find_map(|s| s.last_exit.clone())
            .unwrap_or_else(|| "ended".to_string());
        let (text, ok) = match &rt.phase {
            UnitPhase::Active if pending_restart => return,
            UnitPhase::Active if all_finished => {
                (format!("run done: {last_exit}, after {took}"), true)
            }
            UnitPhase::Active => {
                // An index that cannot start and is not retried (restart = "never"): the
                // run cannot succeed.
                let reason = rt
                    .slots
                    .iter()
                    .enumerate()
                    .find(|(_, s)| !s.finished)
                    .and_then(|(i, s)| s.last_exit.as_ref().map(|e| format!("instance {i} {e}")))
                    .unwrap_or_else(|| "an instance did not run".to_string());
                self.fail_unit(name, format!("run failed: {reason}"), 0, now);
                return self.end_run_if_over(name, now);
            }
            UnitPhase::GaveUp { reason, .. } => (format!("{reason}, after {took}"), false),
            // Stopped by hand (or on the way out): the run ends unfinished.
            _ => (format!("run stopped after {took}"), false),
        };
        let text = match rt.job.skipped_this_run {
            0 => text,
            n => format!("{text}; {n} scheduled time(s) skipped during it"),
        };
        if let Some(run) = rt.job.run.as_mut() {
            run.ended = Some((now, text.clone(), ok));
        }
        if ok {
            rt.job.last_success = Some(now);
        } else if rt.phase.gave_up().is_some() {
            // A run stopped by hand did not fail.
            rt.job.failures += 1;
        }
        if ok {
            info!("{name}: {text}");
            self.set_unit_phase(name, UnitStep::Finish);
        } else {
            warn!("{name}: {text}");
        }
        self.unit_events.push(UnitEvent::note(name, None, text));
    }

    /// Arms the unit's schedule if it is new or changed; leaves an armed timer of the same
    /// schedule alone; removes it from a unit that has none any more.
    pub(super) fn arm_schedule(&mut self, name: &str, now: Instant) {
        let timer = Timer::Schedule(name.to_string());
        let schedule = followed_unit(&self.units, name).and_then(|u| u.job.schedule.clone());
        let armed = self.timers.is_armed(&timer);
        let local = self.os.local_time();
        let Some(rt) = self.units.get_mut(name) else {
            self.timers.cancel(timer);
            return;
        };
        let Some(schedule) = schedule else {
            rt.job.next = None;
            self.timers.cancel(timer);
            return;
        };
        match rt.job.next.as_mut() {
            Some(next) if armed && next.schedule == schedule => return,
            // A new schedule while the old one's time has come and its timer not fired yet:
            // that run still happens, and the new schedule follows it.
            Some(next) if armed && has_come(next.due, now, local) => {
                next.schedule = schedule;
                return;
            }
            _ => {}
        }
        self.arm_next(name, schedule, None, now);
    }

    /// Arms the timer for the first due time of `schedule` after `previous` (or after now).
    fn arm_next(&mut self, name: &str, schedule: Schedule, previous: Option<Due>, now: Instant) {
        let timer = Timer::Schedule(name.to_string());
        self.timers.cancel(timer.clone());
        let local = self.os.local_time();
        let (due, delay) = match &schedule {
            Schedule::Every(every) => {
                // `every` is at most 10 years, but no deadline computation may panic.
                let after = |t: Instant| t.checked_add(*every).unwrap_or(t);
                let mut at = match previous {
                    Some(Due::At(at)) => after(at),
                    _ => after(now),
                };
                // Late (clusterd was busy, or suspended): the next one from now, once, never
                // a burst of runs to catch up.
                if at <= now {
                    at = after(now);
                }
                (Due::At(at), at.saturating_duration_since(now))
            }
            Schedule::Cron(cron) => {
                let after = match previous {
                    Some(Due::Minute(minute)) => local.max(minute),
                    _ => local,
                };
                let Some(at) = cron.next_after(after) else {
                    warn!("{name}: schedule \"{cron}\" never comes; no scheduled run");
                    if let Some(rt) = self.units.get_mut(name) {
                        rt.job.next = None;
                    }
                    return;
                };
                (Due::Minute(at), self.os.until_local(at))
            }
        };
        self.timers.add_after(now, delay, timer);
        if let Some(rt) = self.units.get_mut(name) {
            rt.job.next = Some(NextRun { schedule, due });
        }
    }

    /// `Timer::Schedule` fired: if the time has come, run the job (unless it was stopped by
    /// hand, or its last run is still going: then this one is skipped), then arm the next
    /// one after this one — never the same one again.
    pub(super) fn scheduled_run(&mut self, name: &str, now: Instant) {
        let Some(next) = self.units.get(name).and_then(|rt| rt.job.next.clone()) else {
            return;
        };
        if self.shutting_down {
            return;
        }
        let local = self.os.local_time();
        if !has_come(next.due, now, local) {
            // The clock went back: wait for the minute again, at least a second from now.
            if let Due::Minute(at) = next.due {
                let delay = self
                    .os
                    .until_local(at)
                    .max(local.duration_until(at))
                    .max(Duration::from_secs(1));
                self.timers
                    .add_after(now, delay, Timer::Schedule(name.to_string()));
            }
            return;
        }
        self.arm_next(name, next.schedule.clone(), Some(next.due), now);
        let alive = self.alive_count(name);
        let Some(rt) = self.units.get_mut(name) else {
            return;
        };
        if !rt.phase.is_active() {
            info!("{name}: schedule due, but the unit is stopped: not run");
            return;
        }
        if alive > 0 || rt.phase == UnitPhase::Waiting {
            rt.job.skipped += 1;
            rt.job.skipped_this_run += 1;
            if rt.job.skipped_this_run > 1 {
                return;
            }
            let why = if alive > 0 {
                let since = rt.job.run.as_ref().map_or(Duration::ZERO, |r| {
                    round_to_ms(now.saturating_duration_since(r.started))
                });
                format!(
                    "its run started {} ago is still going",
                    humantime::format_duration(since)
                )
            } else {
                "its last start still waits for its after".to_string()
            };
            let text = format!("scheduled run skipped: {why} (runs never overlap; the next skips of this run are only counted)");
            warn!("{name}: {text}");
            self.unit_events.push(UnitEvent::note(name, None, text));
            return;
        }
        info!("{name}: scheduled run ({})", next.schedule);
        self.start_unit(name, now);
    }

    /// What status shows of a one-shot's runs and schedule.
    pub(super) fn job_status(&self, name: &str, now: Instant) -> Option<JobStatus> {
        let rt = self.units.get(name)?;
        if !rt.unit.job.is_oneshot() {
            return None;
        }
        let ms = |d: Duration| d.as_millis().min(u128::from(u64::MAX)) as u64;
        let last_run = rt.job.run.as_ref().map(|run| RunStatus {
            started_ago_ms: ms(now.saturating_duration_since(run.started)),
            duration_ms: run
                .ended
                .as_ref()
                .map(|(end, _, _)| ms(end.saturating_duration_since(run.started))),
            result: run.ended.as_ref().map(|(_, text, _)| text.clone()),
            ok: run.ended.as_ref().map(|(_, _, ok)| *ok),
        });
        let next_run_in_ms = rt.job.next.as_ref().map(|next| match next.due {
            Due::At(at) => ms(at.saturating_duration_since(now)),
            Due::Minute(at) => ms(self.os.until_local(at)),
        });
        Some(JobStatus {
            runs: rt.job.runs,
            failures: rt.job.failures,
            skipped: rt.job.skipped,
            last_run,
            last_success_ago_ms: rt
                .job
                .last_success
                .map(|at| ms(now.saturating_duration_since(at))),
            schedule: rt.unit.job.schedule.as_ref().map(ToString::to_string),
            next_run_in_ms,
        })
    }
}

/// The due time has come.
fn has_come(due: Due, now: Instant, local: LocalTime) -> bool {
    match due {
        Due::At(at) => at <= now,
        Due::Minute(at) => at <= local.minute(),
    }
}

fn round_to_ms(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis().min(u128::from(u64::MAX)) as u64)
}
