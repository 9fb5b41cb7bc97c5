//! `Liveness`: when the I/O thread checks that each `node_cluster` worker's event loop still
//! answers (units with `watchdog`). Every worker is checked every third of its unit's
//! `watchdog`; the checks of all workers due about then are sent together, so that the
//! thread wakes up once per round rather than once per worker. The check itself is the
//! outbox's ([`super::outbox::Outbox::queue_ping`]); its answer is a `WorkerMessage::Watchdog`
//! for the supervisor, which owns the deadline.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::supervisor::process_control::SpawnId;

/// How many checks a worker gets per `watchdog`.
const CHECKS_PER_WATCHDOG: u32 = 3;

#[derive(Default)]
pub(crate) struct Liveness {
    /// Checked workers: how often, and when next.
    workers: HashMap<SpawnId, (Duration, Instant)>,
}

impl Liveness {
    /// Worker `id` of a unit with `watchdog` is checked from now on.
    pub(crate) fn add(&mut self, id: SpawnId, watchdog: Duration, now: Instant) {
        let every = (watchdog / CHECKS_PER_WATCHDOG).max(Duration::from_millis(10));
        self.workers.insert(id, (every, now + every));
    }

    pub(crate) fn remove(&mut self, id: SpawnId) {
        self.workers.remove(&id);
    }

    /// When the next round is due; `None` when no worker is checked (no wake-up at all).
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.workers.values().map(|&(_, next)| next).min()
    }

    /// The workers to check now: those due, and those due within a quarter of their period
    /// (checked a little early rather than waking up again for them). Each is rescheduled.
    pub(crate) fn due(&mut self, now: Instant) -> Vec<SpawnId> {
        if self.next_deadline().is_none_or(|at| at > now) {
            return Vec::new();
        }
        let mut due = Vec::new();
        for (id, (every, next)) in &mut self.workers {
            if *next <= now + *every / 4 {
                *next = now + *every;
                due.push(*id);
            }
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_due_about_the_same_time_are_checked_in_one_round() {
        let t0 = Instant::now();
        let mut liveness = Liveness::default();
        liveness.add(1, Duration::from_secs(3), t0);
        liveness.add(2, Duration::from_secs(3), t0 + Duration::from_millis(100));
        assert_eq!(liveness.next_deadline(), Some(t0 + Duration::from_secs(1)));
        assert!(liveness.due(t0).is_empty());
        let mut due = liveness.due(t0 + Duration::from_secs(1));
        due.sort();
        assert_eq!(due, vec![1, 2]);
        liveness.remove(1);
        liveness.remove(2);
        assert_eq!(liveness.next_deadline(), None);
    }
}
