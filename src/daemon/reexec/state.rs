//! The whole `daemon-reexec` state: the supervisor's snapshot
//! ([`crate::supervisor::snapshot`]) and what only the daemon knows: the fds handed over
//! (their numbers stay the same across the exec, as FD_CLOEXEC is cleared on exactly these),
//! each instance's cgroup, and the times of the re-exec.
//!
//! The Node cluster primary is carried once settled (no hand-off in flight):
//! [`HeldPrimary`].

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::daemon::logs::HandedPipe;
use crate::daemon::os::cgroup::HeldTree;
use crate::daemon::os::listen_sockets::HeldSockets;
use crate::daemon::worker_io::CarriedChannel;
use crate::node_cluster::primary::handover::HeldPrimary;
use crate::supervisor::event::{NotifyMessage, WorkerMessage};
use crate::supervisor::process_control::SpawnId;
#[cfg(test)]
use crate::supervisor::snapshot::STATE_VERSION;
use crate::supervisor::snapshot::{read_versioned, SupervisorState, Versioned};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DaemonState {
    pub version: u32,
    /// clusterd's version that wrote it (for the log of the new image and the reply).
    pub written_by: String,
    /// The original command line after the program name: the new image is run as
    /// `clusterd --reexec-state FD <these>`, the state's fd first (systemd #28184).
    pub args: Vec<String>,
    /// CLOCK_MONOTONIC, in nanoseconds, when the control socket stopped being answered: the
    /// new image says how long the pause was (the clock goes on across the exec).
    pub paused_at_ns: u64,
    /// When the re-exec was made, in seconds since the Unix epoch (for status).
    pub reexecuted_at: f64,
    pub supervisor: SupervisorState,
    pub fds: HandedFds,
    pub os: OsHeld,
    /// Events that arrived after the old image's last turn of its loop (the threads that
    /// send them stopped since): the new image handles them first.
    pub events: Vec<CarriedEvent>,
    /// What worker channels had in flight in the old image's memory: lines not written yet
    /// (`clusterctl send` messages an instance did not read), a line half read.
    #[serde(default)]
    pub channels_in_flight: Vec<CarriedChannel>,
}

/// An event the old image received and did not handle, as the new image gets it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) enum CarriedEvent {
    Signal(i32),
    Worker {
        id: SpawnId,
        message: WorkerMessage,
    },
    Notify {
        pid: i32,
        pgid: Option<i32>,
        instance: Option<SpawnId>,
        message: NotifyMessage,
    },
    FilesChanged(String),
}

/// Every fd handed to the new image, by what it is.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HandedFds {
    /// The listening control socket: clients that connect during the exec wait in its
    /// backlog and are answered by the new image.
    pub control_socket: i32,
    /// The connection of the `clusterctl daemon-reexec` that asked: the new image answers it.
    pub requester: Option<i32>,
    /// The instances' NOTIFY_SOCKET.
    pub notify_socket: Option<i32>,
    /// Each unit's listen sockets (`listen = [...]`).
    pub listen: Vec<(String, HeldSockets)>,
    /// Each instance's stdout and stderr pipe read ends, with the unfinished line read from
    /// each: what is in them is read by the new image, so no line is lost.
    pub log_pipes: Vec<HandedPipe>,
    /// Each instance's worker channel.
    pub channels: Vec<(SpawnId, i32)>,
    /// The Node cluster primary: the listening sockets it holds for `node_cluster` units,
    /// the connections waiting for a worker, each worker's sequence and flags.
    pub primary: HeldPrimary,
    /// The old binary, kept open (O_PATH): the new image execs it back with the same state
    /// if it cannot read the state.
    pub old_binary: Option<i32>,
    /// The new binary as the pre-flight checked it (O_PATH), exec'd through its fd: closed by
    /// the new image.
    pub new_binary: Option<i32>,
    /// `--metrics-listen`'s listening sockets: scrapes that connect during the exec wait in
    /// their listen queues and are answered by the new image. None from an older clusterd
    /// (which bound them again); left out when there are none, so that an older binary can
    /// read the state of a clusterd that serves no metrics.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<i32>,
}

/// The OS side's bookkeeping of the instances, by path and id (no fd).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct OsHeld {
    /// Each instance's cgroup (live instances, and released ones whose cgroup still has
    /// processes).
    pub cgroups: Vec<(SpawnId, PathBuf)>,
    /// The released instances whose cgroup still has processes.
    pub draining: Vec<SpawnId>,
    /// Cgroups given up on (processes that outlived a SIGKILL), and empty ones waiting for
    /// their removal.
    pub abandoned: Vec<PathBuf>,
    pub removals: Vec<PathBuf>,
    /// The cgroup tree's next serial and its spare cgroups.
    pub cgroup_tree: Option<HeldTree>,
    /// The `PORT` of each instance with an HTTP health check.
    pub ports: Vec<(SpawnId, u16)>,
}

impl HandedFds {
    /// Every fd number handed over, for FD_CLOEXEC and for the check that none is twice.
    pub(crate) fn all(&self) -> Vec<i32> {
        let mut fds = vec![self.control_socket];
        fds.extend(self.requester);
        fds.extend(self.notify_socket);
        for (_, held) in &self.listen {
            fds.extend(held.fds());
        }
        fds.extend(self.log_pipes.iter().map(|p| p.fd));
        fds.extend(self.channels.iter().map(|&(_, fd)| fd));
        fds.extend(self.primary.fds());
        fds.extend(self.old_binary);
        fds.extend(self.new_binary);
        fds.extend(self.metrics.iter().copied());
        fds
    }
}

/// Only the old binary's fd, read from a state that does not parse otherwise (a newer
/// format, a field this binary does not know): enough to exec the old binary back.
pub(crate) fn old_binary_of(text: &str) -> Option<i32> {
    #[derive(Deserialize)]
    struct Fds {
        old_binary: Option<i32>,
    }
    #[derive(Deserialize)]
    struct Outline {
        fds: Fds,
    }
    let outline: Outline = serde_json::from_str(text).ok()?;
    outline.fds.old_binary.filter(|&fd| fd > 2)
}

impl Versioned for DaemonState {
    fn version(&self) -> u32 {
        self.version
    }
}

impl DaemonState {
    /// Parses and checks a state: its version first, then everything a parse cannot check
    /// (an fd below 3 or named twice, an instance the supervisor's part does not have, a
    /// pipe or socket of a unit it does not have).
    pub(crate) fn from_json(text: &str) -> Result<DaemonState, String> {
        let state: DaemonState = read_versioned(text)?;
        state.supervisor.validate()?;
        let mut seen = std::collections::HashSet::new();
        for fd in state.fds.all() {
            if fd < 3 || !seen.insert(fd) {
                return Err(format!("fd {fd} is invalid or named twice"));
            }
        }
        let known: std::collections::HashSet<SpawnId> = state
            .supervisor
            .instances
            .iter()
            .map(|i| i.spawn_id)
            .collect();
        let workers = state.fds.primary.worker_ids();
        let in_flight = state.channels_in_flight.iter().map(|c| c.id);
        for id in (state.fds.channels.iter().map(|&(id, _)| id))
            .chain(workers)
            .chain(in_flight)
        {
            if !known.contains(&id) {
                return Err(format!("the fds name spawn id {id}, which is no instance"));
            }
        }
        let units = &state.supervisor.units;
        let named = state
            .fds
            .log_pipes
            .iter()
            .map(|p| &p.unit)
            .chain(state.fds.listen.iter().map(|(unit, _)| unit));
        for unit in named {
            if !units.contains_key(unit) {
                return Err(format!(
                    "the fds name unit {unit:?}, which the state does not have"
                ));
            }
        }
        Ok(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn state() -> DaemonState {
        let supervisor = SupervisorState {
            version: STATE_VERSION,
            next_spawn_id: 3,
            units: BTreeMap::new(),
            instances: Vec::new(),
            timers: Vec::new(),
            shutting_down: false,
            hooks: Vec::new(),
            lingering: Vec::new(),
            probe_seq: 0,
        };
        DaemonState {
            version: STATE_VERSION,
            written_by: "0.0.0".into(),
            args: vec!["--units".into(), "/etc/clusterd/units".into()],
            paused_at_ns: 1,
            reexecuted_at: 2.0,
            supervisor,
            fds: HandedFds {
                control_socket: 3,
                requester: Some(8),
                notify_socket: Some(4),
                listen: Vec::new(),
                log_pipes: Vec::new(),
                channels: Vec::new(),
                primary: HeldPrimary::default(),
                old_binary: Some(7),
                new_binary: Some(9),
                metrics: vec![10, 11],
            },
            os: OsHeld::default(),
            events: vec![CarriedEvent::Signal(libc::SIGTERM)],
            channels_in_flight: Vec::new(),
        }
    }

    #[test]
    fn the_daemon_state_round_trips() {
        let state = state();
        let text = serde_json::to_string(&state).expect("serializes");
        assert_eq!(DaemonState::from_json(&text), Ok(state));
        assert_eq!(old_binary_of(&text), Some(7));
    }

    #[test]
    fn a_state_without_metrics_fds_is_written_and_read_without_the_field() {
        let mut older = state();
        older.fds.metrics.clear();
        // Written without the field, as an older binary reads it (deny_unknown_fields).
        let text = serde_json::to_string(&older).expect("serializes");
        assert!(!text.contains("metrics"), "{text}");
        assert_eq!(DaemonState::from_json(&text), Ok(older));
    }

    #[test]
    fn fds_that_lie_are_refused() {
        let mut stdio = state();
        stdio.fds.control_socket = 0;
        let mut twice = state();
        twice.fds.old_binary = Some(4);
        let mut ghost = state();
        ghost.fds.channels.push((2, 9));
        let mut metrics_twice = state();
        metrics_twice.fds.metrics.push(3);
        let mut ghost_unit = state();
        ghost_unit
            .fds
            .listen
            .push(("ghost".into(), HeldSockets::default()));
        let mut ghost_in_flight = state();
        ghost_in_flight.channels_in_flight.push(CarriedChannel {
            id: 2,
            unwritten: Vec::new(),
            unread: b"{\"a".to_vec(),
            discarding: false,
        });
        for lie in [
            stdio,
            twice,
            ghost,
            ghost_unit,
            ghost_in_flight,
            metrics_twice,
        ] {
            let text = serde_json::to_string(&lie).expect("serializes");
            assert!(DaemonState::from_json(&text).is_err(), "{lie:?}");
        }
    }
}
