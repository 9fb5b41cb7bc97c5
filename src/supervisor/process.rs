//! `Process`: one running child of a unit, as the supervisor tracks it from spawn to reap.

use std::time::Instant;

use nix::unistd::Pid;

use super::phase::Phase;
use crate::supervisor::process_control::SpawnId;

#[derive(Debug, Clone)]
pub(crate) struct Process {
    pub id: SpawnId,
    pub unit: String,
    /// The instance index (slot) it was started for; stable across restarts.
    pub index: u32,
    /// Also its process group id: every instance leads its own group.
    pub pid: Pid,
    pub started_at: Instant,
    /// Where it is in its life: changed only by `Supervisor::transition`.
    pub phase: Phase,
    /// The last `STATUS=` it sent to NOTIFY_SOCKET.
    pub status_text: Option<String>,
    /// Its watchdog and `[health]` checks.
    pub health: super::InstanceHealth,
}

impl Process {
    /// `web[2] (pid 1234)`, for log lines.
    pub(crate) fn label(&self) -> String {
        format!("{}[{}] (pid {})", self.unit, self.index, self.pid)
    }
}
