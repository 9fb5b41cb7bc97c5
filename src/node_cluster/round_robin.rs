//! `RoundRobin`: which worker gets the next connection of a round-robin handle — Node's
//! `RoundRobinHandle` (`lib/internal/cluster/round_robin_handle.js`).
//!
//! A worker is *free* when it listens on the handle and has no hand-off in flight. The worker
//! that has been free longest gets the next connection; it is free again only after it
//! answered that hand-off (`{ack, accepted}`), so each worker has at most one in flight. A
//! connection a worker refused (`accepted: false`) or never answered (it died) goes back to
//! the front of the queue for the next free worker.
//!
//! New connections are accepted only while a worker is free: the rest wait in the kernel's
//! backlog, where they cost clusterd nothing.

use std::collections::VecDeque;
use std::os::fd::OwnedFd;

use crate::supervisor::process_control::SpawnId;

#[derive(Default)]
pub(crate) struct RoundRobin {
    /// Workers that listen on the handle (Node's `all`).
    members: Vec<SpawnId>,
    /// Free workers, longest-waiting first (Node's `free`).
    free: VecDeque<SpawnId>,
    /// Accepted connections waiting for a worker (refused or orphaned hand-offs).
    pending: VecDeque<OwnedFd>,
}

impl RoundRobin {
    #[cfg(test)]
    pub(crate) fn is_member(&self, id: SpawnId) -> bool {
        self.members.contains(&id)
    }

    pub(crate) fn has_members(&self) -> bool {
        !self.members.is_empty()
    }

    pub(crate) fn add_member(&mut self, id: SpawnId) {
        if !self.members.contains(&id) {
            self.members.push(id);
        }
    }

    /// The worker no longer listens on the handle (closed it, is leaving, or died).
    pub(crate) fn remove_member(&mut self, id: SpawnId) {
        self.members.retain(|&m| m != id);
        self.free.retain(|&m| m != id);
    }

    /// The worker can take a connection (just joined, or answered its hand-off).
    pub(crate) fn set_free(&mut self, id: SpawnId) {
        if self.members.contains(&id) && !self.free.contains(&id) {
            self.free.push_back(id);
        }
    }

    /// A connection to hand out again, before any new one.
    pub(crate) fn requeue(&mut self, connection: OwnedFd) {
        self.pending.push_front(connection);
    }

    /// The next hand-off: the longest-free worker and a connection (a requeued one, else one
    /// from `accept`). `None` when no worker is free or nothing is waiting.
    pub(crate) fn next(
        &mut self,
        accept: &mut dyn FnMut() -> Option<OwnedFd>,
    ) -> Option<(SpawnId, OwnedFd)> {
        let &worker = self.free.front()?;
        let connection = match self.pending.pop_front() {
            Some(c) => c,
            None => accept()?,
        };
        self.free.pop_front();
        Some((worker, connection))
    }

    /// Its members, free workers and waiting connections (by fd number), for
    /// `daemon-reexec`.
    pub(crate) fn held(&self) -> (Vec<SpawnId>, Vec<SpawnId>, Vec<i32>) {
        use std::os::fd::AsRawFd;
        (
            self.members.clone(),
            self.free.iter().copied().collect(),
            self.pending.iter().map(AsRawFd::as_raw_fd).collect(),
        )
    }

    /// The new image's side of [`RoundRobin::held`].
    pub(crate) fn restored(
        members: Vec<SpawnId>,
        free: Vec<SpawnId>,
        pending: Vec<OwnedFd>,
    ) -> RoundRobin {
        let free = free.into_iter().filter(|id| members.contains(id)).collect();
        RoundRobin {
            members,
            free,
            pending: pending.into(),
        }
    }

    /// Connections waiting for a worker.
    #[cfg(test)]
    pub(crate) fn pending_count(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connection() -> OwnedFd {
        std::fs::File::open("/dev/null").unwrap().into()
    }

    fn take(rr: &mut RoundRobin, available: &mut u32) -> Option<SpawnId> {
        let mut accept = || {
            (*available > 0).then(|| {
                *available -= 1;
                connection()
            })
        };
        rr.next(&mut accept).map(|(w, _)| w)
    }

    #[test]
    fn the_longest_waiting_worker_gets_the_next_connection() {
        let mut rr = RoundRobin::default();
        for id in [1, 2, 3] {
            rr.add_member(id);
            rr.set_free(id);
        }
        let mut available = 10;
        assert_eq!(take(&mut rr, &mut available), Some(1));
        assert_eq!(take(&mut rr, &mut available), Some(2));
        // Worker 1 answers before 3 got anything: 3 has waited longer.
        rr.set_free(1);
        assert_eq!(take(&mut rr, &mut available), Some(3));
        assert_eq!(take(&mut rr, &mut available), Some(1));
        // Nobody free: nothing is accepted.
        assert_eq!(take(&mut rr, &mut available), None);
        assert_eq!(available, 6);
    }

    #[test]
    fn refused_connections_go_first_and_leavers_get_nothing() {
        let mut rr = RoundRobin::default();
        rr.add_member(1);
        rr.add_member(2);
        rr.set_free(1);
        rr.set_free(2);
        rr.requeue(connection());
        let mut none = 0;
        assert_eq!(take(&mut rr, &mut none), Some(1));
        assert_eq!(take(&mut rr, &mut none), None, "nothing left to accept");
        rr.remove_member(2);
        rr.requeue(connection());
        assert_eq!(take(&mut rr, &mut none), None, "2 left, 1 is busy");
        assert_eq!(rr.pending_count(), 1);
        rr.set_free(2);
        assert_eq!(take(&mut rr, &mut none), None, "a non-member is never free");
        rr.set_free(1);
        assert_eq!(take(&mut rr, &mut none), Some(1));
        assert!(!rr.is_member(2));
    }
}
