//! `Event`: everything that can wake the supervisor loop. The signal, control and I/O threads
//! translate the outside world into these and send them down one channel.

use crossbeam_channel::Sender;
use nix::unistd::Pid;

use crate::protocol::{Request, Response};
use crate::supervisor::process_control::SpawnId;
use crate::unit::LoadedFile;

#[derive(Debug)]
pub(crate) enum Event {
    /// SIGCHLD, SIGTERM or SIGINT was delivered to clusterd.
    Signal(i32),
    /// The units directory, read again (SIGHUP or `clusterctl daemon-reload`): the files, or
    /// why the directory could not be read. The daemon reads it; the supervisor applies it.
    Reload {
        files: Result<Vec<LoadedFile>, String>,
        /// Where the answer goes (`None` for SIGHUP: the log).
        reply: Option<Sender<Response>>,
    },
    /// A `clusterctl` request; the answer goes back on `reply`.
    Control {
        request: Request,
        reply: Sender<Response>,
    },
    /// A message an instance wrote on its worker channel.
    Worker {
        id: SpawnId,
        message: WorkerMessage,
        /// Returned (dropped) once the event is handled: the I/O thread stops reading a
        /// channel whose events the supervisor has not caught up with.
        #[allow(dead_code, reason = "held for its Drop")]
        credit: Credit,
    },
    /// A datagram on NOTIFY_SOCKET, from process `pid` (kernel-verified credentials), whose
    /// process group was `pgid` when it arrived, and which was in the cgroup of `instance`.
    Notify {
        pid: Pid,
        pgid: Option<Pid>,
        instance: Option<SpawnId>,
        message: NotifyMessage,
        /// As for `Worker`: NOTIFY_SOCKET is not read while too many are unhandled.
        #[allow(dead_code, reason = "held for its Drop")]
        credit: Credit,
    },
    /// Files changed under a path the unit watches (`watch`).
    FilesChanged(String),
    /// An HTTP `[health]` check of process `id`, number `seq`, ended: `Err` says why it
    /// failed.
    ProbeDone {
        id: SpawnId,
        seq: u64,
        result: Result<(), String>,
    },
}

/// A message on the worker channel, already parsed from its JSON line.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) enum WorkerMessage {
    /// `{"act":"suicide"}`: "I am about to exit"; start my replacement now.
    Suicide,
    /// `{"act":"ready"}` or `"ready"` (PM2's `process.send('ready')`).
    Ready,
    /// A Node cluster worker listens (seen by the Node primary).
    Listening,
    /// `{"act":"watchdog"}`: "I am alive" (`watchdog`); also a Node worker's event loop
    /// answering the primary's check.
    Watchdog,
}

/// The fields of one sd_notify datagram that clusterd acts on.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct NotifyMessage {
    pub ready: bool,
    pub stopping: bool,
    pub status: Option<String>,
    /// `WATCHDOG=1`: it is alive.
    pub watchdog: bool,
    /// `WATCHDOG=trigger`: it declares itself hung.
    pub watchdog_trigger: bool,
}

/// A token that travels with an event and is dropped once the event has been handled. Its
/// source (the I/O thread, which budgets the events of each channel) learns from the drop
/// that the supervisor has caught up; the supervisor never looks inside.
pub(crate) struct Credit(#[allow(dead_code, reason = "held for its Drop")] Option<Box<dyn Send>>);

impl Credit {
    /// No source to tell (events made by the I/O thread itself, tests).
    pub(crate) fn none() -> Credit {
        Credit(None)
    }

    /// `token` is dropped with the event.
    pub(crate) fn new(token: impl Send + 'static) -> Credit {
        Credit(Some(Box::new(token)))
    }
}

impl std::fmt::Debug for Credit {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("Credit")
    }
}
