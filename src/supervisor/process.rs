//! `Process`: one running child of a unit, as the supervisor tracks it from spawn to reap.

use std::time::Instant;

use nix::unistd::Pid;

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
    /// Ready to serve: at once for `ready = "started"`, on notification for `"notify"`.
    pub ready: bool,
    /// It would be ready (started, or said so) but has not run `ready_after` yet: it is once
    /// `Timer::ReadyAfter` fires.
    pub ready_pending: bool,
    /// `kill_signal` has been sent and a SIGKILL deadline armed.
    pub stopping: bool,
    /// It announced its own exit (suicide): its exit must not trigger a restart.
    pub announced_exit: bool,
    /// The last `STATUS=` it sent to NOTIFY_SOCKET.
    pub status_text: Option<String>,
}

impl Process {
    /// `web[2] (pid 1234)`, for log lines.
    pub(crate) fn label(&self) -> String {
        format!("{}[{}] (pid {})", self.unit, self.index, self.pid)
    }
}
