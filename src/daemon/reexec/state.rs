//! The whole `daemon-reexec` state: the supervisor's snapshot
//! ([`crate::supervisor::snapshot`]) and what only the daemon knows: the fds handed over
//! (their numbers stay the same across the exec, as FD_CLOEXEC is cleared on exactly these)
//! and each instance's cgroup.
//!
//! The Node cluster primary's state (workers' pending handle transfers, round-robin
//! position) is not carried: it is reset, and each worker's channel fd is carried so that
//! the new primary re-registers the workers from their next message. A round-robin position
//! lost costs one uneven hand-out, not a connection.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::supervisor::process_control::SpawnId;
#[cfg(test)]
use crate::supervisor::snapshot::STATE_VERSION;
use crate::supervisor::snapshot::{read_versioned, SupervisorState};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DaemonState {
    pub version: u32,
    /// clusterd's version that wrote it (for the log of the new image).
    pub written_by: String,
    /// The original command line after the program name: the new image is run as
    /// `clusterd --reexec-state FD <these>`, the state's fd first (systemd #28184).
    pub args: Vec<String>,
    pub supervisor: SupervisorState,
    pub fds: HandedFds,
    /// Each instance's cgroup, where it has one.
    pub cgroups: Vec<(SpawnId, PathBuf)>,
}

/// Every fd handed to the new image, by what it is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HandedFds {
    /// The listening control socket: clients that connect during the exec wait in its
    /// backlog and are answered by the new image.
    pub control_socket: i32,
    /// The instances' NOTIFY_SOCKET.
    pub notify_socket: Option<i32>,
    /// Each unit's listen sockets (`listen = [...]`), in the unit's order.
    pub listen: Vec<(String, Vec<i32>)>,
    /// Each instance's stdout and stderr pipe read ends: what is in them is read by the new
    /// image, so no line is lost.
    pub log_pipes: Vec<InstancePipes>,
    /// Each Node worker's channel.
    pub channels: Vec<(SpawnId, i32)>,
    /// The old binary, kept open (O_PATH): the new image execs it back with the same state
    /// if it cannot read the state.
    pub old_binary: Option<i32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct InstancePipes {
    pub spawn_id: SpawnId,
    pub stdout: Option<i32>,
    pub stderr: Option<i32>,
}

impl HandedFds {
    /// Every fd number handed over, for FD_CLOEXEC and for the check that none is twice.
    pub(crate) fn all(&self) -> Vec<i32> {
        let mut fds = vec![self.control_socket];
        fds.extend(self.notify_socket);
        fds.extend(self.listen.iter().flat_map(|(_, fds)| fds.iter().copied()));
        for pipes in &self.log_pipes {
            fds.extend(pipes.stdout);
            fds.extend(pipes.stderr);
        }
        fds.extend(self.channels.iter().map(|&(_, fd)| fd));
        fds.extend(self.old_binary);
        fds
    }
}

impl DaemonState {
    /// Parses and checks a state: its version first, then everything a parse cannot check
    /// (an fd below 3 or named twice, an instance the supervisor's part does not have).
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
        let named = state
            .fds
            .log_pipes
            .iter()
            .map(|p| p.spawn_id)
            .chain(state.fds.channels.iter().map(|&(id, _)| id))
            .chain(state.cgroups.iter().map(|(id, _)| *id));
        for id in named {
            if !known.contains(&id) {
                return Err(format!("the fds name spawn id {id}, which is no instance"));
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
        };
        DaemonState {
            version: STATE_VERSION,
            written_by: "0.0.0".into(),
            args: vec!["--units".into(), "/etc/clusterd/units".into()],
            supervisor,
            fds: HandedFds {
                control_socket: 3,
                notify_socket: Some(4),
                listen: vec![("web".into(), vec![5, 6])],
                log_pipes: Vec::new(),
                channels: Vec::new(),
                old_binary: Some(7),
            },
            cgroups: Vec::new(),
        }
    }

    #[test]
    fn the_daemon_state_round_trips() {
        let state = state();
        let text = serde_json::to_string(&state).expect("serializes");
        assert_eq!(DaemonState::from_json(&text), Ok(state));
    }

    #[test]
    fn fds_that_lie_are_refused() {
        let mut stdio = state();
        stdio.fds.control_socket = 0;
        let mut twice = state();
        twice.fds.old_binary = Some(5);
        let mut ghost = state();
        ghost.fds.channels.push((2, 9));
        for lie in [stdio, twice, ghost] {
            let text = serde_json::to_string(&lie).expect("serializes");
            assert!(DaemonState::from_json(&text).is_err(), "{lie:?}");
        }
    }
}
